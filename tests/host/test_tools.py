"""Tool calling in chat completions through the real `openai` SDK: ``tool_choice`` required and
named hold the output to the calls' schema (the embedded SmolLM2 on OpenVINO GenAI, and a
random-weight llama on the torch engine: arguments validate either way), streamed calls
reassemble to the same call, tool results render, ``auto`` parses Hermes-style calls, and a
tool schema that cannot compile is a 400 naming it."""

from __future__ import annotations

import json

import pytest

from hfskills.host.protocol import openai as oa
from hfskills.host.serving import tools
from hfskills.host.serving.openai import _ToolStream

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "maxLength": 12}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": WEATHER,
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "description": "Time in a zone", "parameters": TIME},
    },
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def valid(calls) -> list[tuple[str, dict]]:
    """Each call's name and arguments, checked against its function's schema."""
    got = []
    for call in calls:
        assert call.id.startswith("call_") and call.type == "function"
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, SCHEMAS[call.function.name])
        got.append((call.function.name, arguments))
    return got


@pytest.mark.parametrize("model", ["smol", "tiny"])
@pytest.mark.parametrize("choice", ["required", NAMED])
def test_forced_calls_validate(request, model, choice) -> None:
    client = request.getfixturevalue(model)
    name = "smollm2-135m-instruct" if model == "smol" else "tiny"
    answer = client.chat.completions.create(
        model=name,
        messages=ASK,
        tools=TOOLS,
        tool_choice=choice,
        # random weights would list calls until max_tokens: one call, for them
        parallel_tool_calls=model == "smol",
        temperature=0,
        max_tokens=200,
    )
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls", message
    calls = valid(message.tool_calls)
    assert calls
    if choice == NAMED:
        assert [n for n, _ in calls] == ["get_weather"]
        assert message.content is None


def test_no_parallel_calls_gives_one_call(tiny) -> None:
    for seed in range(3):
        answer = tiny.chat.completions.create(
            model="tiny",
            messages=ASK,
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=False,
            temperature=1.0,
            seed=seed,
            max_tokens=200,
        )
        assert len(valid(answer.choices[0].message.tool_calls)) == 1


def reassemble(chunks) -> tuple[dict[int, dict], str | None, str]:
    calls: dict[int, dict] = {}
    finish, content = None, ""
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for piece in delta.tool_calls or []:
            call = calls.setdefault(piece.index, {"id": None, "name": None, "arguments": ""})
            if piece.id:
                assert call["id"] is None, "the id comes once, first"
                call["id"], call["name"] = piece.id, piece.function.name
            call["arguments"] += piece.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    return calls, finish, content


@pytest.mark.parametrize("choice", ["required", NAMED])
def test_streamed_calls_reassemble_to_the_same_call(smol, choice) -> None:
    kwargs = dict(
        model="smollm2-135m-instruct",
        messages=ASK,
        tools=TOOLS,
        tool_choice=choice,
        temperature=0,
        max_tokens=200,
    )
    whole = smol.chat.completions.create(**kwargs).choices[0].message.tool_calls
    calls, finish, content = reassemble(smol.chat.completions.create(**kwargs, stream=True))
    assert finish == "tool_calls" and content == ""
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == valid(whole)
    assert all(c["id"].startswith("call_") for c in calls.values())


def test_sdk_stream_helper_accumulates_the_call(smol) -> None:
    with smol.chat.completions.stream(
        model="smollm2-135m-instruct",
        messages=ASK,
        tools=TOOLS,
        tool_choice=NAMED,
        temperature=0,
        max_tokens=200,
    ) as stream:
        final = stream.get_final_completion()
    valid(final.choices[0].message.tool_calls)


def test_tool_result_round_trip(smol) -> None:
    first = smol.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=ASK,
        tools=TOOLS,
        tool_choice=NAMED,
        temperature=0,
        max_tokens=200,
    )
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    answer = smol.chat.completions.create(
        model="smollm2-135m-instruct", messages=messages, tools=TOOLS, temperature=0, max_tokens=40
    )
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert answer.usage.prompt_tokens > first.usage.prompt_tokens


def test_tool_messages_render_in_the_hermes_layout_without_template_support() -> None:
    """SmolLM2's template prints roles and contents only: tools, calls and results are written
    as text (skillset/runtime/tool_prompt.py)."""
    from hfskills.skillset.runtime import tool_prompt

    body = oa.ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "tools": TOOLS,
            "messages": [
                *ASK,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ],
        }
    )
    messages = tool_prompt.plain(body.chat(), body.rendered_tools())
    assert messages[0]["role"] == "system" and '"get_time"' in messages[0]["content"]
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in messages[2]["content"]
    assert messages[3] == {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"}
    assert not tool_prompt.knows_tools("{{ message['content'] }}")


def test_tool_choice_none_renders_no_tools(smol) -> None:
    plain = smol.chat.completions.create(
        model="smollm2-135m-instruct", messages=ASK, temperature=0, max_tokens=8
    )
    none = smol.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=ASK,
        tools=TOOLS,
        tool_choice="none",
        temperature=0,
        max_tokens=8,
    )
    assert none.usage.prompt_tokens == plain.usage.prompt_tokens
    assert none.choices[0].message.content == plain.choices[0].message.content
    assert none.choices[0].message.tool_calls is None


def test_auto_answers_text_or_valid_calls(smol) -> None:
    answer = smol.chat.completions.create(
        model="smollm2-135m-instruct", messages=ASK, tools=TOOLS, temperature=0, max_tokens=120
    )
    message = answer.choices[0].message
    if message.tool_calls:
        assert answer.choices[0].finish_reason == "tool_calls"
        for call in message.tool_calls:
            json.loads(call.function.arguments)
    else:
        assert message.content


def test_hermes_parser() -> None:
    parser = tools.HermesParser()
    text = (
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        '</tool_call>\n<tool_call>{"name": "get_time", "arguments": {"zone": "CET"}}</tool_call>'
    )
    content, calls = parser.parse(text)
    assert content == "Let me check."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"zone": "CET"}),
    ]
    assert parser.parse("no calls here") == ("no calls here", [])
    assert parser.parse("<tool_call>not json</tool_call>") == (
        "<tool_call>not json</tool_call>",
        [],
    )
    assert parser.held("abc <tool_") == len("abc ")
    content, calls, finish = tools.answer(text, "stop", "auto", "llama")
    assert finish == "tool_calls" and len(calls) == 2


def test_auto_stream_holds_calls_back_and_sends_them_as_deltas() -> None:
    stream = _ToolStream("auto")
    pieces = [
        "Sure",
        ". <tool",
        '_call>{"name": "get_time", ',
        '"arguments": {"zone": "CET"}}',
        "</tool_call>",
    ]
    sent = [d for piece in pieces for d in stream.add(piece)]
    assert "".join(d.content or "" for d in sent) == "Sure. "
    deltas, finish = stream.end("".join(pieces), "stop")
    assert finish == "tool_calls"
    assert deltas[0].tool_calls[0].id.startswith("call_")
    assert deltas[0].tool_calls[0].function.name == "get_time"
    assert json.loads(deltas[1].tool_calls[0].function.arguments) == {"zone": "CET"}


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (
            {
                "tools": [
                    TOOLS[0],
                    {**TOOLS[1], "function": {"name": "bad", "parameters": {"type": "bogus"}}},
                ],
                "tool_choice": "required",
            },
            400,
            "tools[1].function.parameters",
        ),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            422,
            None,
        ),
        ({"tool_choice": "required"}, 422, None),
        ({"tools": [TOOLS[0], TOOLS[0]]}, 422, None),
    ],
)
def test_bad_tools_are_4xx(tiny_server, body, status, param) -> None:
    with tiny_server.client() as http:
        got = http.post("/v1/chat/completions", json={"model": "tiny", "messages": ASK, **body})
    assert got.status_code == status, got.text
    if param:
        assert got.json()["error"]["param"] == param
