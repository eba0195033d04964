"""``hfskills``: serve models, list the catalog, show the hardware.

hfskills serve [MODEL ...] [--served-model-name NAME]... [--config FILE] [--host H] [--port P]
               [--skills-dir D]... [--on-demand-models] [--log-level L]
               [--ray [--ray-replicas MIN:MAX]]   (on Ray Serve: a local cluster or RAY_ADDRESS)
hfskills models [MODEL ...] [--config FILE] [--skills-dir D]...   (exit 1: an entry unavailable)
hfskills hardware
hfskills skills [--skills-dir D]...
hfskills bench [--url URL | --config FILE] [--model NAME]... [--eval FILE] [--summary] ...
hfskills keys create --name NAME [--role R] [--model M]... | keys list | keys revoke ID
hfskills --version
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import sys
import textwrap
import tomllib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

import hfskills
from hfskills.skillset.runtime.errors import HFSkillsError

if TYPE_CHECKING:
    from .catalog import ServedModel

log = logging.getLogger("hfskills.host")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _settings(args: argparse.Namespace):
    from .catalog import with_positional
    from .config import load_settings

    settings = load_settings(
        getattr(args, "config", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        skills_dirs=getattr(args, "skills_dir", None) or None,
        memory_budget_bytes=getattr(args, "memory_budget", None),
        workers=getattr(args, "workers", None),
        preload=True if getattr(args, "preload", False) else None,
        log_level=getattr(args, "log_level", None),
        on_demand_models=True if getattr(args, "on_demand_models", False) else None,
        ssl_certfile=getattr(args, "ssl_certfile", None),
        ssl_keyfile=getattr(args, "ssl_keyfile", None),
        **_ray_replicas(getattr(args, "ray_replicas", None)),
        ray_per_model=True if getattr(args, "ray_per_model", False) else None,
    )
    return with_positional(
        settings,
        getattr(args, "models", None) or [],
        getattr(args, "served_model_name", None),
        getattr(args, "lora_modules", None),
    )


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from . import logs, tls
    from .app import build_app
    from .auth import loopback

    settings = _settings(args)
    logs.setup(settings.log_level)
    if getattr(args, "ray", False):  # the same app as a Ray Serve deployment (docs/ray.md)
        from . import ray_serve

        return ray_serve.run(settings)
    app = build_app(settings)
    host = app.state.host
    for model in host.catalog.models.values():
        log.info(
            "serving %s (%s: %s) from %s%s",
            model.name,
            model.skill.name,
            ", ".join(model.tasks),
            model.location,
            model.skill.note,
        )
    if host.catalog.on_demand is not None:
        log.warning(
            "on_demand_models is on: requests may name any local checkpoint path or cached hub "
            "id, and this server will read and load it"
        )
    if not settings.auth_on and not loopback(settings.host):
        log.warning(
            "authentication is off and hfskills listens on %s: anyone who reaches this port can "
            "use every model, load and unload models and change the registry; turn it on with "
            "auth_enabled and `hfskills keys create` (docs/security.md)",
            settings.host,
        )
    scheme = "https" if settings.ssl_certfile is not None else "http"
    log.info("hfskills listening on %s://%s:%s", scheme, settings.host, settings.port)
    config = tls.server_config(
        app,
        settings,
        log_level=settings.log_level,
        log_config=None,  # logs.setup configured uvicorn's loggers (JSON lines)
        access_log=False,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 3


def backend(model: ServedModel, task: str, hardware: str) -> str:
    """The hardware a model's task loads on, and the engine there: ``openvino (GenAI)``."""
    decoder_generation = task == "text_generation" and model.skill.cls.family == "decoder"
    if hardware == "openvino":
        return "openvino (GenAI)" if decoder_generation else "openvino (IR)"
    if hardware == "qnn":
        return "qnn (ONNX Runtime)"
    if hardware == "cuda":
        from hfskills.skillset.runtime import gpu

        engine = model.options.get("engine") or "auto"
        if (
            decoder_generation
            and engine in ("auto", "vllm")
            and importlib.util.find_spec("vllm") is not None
        ):
            return "cuda (vLLM)"
        if (
            task in gpu.TENSORRT_TASKS
            and model.skill.cls.family in gpu.TENSORRT_FAMILIES
            and engine in ("auto", "tensorrt")
            and importlib.util.find_spec("tensorrt") is not None
        ):
            return "cuda (TensorRT)"
    return f"{hardware} (torch)"


def models(args: argparse.Namespace) -> int:
    """One line per catalog entry: name, skill, tasks, the backend its first task gets (the
    first hardware candidate), the checkpoint. Exit 1 when an entry is unavailable."""
    from . import catalog
    from .discovery import discover
    from .hardware import HardwareManager

    settings = _settings(args)
    registry = discover(settings.skills_dirs, builtin=settings.builtin_skills)
    built = catalog.build(settings, registry)
    manager = HardwareManager()
    for model in built.models.values():
        aliases = f" (aliases: {', '.join(model.aliases)})" if model.aliases else ""
        if model.adapters:
            aliases += f" (LoRA adapters: {', '.join(model.adapters)})"
        task = model.tasks[0]
        candidates = manager.candidates(model, task)
        where = backend(model, task, candidates[0][0]) if candidates else "no hardware"
        skill = model.skill
        generated = f" (skill generated on the fly: {skill.path})" if skill.generated else ""
        print(
            f"{model.name:<28} {model.skill.name:<14} {', '.join(model.tasks):<24} "
            f"{where:<20} {model.location}{aliases}{generated}"
        )
    for name, why in built.errors.items():
        print(f"{name:<28} UNAVAILABLE: {why}")
    return 1 if built.errors else 0


def hardware(args: argparse.Namespace) -> int:
    from .hardware import HardwareManager

    for item in HardwareManager().report():
        mark = "yes" if item["available"] else "no "
        print(f"{item['name']:<9} {mark}  {item['reason']}")
    return 0


def skills(args: argparse.Namespace) -> int:
    from .discovery import discover

    registry = discover(args.skills_dir or [])
    for info in registry.skills.values():
        print(f"{info.name:<16} {info.cls.family:<22} {', '.join(info.cls.tasks)}")
    for path, why in registry.broken.items():
        print(f"SKIPPED {path}: {why}")
    return 0


def bench(args: argparse.Namespace) -> int:
    from . import bench_client

    return bench_client.main(args, _settings(args))


def keys(args: argparse.Namespace) -> int:
    """``hfskills keys``: create, list and revoke API keys in the control plane's database
    (the ``database_url`` of --config and HFSKILLS_*). A created key is printed once, alone on
    stdout; only its hash is stored."""
    from .config import load_settings
    from .control import db
    from .control.keys import KeyStore
    from .errors import validation_message
    from .protocol.keys import KeyCreate, KeyUpdate

    settings = load_settings(args.config)
    if args.keys_command in ("create", "update"):
        try:
            given = _key_fields(args)
            if args.keys_command == "create":
                body = KeyCreate(name=args.name, role=args.role, **given)
            else:
                update = KeyUpdate(**given)
        except (ValidationError, ValueError) as exc:
            message = validation_message(exc)[1] if isinstance(exc, ValidationError) else exc
            print(f"hfskills: error: {message}", file=sys.stderr)
            return 2
    engine = db.open_database(settings.database_url or db.default_url())
    try:
        store = KeyStore(engine)
        if args.keys_command == "create":
            limits = body.limits.stored() if body.limits is not None else None
            record, key = store.create(body.name, body.role, body.models, limits, body.safety)
            print(key)
            print(
                f"created API key {record.id} ({record.name}, role {record.role}, models "
                f"{', '.join(record.models) if record.models else 'all'}{_key_extras(record)}): "
                "it is shown this once; only its hash is stored",
                file=sys.stderr,
            )
        elif args.keys_command == "update":
            record = store.update(args.key_id, update.changes())
            print(
                f"updated API key {record.id} ({record.name}, role {record.role}, models "
                f"{', '.join(record.models) if record.models else 'all'}{_key_extras(record)})"
            )
        elif args.keys_command == "list":
            for r in store.records():
                state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
                used = f"{r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "never"
                models = ",".join(r.models) if r.models else "*"
                print(
                    f"{r.id:<13} {r.prefix:<18} {r.name:<20} {r.role:<9} {models:<24} "
                    f"created {r.created_at:%Y-%m-%d %H:%M}  used {used:<16} {state}"
                    f"{_key_extras(r)}"
                )
        else:
            record = store.revoke(args.key_id)
            print(f"revoked API key {record.id} ({record.name})")
    finally:
        engine.dispose()
    return 0


def _key_fields(args: argparse.Namespace) -> dict[str, Any]:
    """``hfskills keys create|update``'s options as `KeyFields` takes them: only those given
    (an update changes what it names); ``--all-models``, ``--no-limits`` and
    ``--default-safety`` clear."""
    fields: dict[str, Any] = {}
    if args.model:
        fields["models"] = args.model
    elif getattr(args, "all_models", False):
        fields["models"] = None
    limits = {
        name: value
        for name, value in (
            ("requests_per_minute", args.rpm),
            ("tokens_per_minute", args.tpm),
            ("max_concurrent_requests", args.max_concurrent),
        )
        if value is not None
    }
    if limits:
        fields["limits"] = limits
    elif getattr(args, "no_limits", False):
        fields["limits"] = None
    if args.safety:
        switches: dict[str, bool] = {}
        for item in args.safety:
            hook, _, state = item.partition("=")
            if state not in ("on", "off") or not hook:
                raise ValueError(f"--safety {item!r}: give HOOK=on or HOOK=off")
            switches[hook] = state == "on"
        fields["safety"] = switches
    elif getattr(args, "default_safety", False):
        fields["safety"] = None
    if getattr(args, "name", None) is not None and args.keys_command == "update":
        fields["name"] = args.name
    if getattr(args, "role", None) is not None and args.keys_command == "update":
        fields["role"] = args.role
    return fields


def _key_extras(record: Any) -> str:
    """A key's own limits and safety switches, for one line of output ("" when it has none)."""
    out = ""
    if record.limits:
        out += ", limits " + " ".join(f"{k}={v}" for k, v in record.limits.items())
    if record.safety:
        out += ", safety " + " ".join(
            f"{k}={'on' if v else 'off'}" for k, v in record.safety.items()
        )
    return out


SERVE_EPILOG = """\
examples:
  hfskills serve ./my-checkpoint                   a local checkpoint, as 'my-checkpoint'
  hfskills serve ./my-checkpoint --served-model-name mine --served-model-name alias
  hfskills serve ./smollm2-dir                     a directory holding one .gguf file
  hfskills serve sentence-transformers/all-MiniLM-L6-v2    a hub id (the local HF cache first)
  hfskills serve ./a ./b --config hfskills.toml    MODELs and a catalog file together
  hfskills serve ./base --lora-modules sql=./sql-lora    a LoRA adapter served as the model "sql"
  hfskills serve --config hfskills.toml            a catalog only (docs/configuration.md)
  hfskills serve --ray --ray-replicas 1:4          on Ray Serve, 1-4 replicas (docs/ray.md)

hub ids: with HF_HUB_OFFLINE=1 only the local HF cache is read; otherwise the hub gets one short
probe, and an id that is neither cached nor reachable fails at once with one line.
"""


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="a local checkpoint directory (config.json + weights), a directory holding one "
        ".gguf file, a .gguf file, or a hub id (the local HF cache first); served under the "
        "directory's name (a .gguf file's stem) or the hub id",
    )
    p.add_argument(
        "--served-model-name",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="with one MODEL (given before this flag): the name clients use instead of the "
        "default; more names, or the flag repeated, are aliases, as in vLLM",
    )
    p.add_argument(
        "--lora-modules",
        action="extend",
        nargs="+",
        metavar="NAME=PATH",
        help="with one MODEL: PEFT LoRA adapters on it, each served as the model NAME (as in "
        "vLLM); PATH is an adapter directory (adapter_config.json) or a cached hub id. The "
        "adapters share the base's weights; on torch (peft) and vLLM, OpenVINO falls back to torch",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hfskills",
        description="Serve Hugging Face models through "
        "hfskills skills with OpenAI- and Hugging Face-compatible APIs. Settings come from "
        "defaults < a TOML file (--config) < HFSKILLS_* environment variables < flags "
        "(docs/configuration.md).",
    )
    p.add_argument("--version", action="version", version=f"hfskills {hfskills.__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser(
        "serve",
        help="start the server (OpenAI and Hugging Face routes on one port)",
        description=textwrap.fill(
            "Start the server. Each MODEL (a local checkpoint directory, a directory "
            "holding one .gguf file, a .gguf file, or a hub id read from the local HF cache) is "
            "served under its directory's name or its hub id, with the task of its own head class "
            "(config.json architectures: BertModel -> text_embedding, LlamaForCausalLM -> "
            "text_generation). A MODEL whose model_type has no skill gets one generated on the fly "
            "into $HFSKILLS_CACHE/skills (~/.cache/hfskills/skills). MODELs add to the models of "
            "--config; a MODEL that cannot be served stops start-up with one line. With no MODEL "
            "and no [[models]], it serves the embedded default models (all-minilm-l6-v2, "
            "smollm2-135m-instruct) from their PyPI packages. Models load on their first request "
            "unless --preload is given. Logs are JSON lines on stderr.",
            width=96,
        ),
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_arguments(s)
    s.add_argument(
        "--config", metavar="FILE", help="TOML settings file (see docs/configuration.md)"
    )
    s.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port to listen on (default 8000)")
    s.add_argument(
        "--skills-dir",
        action="append",
        metavar="D",
        help="extra directory of hf_*.py skills (repeatable)",
    )
    s.add_argument(
        "--memory-budget",
        type=int,
        metavar="BYTES",
        help="bytes the model cache may hold (default: 80%% of available memory)",
    )
    s.add_argument("--workers", type=int, help="inference worker threads (default 4)")
    s.add_argument(
        "--preload",
        action="store_true",
        help="load the default model of each task and every pinned model before listening "
        "(GET /ready then vouches for those loads)",
    )
    s.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        metavar="LEVEL",
        help="debug, info, warning, error or critical, any case (default info); from warning "
        "up, libraries' warnings and progress bars are silenced",
    )
    s.add_argument(
        "--on-demand-models",
        action="store_true",
        help="let requests name a model that is not served: a local checkpoint path or a hub "
        "id in the local HF cache, loaded on its first request under the memory budget. "
        "RISK: any client can then make the server read local files and load them (memory, "
        "CPU); use only where every client is trusted",
    )
    s.add_argument(
        "--ssl-certfile",
        metavar="PEM",
        help="serve HTTPS (TLS 1.2 or newer) with this certificate chain; with --ssl-keyfile",
    )
    s.add_argument("--ssl-keyfile", metavar="PEM", help="the private key of --ssl-certfile")
    s.add_argument(
        "--ray",
        action="store_true",
        help="serve on Ray Serve (the ray extra): join the cluster at RAY_ADDRESS, else start "
        "one here; Ray's HTTP proxy listens on --host/--port, replicas autoscale (docs/ray.md)",
    )
    s.add_argument(
        "--ray-replicas",
        type=_replica_range,
        metavar="MIN:MAX",
        help="with --ray: the autoscaler's fewest and most replicas, e.g. 1:4, or N for N:N "
        "(default 1:1; settings ray_min_replicas, ray_max_replicas)",
    )
    s.add_argument(
        "--ray-per-model",
        action="store_true",
        help="with --ray: each model a deployment of its own, with its own replicas and "
        "autoscaling, behind the app's (setting ray_per_model)",
    )
    s.set_defaults(run=serve)
    m = sub.add_parser(
        "models",
        help="list the model catalog and the backend each model gets",
        description="List the catalog the server would serve (the same settings sources): "
        "name, skill, tasks, the backend its first task loads on (the first hardware "
        "candidate, e.g. 'openvino (GenAI)'), and the checkpoint. Entries that cannot be "
        "served are listed as UNAVAILABLE with the reason, and the exit status is then 1. "
        "MODEL arguments are resolved as `hfskills serve MODEL...` resolves them.",
    )
    _model_arguments(m)
    m.add_argument("--config", metavar="FILE", help="TOML settings file")
    m.add_argument(
        "--skills-dir", action="append", metavar="D", help="extra directory of hf_*.py skills"
    )
    m.set_defaults(run=models)
    sub.add_parser(
        "hardware",
        help="list the hardware detected here, with reasons",
        description="Each backend in detection order (cuda, rocm, mps, openvino, qnn, cpu), "
        "whether it is available here, and why.",
    ).set_defaults(run=hardware)
    k = sub.add_parser(
        "skills",
        help="list the discovered skills",
        description="The skills found in the built-in skillset and the --skills-dir folders: "
        "name, family, tasks; files that could not be used are listed as SKIPPED.",
    )
    k.add_argument(
        "--skills-dir", action="append", metavar="D", help="extra directory of hf_*.py skills"
    )
    k.set_defaults(run=skills)
    _bench_parser(sub)
    _keys_parser(sub)
    return p


def _keys_parser(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser(
        "keys",
        help="create, list and revoke API keys (docs/security.md)",
        description="API keys in the control plane's database (database_url): a key is shown "
        "once when created and stored only as its SHA-256. A running server sees a change "
        "within auth_keys_refresh_s.",
    )
    actions = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    c = actions.add_parser("create", help="create a key and print it (once)")
    c.add_argument("--name", required=True, help="who or what holds the key, e.g. ci-bot")
    c.add_argument(
        "--role",
        choices=("admin", "user", "readonly"),
        default="user",
        help="admin: everything; user: inference and reads (default); readonly: lists, metrics",
    )
    u = actions.add_parser(
        "update",
        help="change a key's name, role, models, own limits or safety switches",
        description="Change what the options name; the rest stays. The key itself never "
        "changes. A running server sees the change within auth_keys_refresh_s.",
    )
    u.add_argument("key_id", metavar="ID", help="the key's id (hfskills keys list)")
    u.add_argument("--name", help="a new name")
    u.add_argument("--role", choices=("admin", "user", "readonly"), help="a new role")
    u.add_argument("--all-models", action="store_true", help="let it use every model again")
    u.add_argument("--no-limits", action="store_true", help="back to the server's limits")
    u.add_argument(
        "--default-safety", action="store_true", help="every safety hook at its default again"
    )
    for action in (c, u):
        action.add_argument(
            "--model",
            action="append",
            metavar="NAME",
            help="a model (name, alias or route) the key may use; repeatable (default: every "
            "model)",
        )
        action.add_argument(
            "--rpm",
            type=int,
            metavar="N",
            help="its own requests per minute (in place of rate_limit_requests_per_minute)",
        )
        action.add_argument(
            "--tpm",
            type=int,
            metavar="N",
            help="its own tokens per minute (in place of rate_limit_tokens_per_minute)",
        )
        action.add_argument(
            "--max-concurrent",
            type=int,
            metavar="N",
            help="its own requests at once (in place of max_concurrent_requests_per_key)",
        )
        action.add_argument(
            "--safety",
            action="append",
            metavar="HOOK=on|off",
            help="switch a safety hook for this key: a rule's name, pii, classifier, or * for "
            "all; repeatable (default: every hook at its default)",
        )
    listing = actions.add_parser("list", help="list the keys, revoked ones too (never the keys)")
    r = actions.add_parser("revoke", help="revoke a key by its id")
    r.add_argument("key_id", metavar="ID", help="the key's id (hfskills keys list)")
    for action in (c, u, listing, r):
        action.add_argument(
            "--config", metavar="FILE", help="TOML settings file (its database_url)"
        )
    k.set_defaults(run=keys)


BENCH_EPILOG = """\
examples:
  hfskills bench --url http://127.0.0.1:8000           every generation, embedding and
                                                       classification model served there
  hfskills bench --url http://127.0.0.1:8000 --model smollm2-135m-instruct \\
                 --num-prompts 50 --concurrency 8 --max-tokens 64
  hfskills bench --config hfskills.toml --model gen    the catalog, served in this process
  hfskills bench --url URL --model gen --eval qa.jsonl --update-registry
                                                       quality, written to the registry
  hfskills bench --summary --url http://127.0.0.1:8000 the server's GET /benchmark/summary
  hfskills bench --summary                             the same table from the local file

records: one JSON line per model run, appended to --out (default: the bench_jsonl setting, else
$XDG_STATE_HOME/hfskills/bench.jsonl), with vLLM's metric names (mean_ttft_ms, p99_itl_ms,
output_throughput, ...); docs/control-plane.md#benchmarks. Exit status: 0; 1 when a model
answered nothing or an input is bad (unknown model, bad eval file); 2 when the server is
unreachable.
"""


def _bench_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "bench",
        help="benchmark served models: tokens/s, TTFT, TPOT, ITL, latency; quality from an "
        "eval file",
        description=textwrap.fill(
            "Load models over HTTP and record what was measured: output tokens/s (aggregate), "
            "TTFT, TPOT, ITL and end-to-end latency (mean, median, p50/p95/p99), requests/s, "
            "failed requests, the server's peak model memory. Generation models get streamed "
            "chat completions (greedy, --max-tokens tokens each), embedding models "
            "/v1/embeddings, classifiers the Inference API. The server is --url, or without "
            "one the local catalog (--config, HFSKILLS_* variables) served in this process on "
            "127.0.0.1. Prints a table and appends one JSON line per model to --out.",
            width=96,
        ),
        epilog=BENCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    b.add_argument(
        "--config", metavar="FILE", help="without --url: the TOML catalog to serve in-process"
    )
    b.add_argument(
        "--skills-dir", action="append", metavar="D", help="without --url: extra skills folder"
    )
    b.add_argument(
        "--model",
        dest="bench_models",
        action="append",
        metavar="NAME",
        help="a model (or alias, or route with --task) to benchmark; repeatable (default: every "
        "catalog model with a generation, embedding or classification task)",
    )
    b.add_argument(
        "--task",
        choices=("text_generation", "text_embedding", "text_classification"),
        help="the task to load (default: the model's first of these)",
    )
    b.add_argument(
        "--num-prompts", type=_positive(int), default=20, metavar="N",
        help="requests per model (default 20)",
    )  # fmt: skip
    b.add_argument(
        "--concurrency", type=_positive(int), default=4, metavar="C",
        help="requests in flight at once (default 4)",
    )  # fmt: skip
    b.add_argument(
        "--max-seconds", type=_positive(float), default=120.0, metavar="S",
        help="no request starts after S seconds per model (default 120)",
    )  # fmt: skip
    b.add_argument(
        "--max-tokens", type=_positive(int), default=32, metavar="T",
        help="tokens each generation request generates, EOS ignored (default 32)",
    )  # fmt: skip
    b.add_argument(
        "--timeout", type=_positive(float), default=120.0, metavar="S",
        help="bound of one request, sent as X-Request-Timeout too (default 120)",
    )  # fmt: skip
    b.add_argument(
        "--out",
        metavar="FILE",
        help="JSONL file the records are appended to (default: the bench_jsonl setting, else "
        "$XDG_STATE_HOME/hfskills/bench.jsonl)",
    )
    b.add_argument(
        "--eval",
        metavar="FILE",
        help='quality: a JSONL file of {"prompt", "expected", "task"?, "match"?} lines; '
        "generation is greedy and matches by --match, classification by the top label",
    )
    b.add_argument(
        "--eval-name",
        metavar="NAME",
        type=_metric_name,
        help="the quality metric's name (default: the eval file's stem)",
    )
    b.add_argument(
        "--match",
        choices=("contains", "exact"),
        default="contains",
        help="generation: the answer contains the expected text (case-insensitive; default), "
        "or equals it (whitespace-trimmed)",
    )
    b.add_argument(
        "--update-registry",
        action="store_true",
        help="write each score to the registry's quality metrics (PATCH /api/models/{model})",
    )
    b.add_argument(
        "--summary",
        action="store_true",
        help="print the comparison table per model, version and hardware instead of "
        "benchmarking: --url's GET /benchmark/summary, else the --out file",
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(run=bench)


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value

    return parse


def _replica_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition(":")
    try:
        pair = (int(low), int(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give MIN:MAX, e.g. 1:4, or N") from None
    if pair[0] < 0 or pair[1] < max(pair[0], 1):
        raise argparse.ArgumentTypeError(f"{text!r}: 0 <= MIN <= MAX and MAX >= 1")
    return pair


def _ray_replicas(pair: tuple[int, int] | None) -> dict[str, int]:
    """``--ray-replicas MIN:MAX`` as the settings it sets (none when not given)."""
    return {} if pair is None else {"ray_min_replicas": pair[0], "ray_max_replicas": pair[1]}


def _metric_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][\w.:/-]{0,63}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: letters, digits and . _ : / - (64 at most), starting with a letter or digit"
        )
    return text


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (HFSkillsError, FileNotFoundError) as exc:
        print(f"hfskills: error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)  # 2: the database is unreachable (host/control)
    except ValidationError as exc:  # a bad setting in the TOML file, the environment or a flag
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        print(f"hfskills: error: invalid setting {where}: {err['msg']}", file=sys.stderr)
        return 2
    except tomllib.TOMLDecodeError as exc:  # the --config file is no TOML
        config = getattr(args, "config", None) or "the configuration file"
        print(f"hfskills: error: {config} is not valid TOML: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
