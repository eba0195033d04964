"""Runtime version switching over real HTTP (uvicorn on 127.0.0.1, httpx and the openai SDK), on
SQLite and on a real PostgreSQL: catalog entries that are versions of one registered model
(``model_id``), ``model_id@version`` route targets, ``POST /model/switch/{version}`` while
requests are in flight (none fails; every request after the switch answers the new version;
the old one drained, unloaded, its memory measured), a failed load that leaves the route
unchanged, clear 4xx for what cannot be switched, and the audit row."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx
import openai
import pytest

from hfskills.host.config import load_settings
from tests.host.conftest import Server, start

from .conftest import BACKENDS
from .test_routing import broken_copy

TOML = """
[[models]]
name = "emb-v1"
model_id = "emb"
version = "1"
checkpoint = "{embedder}"

[[models]]
name = "emb-v2"
model_id = "emb"
version = "2"
checkpoint = "{embedder}"

[[models]]
name = "emb-broken"
model_id = "emb"
version = "3"
checkpoint = "{broken}"

[[models]]
name = "other"
checkpoint = "{embedder}"

[[models]]
name = "gen"
checkpoint = "{generator}"

[[models]]
name = "gen-next"
model_id = "gen"
version = "2"
checkpoint = "{generator}"

[[routes]]
name = "embed"
targets = [{{model = "emb@1", weight = 1}}]

[[routes]]
name = "chat"
targets = [{{model = "gen", weight = 1}}]
"""

#: Most seconds a bounded wait in these tests may take.
WAIT_S = 60


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, fresh_database, task_checkpoint, long_llama, tmp_path_factory) -> Any:
    embedder = task_checkpoint("bert", "text_embedding")
    root = tmp_path_factory.mktemp("switch")
    config = root / "hfskills.toml"
    config.write_text(
        TOML.format(embedder=embedder, broken=broken_copy(embedder, root), generator=long_llama)
    )
    settings = load_settings(
        config,
        embedded_default=False,
        database_url=fresh_database(request.param),
        switch_drain_timeout_s=WAIT_S,
    )
    server = start(settings)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(server: Server) -> Any:
    with server.client() as client:
        yield client


def embed(http: httpx.Client, model: str) -> httpx.Response:
    response = http.post("/v1/embeddings", json={"model": model, "input": "hi"})
    assert response.status_code == 200, response.text
    return response


def switch(
    http: httpx.Client, version: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return http.post(f"/model/switch/{version}", json=body, headers=headers)


def resident(http: httpx.Client) -> dict[str, int]:
    """Served name -> its requests now, for every resident model."""
    return {m["model"]: m["active_requests"] for m in http.get("/admin/models").json()["resident"]}


def targets(http: httpx.Client, route: str) -> list[tuple[str, float]]:
    response = http.get(f"/api/routes/{route}")
    assert response.status_code == 200, response.text
    return [(t["model"], t["weight"]) for t in response.json()["targets"]]


def switch_audit(http: httpx.Client, route: str) -> list[dict[str, Any]]:
    rows = http.get("/api/audit", params={"kind": "route", "model_id": route}).json()["data"]
    return [r for r in rows if r["action"] == "route.switch"]


def test_entries_register_as_versions_of_one_model(http) -> None:
    listed = http.get("/api/models").json()["data"]
    versions = {(m["model_id"], m["version"]): m for m in listed}
    assert {("emb", "1"), ("emb", "2"), ("emb", "3"), ("gen", "1"), ("gen", "2")} <= set(versions)
    assert not {m["model_id"] for m in listed} & {"emb-v1", "emb-v2", "gen-next"}
    assert all(versions[key]["served"] for key in versions if key[0] in ("emb", "gen"))
    one = http.get("/api/models/emb", params={"version": "2"}).json()
    assert one["task_types"] == ["text_embedding"] and one["source"] == "catalog"

    # model_id@version and the served name both reach an entry; the answer names it
    assert targets(http, "embed") == [("emb@1", 1)]
    assert embed(http, "embed").headers["x-hfskills-model"] == "emb@1"
    for target, answers in (("emb@2", "emb@2"), ("emb-v2", "emb@2"), ("gen@2", "gen@2")):
        task = "text_embedding" if target.startswith("emb") else "text_generation"
        put = http.put("/api/routes/probe", json={"targets": [{"model": target, "weight": 1}]})
        assert put.status_code in (200, 201), put.text
        if task == "text_embedding":
            assert embed(http, "probe").headers["x-hfskills-model"] == answers
    assert http.delete("/api/routes/probe").status_code == 200
    for target, message in (
        ("emb", "name one as emb@VERSION"),
        ("emb@9", "this host serves 'emb' at versions 1, 2, 3, not 9"),
        ("gen@7", "this host serves 'gen' at versions 1, 2, not 7"),
    ):
        refused = http.put("/api/routes/probe", json={"targets": [{"model": target, "weight": 1}]})
        assert refused.status_code == 400, refused.text
        assert message in refused.json()["error"]["message"]
    twice = [{"model": "emb@2", "weight": 1}, {"model": "emb-v2", "weight": 1}]
    assert http.put("/api/routes/probe", json={"targets": twice}).status_code == 400


def test_a_failed_load_leaves_the_route_unchanged(http) -> None:
    before = http.get("/api/routes/embed").json()
    failed = switch(http, "3", {"route": "embed"}, **{"X-User-Id": "alice"})
    assert failed.status_code == 424, failed.text
    error = failed.json()["error"]
    assert error["code"] == "switch_failed" and error["type"] == "server_error"
    assert "failed to load" in error["message"] and "the route is unchanged" in error["message"]
    assert "\n" not in error["message"] and "Traceback" not in failed.text
    assert http.get("/api/routes/embed").json() == before
    assert switch_audit(http, "embed") == []
    assert "emb-broken" not in resident(http)
    assert embed(http, "embed").headers["x-hfskills-model"] == "emb@1"


def test_switch_while_requests_are_in_flight(server, http) -> None:
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="k", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "hi"}]
    stop = threading.Event()
    answers: list[str] = []
    errors: list[BaseException] = []
    streamed: list[int] = []

    def chat() -> None:
        while not stop.is_set():
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="chat", messages=messages, max_tokens=32, extra_body={"ignore_eos": True}
                )
                assert raw.parse().usage.completion_tokens == 32
                answers.append(raw.headers["x-hfskills-model"])
            except BaseException as error:  # recorded: the test fails on any
                errors.append(error)
                return

    def long_stream() -> None:
        try:
            stream = client.chat.completions.create(
                model="chat",
                messages=messages,
                max_tokens=1500,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
            usage = [chunk.usage for chunk in stream if chunk.usage is not None]
            streamed.append(usage[-1].completion_tokens)
        except BaseException as error:
            errors.append(error)

    assert embed(http, "embed")  # nothing to do with the chat route: other models keep serving
    long = threading.Thread(target=long_stream)
    long.start()
    workers = [threading.Thread(target=chat) for _ in range(3)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + WAIT_S
    while resident(http).get("gen", 0) < 2:  # bounded: the requests reach the old version
        assert time.monotonic() < deadline and not errors, errors
        time.sleep(0.02)

    switched = switch(http, "2", {"route": "chat"}, **{"X-User-Id": "bob"})
    assert switched.status_code == 200, switched.text
    report = switched.json()
    stop.set()
    long.join(WAIT_S)
    for worker in workers:
        worker.join(WAIT_S)
    assert not errors, errors
    assert report["route"] == "chat" and report["model_id"] == "gen"
    assert report["from"] == ["gen@1"] and report["to"] == "gen@2"
    assert report["served"] == "gen-next" and report["already_loaded"] is False
    assert report["targets"] == [{"model": "gen@2", "weight": 1, "share": 1}]
    assert report["warmed"] and report["loaded_ms"] > 0 and report["warmed_ms"] > 0
    assert report["in_flight_at_swap"] >= 1 and report["drained"] is True
    assert report["drained_ms"] > 0  # it waited for the long stream at least
    assert report["unloaded"] == ["gen"] and report["kept"] == {}
    assert report["freed_resident_bytes"] > 0
    assert report["freed_resident_bytes"] == (
        report["resident_bytes_before"] - report["resident_bytes_after"]
    )
    assert report["rss_source"] in ("psutil", "/proc/self/statm")
    assert report["freed_rss_bytes"] is not None

    assert streamed == [1500]  # the stream that spanned the switch ended whole
    seen = Counter(answers)
    assert seen["gen@1"] >= 1 and set(seen) <= {"gen@1", "gen@2"}, seen
    assert "gen" not in resident(http) and "gen-next" in resident(http)
    after = [
        client.chat.completions.with_raw_response.create(
            model="chat", messages=messages, max_tokens=2
        )
        for _ in range(10)
    ]
    assert {raw.headers["x-hfskills-model"] for raw in after} == {"gen@2"}
    assert {raw.parse().model for raw in after} == {"gen-next"}
    assert "gen" not in resident(http)  # nothing routed there since

    (row,) = switch_audit(http, "chat")
    assert row["actor"] == "bob" and row["kind"] == "route"
    assert row["before"]["targets"] == [{"model": "gen", "weight": 1}]
    assert row["after"]["targets"] == [{"model": "gen@2", "weight": 1}]
    assert targets(http, "chat") == [("gen@2", 1)]


def test_switch_an_embedding_route_under_load(http, server) -> None:
    assert (
        http.put(
            "/api/routes/embed",
            json={"targets": [{"model": "emb@1", "weight": 3}, {"model": "other", "weight": 1}]},
        ).status_code
        == 200
    )
    stop = threading.Event()
    answers: list[str] = []
    failures: list[str] = []

    def load() -> None:
        with server.client() as client:
            while not stop.is_set():
                response = client.post("/v1/embeddings", json={"model": "embed", "input": "hi"})
                if response.status_code != 200:
                    failures.append(response.text)
                    return
                answers.append(response.headers["x-hfskills-model"])

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + WAIT_S
    while len(answers) < 20:  # bounded: traffic flows through the route first
        assert time.monotonic() < deadline and not failures, failures
        time.sleep(0.02)
    ambiguous = switch(http, "2", {"route": "embed"})
    assert ambiguous.status_code == 400 and ambiguous.json()["error"]["param"] == "model_id"
    switched = switch(http, "2", {"route": "embed", "model_id": "emb"})
    stop.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert switched.status_code == 200, switched.text
    assert not failures, failures
    report = switched.json()
    assert report["from"] == ["emb@1"] and report["to"] == "emb@2"
    assert report["unloaded"] == ["emb-v1"] and report["freed_resident_bytes"] > 0
    assert report["targets"] == [
        {"model": "emb@2", "weight": 3, "share": 0.75},
        {"model": "other", "weight": 1, "share": 0.25},
    ]
    assert set(answers) <= {"emb@1", "emb@2", "other@1"}
    after = Counter(embed(http, "embed").headers["x-hfskills-model"] for _ in range(40))
    assert set(after) <= {"emb@2", "other@1"} and after["emb@2"] > 0, after
    assert "emb-v1" not in resident(http)


def test_what_cannot_be_switched_gets_a_clear_4xx(http) -> None:
    one = {"targets": [{"model": "emb@2", "weight": 1}]}
    mixed = {"targets": [{"model": "emb@2", "weight": 1}, {"model": "other", "weight": 1}]}
    assert http.put("/api/routes/r4", json=one).status_code in (200, 201)
    assert http.put("/api/routes/r4-mixed", json=mixed).status_code in (200, 201)
    remote = {
        "model_id": "emb",
        "version": "7",
        "provider": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "task_types": ["text_embedding"],
    }
    assert http.post("/api/models", json=remote).status_code == 201
    retire = http.patch("/api/models/emb", params={"version": "1"}, json={"status": "retired"})
    assert retire.status_code == 200, retire.text
    rows = len(http.get("/api/audit", params={"kind": "route", "limit": 1000}).json()["data"])
    cases = [
        ("2", {"route": "nope"}, 404, "route_not_found", "route"),
        ("9", {"route": "r4"}, 404, "model_not_found", "model_id"),
        ("7", {"route": "r4"}, 404, "model_not_served", "version"),
        ("1", {"route": "r4"}, 409, "conflict", "version"),  # retired
        ("2", {"route": "r4"}, 409, "conflict", "version"),  # already its only version
        ("2", {"route": "r4", "model_id": "gen"}, 409, "conflict", "model_id"),
        ("2", {"route": "r4-mixed"}, 400, "invalid_value", "model_id"),
        ("-x", {"route": "r4"}, 400, "invalid_request", "version"),
        ("2", {}, 422, "invalid_value", "route"),
        ("2", {"route": "r4", "shadow": 1}, 422, "invalid_value", "shadow"),
    ]
    for version, body, status, code, param in cases:
        response = switch(http, version, body)
        assert response.status_code == status, (version, body, response.text)
        error = response.json()["error"]
        assert (error["code"], error["param"]) == (code, param), (version, body, error)
        assert error["message"] and "Traceback" not in response.text
    bad = http.post(
        "/model/switch/2", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    assert (
        len(http.get("/api/audit", params={"kind": "route", "limit": 1000}).json()["data"]) == rows
    )
