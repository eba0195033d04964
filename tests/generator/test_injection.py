"""Hostile metadata: the generator refuses with a clear error and writes nothing, or writes a
module in which the value is an inert string literal.

Every hostile payload tries to create a sentinel file; importing the written module (or merely
running the generator) must never create it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest

from hfskills.generator.cli import main
from hfskills.generator.metadata import from_model_type
from hfskills.generator.render import render

SENTINEL = Path("/tmp/hfskills-pwned")
PAYLOAD = f"__import__('os').system('touch {SENTINEL}')"

REFUSED_MODEL_TYPES = [
    'bert"; import os; os.system("touch /tmp/hfskills-pwned"); "',  # quotes
    "bert\nimport os\nos.system('touch /tmp/hfskills-pwned')",  # newlines
    PAYLOAD,  # a call
    "b\u0435rt",  # Cyrillic 'е' looks like 'e'
    "\uff42\uff45\uff52\uff54",  # full-width 'bert'
    "bert\u200b",  # zero-width space
    "../../etc/passwd",
    "",
    42,
    None,
    "unknown_model_type",  # plain, but not a transformers model type
]

REFUSED_ARCHITECTURES = [
    ['BertModel"); import os #'],
    [PAYLOAD],
    ["Bert\u039codel"],  # Greek capital Mu
    "BertModel",  # not a list
    [1, 2],
]


def _run(directory: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main([str(directory), "--output", str(out)])
    return code, capsys.readouterr().err


@pytest.fixture(autouse=True)
def no_sentinel():
    SENTINEL.unlink(missing_ok=True)
    yield
    assert not SENTINEL.exists(), "hostile metadata executed code"


@pytest.mark.parametrize("model_type", REFUSED_MODEL_TYPES, ids=repr)
def test_hostile_model_type_is_refused(config_dir, tmp_path, capsys, model_type) -> None:
    out = tmp_path / "out"
    code, err = _run(config_dir({"model_type": model_type}), out, capsys)
    assert code == 1
    assert err.startswith("generate-skill: error:") and "model_type" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("architectures", REFUSED_ARCHITECTURES, ids=repr)
def test_hostile_architectures_are_refused(config_dir, tmp_path, capsys, architectures) -> None:
    out = tmp_path / "out"
    code, err = _run(
        config_dir({"model_type": "bert", "architectures": architectures}), out, capsys
    )
    assert code == 1 and "architecture" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def _import(path: Path) -> object:
    spec = importlib.util.spec_from_file_location(f"probe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hostile_labels_and_keys_stay_data(config_dir, tmp_path, capsys) -> None:
    config = {
        "model_type": "bert",
        "architectures": ["BertForSequenceClassification"],
        "id2label": {"0": f'"""; {PAYLOAD} #', "1": f"'''\n{PAYLOAD}\n'''", "2": "{{ 7*7 }}"},
        "label2id": {PAYLOAD: 0},
        PAYLOAD: PAYLOAD,
        "{% raw %}": "{{ config }}",
    }
    out = tmp_path / "out"
    code, err = _run(config_dir(config), out, capsys)
    assert code == 0, err
    text = (out / "hf_bert.py").read_text()
    assert "__import__" not in text and "{{" not in text and "49" not in text
    # the only checkpoint-derived values in the file are the source path, as a string literal,
    # and the "Regenerate with" command naming the folder written to (a checked plain string)
    reference = render(from_model_type("bert")).text
    differing = [
        a for a, b in zip(text.splitlines(), reference.splitlines(), strict=True) if a != b
    ]
    assert len(differing) == 2, differing
    assert differing[0].startswith("`generate-skill ") and str(out) in differing[0]
    assert differing[1].strip().startswith("source_checkpoint = ")
    module = _import(out / "hf_bert.py")
    assert module.hf_bert.model_type == "bert"


def test_hostile_source_path_is_an_inert_literal(tmp_path, capsys) -> None:
    name = "evil\"'\\ " + PAYLOAD.replace("/", "_") + ' """\n'
    directory = tmp_path / name
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    out = tmp_path / "out"
    assert main([str(directory), "--output", str(out)]) == 0, capsys.readouterr().err
    path = out / "hf_gpt2.py"
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    literal = next(
        n.value
        for n in cls.body
        if isinstance(n, ast.Assign) and n.targets[0].id == "source_checkpoint"
    )
    assert isinstance(literal, ast.Constant) and literal.value == str(directory)
    assert _import(path).hf_gpt2.source_checkpoint == str(directory)
