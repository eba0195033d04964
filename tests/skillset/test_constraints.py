"""The constraint module (skillset/runtime/constraints.py): compiling, errors naming the field,
and llguidance guides holding random logits to a schema, on transformers' ``generate`` (the
non-engine path) as on the engines' masks."""

from __future__ import annotations

import json

import pytest

from hfskills.skillset.runtime import constraints, vllm_engine
from hfskills.skillset.runtime.errors import InvalidInput
from hfskills.skillset.runtime.generation import GenerationParams, TextGenerator

jsonschema = pytest.importorskip("jsonschema")

SCHEMA = {
    "type": "object",
    "properties": {"tag": {"enum": ["a", "b"]}, "n": {"type": "integer", "minimum": 0}},
    "required": ["tag", "n"],
    "additionalProperties": False,
}


def schema(
    value: dict, field: str = "response_format.json_schema.schema"
) -> constraints.JSONSchema:
    return constraints.JSONSchema(type="json_schema", json_schema=value, field=field)


def test_grammar_is_compiled_once_and_errors_name_the_field() -> None:
    assert constraints.grammar(schema(SCHEMA)) is constraints.grammar(schema(SCHEMA, "other"))
    with pytest.raises(InvalidInput) as bad:
        constraints.grammar(schema({"type": "bogus"}, "tools[1].function.parameters"))
    assert bad.value.param == "tools[1].function.parameters"
    assert "bogus" in bad.value.message
    with pytest.raises(InvalidInput):
        constraints.grammar(constraints.Regex(type="regex", pattern="[a-"))


def test_params_round_trip_as_a_dict() -> None:
    """The non-engine path hands params to a handler as keywords; the constraint survives."""
    params = GenerationParams(constraint=schema(SCHEMA), tools=[{"type": "function"}])
    assert GenerationParams.parse(params.model_dump(exclude_defaults=True)) == params


def test_engine_kwargs() -> None:
    assert constraints.genai_kwargs(schema(SCHEMA)) == {"json_schema": json.dumps(SCHEMA)}
    assert constraints.vllm_kwargs(constraints.JSONObject(type="json_object")) == {
        "json_object": True
    }
    kwargs = vllm_engine.sampling_kwargs(GenerationParams(constraint=schema(SCHEMA)), {2})
    assert kwargs["structured_outputs"] == {"json": SCHEMA}


@pytest.mark.parametrize("seed", range(4))
def test_generate_with_random_weights_validates(task_checkpoint, seed) -> None:
    """transformers' ``generate`` (TextGenerator: seq2seq, image-to-text, no continuous
    batching) holds a random-weight llama to the schema, two rows at once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = task_checkpoint("llama", "text_generation")
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    generator = TextGenerator(model, tokenizer, "cpu", decoder_only=True)
    params = GenerationParams(
        max_new_tokens=60, do_sample=True, seed=seed, constraint=schema(SCHEMA)
    )
    batch = generator.encode_prompts(["hello", "the capital of france is"])
    with torch.inference_mode():
        results = generator.generate(batch, params)
    for result in results:
        assert result["finish_reason"] == "stop", result["text"]
        jsonschema.validate(json.loads(result["text"]), SCHEMA)
