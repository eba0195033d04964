"""The on-disk cache of exported graphs (OpenVINO IR, ONNX, TensorRT engines).

An export is keyed by what determines it: the checkpoint's identity (a local directory's
weight and config files by name, size and mtime; a hub id by id and revision), the task, the
format and precision, plus anything else the exporter names (shapes, GPU name). A changed
checkpoint gets a new key, so a stale export is never served. Root: ``$HFSKILLS_CACHE``, else
``~/.cache/hfskills``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .checkpoint import Checkpoint

#: Files whose content decides an export (weights, config, tokenizer).
_IDENTITY_SUFFIXES = (".json", ".safetensors", ".bin", ".gguf", ".model", ".txt", ".pt")


def root() -> Path:
    return Path(os.environ.get("HFSKILLS_CACHE") or Path.home() / ".cache" / "hfskills")


def identity(ckpt: Checkpoint, revision: str | None = None) -> dict[str, Any]:
    """What identifies a checkpoint's content, cheaply (no hashing of weights)."""
    if not ckpt.is_local:
        return {"hub": ckpt.location, "revision": revision or "main", **ckpt.kwargs}
    base = Path(ckpt.location)
    files = sorted(
        (p.relative_to(base).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in base.rglob("*")
        if p.is_file() and p.suffix in _IDENTITY_SUFFIXES and ".hfskills" not in p.parts
    )
    return {"dir": str(base.resolve()), "files": files, **ckpt.kwargs}


def key(ckpt: Checkpoint, task: str, fmt: str, precision: str, **extra: Any) -> str:
    """A short stable hash of everything that decides an export."""
    facts = {"ckpt": identity(ckpt, extra.pop("revision", None)), "task": task, "format": fmt}
    facts.update(precision=precision, **extra)
    blob = json.dumps(facts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def entry(ckpt: Checkpoint, task: str, fmt: str, precision: str, **extra: Any) -> Path:
    """The directory one export lives in: ``<root>/<format>/<name>-<task>-<key>/``."""
    name = Path(ckpt.location).name if ckpt.is_local else ckpt.location.replace("/", "--")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
    return root() / fmt / f"{safe}-{task}-{key(ckpt, task, fmt, precision, **extra)}"


def ready(path: Path) -> bool:
    """An export is complete once its ``.done`` marker is written (exports write it last)."""
    return (path / ".done").is_file()


def mark_ready(path: Path, facts: dict[str, Any]) -> None:
    (path / ".done").write_text(json.dumps(facts, sort_keys=True, default=str))
