"""An API key's own settings over real HTTP (host/control/keys.py, host/limits.py,
host/safety/, docs/security.md): its own requests and tokens per minute and concurrency in
place of the server's per-key settings, its safety switches (a default-on rule switched off, a
default-off rule switched on, ``*``), ``PATCH /api/keys/{id}`` changing them on a running
server, ``/v1/models`` listing only a model-limited key's models, and ``hfskills keys
create|update`` with the same options; on SQLite and PostgreSQL (skipped where absent).
Tiny checkpoints; every wait is bounded."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from hfskills.host.cli import main
from hfskills.host.control.keys import KeyStore
from tests.databases import BACKENDS

from .conftest import entry

WORDS = " ".join(f"word{i}" for i in range(40))  # over 20 tokens for the tiny bert
#: Most seconds a wait for the server's key snapshot may take.
WAIT_S = 20


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request, serve, fresh_database, task_checkpoint, long_llama, tmp_path_factory
) -> Iterator[dict[str, Any]]:
    """On SQLite and on PostgreSQL (skipped, with the reason, where it is not installed)."""
    root = tmp_path_factory.mktemp("key-settings")
    url = fresh_database(request.param)
    config = root / "hfskills.toml"  # what `hfskills keys --config` reads: the same database
    config.write_text(f'database_url = "{url}"\n')
    embedder = task_checkpoint("bert", "text_embedding")
    running = serve(
        models=[
            entry("emb", embedder, aliases=["emb-alias"]),
            entry("other", embedder),
            entry("gen", long_llama, hardware=["cpu"]),
        ],
        embedded_default=False,
        database_url=url,
        auth_enabled=True,
        auth_keys_refresh_s=0.2,
        rate_limit_requests_per_minute=100,
        safety={
            "rules": [
                {"name": "banned", "keywords": ["kaboom"], "stages": ["pre"]},
                {"name": "strict", "keywords": ["maybe"], "stages": ["pre"], "default": False},
            ]
        },
    )
    store = KeyStore(running.host.control.engine)
    _, admin = store.create("admin", "admin")
    running.app.state.auth.reload()
    yield {"server": running, "admin": admin, "config": str(config)}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create(http: httpx.Client, admin: str, **body: Any) -> tuple[str, str]:
    """(id, key) of a new user key made through the admin API."""
    made = http.post("/api/keys", json={"name": "k", **body}, headers=bearer(admin))
    assert made.status_code == 201, made.text
    return made.json()["id"], made.json()["key"]


def embed(http: httpx.Client, key: str, text: str = "hi") -> httpx.Response:
    return http.post("/v1/embeddings", json={"model": "emb", "input": text}, headers=bearer(key))


def until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, "the server never saw the key's change"
        time.sleep(0.1)


def test_a_keys_own_requests_per_minute_in_place_of_the_servers(server) -> None:
    admin = server["admin"]
    with server["server"].client() as http:
        ident, own = create(http, admin, limits={"requests_per_minute": 2})
        _, plain = create(http, admin)
        answers = [embed(http, own) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429], answers[-1].text
        assert answers[0].headers["x-ratelimit-limit-requests"] == "2"
        assert "2 requests per minute" in answers[2].json()["error"]["message"]
        assert 1 <= int(answers[2].headers["retry-after"]) <= 60
        other = embed(http, plain)  # the server's 100 a minute
        assert other.status_code == 200 and other.headers["x-ratelimit-limit-requests"] == "100"
        # raised on the running server: a new window of 5 (its own), then the server's again
        patched = http.patch(
            f"/api/keys/{ident}", json={"limits": {"requests_per_minute": 5}}, headers=bearer(admin)
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["limits"] == {"requests_per_minute": 5}
        answer = embed(http, own)
        assert answer.status_code == 200 and answer.headers["x-ratelimit-limit-requests"] == "5"
        cleared = http.patch(f"/api/keys/{ident}", json={"limits": None}, headers=bearer(admin))
        assert cleared.status_code == 200 and cleared.json()["limits"] is None
        assert embed(http, own).headers["x-ratelimit-limit-requests"] == "100"


def test_a_keys_own_tokens_per_minute(server) -> None:
    with server["server"].client() as http:
        _, key = create(http, server["admin"], limits={"tokens_per_minute": 20})
        first = embed(http, key, WORDS)  # admitted: tokens were left
        assert first.status_code == 200 and first.json()["usage"]["prompt_tokens"] > 20
        over = embed(http, key)
        assert over.status_code == 429, over.text
        assert "20 tokens per minute" in over.json()["error"]["message"]
        assert over.headers["x-ratelimit-remaining-tokens"] == "0"


def test_a_keys_own_concurrency(server) -> None:
    """The server sets no concurrency limit; this key's is 1: a stream holds its slot."""
    with server["server"].client() as http:
        _, key = create(http, server["admin"], limits={"max_concurrent_requests": 1})
        _, other = create(http, server["admin"])
        assert embed(http, key).status_code == 200
        body = {"model": "gen", "prompt": "Once", "max_tokens": 8000, "ignore_eos": True}
        with http.stream(
            "POST", "/v1/completions", json={**body, "stream": True}, headers=bearer(key)
        ) as stream:
            lines = stream.iter_lines()  # kept: a dropped iterator would close the stream
            first = next(line for line in lines if line.startswith("data:"))
            assert '"text"' in first, first
            second = embed(http, key)
            assert second.status_code == 429, second.text
            assert "this key's max_concurrent_requests" in second.json()["error"]["message"]
            assert embed(http, other).status_code == 200  # no limit of its own, none served
        deadline = time.monotonic() + WAIT_S
        while (answer := embed(http, key)).status_code == 429:
            assert time.monotonic() < deadline, "the stream's slot was never released"
            time.sleep(0.1)
        assert answer.status_code == 200, answer.text


def test_a_keys_safety_switches(server) -> None:
    admin = server["admin"]
    with server["server"].client() as http:
        _, plain = create(http, admin)
        ident, trusted = create(http, admin, safety={"banned": False})
        _, strict = create(http, admin, safety={"strict": True})
        refused = embed(http, plain, "kaboom")
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "content_policy"
        assert embed(http, trusted, "kaboom").status_code == 200  # switched off for this key
        assert embed(http, plain, "maybe").status_code == 200  # off by default
        strict_refused = embed(http, strict, "maybe")
        assert strict_refused.status_code == 400, strict_refused.text
        assert strict_refused.json()["error"]["code"] == "content_policy"
        # every hook back on, then every hook off, on the running server
        on = http.patch(f"/api/keys/{ident}", json={"safety": None}, headers=bearer(admin))
        assert on.status_code == 200 and on.json()["safety"] is None
        assert embed(http, trusted, "kaboom").status_code == 400
        off = http.patch(f"/api/keys/{ident}", json={"safety": {"*": False}}, headers=bearer(admin))
        assert off.status_code == 200 and off.json()["safety"] == {"*": False}
        assert embed(http, trusted, "kaboom maybe").status_code == 200


def test_v1_models_lists_only_a_limited_keys_models(server) -> None:
    with server["server"].client() as http:
        _, limited = create(http, server["admin"], models=["emb"])
        _, everything = create(http, server["admin"])
        seen = http.get("/v1/models", headers=bearer(limited)).json()["data"]
        assert sorted(card["id"] for card in seen) == ["emb", "emb-alias"]
        all_seen = {
            c["id"] for c in http.get("/v1/models", headers=bearer(everything)).json()["data"]
        }
        assert {"emb", "emb-alias", "other", "gen"} <= all_seen
        refused = http.post(
            "/v1/embeddings", json={"model": "other", "input": "hi"}, headers=bearer(limited)
        )
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"


def test_patch_refuses_bad_changes_in_the_api_shape(server) -> None:
    admin = server["admin"]
    with server["server"].client() as http:
        ident, key = create(http, admin)

        def patch(body: Any, who: str = admin, target: str = ident) -> httpx.Response:
            return http.patch(f"/api/keys/{target}", json=body, headers=bearer(who))

        for body in (
            {"limits": {"requests_per_minute": 0}},
            {"limits": {"per_hour": 3}},
            {"safety": {"bad name!": False}},
            {"role": "root"},
            {"key": "hfsk_x"},
        ):
            answer = patch(body)
            assert answer.status_code == 422, (body, answer.text)
            assert answer.json()["error"]["type"] == "invalid_request_error"
        assert patch({"role": "admin"}, who=key).status_code == 403  # a user key: not its own admin
        assert patch({"name": "x"}, target="ffffffffffff").status_code == 404
        renamed = patch({"name": "renamed", "role": "readonly"})
        assert renamed.json()["name"] == "renamed" and renamed.json()["role"] == "readonly"
        until(lambda: embed(http, key).status_code == 403)  # readonly now: no inference
        assert http.delete(f"/api/keys/{ident}", headers=bearer(admin)).status_code == 200
        revoked = patch({"name": "again"})
        assert revoked.status_code == 409 and revoked.json()["error"]["code"] == "key_revoked"


def test_the_cli_sets_and_changes_a_keys_limits_and_switches(server, capsys) -> None:
    config = server["config"]
    argv = ["keys", "create", "--config", config, "--name", "cli-limited", "--rpm", "1"]
    assert main([*argv, "--safety", "banned=off"]) == 0
    key = capsys.readouterr().out.strip()
    ident = key.split("_")[1]
    with server["server"].client() as http:
        until(lambda: embed(http, key, "kaboom").status_code == 200)  # its switch, seen
        assert embed(http, key).status_code == 429  # its one request a minute: spent above
        assert main(["keys", "update", ident, "--config", config, "--rpm", "50"]) == 0
        assert "limits requests_per_minute=50" in capsys.readouterr().out
        until(lambda: embed(http, key).status_code == 200)
        assert main(["keys", "list", "--config", config]) == 0
        line = next(row for row in capsys.readouterr().out.splitlines() if ident in row)
        assert "requests_per_minute=50" in line and "banned=off" in line
        assert main(["keys", "update", ident, "--config", config, "--default-safety"]) == 0
        capsys.readouterr()
        until(lambda: embed(http, key, "kaboom").status_code == 400)
    assert main(["keys", "update", ident, "--config", config, "--safety", "banned"]) == 2
    assert "HOOK=on or HOOK=off" in capsys.readouterr().err
    assert main(["keys", "create", "--config", config, "--name", "x", "--rpm", "0"]) == 2
