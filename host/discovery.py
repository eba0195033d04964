"""Skill discovery: every ``hf_*.py`` in the built-in skillset and in ``--skills-dir`` folders.

Each file is imported and checked against the skill contract; a file that fails to import or
breaks the contract is reported and skipped, never fatal. Later folders override earlier ones.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import hfskills.skillset as builtin_skillset

log = logging.getLogger("hfskills.host")

REQUIRED_ATTRIBUTES = ("model_type", "family", "tasks", "hardware")


@dataclass(frozen=True)
class SkillInfo:
    name: str
    cls: type
    path: Path
    #: Written by the host's on-the-fly generation (host/generated.py), not found in a folder.
    generated: bool = False

    @property
    def model_type(self) -> str:
        return self.cls.model_type

    @property
    def note(self) -> str:
        """What log lines add about the skill: where it was written when generated on the fly."""
        return f"; skill generated on the fly at {self.path}" if self.generated else ""


@dataclass(frozen=True)
class Registry:
    skills: dict[str, SkillInfo]
    broken: dict[str, str]  # path -> why it was skipped

    def by_model_type(self, model_type: str) -> SkillInfo | None:
        # a copy: on-demand models may add a generated skill from a worker thread meanwhile
        return next((s for s in list(self.skills.values()) if s.model_type == model_type), None)


def contract_errors(cls: type) -> list[str]:
    """What ``cls`` lacks of the skill contract (empty when it conforms): a non-empty
    ``tasks`` (names, or a generated skill's name -> `Task` table), ``init_<hardware>`` for each
    declared hardware, and ``create_<hardware>_<task>_endpoint_handler`` for each pair the skill
    does not declare in ``unsupported``."""
    missing = [a for a in REQUIRED_ATTRIBUTES if not hasattr(cls, a)]
    if missing:
        return [f"missing attributes {missing}"]
    errors = []
    if not isinstance(cls.tasks, tuple | dict) or not cls.tasks:
        errors.append("tasks must be a non-empty tuple of names or dict of declarations")
        return errors
    unsupported = getattr(cls, "unsupported", {}) or {}
    for hw in cls.hardware:
        if not callable(getattr(cls, f"init_{hw}", None)):
            errors.append(f"no init_{hw}")
        for task in cls.tasks:
            if (hw, task) in unsupported:
                continue
            if not callable(getattr(cls, f"create_{hw}_{task}_endpoint_handler", None)):
                errors.append(f"no create_{hw}_{task}_endpoint_handler")
    return errors


def _load_file(path: Path, package: str | None, prefix: str = "hfskills_user_skills") -> type:
    name = path.stem
    if package:
        module = importlib.import_module(f"{package}.{name}")
    else:
        spec = importlib.util.spec_from_file_location(f"{prefix}.{name}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise ImportError(f"{path.name} defines no class {name}")
    return cls


def load_skill(path: Path, *, generated: bool = False) -> SkillInfo:
    """Import one skill file and check it against the skill contract (a `TypeError` says what
    it lacks). Generated skills import under their own module prefix, so a ``--skills-dir``
    skill of the same name is never replaced in ``sys.modules``."""
    prefix = "hfskills_generated_skills" if generated else "hfskills_user_skills"
    cls = _load_file(path, None, prefix)
    errors = contract_errors(cls)
    if errors:
        raise TypeError("breaks the skill contract: " + "; ".join(errors[:5]))
    return SkillInfo(path.stem, cls, path, generated=generated)


def discover(extra_dirs: list[Path] | tuple[Path, ...] = (), *, builtin: bool = True) -> Registry:
    """Every skill in the built-in skillset (unless ``builtin`` is off) and in ``extra_dirs``."""
    skills: dict[str, SkillInfo] = {}
    broken: dict[str, str] = {}
    folders = (
        [(Path(builtin_skillset.__file__).parent, builtin_skillset.__name__)] if builtin else []
    )
    folders += [(Path(d).expanduser(), None) for d in extra_dirs]
    for folder, package in folders:
        if not folder.is_dir():
            broken[str(folder)] = "not a directory"
            log.warning("skills dir %s is not a directory; skipped", folder)
            continue
        for path in sorted(folder.glob("hf_*.py")):
            try:
                cls = _load_file(path, package)
                errors = contract_errors(cls)
                if errors:
                    raise TypeError("breaks the skill contract: " + "; ".join(errors[:5]))
            except Exception as exc:  # a broken skill must never take the server down
                broken[str(path)] = f"{type(exc).__name__}: {exc}"
                log.warning("skill %s skipped: %s", path, broken[str(path)])
                continue
            skills[path.stem] = SkillInfo(path.stem, cls, path)
    return Registry(skills, broken)
