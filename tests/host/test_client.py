"""The Python SDK (hfskills/client) against real servers on 127.0.0.1, sync and async: `infer`
on the embedded all-MiniLM-L6-v2 (the /v1/embeddings vector) and SmolLM2 (the Inference API's
text), a tiny classifier on its first task and by task name; models with their tasks and
hardware, load and unload; the registry, routes, a version switch, costs and benchmarks on a
server with its own control database; an API key (from the constructor and from
HFSKILLS_API_KEY; 401 and 403 as typed errors); retries: a 429 of a concurrency limit retried
after its Retry-After until it succeeds, a per-minute limit's Retry-After over the cap raised at
once, a 503 of an open circuit breaker retried into a successful probe, connection errors
retried only where safe. Every retry is counted by the server (its metrics) or by the socket
that accepted it; every wait is bounded."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hfskills.client import (
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UnprocessableEntityError,
)
from hfskills.client.calls import PIPELINES
from hfskills.host.control import bench
from hfskills.host.control.keys import KeyStore
from hfskills.host.protocol.hf import HF_TASKS

from .conftest import Server, entry
from .test_breakers import broken_copy

EMBEDDER = "all-minilm-l6-v2"
CHAT = "smollm2-135m-instruct"
#: auto_bench_every of the control server: a benchmark after this many calls to a model
EVERY = 3


def fresh_db(tmp_path_factory: pytest.TempPathFactory, name: str) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp(name) / 'control.db'}"


def counter(metric: Any, **labels: str) -> float:
    return metric.labels(**labels)._value.get()


# -- what the client is ---------------------------------------------------------------------------


def test_importing_the_client_loads_no_server_and_no_torch() -> None:
    heavy = ("torch", "transformers", "numpy", "starlette", "uvicorn", "sqlalchemy")
    code = (
        "import sys, hfskills.client; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_pipeline_names_are_the_servers() -> None:
    assert set(PIPELINES) == set(HF_TASKS.values())
    for task, pipeline in PIPELINES.items():
        assert HF_TASKS[pipeline] == task


# -- inference on the embedded models -------------------------------------------------------------


def test_infer_embeddings_is_the_v1_embeddings_vector(default_server) -> None:
    with default_server.client() as http:
        answer = http.post("/v1/embeddings", json={"model": EMBEDDER, "input": "Hello, world"})
    assert answer.status_code == 200, answer.text
    vector = answer.json()["data"][0]["embedding"]
    with Client(default_server.base) as client:
        (inferred,) = client.infer(EMBEDDER, "Hello, world")
        by_task = client.infer(EMBEDDER, ["Hello, world", "Bye"], task="text_embedding")
    assert len(inferred) == 384
    assert inferred == pytest.approx(vector, abs=1e-5)
    assert len(by_task) == 2 and by_task[0] == pytest.approx(vector, abs=1e-5)

    async def run() -> Any:
        async with AsyncClient(default_server.base) as client:
            return await client.infer(EMBEDDER, "Hello, world", dimensions=3)

    (short,) = asyncio.run(run())
    assert len(short) == 3


def test_infer_text_generation(default_server) -> None:
    prompt, params = "The capital of France is", {"max_new_tokens": 8}
    with default_server.client() as http:
        reference = http.post(f"/models/{CHAT}", json={"inputs": prompt, "parameters": params})
    assert reference.status_code == 200, reference.text
    with Client(default_server.base) as client:
        answer = client.infer(CHAT, prompt, **params)
    assert answer == reference.json()  # greedy: the same text
    assert answer[0]["generated_text"].strip()

    async def run() -> Any:
        async with AsyncClient(default_server.base) as client:
            return await client.infer(CHAT, prompt, task="text_generation", **params)

    assert asyncio.run(run()) == reference.json()


# -- a server with its own control database -------------------------------------------------------


@pytest.fixture(scope="module")
def control(serve, task_checkpoint, tmp_path_factory) -> Server:
    """Tiny checkpoints: ``emb`` (model_id emb, version 1), ``emb-next`` (emb, version 2),
    ``cls`` (a classifier, benchmarked every `EVERY` calls), a route ``embedder`` -> emb@1."""
    embedder = task_checkpoint("bert", "text_embedding")
    root = tmp_path_factory.mktemp("client-control")
    return serve(
        models=[
            entry("emb", embedder),
            entry("emb-next", embedder, model_id="emb", version="2"),
            entry("cls", task_checkpoint("bert", "text_classification")),
        ],
        routes=[{"name": "embedder", "targets": [{"model": "emb@1", "weight": 1}]}],
        embedded_default=False,
        database_url=fresh_db(tmp_path_factory, "client-db"),
        auto_bench_every=EVERY,
        bench_jsonl=root / "bench.jsonl",
    )


def test_infer_a_classifier_on_its_first_task_and_by_task(control) -> None:
    with control.client() as http:
        reference = http.post(
            "/models/cls", json={"inputs": "I like you.", "parameters": {"top_k": 2}}
        )
    assert reference.status_code == 200, reference.text
    with Client(control.base) as client:
        first = client.infer("cls", "I like you.", top_k=2)
        named = client.infer("cls", "I like you.", task="text_classification", top_k=2)
        pipeline = client.infer("cls", ["a", "b"], task="text-classification")
        assert first == named == reference.json()
        assert len(first[0]) == 2 and {"label", "score"} <= set(first[0][0])
        assert len(pipeline) == 2
        # the design's route answers errors in OpenAI's shape, the pipeline route in HF's
        with pytest.raises(BadRequestError) as openai_shape:
            client.infer("cls", "hi", foo=1)
        with pytest.raises(BadRequestError) as hf_shape:
            client.infer("cls", "hi", task="text_classification", foo=1)
        with pytest.raises(NotFoundError) as missing:
            client.infer("nope", "hi")
    assert openai_shape.value.status == 400 and "foo" in openai_shape.value.message
    assert openai_shape.value.type == "invalid_request_error"
    assert hf_shape.value.type == hf_shape.value.code == "validation"
    assert "foo" in hf_shape.value.message and hf_shape.value.param is None
    assert missing.value.status == 404 and missing.value.code == "model_not_found"
    assert missing.value.attempts == 1  # a 4xx is never retried


def test_models_with_tasks_and_hardware_load_and_unload(control) -> None:
    with Client(control.base) as client:
        loaded = client.load("emb")
        assert loaded.loaded == "emb/text_embedding" and loaded.hardware == "cpu"
        assert loaded.memory_bytes > 0
        models = {m.name: m for m in client.models()}
        assert models["emb"].tasks == ["text_embedding"] and models["emb"].hardware == ["cpu"]
        assert models["cls"].tasks == ["text_classification"]
        assert models["emb"].skill == "hf_bert"
        (resident,) = [r for r in client.resident() if r.model == "emb"]
        assert resident.task == "text_embedding" and resident.memory_bytes == loaded.memory_bytes
        assert {"emb", "emb-next", "cls", "embedder"} <= set(client.model_ids())
        assert client.unload("emb") == 1
        assert {m.name: m for m in client.models()}["emb"].resident == []
        with pytest.raises(NotFoundError) as gone:
            client.unload("emb")
        assert gone.value.code == "not_found" and "not resident" in gone.value.message
        with pytest.raises(BadRequestError) as wrong_task:
            client.load("emb", task="fill_mask")
        assert "fill_mask" in wrong_task.value.message

    async def run() -> tuple[Any, Any]:
        async with AsyncClient(control.base) as client:
            loaded = await client.load("cls", task="text_classification")
            return loaded, {m.name: m for m in await client.models()}

    loaded, models = asyncio.run(run())
    assert loaded.loaded == "cls/text_classification" and models["cls"].hardware == ["cpu"]


def test_the_registry(control) -> None:
    with Client(control.base) as client:
        versions = {(m.model_id, m.version): m for m in client.registered_models()}
        assert versions[("emb", "1")].served and versions[("emb", "2")].served
        assert versions[("cls", "1")].task_types == ["text_classification"]
        remote = client.register(
            "remote-gen",
            version="2024-07-18",
            provider="openai",
            base_url="http://10.0.0.5:8000/v1",
            task_types=["text_generation"],
            tags=["safe"],
        )
        assert remote.provider == "openai" and not remote.served and remote.source == "api"
        listed = client.registered_models(provider="openai")
        assert [(m.model_id, m.version) for m in listed] == [("remote-gen", "2024-07-18")]
        priced = client.update_model("cls", cost={"hardware_hourly_usd": 0.5}, tags=["cpu"])
        assert priced.cost.hardware_hourly_usd == 0.5 and priced.tags == ["cpu"]
        assert client.registered_model("cls").cost.hardware_hourly_usd == 0.5
        assert client.delete_model("remote-gen").model_id == "remote-gen"
        choice = client.select("text_classification", strategy="cost-optimized")
        assert choice.selected.model_id == "cls" and choice.strategy == "cost-optimized"
        assert [c.model_id for c in choice.candidates] == ["cls"]
        with pytest.raises(NotFoundError) as missing:
            client.update_model("nope", status="retired")
        with pytest.raises(UnprocessableEntityError) as out_of_range:
            client.update_model("cls", quality={"acc": 1.2})
    assert missing.value.code == "model_not_found" and missing.value.param == "model_id"
    assert out_of_range.value.param == "quality.acc" and out_of_range.value.code == "invalid_value"


def test_routes_and_a_version_switch(control) -> None:
    with Client(control.base) as client:
        (embedder,) = [r for r in client.routes() if r.name == "embedder"]
        assert [(t.model, t.share) for t in embedder.targets] == [("emb@1", 1.0)]
        probe = client.put_route("probe", {"emb": 3, "emb-next": 1}, fallbacks=["emb"])
        assert [(t.model, t.share) for t in probe.targets] == [("emb", 0.75), ("emb-next", 0.25)]
        assert probe.fallbacks == ["emb"] and probe.source == "api"
        assert len(client.infer("probe", "hi")[0]) > 0  # a route is a model name
        assert client.delete_route("probe").name == "probe"
        with pytest.raises(NotFoundError) as gone:
            client.route("probe")
        assert gone.value.code == "route_not_found"

        report = client.switch("2", route="embedder")
        assert (report.to, report.served, report.from_) == ("emb@2", "emb-next", ["emb@1"])
        assert report.warmed and report.total_ms > 0
        assert [t.model for t in client.route("embedder").targets] == ["emb@2"]
        with pytest.raises(ConflictError) as again:
            client.switch("2", route="embedder")
        assert again.value.status == 409 and again.value.param == "version"


def test_costs_and_benchmarks(control) -> None:
    async def run() -> tuple[Any, Any]:
        async with AsyncClient(control.base) as client:
            before = await client.costs(hours=1)
            for _ in range(EVERY):
                await client.infer("cls", "I like you.")
            return before, await client.costs(hours=1)

    before, after = asyncio.run(run())
    assert after.source == "cost_events" and after.hours == 1
    had = before.efficiency_metrics.get("cls@1")
    assert after.efficiency_metrics["cls@1"].requests == (had.requests if had else 0) + EVERY
    assert after.requests >= EVERY

    # the EVERY calls started an automatic benchmark of cls (in the background): bounded wait
    deadline = time.monotonic() + 60
    with Client(control.base) as client:
        while not (rows := client.benchmarks(model="cls", source="auto")):
            assert time.monotonic() < deadline, "no automatic benchmark of cls was recorded"
            time.sleep(0.5)
        assert client.benchmarks(model="nope") == []
        with pytest.raises(BadRequestError) as bad:
            client.benchmarks(source="nope")
        budgets = client.request("GET", "/api/budgets")  # any other route, as JSON
    (row,) = rows  # one row per model, version and hardware; the earlier calls may have run one
    assert (row.model, row.version, row.task) == ("cls", "1", "text_classification")
    assert row.runs == row.sources["auto"] >= 1
    assert row.completed == row.runs * len(bench.PROMPTS) and row.failed == 0
    assert row.tokens_per_s.mean is not None and row.tokens_per_s.mean > 0
    assert bad.value.code == "validation" and "source must be one of" in bad.value.message
    assert budgets == {"object": "list", "data": []}


# -- authentication -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authed(serve, task_checkpoint, tmp_path_factory) -> tuple[Server, dict[str, str]]:
    server = serve(
        models=[entry("emb", task_checkpoint("bert", "text_embedding"))],
        embedded_default=False,
        database_url=fresh_db(tmp_path_factory, "client-auth"),
        auth_enabled=True,
    )
    store = KeyStore(server.host.control.engine)
    keys = {role: store.create(f"{role}-key", role)[1] for role in ("admin", "user")}
    server.app.state.auth.reload()
    return server, keys


def test_an_api_key_from_the_constructor_or_the_environment(authed, monkeypatch) -> None:
    server, keys = authed
    monkeypatch.delenv("HFSKILLS_API_KEY", raising=False)
    with Client(server.base, keys["admin"]) as client:
        assert len(client.infer("emb", "hi")[0]) > 0
        assert client.load("emb").loaded == "emb/text_embedding"
    with Client(server.base) as anonymous:
        with pytest.raises(AuthenticationError) as missing:
            anonymous.infer("emb", "hi")
    assert missing.value.status == 401 and missing.value.code == "missing_credentials"
    assert missing.value.type == "authentication_error"
    with Client(server.base, "hfsk_0123456789ab_" + "x" * 43) as wrong:
        with pytest.raises(AuthenticationError) as invalid:
            wrong.models()
    assert invalid.value.status == 401 and invalid.value.code == "unauthorized"  # HF's shape

    monkeypatch.setenv("HFSKILLS_API_KEY", keys["user"])
    with Client(server.base) as from_env:
        assert len(from_env.infer("emb", "hi")[0]) > 0
        with pytest.raises(PermissionDeniedError) as below:
            from_env.load("emb")  # a user key: admin routes are 403
    assert below.value.status == 403 and below.value.code == "forbidden"
    assert "admin" in below.value.message

    async def run() -> None:
        async with AsyncClient(server.base, api_key="") as client:  # "": no key, env or not
            await client.model_ids()

    with pytest.raises(AuthenticationError) as not_sent:
        asyncio.run(run())
    assert not_sent.value.status == 401


# -- retries --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def per_minute(serve, task_checkpoint, tmp_path_factory) -> Server:
    return serve(
        models=[entry("emb", task_checkpoint("bert", "text_embedding"))],
        embedded_default=False,
        database_url=fresh_db(tmp_path_factory, "client-rpm"),
        rate_limit_requests_per_minute=1,
    )


def test_a_per_minute_limit_is_raised_with_its_retry_after(per_minute) -> None:
    """A window of 60 s asks for more than ``max_retry_wait``: raised at once, not waited."""
    refused = per_minute.host.metrics.rate_limited
    with Client(per_minute.base, headers={"X-User-Id": "sync"}, max_retries=0) as client:
        client.infer("emb", "hi")
        with pytest.raises(RateLimitError) as over:
            client.infer("emb", "hi")
    error = over.value
    assert error.status == 429 and error.code == "rate_limit_exceeded"
    assert error.type == "rate_limit_error" and "1 requests per minute" in error.message
    assert error.retry_after is not None and 1 <= error.retry_after <= 60
    assert error.attempts == 1

    async def run() -> None:
        async with AsyncClient(
            per_minute.base, headers={"X-User-Id": "async"}, max_retries=2, max_retry_wait=0.5
        ) as client:
            await client.infer("emb", "hi")
            await client.infer("emb", "hi")

    before, started = counter(refused, scope="key", limit="requests"), time.monotonic()
    with pytest.raises(RateLimitError) as capped:
        asyncio.run(run())
    assert capped.value.attempts == 1 and capped.value.retry_after > 0.5
    assert time.monotonic() - started < 5  # not waited
    assert counter(refused, scope="key", limit="requests") == before + 1  # no retry was sent


@pytest.fixture(scope="module")
def retrying(serve, task_checkpoint, long_llama, tmp_path_factory) -> tuple[Server, Path]:
    """One request at a time per caller (a refusal asks for 1 s); ``flaky``'s weights are
    garbage, and two failures open its breaker for 3 s."""
    embedder = task_checkpoint("bert", "text_embedding")
    flaky = broken_copy(embedder, tmp_path_factory.mktemp("client-breaker"))
    server = serve(
        models=[
            entry("emb", embedder),
            entry("gen", long_llama, hardware=["cpu"]),
            entry("flaky", flaky),
        ],
        embedded_default=False,
        database_url=fresh_db(tmp_path_factory, "client-retry"),
        max_concurrent_requests_per_key=1,
        breaker_failures=2,
        breaker_window_s=60,
        breaker_open_s=3,
    )
    return server, flaky


def test_a_429_is_retried_after_its_retry_after(retrying) -> None:
    """alice's stream holds her one slot; her client's call is refused (429, Retry-After 1),
    the stream closes, the client's retry a second later is served."""
    server, _ = retrying
    refused = server.host.metrics.rate_limited
    alice = {"X-User-Id": "alice"}
    with Client(server.base, headers=alice) as client:
        client.infer("emb", "warm up")  # loaded before the timing starts
    before = counter(refused, scope="key", limit="concurrency")
    opened = threading.Event()

    def hold() -> None:
        body = {"model": "gen", "prompt": "Once", "max_tokens": 8000, "ignore_eos": True}
        with (
            httpx.Client(base_url=server.base, timeout=60) as http,
            http.stream(
                "POST", "/v1/completions", json={**body, "stream": True}, headers=alice
            ) as stream,
        ):
            lines = stream.iter_lines()  # kept: a dropped generator closes the stream
            assert next(line for line in lines if line.startswith("data:"))
            opened.set()
            deadline = time.monotonic() + 30  # until the client has been refused once
            while counter(refused, scope="key", limit="concurrency") == before:
                assert time.monotonic() < deadline
                time.sleep(0.02)

    holder = threading.Thread(target=hold)
    holder.start()
    assert opened.wait(60), "the stream did not start"
    started = time.monotonic()
    with Client(server.base, headers=alice, max_retries=4) as client:
        answer = client.infer("emb", "hi")
    took = time.monotonic() - started
    holder.join(30)
    assert len(answer[0]) > 0
    retries = counter(refused, scope="key", limit="concurrency") - before
    assert 1 <= retries <= 4
    assert took >= retries * 1.0  # each refusal's Retry-After: 1 was waited


def test_a_503_is_retried_into_a_successful_probe(retrying, task_checkpoint) -> None:
    """Two failed loads open flaky's breaker (503 circuit_open, Retry-After <= 3 s); repaired,
    the client's call is refused once, waits, and the probe after it loads and answers."""
    server, flaky = retrying
    rejected = server.host.metrics.breaker_rejected
    with Client(server.base, max_retries=0) as client:
        for _ in range(2):
            with pytest.raises(ServiceUnavailableError) as failed:
                client.infer("flaky", "hi")
            assert failed.value.code == "model_load_failed" and failed.value.retry_after == 5
    before = counter(rejected, model="flaky")
    with Client(server.base, max_retries=2, max_retry_wait=0.5) as capped:
        with pytest.raises(ServiceUnavailableError) as open_:
            capped.infer("flaky", "hi")
    assert open_.value.code == "circuit_open" and 1 <= open_.value.retry_after <= 3
    assert open_.value.attempts == 1  # its Retry-After is over the cap: not waited for
    assert counter(rejected, model="flaky") == before + 1

    for weights in task_checkpoint("bert", "text_embedding").glob("*.safetensors"):
        shutil.copy(weights, flaky / weights.name)  # repaired while the breaker is open
    before = counter(rejected, model="flaky")

    async def run() -> Any:
        async with AsyncClient(server.base, max_retries=2, max_retry_wait=5) as client:
            return await client.infer("flaky", "hi")

    answer = asyncio.run(run())
    assert len(answer[0]) > 0
    assert counter(rejected, model="flaky") == before + 1  # refused once, then the probe


@pytest.fixture
def dropping() -> Iterator[tuple[str, list[int]]]:
    """A socket that reads each request and closes without answering (``accepted`` counts the
    connections): the request reached a server, which may have run it."""
    sock = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def loop() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            accepted.append(1)
            with conn:
                conn.recv(65536)

    threading.Thread(target=loop, daemon=True).start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", accepted
    sock.close()


def test_connection_errors_are_retried_only_where_safe(dropping) -> None:
    base, accepted = dropping
    with Client(base, max_retries=2, max_retry_wait=0.05) as client:
        with pytest.raises(APIConnectionError) as read:
            client.model_ids()  # a GET: repeated
        assert read.value.attempts == 3 and len(accepted) == 3
        with pytest.raises(APIConnectionError) as posted:
            client.infer("emb", "hi")  # may have run: not repeated
        assert posted.value.attempts == 1 and len(accepted) == 4

    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the request never left, any call may repeat it
    with Client(f"http://127.0.0.1:{port}", max_retries=2, max_retry_wait=0.05) as client:
        with pytest.raises(APIConnectionError) as refused:
            client.infer("emb", "hi")
    assert refused.value.attempts == 3 and not isinstance(refused.value, APITimeoutError)


def test_the_clients_own_timeout_is_not_retried() -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the backlog), never answers
    try:
        base = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with Client(base, timeout=0.3, max_retries=2) as client:
            started = time.monotonic()
            with pytest.raises(APITimeoutError) as timed_out:
                client.model_ids()
        assert timed_out.value.attempts == 1 and time.monotonic() - started < 2
    finally:
        silent.close()


def test_an_error_body_in_neither_shape_keeps_its_text() -> None:
    """A proxy's HTML page (a socket answering 502) is an InternalServerError whose message is
    the page's first characters; a 502 is not retried."""
    page = b"<html><body>502 Bad Gateway</body></html>"
    answer = (
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\n"
        + f"content-length: {len(page)}\r\nconnection: close\r\n\r\n".encode()
        + page
    )
    sock = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve_once() -> None:
        conn, _ = sock.accept()
        accepted.append(1)
        with conn:
            conn.recv(65536)
            conn.sendall(answer)

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    try:
        with Client(f"http://127.0.0.1:{sock.getsockname()[1]}", max_retries=2) as client:
            with pytest.raises(InternalServerError) as proxy:
                client.model_ids()
    finally:
        thread.join(5)
        sock.close()
    error = proxy.value
    assert error.status == 502 and error.message == page.decode()
    assert error.code is None and error.type is None and error.body is None
    assert error.attempts == 1 and accepted == [1]
