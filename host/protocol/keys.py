"""The API keys' request and response models (``/api/keys``, admin only; host/control/keys.py).

``POST /api/keys`` takes a `KeyCreate` and answers `KeyCreatedOut`, the only answer that
carries the key itself; listings and revocations answer `KeyOut` (never the key, never its
hash).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from .registry import Body

Role = Literal["admin", "user", "readonly"]
#: A model, alias, route or ``auto``, as a client names it in ``model``.
ModelName = Annotated[
    str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
]


class KeyCreate(Body):
    """``POST /api/keys``: a new key with a role, limited to ``models`` when given."""

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._:@/+-]*$",
        description="who or what holds the key, e.g. ci-bot",
    )
    role: Role = Field(
        "user",
        description="admin: everything; user: inference and reads; readonly: lists and metrics",
    )
    models: list[ModelName] | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="the models (names, aliases, routes) the key may use; null: every model",
    )

    @field_validator("models")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(value))


class KeyOut(BaseModel):
    id: str = Field(description="the key's public id (DELETE /api/keys/{id})")
    prefix: str = Field(description="what the key starts with")
    name: str
    role: Role
    models: list[str] | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="written at most once a minute")


class KeyCreatedOut(KeyOut):
    key: str = Field(description="the key: shown this once, stored only as a hash")


class KeyListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyOut]
