"""Prometheus metrics, in a registry of the app's own (several apps may live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "model_requests_total",
            "Requests by model, hardware and status",
            ["model", "hardware", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "model_request_duration_seconds",
            "Request latency",
            ["model", "hardware"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.tokens = Counter(
            "model_tokens_processed_total", "Prompt and generated tokens", ["model"], registry=r
        )
        self.generated = Counter(
            "model_generated_tokens_total", "Tokens generated", ["model"], registry=r
        )
        self.memory = Gauge(
            "hardware_memory_used_bytes", "Bytes held by resident models", ["hardware"], registry=r
        )
        self.queue_depth = Gauge(
            "queue_depth", "Requests waiting, by priority", ["priority"], registry=r
        )
        self.cache_hit_ratio = Gauge("cache_hit_ratio", "Model cache hits / lookups", registry=r)
        self.loads = Counter(
            "model_loads_total", "Model loads by status", ["model", "status"], registry=r
        )
        self.evictions = Counter(
            "model_evictions_total",
            "Models evicted from the cache",
            ["model", "reason"],
            registry=r,
        )
        for priority in ("high", "normal", "low"):
            self.queue_depth.labels(priority=priority).set(0)
        self.cache_hit_ratio.set(0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
