"""Shadow traffic: a route's challenger answers a copy of a sampled share of its requests in the
background, and the comparison is recorded per route.

The copy starts after the champion has answered (it never delays or changes the answer), at
``low`` priority, and its result is only compared: ``agreement`` (embeddings: cosine >= 0.999
for every input; generations and other results: equal), both latencies, and the challenger's
errors. It is never billed (no cost is recorded for it) and never counts toward a target's
cooldown. The records are in memory, per process, since the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Cosine similarity from which two embeddings agree.
AGREEMENT_COSINE = 0.999


@dataclass
class Comparison:
    """One route's shadow record."""

    challenger: str = ""
    copied: int = 0
    compared: int = 0
    agreed: int = 0
    errors: int = 0
    champion_ms: float = 0.0
    challenger_ms: float = 0.0
    last_error: str | None = None

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
    def __init__(self) -> None:
        self.routes: dict[str, Comparison] = {}

    def _of(self, route: str, challenger: str) -> Comparison:
        record = self.routes.setdefault(route, Comparison(challenger))
        record.challenger = challenger
        return record

    def copied(self, route: str, challenger: str) -> None:
        self._of(route, challenger).copied += 1

    def compared(
        self, route: str, challenger: str, same: bool, champion_s: float, challenger_s: float
    ) -> None:
        record = self._of(route, challenger)
        record.compared += 1
        record.agreed += int(same)
        record.champion_ms += champion_s * 1000
        record.challenger_ms += challenger_s * 1000

    def failed(self, route: str, challenger: str, error: str) -> None:
        record = self._of(route, challenger)
        record.errors += 1
        record.last_error = error

    def out(self) -> dict[str, dict[str, Any]]:
        return {route: record.out() for route, record in sorted(self.routes.items())}


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
