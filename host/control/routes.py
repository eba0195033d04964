"""The routes' store: ``routes`` rows, written and audited like the registry, and compiled into
the `Router`'s in-memory snapshot after every write.

A route's targets and fallbacks must be models this host serves (a name or alias, ``@version``
the version it serves, or ``model_id@version``: `resolve`), neither retired nor deprecated, and
its name must not be a served model's name or alias. ``[[routes]]`` tables of the TOML file are
written at start (`sync_config`, actor ``config``): the file wins over changes made over HTTP
since the last start. Every change writes an ``audit_log`` row (kind ``route``) in the same
transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select

from hfskills.skillset.runtime.errors import HFSkillsError

from ..protocol.routes import (
    RESERVED_ROUTES,
    Challenger,
    RouteBody,
    RouteEntry,
    RouteOut,
    TargetOut,
)
from .registry import Conflict, Invalid, Registry
from .routing import Plan, Router
from .tables import AuditEntry, Route, now

log = logging.getLogger("hfskills.host")

CONFIG = "config"


class RouteNotFound(HFSkillsError):
    code = "route_not_found"
    status = 404


class RouteStore:
    def __init__(
        self, registry: Registry, lookup: Callable[[str], str | None], router: Router
    ) -> None:
        """``lookup``: a served model's name or alias -> its name (None: not served)."""
        self.registry, self.lookup, self.router = registry, lookup, router

    # -- reads -------------------------------------------------------------------------------

    def list(self) -> list[RouteOut]:
        with self.registry._session() as session:
            return [_out(r) for r in session.scalars(select(Route).order_by(Route.name))]

    def get(self, name: str) -> RouteOut:
        with self.registry._session() as session:
            return _out(self._row(session, name))

    # -- writes ------------------------------------------------------------------------------

    def put(
        self,
        name: str,
        body: RouteBody,
        actor: str,
        source: str = "api",
        action: str | None = None,
    ) -> tuple[RouteOut, bool]:
        """Create or replace the route ``name``; (the route, True when it was created).
        ``action``: the audit row's (default ``route.put``, ``config.put`` from the file)."""
        self.compile(name, body)  # refuses what could not be routed, before any write
        targets = [t.model_dump() for t in body.targets]
        with self.registry._writing() as session:
            row = session.scalars(select(Route).where(Route.name == name)).first()
            created = row is None
            before = None if row is None else _record(row)
            if row is None:
                at = now()
                row = Route(name=name, created_at=at, updated_at=at)
                session.add(row)
            row.targets, row.fallbacks, row.source = targets, list(body.fallbacks), source
            row.challenger = body.challenger.model_dump() if body.challenger else None
            session.flush()
            after = _record(row)
            if before is None or {**before, "updated_at": None} != {**after, "updated_at": None}:
                action = action or ("config.put" if source == CONFIG else "route.put")
                session.add(_audit(actor, action, name, before, after))
            out = _out(row)
        self.refresh()
        return out, created

    def delete(self, name: str, actor: str) -> RouteOut:
        with self.registry._writing() as session:
            row = self._row(session, name)
            out = _out(row)
            session.add(_audit(actor, "route.delete", name, _record(row), None))
            session.execute(delete(Route).where(Route.id == row.id))
        self.refresh()
        return out

    def sync_config(self, entries: list[RouteEntry]) -> None:
        """Write the TOML file's routes; one that cannot be routed is logged and left out."""
        for entry in entries:
            body = RouteBody(
                targets=entry.targets, fallbacks=entry.fallbacks, challenger=entry.challenger
            )
            try:
                self.put(entry.name, body, CONFIG, source=CONFIG)
            except (Invalid, Conflict) as error:
                log.error("route %s from the config file is not served: %s", entry.name, error)

    def refresh(self) -> None:
        """Rebuild the router's snapshot from the database (after every write, and at start).
        A stored route whose targets are no longer served keeps the targets that are."""
        plans: dict[str, Plan] = {}
        with self.registry._session() as session:
            rows = [
                (r.name, list(r.targets), list(r.fallbacks), r.challenger)
                for r in session.scalars(select(Route))
            ]
        for name, targets, fallbacks, challenger in rows:
            weighted = [(self.resolve(t["model"]), t["weight"]) for t in targets]
            kept = [(served, w) for served, w in weighted if served is not None]
            if not kept:
                log.error("route %s: none of its targets is served here; not routed", name)
                continue
            chain = [s for s in (self.resolve(f) for f in fallbacks) if s is not None]
            shadow = self.resolve(challenger["model"]) if challenger else None
            sample = (shadow, float(challenger["sample"])) if shadow and challenger else None
            plans[name] = Plan.of(name, kept, chain, sample)
        self.router.update(plans)

    # -- checks ------------------------------------------------------------------------------

    def compile(self, name: str, body: RouteBody) -> Plan:
        """The route as the router will use it, or a clear 4xx for what could not be routed."""
        if name in RESERVED_ROUTES:
            raise Invalid(f"{name!r} is reserved and cannot name a route", param="name")
        if self.lookup(name) is not None:
            raise Conflict(
                f"{name!r} is a served model's name or alias; a route needs a name of its own",
                param="name",
            )
        weighted = [
            (self._target(t.model, f"targets[{i}].model"), t.weight)
            for i, t in enumerate(body.targets)
        ]
        served = [s for s, _ in weighted]
        repeated = sorted({s for s in served if served.count(s) > 1})
        if repeated:
            raise Invalid(
                f"targets name the model {repeated[0]!r} twice (names and aliases of one model)",
                param="targets",
            )
        chain = [self._target(f, f"fallbacks[{i}]") for i, f in enumerate(body.fallbacks)]
        shadow = None
        if body.challenger is not None:
            shadow = (
                self._target(body.challenger.model, "challenger.model"),
                body.challenger.sample,
            )
        return Plan.of(name, weighted, chain, shadow)

    def resolve(self, target: str) -> str | None:
        """The served model a target names, None when this host serves none: a served name or
        alias; ``name@version``, the version that name serves; or ``model_id@version``, the
        catalog entry that registers as that version of that model (``summarizer@2``; also
        reached from another version's name: ``summarizer-v1@2``)."""
        name, _, version = target.partition("@")
        served = self.lookup(name)
        if not version or (served is not None and self.registry.version(served) == version):
            return served
        model_id = self.registry.ids.get(served, served) if served is not None else name
        return self.registry.keys.get((model_id, version))

    def _target(self, target: str, param: str) -> str:
        name, _, version = target.partition("@")
        found = self.resolve(target)
        if found is None:
            model_id = self.registry.ids.get(self.lookup(name) or "", name)
            versions = sorted(v for m, v in self.registry.keys if m == model_id)
            serving = self.registry.version(self.lookup(name) or name)
            if not versions and serving is not None:  # a remote model: one version
                versions = [serving]
            if not versions:
                raise Invalid(
                    f"{param}: model {name!r} is not served by this host; GET /v1/models lists "
                    "the served models",
                    param=param,
                )
            if not version:  # a model_id that is no served name: which version?
                raise Invalid(
                    f"{param}: {name!r} is a model served here at versions {versions}; name one "
                    f"as {name}@VERSION",
                    param=param,
                )
            raise Invalid(
                f"{param}: this host serves {name!r} at version{'s' * (len(versions) > 1)} "
                f"{', '.join(versions)}, not {version}",
                param=param,
            )
        served = found
        status = self.registry.gate.status(served)
        if status is not None:
            raise Invalid(
                f"{param}: model {served!r} is {status}; routes never send requests to a "
                f"{status} model (a request may still name a deprecated one)",
                param=param,
            )
        return served

    def _row(self, session: Any, name: str) -> Route:
        row = session.scalars(select(Route).where(Route.name == name)).first()
        if row is None:
            raise RouteNotFound(
                f"route {name!r} does not exist; GET /api/routes lists the routes", param="name"
            )
        return row


def _record(row: Route) -> dict[str, Any]:
    return {
        "name": row.name,
        "targets": [dict(t) for t in row.targets],
        "fallbacks": list(row.fallbacks),
        "challenger": dict(row.challenger) if row.challenger else None,
        "source": row.source,
        "created_at": row.created_at.isoformat().replace("+00:00", "Z"),
        "updated_at": row.updated_at.isoformat().replace("+00:00", "Z"),
    }


def _out(row: Route) -> RouteOut:
    total = sum(t["weight"] for t in row.targets)
    return RouteOut(
        name=row.name,
        targets=[TargetOut(**t, share=round(t["weight"] / total, 6)) for t in row.targets],
        fallbacks=list(row.fallbacks),
        challenger=Challenger(**row.challenger) if row.challenger else None,
        source=row.source,  # type: ignore[arg-type]
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _audit(
    actor: str, action: str, name: str, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> AuditEntry:
    return AuditEntry(
        actor=actor,
        kind="route",
        action=action,
        model_id=name,
        version="",
        before=before,
        after=after,
    )
