"""The registry API's request and response models (``/api/models``, ``/api/audit``).

A registration is keyed by ``model_id`` and ``version``. ``POST /api/models`` takes a
`Registration` (register, or update the fields it gives); ``PATCH /api/models/{model_id}``
takes a `ModelPatch` (status, tags, cost, quality; ``cost`` and ``quality`` merge key by key,
a null removes a key, as in a JSON merge patch). Answers are `RegisteredModelOut` and
`AuditEntryOut`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

STATUSES = ("active", "testing", "deprecated", "retired")
PROVIDERS = ("local", "openai")
#: Names the control plane's own routes use under /api/models/ (``select``, ``costs``).
RESERVED_IDS = frozenset({"select", "costs"})

Status = Literal["active", "testing", "deprecated", "retired"]
Provider = Literal["local", "openai"]
ModelId = Annotated[
    str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
]
Version = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
]
Task = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]
EnvName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Score = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
MetricName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][\w.:/-]*$")]


class Body(BaseModel):
    # A typo must not pass silently: a control plane refuses fields it does not know.
    model_config = ConfigDict(extra="forbid")


class Cost(Body):
    """What a model costs: hardware per hour (local), or prices per 1000 tokens (remote)."""

    hardware_hourly_usd: Price | None = Field(None, description="USD per hour of its hardware")
    prompt_usd_per_1k: Price | None = Field(None, description="USD per 1000 prompt tokens")
    completion_usd_per_1k: Price | None = Field(None, description="USD per 1000 output tokens")


class CostPatch(Body):
    hardware_hourly_usd: Price | None = None
    prompt_usd_per_1k: Price | None = None
    completion_usd_per_1k: Price | None = None


def _unique(values: list[str]) -> list[str]:
    """A list without repeats, in its order."""
    return list(dict.fromkeys(values))


class Registration(Body):
    """``POST /api/models``: register ``model_id`` at ``version``, or update the fields given.

    The registration that results must be consistent (checked after an update merges): a
    provider ``openai`` has a ``base_url`` and declares its ``task_types``; a ``local`` one has
    neither ``base_url`` nor ``api_key_env``."""

    model_id: ModelId
    version: Version = "1"
    provider: Provider = Field(
        "local",
        description="local: a catalog checkpoint served by a skill; openai: a remote "
        "OpenAI-compatible endpoint at base_url",
    )
    base_url: str | None = Field(
        None,
        max_length=2048,
        pattern=r"^https?://[^\s]+$",
        description="the remote endpoint's base URL (provider openai), e.g. http://10.0.0.5:8000/v1",
    )
    api_key_env: EnvName | None = Field(
        None, description="the NAME of the environment variable holding the remote key"
    )
    task_types: list[Task] = Field(
        default_factory=list, max_length=64, description="tasks it serves (default: the skill's)"
    )
    status: Status = "active"
    tags: list[Tag] = Field(default_factory=list, max_length=64, description="routing tags")
    cost: Cost = Field(default_factory=Cost)
    quality: dict[MetricName, Score] = Field(
        default_factory=dict, max_length=64, description="metric name -> score in [0, 1]"
    )

    @field_validator("model_id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_IDS:
            raise ValueError(f"{value!r} is reserved for the control plane's own routes")
        return value

    @field_validator("task_types", "tags")
    @classmethod
    def _unique_lists(cls, value: list[str]) -> list[str]:
        return _unique(value)


class ModelPatch(Body):
    """``PATCH /api/models/{model_id}``: change status, tags, cost or quality."""

    status: Status | None = None
    tags: list[Tag] | None = Field(None, max_length=64)
    cost: CostPatch | None = None
    quality: dict[MetricName, Score | None] | None = Field(None, max_length=64)

    @model_validator(mode="after")
    def _something(self) -> ModelPatch:
        if not self.model_fields_set:
            raise ValueError("nothing to change: give status, tags, cost or quality")
        if "status" in self.model_fields_set and self.status is None:
            raise ValueError(f"status must be one of {list(STATUSES)}")
        return self

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _unique(value)


class RegisteredModelOut(BaseModel):
    model_id: str
    version: str
    provider: Provider
    base_url: str | None
    api_key_env: str | None
    task_types: list[str]
    status: Status
    tags: list[str]
    cost: Cost
    quality: dict[str, float]
    source: Literal["catalog", "api"] = Field(
        description="catalog: registered by the TOML catalog at start; api: over HTTP"
    )
    served: bool = Field(description="this host's catalog serves this model_id and version")
    created_at: datetime
    updated_at: datetime


class ModelListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[RegisteredModelOut]


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str
    kind: Literal["model", "route"] = Field(
        description="model: a registration (model_id, version); route: model_id is the route"
    )
    action: str
    model_id: str
    version: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditEntryOut]
