"""The control plane, in the host's own process and persisted in a database: today the model
registry (`registry`) with its audit log, the `gate` the request path asks, the routes
(`routes` the store, `routing` the in-memory choice, `strategies` for ``auto``), and the
accounts (`ledger`: `costs`, `budgets`, `events`, `feedback`, written through the buffered
`writer`). Each part keeps its tables in ``tables.py`` and its alembic revisions in
``migrations/versions``.

`start` connects and migrates (``db.open_database``: `DatabaseUnavailable`, exit 2, when it
cannot), registers the catalog's models, writes the TOML file's routes, and fills the gate's
and the router's snapshots.
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from . import db
from .budgets import Budgets
from .costs import CostBook, Pricing, Throughput
from .db import DatabaseUnavailable
from .events import Events, Webhook
from .feedback import FeedbackBook
from .gate import Gate
from .ledger import Ledger
from .registry import Registry
from .remote import RemoteModels
from .routes import RouteStore
from .routing import Router
from .writer import Writer

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
    #: Cost tracking, budgets, events and feedback; `ledger` is what the request path calls.
    writer: Writer
    costs: CostBook
    budgets: Budgets
    events: Events
    feedback: FeedbackBook
    ledger: Ledger

    @property
    def router(self) -> Router:
        return self.routes.router

    @property
    def gate(self) -> Gate:
        return self.registry.gate

    def close(self) -> None:
        self.writer.close()  # the last buffered rows are written first
        self.events.close()
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
    sessions = db.sessions(engine)
    writer = Writer(engine)
    throughput = Throughput()
    pricing = Pricing(lambda: registry.profiles, throughput, settings.cost_assumed_tokens_per_s)
    costs = CostBook(sessions, writer, settings.cost_events_retention_days, pricing)
    events = Events(sessions, writer, settings.events_retention_days)
    budgets = Budgets(sessions, events, costs.spent_on)
    feedback = FeedbackBook(sessions, costs.answered)
    served_versions = ChainMap(registry.served, registry.remote.versions)  # local and remote
    ledger = Ledger(
        served_versions, registry.ids, pricing, throughput, costs, budgets, events, feedback
    )
    registry.auto.cost_of = ledger.price_per_1k  # a local model's measured price
    if settings.feedback_quality:
        registry.auto.satisfaction = feedback.satisfaction
    try:
        registry.sync_catalog()  # refreshes the gate when it commits
        registry.refresh()
        routes.sync_config(settings.routes)
        routes.refresh()
        budgets.start()
        feedback.start()
    except Exception as error:
        engine.dispose()
        reason = getattr(error, "message", str(error))
        raise DatabaseUnavailable(
            f"database {db.safe(url)} could not register the catalog: {reason}"
        ) from None
    if settings.events_webhook_url:
        events.webhook = Webhook(settings.events_webhook_url, settings.events_webhook_kinds)
    writer.start()
    return ControlPlane(engine, registry, routes, writer, costs, budgets, events, feedback, ledger)
