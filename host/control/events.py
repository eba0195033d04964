"""Control-plane events: stored, readable at ``GET /api/events``, and sent to a webhook.

Kinds: ``model_call.planned`` (a target was chosen and its budget reserved: the estimate),
``model_call.started`` (the model holds the call), ``model_call.completed`` and
``model_call.failed`` (tokens, cost, latency, status), ``budget.threshold_crossed``
(70 %, 90 %, 100 % of a daily budget), and ``safety.decision`` (a safety hook fired: stage,
rule, action, user, model, the texts' SHA-256, never a text; host/safety/pipeline.py). Client
calls only: the host's own shadow copies and benchmark runs make none. `Events.emit` buffers
the row through the `Writer` (never a query on the request path) and, when
``events_webhook_url`` is set, queues it for the `Webhook`.

The webhook is its own thread: batches of up to 100 events as ``{"events": [...]}`` in one
POST, retried with backoff (1 s doubling, 5 attempts) on a connection error or a 5xx, then
dropped with a warning; its queue is bounded (10 000, the oldest dropped). A slow or broken
receiver never delays a request.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from hfskills.skillset.runtime.errors import first_line

from .tables import EventRecord
from .writer import Writer

log = logging.getLogger("hfskills.host")

KINDS = (
    "model_call.planned",
    "model_call.started",
    "model_call.completed",
    "model_call.failed",
    "budget.threshold_crossed",
    "safety.decision",
)
MAX_EVENTS = 1000
SWEEP_S = 3600.0


def out(row: EventRecord) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at.isoformat(),
        "kind": row.kind,
        "model_id": row.model_id,
        "version": row.version,
        "request_id": row.request_id,
        "data": row.data,
    }


class Events:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        writer: Writer,
        retention_days: float,
        webhook: Webhook | None = None,
    ) -> None:
        self.sessions, self.writer, self.retention_days = sessions, writer, retention_days
        self.webhook = webhook
        writer.sink("events", self._write)
        writer.every(SWEEP_S, self._sweep)

    def emit(
        self,
        kind: str,
        model_id: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
        **data: Any,
    ) -> None:
        row = {
            "at": datetime.now(UTC),
            "kind": kind,
            "model_id": model_id,
            "version": version,
            "request_id": request_id,
            "data": data,
        }
        self.writer.put("events", row)
        if self.webhook is not None:
            self.webhook.put({**row, "at": row["at"].isoformat()})

    def list(
        self,
        kind: str | None = None,
        model_id: str | None = None,
        request_id: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Stored events, oldest first after ``after_id`` (a cursor: the last id read)."""
        query = (
            select(EventRecord)
            .where(EventRecord.id > after_id)
            .order_by(EventRecord.id)
            .limit(min(limit, MAX_EVENTS))
        )
        if kind is not None:
            query = query.where(EventRecord.kind == kind)
        if model_id is not None:
            query = query.where(EventRecord.model_id == model_id)
        if request_id is not None:
            query = query.where(EventRecord.request_id == request_id)
        with self.sessions() as session:
            return [out(row) for row in session.scalars(query)]

    @staticmethod
    def _write(session: Session, rows: list[dict[str, Any]]) -> None:
        session.add_all(EventRecord(**row) for row in rows)

    def _sweep(self, session: Session) -> None:
        cutoff = datetime.now(UTC) - timedelta(days=self.retention_days)
        session.execute(delete(EventRecord).where(EventRecord.at < cutoff))

    def close(self) -> None:
        if self.webhook is not None:
            self.webhook.close()


class Webhook:
    """POSTs events to ``url`` from a thread of its own (see the module's note)."""

    BATCH = 100
    ATTEMPTS = 5
    QUEUE = 10_000

    def __init__(self, url: str, kinds: Iterable[str] = (), timeout_s: float = 5.0) -> None:
        self.url, self.kinds = url, frozenset(kinds)
        self.client = httpx.Client(timeout=timeout_s)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(self.QUEUE)
        self.sent = self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="hfskills-webhook", daemon=True)
        self._thread.start()

    def put(self, event: dict[str, Any]) -> None:
        if self.kinds and event["kind"] not in self.kinds:
            return
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()  # the oldest makes room
                    self.dropped += 1
                except queue.Empty:
                    pass

    def close(self, timeout_s: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)
        self.client.close()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._send(batch)
                    return
                batch.append(more)
            self._send(batch)

    def _send(self, batch: list[dict[str, Any]]) -> None:
        delay = 1.0
        for attempt in range(1, self.ATTEMPTS + 1):
            try:
                response = self.client.post(self.url, json={"events": batch})
                if response.status_code < 500:
                    if response.status_code >= 400:
                        log.warning(
                            "events webhook %s refused %d events: HTTP %d",
                            self.url,
                            len(batch),
                            response.status_code,
                        )
                    else:
                        self.sent += len(batch)
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as error:
                reason = first_line(error)
            if attempt < self.ATTEMPTS:
                time.sleep(delay)
                delay *= 2
        self.dropped += len(batch)
        log.warning(
            "events webhook %s: %d events dropped after %d attempts (%s)",
            self.url,
            len(batch),
            self.ATTEMPTS,
            reason,
        )
