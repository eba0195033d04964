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


@pytest.mark.parametrize(
    ("pattern", "added"),
    [
        ("[0-9]{4}-[0-9]{2}", 0),  # short counts: no more than the pattern's own length
        ("(yes|no|maybe)", 0),
        ("[a-z]{1,20000}", 20000 - 14),
        ("(ab{1,100}){1,100}", 100 * 101 - 18),  # nested counts multiply
        (r"\p{L}{3}[{]{2}", 0),  # a class's brace, a property's braces: no counts
    ],
)
def test_unrolled_counts_repetitions(pattern: str, added: int) -> None:
    assert constraints.unrolled(pattern) == added


def nested(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


@pytest.mark.parametrize(
    ("constraint", "reason"),
    [
        (constraints.Regex(type="regex", pattern="[a-z]{1,100000}"), "unroll to 99985"),
        (schema({"type": "string", "maxLength": 100_000}), "unroll to 100000"),
        (schema({"type": "string", "pattern": "^(a{1,1000}){1,1000}$"}), "unroll to"),
        (schema(nested(200)), "nests deeper than 128"),
        (schema(nested(400)), "nests deeper than 128"),  # json.dumps would recurse too far
    ],
)
def test_constraints_too_costly_to_compile_are_refused(constraint, reason) -> None:
    with pytest.raises(InvalidInput) as bad:
        constraints.grammar(constraint)
    assert reason in bad.value.message
    assert bad.value.param == constraint.field


@pytest.mark.parametrize(
    ("pattern", "refused"),
    [
        # each measured on GenAI 2026.4 (GenAI refuses the refused, serves the rest)
        ("a**", True),
        ("a{2}*", True),
        ("(?P<x>a)", True),
        ("(?i)a", True),
        (r"\p{L}", True),
        ("a|", True),
        ("(|a)", True),
        ("\\", True),
        ("a*?", False),
        ("a{2,3}?", False),
        ("(?:ab)", False),
        ("(?<x>a)", False),
        ("[*+]{2}", False),
        (r"\\", False),
        ("(yes|no|maybe), [a-z]{1,8}!", False),
    ],
)
def test_genai_refusals_are_caught_before_genai(pattern: str, refused: bool) -> None:
    regex = constraints.Regex(type="regex", pattern=pattern)
    assert (constraints.genai_refusal(regex) is not None) is refused
    in_schema = schema({"type": "object", "properties": {"a": {"pattern": pattern}}})
    assert (constraints.genai_refusal(in_schema) is not None) is refused


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
    regex = constraints.Regex(type="regex", pattern="[0-9]+")
    assert constraints.genai_kwargs(regex) == {"regex": "[0-9]+"}
    kwargs = vllm_engine.sampling_kwargs(GenerationParams(constraint=regex), {2})
    assert kwargs["structured_outputs"] == {"regex": "[0-9]+"}


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
