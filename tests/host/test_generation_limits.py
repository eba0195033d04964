"""Generation through real HTTP: pathological sampling values answer within seconds (a 4xx that
names the field as the client sent it, or a normal answer), unseeded sampling is random and
seeded sampling repeats, and the model's context is checked, on the default server (SmolLM2 on
OpenVINO GenAI when installed) and on tiny torch checkpoints (hardware cpu: `DecodeEngine`).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import httpx
import pytest

from hfskills.host.protocol import hf
from hfskills.host.protocol import openai as oa

from .conftest import entry

MODEL = "smollm2-135m-instruct"
CHAT = [{"role": "user", "content": "0"}]
QUESTION = {"role": "user", "content": "What is the capital of France?"}
TIMEOUT = 30  # seconds: a request that hangs fails the test instead of the suite
OK, REFUSED = "ok", "refused"
NAN, INF = math.nan, math.inf

#: (field, value, expected) for OpenAI's completions and chat completions.
OPENAI_CASES = [
    ("temperature", 0, OK),
    ("temperature", 5e-324, OK),  # below 1e-5: greedy
    ("temperature", -1, REFUSED),
    ("temperature", NAN, REFUSED),
    ("temperature", INF, REFUSED),
    ("temperature", -INF, REFUSED),
    ("temperature", 1e308, REFUSED),
    ("temperature", 2.5, REFUSED),
    ("top_p", 0, REFUSED),
    ("top_p", 5e-324, OK),
    ("top_p", NAN, REFUSED),
    ("top_p", INF, REFUSED),
    ("top_p", 1.5, REFUSED),
    ("top_k", 0, OK),
    ("top_k", -1, OK),
    ("top_k", 2**31 - 1, OK),
    ("top_k", -2, REFUSED),
    ("top_k", 10**30, REFUSED),
    ("repetition_penalty", 0.01, OK),
    ("repetition_penalty", 100, OK),
    ("repetition_penalty", 0, REFUSED),
    ("repetition_penalty", 5e-324, REFUSED),
    ("repetition_penalty", -1, REFUSED),
    ("repetition_penalty", NAN, REFUSED),
    ("repetition_penalty", INF, REFUSED),
    ("repetition_penalty", 1e308, REFUSED),
    ("frequency_penalty", 0, OK),
    ("frequency_penalty", 5e-324, REFUSED),
    ("frequency_penalty", 2, REFUSED),
    ("frequency_penalty", NAN, REFUSED),
    ("frequency_penalty", -INF, REFUSED),
    ("frequency_penalty", 1e308, REFUSED),
    ("presence_penalty", 0, OK),
    ("presence_penalty", 5e-324, REFUSED),
    ("presence_penalty", NAN, REFUSED),
    ("presence_penalty", INF, REFUSED),
    ("min_tokens", 0, OK),
    ("min_tokens", 4, OK),
    ("min_tokens", -1, REFUSED),
    ("min_tokens", 5, REFUSED),  # above max_tokens (4)
    ("min_tokens", 10**30, REFUSED),
    ("min_tokens", NAN, REFUSED),
    ("max_tokens", 0, REFUSED),
    ("max_tokens", -1, REFUSED),
    ("max_tokens", 5e-324, REFUSED),
    ("max_tokens", NAN, REFUSED),
    ("max_tokens", 1e308, REFUSED),
    ("max_tokens", 10**30, REFUSED),
    ("seed", 0, OK),
    ("seed", 2**64 - 1, OK),
    ("seed", -1, REFUSED),
    ("seed", 2**64, REFUSED),
    ("seed", NAN, REFUSED),
    ("n", 0, REFUSED),
    ("n", 10**6, REFUSED),
]

#: (field, value, expected) for TGI's /generate and /generate_stream ``parameters``.
TGI_CASES = [
    ("temperature", 0, OK),
    ("temperature", 5e-324, OK),
    ("temperature", -1, REFUSED),
    ("temperature", NAN, REFUSED),
    ("temperature", INF, REFUSED),
    ("temperature", 1e308, REFUSED),
    ("top_p", 0, REFUSED),
    ("top_p", 5e-324, OK),
    ("top_p", NAN, REFUSED),
    ("top_p", 1.5, REFUSED),
    ("top_k", 0, OK),
    ("top_k", -1, REFUSED),
    ("top_k", 10**30, REFUSED),
    ("repetition_penalty", 0.01, OK),
    ("repetition_penalty", 0, REFUSED),
    ("repetition_penalty", 5e-324, REFUSED),  # the request that used to hang
    ("repetition_penalty", NAN, REFUSED),
    ("repetition_penalty", INF, REFUSED),
    ("repetition_penalty", 1e308, REFUSED),
    ("frequency_penalty", 0, REFUSED),  # refused unless null (docs/api.md)
    ("frequency_penalty", 0.5, REFUSED),
    ("frequency_penalty", NAN, REFUSED),
    ("typical_p", 0, REFUSED),
    ("typical_p", 5e-324, REFUSED),
    ("typical_p", 0.5, REFUSED),
    ("typical_p", NAN, REFUSED),
    ("min_new_tokens", 2, REFUSED),  # not a TGI parameter
    ("max_new_tokens", 0, REFUSED),
    ("max_new_tokens", NAN, REFUSED),
    ("max_new_tokens", 10**30, REFUSED),
    ("seed", 0, OK),
    ("seed", -1, REFUSED),
    ("seed", 2**64, REFUSED),
    ("seed", NAN, REFUSED),
]


def post(server: Any, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST ``body`` as Python's json writes it (``NaN``, ``Infinity`` included), reading a
    stream to its end; ``TIMEOUT`` bounds the whole exchange."""
    with httpx.Client(base_url=server.base, timeout=TIMEOUT) as http:
        response = http.post(
            path, content=json.dumps(body), headers={"content-type": "application/json"}
        )
        response.read()
        return response


def outcome(response: httpx.Response, field: str, value: Any) -> tuple[str, str]:
    """(OK or REFUSED or "broken", what the response said). A refusal names the field, or,
    for ``NaN`` and ``Infinity`` (not JSON numbers, though Python's json writes them), may
    refuse the body as invalid JSON naming the literal."""
    text = response.text
    if 400 <= response.status_code < 500:
        data = response.json()
        error = data["error"]
        said = json.dumps(error)
        if isinstance(error, dict):  # OpenAI's shape: the field is its param
            named = error.get("param") == field and field in error["message"]
        else:  # TGI's: the field in the message
            named = field in error
        literal = json.dumps(value)
        if isinstance(value, float) and not math.isfinite(value) and literal in said:
            named = True
        return (REFUSED if named else "unnamed", said)
    if response.status_code != 200:
        return "broken", f"{response.status_code} {text[:300]}"
    if "text/event-stream" in response.headers.get("content-type", ""):
        events = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        if not events:
            return "broken", "an empty stream"
        last = events[-1] if events[-1] != "[DONE]" else events[-2]
        if '"error"' in last:
            return (REFUSED if field in last else "unnamed", last)
        if events[-1] != "[DONE]" and '"generated_text"' not in last:
            return "broken", f"a stream that did not end: {last}"
        return OK, last
    data = response.json()
    return (OK if data else "broken", text[:300])


def check(server: Any, path: str, cases: list[tuple[str, Any, str]], make: Any) -> None:
    wrong = []
    for field, value, expected in cases:
        try:
            got, said = outcome(post(server, path, make(field, value)), field, value)
        except httpx.TimeoutException:
            got, said = "hung", f"no answer within {TIMEOUT} s"
        if got != expected:
            wrong.append(f"{path} {field}={value!r}: expected {expected}, got {got}: {said}")
    assert not wrong, "\n".join(wrong)


def warm(server: Any, model: str) -> Any:
    """Load ``model`` first: loading (seconds to a minute on a busy CPU) is not what the
    ``TIMEOUT`` of each request below bounds."""
    body = {"model": model, "prompt": "0", "max_tokens": 1}
    with httpx.Client(base_url=server.base, timeout=600) as http:
        assert http.post("/v1/completions", json=body).status_code == 200
    return server


@pytest.fixture(scope="module")
def default(default_server):
    return warm(default_server, MODEL)  # no configuration: SmolLM2 (GenAI when installed)


@pytest.fixture(scope="module")
def tiny(serve, task_checkpoint):
    """Tiny random-weight decoders on torch (contexts of 128 tokens): a llama (rotary
    positions) and a gpt2 (a learned position table)."""
    server = serve(
        models=[
            entry("tiny", task_checkpoint("llama", "text_generation"), hardware=["cpu"]),
            entry("tiny-gpt2", task_checkpoint("gpt2", "text_generation"), hardware=["cpu"]),
        ],
        embedded_default=False,
    )
    return warm(warm(server, "tiny"), "tiny-gpt2")


def _openai(kind: str, model: str = MODEL) -> Any:
    def make(field: str, value: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "max_tokens": 4, field: value}
        body.update({"messages": CHAT} if kind == "chat" else {"prompt": "0"})
        return body

    return make


def _tgi(field: str, value: Any) -> dict[str, Any]:
    return {"inputs": "0", "parameters": {"max_new_tokens": 4, field: value}}


def test_the_reported_hang_answers_at_once(default) -> None:
    body = {"inputs": "0", "parameters": {"max_new_tokens": 16, "repetition_penalty": 5e-324}}
    for path in ("/generate", "/generate_stream"):
        response = post(default, path, body)
        assert 400 <= response.status_code < 500, response.text
        assert "repetition_penalty" in response.json()["error"]


def test_pathological_values_on_chat_completions(default) -> None:
    check(default, "/v1/chat/completions", OPENAI_CASES, _openai("chat"))


def test_pathological_values_on_completions(default) -> None:
    check(default, "/v1/completions", OPENAI_CASES, _openai("completion"))


def test_pathological_values_on_generate(default) -> None:
    check(default, "/generate", TGI_CASES, _tgi)


def test_pathological_values_on_generate_stream(default) -> None:
    check(default, "/generate_stream", TGI_CASES, _tgi)


def test_pathological_values_on_torch(tiny) -> None:
    """The torch engine takes the same values (a few of each kind, both API families)."""
    picked = {"temperature", "top_p", "top_k", "repetition_penalty", "seed"}
    check(
        tiny,
        "/v1/completions",
        [c for c in OPENAI_CASES if c[0] in picked],
        _openai("completion", "tiny"),
    )
    check(tiny, "/generate_stream", [c for c in TGI_CASES if c[0] in picked], _tgi)


# -- sampling is random; a seed repeats it ------------------------------------------------------


def _completions(server: Any, model: str, **body: Any) -> list[str]:
    request = {"model": model, "prompt": "Once upon a time", "max_tokens": 8, **body}
    response = post(server, "/v1/completions", request)
    assert response.status_code == 200, response.text
    return [c["text"] for c in response.json()["choices"]]


@pytest.mark.parametrize("where", ["default", "tiny"])
def test_unseeded_sampling_differs_and_a_seed_repeats(where: str, request) -> None:
    server = request.getfixturevalue(where)
    model = MODEL if where == "default" else "tiny"
    sampled = {"temperature": 1.0, "ignore_eos": True}
    choices = _completions(server, model, n=4, **sampled)
    assert len(set(choices)) > 1, choices  # n choices of one request
    one_by_one = [_completions(server, model, **sampled)[0] for _ in range(4)]
    assert len(set(one_by_one)) > 1, one_by_one  # separate requests
    seeded = [_completions(server, model, seed=0, **sampled)[0] for _ in range(2)]
    assert seeded[0] == seeded[1]
    # a seeded request does not fix the requests after it
    after = [_completions(server, model, **sampled)[0] for _ in range(3)]
    assert len(set(after)) > 1, after
    # with a seed, n choices still differ from each other, and the whole answer repeats
    seeded_n = [_completions(server, model, seed=7, n=3, **sampled) for _ in range(2)]
    assert seeded_n[0] == seeded_n[1] and len(set(seeded_n[0])) > 1, seeded_n


# -- context length ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny", "tiny-gpt2"])
def test_max_tokens_past_the_context_is_a_400_naming_max_tokens(tiny, model: str) -> None:
    """Was a 424 "index out of range in self" on gpt2, and text past the limit elsewhere."""
    response = post(tiny, "/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 200})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "max_tokens" and error["code"] == "context_length_exceeded"
    assert "max_tokens is 200" in error["message"] and "128" in error["message"]
    response = post(tiny, "/generate", {"inputs": "hi", "parameters": {"max_new_tokens": 200}})
    assert response.status_code == 400, response.text
    assert "max_new_tokens is 200" in response.json()["error"]


def test_a_prompt_longer_than_the_context_names_the_prompt(tiny) -> None:
    long = " ".join(["hello"] * 300)
    response = post(tiny, "/v1/completions", {"model": "tiny", "prompt": long, "max_tokens": 2})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "prompt" and "context holds 128 tokens" in error["message"]
    chat = {"model": "tiny", "messages": [{"role": "user", "content": long}], "max_tokens": 2}
    response = post(tiny, "/v1/chat/completions", chat)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_a_default_budget_is_cut_to_the_context(tiny) -> None:
    """No max_tokens: the chat default (512) is cut to what the 128-token context has room
    for, instead of refusing a limit the client never sent."""
    chat = {"model": "tiny", "messages": CHAT, "ignore_eos": True, "temperature": 0}
    response = post(tiny, "/v1/chat/completions", chat)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["total_tokens"] == 128 and response.json()["choices"][0]["finish_reason"] == (
        "length"
    )


def test_the_default_model_checks_its_context(default) -> None:
    """SmolLM2's GGUF holds 8192 tokens (GenAI generated past it silently before)."""
    body = {"model": MODEL, "messages": CHAT, "max_tokens": 9000}
    response = post(default, "/v1/chat/completions", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "max_tokens" and "8192" in error["message"]
    response = post(default, "/generate", {"inputs": "0", "parameters": {"max_new_tokens": 9000}})
    assert response.status_code == 400 and "max_new_tokens" in response.json()["error"]


# -- typed params across the seam --------------------------------------------------------------


def test_request_models_make_typed_params() -> None:
    chat = oa.ChatCompletionRequest(
        model="m", messages=CHAT, max_completion_tokens=9, seed=0, top_k=-1
    )
    params = chat.to_generation_params(512)
    assert (params.max_new_tokens, params.seed, params.top_k, params.fit_context) == (
        9,
        0,
        None,
        False,
    )
    assert params.sampling and params.temperature == 1.0
    assert chat.max_tokens_field() == "max_completion_tokens"
    defaulted = oa.CompletionRequest(model="m", prompt="x", temperature=0).to_generation_params(16)
    assert defaulted.max_new_tokens == 16 and defaulted.fit_context and not defaulted.sampling
    assert oa.CompletionRequest(model="m", prompt="x", max_tokens=3).generation_params(3, 16) == {
        "max_new_tokens": 3,
        "do_sample": True,
        "temperature": 1.0,
    }
    tgi = hf.GenerateParameters(max_new_tokens=5, temperature=0.5, seed=0)
    typed = tgi.to_generation_params(100)
    assert (typed.max_new_tokens, typed.temperature, typed.seed, typed.do_sample) == (
        5,
        0.5,
        0,
        True,
    )
    assert tgi.generation_params(100) == typed.model_dump(exclude_defaults=True)
    assert hf.GenerateParameters().to_generation_params(100).fit_context


# -- batch invariance on the default server ----------------------------------------------------


def test_output_does_not_depend_on_the_batch(default) -> None:
    """The embedded default runs GenAI at precision f32: a request's tokens are the same alone
    and while other streams run (a seeded sample is the sensitive probe: with "auto" it
    diverged after ~16 tokens under load; greedy answers have wider margins)."""
    pytest.importorskip("openvino_genai")
    story = [{"role": "user", "content": "Write a short story about a dragon."}]
    probes = [
        {"model": MODEL, "messages": story, "max_tokens": 40, "seed": 5, "ignore_eos": True},
        {"model": MODEL, "messages": [QUESTION], "max_tokens": 24, "temperature": 0},
    ]
    other = {"model": MODEL, "messages": story, "max_tokens": 80, "stream": True, "seed": 1}

    async def under_load(probe: dict[str, Any]) -> str:
        async with httpx.AsyncClient(base_url=default.base, timeout=TIMEOUT) as client:

            async def stream() -> None:
                async with client.stream("POST", "/v1/chat/completions", json=other) as r:
                    async for _ in r.aiter_lines():
                        pass

            streams = [asyncio.create_task(stream()) for _ in range(3)]
            await asyncio.sleep(0.2)
            answer = await client.post("/v1/chat/completions", json=probe)
            await asyncio.gather(*streams)
            return answer.json()["choices"][0]["message"]["content"]

    for probe in probes:
        alone = post(default, "/v1/chat/completions", probe).json()
        assert asyncio.run(under_load(probe)) == alone["choices"][0]["message"]["content"]
