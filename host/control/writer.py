"""Writes that must never slow down or fail a request: rows buffered in memory, written in
batches by one background thread.

The request path only appends to a buffer (`Writer.put`: a lock and a list append). Every
``interval_s`` (and when a read asks, `Writer.flush`) the thread hands each sink its rows in
one transaction: cost events with their daily rollup, events. When the database is
unreachable the rows stay buffered and the flush is retried with backoff (1 s doubling to
30 s); one warning says so, one line says when it is back. The buffer is bounded
(``max_rows``): past it the oldest rows are dropped and counted, so an outage costs memory
only up to a limit. The same thread runs the retention sweeps (`Writer.every`).

Why by hand: the standard library's queue and a thread do this; a task queue (Celery, arq)
would add a broker for a few hundred rows a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from hfskills.skillset.runtime.errors import first_line

from . import db

log = logging.getLogger("hfskills.host")

#: A sink writes its rows in the flush's session (one transaction for all sinks).
Sink = Callable[[Session, list[Any]], None]
MAX_BACKOFF_S = 30.0


@dataclass
class _Periodic:
    every_s: float
    job: Callable[[Session], None]
    due: float = field(default_factory=time.monotonic)


class Writer:
    def __init__(self, engine: Engine, interval_s: float = 1.0, max_rows: int = 100_000) -> None:
        self.sessions = db.sessions(engine)
        self.interval_s, self.max_rows = interval_s, max_rows
        self._sinks: dict[str, Sink] = {}
        self._rows: dict[str, list[Any]] = {}
        self._periodic: list[_Periodic] = []
        self._lock = threading.Lock()  # the buffer
        self._flushing = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.failing_since: float | None = None
        self._backoff = 0.0

    def sink(self, name: str, write: Sink) -> None:
        """Register where ``name``'s rows go."""
        self._sinks[name] = write
        self._rows.setdefault(name, [])

    def every(self, seconds: float, job: Callable[[Session], None]) -> None:
        """Run ``job`` in its own transaction every ``seconds`` (retention sweeps)."""
        self._periodic.append(_Periodic(seconds, job))

    def put(self, name: str, row: Any) -> None:
        """Buffer one row (the request path's whole cost)."""
        with self._lock:
            rows = self._rows[name]
            rows.append(row)
            if sum(len(r) for r in self._rows.values()) > self.max_rows:
                del rows[0]
                self.dropped += 1

    def pending(self) -> int:
        with self._lock:
            return sum(len(r) for r in self._rows.values())

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="hfskills-control-writer", daemon=True
            )
            self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread after a last flush (bounded by ``timeout_s``)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self.pending():
            log.warning("control plane: %d rows were not written at shutdown", self.pending())

    def flush(self) -> bool:
        """Write what is buffered now; False when the database refused (rows kept)."""
        with self._flushing:
            with self._lock:
                taken = {name: rows for name, rows in self._rows.items() if rows}
                for name in taken:
                    self._rows[name] = []
            if not taken:
                return True
            try:
                with db.transaction(self.sessions) as session:
                    for name, rows in taken.items():
                        self._sinks[name](session, rows)
            except Exception as error:
                with self._lock:  # back in front, in order; the bound still holds
                    for name, rows in taken.items():
                        self._rows[name][:0] = rows
                    self._trim()
                self._failed(error)
                return False
            self._recovered()
            return True

    def _trim(self) -> None:
        over = sum(len(r) for r in self._rows.values()) - self.max_rows
        for rows in self._rows.values():
            if over <= 0:
                break
            cut = min(over, len(rows))
            del rows[:cut]
            self.dropped += cut
            over -= cut

    def _failed(self, error: BaseException) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning(
                "control plane: the database refused a write (%s); %d rows are buffered and "
                "retried (inference is not affected)",
                first_line(error),
                self.pending(),
            )
        self._backoff = min(MAX_BACKOFF_S, max(1.0, self._backoff * 2))

    def _recovered(self) -> None:
        if self.failing_since is not None:
            log.warning(
                "control plane: the database accepts writes again after %.0f s",
                time.monotonic() - self.failing_since,
            )
        self.failing_since, self._backoff = None, 0.0

    def sweep(self, *, now: bool = False) -> None:
        """Run the periodic jobs that are due (``now``: all of them)."""
        at = time.monotonic()
        for periodic in self._periodic:
            if now or periodic.due <= at:
                periodic.due = at + periodic.every_s
                try:
                    with db.transaction(self.sessions) as session:
                        periodic.job(session)
                except Exception as error:
                    log.warning("control plane: a retention sweep failed: %s", first_line(error))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._backoff or self.interval_s)
            self._wake.clear()
            if self.flush() and not self._stop.is_set():
                self.sweep()
        self.flush()
