"""The API keys' request and response models (``/api/keys``, admin only; host/control/keys.py).

``POST /api/keys`` takes a `KeyCreate` and answers `KeyCreatedOut`, the only answer that
carries the key itself; ``PATCH /api/keys/{id}`` takes a `KeyUpdate`; listings, changes and
revocations answer `KeyOut` (never the key, never its hash).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from .registry import Body

Role = Literal["admin", "user", "readonly"]
#: A model, alias, route or ``auto``, as a client names it in ``model``.
ModelName = Annotated[
    str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
]


#: A safety hook as a key names it: a rule's name, ``pii``, ``classifier``, or ``*`` (all).
HookName = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9._-]*)$")
]
#: Who or what holds a key, as listings show it.
KeyName = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._:@/+-]*$")
]
PerMinute = Annotated[int, Field(ge=1, le=1_000_000_000)]


class KeyLimits(Body):
    """A key's own limits, each in place of the server's per-key setting for this key (higher
    or lower); a field left out keeps the server's."""

    requests_per_minute: PerMinute | None = Field(
        None, description="requests a minute (in place of rate_limit_requests_per_minute)"
    )
    tokens_per_minute: PerMinute | None = Field(
        None, description="tokens a minute (in place of rate_limit_tokens_per_minute)"
    )
    max_concurrent_requests: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        None, description="requests at once (in place of max_concurrent_requests_per_key)"
    )

    def stored(self) -> dict[str, int] | None:
        """What the table keeps: the fields that are set; None when none is."""
        return self.model_dump(exclude_none=True) or None


class KeyFields(Body):
    """What a key may carry besides its name and role."""

    models: list[ModelName] | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="the models (names, aliases, routes) the key may use; null: every model",
    )
    limits: KeyLimits | None = Field(
        None, description="its own rate limits; null: the server's per-key settings"
    )
    safety: dict[HookName, bool] | None = Field(
        None,
        max_length=64,
        description="safety hooks switched on (true) or off (false) for this key, by name "
        "(a rule's name, pii, classifier; * for all); null: every hook at its default",
    )

    @field_validator("models")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(value))


class KeyCreate(KeyFields):
    """``POST /api/keys``: a new key with a role, limited to ``models`` when given."""

    name: KeyName = Field(description="who or what holds the key, e.g. ci-bot")
    role: Role = Field(
        "user",
        description="admin: everything; user: inference and reads; readonly: lists and metrics",
    )


class KeyUpdate(KeyFields):
    """``PATCH /api/keys/{id}``: the fields given change (null clears models, limits or
    safety); the others stay. The key itself never changes."""

    name: KeyName | None = None
    role: Role | None = None

    def changes(self) -> dict[str, Any]:
        """The fields the body gave, as `KeyStore.update` takes them."""
        out: dict[str, Any] = {}
        for field in self.model_fields_set:
            value = getattr(self, field)
            if field in ("name", "role") and value is None:
                continue  # a name and a role cannot be cleared
            out[field] = value.stored() if isinstance(value, KeyLimits) else value
        return out


class KeyOut(BaseModel):
    id: str = Field(description="the key's public id (DELETE /api/keys/{id})")
    prefix: str = Field(description="what the key starts with")
    name: str
    role: Role
    models: list[str] | None
    limits: dict[str, int] | None = Field(description="its own rate limits; null: the server's")
    safety: dict[str, bool] | None = Field(description="safety hooks switched for it")
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="written at most once a minute")


class KeyCreatedOut(KeyOut):
    key: str = Field(description="the key: shown this once, stored only as a hash")


class KeyListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyOut]
