"""Routes over real HTTP (uvicorn on 127.0.0.1, httpx and the openai SDK), on SQLite and on a
real PostgreSQL: the TOML file's routes written at start, weighted split within binomial
tolerance, sticky assignment per user (body ``user``, ``X-User-Id``, the API key), the canary's
share, the answering model's headers and ``model`` field, failover from a broken primary to a
working fallback with cooldowns, retired and deprecated targets skipped, PUT/GET/DELETE with
audit rows, clear 4xx for bad routes, and no database query on the routed request path."""

from __future__ import annotations

import math
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import ValidationError
from sqlalchemy import event

from hfskills.host.config import load_settings
from hfskills.host.control.gate import Gate
from hfskills.host.control.routing import Plan, Router, stable_draw
from tests.host.conftest import Server, start

from .conftest import BACKENDS, from_the_request_path

#: Requests in a statistical check, and how many standard deviations it tolerates (a false
#: failure about once in 150 000 runs).
N = 400
SIGMAS = 4.5
COOLDOWN_S = 3.0

TOML = """
[[models]]
name = "a"
checkpoint = "{embedder}"
aliases = ["a-alias"]

[[models]]
name = "b"
checkpoint = "{embedder}"
version = "2026-11"

[[models]]
name = "broken"
checkpoint = "{broken}"

[[models]]
name = "gen"
checkpoint = "{generator}"

[[routes]]
name = "embed"
targets = [{{model = "a", weight = 90}}, {{model = "b@2026-11", weight = 10}}]

[[routes]]
name = "chat"
targets = [{{model = "gen", weight = 1}}]
"""


def broken_copy(checkpoint: Path, where: Path) -> Path:
    """A copy of ``checkpoint`` whose weights are garbage: the catalog serves it, loading
    fails."""
    target = where / "broken"
    shutil.copytree(checkpoint, target)
    for weights in target.glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    return target


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, fresh_database, task_checkpoint, tmp_path_factory) -> Any:
    embedder = task_checkpoint("bert", "text_embedding")
    root = tmp_path_factory.mktemp("routing")
    config = root / "hfskills.toml"
    config.write_text(
        TOML.format(
            embedder=embedder,
            broken=broken_copy(embedder, root),
            generator=task_checkpoint("llama", "text_generation"),
        )
    )
    settings = load_settings(
        config,
        embedded_default=False,
        database_url=fresh_database(request.param),
        route_failures_before_cooldown=2,
        route_cooldown_s=COOLDOWN_S,
    )
    server = start(settings)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(server: Server) -> Any:
    with server.client() as client:
        yield client


def embed(http: httpx.Client, model: str, **headers: str) -> httpx.Response:
    response = http.post("/v1/embeddings", json={"model": model, "input": "hi"}, headers=headers)
    assert response.status_code == 200, response.text
    return response


def answered(response: httpx.Response) -> str:
    return response.headers["x-hfskills-model"]


def put(http: httpx.Client, name: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return http.put(f"/api/routes/{name}", json=body, headers=headers)


def route_audit(http: httpx.Client, name: str) -> list[dict[str, Any]]:
    response = http.get("/api/audit", params={"kind": "route", "model_id": name})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def within(count: int, n: int, share: float) -> bool:
    """``count`` of ``n`` draws is within SIGMAS standard deviations of ``share``."""
    return abs(count - n * share) <= SIGMAS * math.sqrt(n * share * (1 - share))


def test_the_config_files_routes_are_written_at_start(http) -> None:
    routes = {r["name"]: r for r in http.get("/api/routes").json()["data"]}
    assert set(routes) == {"embed", "chat"}
    embed_route = routes["embed"]
    assert embed_route["source"] == "config" and embed_route["fallbacks"] == []
    assert [(t["model"], t["weight"], t["share"]) for t in embed_route["targets"]] == [
        ("a", 90, 0.9),
        ("b@2026-11", 10, 0.1),
    ]
    (row,) = route_audit(http, "embed")
    assert row["kind"] == "route" and row["action"] == "config.put" and row["actor"] == "config"
    assert row["before"] is None and row["after"]["targets"][0] == {"model": "a", "weight": 90}
    assert row["version"] == ""
    listed = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert {"embed", "chat", "a", "a-alias", "gen"} <= set(listed)


def test_the_answer_names_the_model_and_version(server, http) -> None:
    direct = embed(http, "a-alias")
    assert answered(direct) == "a@1" and "x-hfskills-route" not in direct.headers
    assert direct.json()["model"] == "a-alias"  # named: the name asked for
    direct_b = embed(http, "b")
    assert answered(direct_b) == "b@2026-11"

    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="k", max_retries=0)
    raw = client.embeddings.with_raw_response.create(model="embed", input="hi", user="carol")
    chosen = raw.headers["x-hfskills-model"]
    assert raw.headers["x-hfskills-route"] == "embed" and chosen in ("a@1", "b@2026-11")
    assert raw.parse().model == chosen.split("@")[0]  # routed: the model that answered

    chat = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert (
        chat.headers["x-hfskills-model"] == "gen@1" and chat.headers["x-hfskills-route"] == "chat"
    )
    assert chat.parse().model == "gen"
    stream = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=True
    )
    assert {chunk.model for chunk in stream} == {"gen"}


def test_anonymous_requests_split_by_weight(http) -> None:
    created = put(
        http, "split", {"targets": [{"model": "a", "weight": 3}, {"model": "b", "weight": 1}]}
    )
    assert created.status_code == 201, created.text
    counts = Counter(answered(embed(http, "split")) for _ in range(N))
    assert set(counts) == {"a@1", "b@2026-11"}
    assert within(counts["a@1"], N, 0.75), counts


def test_the_canary_gets_its_share(http) -> None:
    body = {"targets": [{"model": "a", "weight": 95}, {"model": "b", "weight": 5}]}
    assert put(http, "canary", body).status_code == 201
    counts = Counter(answered(embed(http, "canary")) for _ in range(N))
    assert within(counts["b@2026-11"], N, 0.05), counts
    # the canary's users: 5 % of 20 000 users by the stable hash (in-process, no HTTP)
    router = Router(Gate())
    plan = Plan.of("canary", [("a", 95.0), ("b", 5.0)], [])
    users = 20_000
    canary = sum(router.arm(plan, f"user:u{i}", 0.0) == "b" for i in range(users))
    assert within(canary, users, 0.05), canary
    assert 0 <= stable_draw("canary", "user:u1") < 1


def test_assignment_is_sticky_per_user(server, http) -> None:
    body = {"targets": [{"model": "a", "weight": 1}, {"model": "b", "weight": 1}]}
    assert put(http, "half", body).status_code == 201
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="k", max_retries=0)
    arms: dict[str, set[str]] = {}
    for i in range(24):
        for _ in range(4):
            by_header = answered(embed(http, "half", **{"X-User-Id": f"h{i}"}))
            by_key = answered(embed(http, "half", Authorization=f"Bearer key-{i}"))
            raw = client.embeddings.with_raw_response.create(model="half", input="x", user=f"u{i}")
            arms.setdefault(f"h{i}", set()).add(by_header)
            arms.setdefault(f"k{i}", set()).add(by_key)
            arms.setdefault(f"u{i}", set()).add(raw.headers["x-hfskills-model"])
    assert all(len(arm) == 1 for arm in arms.values()), arms  # each keeps their arm
    seen = Counter(next(iter(arm)) for arm in arms.values())
    assert set(seen) == {"a@1", "b@2026-11"}  # 72 users on a 50/50 route: both arms


def test_failover_from_a_broken_primary_and_cooldown(server, http) -> None:
    failed_loads = server.host.metrics.loads.labels(model="broken", status="failed")
    body = {"targets": [{"model": "broken", "weight": 1}], "fallbacks": ["a"]}
    assert put(http, "safe", body).status_code == 201
    before = failed_loads._value.get()

    first = embed(http, "safe")  # broken fails to load; a answers
    assert answered(first) == "a@1" and first.headers["x-hfskills-route"] == "safe"
    assert first.json()["model"] == "a"
    health = http.get("/api/routes").json()["health"]
    assert health["broken"]["failures"] == 1 and health["broken"]["cooldown_s"] == 0

    assert answered(embed(http, "safe")) == "a@1"  # the 2nd failure in a row: cooldown
    cooling = http.get("/api/routes").json()["health"]["broken"]
    assert cooling["failures"] == 0 and 0 < cooling["cooldown_s"] <= COOLDOWN_S
    assert failed_loads._value.get() == before + 2
    for _ in range(5):  # while it cools down, broken is not even tried
        assert answered(embed(http, "safe")) == "a@1"
    assert failed_loads._value.get() == before + 2

    # a route with no working target: the target's own error, then route_unavailable
    assert put(http, "doomed", {"targets": [{"model": "broken", "weight": 1}]}).status_code == 201
    deadline = time.monotonic() + 10 * COOLDOWN_S
    while "broken" in http.get("/api/routes").json()["health"]:  # bounded: the cooldown ends
        assert time.monotonic() < deadline
        time.sleep(0.1)
    gone = http.post("/v1/embeddings", json={"model": "doomed", "input": "hi"})
    assert gone.status_code == 503 and gone.json()["error"]["code"] == "model_load_failed"
    assert failed_loads._value.get() == before + 3  # tried again after its cooldown
    http.post("/v1/embeddings", json={"model": "doomed", "input": "hi"})  # 2nd: cooldown
    refused = http.post("/v1/embeddings", json={"model": "doomed", "input": "hi"})
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "route_unavailable" and "cooling down" in error["message"]
    assert refused.headers["retry-after"]
    assert answered(embed(http, "safe")) == "a@1"


def test_retired_and_deprecated_targets_are_not_routed(http) -> None:
    body = {"targets": [{"model": "a", "weight": 1}, {"model": "b", "weight": 1}]}
    assert put(http, "pair", body).status_code == 201
    for status in ("deprecated", "retired"):
        patched = http.patch("/api/models/b", json={"status": status})
        assert patched.status_code == 200, patched.text
        assert {answered(embed(http, "pair")) for _ in range(30)} == {"a@1"}
        refused = put(http, "onto-b", {"targets": [{"model": "b", "weight": 1}]})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "targets[0].model"
        assert status in refused.json()["error"]["message"]
    named = http.post("/v1/embeddings", json={"model": "b", "input": "hi"})
    assert named.status_code == 404 and named.json()["error"]["code"] == "model_retired"
    assert http.patch("/api/models/b", json={"status": "deprecated"}).status_code == 200
    assert answered(embed(http, "b")) == "b@2026-11"  # deprecated: served when named
    assert http.patch("/api/models/b", json={"status": "active"}).status_code == 200
    assert {answered(embed(http, "pair")) for _ in range(40)} == {"a@1", "b@2026-11"}


def test_put_get_delete_with_audit_rows(http) -> None:
    body = {"targets": [{"model": "a", "weight": 2}], "fallbacks": ["b@2026-11"]}
    created = put(http, "crud", body, **{"X-User-Id": "alice"})
    assert created.status_code == 201, created.text
    route = created.json()
    assert route["source"] == "api" and route["targets"] == [
        {"model": "a", "weight": 2, "share": 1}
    ]
    assert route["fallbacks"] == ["b@2026-11"] and route["created_at"].endswith("Z")
    assert put(http, "crud", body).status_code == 200  # the same: no audit row
    assert len(route_audit(http, "crud")) == 1

    changed = {"targets": [{"model": "a", "weight": 1}, {"model": "b", "weight": 1}]}
    replaced = put(http, "crud", changed, **{"X-User-Id": "bob"})
    assert replaced.status_code == 200 and replaced.json()["fallbacks"] == []
    assert http.get("/api/routes/crud").json() == replaced.json()
    deleted = http.delete("/api/routes/crud", headers={"X-User-Id": "carol"})
    assert deleted.status_code == 200 and deleted.json()["name"] == "crud"
    assert http.get("/api/routes/crud").status_code == 404
    gone = http.post("/v1/embeddings", json={"model": "crud", "input": "hi"})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"

    rows = route_audit(http, "crud")  # newest first
    assert [(r["action"], r["actor"]) for r in rows] == [
        ("route.delete", "carol"),
        ("route.put", "bob"),
        ("route.put", "alice"),
    ]
    assert rows[0]["after"] is None and rows[0]["before"]["targets"] == changed["targets"]
    assert rows[1]["before"]["fallbacks"] == ["b@2026-11"] and rows[1]["after"]["fallbacks"] == []
    assert all(r["kind"] == "route" for r in rows)
    models = http.get("/api/audit", params={"kind": "model"}).json()["data"]
    assert models and all(r["kind"] == "model" for r in models)


ONE = [{"model": "a", "weight": 1}]


@pytest.mark.parametrize(
    ("name", "body", "status", "param"),
    [
        ("r", {"targets": [{"model": "a", "weight": 0}]}, 422, "targets[0].weight"),
        ("r", {"targets": [{"model": "a", "weight": -5}]}, 422, "targets[0].weight"),
        ("r", {"targets": [{"model": "a", "weight": "much"}]}, 422, "targets[0].weight"),
        ("r", {"targets": [{"model": "a"}]}, 422, "targets[0].weight"),
        ("r", {"targets": []}, 422, "targets"),
        ("r", {}, 422, "targets"),
        ("r", {"targets": ONE, "shadow": "b"}, 422, "shadow"),
        ("r", {"targets": [*ONE, *ONE]}, 422, "targets"),
        ("r", {"targets": [*ONE, {"model": "a-alias", "weight": 1}]}, 400, "targets"),
        ("r", {"targets": [{"model": "nope", "weight": 1}]}, 400, "targets[0].model"),
        ("r", {"targets": [{"model": "b@1", "weight": 1}]}, 400, "targets[0].model"),
        ("r", {"targets": ONE, "fallbacks": ["nope"]}, 400, "fallbacks[0]"),
        ("r", {"targets": [{"model": "a b", "weight": 1}]}, 422, "targets[0].model"),
        ("a-alias", {"targets": ONE}, 409, "name"),
        ("auto", {"targets": ONE}, 400, "name"),
    ],
)
def test_bad_routes_get_a_clear_4xx(http, name, body, status, param) -> None:
    rows = len(http.get("/api/audit", params={"kind": "route", "limit": 1000}).json()["data"])
    response = put(http, name, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and "Traceback" not in response.text
    assert http.get("/api/routes/r").status_code == 404
    assert (
        len(http.get("/api/audit", params={"kind": "route", "limit": 1000}).json()["data"]) == rows
    )


def test_malformed_and_unknown(http) -> None:
    bad = http.put("/api/routes/r", content=b"{nope", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    missing = http.delete("/api/routes/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "route_not_found"


def test_bad_config_routes_refuse_to_start(tmp_path) -> None:
    with pytest.raises(ValidationError, match="weight"):
        load_settings(routes=[{"name": "r", "targets": [{"model": "a", "weight": 0}]}])
    twice = {"name": "r", "targets": [{"model": "a", "weight": 1}]}
    with pytest.raises(ValidationError, match="defined twice"):
        load_settings(routes=[twice, twice])


def test_the_routed_path_never_queries_the_database(server, http) -> None:
    embed(http, "split")
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # the control plane's own writers (cost events, events, shadow records) write in the
        # background, from their threads; the request path must not query at all
        if from_the_request_path():
            statements.append(statement)

    engine = server.host.control.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(10):
            embed(http, "split", **{"X-User-Id": "zed"})
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert statements == []


def remote(model_id: str, quality: float | None, price: float | None, *tags: str) -> dict:
    body: dict[str, Any] = {
        "model_id": model_id,
        "provider": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "task_types": ["text_classification"],
        "tags": list(tags),
    }
    if quality is not None:
        body["quality"] = {"accuracy": quality}
    if price is not None:
        body["cost"] = {"prompt_usd_per_1k": price, "completion_usd_per_1k": price}
    return body


def select(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post("/api/models/select", json={"task_type": "text_classification", **body})


def test_strategies_pick_as_the_scores_say(http) -> None:
    for body in (
        remote("r-cheap", 0.6, 0.1),
        remote("r-good", 0.9, 1.0, "safe"),
        remote("r-mid", 0.8, 0.4, "safe"),
    ):
        assert http.post("/api/models", json=body).status_code == 201
    picked = {}
    for strategy in ("quality-first", "cost-optimized", "balanced", "safety-critical"):
        response = select(http, strategy=strategy)
        assert response.status_code == 200, response.text
        picked[strategy] = response.json()["selected"]["model_id"]
        assert response.json()["reason"] == "score"
    assert picked == {
        "quality-first": "r-good",
        "cost-optimized": "r-cheap",
        "balanced": "r-mid",  # 1/3 each: 0.333, 0.333, 0.444
        "safety-critical": "r-good",
    }
    answer = select(http, strategy="balanced").json()
    scores = {c["model_id"]: c for c in answer["candidates"]}
    assert scores["r-mid"]["terms"] == pytest.approx(
        {"quality": 2 / 3, "cost_efficiency": 2 / 3, "speed": None}
    )
    assert scores["r-mid"]["score"] == pytest.approx(4 / 9, abs=1e-6)
    assert answer["candidates"][0]["model_id"] == "r-mid"  # best first

    assert (
        select(http, safety_required=True, strategy="cost-optimized").json()["selected"]["model_id"]
        == "r-mid"
    )
    capped = select(http, max_cost_per_1k_tokens=0.5, quality_weight=1).json()
    assert {c["model_id"] for c in capped["candidates"]} == {"r-cheap", "r-mid"}
    assert capped["selected"]["model_id"] == "r-mid" and capped["weights"]["cost"] == 0
    assert capped["strategy"] == "custom"

    assert http.post("/api/models", json=remote("r-new", None, None)).status_code == 201
    explored = select(http, strategy="quality-first").json()
    assert explored["selected"]["model_id"] == "r-new" and explored["reason"] == "explore"
    assert http.patch("/api/models/r-new", json={"status": "testing"}).status_code == 200
    assert select(http).json()["selected"]["model_id"] != "r-new"  # active models only

    embed(http, "a")  # a measurement: its latency on this host
    embedders = http.post(
        "/api/models/select", json={"task_type": "text_embedding", "strategy": "speed-first"}
    ).json()
    by_id = {c["model_id"]: c for c in embedders["candidates"]}
    assert by_id["a"]["latency_ms"] > 0 and by_id["a"]["measured"]  # served: its latency here


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"strategy": "cheapest"}, 422, "strategy"),
        ({"quality_weight": -1}, 422, "quality_weight"),
        ({"quality_weight": 0, "cost_weight": 0}, 400, "quality_weight"),
        ({"max_cost_per_1k_tokens": 0.0001}, 404, "task_type"),
        ({"task_type": "no_such_task"}, 404, "task_type"),
        ({"weights": {}}, 422, "weights"),
    ],
)
def test_bad_selections_get_a_clear_4xx(http, body, status, param) -> None:
    response = select(http, **body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_model_auto_serves_the_strategys_choice(http) -> None:
    assert http.patch("/api/models/broken", json={"status": "retired"}).status_code == 200
    for measured in ("a", "b"):
        embed(http, measured)  # a latency here: both are measured
    assert http.patch("/api/models/a", json={"quality": {"sts": 0.9}}).status_code == 200
    assert http.patch("/api/models/b", json={"quality": {"sts": 0.5}}).status_code == 200
    quality_first = {"X-HFSkills-Strategy": "quality-first"}
    chosen = embed(http, "auto", **quality_first)
    assert answered(chosen) == "a@1" and chosen.headers["x-hfskills-route"] == "auto"
    assert chosen.json()["model"] == "a"
    assert http.patch("/api/models/b", json={"quality": {"sts": 0.95}}).status_code == 200
    assert answered(embed(http, "auto", **quality_first)) == "b@2026-11"  # from the new snapshot
    # a request's own weights: quality alone picks b; cost alone (neither is priced: a tie)
    # picks the first by name
    assert answered(embed(http, "auto", **{"X-HFSkills-Weights": "quality=1"})) == "b@2026-11"
    assert answered(embed(http, "auto", **{"X-HFSkills-Weights": "cost=1, quality=0"})) == "a@1"
    for wrong in ("quality", "speed=1", "quality=-1", "quality=0", "cost=1,cost=2", "cost=nan"):
        refused = http.post(
            "/v1/embeddings",
            json={"model": "auto", "input": "hi"},
            headers={"X-HFSkills-Weights": wrong},
        )
        assert refused.status_code == 400, wrong
        assert refused.json()["error"]["param"] == "X-HFSkills-Weights"

    bad = http.post(
        "/v1/embeddings",
        json={"model": "auto", "input": "hi"},
        headers={"X-HFSkills-Strategy": "cheapest"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-HFSkills-Strategy"
    unsafe = http.post(
        "/v1/embeddings",
        json={"model": "auto", "input": "hi"},
        headers={"X-HFSkills-Strategy": "safety-critical"},  # no model is tagged safe
    )
    assert unsafe.status_code == 404 and unsafe.json()["error"]["code"] == "model_not_found"

    # broken, active again and never measured, is explored first: it fails, the next answers
    assert http.patch("/api/models/broken", json={"status": "active"}).status_code == 200
    explored = embed(http, "auto")
    assert answered(explored) in ("a@1", "b@2026-11")
    assert explored.headers["x-hfskills-route"] == "auto"


def shadow_of(http: httpx.Client, route: str, until: Callable[[dict[str, Any]], bool]) -> dict:
    """The route's shadow record once ``until`` holds (copies run in the background; bounded)."""
    deadline = time.monotonic() + 60
    while True:
        record = http.get("/api/routes").json()["shadow"].get(route)
        if record is not None and until(record):
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.05)


def test_a_challenger_gets_shadow_traffic_recorded_not_answering(http) -> None:
    body = {"targets": [{"model": "a", "weight": 1}], "challenger": {"model": "b", "sample": 1}}
    created = put(http, "shadowed", body)
    assert created.status_code == 201, created.text
    assert created.json()["challenger"] == {"model": "b", "sample": 1.0}
    for _ in range(20):
        response = embed(http, "shadowed")
        assert answered(response) == "a@1" and response.json()["model"] == "a"
    record = shadow_of(http, "shadowed", lambda r: r["compared"] + r["errors"] >= 20)
    assert record["challenger"] == "b" and record["copied"] == 20 and record["errors"] == 0
    assert record["agreement"] == 1.0  # b is the same checkpoint as a
    assert record["champion_mean_ms"] > 0 and record["challenger_mean_ms"] > 0

    # a failing challenger: recorded, never seen by the client, no cooldown for it
    assert http.patch("/api/models/broken", json={"status": "active"}).status_code == 200
    failing = {
        "targets": [{"model": "a", "weight": 1}],
        "challenger": {"model": "broken", "sample": 1},
    }
    assert put(http, "shadow-broken", failing).status_code == 201
    for _ in range(3):
        assert answered(embed(http, "shadow-broken")) == "a@1"
    record = shadow_of(http, "shadow-broken", lambda r: r["errors"] >= 3)
    assert record["compared"] == 0 and "failed to load" in record["last_error"]

    half = {"targets": [{"model": "a", "weight": 1}], "challenger": {"model": "b", "sample": 0.5}}
    assert put(http, "shadow-half", half).status_code == 201
    for _ in range(N // 2):
        embed(http, "shadow-half")
    record = shadow_of(http, "shadow-half", lambda r: True)
    assert within(record["copied"], N // 2, 0.5), record  # the sampled share

    rows = route_audit(http, "shadowed")
    assert rows[0]["after"]["challenger"] == {"model": "b", "sample": 1.0}


def test_a_streamed_answer_is_copied_to_the_challenger_once_it_ends(http, server) -> None:
    body = {"targets": [{"model": "gen", "weight": 1}], "challenger": {"model": "gen", "sample": 1}}
    assert put(http, "chat-shadow", body).status_code == 201
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0)
    for question in ("hi", "hello there", "one two"):
        stream = client.chat.completions.create(
            model="chat-shadow",
            messages=[{"role": "user", "content": question}],
            max_tokens=5,
            temperature=0,
            stream=True,
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    record = shadow_of(http, "chat-shadow", lambda r: r["compared"] + r["errors"] >= 3)
    assert record["copied"] == 3 and record["errors"] == 0
    assert record["agreement"] == 1.0  # greedy, the same model: the same text


@pytest.mark.parametrize(
    ("challenger", "status", "param"),
    [
        ({"model": "b", "sample": 0}, 422, "challenger.sample"),
        ({"model": "b", "sample": 1.5}, 422, "challenger.sample"),
        ({"model": "b"}, 422, "challenger.sample"),
        ({"model": "nope", "sample": 0.1}, 400, "challenger.model"),
    ],
)
def test_bad_challengers_get_a_clear_4xx(http, challenger, status, param) -> None:
    response = put(http, "r", {"targets": ONE, "challenger": challenger})
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param
