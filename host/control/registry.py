"""The model registry: which models and versions exist, in which state, what they cost and
score; every change audited in the same transaction.

`Registry` is the service the routes call (in a thread: it is synchronous SQLAlchemy). Writes
are serialised in this process and followed by a refresh of the `Gate` snapshot, which is all
the request path reads. At start the catalog's models register themselves (`sync_catalog`):
provider ``local``, status ``active``, the tasks they serve; an existing registration keeps its
status, tags, cost and quality, and the catalog updates its tasks only while no operator has set
them over HTTP (``operator_fields``). A catalog entry registers as its ``model_id`` (default:
its served name) at its version, so several entries may be versions of one model: ``served``
and ``served_tasks`` are keyed by served name, ``ids`` maps a served name to its model_id and
``keys`` a (model_id, version) to the served name.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from hfskills.skillset.runtime.errors import HFSkillsError

from ..protocol.registry import (
    AuditEntryOut,
    Cost,
    ModelPatch,
    RegisteredModelOut,
    Registration,
)
from . import db, strategies
from .gate import Gate
from .tables import AuditEntry, RegisteredModel, now

if TYPE_CHECKING:
    from .remote import RemoteModels

log = logging.getLogger("hfskills.host")

#: Who changed the registry when no user is known (auth arrives with issue 13).
ANONYMOUS = "anonymous"
CATALOG = "catalog"
COST_FIELDS = tuple(Cost.model_fields)
#: Most audit rows one request may read.
MAX_AUDIT = 1000


class NotRegistered(HFSkillsError):
    code = "model_not_found"
    status = 404


class Invalid(HFSkillsError):
    code = "invalid_value"
    status = 400


class Conflict(HFSkillsError):
    code = "conflict"
    status = 409


class RegistryUnavailable(HFSkillsError):
    code = "registry_unavailable"
    status = 503


class Registry:
    def __init__(
        self,
        engine: Engine,
        served: dict[str, tuple[str, list[str]]],
        ids: dict[str, str] | None = None,
    ) -> None:
        """``served``: this host's catalog, model name -> (the version it serves, its tasks);
        ``ids``: model name -> the model_id it registers under (default: the name)."""
        self.engine, self.sessions = engine, db.sessions(engine)
        self.served = {name: version for name, (version, _) in served.items()}
        self.served_tasks = {name: list(tasks) for name, (_, tasks) in served.items()}
        self.ids = {name: (ids or {}).get(name, name) for name in served}
        #: (model_id, version) -> the served name of that registration
        self.keys = {(self.ids[name], version): name for name, version in self.served.items()}
        self.gate = Gate()
        #: The ``openai`` registrations, served as remote models (remote.py): each refresh
        #: hands them over; None until the control plane's start sets it.
        self.remote: RemoteModels | None = None
        #: served model -> (provider, cost profile): what costs.Pricing prices calls by.
        self.profiles: dict[str, tuple[str, Cost]] = {}
        #: ``model: "auto"`` (strategies.py): active served models, from memory.
        self.auto = strategies.Auto(self.served_tasks)
        self._write = threading.Lock()

    # -- reads -------------------------------------------------------------------------------

    def list_models(
        self, status: str | None = None, task: str | None = None, provider: str | None = None
    ) -> list[RegisteredModelOut]:
        query = select(RegisteredModel).order_by(RegisteredModel.model_id, RegisteredModel.id)
        if status is not None:
            query = query.where(RegisteredModel.status == status)
        if provider is not None:
            query = query.where(RegisteredModel.provider == provider)
        with self._session() as session:  # read inside: the session's end expires the rows
            rows = session.scalars(query).all()
            return [self.out(r) for r in rows if task is None or task in r.task_types]

    def get(self, model_id: str, version: str | None = None) -> RegisteredModelOut:
        with self._session() as session:
            return self.out(self._row(session, model_id, version))

    def audit(
        self, limit: int = 100, model_id: str | None = None, kind: str | None = None
    ) -> list[AuditEntryOut]:
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(min(limit, MAX_AUDIT))
        if model_id is not None:
            query = query.where(AuditEntry.model_id == model_id)
        if kind is not None:
            query = query.where(AuditEntry.kind == kind)
        with self._session() as session:
            rows = session.scalars(query).all()
            return [AuditEntryOut.model_validate(r, from_attributes=True) for r in rows]

    # -- writes ------------------------------------------------------------------------------

    def register(self, body: Registration, actor: str) -> tuple[RegisteredModelOut, bool]:
        """Register ``body.model_id`` at ``body.version``, or update the fields the body gives;
        (the record, True when it was created)."""
        given = set(body.model_fields_set) - {"model_id", "version"}
        values = _values(body, given)
        with self._writing() as session:
            row = session.scalars(_one(body.model_id, body.version)).first()
            created = row is None
            before = None if created else _record(row)
            if row is None:
                at = now()
                row = RegisteredModel(
                    model_id=body.model_id,
                    version=body.version,
                    source="api",
                    operator_fields=[],
                    created_at=at,
                    updated_at=at,
                )
                values = _values(body, set(Registration.model_fields), full=True)
                name = self.keys.get((body.model_id, body.version))
                if "task_types" not in given and name is not None:
                    values["task_types"] = self.served_tasks[name]  # the catalog's
                session.add(row)
            for key, value in values.items():
                if getattr(row, key, None) != value:
                    setattr(row, key, value)
            fields = set(row.operator_fields or ()) | given
            if fields != set(row.operator_fields or ()):
                row.operator_fields = sorted(fields)
            self._check(row)
            session.flush()
            after = _record(row)
            if _changed(before, after):
                action = "register" if created else "update"
                session.add(_audit(actor, action, row, before, after))
            return self.out(row), created

    def patch(
        self, model_id: str, version: str | None, body: ModelPatch, actor: str
    ) -> RegisteredModelOut:
        given = set(body.model_fields_set)
        with self._writing() as session:
            row = self._row(session, model_id, version)
            before = _record(row)
            if "status" in given:
                row.status = body.status  # type: ignore[assignment]  # not None: validated
            if body.tags is not None:
                row.tags = body.tags
            if body.cost is not None:
                for key in body.cost.model_fields_set:
                    setattr(row, key, getattr(body.cost, key))
            if body.quality is not None:
                merged = {**row.quality, **body.quality}
                row.quality = {k: v for k, v in merged.items() if v is not None}
            if set(row.operator_fields) | given != set(row.operator_fields):
                row.operator_fields = sorted(set(row.operator_fields) | given)
            session.flush()
            after = _record(row)
            if _changed(before, after):
                session.add(_audit(actor, "patch", row, before, after))
            return self.out(row)

    def delete(self, model_id: str, version: str | None, actor: str) -> RegisteredModelOut:
        with self._writing() as session:
            row = self._row(session, model_id, version)
            out = self.out(row)
            session.add(_audit(actor, "delete", row, _record(row), None))
            session.execute(delete(RegisteredModel).where(RegisteredModel.id == row.id))
            return out

    def sync_catalog(self) -> None:
        """Register each catalog model that is not registered; update the tasks of one that is,
        unless an operator set them over HTTP."""
        with self._writing() as session:
            for name, version in self.served.items():
                tasks, model_id = self.served_tasks[name], self.ids[name]
                row = session.scalars(_one(model_id, version)).first()
                if row is None:
                    at = now()
                    row = RegisteredModel(
                        created_at=at,
                        updated_at=at,
                        model_id=model_id,
                        version=version,
                        provider="local",
                        task_types=list(tasks),
                        status="active",
                        tags=[],
                        quality={},
                        source="catalog",
                        operator_fields=[],
                    )
                    session.add(row)
                    session.flush()
                    session.add(_audit(CATALOG, "catalog.register", row, None, _record(row)))
                    continue
                if row.provider != "local":
                    log.warning(
                        "registry: %s version %s is registered with provider %s; this host "
                        "serves it from its catalog",
                        model_id,
                        version,
                        row.provider,
                    )
                if "task_types" not in row.operator_fields and row.task_types != list(tasks):
                    before = _record(row)
                    row.task_types = list(tasks)
                    session.flush()
                    session.add(_audit(CATALOG, "catalog.update", row, before, _record(row)))

    def refresh(self) -> None:
        """Rebuild the gate's and `auto`'s snapshots from the database (after every write, and
        at start)."""
        with self._session() as session:
            records = [
                self.out(r)
                for r in session.scalars(
                    select(RegisteredModel).where(
                        RegisteredModel.model_id.in_(sorted(set(self.ids.values())))
                    )
                )
            ]
        # remote models join, change or leave the catalog (remote.py); the gate holds them too
        remote = self.remote.update(self._openai()) if self.remote is not None else {}
        rows = [(r.model_id, r.version, r.status) for r in records]
        local = {
            self.keys[(r.model_id, r.version)]: (r.provider, r.cost) for r in records if r.served
        }
        self.profiles = local | {n: (r.provider, r.cost) for n, r in remote.items()}
        active = {
            self.keys[(r.model_id, r.version)]: r
            for r in records
            if r.served and r.status == "active"
        }
        self.auto.update(
            {name: strategies.candidate(r, {}) for name, r in active.items()},
            frozenset(name for name, r in active.items() if strategies.SAFE_TAG in r.tags),
        )
        statuses = {(m, v): s for m, v, s in rows}
        self.gate.update(
            {name: (r.version, r.status) for name, r in remote.items()}
            | {
                name: (version, statuses[(self.ids[name], version)])
                for name, version in self.served.items()
                if (self.ids[name], version) in statuses
            }
        )

    # -- helpers -----------------------------------------------------------------------------

    def _openai(self) -> list[RegisteredModelOut]:
        """Every registration with provider ``openai``."""
        query = select(RegisteredModel).where(RegisteredModel.provider == "openai")
        with self._session() as session:
            return [self.out(r) for r in session.scalars(query)]

    def version(self, name: str) -> str | None:
        """The version a served model serves: its catalog entry's, or its remote
        registration's (remote.py); None when this host serves no model of that name."""
        if name in self.served:
            return self.served[name]
        return self.remote.versions.get(name) if self.remote is not None else None

    def out(self, row: RegisteredModel) -> RegisteredModelOut:
        return RegisteredModelOut(
            **_record(row, json=False),
            served=(row.model_id, row.version) in self.keys,
        )

    def _check(self, row: RegisteredModel) -> None:
        """The registration that results from a write is consistent."""
        if row.provider == "openai" and not (row.base_url and row.task_types):
            raise Invalid(
                "provider openai needs base_url (the remote endpoint) and task_types (the tasks "
                "it serves)",
                param="base_url" if not row.base_url else "task_types",
            )
        if row.provider == "local" and (row.base_url or row.api_key_env):
            raise Invalid(
                "base_url and api_key_env are for provider openai only",
                param="base_url" if row.base_url else "api_key_env",
            )
        if (row.model_id, row.version) in self.keys and row.provider != "local":
            raise Conflict(
                f"model {row.model_id!r} version {row.version} is served by this host's catalog "
                "as a local model; register the remote endpoint under another model_id or version",
                param="provider",
            )

    def _row(self, session: Session, model_id: str, version: str | None) -> RegisteredModel:
        query = select(RegisteredModel).where(RegisteredModel.model_id == model_id)
        if version is not None:
            query = query.where(RegisteredModel.version == version)
        row = session.scalars(query.order_by(RegisteredModel.id.desc()).limit(1)).first()
        if row is None:
            which = f"model {model_id!r}" + (f" version {version!r}" if version else "")
            raise NotRegistered(
                f"{which} is not registered; GET /api/models lists the registered models",
                param="model_id",
            )
        return row

    def _session(self) -> _Guarded:
        return _Guarded(self, write=False)

    def _writing(self) -> _Guarded:
        return _Guarded(self, write=True)


class _Guarded:
    """A session (a transaction when writing: committed at the end, rolled back on error, and
    the gate refreshed after a commit); database failures become clear HTTP errors."""

    def __init__(self, registry: Registry, *, write: bool) -> None:
        self.registry, self.write = registry, write
        self.session: Session | None = None

    def __enter__(self) -> Session:
        if self.write:
            self.registry._write.acquire()
        self.session = self.registry.sessions()
        self.session.begin()
        return self.session

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        assert self.session is not None
        try:
            if error is None and self.write:
                self.session.commit()
            else:
                self.session.rollback()
        except sa_exc.SQLAlchemyError as commit_error:
            error = commit_error
            self.session.rollback()
        finally:
            self.session.close()
            if self.write:
                self.registry._write.release()
        if error is None and self.write:
            self.registry.refresh()
        if isinstance(error, sa_exc.IntegrityError):
            raise Conflict(
                "the registration changed concurrently (another writer); retry the request"
            ) from None
        if isinstance(error, sa_exc.DataError):
            raise HFSkillsError(
                f"the database refused a value: {str(error.orig).strip().splitlines()[0]}",
                code="invalid_value",
                status=400,
            ) from None
        if isinstance(error, sa_exc.SQLAlchemyError):
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            raise RegistryUnavailable(f"the registry database failed: {reason}") from None


def _one(model_id: str, version: str) -> Any:
    return select(RegisteredModel).where(
        RegisteredModel.model_id == model_id, RegisteredModel.version == version
    )


def _values(body: Registration, fields: set[str], *, full: bool = False) -> dict[str, Any]:
    """The columns that the registration's ``fields`` set. ``cost`` is three columns: a new
    registration (``full``) sets all three, an update those the body gives."""
    values: dict[str, Any] = {}
    for field in fields - {"model_id", "version"}:
        if field == "cost":
            keys = COST_FIELDS if full else body.cost.model_fields_set
            values.update({key: getattr(body.cost, key) for key in keys})
        else:
            values[field] = getattr(body, field)
    return values


def _record(row: RegisteredModel, *, json: bool = True) -> dict[str, Any]:
    """A registration as the API shows it (JSON-ready for the audit log when ``json``)."""
    record = {
        "model_id": row.model_id,
        "version": row.version,
        "provider": row.provider,
        "base_url": row.base_url,
        "api_key_env": row.api_key_env,
        "task_types": list(row.task_types),
        "status": row.status,
        "tags": list(row.tags),
        "cost": {key: getattr(row, key) for key in COST_FIELDS},
        "quality": dict(row.quality),
        "source": row.source,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }
    if json:  # as the API writes them: 2026-11-29T17:10:04.813987Z
        for key in ("created_at", "updated_at"):
            record[key] = record[key].isoformat().replace("+00:00", "Z")
    return record


def _changed(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    """Whether a write changed what the API shows (a new ``updated_at`` alone is no change)."""
    if before is None:
        return True
    return {**before, "updated_at": None} != {**after, "updated_at": None}


def _audit(
    actor: str,
    action: str,
    row: RegisteredModel,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> AuditEntry:
    return AuditEntry(
        actor=actor,
        action=action,
        model_id=row.model_id,
        version=row.version,
        before=before,
        after=after,
    )
