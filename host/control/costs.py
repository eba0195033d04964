"""Cost tracking: what each call cost, a small row per call, a daily rollup, and the report.

The price, per the design: a remote model's prompt and completion prices per 1000 tokens; a
local model's ``cost_per_1k_tokens = hardware_hourly_usd / ((tokens_per_second × 3600) /
1000)``, where ``tokens_per_second`` (prompt and output tokens together) is the aggregate
throughput measured for the model on its hardware: the benchmark harness's (`Throughput.set`,
``total_token_throughput``) when there is one, else live traffic's (tokens over the time the
model was busy with at least one call, so concurrent calls share that time: batched
throughput, not batch-1 speed; over the last 10 to 20 minutes). Costs are rounded to 6
decimal places. A local model without ``hardware_hourly_usd``, or a remote one without
prices, costs nothing (``cost_usd`` null).

`CostBook` buffers one `CostEvent` per call (ids, tokens, cost, latency, status; never the
prompt) through the `Writer`, which also adds it to the day's `CostDay` rollup in the same
transaction; events older than ``cost_events_retention_days`` are deleted hourly, the rollup
is kept. `CostBook.report` answers ``GET /api/models/costs``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from ..protocol.registry import Cost
from .calls import Call
from .tables import CostDay, CostEvent
from .writer import Writer

#: Seconds of live traffic one throughput window spans (two windows are kept).
WINDOW_S = 600.0
#: How often old cost events are deleted.
SWEEP_S = 3600.0


def usd(value: float) -> float:
    return round(value, 6)


@dataclass(frozen=True)
class Price:
    """USD per prompt token and per completion token, and what it rests on: ``prices`` (a
    remote model's), ``bench`` or ``live`` (a local model's measured tokens/s), or ``assumed``
    (no measurement yet: ``cost_assumed_tokens_per_s``, for budget reservations only)."""

    prompt: float
    completion: float
    basis: str
    tokens_per_second: float | None = None

    def of(self, prompt_tokens: int, completion_tokens: int) -> float:
        return usd(prompt_tokens * self.prompt + completion_tokens * self.completion)

    @property
    def per_1k_tokens(self) -> float:
        """One number per 1000 tokens: the mean of the prompt and completion prices."""
        return usd(500 * (self.prompt + self.completion))


class _Busy:
    """One model's live throughput: tokens, and the time it was busy (the union of its calls'
    intervals, approximated in the order calls end), in the current and the previous window."""

    def __init__(self) -> None:
        self.started = time.time()
        self.tokens = self.busy_s = 0.0
        self.previous = (0.0, 0.0)
        self.busy_until = 0.0

    def add(self, tokens: int, start: float, end: float) -> None:
        if end - self.started > WINDOW_S:
            self.previous, self.started = (self.tokens, self.busy_s), end
            self.tokens = self.busy_s = 0.0
        self.busy_s += max(0.0, end - max(start, self.busy_until))
        self.busy_until = max(self.busy_until, end)
        self.tokens += tokens

    def rate(self) -> float | None:
        tokens, busy = self.tokens + self.previous[0], self.busy_s + self.previous[1]
        return tokens / busy if tokens > 0 and busy > 0 else None


class Throughput:
    """Tokens/s per (model, hardware): the benchmark harness's, else live traffic's."""

    def __init__(self) -> None:
        self.benched: dict[tuple[str, str], float] = {}
        self._live: dict[tuple[str, str], _Busy] = {}

    def set(self, model: str, hardware: str, tokens_per_second: float) -> None:
        """A benchmark's aggregate tokens/s for ``model`` on ``hardware``."""
        if tokens_per_second > 0:
            self.benched[(model, hardware)] = tokens_per_second

    def observe(self, call: Call, started: float | None = None) -> None:
        """A call's tokens over the time the model held it (from ``started``: not its load
        nor its wait in the queue)."""
        if call.status == "ok" and call.tokens:
            busy = self._live.setdefault((call.model, call.hardware), _Busy())
            begin = started if started is not None else call.at - call.latency_s
            busy.add(call.tokens, begin, call.at)

    def get(self, model: str, hardware: str | None) -> tuple[float, str] | None:
        """(tokens/s, ``bench`` or ``live``); any hardware's when ``hardware`` is None (a
        call not yet placed)."""
        for source, table in (("bench", self.benched), ("live", self._live)):
            for (name, where), value in table.items():
                if name == model and hardware in (None, where):
                    rate = value if isinstance(value, float) else value.rate()
                    if rate:
                        return rate, source
        return None


class Pricing:
    """A served model's `Price` now, from the registry's cost profiles (a snapshot refreshed
    after every registry write) and the measured throughput."""

    def __init__(
        self,
        profiles: Callable[[], Mapping[str, tuple[str, Cost]]],
        throughput: Throughput,
        assumed_tokens_per_s: float,
    ) -> None:
        self.profiles, self.throughput = profiles, throughput
        self.assumed_tokens_per_s = assumed_tokens_per_s

    def price(self, model: str, hardware: str | None, *, assume: bool = False) -> Price | None:
        """None: the model has no price. ``assume``: a local model with no measurement yet is
        priced at the assumed tokens/s (a reservation's upper estimate)."""
        found = self.profiles().get(model)
        if found is None:
            return None
        provider, cost = found
        if provider != "local":
            if cost.prompt_usd_per_1k is None and cost.completion_usd_per_1k is None:
                return None
            return Price(
                (cost.prompt_usd_per_1k or 0.0) / 1000,
                (cost.completion_usd_per_1k or 0.0) / 1000,
                "prices",
            )
        if cost.hardware_hourly_usd is None:
            return None
        measured = self.throughput.get(model, hardware)
        if measured is None:
            if not assume:
                return None
            measured = (self.assumed_tokens_per_s, "assumed")
        rate, basis = measured
        per_token = cost.hardware_hourly_usd / (rate * 3600)
        return Price(per_token, per_token, basis, round(rate, 3))


def day_of(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d")


class CostBook:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        writer: Writer,
        retention_days: float,
        pricing: Pricing,
    ) -> None:
        self.sessions, self.writer, self.retention_days = sessions, writer, retention_days
        #: Prices now, and the measured tokens/s they rest on (``throughput.set``: a
        #: benchmark's figure, e.g. from `hfskills bench`).
        self.pricing, self.throughput = pricing, pricing.throughput
        writer.sink("cost_events", self._write)
        writer.every(SWEEP_S, self._sweep)

    def record(
        self, call: Call, model_id: str, version: str, provider: str, cost: float | None
    ) -> None:
        """Buffer the call's row (the request path's whole cost)."""
        self.writer.put(
            "cost_events",
            {
                "at": datetime.fromtimestamp(call.at, UTC),
                "request_id": call.request_id,
                "model_id": model_id,
                "version": version,
                "provider": provider,
                "hardware": call.hardware,
                "route": call.route,
                "task": call.task,
                "prompt_tokens": call.prompt_tokens,
                "completion_tokens": call.completion_tokens,
                "cost_usd": cost,
                "latency_ms": round(call.latency_s * 1000, 3),
                "status": call.status,
            },
        )

    # -- the writer's side ---------------------------------------------------------------------

    @staticmethod
    def _write(session: Session, rows: list[dict[str, Any]]) -> None:
        session.add_all(CostEvent(**row) for row in rows)
        days: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            days[(day_of(row["at"]), row["model_id"], row["version"])].append(row)
        for (day, model_id, version), group in days.items():
            total = session.scalars(
                select(CostDay).where(
                    CostDay.day == day, CostDay.model_id == model_id, CostDay.version == version
                )
            ).first()
            if total is None:
                total = CostDay(
                    day=day,
                    model_id=model_id,
                    version=version,
                    requests=0,
                    errors=0,
                    prompt_tokens=0,
                    completion_tokens=0,
                    cost_usd=0.0,
                    latency_ms_sum=0.0,
                )
                session.add(total)
            total.requests += len(group)
            total.errors += sum(r["status"] != "ok" for r in group)
            total.prompt_tokens += sum(r["prompt_tokens"] for r in group)
            total.completion_tokens += sum(r["completion_tokens"] for r in group)
            total.cost_usd = usd(total.cost_usd + sum(r["cost_usd"] or 0.0 for r in group))
            total.latency_ms_sum += sum(r["latency_ms"] for r in group)

    def _sweep(self, session: Session) -> None:
        cutoff = datetime.now(UTC) - timedelta(days=self.retention_days)
        session.execute(delete(CostEvent).where(CostEvent.at < cutoff))

    # -- reads ---------------------------------------------------------------------------------

    def spent_on(self, day: str) -> dict[str, float]:
        """model_id -> USD spent on ``day`` (the rollup: what is written)."""
        with self.sessions() as session:
            rows = session.execute(
                select(CostDay.model_id, func.sum(CostDay.cost_usd))
                .where(CostDay.day == day)
                .group_by(CostDay.model_id)
            ).all()
        return {model_id: float(total or 0.0) for model_id, total in rows}

    def answered(self, request_id: str) -> tuple[str, str] | None:
        """(model_id, version) of the newest successful call of a request, from the table."""
        with self.sessions() as session:
            row = session.execute(
                select(CostEvent.model_id, CostEvent.version)
                .where(CostEvent.request_id == request_id, CostEvent.status == "ok")
                .order_by(CostEvent.id.desc())
                .limit(1)
            ).first()
        return (row[0], row[1]) if row is not None else None

    def by_route(self, hours: float) -> dict[str, dict[str, dict[str, Any]]]:
        """route -> ``model_id@version`` -> requests, errors, cost and latency of the calls
        the route sent there in the last ``hours`` (the route comparison)."""
        since = datetime.now(UTC) - timedelta(hours=hours)
        with self.sessions() as session:
            rows = session.execute(
                select(CostEvent.route, CostEvent.model_id, CostEvent.version, *_EVENT_TOTALS)
                .where(CostEvent.at >= since, CostEvent.route.is_not(None))
                .group_by(CostEvent.route, CostEvent.model_id, CostEvent.version)
            ).all()
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for route, model_id, version, *sums in rows:
            group = _totals(sums)
            out.setdefault(route, {})[f"{model_id}@{version}"] = {
                **_efficiency(group),
                "cost_usd": group["cost_usd"],
            }
        return out

    def report(self, hours: float) -> dict[str, Any]:
        """``GET /api/models/costs``: totals over the last ``hours`` from the cost events
        (within their retention), else from the daily rollup (whole UTC days)."""
        since = datetime.now(UTC) - timedelta(hours=hours)
        groups: dict[tuple[str, str], dict[str, float]] = {}
        with self.sessions() as session:
            if hours <= self.retention_days * 24:
                source = "cost_events"
                rows = session.execute(
                    select(CostEvent.model_id, CostEvent.version, *_EVENT_TOTALS)
                    .where(CostEvent.at >= since)
                    .group_by(CostEvent.model_id, CostEvent.version)
                ).all()
            else:
                source = "cost_daily"
                rows = session.execute(
                    select(
                        CostDay.model_id,
                        CostDay.version,
                        func.sum(CostDay.requests),
                        func.sum(CostDay.errors),
                        func.sum(CostDay.prompt_tokens),
                        func.sum(CostDay.completion_tokens),
                        func.sum(CostDay.cost_usd),
                        func.sum(CostDay.latency_ms_sum),
                    )
                    .where(CostDay.day >= day_of(since))
                    .group_by(CostDay.model_id, CostDay.version)
                ).all()
        for model_id, version, *sums in rows:
            groups[(model_id, version)] = _totals(sums)
        total = usd(sum(g["cost_usd"] for g in groups.values()))
        named = {f"{m}@{v}": g for (m, v), g in groups.items()}
        top = sorted(named.items(), key=lambda kv: (-kv[1]["cost_usd"], kv[0]))
        return {
            "hours": hours,
            "since": since.isoformat(),
            "source": source,
            "total_cost_usd": total,
            "requests": sum(int(g["requests"]) for g in groups.values()),
            "cost_by_model": {name: g["cost_usd"] for name, g in sorted(named.items())},
            "top_models": [
                {
                    "model": name,
                    "cost_usd": g["cost_usd"],
                    "requests": int(g["requests"]),
                    "share": round(g["cost_usd"] / total, 6) if total else None,
                }
                for name, g in top[:10]
            ],
            "efficiency_metrics": {name: _efficiency(g) for name, g in sorted(named.items())},
        }


#: Per group of cost events: requests, errors, prompt and completion tokens, cost, latency
#: (the order `_totals` reads; the daily rollup's sums come in the same order).
_EVENT_TOTALS = (
    func.count(),
    func.sum(case((CostEvent.status != "ok", 1), else_=0)),
    func.sum(CostEvent.prompt_tokens),
    func.sum(CostEvent.completion_tokens),
    func.sum(CostEvent.cost_usd),
    func.sum(CostEvent.latency_ms),
)


def _totals(sums: Sequence[Any]) -> dict[str, float]:
    """A group's sums (`_EVENT_TOTALS`' order; SQL's NULL for an empty sum) as totals."""
    requests, errors, prompt, completion, cost, latency = sums
    return {
        "requests": int(requests or 0),
        "errors": int(errors or 0),
        "prompt_tokens": int(prompt or 0),
        "completion_tokens": int(completion or 0),
        "cost_usd": usd(float(cost or 0.0)),
        "latency_ms": float(latency or 0.0),
    }


def _efficiency(group: Mapping[str, float]) -> dict[str, Any]:
    requests, tokens = (
        int(group["requests"]),
        int(group["prompt_tokens"] + group["completion_tokens"]),
    )
    return {
        "requests": requests,
        "errors": int(group["errors"]),
        "error_rate": round(group["errors"] / requests, 6) if requests else None,
        "prompt_tokens": int(group["prompt_tokens"]),
        "completion_tokens": int(group["completion_tokens"]),
        "cost_per_request_usd": usd(group["cost_usd"] / requests) if requests else None,
        "cost_per_1k_tokens_usd": usd(1000 * group["cost_usd"] / tokens) if tokens else None,
        "mean_latency_ms": round(group["latency_ms"] / requests, 3) if requests else None,
    }
