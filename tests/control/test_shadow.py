"""Shadow records persisted (host/control/shadow.py), over real HTTP on SQLite and on a real
PostgreSQL: a route's challenger comparison survives a restart on the same database and keeps
adding up; losing the database never fails a request or a copy (the counts stay in memory, one
warning, written when it is back); two hosts on one database sum; the request path's recording
never touches the database."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select

from hfskills.host.config import load_settings
from hfskills.host.control import db
from hfskills.host.control.shadow import ShadowRecords
from hfskills.host.control.tables import ShadowComparison
from tests.host.conftest import Server, entry, start

from .conftest import BACKENDS
from .test_routing import answered, embed, put, shadow_of

ROUTE = {"targets": [{"model": "a", "weight": 1}], "challenger": {"model": "b", "sample": 1}}


@pytest.fixture(params=BACKENDS)
def url(request, fresh_database) -> str:
    return fresh_database(request.param)


@pytest.fixture(scope="module")
def models(task_checkpoint) -> list[dict[str, Any]]:
    embedder = task_checkpoint("bert", "text_embedding")
    return [entry("a", embedder), entry("b", embedder)]


def serve(models: list[dict[str, Any]], url: str) -> Server:
    return start(load_settings(models=models, embedded_default=False, database_url=url))


def rows(url: str) -> list[Any]:
    engine = db.create(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(select(ShadowComparison.__table__)).all())
    finally:
        engine.dispose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once this returns


def test_the_comparison_survives_a_restart(models, url) -> None:
    first = serve(models, url)
    try:
        with first.client() as http:
            assert put(http, "shadowed", ROUTE).status_code == 201
            for _ in range(10):
                assert answered(embed(http, "shadowed")) == "a@1"
            before = shadow_of(http, "shadowed", lambda r: r["compared"] + r["errors"] >= 10)
    finally:
        first.stop()  # the lifespan's last write
    assert before["challenger"] == "b" and before["copied"] == before["compared"] == 10
    assert before["agreement"] == 1.0 and before["challenger_mean_ms"] > 0
    (row,) = rows(url)
    assert (row.route, row.challenger, row.copied, row.compared, row.agreed) == (
        "shadowed",
        "b",
        10,
        10,
        10,
    )

    second = serve(models, url)
    try:
        with second.client() as http:
            assert http.get("/api/routes").json()["shadow"]["shadowed"] == before
            for _ in range(5):
                embed(http, "shadowed")
            after = shadow_of(http, "shadowed", lambda r: r["compared"] + r["errors"] >= 15)
            assert after["copied"] == 15 and after["agreement"] == 1.0
            assert second.host.shadows.flush()
    finally:
        second.stop()
    (row,) = rows(url)
    assert (row.copied, row.compared, row.agreed, row.errors) == (15, 15, 15, 0)


def test_losing_the_database_never_fails_a_request_or_a_copy(models, url, caplog) -> None:
    server = serve(models, url)
    records = server.host.shadows
    kept = records.engine
    gone = create_engine(
        f"postgresql+psycopg://x@127.0.0.1:{_closed_port()}/x", connect_args={"connect_timeout": 2}
    )
    try:
        with server.client() as http:
            assert put(http, "shadowed", ROUTE).status_code == 201
            records.engine = gone
            caplog.set_level(logging.WARNING, logger="hfskills.host")
            for _ in range(6):
                assert answered(embed(http, "shadowed")) == "a@1"
            shadow_of(http, "shadowed", lambda r: r["compared"] + r["errors"] >= 6)
            assert records.flush() is False and records.flush() is False
            warnings = [r for r in caplog.records if "shadow records" in r.getMessage()]
            assert len(warnings) == 1, warnings  # once, however many tries
            record = http.get("/api/routes").json()["shadow"]["shadowed"]
            assert record["copied"] == record["compared"] == 6  # in memory meanwhile
            assert rows(url) == []

            records.engine = kept  # the database is back: the next flush writes everything
            assert records.flush() is True
            (row,) = rows(url)
            assert (row.copied, row.compared, row.agreed) == (6, 6, 6)
            assert http.get("/api/routes").json()["shadow"]["shadowed"] == record
    finally:
        records.engine = kept
        server.stop()
        gone.dispose()
    (row,) = rows(url)
    assert row.copied == 6  # written once, not again at shutdown


def test_two_hosts_on_one_database_sum_and_recording_never_queries(url) -> None:
    engine = db.open_database(url)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    try:
        one, two = ShadowRecords(engine, flush_s=3600), ShadowRecords(engine, flush_s=3600)
        event.listen(engine, "before_cursor_execute", count)
        for _ in range(100):
            one.copied("r", "b")
            one.compared("r", "b", True, 0.010, 0.020)
        one.failed("r", "b", "x" * 5000)
        two.copied("r", "b")
        two.compared("r", "b", False, 0.030, 0.040)
        assert statements == []  # the request path's side: memory only
        assert one.flush() and two.flush()
        assert statements  # the writes
        assert one.flush() and two.flush()  # one reads the other's counts at its next write
        for _ in range(3):
            one.copied("r", "b")
        assert one.flush()
        (out,) = one.out().values()
        assert (out["copied"], out["compared"], out["errors"]) == (104, 101, 1)
        assert out["agreement"] == round(100 / 101, 6)
        assert out["champion_mean_ms"] == pytest.approx((1000 + 30) / 101, abs=1e-3)
        assert len(out["last_error"]) == 1024
        statements.clear()
        assert one.flush() and statements == []  # nothing to write: the database is not touched
    finally:
        event.remove(engine, "before_cursor_execute", count)
        engine.dispose()
