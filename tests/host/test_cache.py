"""The response cache over real HTTP (host/cache.py): a repeated deterministic request is
answered from memory (the same bytes, faster, ``X-HFSkills-Cache: hit``, no model request in
the metrics) in each API's shape, a body that differs only in key order or whitespace is the
same request, ``Cache-Control: no-cache`` skips the lookup, and sampled generations and
streams are never cached; the cache stays within its bytes. Tiny checkpoints, no mocks."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import numpy as np
import pytest

from hfskills.host.cache import ENTRY_OVERHEAD, ResponseCache
from hfskills.host.metrics import Metrics

from .conftest import Server, entry


@pytest.fixture(scope="module")
def server(serve, task_checkpoint, long_llama, tmp_path_factory) -> Server:
    return serve(
        models=[
            entry("emb", task_checkpoint("bert", "text_embedding")),
            entry("cls", task_checkpoint("bert", "text_classification")),
            entry("gen", long_llama, hardware=["cpu"]),
        ],
        embedded_default=False,
        database_url=f"sqlite:///{tmp_path_factory.mktemp('cache-db') / 'control.db'}",
        response_cache_bytes=2_000_000,
    )


def metric(server: Server, name: str, **labels: str) -> float:
    total = 0.0
    for family in server.host.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def calls(server: Server, model: str) -> float:
    """The model's requests as the metrics count them (cache hits are none)."""
    return metric(server, "hfskills_model_requests_total", model=model)


def post(http: httpx.Client, path: str, body: Any, **headers: str) -> httpx.Response:
    """``body`` sent as given (a string: raw JSON, e.g. with other key order or spaces)."""
    raw = body if isinstance(body, str) else json.dumps(body)
    headers = {"Content-Type": "application/json", **headers}
    answer = http.post(path, content=raw, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer


def test_a_repeated_embedding_is_a_hit_with_the_same_bytes(server) -> None:
    body = {"model": "emb", "input": ["a cached sentence", "and another"]}
    with server.client() as http:
        first = post(http, "/v1/embeddings", body)
        assert first.headers["x-hfskills-cache"] == "miss"
        before = calls(server, "emb")
        hits = metric(server, "hfskills_response_cache_lookups_total", model="emb", result="hit")
        # the same request: other key order, other whitespace
        again = post(http, "/v1/embeddings", '{ "input": ["a cached sentence", "and another"],'
                     ' "model":"emb" }')  # fmt: skip
        assert again.headers["x-hfskills-cache"] == "hit"
        assert again.content == first.content
        assert again.headers["x-hfskills-model"] == "emb@1"
        assert calls(server, "emb") == before  # not a model request
        after = metric(server, "hfskills_response_cache_lookups_total", model="emb", result="hit")
        assert after == hits + 1
        # another shape of the same call: base64 of the same floats
        b64 = post(http, "/v1/embeddings", {**body, "encoding_format": "base64"})
        assert b64.headers["x-hfskills-cache"] == "hit"
        for row, floats in zip(b64.json()["data"], first.json()["data"], strict=True):
            vector = np.frombuffer(base64.b64decode(row["embedding"]), dtype="<f4")
            assert np.array_equal(vector, np.asarray(floats["embedding"], dtype="<f4"))
        # Cache-Control: no-cache skips the lookup; the model answers (and refreshes the entry)
        fresh = post(http, "/v1/embeddings", body, **{"Cache-Control": "no-cache"})
        assert fresh.headers.get("x-hfskills-cache") is None
        assert fresh.content == first.content
        assert calls(server, "emb") == before + 1
        assert post(http, "/v1/embeddings", body).headers["x-hfskills-cache"] == "hit"
        text = http.get("/metrics").text
    ratio = [line for line in text.splitlines() if line.startswith("hfskills_response_cache_hit")]
    assert ratio and 0 < float(ratio[0].split()[-1]) < 1, ratio
    assert "hfskills_response_cache_bytes " in text


def test_classification_and_tei_shapes_hit_too(server) -> None:
    with server.client() as http:
        first = post(http, "/models/cls", {"inputs": "good movie"})
        again = post(http, "/models/cls", {"inputs": "good movie"})
        assert first.headers["x-hfskills-cache"] == "miss"
        assert again.headers["x-hfskills-cache"] == "hit" and again.content == first.content
        tei = post(http, "/embed", {"inputs": ["a cached sentence"]})
        assert post(http, "/embed", {"inputs": ["a cached sentence"]}).content == tei.content


def test_greedy_generation_is_cached_faster_and_sampling_never(server) -> None:
    long_greedy = {
        "model": "gen",
        "prompt": "Once",
        "max_tokens": 300,
        "ignore_eos": True,
        "temperature": 0,  # OpenAI samples at 1 unless told 0
    }
    with server.client() as http:
        post(http, "/v1/completions", {**long_greedy, "max_tokens": 1})  # loaded
        before = calls(server, "gen")
        started = time.monotonic()
        first = post(http, "/v1/completions", long_greedy)
        miss_s = time.monotonic() - started
        started = time.monotonic()
        again = post(http, "/v1/completions", long_greedy)
        hit_s = time.monotonic() - started
        assert first.headers["x-hfskills-cache"] == "miss"
        assert again.headers["x-hfskills-cache"] == "hit"
        assert again.json()["choices"] == first.json()["choices"]
        assert again.json()["usage"] == first.json()["usage"]
        assert first.json()["usage"]["completion_tokens"] == 300
        assert hit_s < miss_s / 2, (hit_s, miss_s)
        assert calls(server, "gen") == before + 1
        # TGI's details: the tokens decoded by the resident model's tokenizer, as on a miss
        tgi = {"inputs": "Once", "parameters": {"max_new_tokens": 5, "details": True}}
        assert post(http, "/generate", tgi).json() == post(http, "/generate", tgi).json()

        messages = [{"role": "user", "content": "hi"}]
        greedy = {"model": "gen", "messages": messages, "max_tokens": 8, "temperature": 0}
        one, two = (post(http, "/v1/chat/completions", greedy) for _ in range(2))
        assert two.headers["x-hfskills-cache"] == "hit"
        assert one.json()["choices"] == two.json()["choices"]
        assert one.json()["usage"] == two.json()["usage"]
        assert one.json()["id"] != two.json()["id"]  # a response of its own, the same answer

        sampled = {**greedy, "temperature": 1.0, "seed": 7}
        before = calls(server, "gen")
        for _ in range(2):
            answer = post(http, "/v1/chat/completions", sampled)
            assert "x-hfskills-cache" not in answer.headers
        assert calls(server, "gen") == before + 2

        before = calls(server, "gen")
        for _ in range(2):  # a stream is never cached
            with http.stream("POST", "/v1/chat/completions", json={**greedy, "stream": True}) as s:
                assert "x-hfskills-cache" not in s.headers
                assert any(line == "data: [DONE]" for line in s.iter_lines())
        assert calls(server, "gen") == before + 2


def test_the_cache_stays_within_its_bytes() -> None:
    bound = 10 * (ENTRY_OVERHEAD + 100)
    cache = ResponseCache(bound, Metrics())
    for i in range(50):
        cache.put(bytes([i]), ["x" * 96], (1, 0))  # 100 bytes of JSON each
        assert cache.bytes <= bound
    assert len(cache.entries) == 10 and cache.get(bytes([0]), "m") is None  # the oldest went
    assert cache.get(bytes([49]), "m") is not None
    cache.put(b"big", ["x" * bound], (1, 0))  # over a quarter of the bound: not stored
    assert b"big" not in cache.entries
