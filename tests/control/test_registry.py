"""The model registry over real HTTP (uvicorn on 127.0.0.1, httpx), on SQLite and on a real
PostgreSQL: catalog models registered at start and not overwritten by a restart, CRUD with an
audit row per change, filters, clear 4xx for bad input, retired models refused and deprecated
ones served with a warning, no database query on the request path, and a database that cannot
be reached at start: one line and exit 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, event

from hfskills.host.app import build_app
from hfskills.host.config import load_settings
from hfskills.host.control import DatabaseUnavailable, db
from tests.host.conftest import Server, entry, start

from .conftest import BACKENDS, from_the_request_path

REMOTE = {
    "model_id": "remote-gpt",
    "provider": "openai",
    "base_url": "http://127.0.0.1:9/v1",
    "api_key_env": "REMOTE_API_KEY",
    "task_types": ["text_generation"],
    "tags": ["safe"],
    "cost": {"prompt_usd_per_1k": 0.5, "completion_usd_per_1k": 1.5},
    "quality": {"mmlu": 0.7},
}
ALICE = {"X-User-Id": "alice"}


@pytest.fixture(scope="module", params=BACKENDS)
def setup(request, fresh_database, task_checkpoint):
    url = fresh_database(request.param)
    models = [
        entry("embed", task_checkpoint("bert", "text_embedding"), aliases=["embedder"]),
        entry("gen", task_checkpoint("llama", "text_generation"), version="2026-11"),
    ]
    server = start(load_settings(models=models, embedded_default=False, database_url=url))
    yield server, url, models
    server.stop()


@pytest.fixture(scope="module")
def server(setup) -> Server:
    return setup[0]


@pytest.fixture(scope="module")
def http(server):
    with server.client() as client:
        yield client


def openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text and body["error"]["message"]
    return body["error"]


def audit(http: httpx.Client, model_id: str) -> list[dict[str, Any]]:
    response = http.get("/api/audit", params={"model_id": model_id, "limit": 1000})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_catalog_models_register_at_start(http) -> None:
    models = {m["model_id"]: m for m in http.get("/api/models").json()["data"]}
    embed, gen = models["embed"], models["gen"]
    assert embed["version"] == "1" and gen["version"] == "2026-11"  # the entry's `version`
    for model, tasks in ((embed, ["text_embedding"]), (gen, ["text_generation"])):
        assert model["provider"] == "local" and model["status"] == "active"
        assert model["task_types"] == tasks and model["source"] == "catalog" and model["served"]
        assert model["tags"] == [] and model["quality"] == {}
    (first,) = audit(http, "embed")[-1:]
    assert first["action"] == "catalog.register" and first["actor"] == "catalog"
    assert first["before"] is None and first["after"]["status"] == "active"


def test_register_update_get_patch_delete_with_audit(http) -> None:
    created = http.post("/api/models", json=REMOTE, headers=ALICE)
    assert created.status_code == 201, created.text
    model = created.json()
    assert model["version"] == "1" and model["status"] == "active" and not model["served"]
    assert model["cost"] == {
        "hardware_hourly_usd": None,
        "prompt_usd_per_1k": 0.5,
        "completion_usd_per_1k": 1.5,
    }
    assert model["api_key_env"] == "REMOTE_API_KEY" and model["source"] == "api"
    assert model["created_at"] == model["updated_at"] and model["created_at"].endswith("Z")

    updated = http.post("/api/models", json={"model_id": "remote-gpt", "status": "testing"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["status"] == "testing" and updated.json()["tags"] == ["safe"]
    assert updated.json()["cost"]["prompt_usd_per_1k"] == 0.5  # fields not given are kept
    same = http.post("/api/models", json={"model_id": "remote-gpt", "status": "testing"})
    assert same.status_code == 200  # no change: no audit row
    rows = len(audit(http, "gen"))
    owned = http.post("/api/models", json={"model_id": "gen", "version": "2026-11", "tags": []})
    assert owned.status_code == 200  # the same tags, now the operator's: no audit row either
    assert len(audit(http, "gen")) == rows

    assert http.post("/api/models", json={**REMOTE, "version": "2"}).status_code == 201
    assert http.get("/api/models/remote-gpt").json()["version"] == "2"  # the latest
    assert http.get("/api/models/remote-gpt?version=1").json()["status"] == "testing"

    patched = http.patch(
        "/api/models/remote-gpt",
        params={"version": "1"},
        json={
            "cost": {"prompt_usd_per_1k": 0.4},
            "quality": {"mmlu": None, "gsm8k": 0.5},
            "tags": ["safe", "fast"],
        },
        headers=ALICE,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["cost"]["prompt_usd_per_1k"] == 0.4 and body["cost"]["completion_usd_per_1k"] == 1.5
    assert body["quality"] == {"gsm8k": 0.5} and body["tags"] == ["safe", "fast"]
    assert body["updated_at"] >= body["created_at"]

    deleted = http.delete("/api/models/remote-gpt", headers=ALICE)  # the latest: version 2
    assert deleted.status_code == 200 and deleted.json()["version"] == "2"
    assert http.get("/api/models/remote-gpt").json()["version"] == "1"
    assert http.delete("/api/models/remote-gpt?version=1").status_code == 200
    openai_error(http.get("/api/models/remote-gpt"), 404)

    rows = audit(http, "remote-gpt")
    assert [(r["action"], r["version"], r["actor"]) for r in rows] == [
        ("delete", "1", "anonymous"),
        ("delete", "2", "alice"),
        ("patch", "1", "alice"),
        ("register", "2", "anonymous"),
        ("update", "1", "anonymous"),
        ("register", "1", "alice"),
    ]
    delete, patch, update, register = rows[0], rows[2], rows[4], rows[5]
    assert delete["before"]["status"] == "testing" and delete["after"] is None
    assert patch["before"]["quality"] == {"mmlu": 0.7}
    assert patch["after"]["quality"] == {"gsm8k": 0.5}
    assert update["before"]["status"] == "active" and update["after"]["status"] == "testing"
    assert register["before"] is None and register["after"]["tags"] == ["safe"]
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    assert len(http.get("/api/audit", params={"limit": 2}).json()["data"]) == 2


def test_filters(http) -> None:
    embedder = {
        **REMOTE,
        "model_id": "remote-embed",
        "task_types": ["text_embedding"],
        "status": "testing",
    }
    assert http.post("/api/models", json=embedder).status_code == 201

    def ids(**params: str) -> set[str]:
        response = http.get("/api/models", params=params)
        assert response.status_code == 200, response.text
        return {m["model_id"] for m in response.json()["data"]}

    assert {"embed", "gen", "remote-embed"} <= ids()
    assert ids(provider="openai") == {"remote-embed"}
    assert ids(task="text_embedding") == {"embed", "remote-embed"}
    assert ids(task="text_generation") == {"gen"}
    assert ids(status="testing") == {"remote-embed"}
    assert ids(status="testing", provider="local") == set()
    assert ids(task="text_embedding", provider="local") == {"embed"}
    assert http.delete("/api/models/remote-embed").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"),
    [
        ("POST", "/api/models", b"{not json", 400, None),
        ("POST", "/api/models", b"[1]", 400, None),
        ("POST", "/api/models", {"version": "1"}, 422, "model_id"),
        ("POST", "/api/models", {**REMOTE, "status": "paused"}, 422, "status"),
        ("POST", "/api/models", {**REMOTE, "quality": {"mmlu": 1.5}}, 422, "quality.mmlu"),
        ("POST", "/api/models", {**REMOTE, "quality": {"mmlu": -0.1}}, 422, "quality.mmlu"),
        ("POST", "/api/models", {**REMOTE, "cost": {"prompt_usd_per_1k": -1}}, 422, None),
        ("POST", "/api/models", {**REMOTE, "cost": {"bogus": 1}}, 422, None),
        ("POST", "/api/models", {**REMOTE, "api_key": "sk-secret"}, 422, "api_key"),
        ("POST", "/api/models", {**REMOTE, "api_key_env": "not a name"}, 422, "api_key_env"),
        ("POST", "/api/models", {**REMOTE, "provider": "anthropic"}, 422, "provider"),
        ("POST", "/api/models", {**REMOTE, "model_id": "select"}, 422, "model_id"),
        ("POST", "/api/models", {**REMOTE, "model_id": "bad id"}, 422, "model_id"),
        ("POST", "/api/models", {**REMOTE, "base_url": None}, 400, "base_url"),
        ("POST", "/api/models", {**REMOTE, "task_types": []}, 400, "task_types"),
        ("POST", "/api/models", {"model_id": "x", "base_url": "http://h/v1"}, 400, "base_url"),
        (
            "POST",
            "/api/models",
            {**REMOTE, "model_id": "embed", "task_types": ["text_embedding"]},
            409,
            "provider",
        ),
        ("PATCH", "/api/models/embed", {}, 422, None),
        ("PATCH", "/api/models/embed", {"status": "gone"}, 422, "status"),
        ("PATCH", "/api/models/embed", {"status": None}, 422, None),
        ("PATCH", "/api/models/embed", {"quality": {"f1": 2}}, 422, "quality.f1"),
        ("PATCH", "/api/models/embed", {"cost": {"hardware_hourly_usd": -3}}, 422, None),
        ("PATCH", "/api/models/embed", {"provider": "openai"}, 422, "provider"),
        ("PATCH", "/api/models/missing", {"status": "retired"}, 404, "model_id"),
        ("PATCH", "/api/models/embed?version=9", {"status": "retired"}, 404, "model_id"),
        ("GET", "/api/models/missing", None, 404, "model_id"),
        ("DELETE", "/api/models/missing", None, 404, "model_id"),
        ("GET", "/api/models/embed?version=", None, 400, "version"),
        ("GET", "/api/models?status=paused", None, 400, "status"),
        ("GET", "/api/models?provider=x", None, 400, "provider"),
        ("GET", "/api/audit?limit=0", None, 400, "limit"),
        ("GET", "/api/audit?limit=abc", None, 400, "limit"),
    ],
)
def test_bad_input_gets_a_clear_4xx(http, method, path, body, status, param) -> None:
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    response = http.request(
        method, path, content=content, headers={"content-type": "application/json"}
    )
    error = openai_error(response, status)
    if param is not None:
        assert error["param"] == param, error
    assert http.get("/api/models/embed").json()["status"] == "active"  # nothing changed


def test_a_retired_model_is_not_served(http) -> None:
    embedding = {"model": "embedder", "input": "hello"}
    assert http.post("/v1/embeddings", json=embedding).status_code == 200
    assert http.patch("/api/models/embed", json={"status": "retired"}).status_code == 200
    try:
        for name in ("embed", "embedder"):  # the name and its alias
            refused = http.post("/v1/embeddings", json={**embedding, "model": name})
            error = openai_error(refused, 404)
            assert error["code"] == "model_retired" and "retired" in error["message"]
        served = {m["id"] for m in http.get("/v1/models").json()["data"]}
        assert "embed" not in served and "embedder" not in served and "gen" in served
        hf = http.post("/models/embed", json={"inputs": "hello"})  # the HF API refuses too
        assert hf.status_code == 404 and "retired" in hf.json()["error"]
        tei = http.post("/embed", json={"inputs": "hello"})  # never a root route's default
        assert tei.status_code == 404 and "no model serves text_embedding" in tei.json()["error"]
        chat = {"model": "gen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert http.post("/v1/chat/completions", json=chat).status_code == 200
        assert http.patch("/api/models/gen", json={"status": "retired"}).status_code == 200
        error = openai_error(http.post("/v1/chat/completions", json=chat), 404)
        assert error["code"] == "model_retired"
    finally:
        for name in ("embed", "gen"):
            http.patch(f"/api/models/{name}", json={"status": "active"})
    assert http.post("/v1/embeddings", json=embedding).status_code == 200
    assert http.post("/v1/chat/completions", json=chat).status_code == 200
    assert http.post("/embed", json={"inputs": "hello"}).status_code == 200


def test_a_deprecated_model_is_served_with_a_warning(http) -> None:
    chat = {"model": "gen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    plain = http.post("/v1/chat/completions", json=chat)
    assert plain.status_code == 200 and "warning" not in plain.headers
    assert http.patch("/api/models/gen", json={"status": "deprecated"}).status_code == 200
    try:
        answer = http.post("/v1/chat/completions", json=chat)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-hfskills-deprecated"] == "gen@2026-11"
        assert answer.headers["warning"].startswith('299 hfskills "model gen version 2026-11')
        with http.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as stream:
            assert stream.headers["x-hfskills-deprecated"] == "gen@2026-11"
            assert "[DONE]" in "".join(stream.iter_text())
        other = http.post("/v1/embeddings", json={"model": "embed", "input": "x"})
        assert other.status_code == 200 and "x-hfskills-deprecated" not in other.headers
        # not named: the root TGI route does not pick a deprecated model
        tgi = http.post("/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 2}})
        assert tgi.status_code == 404, tgi.text
    finally:
        http.patch("/api/models/gen", json={"status": "active"})
    assert "x-hfskills-deprecated" not in http.post("/v1/chat/completions", json=chat).headers
    tgi = http.post("/generate", json={"inputs": "hi", "parameters": {"max_new_tokens": 2}})
    assert tgi.status_code == 200, tgi.text


def test_the_request_path_never_queries_the_database(server, http) -> None:
    """The gate reads its in-memory snapshot: no SQL while serving, only on registry writes."""
    statements: list[str] = []

    def count(conn, cursor, statement, *args: Any) -> None:
        if from_the_request_path():  # not the background writers' cost events and events
            statements.append(statement)

    engine = server.host.control.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert http.patch("/api/models/gen", json={"status": "deprecated"}).status_code == 200
        assert statements  # the write and the snapshot's refresh
        statements.clear()
        chat = {"model": "gen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        for _ in range(5):
            assert http.post("/v1/embeddings", json={"model": "embed", "input": "x"}).is_success
            assert http.post("/v1/chat/completions", json=chat).is_success
        assert statements == []
    finally:
        event.remove(engine, "before_cursor_execute", count)
        http.patch("/api/models/gen", json={"status": "active"})


def test_losing_the_database_never_fails_inference(server, http) -> None:
    """The registry's routes answer 503 (Retry-After) while its database is gone; inference
    keeps being served from the gate's snapshot."""
    registry = server.host.control.registry
    kept = registry.sessions
    gone = create_engine(f"postgresql+psycopg://x@127.0.0.1:{_closed_port()}/x")
    registry.sessions = db.sessions(gone)
    try:
        for response in (
            http.get("/api/models"),
            http.patch("/api/models/embed", json={"status": "retired"}),
        ):
            error = openai_error(response, 503)
            assert error["code"] == "registry_unavailable" and response.headers["retry-after"]
        assert http.post("/v1/embeddings", json={"model": "embed", "input": "x"}).is_success
    finally:
        registry.sessions = kept
        gone.dispose()
    assert http.get("/api/models/embed").json()["status"] == "active"


def test_a_restart_keeps_what_operators_changed(setup, http) -> None:
    _, url, models = setup
    changes = {"status": "testing", "tags": ["blue"], "quality": {"recall": 0.9}}
    assert http.patch("/api/models/embed", json=changes).status_code == 200
    operator_tasks = ["text_generation", "summarization"]
    body = {"model_id": "gen", "version": "2026-11", "task_types": operator_tasks}
    assert http.post("/api/models", json=body).status_code == 200
    # the catalog now also serves fill_mask with embed; gen's tasks are the operator's
    changed = [
        {**models[0], "tasks": ["text_embedding", "fill_mask"]},
        {**models[1], "tasks": ["text_generation"], "aliases": ["g"]},
    ]
    again = start(load_settings(models=changed, embedded_default=False, database_url=url))
    try:
        with again.client() as second:
            rows = second.get("/api/models").json()["data"]
            embed = [m for m in rows if m["model_id"] == "embed"]
            assert len(embed) == 1  # registered once
            assert embed[0]["status"] == "testing" and embed[0]["tags"] == ["blue"]
            assert embed[0]["quality"] == {"recall": 0.9}
            assert embed[0]["task_types"] == ["text_embedding", "fill_mask"]  # catalog's
            actions = [r["action"] for r in audit(second, "embed")]
            assert actions[0] == "catalog.update" and actions.count("catalog.register") == 1
            gen = second.get("/api/models/gen").json()
            assert gen["task_types"] == operator_tasks
            assert next(r["action"] for r in audit(second, "gen")) == "update"
            # the snapshot of the second host knows embed is testing: served as usual
            assert second.post("/v1/embeddings", json={"model": "embed", "input": "x"}).is_success
    finally:
        again.stop()
        http.patch("/api/models/embed", json={"status": "active"})
        http.post("/api/models", json={**body, "task_types": ["text_generation"]})


def test_the_default_database_is_a_file_in_the_state_directory(
    tmp_path, monkeypatch, task_checkpoint
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    models = [entry("embed", task_checkpoint("bert", "text_embedding"))]
    app = build_app(load_settings(models=models, embedded_default=False))
    try:
        assert (tmp_path / "hfskills" / "control.db").is_file()
        assert [m.model_id for m in app.state.host.control.registry.list_models()] == ["embed"]
    finally:
        app.state.host.control.close()
        app.state.host.executor.shutdown(wait=False)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when this returns: nothing listens


def test_an_unreachable_database_stops_start_up(task_checkpoint, tmp_path) -> None:
    models = [entry("embed", task_checkpoint("bert", "text_embedding"))]
    bad = f"sqlite:///{tmp_path}/no/such/dir/control.db"
    with pytest.raises(DatabaseUnavailable) as caught:
        build_app(load_settings(models=models, embedded_default=False, database_url=bad))
    assert "unreachable" in caught.value.message and caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgresql+psycopg://hfskills:secret@127.0.0.1:{port}/control", "is unreachable"),
        ("nonsense", "invalid setting database_url"),
    ],
)
def test_hfskills_serve_exits_2_with_one_line(task_checkpoint, url, words) -> None:
    env = {**os.environ, "HFSKILLS_DATABASE_URL": url.format(port=_closed_port())}
    checkpoint = str(task_checkpoint("bert", "text_embedding"))
    done = subprocess.run(
        [sys.executable, "-m", "hfskills.host.cli", "serve", checkpoint, "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hfskills: error: "), done.stderr
    assert words in lines[0] and "secret" not in lines[0]


def test_a_database_from_a_newer_hfskills_is_refused_in_one_line(tmp_path) -> None:
    """A revision this version does not know (a newer hfskills migrated the file) stops start-up
    with what happened and what to do, and leaves the file as it was."""
    url = f"sqlite:///{tmp_path}/control.db"
    db.open_database(url).dispose()
    engine = db.create(url)
    with engine.begin() as connection:
        connection.execute(db.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(DatabaseUnavailable) as caught:
        db.open_database(url)
    message = caught.value.message
    assert "revision 9999" in message and "a newer hfskills wrote it" in message
    assert f"its newest is {db.head()}" in message and caught.value.exit_code == 2
    engine = db.create(url)
    with engine.connect() as connection:
        assert db.current(connection) == "9999"
    engine.dispose()
