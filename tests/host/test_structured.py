"""Structured outputs (``response_format`` json_object and json_schema) through the real
`openai` SDK: the embedded SmolLM2 on OpenVINO GenAI, and a tiny random-weight llama on the
torch engine, whose output is noise but must still parse and validate (the constraint is the
point). A schema that cannot be compiled is a 400 naming the field."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")


class City(BaseModel):
    name: str = Field(max_length=24)
    country: str = Field(max_length=24)
    population_millions: int = Field(ge=0, le=100)


#: A schema a random-weight model cannot wander far in: bounded strings, an enum, numbers.
SCHEMA = {
    "type": "object",
    "properties": {
        "word": {"type": "string", "maxLength": 8},
        "size": {"enum": ["small", "large"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 999},
        "ok": {"type": "boolean"},
    },
    "required": ["word", "size", "count", "ok"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Describe Paris as JSON."}]


def schema_format(schema: dict) -> dict:
    return {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }


def test_sdk_parse_into_a_pydantic_model_on_smollm2(smol) -> None:
    answer = smol.chat.completions.parse(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Give the capital of France as JSON."}],
        response_format=City,
        temperature=0,
        max_tokens=200,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, City)
    City.model_validate_json(choice.message.content)


def test_json_object_parses_on_smollm2(smol) -> None:
    answer = smol.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is the capital of France? Answer in JSON."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=300,
    )
    assert answer.choices[0].finish_reason == "stop", answer.choices[0].message.content
    assert isinstance(json.loads(answer.choices[0].message.content), dict)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_weights_still_validate_on_the_torch_engine(tiny, seed) -> None:
    answer = tiny.chat.completions.create(
        model="tiny",
        messages=ASK,
        response_format=schema_format(SCHEMA),
        temperature=1.0,
        seed=seed,
        max_tokens=120,
        n=2,
    )
    for choice in answer.choices:
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), SCHEMA)


def test_streamed_constrained_output_validates(tiny) -> None:
    chunks = tiny.chat.completions.create(
        model="tiny",
        messages=ASK,
        response_format=schema_format(SCHEMA),
        temperature=0,
        max_tokens=120,
        stream=True,
    )
    text, finish = "", None
    for chunk in chunks:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop"
    jsonschema.validate(json.loads(text), SCHEMA)


def test_constrained_output_out_of_tokens_ends_with_length(tiny, smol) -> None:
    for client, model in ((tiny, "tiny"), (smol, "smollm2-135m-instruct")):
        answer = client.chat.completions.create(
            model=model,
            messages=ASK,
            response_format=schema_format(SCHEMA),
            temperature=0,
            max_tokens=3,
        )
        assert answer.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("response_format", "status", "param"),
    [
        # a schema that does not compile: 400 naming the schema
        (schema_format({"type": "bogus"}), 400, "response_format.json_schema.schema"),
        (
            schema_format({"type": "string", "pattern": "(unclosed"}),
            400,
            "response_format.json_schema.schema",
        ),
        # a malformed response_format: the body's validation error (422, as every field's)
        ({"type": "json_schema"}, 422, "response_format"),
        ({"type": "xml"}, 422, "response_format.type"),
    ],
)
def test_bad_schemas_are_4xx_naming_the_field(tiny_server, response_format, status, param) -> None:
    with tiny_server.client() as http:
        got = http.post(
            "/v1/chat/completions",
            json={"model": "tiny", "messages": ASK, "response_format": response_format},
        )
    assert got.status_code == status, got.text
    assert got.json()["error"]["param"] == param


def test_text_format_is_unconstrained(tiny) -> None:
    answer = tiny.chat.completions.create(
        model="tiny", messages=ASK, response_format={"type": "text"}, max_tokens=4, temperature=0
    )
    assert answer.choices[0].finish_reason == "length"
