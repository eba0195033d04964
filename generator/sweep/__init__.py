# The coverage sweep's package: its results (coverage.json, package data) and the one lookup the
# generator's CLI needs, `explain`, kept free of heavy imports (no torch, no transformers).
"""The coverage sweep: verify a generated skill for every transformers model_type.

Run it with ``scripts/coverage`` or ``python -m hfskills.generator.sweep`` (see
``docs/coverage.md``). :func:`explain` says why a model_type failed the committed sweep.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["CANONICAL", "explain", "load_results", "record_reason"]

#: The committed results of the last full sweep (package data).
CANONICAL = Path(__file__).resolve().parent / "coverage.json"
#: The checkout root (docs/, skillset/), for an editable install.
REPO = Path(__file__).resolve().parents[2]


@cache
def load_results() -> dict[str, dict[str, Any]]:
    """model_type -> its record in the committed coverage.json ({} if there is none)."""
    try:
        data = json.loads(CANONICAL.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return {r["model_type"]: r for r in data.get("results", [])}


def record_reason(record: dict[str, Any]) -> str:
    return f"{record['stage']}: {record['reason']}" if record.get("stage") else record["reason"]


def explain(model_type: str) -> str | None:
    """Why ``model_type`` failed the coverage sweep, or None if it did not fail there."""
    record = load_results().get(model_type)
    if record is None or record.get("status") != "failed":
        return None
    return (
        f"{model_type} failed the coverage sweep at {record_reason(record)}; its skill is "
        "generated but not verified (see docs/coverage.md)"
    )
