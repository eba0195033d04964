"""Prometheus metrics, in a registry of the app's own (several apps may live in one process).

Every name starts with ``hfskills_`` (docs/api.md lists them). The generation histograms use
vLLM's buckets (``vllm:time_to_first_token_seconds``, ``vllm:inter_token_latency_seconds``), so
dashboards made for vLLM read them the same way. The request path reports through the small
methods below (`request_started`, `request_finished`, `first_token`, `inter_token`); loads,
evictions, queue and cache gauges are set where they happen (loader.py, scheduler.py).

The design's names (``model_requests_total{model,hardware,status}``,
``model_request_duration_seconds``, ``model_tokens_processed_total``,
``hardware_utilization_percent``, ``hardware_memory_used_bytes``, ``queue_depth{priority}``,
``circuit_breaker_state``, ``cache_hit_ratio``) are kept as they are, after the prefix: one
namespace per exporter, as Prometheus' naming practice asks (bare ``queue_depth`` would mix
with any other exporter's), and the names dashboards, alerts (deploy/) and tests already use.
No unprefixed copies: they would double every series. Read at each scrape rather than set:
``hardware_utilization_percent`` (`HardwareUtilization`) and the budgets (`BudgetGauges`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

PREFIX = "hfskills_"
#: vLLM's buckets for time to first token (seconds).
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
#: vLLM's buckets for the time between two generated tokens (seconds).
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        r.register(HardwareUtilization())  # read at each scrape
        self.requests = Counter(
            PREFIX + "model_requests_total",
            "Requests by model, hardware and status",
            ["model", "hardware", "status"],
            registry=r,
        )
        self.duration = Histogram(
            PREFIX + "model_request_duration_seconds",
            "Request latency",
            ["model", "hardware"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.tokens = Counter(
            PREFIX + "model_tokens_processed_total",
            "Prompt and generated tokens",
            ["model"],
            registry=r,
        )
        self.generated = Counter(
            PREFIX + "model_generated_tokens_total", "Tokens generated", ["model"], registry=r
        )
        self.running = Gauge(
            PREFIX + "requests_running",
            "Requests holding a slot now (running, or streaming their answer)",
            ["model"],
            registry=r,
        )
        self.time_to_first_token = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "Time from a generation request's arrival to its first generated token",
            ["model"],
            registry=r,
            buckets=TTFT_BUCKETS,
        )
        self.inter_token_latency = Histogram(
            PREFIX + "inter_token_latency_seconds",
            "Time between two consecutive generated tokens of one sequence",
            ["model"],
            registry=r,
            buckets=ITL_BUCKETS,
        )
        self.memory = Gauge(
            PREFIX + "hardware_memory_used_bytes",
            "Bytes held by resident models",
            ["hardware"],
            registry=r,
        )
        self.queue_depth = Gauge(
            PREFIX + "queue_depth", "Requests waiting, by priority", ["priority"], registry=r
        )
        self.cache_hit_ratio = Gauge(
            PREFIX + "cache_hit_ratio", "Model cache hits / lookups", registry=r
        )
        self.loads = Counter(
            PREFIX + "model_loads_total", "Model loads by status", ["model", "status"], registry=r
        )
        self.evictions = Counter(
            PREFIX + "model_evictions_total",
            "Models evicted from the cache",
            ["model", "reason"],
            registry=r,
        )
        # limits, circuit breakers and the response cache (limits.py, breakers.py, cache.py)
        self.rate_limited = Counter(
            PREFIX + "rate_limited_total",
            "Requests refused 429 by a limit: scope key or model; limit requests, tokens or "
            "concurrency",
            ["scope", "limit"],
            registry=r,
        )
        self.breaker_state = Gauge(
            PREFIX + "circuit_breaker_state",
            "A model's circuit breaker: 0 closed, 1 open, 2 half-open",
            ["model"],
            registry=r,
        )
        self.breaker_rejected = Counter(
            PREFIX + "circuit_breaker_rejected_total",
            "Requests failed fast (503) because their model's breaker was open",
            ["model"],
            registry=r,
        )
        self.response_cache_hit_ratio = Gauge(
            PREFIX + "response_cache_hit_ratio",
            "Response cache hits / lookups (deterministic requests only)",
            registry=r,
        )
        self.response_cache_lookups = Counter(
            PREFIX + "response_cache_lookups_total",
            "Response cache lookups by model and result (hit or miss)",
            ["model", "result"],
            registry=r,
        )
        self.response_cache_bytes = Gauge(
            PREFIX + "response_cache_bytes", "Bytes the response cache holds", registry=r
        )
        for priority in ("high", "normal", "low"):
            self.queue_depth.labels(priority=priority).set(0)
        self.cache_hit_ratio.set(0)
        self.response_cache_hit_ratio.set(0)

    def declare_models(self, names: Iterable[str]) -> None:
        """Each served model's ``requests_running`` series, at 0 before its first request: an
        autoscaler reading it (deploy/k8s: the HPA through prometheus-adapter) sees a new pod
        as idle, not as missing data."""
        for name in names:
            self.running.labels(model=name).set(0)

    # -- the request path ----------------------------------------------------------------------

    def request_started(self, model: str) -> None:
        """A request got its slot and starts running (pair with `request_finished`)."""
        self.running.labels(model=model).inc()

    def request_finished(self, model: str) -> None:
        """The request started with `request_started` ended: answered, failed or cancelled."""
        self.running.labels(model=model).dec()

    @contextlib.contextmanager
    def request_running(self, model: str) -> Iterator[None]:
        """`request_started` now and `request_finished` on leaving, however it is left."""
        self.request_started(model)
        try:
            yield
        finally:
            self.request_finished(model)

    def first_token(self, model: str, seconds: float) -> None:
        """A generated sequence's first token arrived ``seconds`` after its request did."""
        self.time_to_first_token.labels(model=model).observe(seconds)

    def inter_token(self, model: str, seconds: float, tokens: int = 1) -> None:
        """``tokens`` more tokens of one sequence arrived ``seconds`` after its previous ones
        (an engine may hand over several at once): each counts ``seconds / tokens``."""
        if tokens < 1:
            return
        child = self.inter_token_latency.labels(model=model)
        for _ in range(min(tokens, 4096)):
            child.observe(seconds / tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def watch_budgets(self, status: Callable[[], list[dict[str, Any]]]) -> None:
        """Export the control plane's daily budgets (``Budgets.status``), read at each scrape."""
        self.registry.register(BudgetGauges(status))


class HardwareUtilization:
    """``hardware_utilization_percent{hardware, device}``, computed when scraped: ``cpu``, the
    process's CPU time over the wall time since the previous reading, as a share of the cores
    it may use (a reading spans at least a second; scrapes closer than that repeat the last);
    ``cuda``, each device's utilization as NVML reports it through torch, once torch has set up
    CUDA (never set up by a scrape; absent without NVML)."""

    MIN_SPAN_S = 1.0

    def __init__(self) -> None:
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        self.cores = self.cores or os.cpu_count() or 1
        self.last = (time.monotonic(), time.process_time())
        self.percent = 0.0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            PREFIX + "hardware_utilization_percent",
            "Busy share of the hardware: the process's CPU time over its cores (cpu), NVML's "
            "utilization per device (cuda)",
            labels=["hardware", "device"],
        )
        wall, cpu = time.monotonic(), time.process_time()
        span = wall - self.last[0]
        if span >= self.MIN_SPAN_S:
            used = (cpu - self.last[1]) / (span * self.cores) * 100
            self.percent, self.last = min(100.0, max(0.0, used)), (wall, cpu)
        family.add_metric(["cpu", "cpu"], self.percent)
        for device, percent in _cuda_utilization():
            family.add_metric(["cuda", device], percent)
        yield family


def _cuda_utilization() -> Iterator[tuple[str, float]]:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return
    for index in range(torch.cuda.device_count()):
        try:
            percent = float(torch.cuda.utilization(index))
        except Exception:  # no NVML (pynvml) here
            return
        yield f"cuda:{index}", percent


class BudgetGauges:
    """The daily budgets (host/control/budgets.py), read when scraped, per ``scope``
    (``global``, ``model:<model_id>``): ``budget_used_ratio`` (today's spend / the budget; the
    control plane's ``budget.threshold_crossed`` events fire at 0.7, 0.9 and 1),
    ``budget_spent_usd`` and ``budget_daily_usd``."""

    def __init__(self, status: Callable[[], list[dict[str, Any]]]) -> None:
        self.status = status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used = GaugeMetricFamily(
            PREFIX + "budget_used_ratio", "Today's spend / the daily budget", labels=["scope"]
        )
        spent = GaugeMetricFamily(
            PREFIX + "budget_spent_usd", "Spent today (UTC), in USD", labels=["scope"]
        )
        daily = GaugeMetricFamily(PREFIX + "budget_daily_usd", "The daily budget", labels=["scope"])
        try:
            rows = self.status()
        except Exception:  # a scrape never fails for the accounts
            rows = []
        for row in rows:
            scope = [str(row["scope"])]
            daily.add_metric(scope, float(row["daily_usd"]))
            spent.add_metric(scope, float(row["spent_usd"]))
            if row.get("used") is not None:
                used.add_metric(scope, float(row["used"]))
        yield used
        yield spent
        yield daily
