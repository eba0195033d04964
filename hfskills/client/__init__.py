"""hfskills' Python SDK: a small typed client for what the OpenAI SDK does not cover
(docs/sdk.md).

``Client`` (sync) and ``AsyncClient`` run any task on any served model (`Client.infer`), list
models with their tasks and hardware, load, unload and switch them, and read and write the
control plane (registry, routes, costs, benchmarks), with an API key and bounded retries on
429 and 503 that honour ``Retry-After``. Chat, completions and embeddings stay with the openai
SDK at ``{base_url}/v1``.

Policy: importing the client imports httpx, pydantic and the server's pydantic protocol models,
never torch, transformers or the server (``python -X importtime -c "import hfskills.client"``;
tests/host/test_client.py checks it).
"""

from __future__ import annotations

from .clients import AsyncClient, Client, Retries
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientError,
    ConflictError,
    DeadlineExceededError,
    InferenceFailedError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UnprocessableEntityError,
)
from .types import (
    BenchmarkSummary,
    CostReport,
    LoadResult,
    Model,
    ModelCost,
    RegisteredModel,
    ResidentModel,
    Route,
    Selection,
    Stat,
    SwitchReport,
)

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "BenchmarkSummary",
    "Client",
    "ClientError",
    "ConflictError",
    "CostReport",
    "DeadlineExceededError",
    "InferenceFailedError",
    "InternalServerError",
    "LoadResult",
    "Model",
    "ModelCost",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "RegisteredModel",
    "ResidentModel",
    "Retries",
    "Route",
    "Selection",
    "ServiceUnavailableError",
    "Stat",
    "SwitchReport",
    "UnprocessableEntityError",
]
