"""Schemathesis over the server's ``/openapi.json``: every operation (bodies, path and query
parameters), with data that fits its schema and data that does not, must answer a non-5xx
within its timeout, and every error in its API family's shape (host/errors.py: OpenAI's under
``/v1/``, ``/api/`` and ``/model/switch/``, TGI's elsewhere; 429 and 503 with
``Retry-After``).

Two servers: the embedded default as ``hfskills serve`` runs it (no authentication), and one
with authentication on and tiny checkpoints, fuzzed with an admin key so that the routes only
an admin reaches (``/api/keys``, budgets, switch, load, ...) run rather than answer 401; there,
every fuzzed request is also sent without credentials and must answer 401 (but the public
paths).

Bounded: a fixed number of examples per operation, and generation lengths clamped to a few
tokens (``max_tokens``, ``max_new_tokens``, ``n``) so that a run takes minutes on 2 cores;
every other field keeps what Hypothesis drew, pathological numbers included.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

from hfskills.host.config import load_settings  # noqa: E402
from hfskills.host.control.keys import KeyStore  # noqa: E402
from hfskills.host.errors import is_openai  # noqa: E402
from tests.host.conftest import Server, entry, start  # noqa: E402

#: Seconds a fuzzed request may take: far above a short generation on 2 cores.
TIMEOUT_S = 60
#: Examples per operation and mode (Hypothesis, derandomized: the same cases every run).
EXAMPLES = 20
#: The same on the server with authentication (tiny models: the control plane is the point).
AUTH_EXAMPLES = 10
#: Fields whose size is work: kept small so the run stays bounded (values are still fuzzed).
CLAMP = {"max_tokens": 8, "max_completion_tokens": 8, "max_new_tokens": 8, "n": 2, "min_tokens": 8}
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


@pytest.fixture(scope="module")
def server(default_server):
    return default_server  # the embedded default, as `hfskills serve` runs it


@pytest.fixture(scope="module")
def operations(server) -> list[Any]:
    return _operations(f"{server.base}/openapi.json")


@pytest.fixture(scope="module")
def authed(task_checkpoint, tmp_path_factory) -> Iterator[tuple[Server, dict[str, str]]]:
    """A server with authentication on (tiny models, its own SQLite), and an admin key's
    headers."""
    root = tmp_path_factory.mktemp("fuzz-auth")
    server = start(
        load_settings(
            models=[
                entry("emb", task_checkpoint("bert", "text_embedding")),
                entry("gen", task_checkpoint("llama", "text_generation")),
            ],
            embedded_default=False,
            database_url=f"sqlite:///{root / 'control.db'}",
            auth_enabled=True,
            request_timeout_s=TIMEOUT_S / 2,
        )
    )
    _, key = KeyStore(server.host.control.engine).create("fuzz-admin", "admin")
    server.app.state.auth.reload()
    yield server, {"X-API-Key": key}
    server.stop()


@pytest.fixture(scope="module")
def authed_operations(authed) -> list[Any]:
    server, admin = authed
    return _operations(f"{server.base}/openapi.json", admin)


def _operations(url: str, headers: dict[str, str] | None = None) -> list[Any]:
    document = httpx.get(url, headers=headers, timeout=TIMEOUT_S)
    assert document.status_code == 200, document.text
    schema = schemathesis.openapi.from_dict(document.json())
    return [result.ok() for result in schema.get_all_operations()]


def clamp(body: Any) -> Any:
    if isinstance(body, dict):
        out = {}
        for key, value in body.items():
            limit = CLAMP.get(key)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            # 38792.0 is an int to the server (pydantic's lax mode): clamp floats too
            out[key] = min(value, limit) if (limit and number and value > 0) else clamp(value)
        return out
    return body


def misshapen(path: str, response: Any) -> str | None:
    """Why an error answer is not in its API family's shape, else None."""
    try:
        body = response.json()
    except ValueError:
        return "not JSON"
    if is_openai(path):
        error = body.get("error") if isinstance(body, dict) else None
        ok = (
            isinstance(error, dict)
            and isinstance(error.get("message"), str)
            and error["message"]
            and isinstance(error.get("type"), str)
            and isinstance(error.get("code"), str)
            and error["code"]
            and "param" in error
            and isinstance(error["param"], str | None)
        )
        family = "OpenAI"
    else:
        ok = (
            isinstance(body, dict)
            and isinstance(body.get("error"), str)
            and body["error"]
            and isinstance(body.get("error_type"), str)
        )
        family = "TGI"
    if not ok:
        return f"not the {family} error shape"
    if response.status_code in (429, 503) and "retry-after" not in response.headers:
        return "no Retry-After"
    return None


def fuzz(
    base: str,
    operations: list[Any],
    mode: GenerationMode,
    examples: int,
    headers: dict[str, str] | None = None,
    public: frozenset[str] | None = None,
) -> list[str]:
    """What went wrong over every operation: 5xx, no answer in time, an error's shape; with
    ``public`` (authentication on), each case is first sent without ``headers`` and must
    answer 401 unless its path is public."""
    failures: list[str] = []
    for operation in operations:

        @settings(
            max_examples=examples,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def one(case: Any) -> None:
            if isinstance(case.body, dict):
                case.body = clamp(case.body)
            where = f"{case.method} {case.formatted_path}"
            try:
                if public is not None and case.formatted_path not in public:
                    anonymous = case.call(base_url=base, timeout=TIMEOUT_S)
                    why = misshapen(case.formatted_path, anonymous)
                    if anonymous.status_code != 401 or why:
                        failures.append(
                            f"{where} without credentials -> {anonymous.status_code} "
                            f"({why or 'not 401'}) {anonymous.text[:300]}"
                        )
                response = case.call(base_url=base, headers=headers, timeout=TIMEOUT_S)
            except Exception as exc:  # a timeout or a dropped connection
                failures.append(f"{where}: {exc!r}; {case.body!r:.300}")
                return
            if response.status_code >= 500:
                failures.append(
                    f"{where} -> {response.status_code} "
                    f"{response.text[:300]}; body {case.body!r:.300}"
                )
            elif response.status_code >= 400 and (why := misshapen(case.formatted_path, response)):
                failures.append(f"{where} -> {response.status_code} ({why}) {response.text[:300]}")

        try:
            one()
        except Unsatisfiable:  # no data breaks this schema (an operation without a body)
            assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


@pytest.mark.parametrize("mode", MODES)
def test_no_server_errors_and_no_hangs(server, operations, mode) -> None:
    failures = fuzz(server.base, operations, mode, EXAMPLES)
    assert not failures, "\n".join(failures[:20])


def test_the_schema_has_every_route_and_its_parameters(authed, authed_operations) -> None:
    """Every route the app serves is an operation; the query parameters the routes read are
    parameters (so they are fuzzed); every operation documents its error answer. A protocol
    endpoint that describes itself is left out on purpose (``include_in_schema=False``: MCP's
    ``/mcp``, whose tools carry their own JSON schemas; tests/host/test_mcp.py)."""
    server, _ = authed
    served = {
        (method, route.path.replace(":path", ""))
        for route in server.app.routes
        if route.path != "/openapi.json" and getattr(route, "include_in_schema", True)
        for method in (route.methods or set()) - {"HEAD"}
    }
    assert {(op.method.upper(), op.path) for op in authed_operations} == served
    by_label = {(op.method.upper(), op.path): op for op in authed_operations}
    for label, names in {
        ("GET", "/api/events"): {"kind", "model_id", "request_id", "after", "limit"},
        ("GET", "/api/models/costs"): {"hours"},
        ("GET", "/api/audit"): {"limit", "model_id", "kind"},
        ("GET", "/benchmark/summary"): {"model", "hardware", "source"},
        ("DELETE", "/api/models/{model_id}"): {"version"},
    }.items():
        query = {p["name"] for p in by_label[label].definition.raw.get("parameters", ())}
        assert names <= query, (label, query)
    for op in authed_operations:
        error = op.definition.raw["responses"]["default"]["content"]["application/json"]
        family = "OpenAIError" if is_openai(op.path) else "TGIError"
        assert error["schema"]["$ref"].endswith(f"/{family}"), op.label


@pytest.mark.parametrize("mode", MODES)
def test_with_authentication_and_an_admin_key(authed, authed_operations, mode) -> None:
    server, admin = authed
    public = server.app.state.auth.public
    failures = fuzz(server.base, authed_operations, mode, AUTH_EXAMPLES, admin, public)
    assert not failures, "\n".join(failures[:20])
    # the admin routes ran: the fuzz made keys (and the admin key still works)
    with server.client(headers=admin) as http:
        keys = http.get("/api/keys")
        assert keys.status_code == 200, keys.text
        assert len(keys.json()["data"]) > 1
