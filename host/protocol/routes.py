"""The routes API's request and response models (``/api/routes``) and the ``[[routes]]`` tables
of the TOML file.

A route is a name that a request may give as its ``model``. It maps to weighted targets (a
served model's name or alias, optionally ``name@version``); weights are positive numbers,
normalised to shares of 1 (``90`` and ``10`` are 90 % and 10 %, as are ``0.9`` and ``0.1``).
``fallbacks`` are model names tried in order when the chosen target fails.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Names a route may not take: ``auto`` is for strategies (to come).
RESERVED_ROUTES = frozenset({"auto"})
#: Most targets, and most fallbacks, one route may have.
MAX_TARGETS = 64

RouteName = Annotated[
    str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/+-]*$")
]
#: A served model's name or alias, optionally ``@version`` (the version this host serves).
TargetName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=330,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/+-]*(@[A-Za-z0-9][A-Za-z0-9._+-]*)?$",
    ),
]
Weight = Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)]


class RouteTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: TargetName = Field(description="a served model's name or alias, or name@version")
    weight: Weight = Field(description="a positive number; shares are weight / sum of weights")


class Challenger(BaseModel):
    """A route's challenger: a copy of a sampled share of its requests, in the background."""

    model_config = ConfigDict(extra="forbid")

    model: TargetName = Field(description="a served model's name or alias, or name@version")
    sample: float = Field(
        gt=0, le=1, allow_inf_nan=False, description="the share of requests copied, in (0, 1]"
    )


class RouteBody(BaseModel):
    """``PUT /api/routes/{name}``: the route's whole definition (a PUT replaces it)."""

    model_config = ConfigDict(extra="forbid")

    targets: list[RouteTarget] = Field(min_length=1, max_length=MAX_TARGETS)
    fallbacks: list[TargetName] = Field(
        default_factory=list,
        max_length=MAX_TARGETS,
        description="model names tried in order when the chosen target fails",
    )
    challenger: Challenger | None = Field(
        None, description="shadow traffic: never answers, never delays the answer"
    )

    @field_validator("targets")
    @classmethod
    def _distinct(cls, value: list[RouteTarget]) -> list[RouteTarget]:
        names = [t.model for t in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"target {repeated[0]!r} is given twice; give it one weight")
        return value

    @field_validator("fallbacks")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class RouteEntry(RouteBody):
    """A ``[[routes]]`` table of the TOML file: a name and the route's definition."""

    name: RouteName

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_ROUTES:
            raise ValueError(f"{value!r} is reserved")
        return value


class TargetOut(RouteTarget):
    share: float = Field(description="the share of assignments it receives: weight / total")


class RouteOut(BaseModel):
    name: str
    targets: list[TargetOut]
    fallbacks: list[str]
    challenger: Challenger | None
    source: Literal["config", "api"] = Field(
        description="config: a [[routes]] table written at start; api: over HTTP"
    )
    created_at: datetime
    updated_at: datetime


class RouteListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[RouteOut]


# -- strategies: POST /api/models/select ---------------------------------------------------------

StrategyName = Literal[
    "quality-first", "cost-optimized", "balanced", "speed-first", "safety-critical"
]
TermWeight = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]


class SelectRequest(BaseModel):
    """``POST /api/models/select``: the best active registered model for a task. Weights given
    replace the strategy's (those not given count 0); at least one must be > 0."""

    model_config = ConfigDict(extra="forbid")

    task_type: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    strategy: StrategyName = "balanced"
    quality_weight: TermWeight | None = None
    cost_weight: TermWeight | None = None
    latency_weight: TermWeight | None = None
    safety_required: bool = Field(False, description="only models tagged safe")
    max_cost_per_1k_tokens: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="leave out models dearer, or of unknown cost"
    )


class ScoredOut(BaseModel):
    model_id: str
    version: str
    quality: float | None = Field(description="the mean of its quality metrics")
    cost_per_1k_tokens: float | None = Field(
        description="remote: the mean of its prompt and completion prices"
    )
    latency_ms: float | None = Field(description="its mean request latency on this host")
    terms: dict[str, float | None] = Field(
        description="quality, cost_efficiency, speed: normalised over the candidates"
    )
    score: float
    measured: bool


class SelectOut(BaseModel):
    task_type: str
    strategy: str = Field(description="the strategy's name, or custom when weights were given")
    weights: dict[str, float]
    selected: ScoredOut
    reason: Literal["score", "explore"] = Field(
        description="score: the best composite score; explore: a candidate with no measurement"
    )
    candidates: list[ScoredOut]
