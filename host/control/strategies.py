"""Strategies: which registered model suits a task, by a composite score.

``score = wq·quality + wc·cost_efficiency + wl·speed``, each term normalised over the
candidates (min-max: the best candidate 1, the worst 0, all equal 1): quality is the mean of a
model's quality metrics, cost efficiency the inverse of its price per 1000 tokens, speed the
inverse of its mean request latency on this host. A term a candidate has no measurement for
counts 0. Candidates with no measurement at all are explored first (the first by name), as a
bandit would. Strategies are preset weights; ``safety-critical`` keeps only models tagged
``safe`` and ranks them by quality. `Auto` applies them per request to ``model: "auto"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from ..protocol.registry import RegisteredModelOut
from .routing import Plan

#: strategy -> (quality, cost, latency) weights.
STRATEGIES: dict[str, tuple[float, float, float]] = {
    "quality-first": (0.7, 0.15, 0.15),
    "cost-optimized": (0.15, 0.7, 0.15),
    "balanced": (1 / 3, 1 / 3, 1 / 3),
    "speed-first": (0.15, 0.15, 0.7),
    "safety-critical": (1.0, 0.0, 0.0),
}
SAFE_TAG = "safe"


@dataclass(frozen=True)
class Candidate:
    model_id: str
    version: str
    quality: float | None
    cost_per_1k_tokens: float | None
    latency_ms: float | None

    @property
    def measured(self) -> bool:
        return not (
            self.quality is None and self.cost_per_1k_tokens is None and self.latency_ms is None
        )


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    quality: float | None
    cost_efficiency: float | None
    speed: float | None
    score: float


def _normalised(values: Sequence[float | None], higher_is_better: bool) -> list[float | None]:
    known = [v for v in values if v is not None]
    if not known:
        return [None] * len(values)
    low, high = min(known), max(known)
    out: list[float | None] = []
    for v in values:
        if v is None:
            out.append(None)
        elif high == low:
            out.append(1.0)
        else:
            share = (v - low) / (high - low)
            out.append(share if higher_is_better else 1.0 - share)
    return out


def score(candidates: Sequence[Candidate], weights: tuple[float, float, float]) -> list[Scored]:
    """Each candidate's normalised terms and composite score, best first (ties by name)."""
    wq, wc, wl = weights
    quality = _normalised([c.quality for c in candidates], higher_is_better=True)
    cost = _normalised([c.cost_per_1k_tokens for c in candidates], higher_is_better=False)
    speed = _normalised([c.latency_ms for c in candidates], higher_is_better=False)
    scored = [
        Scored(c, q, e, s, wq * (q or 0.0) + wc * (e or 0.0) + wl * (s or 0.0))
        for c, q, e, s in zip(candidates, quality, cost, speed, strict=True)
    ]
    return sorted(scored, key=lambda s: (-s.score, s.candidate.model_id, s.candidate.version))


def select(scored: Sequence[Scored]) -> tuple[Scored, str]:
    """The chosen candidate and why: ``explore`` (no measurement yet) or ``score``."""
    unmeasured = sorted(
        (s for s in scored if not s.candidate.measured),
        key=lambda s: (s.candidate.model_id, s.candidate.version),
    )
    if unmeasured:
        return unmeasured[0], "explore"
    return scored[0], "score"


def candidate(model: RegisteredModelOut, latencies: dict[str, float]) -> Candidate:
    """A registration's measurements: the mean of its quality metrics; the mean of a remote
    model's prompt and completion prices (a local one's cost per token needs its measured
    tokens/s, which cost tracking will bring); its mean latency here when this host serves it."""
    prices = [
        p for p in (model.cost.prompt_usd_per_1k, model.cost.completion_usd_per_1k) if p is not None
    ]
    return Candidate(
        model.model_id,
        model.version,
        fmean(model.quality.values()) if model.quality else None,
        fmean(prices) if prices else None,
        latencies.get(model.model_id) if model.served else None,
    )


def mean_latencies_ms(samples: Iterable[Any]) -> dict[str, float]:
    """Served model -> mean request latency (ms), from the request-duration histogram's
    ``_sum`` and ``_count`` samples (prometheus_client's ``collect()``)."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for metric in samples:
        for sample in metric.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            if sample.name.endswith("_sum"):
                sums[model] = sums.get(model, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                counts[model] = counts.get(model, 0.0) + sample.value
    return {m: 1000 * sums[m] / counts[m] for m in sums if counts.get(m)}


#: The ``model`` a request gives to let the strategy choose.
AUTO = "auto"
#: Weight of a new latency observation in a model's moving average.
LATENCY_ALPHA = 0.2


class Auto:
    """``model: "auto"``: the strategy's ranking of this host's active served models for the
    request's task, from memory (the registry's snapshot, refreshed after every write, and
    the latencies the core observes), as a `Plan`: the choice first, then the others by score
    as its fallbacks (so failover and cooldowns apply as on a route)."""

    def __init__(self, served_tasks: dict[str, list[str]]) -> None:
        self.served_tasks = served_tasks
        self._profiles: dict[str, Candidate] = {}
        self._safe: frozenset[str] = frozenset()
        self.latency_ms: dict[str, float] = {}
        #: served model -> its measured price per 1000 tokens (a local model's, from cost
        #: tracking), and (model_id, version) -> its mean feedback score (feedback.py).
        self.cost_of: Callable[[str], float | None] | None = None
        self.satisfaction: Callable[[str, str], float | None] | None = None

    def update(self, profiles: dict[str, Candidate], safe: frozenset[str]) -> None:
        """Replace the snapshot: served name -> its measurements (active models only)."""
        self._profiles, self._safe = profiles, safe

    def observe(self, name: str, seconds: float) -> None:
        """A request this model answered: its latency joins the moving average."""
        previous = self.latency_ms.get(name)
        ms = seconds * 1000
        self.latency_ms[name] = (
            ms if previous is None else previous + LATENCY_ALPHA * (ms - previous)
        )

    def _cost(self, name: str) -> float | None:
        return self.cost_of(name) if self.cost_of is not None else None

    def _quality(self, c: Candidate) -> float | None:
        """Its quality metrics' mean, averaged with its users' mean feedback score."""
        felt = self.satisfaction(c.model_id, c.version) if self.satisfaction else None
        if felt is None:
            return c.quality
        return felt if c.quality is None else (c.quality + felt) / 2

    def plan(
        self,
        task: str | None,
        strategy: str | None,
        weights: tuple[float, float, float] | None = None,
    ) -> Plan | None:
        """The ranked plan, None when no active served model serves ``task``."""
        name = strategy or "balanced"
        candidates = [
            Candidate(
                c.model_id,
                c.version,
                self._quality(c),
                c.cost_per_1k_tokens if c.cost_per_1k_tokens is not None else self._cost(n),
                self.latency_ms.get(n),
            )
            for n, c in self._profiles.items()
            if (task is None or task in self.served_tasks.get(n, ()))
            and (name != "safety-critical" or n in self._safe)
        ]
        if not candidates:
            return None
        # a plan names served models: a model_id may be served as several versions
        served = {(c.model_id, c.version): n for n, c in self._profiles.items()}
        ranked = [
            (served[(s.candidate.model_id, s.candidate.version)], s)
            for s in score(candidates, weights or STRATEGIES[name])
        ]
        chosen, _ = select([s for _, s in ranked])
        rest = [n for n, s in ranked if s is not chosen]
        first = next(n for n, s in ranked if s is chosen)
        return Plan.of(AUTO, [(first, 1.0)], rest)
