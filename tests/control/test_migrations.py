"""The control plane's schema: alembic migrations on an empty database, idempotent, matching
the ORM (`alembic check`), reversible; and shipped inside the package, not only the checkout.
Each test runs on SQLite and on a real PostgreSQL (conftest.py)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect

from hfskills.host.control import db

from .conftest import BACKENDS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKENDS)
def url(request, fresh_database) -> str:
    return fresh_database(request.param)


def test_migrations_on_an_empty_database_and_idempotent(url) -> None:
    engine = db.open_database(url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"registered_models", "audit_log", "alembic_version"} <= tables
        with engine.connect() as connection:
            assert db.current(connection) == db.head()
        db.upgrade(engine)  # again: nothing to do
        engine.dispose()
        engine = db.open_database(url)  # a restart: nothing to do either
        with engine.begin() as connection:
            assert db.current(connection) == db.head()
            command.check(db.alembic_config(connection))  # the revisions match tables.py
            command.downgrade(db.alembic_config(connection), "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        db.upgrade(engine)
        assert {"registered_models", "audit_log"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_migrations_ship_with_the_package() -> None:
    """alembic finds env.py and the revisions as package data of the installed package, and
    pyproject.toml lists every package folder of the control plane."""
    migrations = resources.files("hfskills.host.control") / "migrations"
    assert (migrations / "env.py").is_file() and (migrations / "script.py.mako").is_file()
    assert any(p.name.endswith(".py") for p in (migrations / "versions").iterdir())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        p.parent for p in (ROOT / "host" / "control").rglob("*.py") if "__pycache__" not in p.parts
    }
    for folder in folders:
        name = "hfskills.host." + ".".join(folder.relative_to(ROOT / "host").parts)
        assert name in project["packages"], name
        assert project["package-dir"][name] == folder.relative_to(ROOT).as_posix()
    assert "script.py.mako" in project["package-data"]["hfskills.host.control.migrations"]
