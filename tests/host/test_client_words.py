"""Errors speak the client's words, over real HTTP on the default server: the field as the
client named it (no pydantic locations or prefixes), a code on every error, JSON numbers only."""

from __future__ import annotations

import pytest

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def http(default_server):
    with default_server.client() as client:
        yield client


def openai_error(response) -> dict:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"], error  # every error has a code
    for internal in (".str", ".0.", "Value error", "function-after", "list[", "[TextPart]"):
        assert internal not in error["message"], error
    return error


def test_chat_content_of_the_wrong_type_names_the_message(http) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": 5}]}
    error = openai_error(http.post("/v1/chat/completions", json=body))
    assert error["param"] == "messages[0].content"
    assert error["message"].startswith("messages[0].content: ")


def test_a_completion_prompt_of_the_wrong_type_names_the_prompt(http) -> None:
    error = openai_error(http.post("/v1/completions", json={"model": MODEL, "prompt": {"a": 1}}))
    assert error["param"] == "prompt"


def test_context_errors_name_max_tokens(http) -> None:
    body = {"model": MODEL, "prompt": "hello " * 50, "max_tokens": 100_000}
    error = openai_error(http.post("/v1/completions", json=body))
    assert error["param"] == "max_tokens" and "max_new_tokens" not in error["message"]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9000}
    error = openai_error(http.post("/v1/chat/completions", json=body))
    assert error["param"] == "max_tokens" and "max_tokens" in error["message"]
    tgi = http.post("/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 9000}})
    assert tgi.status_code in (400, 422) and "max_new_tokens" in tgi.json()["error"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_numbers_must_be_json_numbers(http, literal) -> None:
    raw = f'{{"model": "{MODEL}", "prompt": "hi", "temperature": {literal}}}'
    response = http.post(
        "/v1/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    tgi = http.post(
        "/generate", content=f'{{"inputs": "hi", "parameters": {{"temperature": {literal}}}}}'
    )
    assert tgi.status_code == 400 and tgi.json()["error_type"] == "validation"


def test_every_error_has_a_code(http) -> None:
    for response in (
        http.get("/v1/nothing-here"),
        http.post("/v1/models"),
        http.post("/v1/embeddings", json={"model": "nope", "input": "x"}),
        http.post("/v1/embeddings", content=b"{"),
        http.post("/v1/chat/completions", json={"model": MODEL, "messages": []}),
    ):
        assert response.json()["error"]["code"], response.text


def test_an_image_part_sent_to_a_text_model_says_so(http) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "what is it?"}, image]}],
    }
    error = openai_error(http.post("/v1/chat/completions", json=body))
    assert error["param"] == "messages[0].content[1]"  # the image part
    assert "image_url" in error["message"] and "text only" in error["message"]


def test_completions_take_token_id_prompts(http, default_server) -> None:
    """As OpenAI and vLLM: a prompt may be token ids (one list, or a list of lists)."""
    text = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}
    by_text = http.post("/v1/completions", json=text).json()
    loaded = default_server.host.loader.cache[(MODEL, "text_generation")]
    ids = loaded.endpoint.processor("The capital of France is")["input_ids"]
    by_ids = http.post("/v1/completions", json={**text, "prompt": ids}).json()
    assert by_ids["choices"][0]["text"] == by_text["choices"][0]["text"]
    assert by_ids["usage"] == by_text["usage"]
    two = http.post("/v1/completions", json={**text, "prompt": [ids, ids[:3]], "echo": True})
    assert [c["text"][: len("The capital")] for c in two.json()["choices"]] == ["The capital"] * 2
    bad = http.post("/v1/completions", json={**text, "prompt": [1, 2, 10**9]})
    assert openai_error(bad)["param"] == "prompt"
