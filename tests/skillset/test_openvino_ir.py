"""OpenVINO IR backend: each skill's ``init_openvino`` handler against its own ``init_cpu`` one.

Tiny random-weight checkpoints are exported to OpenVINO IR (cached under a per-test
``HFSKILLS_CACHE``), compiled on the CPU in f32 and served by the generated handlers unchanged.
Tolerance: ATOL = 1e-4 on every score and vector, labels, texts and boxes identical (measured
f32 differences are below 2e-6; bf16 is checked against a looser 5e-2).
"""

from __future__ import annotations

import inspect
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openvino", reason="openvino is not installed (extra: openvino)")

from hfskills.skillset.runtime import cache, torch_backend
from hfskills.skillset.runtime.errors import HardwareUnavailable, InvalidInput, UnsupportedTask
from tests.checkpoints import tiny_audio, tiny_image
from tests.conftest import skill_class

ATOL = 1e-4
TEXTS = ["hello world", "the capital of france is paris", "a b c"]
IMAGES = [tiny_image(48, seed=0), tiny_image(40, seed=1).resize((40, 60))]
AUDIO = [tiny_audio(1.0, seed=0), tiny_audio(0.6, seed=1)]


@pytest.fixture(autouse=True)
def export_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HFSKILLS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def assert_close(got: Any, want: Any, atol: float = ATOL) -> None:
    """Same structure, same strings and ints, floats within ``atol``."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys()
        for key in want:
            assert_close(got[key], want[key], atol)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_close(g, w, atol)
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=atol)
    else:
        assert got == want


def both(task_checkpoint: Any, model_type: str, task: str, **options: Any) -> tuple[Any, ...]:
    """The OpenVINO endpoint and handler, and the CPU handler, on one checkpoint."""
    path = str(task_checkpoint(model_type, task))
    skill = skill_class(model_type)()
    endpoint = skill.init_openvino(path, task, **options)
    assert (endpoint.hardware, endpoint.device, endpoint.dtype) == ("openvino", "cpu", "float32")
    assert endpoint.memory_bytes > 0
    assert endpoint.settings["openvino_device"] == "CPU"
    assert Path(endpoint.settings["ir_path"]).is_file()
    assert endpoint.settings["checkpoint"].location == path
    cpu = skill.init_cpu(path, task)
    return endpoint, skill.handler(endpoint), skill.handler(cpu)


CASES = [
    ("bert", "text_embedding", TEXTS, {}),
    ("bert", "text_classification", TEXTS, {}),
    ("vit", "image_classification", IMAGES, {}),
    ("wav2vec2", "automatic_speech_recognition", AUDIO, {}),  # CTC: one forward pass
    ("clip", "zero_shot_image_classification", IMAGES, {"candidate_labels": ["a cat", "paris"]}),
    ("clip", "image_embedding", IMAGES, {}),
    ("detr", "object_detection", IMAGES, {"threshold": 0.0}),
]


@pytest.mark.parametrize(("model_type", "task", "inputs", "params"), CASES)
def test_parity_with_cpu(
    task_checkpoint: Any, model_type: str, task: str, inputs: list[Any], params: dict[str, Any]
) -> None:
    endpoint, handler, reference = both(task_checkpoint, model_type, task)
    got, want = handler(inputs, **params), reference(inputs, **params)
    assert len(got) == len(inputs)
    assert_close(got, want)
    assert endpoint.settings["export_max_abs_diff"] < ATOL


def test_graph_takes_the_call_of_the_torch_model(task_checkpoint: Any) -> None:
    endpoint, handler, _ = both(task_checkpoint, "clip", "text_embedding")
    graph = endpoint.model
    # accepted_inputs reads the signature: exactly the graph's inputs
    params = inspect.signature(graph.get_text_features).parameters
    assert list(params) == ["input_ids", "attention_mask"]
    batch = {"input_ids": 1, "attention_mask": 2, "token_type_ids": 3}
    assert torch_backend.accepted_inputs(graph, batch, "get_text_features") == {
        "input_ids": 1,
        "attention_mask": 2,
    }
    assert len(handler(TEXTS)[0]) == endpoint.config.projection_dim


def test_token_ids_without_token_type_ids(task_checkpoint: Any) -> None:
    """Pre-tokenized inputs carry no token_type_ids; the graph gets zeros, as torch does."""
    _, handler, reference = both(task_checkpoint, "bert", "text_embedding")
    ids = [[2, 40, 41, 3], [2, 50, 3]]
    assert_close(handler(ids), reference(ids))


def test_second_load_reuses_the_cached_ir(task_checkpoint: Any, export_cache: Path) -> None:
    path = str(task_checkpoint("bert", "text_embedding"))
    skill = skill_class("bert")()
    first = skill.init_openvino(path, "text_embedding")
    ir = Path(first.settings["ir_path"])
    assert first.settings["exported"] is True
    assert ir.is_relative_to(export_cache) and cache.ready(ir.parent)
    stamp = os.stat(ir).st_mtime_ns
    second = skill.init_openvino(path, "text_embedding")
    assert second.settings["exported"] is False  # not exported again: no torch weights loaded
    assert second.settings["ir_path"] == str(ir) and os.stat(ir).st_mtime_ns == stamp
    assert_close(skill.handler(second)(TEXTS), skill.handler(first)(TEXTS), atol=0.0)
    # bf16 is a compile-time hint: same IR; f16 stores FP16 weights: another cache entry
    bf16 = skill.init_openvino(path, "text_embedding", precision="bf16")
    assert bf16.settings["exported"] is False and bf16.settings["ir_path"] == str(ir)
    f16 = skill.init_openvino(path, "text_embedding", precision="f16")
    assert f16.settings["exported"] is True and f16.settings["ir_path"] != str(ir)
    for low in (bf16, f16):
        assert_close(skill.handler(low)(TEXTS), skill.handler(first)(TEXTS), atol=5e-2)


def test_concurrent_calls(task_checkpoint: Any) -> None:
    _, handler, reference = both(task_checkpoint, "bert", "text_classification")
    want = reference(TEXTS)
    with ThreadPoolExecutor(4) as pool:
        for got in pool.map(lambda _: handler(TEXTS), range(16)):
            assert_close(got, want)


@pytest.mark.parametrize(
    ("model_type", "task"),
    [("t5", "text2text_generation"), ("whisper", "automatic_speech_recognition")],
)
def test_generation_tasks_fall_back_to_torch(
    task_checkpoint: Any, model_type: str, task: str, export_cache: Path
) -> None:
    path = str(task_checkpoint(model_type, task))
    skill = skill_class(model_type)()
    assert not skill.supports("openvino", task)  # declared: the host never tries it
    with pytest.raises(UnsupportedTask, match="generation has no graph export"):
        skill.init_openvino(path, task)
    assert not export_cache.exists()  # refused before loading or exporting anything


def test_bad_options(task_checkpoint: Any) -> None:
    path = str(task_checkpoint("bert", "text_embedding"))
    skill = skill_class("bert")()
    with pytest.raises(InvalidInput, match=r"unknown load option.*'bogus'.*precision"):
        skill.init_openvino(path, "text_embedding", bogus=1)
    with pytest.raises(InvalidInput, match="precision"):
        skill.init_openvino(path, "text_embedding", precision="int3")
    with pytest.raises(HardwareUnavailable, match=r"NO_SUCH_DEVICE.*not available"):
        skill.init_openvino(path, "text_embedding", device="NO_SUCH_DEVICE")
