"""Remote ``openai`` provider models over real HTTP: two hfskills servers on 127.0.0.1, B serving
a tiny generator and embedder, A registering them as ``openai`` models (``POST /api/models``).
Through A, with the openai SDK: chat (plain and streamed), completions and embeddings naming the
remote model answer as B does (greedy), with B's usage; a route fails over from a broken local
primary to the remote fallback; a route splits between a local and a remote target by weight;
a remote that is down is a counted 502 that routes fail over on and cool down; a remote 4xx
answers the client as it is; a missing key variable is a clear error naming it; and
registering, patching and deleting at run time changes what A serves. A's registry on SQLite
and on a real PostgreSQL (B's on SQLite). A traced host's calls to a remote (an upstream of the
test's own that keeps the headers it gets) carry the request's W3C ``traceparent``, naming the
call's ``remote`` client span, which a real OTLP receiver gets."""

from __future__ import annotations

import json
import math
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

from hfskills.host.config import load_settings
from tests.host.conftest import Server, entry, start

from .conftest import BACKENDS
from .test_routing import broken_copy

KEY_ENV = "HFSKILLS_TEST_REMOTE_KEY"
KEY = "sk-test-remote-0123456789"
UNSET_ENV = "HFSKILLS_TEST_REMOTE_UNSET"
COOLDOWN_S = 5.0
#: Requests in the weighted split, and the tolerance in standard deviations.
N = 60
SIGMAS = 4.5
MESSAGES = [{"role": "user", "content": "Say something about the sea."}]


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", params=BACKENDS)
def servers(
    request, task_checkpoint, fresh_database, tmp_path_factory
) -> Iterator[tuple[Server, Server]]:
    generator = task_checkpoint("llama", "text_generation")
    embedder = task_checkpoint("bert", "text_embedding")
    root = tmp_path_factory.mktemp("remote")
    b = start(
        load_settings(
            models=[
                entry("remote-gen", generator),
                # the remote is asked for a model by its model_id: one more name for one more
                # registration of the same embedder
                entry("remote-embed", embedder, aliases=["remote-nokey"]),
            ],
            embedded_default=False,
            database_url=fresh_database("sqlite"),
        )
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv(KEY_ENV, KEY)
        env.delenv(UNSET_ENV, raising=False)
        a = start(
            load_settings(
                models=[
                    entry("local-embed", embedder),
                    entry("broken-gen", broken_copy(generator, root)),
                ],
                embedded_default=False,
                database_url=fresh_database(request.param),
                route_failures_before_cooldown=2,
                route_cooldown_s=COOLDOWN_S,
            )
        )
        try:
            yield a, b
        finally:
            a.stop()
            b.stop()


@pytest.fixture(scope="module")
def a(servers) -> Server:
    return servers[0]


@pytest.fixture(scope="module")
def b(servers) -> Server:
    return servers[1]


@pytest.fixture(scope="module")
def http(a: Server) -> Iterator[httpx.Client]:
    with a.client() as client:
        yield client


def register(http: httpx.Client, model_id: str, base_url: str, task: str, **extra: Any) -> None:
    body = {
        "model_id": model_id,
        "version": "b1",
        "provider": "openai",
        "base_url": base_url,
        "api_key_env": KEY_ENV,
        "task_types": [task],
        "cost": {"prompt_usd_per_1k": 0.5, "completion_usd_per_1k": 1.5},
        **extra,
    }
    response = http.post("/api/models", json=body)
    assert response.status_code in (200, 201), response.text


@pytest.fixture(scope="module")
def registered(a: Server, b: Server, http: httpx.Client) -> None:
    """A serves B's two models as remote models, and one at a port where nothing listens."""
    register(http, "remote-gen", f"{b.base}/v1", "text_generation")
    register(http, "remote-embed", f"{b.base}/v1", "text_embedding")
    register(http, "remote-down", f"http://127.0.0.1:{free_port()}/v1", "text_embedding")


def sdk(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0)


def put_route(http: httpx.Client, name: str, body: dict[str, Any]) -> None:
    response = http.put(f"/api/routes/{name}", json=body)
    assert response.status_code in (200, 201), response.text


def openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def requests(server: Server, model: str, status: str, hardware: str = "remote") -> float:
    metric = server.host.metrics.requests.labels(model=model, hardware=hardware, status=status)
    return metric._value.get()


pytestmark = pytest.mark.usefixtures("registered")


def test_the_registered_models_are_served(http) -> None:
    served = {card["id"] for card in http.get("/v1/models").json()["data"]}
    assert {"remote-gen", "remote-embed", "local-embed"} <= served
    listed = http.get("/api/models", params={"provider": "openai"}).json()["data"]
    assert {m["model_id"] for m in listed} == {"remote-gen", "remote-embed", "remote-down"}


def test_chat_through_a_answers_as_b(a, b) -> None:
    asked = {"model": "remote-gen", "messages": MESSAGES, "max_tokens": 12, "temperature": 0}
    raw = sdk(a).chat.completions.with_raw_response.create(**asked)
    through_a, direct = raw.parse(), sdk(b).chat.completions.create(**asked)
    assert through_a.choices[0].message.content == direct.choices[0].message.content
    assert through_a.choices[0].finish_reason == direct.choices[0].finish_reason
    assert through_a.usage == direct.usage and direct.usage.completion_tokens > 0
    assert through_a.model == "remote-gen"
    assert raw.headers["x-hfskills-model"] == "remote-gen@b1"
    usage = direct.usage  # priced at the registration's prices per 1000 tokens
    cost = (usage.prompt_tokens * 0.5 + usage.completion_tokens * 1.5) / 1000
    assert float(raw.headers["x-hfskills-cost-usd"]) == pytest.approx(cost, abs=1e-6)
    loaded = a.host.loader.cache[("remote-gen", "text_generation")]
    assert loaded.worker.client.headers["authorization"] == f"Bearer {KEY}"  # the key is sent
    assert loaded.endpoint.hardware == "remote" and loaded.endpoint.memory_bytes == 0


def test_streamed_chat_through_a_answers_as_b(a, b) -> None:
    asked = {"model": "remote-gen", "messages": MESSAGES, "max_tokens": 12, "temperature": 0}
    direct = sdk(b).chat.completions.create(**asked)
    generated_before = a.host.metrics.generated.labels(model="remote-gen")._value.get()
    tokens = a.host.metrics.tokens.labels(model="remote-gen")
    tokens_before = tokens._value.get()
    chunks = list(
        sdk(a).chat.completions.create(**asked, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == direct.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == direct.choices[0].finish_reason
    usage = chunks[-1].usage
    assert usage is not None and usage == direct.usage
    assert {c.model for c in chunks} == {"remote-gen"}
    assert a.host.metrics.generated.labels(model="remote-gen")._value.get() > generated_before
    assert tokens._value.get() == tokens_before + usage.total_tokens  # the remote's count


def test_completions_through_a_answer_as_b(a, b) -> None:
    for prompt in ("The sea is", [5, 6, 7, 8]):
        asked = {"model": "remote-gen", "prompt": prompt, "max_tokens": 6, "temperature": 0}
        through_a, direct = sdk(a).completions.create(**asked), sdk(b).completions.create(**asked)
        assert through_a.choices[0].text == direct.choices[0].text
        assert through_a.usage == direct.usage


def test_embeddings_through_a_answer_as_b(a, b) -> None:
    asked = {"model": "remote-embed", "input": ["the sea", "a tiny model", "hello"]}
    raw = sdk(a).embeddings.with_raw_response.create(**asked)
    through_a, direct = raw.parse(), sdk(b).embeddings.create(**asked)
    assert [d.embedding for d in through_a.data] == [d.embedding for d in direct.data]
    assert through_a.usage.prompt_tokens == direct.usage.prompt_tokens > 0
    assert raw.headers["x-hfskills-model"] == "remote-embed@b1"
    dims = sdk(a).embeddings.create(model="remote-embed", input="the sea", dimensions=8)
    assert len(dims.data[0].embedding) == 8


def test_a_route_fails_over_from_a_broken_local_primary_to_the_remote(a, http) -> None:
    put_route(
        http,
        "safe-chat",
        {"targets": [{"model": "broken-gen", "weight": 1}], "fallbacks": ["remote-gen"]},
    )
    failed = a.host.metrics.loads.labels(model="broken-gen", status="failed")
    before = failed._value.get()
    chat = {"model": "safe-chat", "messages": MESSAGES, "max_tokens": 5, "temperature": 0}
    raw = sdk(a).chat.completions.with_raw_response.create(**chat)
    assert raw.headers["x-hfskills-model"] == "remote-gen@b1"
    assert raw.headers["x-hfskills-route"] == "safe-chat"
    assert raw.parse().model == "remote-gen" and raw.parse().choices[0].message.content
    assert failed._value.get() == before + 1  # the primary was tried, and failed to load
    assert http.get("/api/routes").json()["health"]["broken-gen"]["failures"] == 1


def test_a_route_splits_between_a_local_and_a_remote_target(http) -> None:
    put_route(
        http,
        "mix",
        {
            "targets": [
                {"model": "local-embed", "weight": 1},
                {"model": "remote-embed", "weight": 1},
            ]
        },
    )
    answers: Counter[str] = Counter()
    vectors: dict[str, list[float]] = {}
    for _ in range(N):
        response = http.post("/v1/embeddings", json={"model": "mix", "input": "the sea"})
        assert response.status_code == 200, response.text
        answered = response.headers["x-hfskills-model"]
        answers[answered] += 1
        vectors[answered] = response.json()["data"][0]["embedding"]
    assert set(answers) == {"local-embed@1", "remote-embed@b1"}
    half = N / 2
    assert abs(answers["remote-embed@b1"] - half) <= SIGMAS * math.sqrt(N / 4)
    local, remote = vectors["local-embed@1"], vectors["remote-embed@b1"]
    assert all(math.isclose(x, y, abs_tol=1e-5) for x, y in zip(local, remote, strict=True))
    for user in ("ann", "bob", "cy"):  # sticky per user: each user's arm is the same every time
        body = {"model": "mix", "input": "x", "user": user}
        arms = {http.post("/v1/embeddings", json=body).headers["x-hfskills-model"] for _ in "abc"}
        assert len(arms) == 1


def test_a_remote_that_is_down(a, http) -> None:
    before = requests(a, "remote-down", "error")
    error = openai_error(
        http.post("/v1/embeddings", json={"model": "remote-down", "input": "hi"}), 502
    )
    assert error["code"] == "remote_failed" and "'remote-down' is unreachable" in error["message"]
    assert "127.0.0.1" not in error["message"]  # the client is not told the remote's address
    assert requests(a, "remote-down", "error") == before + 1
    with pytest.raises(openai.InternalServerError):
        sdk(a).embeddings.create(model="remote-down", input="hi")

    put_route(
        http,
        "down-first",
        {"targets": [{"model": "remote-down", "weight": 1}], "fallbacks": ["local-embed"]},
    )
    for expected_failures in (1, 0):  # the second failure in a row starts its cooldown
        response = http.post("/v1/embeddings", json={"model": "down-first", "input": "hi"})
        assert response.status_code == 200 and response.headers["x-hfskills-model"] == (
            "local-embed@1"
        )
        health = http.get("/api/routes").json()["health"]["remote-down"]
        assert health["failures"] == expected_failures
    assert 0 < health["cooldown_s"] <= COOLDOWN_S
    tried = requests(a, "remote-down", "error")
    response = http.post("/v1/embeddings", json={"model": "down-first", "input": "hi"})
    assert response.status_code == 200
    assert requests(a, "remote-down", "error") == tried  # cooling down: not even tried

    put_route(http, "down-only", {"targets": [{"model": "remote-down", "weight": 1}]})
    alone = http.post("/v1/embeddings", json={"model": "down-only", "input": "hi"})
    error = openai_error(alone, 503)  # cooling down: the route has no target to answer
    assert error["code"] == "route_unavailable" and "remote-down" in error["message"]


def test_a_remote_4xx_answers_the_client_as_it_is(a, b) -> None:
    asked = {"model": "remote-gen", "messages": MESSAGES, "max_tokens": 900_000}
    with pytest.raises(openai.BadRequestError) as direct:
        sdk(b).chat.completions.create(**asked)
    with pytest.raises(openai.BadRequestError) as through_a:
        sdk(a).chat.completions.create(**asked)
    assert through_a.value.body == direct.value.body  # message, type, param, code


def test_a_missing_key_variable_is_a_clear_error(a, b, http, monkeypatch) -> None:
    register(http, "remote-nokey", f"{b.base}/v1", "text_embedding", api_key_env=UNSET_ENV)
    response = http.post("/v1/embeddings", json={"model": "remote-nokey", "input": "hi"})
    error = openai_error(response, 503)
    assert error["code"] == "model_load_failed"
    assert f"environment variable {UNSET_ENV}" in error["message"] and "not set" in error["message"]
    monkeypatch.setenv(UNSET_ENV, "sk-now-set")  # the load is tried again at the next request
    response = http.post("/v1/embeddings", json={"model": "remote-nokey", "input": "hi"})
    assert response.status_code == 200, response.text


def test_registry_changes_at_run_time_change_what_is_served(a, b, http) -> None:
    chat = {"model": "remote-gen", "messages": MESSAGES, "max_tokens": 3}
    assert http.patch("/api/models/remote-gen", json={"status": "deprecated"}).status_code == 200
    answer = http.post("/v1/chat/completions", json=chat)
    assert answer.status_code == 200 and "deprecated" in answer.headers["warning"]
    refused = http.put("/api/routes/old", json={"targets": [{"model": "remote-gen", "weight": 1}]})
    assert openai_error(refused, 400)["param"] == "targets[0].model"

    assert http.patch("/api/models/remote-gen", json={"status": "retired"}).status_code == 200
    assert openai_error(http.post("/v1/chat/completions", json=chat), 404)["code"] == (
        "model_retired"
    )
    assert "remote-gen" not in {m["id"] for m in http.get("/v1/models").json()["data"]}
    assert http.patch("/api/models/remote-gen", json={"status": "active"}).status_code == 200
    assert http.post("/v1/chat/completions", json=chat).status_code == 200

    # a new base URL replaces the client: the next request goes to the new place
    register(http, "remote-gen", f"http://127.0.0.1:{free_port()}/v1", "text_generation")
    assert openai_error(http.post("/v1/chat/completions", json=chat), 502)["code"] == (
        "remote_failed"
    )
    register(http, "remote-gen", f"{b.base}/v1", "text_generation")
    assert http.post("/v1/chat/completions", json=chat).status_code == 200

    # a newer active version is the one served
    register(http, "remote-embed", f"{b.base}/v1", "text_embedding", version="b2")
    answer = http.post("/v1/embeddings", json={"model": "remote-embed", "input": "hi"})
    assert answer.headers["x-hfskills-model"] == "remote-embed@b2"
    put_route(http, "pinned", {"targets": [{"model": "remote-embed@b2", "weight": 1}]})
    answer = http.post("/v1/embeddings", json={"model": "pinned", "input": "hi"})
    assert answer.headers["x-hfskills-model"] == "remote-embed@b2"
    body = {"targets": [{"model": "remote-embed@b1", "weight": 1}]}
    error = openai_error(http.put("/api/routes/stale", json=body), 400)
    assert "serves 'remote-embed' at version b2, not b1" in error["message"]

    assert http.delete("/api/models/remote-nokey").status_code == 200
    gone = http.post("/v1/embeddings", json={"model": "remote-nokey", "input": "hi"})
    assert openai_error(gone, 404)["code"] == "model_not_found"
    assert ("remote-nokey", "text_embedding") not in a.host.loader.cache  # its client dropped


def test_a_remote_cannot_take_a_local_name(a, http) -> None:
    register(http, "local-embed", "http://127.0.0.1:9/v1", "text_embedding", version="9")
    answer = http.post("/v1/embeddings", json={"model": "local-embed", "input": "hi"})
    assert answer.headers["x-hfskills-model"] == "local-embed@1"  # still the local model


class Upstream:
    """An OpenAI-compatible server of the test's own on 127.0.0.1: ``/v1/embeddings`` and
    streamed ``/v1/chat/completions`` answered with fixed bodies; each request's headers kept."""

    def __init__(self) -> None:
        self.headers: list[tuple[str, dict[str, str]]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                upstream.headers.append(
                    (self.path, {k.lower(): v for k, v in self.headers.items()})
                )
                if self.path.endswith("/embeddings"):
                    data = [
                        {"object": "embedding", "index": i, "embedding": [1.0, 0.0]}
                        for i in range(len(body["input"]))
                    ]
                    usage = {"prompt_tokens": 2, "total_tokens": 2}
                    self._send("application/json", json.dumps({"data": data, "usage": usage}))
                    return
                chunks = [
                    {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]},
                    {
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
                    },
                ]
                events = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
                self._send("text/event-stream", events)

            def _send(self, kind: str, text: str) -> None:
                payload = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_remote_call_carries_the_request_trace(fresh_database, task_checkpoint) -> None:
    from tests.host.test_tracing import Receiver, _require_otel, spans_of, traceparent

    _require_otel()
    receiver, upstream = Receiver(), Upstream()
    with pytest.MonkeyPatch.context() as env:  # read once, when the app is built
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        for key in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            env.delenv(key, raising=False)
        traced = start(
            load_settings(
                models=[entry("local-embed", task_checkpoint("bert", "text_embedding"))],
                embedded_default=False,
                database_url=fresh_database("sqlite"),
            )
        )
    try:
        with traced.client() as client:
            register(client, "up-embed", f"{upstream.url}/v1", "text_embedding")
            register(client, "up-gen", f"{upstream.url}/v1", "text_generation")
            calls = {
                "/v1/embeddings": {"model": "up-embed", "input": ["the sea", "a ship"]},
                "/v1/chat/completions": {"model": "up-gen", "messages": MESSAGES, "stream": True},
            }
            for path, body in calls.items():
                trace_id, _, headers = traceparent()
                with client.stream("POST", path, json=body, headers=headers) as answer:
                    answer.read()
                assert answer.status_code == 200, answer.text
                sent = [h for p, h in upstream.headers if p == path][-1]
                assert sent["authorization"] == f"Bearer {KEY}"
                assert sent.get("traceparent", "").split("-")[1:2] == [trace_id], sent
                spans = spans_of(traced, receiver, trace_id, at_least=6)
                (call,) = [s for s in spans if s.name == "remote"]
                (engine,) = [s for s in spans if s.name == "engine"]
                assert call.kind == 3 and call.parent == engine.span_id  # SPAN_KIND_CLIENT
                assert call.attributes["url.full"] == f"{upstream.url}{path}"
                assert call.attributes["http.response.status_code"] == 200
                assert sent["traceparent"] == f"00-{trace_id}-{call.span_id}-01"  # its parent
    finally:
        traced.stop()
        upstream.stop()
        receiver.stop()


def test_a_stopped_remote_fails_over(a, b, http) -> None:
    b.stop()
    chat = {"model": "remote-gen", "messages": MESSAGES, "max_tokens": 3}
    error = openai_error(http.post("/v1/chat/completions", json=chat), 502)
    assert error["code"] == "remote_failed"
    put_route(
        http,
        "gen-or-nothing",
        {"targets": [{"model": "remote-gen", "weight": 1}], "fallbacks": ["broken-gen"]},
    )
    routed = http.post("/v1/chat/completions", json={**chat, "model": "gen-or-nothing"})
    assert routed.status_code in (502, 503)
    openai_error(routed, routed.status_code)
