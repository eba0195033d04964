"""The control plane's database: the engine from ``database_url``, sessions, and the alembic
migrations, run at start (`open_database`).

SQLite by default (a file in the host's state directory, `default_url`); PostgreSQL by URL
(``postgresql+psycopg://user:password@host/db``). A database that cannot be reached or migrated
at start raises `DatabaseUnavailable`: one line, and ``hfskills serve`` exits 2.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, exc, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from hfskills.skillset.runtime.errors import HFSkillsError

log = logging.getLogger("hfskills.host")

#: Where alembic finds env.py and the revisions: inside the installed package.
SCRIPT_LOCATION = "hfskills.host.control:migrations"
#: Seconds a PostgreSQL connection attempt may take before start-up gives up.
CONNECT_TIMEOUT_S = 5
#: Serialises concurrent migrations of one PostgreSQL database (several hosts starting at once).
_MIGRATION_LOCK = 0x6866736B  # "hfsk"


class DatabaseUnavailable(HFSkillsError):
    """The database cannot be reached or migrated: ``hfskills serve`` exits 2 with one line."""

    code = "database_unavailable"
    status = 503
    exit_code = 2


def state_dir() -> Path:
    """The host's state directory: ``$XDG_STATE_HOME/hfskills``, else
    ``~/.local/state/hfskills``. State, unlike ``$HFSKILLS_CACHE``, is not safe to delete."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "hfskills"


def default_url() -> str:
    return f"sqlite:///{state_dir() / 'control.db'}"


def safe(url: str) -> str:
    """``url`` with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return url


def create(url: str) -> Engine:
    """An engine for ``url``: SQLite waits for a busy file rather than failing; PostgreSQL gives
    up connecting after `CONNECT_TIMEOUT_S`."""
    parsed = make_url(url)
    args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        args["timeout"] = 30
        database = parsed.database
        if database and database != ":memory:" and url == default_url():
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    elif parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        args["connect_timeout"] = CONNECT_TIMEOUT_S
    engine = create_engine(url, connect_args=args, pool_pre_ping=True)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(connection: Any, record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.close()


def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(connection: Connection | None = None) -> Config:
    """alembic's configuration without an ini file; env.py migrates ``connection``."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except Exception:  # alembic's ResolutionError and friends: not one of ours
        return False


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Migrate the database to the newest revision (nothing to do when it is there already)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line of ours instead
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        before, newest = current(connection), head()
        if before == newest:
            return
        if before is not None and not _known(before):
            raise DatabaseUnavailable(
                f"database {safe(engine.url.render_as_string(hide_password=False))} is at "
                f"revision {before}, which this hfskills does not know (its newest is {newest}): "
                "a newer hfskills wrote it. Upgrade hfskills, or set database_url "
                "(HFSKILLS_DATABASE_URL) to another database"
            )
        command.upgrade(alembic_config(connection), "head")
    log.info(
        "migrated the control plane's database %s from revision %s to %s",
        safe(engine.url.render_as_string(hide_password=False)),
        before or "(empty)",
        newest,
    )


def open_database(url: str) -> Engine:
    """Connect and migrate; `DatabaseUnavailable` (one line) when either fails."""
    where = safe(url)
    try:
        engine = create(url)
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as error:
        raise DatabaseUnavailable(f"database_url {where!r} is not usable: {error}") from None
    try:
        upgrade(engine)
    except DatabaseUnavailable:
        engine.dispose()
        raise
    except exc.DBAPIError as error:
        engine.dispose()
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise DatabaseUnavailable(f"database {where} is unreachable: {reason}") from None
    except Exception as error:  # alembic: a revision this version does not know, and so on
        engine.dispose()
        reason = str(error).strip().splitlines()[0]
        raise DatabaseUnavailable(f"database {where} could not be migrated: {reason}") from None
    return engine


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One session, committed when the block ends and rolled back when it raises."""
    with factory.begin() as session:
        yield session


def revision(message: str) -> None:
    """Write a new revision from the difference between `tables` and the newest revision
    (for developers: run from a checkout, it writes into ``migrations/versions``)."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        engine = create(f"sqlite:///{scratch}/scratch.db")
        upgrade(engine)
        with engine.begin() as connection:
            command.revision(alembic_config(connection), message, autogenerate=True)
        engine.dispose()
