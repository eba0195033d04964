"""Costs, budgets, events and feedback over real HTTP (uvicorn on 127.0.0.1, httpx and the
openai SDK) on SQLite and a real PostgreSQL: the design's cost formula on the answer's
``X-HFSkills-Cost-USD`` and in the cost events; the costs report and its daily rollup; budgets
that 50 concurrent requests cannot overrun, with their 70/90/100 % events and 429
``budget_exceeded``; the call events in order, also to a webhook that fails first; feedback
filed under the answering version; shadow copies never billed; and a database lost while
serving that fails no request."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import openai
import pytest
from sqlalchemy import create_engine, text

from hfskills.host.config import HARDWARE_NAMES, load_settings
from hfskills.host.control.tables import CostEvent
from tests.host.conftest import Server, start

from .conftest import BACKENDS
from .test_routing import broken_copy

TOML = """
[[models]]
name = "a"
checkpoint = "{embedder}"

[[models]]
name = "b"
checkpoint = "{embedder}"
version = "7"

[[models]]
name = "gen"
checkpoint = "{generator}"

[[models]]
name = "broken"
checkpoint = "{broken}"
"""

#: The benchmark figure the tests give: 1000 tokens/s; with 3.6 USD an hour that is
#: 3.6 / (1000 * 3600) = 1e-6 USD a token.
TOKENS_PER_S = 1000.0
HOURLY_USD = 3.6
PER_TOKEN = HOURLY_USD / (TOKENS_PER_S * 3600)


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver on 127.0.0.1 that answers 500 to its first POST, then 200."""

    batches: ClassVar[list[list[dict[str, Any]]]] = []
    refused = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        cls = type(self)
        if cls.refused == 0:
            cls.refused += 1
            self.send_response(500)
        else:
            cls.batches.append(body["events"])
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request, fresh_database) -> tuple[str, str]:
    return request.param, fresh_database(request.param)


@pytest.fixture(scope="module")
def server(backend, task_checkpoint, tmp_path_factory, receiver) -> Iterator[Server]:
    embedder = task_checkpoint("bert", "text_embedding")
    root = tmp_path_factory.mktemp("costs")
    config = root / "hfskills.toml"
    config.write_text(
        TOML.format(
            embedder=embedder,
            generator=task_checkpoint("llama", "text_generation"),
            broken=broken_copy(embedder, root),
        )
    )
    settings = load_settings(
        config,
        embedded_default=False,
        database_url=backend[1],
        events_webhook_url=receiver,
        cost_events_retention_days=1,
    )
    server = start(settings)
    costs = server.host.control.costs
    for name in ("a", "b", "gen"):  # what `hfskills bench` would have measured
        for hardware in HARDWARE_NAMES:  # wherever the model runs (gen: OpenVINO GenAI or torch)
            costs.throughput.set(name, hardware, TOKENS_PER_S)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        for name in ("a", "b", "gen"):
            priced = client.patch(
                f"/api/models/{name}", json={"cost": {"hardware_hourly_usd": HOURLY_USD}}
            )
            assert priced.status_code == 200, priced.text
        yield client


def embed(http: httpx.Client, model: str, text: str = "hi", **headers: str) -> httpx.Response:
    return http.post("/v1/embeddings", json={"model": model, "input": text}, headers=headers)


def events(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = http.get("/api/events", params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_the_answer_carries_its_cost_by_the_design_formula(http) -> None:
    response = embed(http, "a", "hello world", **{"X-Request-Id": "cost-1"})
    assert response.status_code == 200, response.text
    tokens = response.json()["usage"]["prompt_tokens"]
    assert response.headers["x-request-id"] == "cost-1"
    # cost_per_1k_tokens = hardware_hourly_usd / ((tokens_per_second * 3600) / 1000)
    per_1k = HOURLY_USD / ((TOKENS_PER_S * 3600) / 1000)
    assert response.headers["x-hfskills-cost-usd"] == f"{round(tokens * per_1k / 1000, 6):.6f}"
    completed = events(http, request_id="cost-1", kind="model_call.completed")
    assert len(completed) == 1
    data = completed[0]["data"]
    assert data["price_basis"] == "bench" and data["tokens_per_second"] == TOKENS_PER_S
    assert data["cost_usd"] == round(tokens * PER_TOKEN, 6) and data["prompt_tokens"] == tokens


def test_a_request_id_is_made_when_the_client_sends_none_or_a_bad_one(http) -> None:
    first, second = embed(http, "a"), embed(http, "a", **{"X-Request-Id": "bad id with spaces"})
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2 and all(len(i) == 32 for i in ids)
    assert http.get("/v1/models").headers["x-request-id"]  # every response, not only answers


def test_calls_emit_planned_started_completed_and_failed_events(http) -> None:
    assert embed(http, "a", **{"X-Request-Id": "ev-ok"}).status_code == 200
    kinds = [e["kind"] for e in events(http, request_id="ev-ok")]
    assert kinds == ["model_call.planned", "model_call.started", "model_call.completed"]
    planned = events(http, request_id="ev-ok", kind="model_call.planned")[0]
    assert planned["model_id"] == "a" and planned["version"] == "1"
    assert planned["data"]["estimate_usd"] > 0

    failed = embed(http, "broken", **{"X-Request-Id": "ev-fail"})
    assert failed.status_code >= 500
    kinds = [e["kind"] for e in events(http, request_id="ev-fail")]
    assert kinds == ["model_call.planned", "model_call.failed"]
    assert events(http, request_id="ev-fail")[-1]["data"]["cost_usd"] is None

    bad = http.get("/api/events", params={"kind": "nope"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "kind"
    assert http.get("/api/events", params={"limit": "0"}).status_code == 400


def test_the_webhook_gets_the_events_after_a_failed_delivery(http, backend) -> None:
    rid = f"hooked-{backend[0]}"  # one receiver for the module's servers on both backends
    assert embed(http, "a", **{"X-Request-Id": rid}).status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sent = [e for batch in Receiver.batches for e in batch if e["request_id"] == rid]
        if len(sent) == 3:
            break
        time.sleep(0.2)
    assert Receiver.refused == 1  # the first delivery was refused, and retried
    assert [e["kind"] for e in sent] == [
        "model_call.planned",
        "model_call.started",
        "model_call.completed",
    ]


def test_streamed_chat_is_billed_for_its_tokens(http, server) -> None:
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0)
    with client.with_options(default_headers={"X-Request-Id": "chat-stream"}) as c:
        stream = c.chat.completions.create(
            model="gen",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
    (completed,) = events(http, request_id="chat-stream", kind="model_call.completed")
    data = completed["data"]
    assert data["completion_tokens"] == usage.completion_tokens
    assert data["prompt_tokens"] == usage.prompt_tokens
    assert data["cost_usd"] == round(usage.total_tokens * PER_TOKEN, 6)


def test_the_costs_report_sums_the_calls(http) -> None:
    before = http.get("/api/models/costs", params={"hours": 1}).json()
    for _ in range(3):
        assert embed(http, "b", "one two three").status_code == 200
    report = http.get("/api/models/costs", params={"hours": 1}).json()
    assert report["source"] == "cost_events"
    added = (
        report["efficiency_metrics"]["b@7"]["requests"]
        - before.get("efficiency_metrics", {}).get("b@7", {"requests": 0})["requests"]
    )
    assert added == 3
    total = sum(report["cost_by_model"].values())
    assert report["total_cost_usd"] == pytest.approx(total, abs=1e-5)
    assert report["top_models"][0]["cost_usd"] == max(report["cost_by_model"].values())
    b = report["efficiency_metrics"]["b@7"]
    assert b["cost_per_1k_tokens_usd"] == pytest.approx(1000 * PER_TOKEN, rel=1e-3)
    assert b["mean_latency_ms"] > 0 and b["error_rate"] == 0
    # past the events' retention (1 day here) the report reads the daily rollup: same totals
    rolled = http.get("/api/models/costs", params={"hours": 48}).json()
    assert rolled["source"] == "cost_daily"
    assert rolled["cost_by_model"]["b@7"] == pytest.approx(report["cost_by_model"]["b@7"], abs=1e-5)
    assert rolled["efficiency_metrics"]["b@7"]["requests"] == b["requests"]
    for bad in ("0", "-1", "abc", "nan", "1e9"):
        response = http.get("/api/models/costs", params={"hours": bad})
        assert response.status_code == 400 and response.json()["error"]["param"] == "hours"


def test_old_cost_events_are_deleted_and_the_rollup_kept(http, server) -> None:
    plane = server.host.control
    old = datetime.now(UTC) - timedelta(days=3)
    with plane.costs.sessions.begin() as session:
        session.add(
            CostEvent(
                at=old,
                request_id="ancient",
                model_id="a",
                version="1",
                provider="local",
                hardware="cpu",
                route=None,
                task="text_embedding",
                prompt_tokens=1,
                completion_tokens=0,
                cost_usd=0.000001,
                latency_ms=1.0,
                status="ok",
            )
        )
    plane.writer.sweep(now=True)
    with plane.costs.sessions() as session:
        left = "SELECT count(*) FROM cost_events WHERE request_id = 'ancient'"
        assert session.execute(text(left)).scalar_one() == 0
        assert session.execute(text("SELECT count(*) FROM cost_daily")).scalar_one() > 0


def test_budgets_hold_under_50_concurrent_requests(http, server) -> None:
    probe = http.post(
        "/v1/completions",
        json={"model": "gen", "prompt": "hi", "max_tokens": 4, "min_tokens": 4},
    )
    assert probe.status_code == 200, probe.text
    one = float(probe.headers["x-hfskills-cost-usd"])
    # a budget for gen that fits 10 such calls, today's spend on gen counted in
    status = {b["scope"]: b for b in http.get("/api/budgets").json()["data"]}
    assert "model:gen" not in status
    put = http.put("/api/budgets/model:gen", json={"daily_usd": 1.0})
    assert put.status_code == 201, put.text
    spent = put.json()["spent_usd"]
    assert spent >= one
    limit = round(spent + 10 * one, 6)
    changed = http.put("/api/budgets/model:gen", json={"daily_usd": limit})
    assert changed.status_code == 200 and changed.json()["daily_usd"] == limit

    def call(_: int) -> httpx.Response:
        return http.post(
            "/v1/completions",
            json={"model": "gen", "prompt": "hi", "max_tokens": 4, "min_tokens": 4},
        )

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(call, range(50)))
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(ok) + len(refused) == 50, {r.status_code for r in answers}
    assert 1 <= len(ok) <= 10 and refused
    error = refused[0].json()["error"]
    assert error["code"] == "budget_exceeded" and "model:gen" in error["message"]
    assert 0 < int(refused[0].headers["retry-after"]) <= 86401
    (gen,) = [b for b in http.get("/api/budgets").json()["data"] if b["scope"] == "model:gen"]
    assert gen["spent_usd"] <= limit + 1e-9 and gen["reserved_usd"] == 0
    # other models are not limited by gen's budget; lifting it lets gen answer again
    assert embed(http, "a").status_code == 200
    assert http.delete("/api/budgets/model:gen").status_code == 200
    assert call(0).status_code == 200


def crossed(http: httpx.Client, scope: str) -> list[float]:
    return [
        e["data"]["threshold"]
        for e in events(http, kind="budget.threshold_crossed")
        if e["data"]["scope"] == scope
    ]


def test_budget_thresholds_are_crossed_once_each(http) -> None:
    one = float(embed(http, "b").headers["x-hfskills-cost-usd"])
    put = http.put("/api/budgets/model:b", json={"daily_usd": 1.0})
    assert put.status_code == 201, put.text
    limit = round(put.json()["spent_usd"] + 40 * one, 6)
    assert http.put("/api/budgets/model:b", json={"daily_usd": limit}).status_code == 200
    for _ in range(60):  # until the next call no longer fits
        if embed(http, "b").status_code == 429:
            break
    else:
        pytest.fail("the budget never refused a call")
    (b,) = [x for x in http.get("/api/budgets").json()["data"] if x["scope"] == "model:b"]
    assert 0.9 <= b["used"] <= 1.0 and b["thresholds_crossed"] == [0.7, 0.9]
    assert crossed(http, "model:b") == [0.7, 0.9]
    # lowered below today's spend: 100 % at once, and every call refused
    lowered = http.put("/api/budgets/model:b", json={"daily_usd": round(b["spent_usd"] / 2, 6)})
    assert lowered.json()["exceeded"] and lowered.json()["thresholds_crossed"] == [0.7, 0.9, 1.0]
    assert crossed(http, "model:b") == [0.7, 0.9, 1.0]
    assert embed(http, "b").status_code == 429
    assert http.delete("/api/budgets/model:b").status_code == 200


def test_a_global_budget_at_zero_refuses_everything(http) -> None:
    assert http.put("/api/budgets/global", json={"daily_usd": 0}).status_code == 201
    try:
        refused = embed(http, "a")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert "global" in refused.json()["error"]["message"]
    finally:
        assert http.delete("/api/budgets/global").status_code == 200
    assert embed(http, "a").status_code == 200


def test_bad_budgets_are_refused_with_4xx(http) -> None:
    cases = [
        ("global", {"daily_usd": -1}, 422, "daily_usd"),
        ("global", {"daily_usd": "lots"}, 422, "daily_usd"),
        ("global", {"daily_usd": 1, "extra": 1}, 422, "extra"),
        ("team", {"daily_usd": 1}, 400, "scope"),
        ("model:", {"daily_usd": 1}, 400, "scope"),
        ("model:nobody", {"daily_usd": 1}, 404, "model_id"),
    ]
    for scope, body, status, param in cases:
        response = http.put(f"/api/budgets/{scope}", json=body)
        assert response.status_code == status, (scope, response.text)
        assert response.json()["error"]["param"] == param
    assert http.put("/api/budgets/global", content=b"{").status_code == 400
    assert http.delete("/api/budgets/model:a").status_code == 404


def test_feedback_is_filed_under_the_answering_version(http) -> None:
    answer = embed(http, "b")
    rid = answer.headers["x-request-id"]
    stored = http.post("/api/feedback", json={"request_id": rid, "score": 0.25, "label": "meh"})
    assert stored.status_code == 201, stored.text
    body = stored.json()
    assert (body["model_id"], body["version"]) == ("b", "7")
    again = http.post("/api/feedback", json={"request_id": rid, "score": 0.75})
    assert again.json()["model_feedback"]["mean_score"] == pytest.approx(0.5)
    summary = http.get("/api/feedback", params={"model_id": "b"}).json()["data"]
    assert summary["b@7"]["count"] == 2 and summary["b@7"]["labels"] == {"meh": 1}
    report = http.get("/api/models/costs").json()
    assert report["efficiency_metrics"]["b@7"]["feedback"]["mean_score"] == pytest.approx(0.5)
    for body, status, param in [
        ({"request_id": "never-seen", "score": 1}, 404, "request_id"),
        ({"request_id": rid}, 422, None),
        ({"request_id": rid, "score": 2}, 422, "score"),
        ({"request_id": "has space", "score": 1}, 422, "request_id"),
    ]:
        response = http.post("/api/feedback", json=body)
        assert response.status_code == status, response.text
        if param:
            assert response.json()["error"]["param"] == param


def test_shadow_copies_are_never_billed(http, server) -> None:
    route = {"targets": [{"model": "a", "weight": 1}], "challenger": {"model": "b", "sample": 1.0}}
    assert http.put("/api/routes/shadowed", json=route).status_code in (200, 201)
    before = http.get("/api/models/costs", params={"hours": 1}).json()["efficiency_metrics"]
    for i in range(4):
        assert embed(http, "shadowed", f"text {i}").status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shadow = http.get("/api/routes").json()["shadow"].get("shadowed", {})
        if shadow.get("compared", 0) + shadow.get("errors", 0) >= 4:
            break
        time.sleep(0.1)
    assert shadow["compared"] == 4
    after = http.get("/api/models/costs", params={"hours": 1}).json()["efficiency_metrics"]
    none = {"requests": 0}
    assert after["a@1"]["requests"] - before.get("a@1", none)["requests"] == 4
    # the challenger's copies
    assert after.get("b@7", none)["requests"] == before.get("b@7", none)["requests"]
    # the route comparison: what the route's arm answered, beside its feedback
    rid = embed(http, "shadowed").headers["x-request-id"]
    assert http.post("/api/feedback", json={"request_id": rid, "score": 0.5}).status_code == 201
    listed = http.get("/api/routes").json()
    arm = listed["comparison"]["routes"]["shadowed"]["a@1"]
    assert arm["requests"] == 5 and arm["errors"] == 0 and arm["mean_latency_ms"] > 0
    assert arm["cost_usd"] > 0 and arm["feedback"]["count"] >= 1
    assert list(listed["comparison"]["routes"]["shadowed"]) == ["a@1"]
    assert http.delete("/api/routes/shadowed").status_code == 200


def test_losing_the_database_fails_no_request(http, server, backend) -> None:
    kind, url = backend
    if kind != "postgresql":
        pytest.skip("closing the database to the host needs a server database (PostgreSQL)")
    name = url.rsplit("/", 1)[1]
    admin = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    plane = server.host.control
    try:
        with admin.connect() as c:
            c.execute(text(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"))
            c.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": name},
            )
        for i in range(5):
            response = embed(http, "a", **{"X-Request-Id": f"offline-{i}"})
            assert response.status_code == 200, response.text
            assert response.headers["x-hfskills-cost-usd"]
        assert not plane.writer.flush() and plane.writer.pending() > 0
    finally:
        with admin.connect() as c:
            c.execute(text(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"))
        admin.dispose()
    assert plane.writer.flush()
    kinds = [e["kind"] for e in events(http, request_id="offline-4")]
    assert kinds == ["model_call.planned", "model_call.started", "model_call.completed"]
