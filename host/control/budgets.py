"""Daily budgets, global and per model, that concurrent requests cannot overrun.

A budget is a daily limit in USD for a scope: ``global`` (every call) or ``model:<model_id>``.
Before a call is dispatched its most it can cost (its price times its prompt estimate plus its
``max_tokens``) is reserved in every scope it falls in; a call that does not fit next to what
is spent and reserved today gets 429 with code ``budget_exceeded`` and ``Retry-After`` until
the UTC day ends. When the call ends, the reservation is replaced by what it cost. Because the
check and the reservation happen together on the event loop, 50 concurrent requests cannot
all pass a budget that fits 10 (LiteLLM's users see its budgets bypassed by exactly that).
Crossing 70 %, 90 % and 100 % of a budget emits ``budget.threshold_crossed`` once per day (a
call that would not fit is refused, so calls alone stop short of 100 %; lowering a budget
below today's spend crosses it at once).

Today's spend is read from the daily rollup at start and kept in memory after that: budgets
are enforced per host process (several hosts on one database each enforce the limit on what
they spend and see each other's spend only after a restart).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from hfskills.skillset.runtime.errors import HFSkillsError

from . import db
from .costs import day_of, usd
from .events import Events
from .tables import Budget, now

GLOBAL = "global"
MODEL_PREFIX = "model:"
THRESHOLDS = (0.7, 0.9, 1.0)


class BudgetExceeded(HFSkillsError):
    code = "budget_exceeded"
    status = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, param="model")
        self.retry_after_s = retry_after_s


class BudgetNotFound(HFSkillsError):
    code = "budget_not_found"
    status = 404


def scopes_of(model_id: str) -> tuple[str, str]:
    return GLOBAL, MODEL_PREFIX + model_id


def seconds_to_midnight(at: datetime) -> int:
    tomorrow = (at + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((tomorrow - at).total_seconds()) + 1)


@dataclass
class Reservation:
    scopes: tuple[str, ...]
    usd: float
    day: str
    settled: bool = False


@dataclass
class _Day:
    day: str
    spent: dict[str, float] = field(default_factory=dict)
    reserved: dict[str, float] = field(default_factory=dict)
    crossed: dict[str, set[float]] = field(default_factory=dict)


class Budgets:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        events: Events,
        spent_on: Callable[[str], dict[str, float]],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions, self.events, self.spent_on, self.clock = sessions, events, spent_on, clock
        self.limits: dict[str, float] = {}
        self._today = _Day("")
        self._write = threading.Lock()

    def start(self) -> None:
        """Read the limits and today's spend."""
        self.refresh()
        self._roll(self.clock())

    def refresh(self) -> None:
        with self.sessions() as session:
            self.limits = {b.scope: b.daily_usd for b in session.scalars(select(Budget))}

    # -- the request path (event loop) ---------------------------------------------------------

    def reserve(self, model_id: str, estimate_usd: float) -> Reservation | None:
        """Reserve ``estimate_usd`` in the model's scopes that have a budget; None when none
        has. `BudgetExceeded` when it does not fit."""
        limited = tuple(s for s in scopes_of(model_id) if s in self.limits)
        if not limited:
            return None
        at = self.clock()
        today = self._roll(at)
        for scope in limited:
            limit = self.limits[scope]
            spent, reserved = today.spent.get(scope, 0.0), today.reserved.get(scope, 0.0)
            if spent + reserved + estimate_usd > limit:
                used = "spent" if not reserved else "spent and reserved by calls in flight"
                raise BudgetExceeded(
                    f"budget {scope!r} is exhausted for today: {usd(spent + reserved)} of "
                    f"{limit} USD {used}, and this call may cost up to {usd(estimate_usd)} USD; "
                    "it resets at 00:00 UTC (PUT /api/budgets/{scope} changes it)",
                    seconds_to_midnight(at),
                )
        for scope in limited:
            today.reserved[scope] = today.reserved.get(scope, 0.0) + estimate_usd
        return Reservation(limited, estimate_usd, today.day)

    def settle(self, reservation: Reservation | None, model_id: str, cost_usd: float) -> None:
        """Replace the reservation by the call's cost; emit thresholds crossed."""
        today = self._roll(self.clock())
        if reservation is not None and not reservation.settled:
            reservation.settled = True
            if reservation.day == today.day:
                for scope in reservation.scopes:
                    left = today.reserved.get(scope, 0.0) - reservation.usd
                    today.reserved[scope] = max(0.0, left)
        if cost_usd <= 0:
            return
        for scope in scopes_of(model_id):
            today.spent[scope] = today.spent.get(scope, 0.0) + cost_usd
            self._thresholds(today, scope)

    def _thresholds(self, today: _Day, scope: str) -> None:
        limit = self.limits.get(scope)
        if not limit:
            return
        spent = today.spent.get(scope, 0.0)
        crossed = today.crossed.setdefault(scope, set())
        for threshold in THRESHOLDS:
            if spent >= threshold * limit and threshold not in crossed:
                crossed.add(threshold)
                self.events.emit(
                    "budget.threshold_crossed",
                    model_id=scope.removeprefix(MODEL_PREFIX) if scope != GLOBAL else None,
                    scope=scope,
                    threshold=threshold,
                    spent_usd=usd(spent),
                    daily_usd=limit,
                )

    def _roll(self, at: datetime) -> _Day:
        """Today's ledger; a new UTC day starts from what the rollup has for it."""
        day = day_of(at)
        if self._today.day != day:
            fresh = _Day(day)
            try:
                for model_id, spent in self.spent_on(day).items():
                    for scope in scopes_of(model_id):
                        fresh.spent[scope] = fresh.spent.get(scope, 0.0) + spent
            except Exception:  # the database is away: count from zero, it is a new day
                pass
            for scope in fresh.spent:
                limit = self.limits.get(scope)
                if limit:
                    share = fresh.spent[scope] / limit
                    fresh.crossed[scope] = {t for t in THRESHOLDS if share >= t}
            self._today = fresh
        return self._today

    # -- HTTP ------------------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        today = self._roll(self.clock())
        out = []
        for scope, limit in sorted(self.limits.items()):
            spent = today.spent.get(scope, 0.0)
            out.append(
                {
                    "scope": scope,
                    "daily_usd": limit,
                    "day": today.day,
                    "spent_usd": usd(spent),
                    "reserved_usd": usd(today.reserved.get(scope, 0.0)),
                    "remaining_usd": usd(max(0.0, limit - spent)),
                    "used": round(spent / limit, 6) if limit else None,
                    "exceeded": spent >= limit,
                    "thresholds_crossed": sorted(today.crossed.get(scope, ())),
                }
            )
        return out

    def put(self, scope: str, daily_usd: float) -> tuple[dict[str, Any], bool]:
        """Create or change a budget; (its status, True when created)."""
        with self._write, db.transaction(self.sessions) as session:
            row = session.scalars(select(Budget).where(Budget.scope == scope)).first()
            created = row is None
            if row is None:
                at = now()
                session.add(Budget(scope=scope, daily_usd=daily_usd, created_at=at, updated_at=at))
            else:
                row.daily_usd = daily_usd
        self.refresh()
        today = self._roll(self.clock())
        spent = today.spent.get(scope, 0.0)
        before = today.crossed.get(scope, set())
        today.crossed[scope] = {t for t in before if spent >= t * daily_usd}
        self._thresholds(today, scope)  # a lowered budget may be crossed at once
        return next(s for s in self.status() if s["scope"] == scope), created

    def delete(self, scope: str) -> None:
        with self._write, db.transaction(self.sessions) as session:
            gone = session.execute(delete(Budget).where(Budget.scope == scope)).rowcount
        if not gone:
            raise BudgetNotFound(f"no budget for scope {scope!r}; GET /api/budgets lists them")
        self.refresh()
