"""Skills generated on the fly: a checkpoint whose model_type no skill serves gets one.

When neither the built-in skillset nor a ``--skills-dir`` folder has a skill for a checkpoint's
``model_type``, the host runs the generator exactly as ``generate-skill`` does: the metadata is
read and validated (`hfskills.generator.metadata`), the module is rendered, formatted and checked
(`hfskills.generator.render.render`: the allow-listed imports, the literals, every contract
method), then written into the host's cache, ``$HFSKILLS_CACHE/skills`` (default
``~/.cache/hfskills/skills``; never the installed package), imported, checked against the skill
contract like any discovered skill, and added to the registry, so later checkpoints of the same
type reuse it. The start-up log line and ``GET /admin/models`` say which skills were generated
and where. A model_type the generator cannot serve is an error naming docs/coverage.md.
"""

from __future__ import annotations

import logging
import shlex
import threading
from pathlib import Path
from typing import Any

from hfskills.skillset.runtime import cache
from hfskills.skillset.runtime import checkpoint as checkpoints
from hfskills.skillset.runtime.errors import HFSkillsError

from .discovery import Registry, SkillInfo, load_skill

log = logging.getLogger("hfskills.host")

COVERAGE = "docs/coverage.md"
_LOCK = threading.Lock()  # one generation at a time (on-demand models resolve in threads)


class SkillGenerationError(HFSkillsError):
    """No skill serves this model_type and the generator cannot make one."""

    code = "no_skill"
    status = 404


def directory() -> Path:
    """Where generated skills are written: ``$HFSKILLS_CACHE/skills``."""
    return cache.root() / "skills"


def _metadata(location: str, config: dict[str, Any], source: str) -> Any:
    from hfskills.generator import metadata

    ckpt = checkpoints.resolve(location)
    if ckpt.is_local and "gguf_file" not in ckpt.kwargs:
        kind = "directory" if source == location else "cache"  # a hub id's cached snapshot
        return metadata.from_directory(ckpt.location, source=source, source_kind=kind)
    # a GGUF file (its header, read by the catalog) or a hub id (config.json from the hub)
    kind = "directory" if ckpt.is_local else "hub"
    return metadata.from_config(config, source=source, source_kind=kind, location=location)


def _regenerate(meta: Any) -> str:
    """The header's "Regenerate with" line: generate-skill into this cache folder (a GGUF file
    or a directory with several is named by its model_type)."""
    source = meta.source
    if meta.source_kind == "directory" and not (Path(source) / "config.json").is_file():
        what = f"--model-type {meta.model_type}"
    else:
        what = shlex.quote(source)
    return f"generate-skill {what} --output {shlex.quote(str(directory()))} --force"


def skill_for(
    location: str, config: dict[str, Any], registry: Registry, *, source: str | None = None
) -> SkillInfo:
    """The skill for ``config``'s model_type, generated into `directory` when none exists.

    ``location`` is the checkpoint (a directory, a GGUF file or a hub id) whose ``config`` was
    read; ``source`` names it in the generated module (default: ``location``)."""
    from hfskills.generator import render as render_mod

    model_type = config.get("model_type")
    with _LOCK:
        existing = registry.by_model_type(str(model_type))
        if existing is not None:  # generated meanwhile for another checkpoint of this type
            return existing
        try:
            meta = _metadata(location, config, source or location)
            skill = render_mod.render(meta, regenerate=_regenerate(meta))
            path, state = render_mod.write(skill, directory(), force=True)
        except HFSkillsError as exc:
            raise SkillGenerationError(
                f"no skill serves model_type {model_type!r} and none can be generated: "
                f"{exc.message} (see {COVERAGE} for the model_types hfskills serves)"
            ) from None
        try:
            info = load_skill(path, generated=True)
        except Exception as exc:  # a generated module that does not import: say so, once
            raise SkillGenerationError(
                f"the skill generated for model_type {model_type!r} ({path}) cannot be used: "
                f"{type(exc).__name__}: {exc} (see {COVERAGE})"
            ) from None
        registry.skills[info.name] = info
    log.info(
        "generated skill %s for model_type %r on the fly (%s): %s",
        info.name,
        model_type,
        "written" if state == "written" else "unchanged since the last start",
        path,
    )
    return info
