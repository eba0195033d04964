"""The control plane, in the host's own process and persisted in a database: today the model
registry (`registry`) with its audit log, the `gate` the request path asks, and the routes
(`routes` the store, `routing` the in-memory choice). Later parts
(strategies, costs, budgets, events, bench, switching) add their services here, their tables to
``tables.py`` and their alembic revisions to ``migrations/versions``.

`start` connects and migrates (``db.open_database``: `DatabaseUnavailable`, exit 2, when it
cannot), registers the catalog's models, writes the TOML file's routes, and fills the gate's
and the router's snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from . import db
from .db import DatabaseUnavailable
from .gate import Gate
from .registry import Registry
from .remote import RemoteModels
from .routes import RouteStore
from .routing import Router

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..config import Settings

__all__ = ["ControlPlane", "DatabaseUnavailable", "start"]

#: The version a catalog entry registers under when its ``[[models]]`` table gives none.
DEFAULT_VERSION = "1"


@dataclass
class ControlPlane:
    engine: Engine
    registry: Registry
    routes: RouteStore

    @property
    def router(self) -> Router:
        return self.routes.router

    @property
    def gate(self) -> Gate:
        return self.registry.gate

    def close(self) -> None:
        self.engine.dispose()


def start(settings: Settings, catalog: Catalog) -> ControlPlane:
    """Open the database, register the catalog's models, and fill the gate."""
    url = settings.database_url or db.default_url()
    engine = db.open_database(url)
    versions = {entry.name: entry.version for entry in settings.models}
    served = {
        name: (versions.get(name, DEFAULT_VERSION), list(model.tasks))
        for name, model in catalog.models.items()
    }
    ids = {e.name: e.registered_id for e in settings.models if e.name in catalog.models}
    registry = Registry(engine, served, ids)
    router = Router(
        registry.gate, settings.route_failures_before_cooldown, settings.route_cooldown_s
    )
    routes = RouteStore(registry, lambda name: catalog.names.get(name), router)
    # the registry's openai registrations, served as remote models (remote.py); when one
    # joins or leaves, the routes recompile their targets
    registry.remote = RemoteModels(catalog)
    registry.remote.on_change = routes.refresh
    try:
        registry.sync_catalog()  # refreshes the gate when it commits
        registry.refresh()
        routes.sync_config(settings.routes)
        routes.refresh()
    except Exception as error:
        engine.dispose()
        reason = getattr(error, "message", str(error))
        raise DatabaseUnavailable(
            f"database {db.safe(url)} could not register the catalog: {reason}"
        ) from None
    return ControlPlane(engine, registry, routes)
