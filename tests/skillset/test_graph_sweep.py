"""Every single-pass task of every committed skill, on OpenVINO IR and on ONNX Runtime (CPU
provider, the code path `init_qnn` uses), against the same skill's ``init_cpu`` output.

Tolerance: 1e-4 on scores and vectors; labels, tokens, texts and boxes identical. Tasks that
generate (seq2seq, captioning, Whisper transcription) are not exported: skills declare those
pairs unsupported, so `init_openvino`/`init_qnn` refuse with `UnsupportedTask` before loading,
and the export itself refuses with `HardwareUnavailable` when called directly.

The skills covered are those with a tiny-checkpoint recipe (tests/checkpoints.py); the coverage
sweep (scripts/coverage) verifies the CPU path of every committed skill.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest

import hfskills.skillset
from hfskills.skillset.runtime import backends, export
from hfskills.skillset.runtime.errors import HardwareUnavailable, UnsupportedTask
from tests.checkpoints import ARCHITECTURES, tiny_audio, tiny_image
from tests.skillset.test_openvino_ir import assert_close

TEXTS = ["hello world", "the capital of france is paris", "a b c"]
IMAGES = [tiny_image(48, seed=0), tiny_image(40, seed=1).resize((40, 60))]
AUDIO = [tiny_audio(1.0, seed=0), tiny_audio(0.6, seed=1)]


def test_graph_exports_are_declared_alike_on_openvino_and_qnn() -> None:
    for cls in CLASSES:
        for task in cls.tasks:
            if task != "text_generation":  # decoders generate on OpenVINO GenAI
                assert cls().supports("openvino", task) == cls().supports("qnn", task)


def skills() -> list[type]:
    found = []
    for info in pkgutil.iter_modules(hfskills.skillset.__path__):
        if info.name.startswith("hf_"):
            module = importlib.import_module(f"hfskills.skillset.{info.name}")
            cls = getattr(module, info.name)
            if cls.model_type in ARCHITECTURES:
                found.append(cls)
    return sorted(found, key=lambda cls: cls.model_type)


CLASSES = skills()
#: what the skills declare a graph export covers (init_openvino and init_qnn alike)
SINGLE_PASS = [
    (cls.model_type, task)
    for cls in CLASSES
    for task in cls.tasks
    if not export.needs_generation(cls, task) and cls().supports("qnn", task)
]
#: generation on OpenVINO is GenAI's (decoders: test_genai.py); the rest must refuse
GENERATING = [
    (cls.model_type, task)
    for cls in CLASSES
    for task in cls.tasks
    if export.needs_generation(cls, task) and task != "text_generation"
]


def inputs_for(task: str, endpoint: Any) -> tuple[list[Any], dict[str, Any]]:
    if task == "fill_mask":
        mask = endpoint.processor.mask_token
        return [f"hello {mask} world", f"the capital of {mask} is paris"], {}
    if task == "question_answering":
        return [
            {"question": "what is the capital", "context": "the capital of france is paris"},
            {"question": "who", "context": "hello world and a b c"},
        ], {}
    if task == "zero_shot_image_classification":
        return IMAGES, {"candidate_labels": ["a cat", "paris"]}
    if task == "object_detection":
        return IMAGES, {"threshold": 0.0}
    if task in ("image_classification", "image_embedding"):
        return IMAGES, {}
    if task in ("automatic_speech_recognition", "audio_classification"):
        return AUDIO, {}
    return TEXTS, {}


def load(runtime: str, skill: Any, path: str, task: str) -> Any:
    if runtime == "openvino":
        return skill.init_openvino(path, task)
    return backends.load_onnx(skill, path, task, providers=["CPUExecutionProvider"], hardware="qnn")


@pytest.mark.parametrize("runtime", ["openvino", "onnx"])
@pytest.mark.parametrize(("model_type", "task"), SINGLE_PASS)
def test_single_pass_task_matches_cpu(task_checkpoint, runtime, model_type, task) -> None:
    pytest.importorskip("openvino" if runtime == "openvino" else "onnxruntime")
    from tests.conftest import skill_class

    path = str(task_checkpoint(model_type, task))
    skill = skill_class(model_type)()
    graph = load(runtime, skill, path, task)
    cpu = skill.init_cpu(path, task)
    inputs, params = inputs_for(task, cpu)
    assert_close(skill.handler(graph)(inputs, **params), skill.handler(cpu)(inputs, **params))


@pytest.mark.parametrize("runtime", ["openvino", "onnx"])
@pytest.mark.parametrize(("model_type", "task"), GENERATING)
def test_generation_tasks_refuse_and_fall_back(task_checkpoint, runtime, model_type, task) -> None:
    pytest.importorskip("openvino" if runtime == "openvino" else "onnxruntime")
    from tests.conftest import skill_class

    skill, path = skill_class(model_type)(), str(task_checkpoint(model_type, task))
    expected = UnsupportedTask if runtime == "openvino" else HardwareUnavailable
    with pytest.raises(expected, match="generation"):
        load(runtime, skill, path, task)
    with pytest.raises(UnsupportedTask, match="generation has no graph export"):
        skill.init_qnn(path, task)
