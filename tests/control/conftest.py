"""The control plane's tests' helpers. Their databases (`postgres`, `fresh_database`, and
`BACKENDS`, SQLite and a real PostgreSQL) are the session's: tests/databases.py."""

from __future__ import annotations

import threading

from tests.databases import BACKENDS, postgres_bin

__all__ = ["BACKENDS", "BACKGROUND_WRITERS", "from_the_request_path", "postgres_bin"]

#: The threads that write the control plane's records in the background (cost events, events,
#: shadow records): the request path itself must never query the database.
BACKGROUND_WRITERS = ("hfskills-control-writer", "hfskills-shadow")


def from_the_request_path() -> bool:
    """Whether the statement being run comes from anything but a background writer."""
    return threading.current_thread().name not in BACKGROUND_WRITERS
