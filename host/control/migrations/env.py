"""alembic's environment: migrate the connection that `hfskills.host.control.db` passes in
(``config.attributes["connection"]``) to the schema of `hfskills.host.control.tables`."""

from __future__ import annotations

from typing import Any

from alembic import context

from hfskills.host.control.tables import Base, UTCDateTime


def render_item(kind: str, item: Any, autogen_context: Any) -> str | bool:
    """Revisions spell the plain column types: they never import the application's."""
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through hfskills.host.control.db (upgrade, revision), which passes the "
        "connection; there is no alembic.ini"
    )
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
    compare_type=True,
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()
