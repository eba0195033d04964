"""ONNX Runtime backend: the export-and-session path ``init_qnn`` takes, run with the CPU provider.

``runtime.backends.load_onnx(..., providers=["CPUExecutionProvider"], hardware="qnn")`` exports
a tiny random-weight checkpoint to ONNX (cached under a per-test ``HFSKILLS_CACHE``) and serves
it through the skill's qnn handlers, compared with the same skill's ``init_cpu`` handlers:
ATOL = 1e-4 on scores and vectors (measured below 2e-6), identical labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (extra: onnx)")

import onnxruntime

from hfskills.skillset import runtime
from hfskills.skillset.runtime import onnx_runtime
from hfskills.skillset.runtime.errors import HardwareUnavailable, InvalidInput
from tests.checkpoints import tiny_image
from tests.conftest import skill_class

ATOL = 1e-4
CPU = ["CPUExecutionProvider"]
TEXTS = ["hello world", "the capital of france is paris", "a b c"]
IMAGES = [tiny_image(48, seed=0), tiny_image(40, seed=1).resize((40, 60)), tiny_image(64, seed=2)]


@pytest.fixture(autouse=True)
def export_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HFSKILLS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def assert_close(got: Any, want: Any, atol: float = ATOL) -> None:
    """Same structure, same strings and ints, floats within ``atol``."""
    if isinstance(want, dict | list):
        assert type(got) is type(want) and len(got) == len(want)
        pairs = (
            [(got[k], want[k]) for k in want]
            if isinstance(want, dict)
            else zip(got, want, strict=True)
        )
        for g, w in pairs:
            assert_close(g, w, atol)
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=atol)
    else:
        assert got == want


@pytest.mark.parametrize(
    ("model_type", "task", "inputs"),
    [
        ("bert", "text_embedding", TEXTS),
        ("bert", "text_classification", TEXTS),
        ("vit", "image_classification", IMAGES),
    ],
)
def test_parity_with_cpu(task_checkpoint: Any, model_type: str, task: str, inputs: Any) -> None:
    path = str(task_checkpoint(model_type, task))
    skill = skill_class(model_type)()
    endpoint = runtime.backends.load_onnx(skill, path, task, providers=CPU, hardware="qnn")
    assert (endpoint.hardware, endpoint.device, endpoint.dtype) == ("qnn", "cpu", "float32")
    assert endpoint.settings["providers"] == CPU
    assert Path(endpoint.settings["onnx_path"]).is_file() and endpoint.memory_bytes > 0
    got = skill.handler(endpoint)(inputs)  # create_qnn_<task>_endpoint_handler
    want = skill.handler(skill.init_cpu(path, task))(inputs)
    assert_close(got, want)
    # the second load opens the cached export
    again = runtime.backends.load_onnx(skill, path, task, providers=CPU, hardware="qnn")
    assert endpoint.settings["exported"] is True and again.settings["exported"] is False
    assert again.settings["onnx_path"] == endpoint.settings["onnx_path"]
    assert_close(skill.handler(again)(inputs), got, atol=0.0)


def test_init_qnn_without_the_provider(task_checkpoint: Any, export_cache: Path) -> None:
    if "QNNExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the QNN provider")
    path = str(task_checkpoint("bert", "text_classification"))
    skill = skill_class("bert")()
    with pytest.raises(HardwareUnavailable, match="QNNExecutionProvider"):
        skill.init_qnn(path, "text_classification")
    # the ONNX path itself refuses before exporting, naming what this build has
    with pytest.raises(HardwareUnavailable, match=r"no QNNExecutionProvider.*CPUExecutionProvider"):
        runtime.backends.load_onnx(
            skill, path, "text_classification", providers=["QNNExecutionProvider"], hardware="qnn"
        )
    assert not export_cache.exists()


def test_qnn_gets_the_htp_backend() -> None:
    (name, options), (cpu, none) = onnx_runtime.provider_options(
        ["QNNExecutionProvider", "CPUExecutionProvider"]
    )
    assert name == "QNNExecutionProvider" and options["backend_path"].endswith(
        ("QnnHtp.dll", "libQnnHtp.so")
    )
    assert (cpu, none) == ("CPUExecutionProvider", {})
    custom = onnx_runtime.provider_options([("QNNExecutionProvider", {"backend_type": "cpu"})])
    assert custom == [("QNNExecutionProvider", {"backend_type": "cpu"})]


def test_generation_and_bad_options(task_checkpoint: Any) -> None:
    skill = skill_class("t5")()
    path = str(task_checkpoint("t5", "text2text_generation"))
    with pytest.raises(HardwareUnavailable, match="generation has no graph export"):
        runtime.backends.load_onnx(
            skill, path, "text2text_generation", providers=CPU, hardware="qnn"
        )
    with pytest.raises(InvalidInput, match="unknown load option"):
        runtime.backends.load_onnx(
            skill, path, "text_classification", providers=CPU, hardware="qnn", x=1
        )
