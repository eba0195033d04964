"""Which served model answers a request that names a route: the choice, from memory.

`Router` holds an immutable snapshot, route name -> `Plan` (its targets' served names, their
cumulative shares, its fallbacks), swapped whole after every route write (`RouteStore`), and
the targets' health (consecutive failures, cooldowns). `Router.candidates` is the request
path's whole cost: the arm (a stable hash of route and user into [0, 1), else the request's own
random draw, against the cumulative shares), then the fallbacks in order, then the other arms,
without the retired and deprecated ones (the `Gate`'s snapshot) and those cooling down. A
target that fails ``failures_before_cooldown`` times in a row cools down for ``cooldown_s``
(LiteLLM's cooldown); its next success resets the count.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hfskills.skillset.runtime.errors import HFSkillsError

from .gate import Gate

log = logging.getLogger("hfskills.host")

_SCALE = float(2**64)


class RouteUnavailable(HFSkillsError):
    """Every target of a route is failing, cooling down, retired or deprecated."""

    code = "route_unavailable"
    status = 503


@dataclass(frozen=True)
class Plan:
    """A route compiled for choosing: served names, cumulative shares ending at 1.0."""

    name: str
    targets: tuple[str, ...]
    cumulative: tuple[float, ...]
    fallbacks: tuple[str, ...]
    #: Shadow traffic: the challenger's served name and the share of requests copied to it.
    challenger: str | None = None
    sample: float = 0.0

    @classmethod
    def of(
        cls,
        name: str,
        weighted: list[tuple[str, float]],
        fallbacks: list[str],
        challenger: tuple[str, float] | None = None,
    ) -> Plan:
        total = sum(weight for _, weight in weighted)
        running, cumulative = 0.0, []
        for _, weight in weighted:
            running += weight
            cumulative.append(running / total)
        cumulative[-1] = 1.0  # no draw in [0, 1) falls past the last arm by rounding
        shadow, sample = challenger if challenger is not None else (None, 0.0)
        targets = tuple(t for t, _ in weighted)
        return cls(name, targets, tuple(cumulative), tuple(fallbacks), shadow, sample)


def stable_draw(route: str, user: str) -> float:
    """A user's fixed place in [0, 1) on a route: blake2b of route and user, 64 bits."""
    digest = hashlib.blake2b(f"{route}\0{user}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


class Router:
    def __init__(
        self,
        gate: Gate,
        failures_before_cooldown: int = 3,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gate, self.clock = gate, clock
        self.failures_before_cooldown, self.cooldown_s = failures_before_cooldown, cooldown_s
        self._plans: Mapping[str, Plan] = {}
        self._failures: dict[str, int] = {}
        self._cool_until: dict[str, float] = {}

    def update(self, plans: Mapping[str, Plan]) -> None:
        """Replace the snapshot (one assignment: a request sees the old or the new, whole)."""
        self._plans = dict(plans)

    def get(self, name: str) -> Plan | None:
        return self._plans.get(name)

    def names(self) -> list[str]:
        return sorted(self._plans)

    def arm(self, plan: Plan, user: str | None, draw: float) -> str:
        """The target a user is assigned (stable per route and user); ``draw`` (uniform in
        [0, 1)) for an anonymous request."""
        at = stable_draw(plan.name, user) if user is not None else draw
        return plan.targets[min(bisect.bisect_right(plan.cumulative, at), len(plan.targets) - 1)]

    def candidates(self, plan: Plan, user: str | None, draw: float) -> list[str]:
        """The targets to try, in order: the arm, the fallbacks, the other arms; never a
        retired or deprecated one, nor one cooling down. Empty: `RouteUnavailable`."""
        first = self.arm(plan, user, draw)
        order = dict.fromkeys((first, *plan.fallbacks, *plan.targets))
        now = self.clock()
        usable = [
            t for t in order if self.gate.status(t) is None and self._cool_until.get(t, 0.0) <= now
        ]
        if not usable:
            cooling = {t: round(u - now, 1) for t, u in self._cool_until.items() if u > now}
            raise RouteUnavailable(
                f"route {plan.name!r} has no target to answer: its targets {list(order)} are "
                f"failing, retired or deprecated (cooling down, seconds left: {cooling})",
                param="model",
            )
        return usable

    def failed(self, target: str, error: BaseException) -> None:
        """Count a failure; the ``failures_before_cooldown``-th in a row starts a cooldown."""
        count = self._failures.get(target, 0) + 1
        if count >= self.failures_before_cooldown:
            self._failures.pop(target, None)
            self._cool_until[target] = self.clock() + self.cooldown_s
            log.warning(
                "routing: %s failed %d times in a row (%s); cooling down for %.0f s",
                target,
                count,
                getattr(error, "message", str(error)),
                self.cooldown_s,
            )
        else:
            self._failures[target] = count

    def succeeded(self, target: str) -> None:
        if target in self._failures:
            del self._failures[target]

    def health(self) -> dict[str, dict[str, float | int]]:
        """Per target now failing or cooling down: consecutive failures, cooldown seconds left."""
        now = self.clock()
        names = set(self._failures) | {t for t, u in self._cool_until.items() if u > now}
        return {
            t: {
                "failures": self._failures.get(t, 0),
                "cooldown_s": round(max(0.0, self._cool_until.get(t, 0.0) - now), 3),
            }
            for t in sorted(names)
        }
