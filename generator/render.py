"""Rendering a skill module from its template, then proving it is what we meant to write.

A skill is declarations only (`runtime.Skill` holds the methods, `runtime.tasks` each task's
one implementation): the classification from transformers' mappings, each task's variant, the
dtypes, and the (hardware, task) pairs that cannot work with the reason (`tasks.unsupported_on`).
The context handed to Jinja holds only validated identifiers and values that the template
emits through the ``py`` filter (``repr``). The rendered text is parsed with ``ast``, formatted
with ruff, parsed again and checked (one import, one class of the expected name whose body is
nothing but literal assignments and ``Task(...)`` of literals, every declaration equal to what
was classified) before anyone may write it.
"""

from __future__ import annotations

import ast
import keyword
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from hfskills.skillset.runtime import skill as runtime_skill
from hfskills.skillset.runtime import tasks as runtime_tasks
from hfskills.skillset.runtime.errors import GeneratorError

from .metadata import ModelMetadata, validate_model_type
from .taxonomy import Classification, classify

#: The hardware every skill declares, in order.
HARDWARE = runtime_skill.HARDWARE
#: The dtype each hardware loads in (rendered into each skill's `dtypes` table).
DTYPES = {
    "cpu": "float32",
    "cuda": "bfloat16",
    "rocm": "bfloat16",
    "mps": "float16",
    "openvino": "float32",
    "qnn": "float32",
}
#: The one import a skill has.
IMPORT = ("hfskills.skillset.runtime", ("Skill", "Task"))
#: What a "Regenerate with" command line may hold (it is written into a docstring).
_COMMAND = re.compile(r"[A-Za-z0-9_./~:@+= -]{1,300}\Z")


@dataclass(frozen=True)
class RenderedSkill:
    module_name: str
    class_name: str
    text: str

    @property
    def filename(self) -> str:
        return f"{self.module_name}.py"


def module_name_for(model_type: str) -> str:
    name = "hf_" + validate_model_type(model_type).replace("-", "_")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise GeneratorError(f"model_type {model_type!r} gives no valid module name")
    return name


def _py(value: Any) -> str:
    """A Python literal for plain data (str, int, float, bool, None): never raw text."""
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    raise GeneratorError(f"refusing to render a {type(value).__name__} as a literal")


def _pytuple(values: Any) -> str:
    items = [_py(v) for v in values]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("hfskills.templates"))),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["py"] = _py
    env.filters["pytuple"] = _pytuple
    return env


#: image_segmentation's variant per source mapping: the default subtask of its heads.
SEGMENTATION_SUBTASKS = {
    "universal_segmentation": "panoptic",
    "instance_segmentation": "instance",
    "semantic_segmentation": "semantic",
}


#: Architectures whose every position mixes with the padded ones, so a padded batch changes each
#: input's answer: their text tasks batch inputs of one length only (variant "unpadded"). The
#: coverage sweep found each (a batch differs from the same inputs one by one).
UNPADDED = {
    "fnet": "mixes tokens with a Fourier transform over the whole padded length (no mask)",
    "nystromformer": "picks its landmarks from segments of the padded sequence",
    "yoso": "hashes the padded positions into its attention buckets",
    "convbert": "its span-based dynamic convolution reads the padded neighbours",
}
TEXT_TASKS = (
    "text_embedding",
    "fill_mask",
    "text_classification",
    "token_classification",
    "question_answering",
)


def variants(classification: Classification) -> dict[str, str]:
    """Which implementation of each task this architecture needs (`runtime.tasks.FACTORIES`),
    decided as transformers' own pipelines decide it."""
    found = {}
    for plan in classification.tasks:
        variant = "default"
        if plan.name == "automatic_speech_recognition":
            variant = "ctc" if plan.variant == "ctc" else "seq2seq"
        elif plan.name == "text_embedding" and classification.family == "vision-text":
            # get_text_features of the joint model; SigLIP's texts padded to max_length, as
            # trained (it pools the last position, so a shorter pad would change the vector)
            variant = "joint_padded" if "siglip" in classification.model_type else "joint"
        elif plan.name == "zero_shot_image_classification":
            # transformers' zero-shot pipeline: SigLIP scores each pair with a sigmoid (and was
            # trained on texts padded to max_length); CLIP-like models use a softmax over labels
            variant = "sigmoid" if "siglip" in classification.model_type else "softmax"
        elif plan.name == "image_embedding" and classification.family != "vision-text":
            variant = "pooled"  # a vision backbone's pooler_output (image-feature-extraction)
        elif plan.name == "image_segmentation":
            # the subtask transformers' image-segmentation pipeline runs for this head's mapping
            variant = SEGMENTATION_SUBTASKS[plan.variant]
        elif plan.name in TEXT_TASKS and classification.model_type in UNPADDED:
            variant = "unpadded"
        found[plan.name] = variant
    return found


def declarations(classification: Classification) -> tuple[dict[str, Any], dict[Any, str]]:
    """The `Task` of each task and the unsupported (hardware, task) pairs with the reason."""
    chosen = variants(classification)
    tasks = {
        p.name: runtime_skill.Task(p.model_class, p.task.processor, chosen[p.name])
        for p in classification.tasks
    }
    unsupported = {}
    for hw in HARDWARE:
        for name, task in tasks.items():
            reason = runtime_tasks.unsupported_on(hw, name, task, classification.family)
            if reason is not None:
                unsupported[(hw, name)] = reason
    return tasks, unsupported


def regenerate_command(metadata: ModelMetadata, given: str | None) -> str:
    """The "Regenerate with" line: ``given`` (the CLI's own command) when it is plain, else
    the model-type command (it is written into the docstring, so never raw text)."""
    if given is not None and _COMMAND.match(given) and '"""' not in given:
        return given
    return f"generate-skill --model-type {metadata.model_type} --output skillset --force"


def render(metadata: ModelMetadata, *, regenerate: str | None = None) -> RenderedSkill:
    """Render, format and check the skill for ``metadata.model_type``; ``regenerate`` is the
    command line its header names (default: the committed-skillset command)."""
    classification = classify(metadata.model_type)
    module_name = module_name_for(metadata.model_type)
    for plan in classification.tasks:
        if not plan.model_class.isidentifier():  # comes from transformers, checked all the same
            raise GeneratorError(f"transformers class {plan.model_class!r} is not an identifier")
    want = expected(metadata, classification)  # what the template writes, and check compares
    context = {
        "module_name": module_name,
        "class_name": module_name,
        "model_type": metadata.model_type,
        "family": classification.family,
        "tasks": classification.tasks,
        "variants": {name: variant for name, (_, _, variant) in want["tasks"].items()},
        "hardware": HARDWARE,
        "dtypes": DTYPES,
        "unsupported": want["unsupported"],
        "source_checkpoint": want["source_checkpoint"],
        "regenerate": regenerate_command(metadata, regenerate),
    }
    raw = _environment().get_template("skill.py.j2").render(**context)
    try:
        ast.parse(raw)
    except SyntaxError as exc:
        raise GeneratorError(
            f"template produced invalid Python (line {exc.lineno}): {exc.msg}"
        ) from None
    text = format_source(raw)
    check(text, module_name, want)
    return RenderedSkill(module_name, module_name, text)


def expected(
    metadata: ModelMetadata, classification: Classification | None = None
) -> dict[str, Any]:
    """What the generated class must declare, name by name (what `check` compares)."""
    classification = classification or classify(metadata.model_type)
    tasks, unsupported = declarations(classification)
    return {
        "model_type": metadata.model_type,
        "family": classification.family,
        "tasks": {n: (t.model_class, t.processor, t.variant) for n, t in tasks.items()},
        "dtypes": DTYPES,
        "hardware": HARDWARE,
        "unsupported": unsupported,
        "source_checkpoint": None if metadata.source_kind == "model_type" else metadata.source,
    }


def format_source(text: str) -> str:
    """Format with ruff (the project's formatter, so committed skills stay ruff-clean)."""
    from ruff.__main__ import find_ruff_bin

    config = ["--isolated", "--line-length", "100", "--target-version", "py311"]
    done = subprocess.run(
        [find_ruff_bin(), "format", *config, "--stdin-filename", "skill.py", "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise GeneratorError(f"ruff could not format the rendered skill: {done.stderr.strip()}")
    return done.stdout


def check(text: str, class_name: str, expected: dict[str, Any]) -> None:
    """Refuse anything but the module we meant: see the module docstring."""
    tree = ast.parse(text)
    body = [n for n in tree.body if not _is_docstring(n)]
    imports = [n for n in body if isinstance(n, ast.Import | ast.ImportFrom)]
    module, names = IMPORT
    if len(imports) != 1 or not (
        isinstance(imports[0], ast.ImportFrom)
        and imports[0].module == module
        and tuple(a.name for a in imports[0].names) == names
        and all(a.asname is None for a in imports[0].names)
    ):
        raise GeneratorError(f"generated code must import only {names} from {module}")
    classes = [n for n in body if isinstance(n, ast.ClassDef)]
    if len(body) != 2 or [c.name for c in classes] != [class_name]:
        raise GeneratorError(f"generated code must define exactly class {class_name}")
    cls = classes[0]
    if cls.decorator_list or cls.keywords or [ast.unparse(b) for b in cls.bases] != ["Skill"]:
        raise GeneratorError(f"class {class_name} must derive from Skill alone")
    found: dict[str, Any] = {}
    for node in cls.body:
        if _is_docstring(node):
            continue
        if not (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            raise GeneratorError(f"generated class holds a {type(node).__name__}: not allowed")
        name = node.targets[0].id
        if name == "tasks":
            found[name] = _task_table(node.value)
        else:
            try:
                found[name] = ast.literal_eval(node.value)
            except ValueError:
                raise GeneratorError(f"generated {name} is not a literal") from None
    for name, value in expected.items():
        if found.get(name, ...) != value:
            raise GeneratorError(f"generated {name} does not round-trip as {value!r}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise GeneratorError(f"generated class declares unexpected names {extra}")


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _task_table(node: ast.expr) -> dict[str, tuple[str, ...]]:
    """``{name: Task(<str literals>)}`` as ``{name: (model_class, processor, variant)}``."""
    if not isinstance(node, ast.Dict):
        raise GeneratorError("generated tasks must be a dict literal")
    table = {}
    for key, value in zip(node.keys, node.values, strict=True):
        if not (
            isinstance(key, ast.Constant)
            and isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id == "Task"
            and not value.keywords
            and 2 <= len(value.args) <= 3
            and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in value.args)
        ):
            raise GeneratorError("generated tasks must map names to Task(<string literals>)")
        args = tuple(a.value for a in value.args)  # type: ignore[attr-defined]
        table[key.value] = args if len(args) == 3 else (*args, "default")
    return table


def write(skill: RenderedSkill, directory: str | Path, *, force: bool = False) -> tuple[Path, str]:
    """Write the module; returns (path, "written" | "unchanged"). Never overwrites a different
    file unless ``force``."""
    target = Path(directory) / skill.filename
    if target.exists():
        if target.read_text(encoding="utf-8") == skill.text:
            return target, "unchanged"
        if not force:
            raise GeneratorError(f"{target} exists and differs; pass --force to overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".py.tmp")
    tmp.write_text(skill.text, encoding="utf-8")
    tmp.replace(target)
    return target, "written"


if __name__ == "__main__":  # pragma: no cover - debugging aid: print one rendered skill
    from .metadata import from_model_type

    sys.stdout.write(render(from_model_type(sys.argv[1])).text)
