"""Shadow traffic: a route's challenger answers a copy of a sampled share of its requests in the
background, and the comparison is recorded per route and persisted.

The copy starts after the champion has answered (it never delays or changes the answer), at
``low`` priority, and its result is only compared: ``agreement`` (embeddings: cosine >= 0.999
for every input; generations and other results: equal), both latencies, and the challenger's
errors. It is never billed (no cost is recorded for it) and never counts toward a target's
cooldown.

Persistence (`ShadowRecords`): one running-total row per route and challenger in
``shadow_comparisons`` (tables.py, revision 0004), so the table grows with the routes, never
with the traffic. The request path only adds to counts in memory under a lock held for a few
additions; a background thread (`ShadowRecords.start`) writes the deltas every `FLUSH_S`
seconds and at shutdown (`close`), when there are any, adding them to the rows (``copied =
copied + n``, so several hosts on one database sum), then reads the rows back (another host's
counts show after this host's next write). At start the rows are read, so the comparison
survives a restart; without shadow traffic the database is never touched. A database that is
gone never fails a request or a copy: the deltas stay in memory (and in the comparison readers
see), a warning is logged once, and the next flush retries; a flush that succeeds again logs
one line. What is not yet written when the process dies is lost (at most `FLUSH_S` seconds of
counts; a clean shutdown writes them).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite

from .tables import ShadowComparison, now

log = logging.getLogger("hfskills.host")

#: Cosine similarity from which two embeddings agree.
AGREEMENT_COSINE = 0.999
#: Seconds between two background writes of the records.
FLUSH_S = 5.0
#: The longest ``last_error`` kept (the column's length).
ERROR_CHARS = 1024

Key = tuple[str, str]  # (route, challenger)


@dataclass
class Comparison:
    """One route's shadow record for one challenger: totals, or deltas not yet written."""

    challenger: str = ""
    copied: int = 0
    compared: int = 0
    agreed: int = 0
    errors: int = 0
    champion_ms: float = 0.0
    challenger_ms: float = 0.0
    last_error: str | None = None
    #: When it last changed (Unix seconds): a route's newest challenger is the one shown.
    updated: float = field(default_factory=time.time)

    def plus(self, other: Comparison) -> Comparison:
        """These totals with ``other``'s added (``other`` is the newer one)."""
        return Comparison(
            self.challenger,
            self.copied + other.copied,
            self.compared + other.compared,
            self.agreed + other.agreed,
            self.errors + other.errors,
            self.champion_ms + other.champion_ms,
            self.challenger_ms + other.challenger_ms,
            other.last_error if other.last_error is not None else self.last_error,
            max(self.updated, other.updated),
        )

    def out(self) -> dict[str, Any]:
        return {
            "challenger": self.challenger,
            "copied": self.copied,
            "compared": self.compared,
            "agreement": round(self.agreed / self.compared, 6) if self.compared else None,
            "errors": self.errors,
            "champion_mean_ms": round(self.champion_ms / self.compared, 3)
            if self.compared
            else None,
            "challenger_mean_ms": round(self.challenger_ms / self.compared, 3)
            if self.compared
            else None,
            "last_error": self.last_error,
        }


class ShadowRecords:
    """The shadow comparisons, in memory and (given an ``engine``) persisted in the background;
    see the module's note. Without an engine they are in memory only."""

    def __init__(self, engine: Engine | None = None, flush_s: float = FLUSH_S) -> None:
        self.engine = engine
        self.flush_s = flush_s
        self._lock = threading.Lock()
        #: The totals as last read from the database.
        self._stored: dict[Key, Comparison] = {}
        #: Deltas being written by the flush in progress, and deltas since.
        self._writing: dict[Key, Comparison] = {}
        self._pending: dict[Key, Comparison] = {}
        self._failing = False
        self._unread = engine is not None  # the rows are not read yet
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()  # one flush at a time (the thread's, close's)
        if engine is not None:
            try:
                self._stored, self._unread = self._fetch(), False
            except Exception as error:  # read at the next flush that reaches the database
                self._failed(error)

    # -- the request path: memory only ----------------------------------------------------------
    def _delta(self, route: str, challenger: str) -> Comparison:
        record = self._pending.get((route, challenger))
        if record is None:
            record = self._pending[route, challenger] = Comparison(challenger)
        record.updated = time.time()
        return record

    def copied(self, route: str, challenger: str) -> None:
        with self._lock:
            self._delta(route, challenger).copied += 1

    def compared(
        self, route: str, challenger: str, same: bool, champion_s: float, challenger_s: float
    ) -> None:
        with self._lock:
            record = self._delta(route, challenger)
            record.compared += 1
            record.agreed += int(same)
            record.champion_ms += champion_s * 1000
            record.challenger_ms += challenger_s * 1000

    def failed(self, route: str, challenger: str, error: str) -> None:
        with self._lock:
            record = self._delta(route, challenger)
            record.errors += 1
            record.last_error = error[:ERROR_CHARS]

    # -- readers ----------------------------------------------------------------------------------
    def records(self) -> dict[Key, Comparison]:
        """Every (route, challenger)'s totals: stored, plus what is not written yet."""
        with self._lock:
            merged = {key: replace(record) for key, record in self._stored.items()}
            for deltas in (self._writing, self._pending):
                for key, delta in deltas.items():
                    base = merged.get(key)
                    merged[key] = base.plus(delta) if base is not None else replace(delta)
        return merged

    def out(self) -> dict[str, dict[str, Any]]:
        """Per route, the comparison of its most recently active challenger."""
        newest: dict[str, Comparison] = {}
        for (route, _), record in self.records().items():
            if route not in newest or record.updated > newest[route].updated:
                newest[route] = record
        return {route: record.out() for route, record in sorted(newest.items())}

    # -- the background writer ------------------------------------------------------------------
    def start(self) -> None:
        """Flush every `flush_s` seconds in a daemon thread until `close`."""
        if self.engine is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="hfskills-shadow", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread and write what is left (once, bounded by the engine's timeouts)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def flush(self) -> bool:
        """Write the pending deltas and read the totals back; False (deltas kept for the next
        try) when the database fails. Never raises."""
        if self.engine is None:
            return True
        with self._flush_lock:
            with self._lock:
                for key, delta in self._pending.items():
                    held = self._writing.get(key)
                    self._writing[key] = held.plus(delta) if held is not None else delta
                self._pending = {}
                writing = dict(self._writing)
            if not writing and not self._unread:
                return True  # nothing to write: the database is not touched
            try:
                if writing:
                    self._write(writing)
                    with self._lock:  # written: part of the totals now, never written twice
                        for key, delta in writing.items():
                            base = self._stored.get(key)
                            self._stored[key] = base.plus(delta) if base is not None else delta
                        self._writing = {}
                stored = self._fetch()  # other hosts' counts too
                with self._lock:
                    self._stored, self._unread = stored, False
            except Exception as error:  # the database is gone: keep the deltas, retry later
                self._failed(error)
                return False
            if self._failing:
                self._failing = False
                log.info("shadow records are written to the database again")
            return True

    def _failed(self, error: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "shadow records not written to the database (kept in memory, retried every "
                "%.0f s): %s",
                self.flush_s,
                _first_line(error),
            )

    def _write(self, deltas: dict[Key, Comparison]) -> None:
        assert self.engine is not None
        table = ShadowComparison.__table__
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        at = now()
        with self.engine.begin() as connection:
            for (route, challenger), d in sorted(deltas.items()):
                insert = dialect.insert(table).values(
                    route=route,
                    challenger=challenger,
                    copied=d.copied,
                    compared=d.compared,
                    agreed=d.agreed,
                    errors=d.errors,
                    champion_ms=d.champion_ms,
                    challenger_ms=d.challenger_ms,
                    last_error=d.last_error,
                    updated_at=at,
                )
                new = insert.excluded
                connection.execute(
                    insert.on_conflict_do_update(
                        index_elements=[table.c.route, table.c.challenger],
                        set_={
                            "copied": table.c.copied + new.copied,
                            "compared": table.c.compared + new.compared,
                            "agreed": table.c.agreed + new.agreed,
                            "errors": table.c.errors + new.errors,
                            "champion_ms": table.c.champion_ms + new.champion_ms,
                            "challenger_ms": table.c.challenger_ms + new.challenger_ms,
                            "last_error": func.coalesce(new.last_error, table.c.last_error),
                            "updated_at": new.updated_at,
                        },
                    )
                )

    def _fetch(self) -> dict[Key, Comparison]:
        """The database's rows as totals."""
        assert self.engine is not None
        with self.engine.connect() as connection:
            rows = connection.execute(select(ShadowComparison.__table__)).all()
        return {
            (row.route, row.challenger): Comparison(
                row.challenger,
                row.copied,
                row.compared,
                row.agreed,
                row.errors,
                row.champion_ms,
                row.challenger_ms,
                row.last_error,
                row.updated_at.timestamp(),
            )
            for row in rows
        }


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", None)
    text = str(orig if orig is not None else error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def agree(champion: list[Any], challenger: list[Any]) -> bool:
    """Whether two answers to the same inputs agree (see the module's note)."""
    if len(champion) != len(challenger):
        return False
    return all(_same(a, b) for a, b in zip(champion, challenger, strict=True))


def _same(a: Any, b: Any) -> bool:
    if _vector(a) and _vector(b):
        if len(a) != len(b):
            return False
        norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        return norm > 0 and sum(x * y for x, y in zip(a, b, strict=True)) / norm >= AGREEMENT_COSINE
    if isinstance(a, dict) and isinstance(b, dict) and "text" in a and "text" in b:
        return a["text"] == b["text"]
    return bool(a == b)


def _vector(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], int | float)
