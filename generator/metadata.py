"""Reading a model's metadata: config, processor files and weight sizes, from four sources.

Sources: a local directory (config.json, or one GGUF file), a hub id (metadata files only, via
huggingface_hub; offline it falls back to the local HF cache), the HF cache alone
(``--from-cache``), and a bare ``model_type`` (``AutoConfig.for_model``). Every value read here
is data: it is validated before anything downstream may turn it into code.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfskills.skillset.runtime.errors import GeneratorError

#: Files that describe the model and its processors (never weights).
METADATA_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "processor_config.json",
    "image_processor_config.json",
    "feature_extractor_config.json",
    "chat_template.jinja",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".onnx")

_MODEL_TYPE = re.compile(r"[a-z][a-z0-9_-]{0,63}\Z")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")


@dataclass(frozen=True)
class ModelMetadata:
    """Everything the generator knows about one model, whatever the source."""

    source: str
    source_kind: str  # directory | hub | cache | model_type
    model_type: str
    architectures: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    files: tuple[str, ...] = ()
    weight_bytes: int = 0
    gguf_file: str | None = None
    location: str | None = None

    @property
    def labels(self) -> dict[str, str]:
        id2label = self.config.get("id2label") or {}
        return {str(k): str(v) for k, v in id2label.items()} if isinstance(id2label, dict) else {}


def validate_model_type(value: Any, where: str = "config.json") -> str:
    """A model_type is plain lowercase ASCII (letters, digits, ``_``, ``-``) or it is refused."""
    if not isinstance(value, str):
        raise GeneratorError(f"{where}: model_type must be a string, got {type(value).__name__}")
    if unicodedata.normalize("NFKC", value) != value or not value.isascii():
        raise GeneratorError(f"{where}: model_type {value!r} is not plain ASCII")
    if not _MODEL_TYPE.match(value):
        raise GeneratorError(
            f"{where}: model_type {value!r} is not a valid name "
            "(lowercase letters, digits, _ and -)"
        )
    return value


def validate_architectures(value: Any, where: str = "config.json") -> tuple[str, ...]:
    """``architectures`` are transformers class names: ASCII identifiers, or refused."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GeneratorError(f"{where}: architectures must be a list of class names")
    for name in value:
        if not name.isascii() or not _IDENTIFIER.match(name):
            raise GeneratorError(f"{where}: architecture {name!r} is not a valid class name")
    return tuple(value)


def _from_config(config: dict[str, Any], **fields: Any) -> ModelMetadata:
    where = f"{fields['source']}: config"
    return ModelMetadata(
        model_type=validate_model_type(config.get("model_type"), where),
        architectures=validate_architectures(config.get("architectures"), where),
        config=config,
        **fields,
    )


def from_directory(
    path: str | Path,
    *,
    source_kind: str = "directory",
    source: str | None = None,
    weight_bytes: int | None = None,
) -> ModelMetadata:
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise GeneratorError(f"not a directory: {directory}")
    files = tuple(
        sorted(
            str(p.relative_to(directory))
            for p in directory.rglob("*")
            if p.is_file() and str(p.relative_to(directory)) in METADATA_FILES
        )
    )
    weights = [p for p in directory.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)]
    size = weight_bytes if weight_bytes is not None else sum(p.stat().st_size for p in weights)
    fields = {
        "source": source or str(directory),
        "source_kind": source_kind,
        "files": files,
        "weight_bytes": size,
        "location": str(directory),
    }
    config_path = directory / "config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise GeneratorError(f"{config_path}: not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise GeneratorError(f"{config_path}: must hold a JSON object")
        return _from_config(config, **fields)
    ggufs = sorted(p.name for p in weights if p.name.endswith(".gguf"))
    if len(ggufs) == 1:
        return _from_config(_gguf_config(directory, ggufs[0]), gguf_file=ggufs[0], **fields)
    raise GeneratorError(f"{directory}: no config.json (and not exactly one .gguf file)")


def _gguf_config(directory: Path, gguf_file: str) -> dict[str, Any]:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(directory), gguf_file=gguf_file).to_dict()
    except (ImportError, ValueError, OSError) as exc:
        raise GeneratorError(
            f"{directory / gguf_file}: cannot read GGUF metadata ({exc})"
        ) from None


def from_model_type(model_type: str) -> ModelMetadata:
    from transformers import AutoConfig

    validate_model_type(model_type, "--model-type")
    try:
        config = AutoConfig.for_model(model_type).to_dict()
    except ValueError:
        raise GeneratorError(
            f"unknown model_type {model_type!r}: not in transformers' CONFIG_MAPPING_NAMES"
        ) from None
    return ModelMetadata(
        source=model_type, source_kind="model_type", model_type=model_type, config=config
    )


def from_config(
    config: dict[str, Any], *, source: str, source_kind: str, location: str | None = None
) -> ModelMetadata:
    """Metadata from a config dict already read (a GGUF header, a hub file): validated the same
    way as a config.json read from a directory."""
    return _from_config(config, source=source, source_kind=source_kind, location=location or source)


def from_cache(repo_id: str, *, why: str | None = None) -> ModelMetadata:
    """Metadata of a hub model already in the local HF cache (no network). ``why`` says why the
    hub is not asked (it goes into the one-line error when the model is not cached)."""
    from . import hub

    snapshot = hub.cached_snapshot(repo_id)
    if snapshot is None:
        raise hub.HubUnavailable(
            hub.unavailable_message(
                repo_id, why or "--from-cache reads the cache only", command="generate-skill"
            )
        )
    return from_directory(snapshot, source_kind="cache", source=repo_id)


def from_hub(repo_id: str) -> ModelMetadata:
    """Download only the metadata files of a hub model; the local HF cache when offline.

    The cache is used at once with ``HF_HUB_OFFLINE``; otherwise the hub is asked once with a
    short timeout (`hub.PROBE_TIMEOUT_S`), and an unreachable hub means the cache."""
    from huggingface_hub import HfApi, snapshot_download

    from . import hub

    if hub.offline():
        return from_cache(repo_id, why="HF_HUB_OFFLINE is set, so the hub is not asked")
    if not hub.is_hub_id(repo_id):
        raise GeneratorError(f"{repo_id!r} is neither a local directory nor a valid hub id")
    why = hub.probe(repo_id)  # GeneratorError when the hub says there is no such model
    if why:
        meta = from_cache(repo_id, why=why)
        print(f"generate-skill: {why}; read the local HF cache", file=sys.stderr)
        return meta
    patterns = list(METADATA_FILES)  # metadata only: never the weights
    try:
        info = HfApi().model_info(repo_id, files_metadata=True, timeout=hub.PROBE_TIMEOUT_S)
        snapshot = snapshot_download(
            repo_id, allow_patterns=patterns, etag_timeout=hub.PROBE_TIMEOUT_S
        )
    except Exception as exc:  # the hub went away between the probe and the download
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return from_cache(repo_id, why=f"the hub is unreachable ({reason})")
    size = sum(s.size or 0 for s in info.siblings or [] if s.rfilename.endswith(WEIGHT_SUFFIXES))
    return from_directory(snapshot, source_kind="hub", source=repo_id, weight_bytes=size)


def read(
    source: str | None = None, *, model_type: str | None = None, from_cache_only: bool = False
) -> ModelMetadata:
    """Metadata from whichever source the user named (see the module docstring)."""
    if model_type is not None:
        if source is not None:
            raise GeneratorError("give either SOURCE or --model-type, not both")
        return from_model_type(model_type)
    if not source:
        raise GeneratorError("give a SOURCE (hub id or directory) or --model-type")
    path = Path(source).expanduser()
    if path.is_dir():
        return from_directory(path)
    if source.startswith((".", "/", "~")) or path.exists():
        raise GeneratorError(f"no such directory: {source}")
    if from_cache_only:
        return from_cache(source)
    return from_hub(source)
