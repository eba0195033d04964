"""A real server for host tests: uvicorn on 127.0.0.1 (free port) in a background thread.

`serve(settings)` returns a running server; stopping is bounded in time. Catalogs of tiny
checkpoints come from the session's `task_checkpoint` fixture (tests/conftest.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from hfskills.host.app import build_app
from hfskills.host.config import Settings, load_settings


@dataclass
class Server:
    app: Starlette
    server: uvicorn.Server
    thread: threading.Thread
    base: str

    @property
    def host(self) -> Any:
        return self.app.state.host

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, **{"timeout": 120, **kwargs})

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start(settings: Settings) -> Server:
    app = build_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return Server(app, server, thread, f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def serve() -> Iterator[Any]:
    """Start servers for a test module; all are stopped when the module ends."""
    started: list[Server] = []

    def make(**settings: Any) -> Server:
        server = start(load_settings(**settings))
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def entry(name: str, path: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "checkpoint": str(path), **extra}
