"""Where a checkpoint lives and how transformers should be asked to load it.

A checkpoint is a hub id (resolved by transformers through the HF cache), a local directory,
a directory holding one GGUF file, or a path to a ``.gguf`` file. GGUF checkpoints load through
transformers' ``gguf_file=`` (weights are dequantized; needs the ``gguf`` package).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError


@dataclass(frozen=True)
class Checkpoint:
    """``location`` goes to ``from_pretrained``; ``kwargs`` go with it (``gguf_file``...)."""

    location: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return Path(self.location).is_dir()

    def file(self, name: str) -> Path | None:
        """A file of the checkpoint (local, or from the HF cache/hub), or None if it has none."""
        if self.is_local:
            path = Path(self.location) / name
            return path if path.is_file() else None
        from transformers.utils import cached_file

        found = cached_file(
            self.location,
            name,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        return Path(found) if found else None


def resolve(model: str | Path, gguf_file: str | None = None) -> Checkpoint:
    """Turn a user's ``model`` argument into a `Checkpoint`, or say clearly what is wrong."""
    if not isinstance(model, str | Path) or not str(model).strip():
        raise ModelLoadError(f"a checkpoint must be a hub id or a path, got {model!r}")
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return Checkpoint(str(path.parent), {"gguf_file": path.name})
    if path.is_dir():
        if gguf_file is not None:
            if not (path / gguf_file).is_file():
                raise ModelLoadError(f"GGUF file {gguf_file!r} not found in {path}")
            return Checkpoint(str(path), {"gguf_file": gguf_file})
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            if len(ggufs) == 1:
                return Checkpoint(str(path), {"gguf_file": ggufs[0]})
            if len(ggufs) > 1:
                raise ModelLoadError(f"{path} holds several GGUF files {ggufs}; pass gguf_file=")
            raise ModelLoadError(f"{path} is not a checkpoint: no config.json and no .gguf file")
        return Checkpoint(str(path))
    if str(model).startswith((".", "/", "~")) or path.exists():
        raise ModelLoadError(f"checkpoint path not found: {path}")
    return Checkpoint(str(model), {"gguf_file": gguf_file} if gguf_file else {})
