"""Rendering a skill module from the templates, then proving it is what we meant to write.

The context handed to Jinja holds only validated identifiers and values that the templates
emit through the ``py`` filter (``repr``). The rendered text is parsed with ``ast``, formatted
with ruff, parsed again and checked (one class of the expected name, the expected literals,
every contract method, imports and calls from an allow-list) before anyone may write it.
"""

from __future__ import annotations

import ast
import keyword
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from hfskills.skillset.runtime.errors import GeneratorError

from .metadata import ModelMetadata, validate_model_type
from .taxonomy import Classification, classify

#: The hardware every skill implements, in the order its sections appear.
HARDWARE = ("cpu", "cuda", "rocm", "mps", "openvino", "qnn")
#: The dtype each hardware loads in (rendered into each skill's `dtypes` table).
DTYPES = {
    "cpu": "float32",
    "cuda": "bfloat16",
    "rocm": "bfloat16",
    "mps": "float16",
    "openvino": "float32",
    "qnn": "float32",
}
GENERATION_ONLY = {"text_generation", "text2text_generation", "image_to_text"}
ALLOWED_IMPORTS = {
    "__future__",
    "typing",
    "torch",
    "hfskills.skillset",
    "hfskills.skillset.runtime",
}
FORBIDDEN_CALLS = {
    "eval",
    "exec",
    "compile",
    "__import__",
    "open",
    "getattr",
    "setattr",
    "globals",
    "locals",
    "vars",
    "input",
    "breakpoint",
}


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


def _extras(classification: Classification) -> dict[str, str]:
    """Per-architecture settings beyond the tables, derived as transformers' pipelines do."""
    extras: dict[str, str] = {}
    if any(p.name == "zero_shot_image_classification" for p in classification.tasks):
        # transformers' zero-shot pipeline: SigLIP scores each pair with a sigmoid and was
        # trained on texts padded to max_length; CLIP-like models use a softmax over labels.
        siglip = "siglip" in classification.model_type
        extras["zero_shot_activation"] = "sigmoid" if siglip else "softmax"
        extras["zero_shot_padding"] = "max_length" if siglip else "longest"
    return extras


def render(metadata: ModelMetadata) -> RenderedSkill:
    """Render, format and check the skill for ``metadata.model_type``."""
    classification = classify(metadata.model_type)
    module_name = module_name_for(metadata.model_type)
    for plan in classification.tasks:
        if not plan.model_class.isidentifier():  # comes from transformers, checked all the same
            raise GeneratorError(f"transformers class {plan.model_class!r} is not an identifier")
    source = None if metadata.source_kind == "model_type" else metadata.source
    context = {
        "module_name": module_name,
        "class_name": module_name,
        "model_type": metadata.model_type,
        "family": classification.family,
        "tasks": classification.tasks,
        "hardware": HARDWARE,
        "dtypes": DTYPES,
        "extras": _extras(classification),
        "source_checkpoint": source,
        # generation handlers run torch inside runtime.generation; the others use it directly
        "uses_torch": any(p.name not in GENERATION_ONLY for p in classification.tasks),
    }
    raw = _environment().get_template("skill.py.j2").render(**context)
    try:
        ast.parse(raw)
    except SyntaxError as exc:
        raise GeneratorError(
            f"template produced invalid Python (line {exc.lineno}): {exc.msg}"
        ) from None
    text = format_source(raw)
    check(text, module_name, metadata.model_type, classification, source)
    return RenderedSkill(module_name, module_name, text)


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


def check(
    text: str, class_name: str, model_type: str, classification: Classification, source: str | None
) -> None:
    """Refuse anything but the module we meant: see the module docstring."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = (
                [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            )
            if any(name not in ALLOWED_IMPORTS for name in names):
                raise GeneratorError(f"generated code imports {names}: not allowed")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_CALLS
        ):
            raise GeneratorError(f"generated code calls {node.func.id}(): not allowed")
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    if [c.name for c in classes] != [class_name]:
        raise GeneratorError(f"generated code must define exactly class {class_name}")
    literals = {
        t.id: n.value
        for n in classes[0].body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    expected = {
        "model_type": model_type,
        "family": classification.family,
        "source_checkpoint": source,
    }
    for name, value in expected.items():
        node = literals.get(name)
        if not isinstance(node, ast.Constant) or node.value != value:
            raise GeneratorError(f"generated {name} does not round-trip as the literal {value!r}")
    methods = {n.name for n in classes[0].body if isinstance(n, ast.FunctionDef)}
    required = (
        {f"init_{hw}" for hw in HARDWARE}
        | {
            f"create_{hw}_{plan.name}_endpoint_handler"
            for hw in HARDWARE
            for plan in classification.tasks
        }
        | {f"{plan.name}_handler" for plan in classification.tasks}
    )
    missing = sorted(required - methods)
    if missing:
        raise GeneratorError(f"generated class lacks contract methods: {missing}")


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
