"""The control plane's databases for tests: a SQLite file always, and a real PostgreSQL.

`postgres` starts Debian's PostgreSQL (``/usr/lib/postgresql/*/bin``: initdb, pg_ctl) once per
session on a temporary data directory, listening on 127.0.0.1 at a free port, and stops it at
the end. Without those binaries its tests skip with the reason (``apt-get install
postgresql``), unless ``HFSKILLS_TEST_STRICT=1`` and ``HFSKILLS_TEST_POSTGRES=1`` ask for them:
then they fail. `fresh_database` gives each requester a fresh, empty database on either backend.

The fixtures are the session's, for every test folder (tests/conftest.py imports them): one
PostgreSQL serves tests/control and tests/host alike. A test runs on both backends with
``params=BACKENDS`` (or ``@pytest.mark.parametrize("backend", BACKENDS)``) and
``fresh_database(backend)``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

BACKENDS = ["sqlite", "postgresql"]

#: Seconds PostgreSQL may take to start or stop.
PG_TIMEOUT_S = 60


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian's layout), else None."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user then, with
    util-linux's runuser (in /usr/sbin, which a PATH without the sbin folders misses)."""
    if os.geteuid() == 0:
        search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
        runuser = shutil.which("runuser", path=search) or "runuser"
        return [runuser, "-u", "postgres", "--", *command]
    return command


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A running PostgreSQL's server URL (database ``postgres``, user ``hfskills``, trust)."""
    bindir = postgres_bin()
    if bindir is None:
        reason = (
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; "
            "apt-get install postgresql)"
        )
        strict = os.environ.get("HFSKILLS_TEST_STRICT") == "1"
        if strict and os.environ.get("HFSKILLS_TEST_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="hfskills-pg-"))
    data, log = root / "data", root / "server.log"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = _free_port()

    def run(*command: str) -> None:
        subprocess.run(
            _as_postgres([str(bindir / command[0]), *command[1:]]),
            check=True,
            capture_output=True,
            timeout=PG_TIMEOUT_S + 30,
        )

    run("initdb", "-D", str(data), "-U", "hfskills", "--auth=trust", "-E", "UTF8")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    try:
        run("pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
    except subprocess.CalledProcessError:
        message = log.read_text() if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start:\n{message}") from None
    try:
        yield f"postgresql+psycopg://hfskills@127.0.0.1:{port}/postgres"
    finally:
        run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
        shutil.rmtree(root, ignore_errors=True)


_numbers = itertools.count()


@pytest.fixture(scope="session")
def fresh_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], str]:
    """``fresh_database(backend)``: the URL of a new, empty database on that backend."""

    def make(backend: str) -> str:
        number = next(_numbers)
        if backend == "sqlite":
            return f"sqlite:///{tmp_path_factory.mktemp('db') / f'control{number}.db'}"
        server = request.getfixturevalue("postgres")
        engine = create_engine(server, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f"CREATE DATABASE control{number}"))
        engine.dispose()
        return server.rsplit("/", 1)[0] + f"/control{number}"

    return make
