"""Rendering: committed skills are byte-identical to fresh output; output is checked."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hfskills.generator import render as render_mod
from hfskills.generator.cli import committed_model_types
from hfskills.generator.metadata import from_model_type
from hfskills.skillset.runtime.errors import GeneratorError

SKILLSET = Path(__file__).resolve().parents[2] / "skillset"
COMMITTED = committed_model_types(SKILLSET)
REQUIRED = (
    "bert roberta distilbert xlm-roberta deberta-v2 electra albert mpnet gpt2 llama mistral "
    "qwen2 phi3 gemma gpt_neox opt t5 bart marian vit convnext resnet swin detr clip siglip "
    "whisper wav2vec2 blip"
).split()


def test_every_required_architecture_is_committed() -> None:
    assert set(REQUIRED) <= set(COMMITTED)


@pytest.mark.parametrize("model_type", COMMITTED)
def test_regeneration_is_byte_identical(model_type: str) -> None:
    skill = render_mod.render(from_model_type(model_type))
    assert (SKILLSET / skill.filename).read_text(encoding="utf-8") == skill.text


def test_rendering_twice_gives_the_same_bytes() -> None:
    first = render_mod.render(from_model_type("t5")).text
    assert render_mod.render(from_model_type("t5")).text == first


def test_module_and_class_names() -> None:
    assert render_mod.module_name_for("xlm-roberta") == "hf_xlm_roberta"
    skill = render_mod.render(from_model_type("deberta-v2"))
    assert skill.filename == "hf_deberta_v2.py"
    tree = ast.parse(skill.text)
    assert [n.name for n in tree.body if isinstance(n, ast.ClassDef)] == ["hf_deberta_v2"]


def test_check_refuses_tampered_output() -> None:
    meta = from_model_type("bert")
    good = render_mod.render(meta).text
    family = '    family = "encoder"'
    method = "    def init_cpu(self, model, task):\n        return __import__('os')\n"
    bad_variants = {
        "import os\n" + good: "import only",
        good.replace('model_type = "bert"', 'model_type = "gpt2"'): "model_type does not round",
        good + "\n__import__('os')\n": "exactly class",
        good.replace("    model_type =", method + "    model_type ="): "holds a FunctionDef",
        good + "\nclass Extra:\n    pass\n": "exactly class",
        good.replace('Task("BertModel", "tokenizer")', 'Task(__import__("os"), "x")'): "string lit",
        good.replace(family, family + '\n    x = len("a")'): "not a literal",
        good.replace(family, family + "\n    extra = 1"): "unexpected names",
        good.replace("class hf_bert(Skill):", "class hf_bert(Skill, dict):"): "Skill alone",
        good.replace('"fill_mask": Task("BertForMaskedLM", "tokenizer"),', ""): "tasks does not",
        good.replace("unsupported = {}", 'unsupported = {("qnn", "fill_mask"): "x"}'): "unsupp",
    }
    expected = render_mod.expected(meta)
    render_mod.check(good, "hf_bert", expected)
    for text, message in bad_variants.items():
        assert text != good, message
        with pytest.raises(GeneratorError, match=message):
            render_mod.check(text, "hf_bert", expected)


def test_literal_filter_refuses_non_literals() -> None:
    with pytest.raises(GeneratorError):
        render_mod._py(object())
    assert render_mod._py("a'b\"c\n") == repr("a'b\"c\n")


def test_write_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    skill = render_mod.render(from_model_type("gpt2"))
    path, state = render_mod.write(skill, tmp_path)
    assert state == "written" and path.read_text() == skill.text
    assert render_mod.write(skill, tmp_path)[1] == "unchanged"
    path.write_text("# edited by hand\n")
    with pytest.raises(GeneratorError, match="--force"):
        render_mod.write(skill, tmp_path)
    assert path.read_text() == "# edited by hand\n"
    assert render_mod.write(skill, tmp_path, force=True)[1] == "written"
