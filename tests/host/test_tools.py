"""Tool calling in chat completions through the real `openai` SDK: ``tool_choice`` required and
named hold the output to the calls' schema (the embedded SmolLM2 on OpenVINO GenAI, and a
random-weight llama on the torch engine: arguments validate either way), streamed calls come
call by call, their arguments in pieces as generated that add up to the whole answer's, tool
results render, ``auto`` parses Hermes-style calls (streamed the same way: on real Hermes text,
as SmolLM2-135M does not call in ``auto``), and a tool schema that cannot compile is a 400
naming it."""

from __future__ import annotations

import json

import pytest

from hfskills.host.protocol import openai as oa
from hfskills.host.serving import tools

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
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (c.function.name, c.function.arguments) for c in whole
    ]
    valid(whole)
    assert all(c["id"].startswith("call_") for c in calls.values())


def streamed_calls(chunks) -> tuple[list[list], str | None]:
    """Each call's deltas, in the order they came (an index opens after the one before it
    is done), and the finish reason."""
    calls: list[list] = []
    finish = None
    for chunk in chunks:
        if not chunk.choices:
            continue
        assert not chunk.choices[0].delta.content
        for piece in chunk.choices[0].delta.tool_calls or []:
            if piece.index == len(calls):
                calls.append([])
            assert piece.index == len(calls) - 1, "calls come one after another"
            calls[-1].append(piece)
        finish = chunk.choices[0].finish_reason or finish
    return calls, finish


def check_streamed(whole, streamed, least: int = 2) -> None:
    """A call's first delta has its index, id, type and name with empty arguments; the rest
    only argument pieces, at least ``least``, adding up to the whole answer's arguments
    exactly."""
    assert len(streamed) == len(whole) >= 1
    for index, (call, (first, *rest)) in enumerate(zip(whole, streamed, strict=True)):
        assert first.index == index and first.id.startswith("call_") and first.type == "function"
        assert (first.function.name, first.function.arguments) == (call.function.name, "")
        assert all(p.id is None and p.type is None and p.function.name is None for p in rest)
        pieces = [p.function.arguments for p in rest if p.function.arguments]
        assert len(pieces) >= least, pieces
        assert "".join(pieces) == call.function.arguments
    valid(whole)


def test_required_stream_sends_each_call_as_it_is_generated(smol) -> None:
    kwargs = dict(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is the weather in Paris and the time in CET?"}],
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=True,
        temperature=0,
        max_tokens=200,
    )
    whole = smol.chat.completions.create(**kwargs).choices[0].message.tool_calls
    streamed, finish = streamed_calls(smol.chat.completions.create(**kwargs, stream=True))
    assert finish == "tool_calls"
    check_streamed(whole, streamed)


def test_required_stream_of_several_calls(tiny) -> None:
    """Random weights under the call schema: a seed whose answer makes two calls or more
    (SmolLM2 makes one), streamed with the same seed. llguidance lets them write
    ``"arguments"`` before ``"name"`` (seed 1 does): such a call's arguments wait for its name
    and go in one piece, so pieces are counted on SmolLM2 (which keeps the schema's order)."""
    kwargs = dict(
        model="tiny",
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=True,
        temperature=1.0,
        max_tokens=300,
    )
    for seed in range(8):
        answer = tiny.chat.completions.create(**kwargs, seed=seed)
        if len(answer.choices[0].message.tool_calls or []) >= 2:
            break
    else:
        pytest.fail("no seed in 0..7 made two calls")
    assert answer.choices[0].finish_reason == "tool_calls"
    streamed, finish = streamed_calls(
        tiny.chat.completions.create(**kwargs, seed=seed, stream=True)
    )
    assert finish == "tool_calls"
    check_streamed(answer.choices[0].message.tool_calls, streamed, least=1)


def test_auto_stream_equals_the_whole_answer(smol) -> None:
    kwargs = dict(
        model="smollm2-135m-instruct", messages=ASK, tools=TOOLS, temperature=0, max_tokens=60
    )
    whole = smol.chat.completions.create(**kwargs).choices[0]
    calls, finish, content = reassemble(smol.chat.completions.create(**kwargs, stream=True))
    assert finish == whole.finish_reason
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (c.function.name, c.function.arguments) for c in whole.message.tool_calls or []
    ]
    if not calls:
        assert content == whole.message.content


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


# Hermes-format answers as models write them: Qwen2.5's parallel calls (its function-calling
# guide), NousResearch Hermes-2-Pro's (arguments before the name), and arguments given as a
# JSON string, escapes and nesting included.
HERMES = [
    "I'll check both.\n<tool_call>\n"
    '{"name": "get_current_temperature", "arguments": {"location": "San Francisco, CA, USA"}}\n'
    "</tool_call>\n<tool_call>\n"
    '{"name": "get_temperature_date", "arguments": {"location": "San Francisco, CA, USA", '
    '"date": "2024-10-01"}}\n</tool_call>',
    '<tool_call>\n{"arguments": {"symbol": "TSLA"}, "name": "get_stock_fundamentals"}\n'
    "</tool_call>",
    '<tool_call>{"name": "run", "arguments": "{\\"cmd\\": \\"ls\\"}"}</tool_call>'
    '<tool_call>not json</tool_call><tool_call>{"name": "find", "arguments": '
    '{"q": "a \\"}\\" b", "n": [1, {"x": 2.5e3}], "ok": true}}</tool_call>',
]


def stream_text(mode: str, pieces: list[str]) -> tuple[str, list[tuple[str, str]], str]:
    """A `ToolStream` fed ``pieces``: the content, each call's (name, arguments) as a client
    joins them, and the finish reason."""
    stream = tools.ToolStream(mode)
    deltas = [d for piece in pieces for d in stream.add(piece)]
    rest, finish = stream.end("".join(pieces), "stop")
    content, calls = "", {}
    for delta in [*deltas, *rest]:
        content += delta.content or ""
        for piece in delta.tool_calls or []:
            if piece.id is not None:
                assert piece.index == len(calls) and piece.function.arguments == ""
                calls[piece.index] = (piece.function.name, "")
            else:
                name, arguments = calls[piece.index]
                calls[piece.index] = (name, arguments + piece.function.arguments)
    return content, list(calls.values()), finish


@pytest.mark.parametrize("text", HERMES)
def test_auto_stream_reads_calls_as_they_come(text) -> None:
    """Split anywhere (one character at a time, or in two at every point), the stream's calls
    are the whole answer's, its content the text before the first call."""
    content, calls, finish = tools.answer(text, "stop", "auto", "qwen2")
    assert finish == "tool_calls" and calls
    for call in calls:
        json.loads(call.arguments)
    expected = [(c.name, c.arguments) for c in calls]
    before = text[: text.index("<tool_call>")]
    assert (content or "") == before.strip()
    splits = [list(text), *([text[:i], text[i:]] for i in range(1, len(text)))]
    for pieces in splits:
        assert stream_text("auto", pieces) == (before, expected, "tool_calls")


def test_auto_stream_sends_a_call_before_its_end() -> None:
    """Content up to a call's tag, the call's first delta once its name is read, its
    arguments' text as it comes, nothing after its object."""

    def sent(text: str) -> list[tuple]:
        return [
            (d.content,)
            if d.content is not None
            else (
                d.tool_calls[0].index,
                d.tool_calls[0].function.name,
                d.tool_calls[0].function.arguments,
            )
            for d in stream.add(text)
        ]

    stream = tools.ToolStream("auto")
    assert sent("Sure. <tool") == [("Sure. ",)]
    assert sent('_call>{"name"') == []
    assert sent(': "get_time", "arguments": {"zo') == [(0, "get_time", ""), (0, None, '{"zo')]
    assert sent('ne": "CET"}}') == [(0, None, 'ne": "CET"}')]
    assert sent("</tool_call>\n<tool_call>") == []
    assert sent('{"name": "get_weather", "arguments": {}}') == [
        (1, "get_weather", ""),
        (1, None, "{}"),
    ]
    whole = stream.text + "</tool_call>"
    assert stream.add("</tool_call>") == []
    assert stream.end(whole, "stop") == ([], "tool_calls")


def test_required_stream_matches_the_whole_answer_however_split() -> None:
    text = (
        '[{"name": "get_weather", "arguments": {\n  "city": "Pa\\"ri}s",\n  "unit": "celsius"\n}},'
        ' {"arguments": {"zone": "CET"}, "name": "get_time"}]'
    )
    _, calls, finish = tools.answer(text, "stop", "required", None)
    assert finish == "tool_calls"
    expected = [(c.name, c.arguments) for c in calls]
    assert expected == [
        ("get_weather", '{\n  "city": "Pa\\"ri}s",\n  "unit": "celsius"\n}'),
        ("get_time", '{"zone": "CET"}'),
    ]
    for pieces in [list(text), *([text[:i], text[i:]] for i in range(1, len(text)))]:
        assert stream_text("required", pieces) == ("", expected, "tool_calls")


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
        (  # the calls' schema and another constraint: one answer has one grammar
            {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
            400,
            "tool_choice",
        ),
        (
            {
                "tools": TOOLS,
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "guided_regex": "[a-z]+",
            },
            400,
            "tool_choice",
        ),
        ({"tools": [TOOLS[0], TOOLS[0]]}, 422, None),
    ],
)
def test_bad_tools_are_4xx(tiny_server, body, status, param) -> None:
    with tiny_server.client() as http:
        got = http.post("/v1/chat/completions", json={"model": "tiny", "messages": ASK, **body})
    assert got.status_code == status, got.text
    if param:
        assert got.json()["error"]["param"] == param
