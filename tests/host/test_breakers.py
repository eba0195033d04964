"""Circuit breakers over real HTTP (host/breakers.py), with short settings: a model whose load
fails opens its breaker after two failures, then fails fast (503 ``circuit_open`` with
``Retry-After``, nothing loaded), while a route whose target is open answers from its fallback
and other models answer as before; after ``breaker_open_s`` one probe goes through (its
failure opens the breaker again; once the checkpoint is repaired, its success closes it);
``circuit_breaker_state{model}`` follows in /metrics. A model that hangs past the server's
deadline opens its breaker too, and never holds another model back. Bounded loops, no mocks."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from hfskills.host.breakers import Breakers, CircuitOpen
from hfskills.host.metrics import Metrics
from hfskills.host.scheduler import Busy
from hfskills.skillset.runtime.errors import InferenceError, InvalidInput

from .conftest import Server, entry

OPEN_S = 3.0
#: Every request but the hanging ones runs under a long deadline of its own (not shortened:
#: a timeout under the server's deadline counts as the model's failure).
LONG = {"X-Request-Timeout": "60"}


def broken_copy(checkpoint: Path, where: Path) -> Path:
    """A copy of ``checkpoint`` whose weights are garbage (as tests/control/test_routing.py's):
    the catalog serves it, loading fails."""
    target = where / "broken"
    shutil.copytree(checkpoint, target)
    for weights in target.glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    return target


@pytest.fixture(scope="module")
def checkpoints(task_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    embedder = task_checkpoint("bert", "text_embedding")
    return embedder, broken_copy(embedder, tmp_path_factory.mktemp("breakers"))


@pytest.fixture(scope="module")
def server(serve, checkpoints, long_llama, tmp_path_factory) -> Server:
    embedder, broken = checkpoints
    return serve(
        models=[
            entry("good", embedder),
            entry("flaky", broken),
            entry("gen", long_llama, hardware=["cpu"]),
        ],
        routes=[
            {"name": "safe", "targets": [{"model": "flaky", "weight": 1}], "fallbacks": ["good"]}
        ],
        embedded_default=False,
        database_url=f"sqlite:///{tmp_path_factory.mktemp('breakers-db') / 'control.db'}",
        breaker_failures=2,
        breaker_window_s=60,
        breaker_open_s=OPEN_S,
        request_timeout_s=3,
        route_failures_before_cooldown=1000,  # the routes' cooldowns stay out of the way
    )


def embed(http: httpx.Client, model: str) -> httpx.Response:
    return http.post("/v1/embeddings", json={"model": model, "input": "hi"}, headers=LONG)


def state(http: httpx.Client, model: str) -> float:
    """``hfskills_circuit_breaker_state{model}`` as GET /metrics exports it."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(f'hfskills_circuit_breaker_state{{model="{model}"}} '):
            return float(line.split()[-1])
    raise AssertionError(f"no circuit_breaker_state for {model} in /metrics")


def code(response: httpx.Response) -> Any:
    return response.json()["error"]["code"] if response.status_code != 200 else None


def until(http: httpx.Client, model: str, wanted: Any, seconds: float = 15) -> httpx.Response:
    """Ask ``model`` until the answer's error code is ``wanted`` (None: a 200); each answer
    before it must be the breaker's fast failure."""
    deadline = time.monotonic() + seconds
    while True:
        answer = embed(http, model)
        if code(answer) == wanted:
            return answer
        assert code(answer) == "circuit_open", answer.text
        assert time.monotonic() < deadline, f"{model} never answered {wanted}"
        time.sleep(0.1)


def test_open_fail_fast_fall_back_half_open_and_recover(server, checkpoints) -> None:
    embedder, broken = checkpoints
    failed_loads = server.host.metrics.loads.labels(model="flaky", status="failed")
    with server.client() as http:
        assert state(http, "flaky") == 0  # exported from the start, closed
        assert embed(http, "good").status_code == 200  # loaded: the fallback answers at once
        for _ in range(2):  # two failures within the window: open
            assert code(embed(http, "flaky")) == "model_load_failed"
        assert state(http, "flaky") == 1
        loads = failed_loads._value.get()

        started = time.monotonic()
        fast = embed(http, "flaky")
        took = time.monotonic() - started
        assert fast.status_code == 503 and code(fast) == "circuit_open", fast.text
        assert 1 <= int(fast.headers["retry-after"]) <= OPEN_S
        message = fast.json()["error"]["message"]
        assert "circuit breaker is open" in message and "failed to load" in message  # the latest
        assert took < 1.0 and failed_loads._value.get() == loads  # nothing was loaded
        tgi = http.post("/models/flaky", json={"inputs": "hi"}, headers=LONG)
        assert tgi.status_code == 503 and tgi.json()["error_type"] == "unavailable"

        # a route whose target is open answers from its fallback, counting no new failure
        routed = embed(http, "safe")
        assert routed.status_code == 200, routed.text
        assert routed.headers["x-hfskills-model"] == "good@1"
        assert routed.headers["x-hfskills-route"] == "safe"
        assert "flaky" not in http.get("/api/routes").json()["health"]
        assert failed_loads._value.get() == loads
        assert embed(http, "good").status_code == 200  # other models: as before

        # half-open after OPEN_S: one probe; it fails (still broken), so open again
        until(http, "flaky", "model_load_failed")
        assert failed_loads._value.get() == loads + 1
        assert state(http, "flaky") == 1
        assert code(embed(http, "flaky")) == "circuit_open"

        # repaired: the next probe loads it and closes the breaker
        for weights in embedder.glob("*.safetensors"):
            shutil.copy(weights, broken / weights.name)
        answer = until(http, "flaky", None)
        assert len(answer.json()["data"][0]["embedding"]) > 0
        assert state(http, "flaky") == 0
        assert embed(http, "flaky").status_code == 200
    rejected = server.host.metrics.breaker_rejected.labels(model="flaky")._value.get()
    assert rejected >= 3


def alone(server: Server, body: dict[str, Any]) -> httpx.Response:
    """A request on a client of its own (for a thread)."""
    with server.client() as http:
        return http.post("/v1/completions", json=body)


def test_a_hanging_model_opens_its_breaker_and_holds_no_other_back(server) -> None:
    body = {"model": "gen", "prompt": "Once", "max_tokens": 8000, "ignore_eos": True}
    with server.client() as http, ThreadPoolExecutor(1) as pool:
        assert embed(http, "good").status_code == 200
        # a client's own shorter deadline says nothing about the model: not counted
        short = http.post("/v1/completions", json=body, headers={"X-Request-Timeout": "1"})
        assert short.status_code == 504, short.text
        assert state(http, "gen") == 0
        for _ in range(2):  # past the server's own 3 s deadline: the model hangs
            hung = pool.submit(alone, server, body)
            time.sleep(0.5)  # it is decoding now
            for _ in range(3):  # meanwhile, another model answers at once
                started = time.monotonic()
                assert embed(http, "good").status_code == 200
                assert time.monotonic() - started < 1.0
            assert hung.result(timeout=30).status_code == 504
        assert state(http, "gen") == 1
        started = time.monotonic()
        fast = http.post("/v1/completions", json=body)
        assert fast.status_code == 503 and code(fast) == "circuit_open", fast.text
        assert time.monotonic() - started < 1.0
        assert state(http, "good") == 0


def test_the_policy_step_by_step_on_a_clock_of_its_own() -> None:
    """The same policy without HTTP: the failure share, what is no failure, the one probe."""
    now = [0.0]
    breakers = Breakers(Metrics(), failures=3, window_s=10, open_s=5, clock=lambda: now[0])

    def call(error: BaseException | None, timeout_s: float = 300.0) -> None:
        breakers.enter("m", timeout_s).end("ok" if error is None else "error", error)

    boom = InferenceError("text_generation failed: boom")
    for _ in range(4):
        call(None)
    for _ in range(3):
        call(boom)  # 3 failures, but 3 of 7 calls: below half
    assert breakers.state("m") == "closed"
    # not the model's failures: a client's error, an overload, a client's own short deadline
    call(InvalidInput("inputs: bad", param="inputs"))
    call(Busy("waited"))
    breakers.enter("m", 1.0).end("timeout")
    assert breakers.state("m") == "closed"
    call(boom)  # 4 of 8: open
    assert breakers.state("m") == "open"
    with pytest.raises(CircuitOpen) as fast:
        breakers.enter("m", 300.0)
    assert fast.value.retry_after_s == 5 and fast.value.status == 503

    now[0] += 5  # half-open: one probe at a time
    probe = breakers.enter("m", 300.0)
    assert breakers.state("m") == "half_open"
    with pytest.raises(CircuitOpen):
        breakers.enter("m", 300.0)
    probe.end("cancelled")  # its client left: the next request probes
    breakers.enter("m", 300.0).end("timeout")  # the server's own deadline: the model hangs
    assert breakers.state("m") == "open"
    now[0] += 5
    breakers.enter("m", 300.0).end("ok")
    assert breakers.state("m") == "closed"
    now[0] += 11  # the window forgets
    for _ in range(3):
        call(boom)
    assert breakers.state("m") == "open"  # 3 of 3 in the window
