"""No request without an end, over real HTTP: the execution deadline cancels work and answers
504 in the API's shape, and a client that leaves a non-streaming request cancels it inside the
engine. On the default server (SmolLM2 on OpenVINO GenAI) and on the torch engine."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import entry

LONG = "Write a very long story about a dragon who learns to fly."


@pytest.fixture(scope="module")
def torch_server(serve, long_llama):
    """The tiny llama with a context of 8192 positions, so that one request can decode for
    seconds on the torch engine."""
    return serve(models=[entry("gen", long_llama, hardware=["cpu"])], embedded_default=False)


def metric(server, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when there are none)."""
    total = 0.0
    for family in server.host.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def wait_idle(engine, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while engine.load and time.monotonic() < deadline:
        time.sleep(0.05)
    return engine.load == 0


def engine_of(server, name: str):
    return server.host.loader.cache[(name, "text_generation")].worker.engine


def test_a_request_past_its_deadline_answers_504_and_stops(default_server) -> None:
    model = "smollm2-135m-instruct"
    body = {
        "model": model,
        "messages": [{"role": "user", "content": LONG}],
        "max_tokens": 1500,
        "ignore_eos": True,
    }
    with default_server.client() as http:
        http.post("/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 1})
        started = time.monotonic()
        answer = http.post("/v1/chat/completions", json=body, headers={"X-Request-Timeout": "1"})
        took = time.monotonic() - started
    assert answer.status_code == 504, answer.text
    error = answer.json()["error"]
    assert error["code"] == "timeout" and "deadline" in error["message"]
    assert took < 5, took
    assert wait_idle(engine_of(default_server, model))
    assert metric(default_server, "hfskills_model_requests_total", model=model, status="timeout")


def test_tgi_deadline_has_tgi_shape_and_a_stream_ends_with_an_error_event(torch_server) -> None:
    """On the torch engine (the tiny llama decodes for seconds without an EOS, greedy)."""
    body = {"inputs": LONG, "parameters": {"max_new_tokens": 8000}}
    with torch_server.client() as http:
        assert http.post("/generate", json={"inputs": "hi"}).status_code == 200  # loaded
        answer = http.post("/generate", json=body, headers={"X-Request-Timeout": "1"})
        assert answer.status_code == 504
        assert answer.json()["error_type"] == "timeout"
        with http.stream(
            "POST", "/generate_stream", json=body, headers={"X-Request-Timeout": "1.5"}
        ) as stream:
            lines = [line for line in stream.iter_lines() if line.startswith("data:")]
    assert '"error_type":"timeout"' in lines[-1], lines[-1]
    assert len(lines) > 2  # tokens came first
    assert wait_idle(engine_of(torch_server, "gen"))


@pytest.mark.parametrize("which", ["default", "torch"])
def test_a_client_that_gives_up_cancels_its_non_streaming_request(
    which, default_server, torch_server
) -> None:
    server, model = (
        (default_server, "smollm2-135m-instruct") if which == "default" else (torch_server, "gen")
    )
    tokens = 1500 if which == "default" else 8000
    body = {"model": model, "prompt": LONG, "max_tokens": tokens, "ignore_eos": True}
    with server.client() as http:  # loaded first, so the give-up below cuts generation only
        assert http.post("/v1/completions", json={**body, "max_tokens": 1}).status_code == 200
    before = metric(server, "hfskills_model_requests_total", model=model, status="cancelled")
    generated = metric(server, "hfskills_model_generated_tokens_total", model=model)
    with pytest.raises(httpx.ReadTimeout), server.client(timeout=0.5) as http:
        http.post("/v1/completions", json=body)
    engine = engine_of(server, model)
    assert wait_idle(engine, 10), "the engine kept generating for a client that left"
    after = metric(server, "hfskills_model_requests_total", model=model, status="cancelled")
    assert after == before + 1
    produced = metric(server, "hfskills_model_generated_tokens_total", model=model) - generated
    assert produced < tokens, produced  # stopped well before its budget


def test_the_deadline_header_is_checked(default_server) -> None:
    with default_server.client() as http:
        for bad in ("0", "-1", "abc", "nan", "inf", "3601"):
            answer = http.post(
                "/v1/completions",
                json={"model": "smollm2-135m-instruct", "prompt": "Hi", "max_tokens": 1},
                headers={"X-Request-Timeout": bad},
            )
            assert answer.status_code == 400, bad
            assert answer.json()["error"]["param"] == "X-Request-Timeout"
