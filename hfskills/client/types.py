"""The client's typed results: small pydantic models of what the server answers.

Policy: where the server declares its answer with a protocol model (the registry's
registrations, routes, a switch's report), the client returns that very model, imported from
``hfskills.host.protocol`` (pydantic only: no torch, no server); the other answers (the model
cache, costs, benchmarks) are described here, each ignoring fields it does not name, so a newer
server's extra fields never break an older client.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hfskills.host.protocol.registry import RegisteredModelOut as RegisteredModel
from hfskills.host.protocol.routes import RouteOut as Route
from hfskills.host.protocol.routes import SelectOut as Selection
from hfskills.host.protocol.switch import SwitchOut as SwitchReport

__all__ = [
    "BenchmarkSummary",
    "CostReport",
    "LoadResult",
    "Model",
    "ModelCost",
    "RegisteredModel",
    "ResidentModel",
    "Route",
    "Selection",
    "Stat",
    "SwitchReport",
]


class Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class ResidentModel(Answer):
    """A (model, task) loaded in the server's model cache (``GET /admin/models``' resident)."""

    model: str
    task: str
    hardware: str = Field(description="cuda, rocm, mps, openvino, qnn or cpu")
    device: str
    dtype: str | None = None
    memory_bytes: int
    pinned: bool = False
    on_demand: bool = False
    active_requests: int = 0
    loaded_at: int = Field(description="Unix time of the load")


class Model(Answer):
    """A catalog model with its tasks, and what of it is loaded now, on which hardware."""

    name: str
    skill: str
    tasks: list[str]
    aliases: list[str] = []
    adapters: list[str] = []
    pinned: bool = False
    checkpoint: str | None = None
    on_demand: bool = False
    resident: list[ResidentModel] = Field(
        default_factory=list, description="its loaded tasks (empty: not loaded)"
    )

    @property
    def hardware(self) -> list[str]:
        """The hardware its loaded tasks run on (empty while nothing is loaded)."""
        return list(dict.fromkeys(r.hardware for r in self.resident))


class LoadResult(Answer):
    """``POST /admin/models/{name}/load``'s answer."""

    loaded: str = Field(description="model/task")
    hardware: str
    memory_bytes: int


class ModelCost(Answer):
    """One model version's line of the costs report."""

    requests: int
    errors: int = 0
    error_rate: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_per_request_usd: float | None = None
    cost_per_1k_tokens_usd: float | None = None
    mean_latency_ms: float | None = None
    feedback: dict[str, Any] | None = None


class CostReport(Answer):
    """``GET /api/models/costs``: what the calls cost over the last ``hours``."""

    hours: float
    since: str
    source: str = Field(description="cost_events, or cost_daily past their retention")
    total_cost_usd: float
    requests: int
    cost_by_model: dict[str, float] = Field(description="model_id@version -> USD")
    top_models: list[dict[str, Any]] = []
    efficiency_metrics: dict[str, ModelCost] = Field(description="model_id@version -> its line")


class Stat(Answer):
    """A metric's mean and 95th percentile over benchmark runs (None: never measured)."""

    mean: float | None = None
    p95: float | None = None


class BenchmarkSummary(Answer):
    """One (model, version, hardware) row of ``GET /benchmark/summary``; the other metrics
    (``output_throughput``, ``median_ttft_ms``...) are `Stat` fields of the same name."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model: str
    version: str | None = None
    hardware: str | None = None
    task: str | None = None
    runs: int
    sources: dict[str, int] = {}
    last_run: str | None = None
    completed: int = 0
    failed: int = 0
    peak_memory_bytes: int | None = None
    quality: dict[str, float] = {}
    tokens_per_s: Stat = Stat()
    request_throughput: Stat = Stat()
    median_e2el_ms: Stat = Stat()
    feedback: dict[str, Any] | None = None
    cost_per_1k_tokens: float | None = None
