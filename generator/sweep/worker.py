# Verifies model_types one after another inside one long-lived subprocess of the sweep (torch
# and transformers are imported once per worker, not per type); the parent kills and replaces a
# worker that crashes or hangs, so one bad type never stops the sweep.
"""Worker side of the sweep: ``python -m hfskills.generator.sweep.worker``.

Protocol: one JSON object per line. The parent writes ``{"model_type": ..., "root": ...}`` on
the worker's stdin; the worker answers ``{"event": "stage", "stage": ...}`` as each stage starts
and one ``{"event": "result", ...}`` per type on the file descriptor it was given (its stdout
at start; library prints go to stderr). ``HFSKILLS_SWEEP_INJECT=type:crash|hang|fail,...``
(tests only) makes a type crash the worker, hang, or fail a stage.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

INJECT_ENV = "HFSKILLS_SWEEP_INJECT"


def _injected(model_type: str) -> str | None:
    for item in os.environ.get(INJECT_ENV, "").split(","):
        name, _, action = item.partition(":")
        if name == model_type and action:
            return action
    return None


def _where(exc: BaseException) -> str:
    """The innermost frame outside this package, for a reason's context."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if "/generator/sweep/" not in frame.filename:
            parts = Path(frame.filename).parts
            short = "/".join(parts[-2:])
            return f" (at {short}:{frame.lineno})"
    return ""


def _import_skill(path: Path, class_name: str) -> type:
    spec = importlib.util.spec_from_file_location(f"_sweep_{class_name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, class_name)


def verify(model_type: str, root: Path, stage: Callable[[str], None]) -> dict[str, Any]:
    """Build, generate, load and verify one type; return its result record (never raises)."""
    from hfskills.generator.metadata import from_model_type
    from hfskills.generator.render import render, write
    from hfskills.generator.taxonomy import classify

    from . import tiny
    from .references import REFERENCES, Mismatch

    current = "classify"
    record: dict[str, Any] = {"model_type": model_type}

    def enter(name: str) -> None:
        nonlocal current
        current = name
        stage(name)

    try:
        enter("classify")
        classification = classify(model_type)
        record["family"] = classification.family
        record["tasks"] = [plan.name for plan in classification.tasks]
        action = _injected(model_type)
        if action == "crash":
            os._exit(3)
        if action == "hang":
            time.sleep(10**6)
        if action == "fail":
            enter("config")
            raise tiny.StageError("config", "injected failure (HFSKILLS_SWEEP_INJECT)")
        paths = tiny.build(model_type, classification, root / "checkpoints", enter)
        enter("generate")
        skill_file = write(render(from_model_type(model_type)), root / "skills", force=True)[0]
        class_name = skill_file.stem
        skill_cls = _import_skill(skill_file, class_name)
        declared = tuple(getattr(skill_cls, "tasks", ()))
        if set(declared) != set(record["tasks"]):
            raise tiny.StageError(
                "generate", f"skill declares {declared}, taxonomy {record['tasks']}"
            )
        endpoints = {}
        for task in record["tasks"]:
            enter("load")
            skill = skill_cls()
            endpoints[task] = skill.init_cpu(str(paths[task]), task)
        for task in record["tasks"]:
            enter(f"verify:{task}")
            reference = REFERENCES.get(task)
            if reference is None:
                raise tiny.StageError(f"verify:{task}", "no reference for this task")
            skill = skill_cls()
            handler = getattr(skill, f"create_cpu_{task}_endpoint_handler")(endpoints[task])
            reference(handler, paths[task], skill_cls)
        record.update(status="verified", stage="", reason="")
    except tiny.StageError as exc:
        record.update(status="failed", stage=exc.stage, reason=exc.reason)
    except Mismatch as exc:  # the skill ran, and its output differs from transformers'
        record.update(status="failed", stage=current, reason=str(exc))
    except Exception as exc:
        reason = tiny.first_line(exc) + _where(exc)
        record.update(status="failed", stage=current, reason=reason)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return record


def _quiet() -> None:
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    import torch
    import transformers

    torch.set_num_threads(int(os.environ.get("HFSKILLS_SWEEP_THREADS", "1")))
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    import logging

    logging.getLogger("hfskills").setLevel(logging.WARNING)


def serve(channel: TextIO) -> None:
    """Answer requests from stdin until it closes."""
    _quiet()

    def send(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    send({"event": "ready"})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        start = time.perf_counter()
        record = verify(
            request["model_type"],
            Path(request["root"]),
            lambda name: send({"event": "stage", "stage": name}),
        )
        record["seconds"] = round(time.perf_counter() - start, 2)
        send({"event": "result", **record})


def main() -> None:
    channel = os.fdopen(os.dup(1), "w")  # the protocol keeps the real stdout
    os.dup2(2, 1)  # anything printed by libraries goes to stderr
    sys.stdout = sys.stderr
    serve(channel)


if __name__ == "__main__":
    main()
