"""Users' feedback on answers: a score in [0, 1] or a label, filed under the model version
that answered the request (``POST /api/feedback`` with the response's ``X-Request-Id``).

Which version answered a request is found in memory for the last 100 000 calls (`note`, from
the ledger), else in the cost events (within their retention). Feedback is written at once
(it is rare, and a client wants to know it was kept). Per model version the mean score and
the label counts are kept in memory (`summary`, read from the table at start): the route
comparison, ``/benchmark/summary`` and the costs report show them beside latency and cost, and
with ``feedback_quality`` on, the strategies average the mean score with the mean of the
model's quality metrics (`satisfaction`), without writing the registry.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hfskills.skillset.runtime.errors import HFSkillsError

from . import db
from .tables import FeedbackRecord, now

RECENT = 100_000


class UnknownRequest(HFSkillsError):
    code = "request_not_found"
    status = 404


@dataclass
class Tally:
    count: int = 0
    scored: int = 0
    score_sum: float = 0.0
    labels: Counter[str] = field(default_factory=Counter)

    def add(self, score: float | None, label: str | None) -> None:
        self.count += 1
        if score is not None:
            self.scored += 1
            self.score_sum += score
        if label is not None:
            self.labels[label] += 1

    @property
    def mean(self) -> float | None:
        return round(self.score_sum / self.scored, 6) if self.scored else None

    def out(self) -> dict[str, Any]:
        return {"count": self.count, "mean_score": self.mean, "labels": dict(self.labels)}


class FeedbackBook:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        answered: Callable[[str], tuple[str, str] | None],
    ) -> None:
        self.sessions, self.answered = sessions, answered
        self._recent: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.tallies: dict[tuple[str, str], Tally] = {}

    def start(self) -> None:
        with self.sessions() as session:
            rows = session.execute(
                select(
                    FeedbackRecord.model_id,
                    FeedbackRecord.version,
                    FeedbackRecord.score,
                    FeedbackRecord.label,
                )
            ).all()
        for model_id, version, score, label in rows:
            self.tallies.setdefault((model_id, version), Tally()).add(score, label)

    def note(self, request_id: str, model_id: str, version: str) -> None:
        """A call answered this request (the event loop; O(1))."""
        with self._lock:
            self._recent[request_id] = (model_id, version)
            self._recent.move_to_end(request_id)
            if len(self._recent) > RECENT:
                self._recent.popitem(last=False)

    def submit(
        self,
        request_id: str,
        score: float | None,
        label: str | None,
        comment: str | None,
        actor: str,
    ) -> dict[str, Any]:
        """Store one user's feedback (in a worker thread: it writes)."""
        with self._lock:
            found = self._recent.get(request_id)
        if found is None:
            found = self.answered(request_id)
        if found is None:
            raise UnknownRequest(
                f"no answered request has id {request_id!r} (X-Request-Id of a response from "
                "this host, within the cost events' retention)",
                param="request_id",
            )
        model_id, version = found
        with db.transaction(self.sessions) as session:
            row = FeedbackRecord(
                at=now(),
                request_id=request_id,
                model_id=model_id,
                version=version,
                score=score,
                label=label,
                comment=comment,
                actor=actor,
            )
            session.add(row)
            session.flush()
            stored = {"id": row.id, "at": row.at.isoformat()}
        with self._lock:
            tally = self.tallies.setdefault((model_id, version), Tally())
            tally.add(score, label)
        return {
            **stored,
            "request_id": request_id,
            "model_id": model_id,
            "version": version,
            "score": score,
            "label": label,
            "model_feedback": tally.out(),
        }

    def summary(self, model_id: str | None = None) -> dict[str, dict[str, Any]]:
        """``model_id@version`` -> count, mean score, label counts."""
        return {
            f"{m}@{v}": tally.out()
            for (m, v), tally in sorted(self.tallies.items())
            if model_id is None or m == model_id
        }

    def satisfaction(self, model_id: str, version: str) -> float | None:
        tally = self.tallies.get((model_id, version))
        return tally.mean if tally is not None else None
