"""``hfskills``: serve models, list the catalog, show the hardware.

hfskills serve [--config FILE] [--host H] [--port P] [--skills-dir D]...
hfskills models [--config FILE]
hfskills hardware
hfskills skills [--skills-dir D]...
"""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from hfskills.skillset.runtime.errors import HFSkillsError


def _settings(args: argparse.Namespace):
    from .config import load_settings

    return load_settings(
        getattr(args, "config", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        skills_dirs=getattr(args, "skills_dir", None) or None,
        memory_budget_bytes=getattr(args, "memory_budget", None),
        workers=getattr(args, "workers", None),
        preload=True if getattr(args, "preload", False) else None,
        log_level=getattr(args, "log_level", None),
    )


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import build_app

    settings = _settings(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = build_app(settings)
    host = app.state.host
    for model in host.catalog.models.values():
        print(
            f"serving {model.name} ({model.skill.name}: {', '.join(model.tasks)}) from "
            f"{model.location}",
            file=sys.stderr,
        )
    print(f"hfskills listening on http://{settings.host}:{settings.port}", file=sys.stderr)
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False
    )
    return 0


def models(args: argparse.Namespace) -> int:
    from . import catalog
    from .discovery import discover

    settings = _settings(args)
    registry = discover(settings.skills_dirs)
    built = catalog.build(settings, registry)
    for model in built.models.values():
        aliases = f" (aliases: {', '.join(model.aliases)})" if model.aliases else ""
        print(
            f"{model.name:<28} {model.skill.name:<14} {', '.join(model.tasks):<24} "
            f"{model.location}{aliases}"
        )
    for name, why in built.errors.items():
        print(f"{name:<28} UNAVAILABLE: {why}")
    return 0


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hfskills",
        description="Serve Hugging Face models through "
        "hfskills skills with OpenAI- and Hugging Face-compatible APIs.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "serve",
        help="start the server",
        description="Start the server. With no "
        "--config and no [[models]], it serves the embedded default models "
        "(all-minilm-l6-v2, smollm2-135m-instruct) from their PyPI packages.",
    )
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
    s.add_argument("--preload", action="store_true", help="load default and pinned models at start")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    s.set_defaults(run=serve)
    m = sub.add_parser("models", help="list the model catalog")
    m.add_argument("--config", metavar="FILE", help="TOML settings file")
    m.add_argument("--skills-dir", action="append", metavar="D")
    m.set_defaults(run=models)
    sub.add_parser("hardware", help="list the hardware detected here, with reasons").set_defaults(
        run=hardware
    )
    k = sub.add_parser("skills", help="list the discovered skills")
    k.add_argument("--skills-dir", action="append", metavar="D")
    k.set_defaults(run=skills)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (HFSkillsError, FileNotFoundError) as exc:
        print(f"hfskills: error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    except ValidationError as exc:  # a bad setting in the TOML file, the environment or a flag
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        print(f"hfskills: error: invalid setting {where}: {err['msg']}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
