"""`Host`: everything one server holds, built from the settings; routes reach it as
``request.app.state.host``. It wires the pieces and holds no policy of its own: discovery and
the catalog say what is served, `HardwareManager` where, `ModelLoader` when (with each model's
worker, workers.py), the `Scheduler` how many at once, and `InferenceService` runs requests."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

from . import catalog as catalog_mod
from . import control, workers
from .breakers import Breakers
from .cache import ResponseCache
from .config import Settings
from .control import bench
from .control.autobench import AutoBench
from .control.shadow import ShadowRecords
from .discovery import discover
from .hardware import HardwareManager
from .inference import InferenceService
from .limits import Limits
from .loader import ModelLoader
from .metrics import Metrics
from .safety import pipeline as safety
from .scheduler import Scheduler

log = logging.getLogger("hfskills.host")


def default_budget() -> int:
    """80% of the memory available now (Linux), else 8 GiB."""
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        available = 10 * 2**30
    return int(available * 0.8)


def policy_of(s: Settings) -> workers.Policy:
    """The settings that shape workers (host/workers.py)."""
    return workers.Policy(
        continuous_batching=s.continuous_batching,
        max_batch_sequences=s.max_batch_sequences,
        max_batch_size=s.max_batch_size,
        max_batch_tokens=s.max_batch_tokens,
        batch_wait_s=s.batch_wait_ms / 1000,
    )


def budget_of(s: Settings) -> int:
    """The loader's memory budget: the setting, else `default_budget`."""
    return s.memory_budget_bytes if s.memory_budget_bytes is not None else default_budget()


def limits_of(s: Settings, metrics: Metrics) -> Limits | None:
    """The settings' limits (host/limits.py), None when every one is off and no key can bring
    its own (authentication is off)."""
    limits = Limits(
        metrics,
        requests_per_minute=s.rate_limit_requests_per_minute,
        tokens_per_minute=s.rate_limit_tokens_per_minute,
        model_requests_per_minute=s.model_rate_limit_requests_per_minute,
        model_tokens_per_minute=s.model_rate_limit_tokens_per_minute,
        max_concurrent_per_key=s.max_concurrent_requests_per_key,
        max_tokens_per_request=s.max_tokens_per_request,
        max_input_chars=s.max_input_chars,
    )
    return limits if limits.configured or s.auth_on else None


class Host:
    def __init__(self, settings: Settings) -> None:
        self.settings = s = settings
        self.registry = discover(s.skills_dirs, builtin=s.builtin_skills)
        self.catalog = catalog_mod.build(s, self.registry)
        self.metrics = Metrics()
        self.metrics.declare_models(
            name for m in self.catalog.models.values() for name in (m.name, *m.adapters)
        )
        self.hardware = HardwareManager()
        self.executor = ThreadPoolExecutor(s.workers, thread_name_prefix="hfskills-worker")
        self.loader = ModelLoader(
            self.catalog,
            self.hardware.load,
            self.executor,
            self.metrics,
            budget_of(s),
            policy_of(s),
        )
        self.scheduler = Scheduler(
            self.metrics,
            max_concurrency=s.max_concurrency,
            per_model=s.max_concurrency_per_model,
            max_queue=s.max_queue_per_model,
        )
        self.service = InferenceService(
            self.loader, self.metrics, self.scheduler, max_inputs=s.max_batch_inputs
        )
        # the registry (host/control): catalog models register; retired ones are refused;
        # the TOML file's routes are written
        self.control = control.start(s, self.catalog)
        self.loader.gate = self.control.gate
        self.service.router = self.control.router  # routes: chosen from memory per request
        self.service.auto = self.control.registry.auto  # model "auto": the strategy's choice
        # routes' challengers (shadow traffic): persisted in the background (lifespan)
        self.shadows = self.service.shadows = ShadowRecords(self.control.engine)
        self.service.ledger = self.control.ledger  # costs, budgets, events per call
        # limits (limits.py), a breaker per model (breakers.py), the response cache (cache.py)
        self.service.limits = limits_of(s, self.metrics)
        if s.breaker_failures:
            self.service.breakers = Breakers(
                self.metrics,
                s.breaker_failures,
                s.breaker_window_s,
                s.breaker_open_s,
                s.request_timeout_s,
                s.breaker_failure_ratio,
            )
            for name in self.catalog.models:  # every model's gauge exists from the start
                self.service.breakers.state_gauge(name)
        if s.response_cache_bytes:
            served = self.control.registry.served
            self.service.cache = ResponseCache(s.response_cache_bytes, self.metrics, served)
        # the safety pipeline (host/safety): None when no hook is configured; its `switches`
        # is the seam for per-key hooks
        self.safety = self.service.safety = safety.build(
            s.safety, self.service, self.metrics, self.control.events
        )
        self.metrics.watch_budgets(self.control.budgets.status)  # budget gauges, per scrape
        self.started = int(time.time())
        for name, why in self.catalog.errors.items():
            log.error("model %s is not served: %s", name, why)
        # automatic benchmarking (control/autobench.py): every auto_bench_every client calls to
        # a model; its tokens/s (and the JSONL's newest, now) feed the costs when they exist
        costs = getattr(self.control, "costs", None)
        self.autobench = AutoBench(
            self.service,
            s.auto_bench_every,
            bench.path_of(s.bench_jsonl),
            self.control.registry.served,
            s.request_timeout_s,
            getattr(costs, "throughput", None),
        )
        self.autobench.seed()
        if s.auto_bench_every and hasattr(self.service, "observers"):
            self.service.observers.append(self.autobench.observe)

    def defaults(self) -> dict[str, str]:
        """task -> the model the root TGI/TEI routes use: configured, else the first with it.
        Never a retired model; a deprecated one only when configured (named explicitly)."""
        chosen: dict[str, str] = {}
        status = self.control.gate.status  # the registry's snapshot (host/control/gate.py)
        for model in self.catalog.models.values():
            # a client's choice (on demand) or a remote server never becomes a default
            if model.on_demand or model.remote is not None:
                continue
            if status(model.name) is not None:
                continue
            for task in model.tasks:
                chosen.setdefault(task, model.name)
        for task, name in self.settings.default_models.items():
            model = self.catalog.get(name)
            if model is not None and status(model.name) != "retired":
                chosen[task] = model.name
        return chosen
