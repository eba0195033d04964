"""The control plane's tables, as SQLAlchemy 2 typed ORM classes.

Revision 0001 holds the registry: `RegisteredModel` (``registered_models``) and `AuditEntry`
(``audit_log``); 0002 the routes (`Route`, ``routes``) and the audit log's ``kind``; 0003 a
route's challenger; 0004 the challengers' shadow records (`ShadowComparison`); 0005 the
accounts (cost events, budgets, events, feedback); 0006 the API keys (`ApiKey`). Later
revisions add their own tables beside them on the same `Base`; every change to these classes
comes with an alembic revision in ``migrations/versions`` (tests/control checks that the two
match).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, MetaData, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: Constraint names spelled the same on every backend, so migrations can name them.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back timezone-aware on every backend (SQLite keeps
    no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class RegisteredModel(Base):
    """One version of one model: where it runs, its state, and what it costs and scores."""

    __tablename__ = "registered_models"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[str] = mapped_column(String(256))
    version: Mapped[str] = mapped_column(String(64))
    #: ``local`` (a catalog checkpoint served by a skill) or ``openai`` (a remote endpoint).
    provider: Mapped[str] = mapped_column(String(16))
    base_url: Mapped[str | None] = mapped_column(String(2048))
    #: The NAME of the environment variable that holds a remote endpoint's key, never the key.
    api_key_env: Mapped[str | None] = mapped_column(String(128))
    task_types: Mapped[list[str]] = mapped_column(JSON)
    #: ``active``, ``testing``, ``deprecated`` or ``retired``.
    status: Mapped[str] = mapped_column(String(16))
    tags: Mapped[list[str]] = mapped_column(JSON)
    hardware_hourly_usd: Mapped[float | None] = mapped_column(Float)
    prompt_usd_per_1k: Mapped[float | None] = mapped_column(Float)
    completion_usd_per_1k: Mapped[float | None] = mapped_column(Float)
    #: metric name -> score in [0, 1].
    quality: Mapped[dict[str, float]] = mapped_column(JSON)
    #: ``catalog`` (registered by the TOML catalog at start) or ``api`` (over HTTP).
    source: Mapped[str] = mapped_column(String(16))
    #: Fields an operator set over HTTP: the catalog's start-up sync leaves them alone.
    operator_fields: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, onupdate=now)


class Route(Base):
    """A route: a name that requests may give as their ``model``, its weighted targets and its
    ordered fallback chain (host/control/routing.py)."""

    __tablename__ = "routes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    #: ``[{"model": "name" or "name@version", "weight": > 0}, ...]``, in the order given.
    targets: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    #: Model names tried in order when the chosen target fails.
    fallbacks: Mapped[list[str]] = mapped_column(JSON)
    #: ``{"model": ..., "sample": (0, 1]}``: shadow traffic (revision 0003), or None.
    challenger: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: ``config`` (a ``[[routes]]`` table of the TOML file, written at start) or ``api``.
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, onupdate=now)


class ShadowComparison(Base):
    """One route's shadow record for one challenger (revision 0004): running totals, one row per
    route and challenger (host/control/shadow.py flushes them in the background)."""

    __tablename__ = "shadow_comparisons"
    __table_args__ = (UniqueConstraint("route", "challenger"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    route: Mapped[str] = mapped_column(String(256))
    challenger: Mapped[str] = mapped_column(String(256))
    copied: Mapped[int] = mapped_column(Integer)
    compared: Mapped[int] = mapped_column(Integer)
    agreed: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    #: Summed latencies of the compared requests, in milliseconds.
    champion_ms: Mapped[float] = mapped_column(Float)
    challenger_ms: Mapped[float] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(String(1024))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, onupdate=now)


class AuditEntry(Base):
    """One change to the registry or the routes: who, what, and the record before and after."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_model_id_version", "model_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    actor: Mapped[str] = mapped_column(String(256))
    #: ``model`` (a registration: ``model_id`` and ``version``) or ``route`` (``model_id`` is
    #: the route's name, ``version`` empty).
    kind: Mapped[str] = mapped_column(String(16), default="model", server_default="model")
    #: ``register``, ``update``, ``patch``, ``delete``, ``catalog.register``, ``catalog.update``;
    #: for routes ``route.put``, ``route.delete``, ``config.put``.
    action: Mapped[str] = mapped_column(String(32))
    model_id: Mapped[str] = mapped_column(String(256))
    version: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class CostEvent(Base):
    """One served call's cost (revision 0005): ids, tokens, cost, latency and status; never the
    prompt. Deleted after ``cost_events_retention_days``; `CostDay` keeps the totals."""

    __tablename__ = "cost_events"
    __table_args__ = (
        Index("ix_cost_events_at", "at"),
        Index("ix_cost_events_request_id", "request_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    request_id: Mapped[str] = mapped_column(String(128))
    model_id: Mapped[str] = mapped_column(String(256))
    version: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(16))
    hardware: Mapped[str] = mapped_column(String(32))
    route: Mapped[str | None] = mapped_column(String(256))
    task: Mapped[str | None] = mapped_column(String(64))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    #: USD, 6 decimal places; None when the model has no price (no cost profile).
    cost_usd: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    #: ``ok``, ``error``, ``timeout`` or ``cancelled``.
    status: Mapped[str] = mapped_column(String(16))


class CostDay(Base):
    """The daily rollup of `CostEvent` per model version (UTC day ``YYYY-MM-DD``), kept after
    the events are deleted."""

    __tablename__ = "cost_daily"
    __table_args__ = (UniqueConstraint("day", "model_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[str] = mapped_column(String(10))
    model_id: Mapped[str] = mapped_column(String(256))
    version: Mapped[str] = mapped_column(String(64))
    requests: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Float)
    latency_ms_sum: Mapped[float] = mapped_column(Float)


class Budget(Base):
    """A daily spending limit: scope ``global`` or ``model:<model_id>``."""

    __tablename__ = "budgets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(300), unique=True)
    daily_usd: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, onupdate=now)


class EventRecord(Base):
    """One control-plane event (``model_call.*``, ``budget.threshold_crossed``); deleted after
    ``events_retention_days``."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_at", "at"), Index("ix_events_kind", "kind"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[str | None] = mapped_column(String(256))
    version: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class FeedbackRecord(Base):
    """A user's score or label for one answered request, filed under the model version that
    answered it."""

    __tablename__ = "feedback"
    __table_args__ = (
        Index("ix_feedback_model_id_version", "model_id", "version"),
        Index("ix_feedback_request_id", "request_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    request_id: Mapped[str] = mapped_column(String(128))
    model_id: Mapped[str] = mapped_column(String(256))
    version: Mapped[str] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(String(1000))
    actor: Mapped[str] = mapped_column(String(256))


class ApiKey(Base):
    """An API key (revision 0006; host/control/keys.py): its public id and prefix, the SHA-256
    of the whole key (never the key), a role, the models it may use (None: all), and its own
    limits and safety switches (revision 0007)."""

    __tablename__ = "api_keys"
    __table_args__ = (UniqueConstraint("hash"),)

    #: The key's public id, the part after ``hfsk_`` (``hfsk_<id>_<secret>``).
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: What the key starts with, shown by listings: ``hfsk_<id>``.
    prefix: Mapped[str] = mapped_column(String(48))
    #: Hex SHA-256 of the whole key.
    hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    #: ``admin``, ``user`` or ``readonly`` (host/auth.py).
    role: Mapped[str] = mapped_column(String(16))
    #: Model names (or aliases, routes) the key may use; None: every model.
    models: Mapped[list[str] | None] = mapped_column(JSON)
    #: Its own rate limits (revision 0007): ``requests_per_minute``, ``tokens_per_minute``,
    #: ``max_concurrent_requests``, each in place of the server's per-key setting; None: those.
    limits: Mapped[dict[str, int] | None] = mapped_column(JSON)
    #: Safety hooks switched on or off for it, by hook name (``*``: all); None: the defaults.
    safety: Mapped[dict[str, bool] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
