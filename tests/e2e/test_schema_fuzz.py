"""Schemathesis over the default server's ``/openapi.json``: every operation, with data that
fits its schema and data that does not, must answer a non-5xx within its timeout.

Bounded: a fixed number of examples per operation, and generation lengths clamped to a few
tokens (``max_tokens``, ``max_new_tokens``, ``n``) so that a run takes minutes on 2 cores;
every other field keeps what Hypothesis drew, pathological numbers included.
"""

from __future__ import annotations

from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

#: Seconds a fuzzed request may take: far above a short generation on 2 cores.
TIMEOUT_S = 60
#: Fields whose size is work: kept small so the run stays bounded (values are still fuzzed).
#: Examples per operation and mode (Hypothesis, derandomized: the same cases every run).
EXAMPLES = 20
CLAMP = {"max_tokens": 8, "max_completion_tokens": 8, "max_new_tokens": 8, "n": 2, "min_tokens": 8}


@pytest.fixture(scope="module")
def server(default_server):
    return default_server  # the embedded default, as `hfskills serve` runs it


@pytest.fixture(scope="module")
def operations(server) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{server.base}/openapi.json")
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


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors_and_no_hangs(server, operations, mode) -> None:
    failures: list[str] = []
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
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
            try:
                response = case.call(base_url=server.base, timeout=TIMEOUT_S)
            except Exception as exc:  # a timeout or a dropped connection
                failures.append(f"{case.method} {case.formatted_path}: {exc!r}; {case.body!r:.300}")
                return
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code} "
                    f"{response.text[:300]}; body {case.body!r:.300}"
                )

        try:
            one()
        except Unsatisfiable:  # no data breaks this schema (an operation without a body)
            assert mode is GenerationMode.NEGATIVE, operation.label
    assert not failures, "\n".join(failures[:20])
