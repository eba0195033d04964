"""API keys: made here, stored hashed, listed and revoked; checked from memory (host/auth.py).

A key is ``hfsk_<id>_<secret>``: ``id`` is 12 hex characters, public (listings, revocation,
the audit actor ``key:<id>``); ``secret`` is `secrets.token_urlsafe(32)`, 256 random bits. The
``api_keys`` table keeps the id, the prefix ``hfsk_<id>``, and the hex SHA-256 of the whole
key, never the key itself: it is shown once, when it is created.

Why one SHA-256 and not a password hash (argon2, scrypt, bcrypt): slow hashes protect secrets
that people choose, which an attacker holding the table can guess word by word. A 256-bit
random secret cannot be guessed at any hashing speed (2^256 candidates), so a fast hash is as
safe, and costs a microsecond per request instead of the tens of milliseconds and megabytes of
memory a password hash is tuned to cost. Digests are compared in constant time
(`hmac.compare_digest`).

A key may carry its own rate limits (``requests_per_minute``, ``tokens_per_minute``,
``max_concurrent_requests``: each replaces the server's per-key setting for this key, higher or
lower; host/limits.py) and safety switches (hook name -> on; host/safety/), set when it is
created and changed with `update`.

Revoking sets ``revoked_at``; the row stays (listings and audits keep naming it). The request
path never reads this table: `active` fills the authenticator's snapshot, which the control
plane's writer thread reloads every ``auth_keys_refresh_s`` (and this process's
``/api/keys`` at once after a change); `touch` writes ``last_used_at`` from the same thread.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from hfskills.skillset.runtime.errors import HFSkillsError

from . import db
from .tables import ApiKey, now

#: Roles, weakest first (host/auth.py orders them).
ROLES = ("readonly", "user", "admin")
PREFIX = "hfsk_"
_KEY = re.compile(r"^hfsk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class UnknownKey(HFSkillsError):
    code = "key_not_found"
    status = 404


class RevokedKey(HFSkillsError):
    code = "key_revoked"
    status = 409


@dataclass(frozen=True)
class KeyRecord:
    """One key as listed: everything but its hash."""

    id: str
    prefix: str
    name: str
    role: str
    #: Model names the key may use; None: every model.
    models: tuple[str, ...] | None
    #: Its own limits (host/limits.py's `LIMIT_NAMES`); None: the server's.
    limits: dict[str, int] | None
    #: Safety hooks switched for it (host/safety/); None: every hook at its default.
    safety: dict[str, bool] | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyRecord:
        models = tuple(row.models) if row.models is not None else None
        return cls(
            row.id,
            row.prefix,
            row.name,
            row.role,
            models,
            dict(row.limits) if row.limits else None,
            dict(row.safety) if row.safety else None,
            row.created_at,
            row.revoked_at,
            row.last_used_at,
        )

    def out(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prefix": self.prefix,
            "name": self.name,
            "role": self.role,
            "models": list(self.models) if self.models is not None else None,
            "limits": self.limits,
            "safety": self.safety,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
        }


def digest(key: str) -> str:
    """The hex SHA-256 the table keeps of ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id(key: str) -> str | None:
    """The id of a well-formed key, else None."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def new_key() -> tuple[str, str]:
    """(id, key): a fresh key and its public id."""
    ident = secrets.token_hex(6)
    return ident, f"{PREFIX}{ident}_{secrets.token_urlsafe(32)}"


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        self.sessions = db.sessions(engine)

    def create(
        self,
        name: str,
        role: str,
        models: list[str] | None = None,
        limits: dict[str, int] | None = None,
        safety: dict[str, bool] | None = None,
    ) -> tuple[KeyRecord, str]:
        """A new key: its record and the key itself (shown to the caller once, never kept)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {list(ROLES)}")
        ident, key = new_key()
        row = ApiKey(
            id=ident,
            prefix=f"{PREFIX}{ident}",
            hash=digest(key),
            name=name,
            role=role,
            models=list(dict.fromkeys(models)) if models is not None else None,
            limits=limits or None,
            safety=safety or None,
            created_at=now(),
        )
        with db.transaction(self.sessions) as session:
            session.add(row)
            session.flush()
            return KeyRecord.of(row), key

    def records(self) -> list[KeyRecord]:
        """Every key, revoked ones too, oldest first."""
        with db.transaction(self.sessions) as session:
            rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))
            return [KeyRecord.of(row) for row in rows]

    def update(self, ident: str, changes: dict[str, Any]) -> KeyRecord:
        """Change a key's ``name``, ``role``, ``models``, ``limits`` or ``safety`` (the keys of
        ``changes``; a None value clears ``models``, ``limits`` or ``safety``). A revoked key
        cannot change; `UnknownKey` when there is none."""
        unknown = set(changes) - {"name", "role", "models", "limits", "safety"}
        if unknown:
            raise ValueError(f"an API key has no field {sorted(unknown)[0]!r}")
        if "role" in changes and changes["role"] not in ROLES:
            raise ValueError(f"role must be one of {list(ROLES)}")
        with db.transaction(self.sessions) as session:
            row = session.get(ApiKey, ident)
            if row is None:
                raise UnknownKey(f"no API key has the id {ident!r} (hfskills keys list)")
            if row.revoked_at is not None:
                raise RevokedKey(f"API key {ident!r} is revoked: it cannot change")
            for field, value in changes.items():
                if field in ("limits", "safety"):
                    value = value or None  # {} clears, as null does
                setattr(row, field, value)
            session.flush()
            return KeyRecord.of(row)

    def revoke(self, ident: str) -> KeyRecord:
        """Revoke a key by id (again: nothing changes); `UnknownKey` when there is none."""
        with db.transaction(self.sessions) as session:
            row = session.get(ApiKey, ident)
            if row is None:
                raise UnknownKey(f"no API key has the id {ident!r} (hfskills keys list)")
            if row.revoked_at is None:
                row.revoked_at = now()
            session.flush()
            return KeyRecord.of(row)

    @staticmethod
    def active(session: Session) -> dict[str, tuple[str, KeyRecord]]:
        """id -> (hash, record) of every key not revoked: the authenticator's snapshot."""
        rows = session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)))
        return {row.id: (row.hash, KeyRecord.of(row)) for row in rows}

    @staticmethod
    def touch(session: Session, uses: list[tuple[str, datetime]]) -> None:
        """Write ``last_used_at``: the latest use of each key among ``uses``."""
        latest: dict[str, datetime] = {}
        for ident, at in uses:
            latest[ident] = max(at, latest.get(ident, at))
        for ident, at in latest.items():
            session.execute(update(ApiKey).where(ApiKey.id == ident).values(last_used_at=at))
