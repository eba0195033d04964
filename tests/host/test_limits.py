"""Limits over real HTTP (host/limits.py): a caller's requests and tokens per minute (429 with
``Retry-After`` and OpenAI's ``x-ratelimit-*`` headers, in each API family's error shape), a
model's requests per minute (cache hits aside), a caller's concurrent requests (a stream holds
its slot until it ends), and the per-request limits: max tokens (a client's number refused, a
server default cut) and input size. Tiny checkpoints; every wait is bounded."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from .conftest import Server, entry

WORDS = " ".join(f"word{i}" for i in range(80))  # well over 50 tokens for the tiny bert


def fresh_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('limits-db') / 'control.db'}"


@pytest.fixture(scope="module")
def per_caller(serve, task_checkpoint, tmp_path_factory) -> Server:
    return serve(
        models=[entry("emb", task_checkpoint("bert", "text_embedding"))],
        embedded_default=False,
        database_url=fresh_db(tmp_path_factory),
        rate_limit_requests_per_minute=3,
        rate_limit_tokens_per_minute=50,
    )


@pytest.fixture(scope="module")
def per_model(serve, task_checkpoint, tmp_path_factory) -> Server:
    return serve(
        models=[
            entry("emb", task_checkpoint("bert", "text_embedding")),
            entry("gen", task_checkpoint("llama", "text_generation"), hardware=["cpu"]),
        ],
        embedded_default=False,
        database_url=fresh_db(tmp_path_factory),
        model_rate_limit_requests_per_minute=3,
        max_tokens_per_request=4,
        max_input_chars=100,
    )


@pytest.fixture(scope="module")
def concurrent(serve, task_checkpoint, long_llama, tmp_path_factory) -> Server:
    return serve(
        models=[
            entry("emb", task_checkpoint("bert", "text_embedding")),
            entry("gen", long_llama, hardware=["cpu"]),
        ],
        embedded_default=False,
        database_url=fresh_db(tmp_path_factory),
        max_concurrent_requests_per_key=1,
    )


def embed(http: httpx.Client, text: str = "hi", **headers: str) -> httpx.Response:
    return http.post("/v1/embeddings", json={"model": "emb", "input": text}, headers=headers)


def reset_ok(value: str) -> bool:
    """OpenAI's reset format: ``20ms``, ``1s``, ``59.5s``, ``1m0s``."""
    return re.fullmatch(r"\d+ms|(\d+m)?\d+(\.\d+)?s", value) is not None


def refused(response: httpx.Response, openai: bool = True) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["retry-after"]) <= 60
    body = response.json()
    if openai:
        assert body["error"]["type"] == "rate_limit_error"
        assert body["error"]["code"] == "rate_limit_exceeded"
    else:
        assert body["error_type"] == "overloaded" and "rate limit" in body["error"]
    return body


def test_a_caller_over_its_requests_per_minute_gets_429_with_the_headers(per_caller) -> None:
    with per_caller.client() as http:
        for left in (2, 1, 0):
            answer = embed(http, **{"X-User-Id": "alice"})
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-ratelimit-limit-requests"] == "3"
            assert answer.headers["x-ratelimit-remaining-requests"] == str(left)
            assert reset_ok(answer.headers["x-ratelimit-reset-requests"])
            assert answer.headers["x-ratelimit-limit-tokens"] == "50"
            assert reset_ok(answer.headers["x-ratelimit-reset-tokens"])
        over = embed(http, **{"X-User-Id": "alice"})
        body = refused(over)
        assert "3 requests per minute" in body["error"]["message"]
        assert over.headers["x-ratelimit-remaining-requests"] == "0"
        # the TGI/TEI family answers in its own shape; another caller has their own window
        tei = http.post("/embed", json={"inputs": "hi"}, headers={"X-User-Id": "alice"})
        refused(tei, openai=False)
        assert embed(http, **{"X-User-Id": "bob"}).status_code == 200
        # an API key is a caller too (hashed, never kept in clear)
        keyed = {"Authorization": "Bearer sk-dave"}
        assert [embed(http, **keyed).status_code for _ in range(4)] == [200, 200, 200, 429]
    limited = per_caller.host.metrics.rate_limited.labels(scope="key", limit="requests")
    assert limited._value.get() >= 3


def test_a_caller_over_its_tokens_per_minute_gets_429(per_caller) -> None:
    with per_caller.client() as http:
        first = embed(http, WORDS, **{"X-User-Id": "carol"})  # admitted: tokens were left
        assert first.status_code == 200, first.text
        assert first.json()["usage"]["prompt_tokens"] > 50
        over = embed(http, **{"X-User-Id": "carol"})
        body = refused(over)
        assert "50 tokens per minute" in body["error"]["message"]
        assert over.headers["x-ratelimit-remaining-tokens"] == "0"
        assert embed(http, **{"X-User-Id": "erin"}).status_code == 200


def test_a_models_requests_per_minute(per_model) -> None:
    with per_model.client() as http:
        for who in ("a", "b", "c"):  # three callers, one model
            answer = embed(http, **{"X-User-Id": who})
            assert answer.status_code == 200, answer.text
        assert answer.headers["x-ratelimit-limit-requests"] == "3"
        assert answer.headers["x-ratelimit-remaining-requests"] == "0"
        over = embed(http, **{"X-User-Id": "d"})
        assert "for this model" in refused(over)["error"]["message"]
        chat = http.post(
            "/v1/chat/completions",
            json={"model": "gen", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 200, chat.text  # another model: its own window
    limited = per_model.host.metrics.rate_limited.labels(scope="model", limit="requests")
    assert limited._value.get() == 1


def test_max_tokens_and_input_size_per_request(per_model) -> None:
    messages = [{"role": "user", "content": "hi"}]
    with per_model.client() as http:
        # a server default (chat: 512) is cut to the cap
        cut = http.post("/v1/chat/completions", json={"model": "gen", "messages": messages})
        assert cut.status_code == 200, cut.text
        assert cut.json()["usage"]["completion_tokens"] <= 4
        # the client's own number over the cap: 400 naming the field it sent
        over = http.post(
            "/v1/chat/completions", json={"model": "gen", "messages": messages, "max_tokens": 5}
        )
        assert over.status_code == 400, over.text
        error = over.json()["error"]
        assert error["param"] == "max_tokens" and "max_tokens_per_request" in error["message"]
        tgi = http.post("/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 9}})
        assert tgi.status_code == 400 and "max_tokens_per_request" in tgi.json()["error"]
        # more characters than max_input_chars: 413 naming the client's field
        prompt = "hello " * 17  # 102 characters
        big = http.post("/v1/completions", json={"model": "gen", "prompt": prompt})
        assert big.status_code == 413, big.text
        assert big.json()["error"]["param"] == "prompt"
        assert "max_input_chars" in big.json()["error"]["message"]
        fits = http.post("/v1/completions", json={"model": "gen", "prompt": prompt[:100]})
        assert fits.status_code == 200, fits.text


def test_concurrent_requests_per_caller(concurrent) -> None:
    alice = {"X-User-Id": "alice"}
    body = {"model": "gen", "prompt": "Once", "max_tokens": 8000, "ignore_eos": True}
    with concurrent.client() as http:
        assert embed(http, **alice).status_code == 200  # loaded, and released at its end
        with http.stream(
            "POST", "/v1/completions", json={**body, "stream": True}, headers=alice
        ) as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))  # decoding now
            second = embed(http, **alice)
            body_of = refused(second)
            assert "max_concurrent_requests_per_key" in body_of["error"]["message"]
            assert embed(http, **{"X-User-Id": "bob"}).status_code == 200
        # the stream closed: alice's slot comes back (bounded wait for the server to notice)
        deadline = time.monotonic() + 20
        while (answer := embed(http, **alice)).status_code == 429:
            assert time.monotonic() < deadline, "the stream's slot was never released"
            time.sleep(0.1)
        assert answer.status_code == 200, answer.text
    limited = concurrent.host.metrics.rate_limited.labels(scope="key", limit="concurrency")
    assert limited._value.get() >= 1
