"""GPU code that must be right before a GPU ever sees it, checked on a CPU.

- `runtime.hardware` detection of cuda, rocm and mps, with only torch's attributes faked;
- `cuda.py`'s rules (dtype, attention, pinned copies, batch size, batch buckets for graphs);
- vLLM, TensorRT and `gpu.load_cuda` refusing clearly here (`HardwareUnavailable`);
- how `GenerationParams` map to vLLM's sampling parameters and engine arguments.

vLLM itself, TensorRT and the CUDA paths run only in tests/gpu, on a real GPU: nothing here
stands in for an engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from hfskills.skillset.runtime import cuda, gpu, hardware, tensorrt, vllm_engine
from hfskills.skillset.runtime.errors import HardwareUnavailable, InvalidInput
from hfskills.skillset.runtime.generation import GenerationParams
from tests.conftest import skill_class


@pytest.fixture(autouse=True)
def fresh_probe() -> Iterator[None]:
    hardware.probe.cache_clear()
    yield
    hardware.probe.cache_clear()


def fake_torch(
    monkeypatch: pytest.MonkeyPatch,
    *,
    cuda_version: str | None = "12.4",
    hip: str | None = None,
    available: bool = True,
    count: int = 1,
    name: str = "NVIDIA H100 80GB HBM3",
) -> None:
    monkeypatch.setattr(torch.version, "cuda", cuda_version)
    monkeypatch.setattr(torch.version, "hip", hip)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


# -- detection ---------------------------------------------------------------------------------


def test_cuda_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torch(monkeypatch, count=2)
    info = hardware.probe("cuda")
    assert info.available
    assert info.reason == "2 device(s), first: NVIDIA H100 80GB HBM3"
    assert info.devices == ("cuda:0", "cuda:1")
    assert hardware.require("cuda") is info
    rocm = hardware.probe("rocm")
    assert not rocm.available and "built for CUDA 12.4" in rocm.reason


def test_rocm_detected_when_hip_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torch(monkeypatch, cuda_version=None, hip="6.2.41133", name="AMD Instinct MI300X")
    rocm = hardware.probe("rocm")
    assert rocm.available
    assert rocm.reason == "1 device(s), first: AMD Instinct MI300X"
    assert rocm.devices == ("cuda:0",)  # HIP builds name their devices cuda:N
    cuda_info = hardware.probe("cuda")
    assert not cuda_info.available and "HIP (ROCm)" in cuda_info.reason
    with pytest.raises(HardwareUnavailable, match="cuda is not available here"):
        hardware.require("cuda")


def test_cuda_build_without_a_device(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torch(monkeypatch, available=False)
    info = hardware.probe("cuda")
    assert not info.available and "no cuda device visible" in info.reason
    with pytest.raises(HardwareUnavailable, match="no cuda device visible"):
        hardware.require("cuda")


def test_cpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torch(monkeypatch, cuda_version=None, available=False)
    assert "CPU build" in hardware.probe("rocm").reason
    assert not hardware.probe("cuda").available
    assert hardware.probe("cpu").available


@pytest.mark.parametrize(
    ("built", "available", "expected", "reason"),
    [
        (True, True, True, "Apple Metal (MPS) device"),
        (True, False, False, "no Metal device"),
        (False, False, False, "not built with MPS"),
    ],
)
def test_mps(
    monkeypatch: pytest.MonkeyPatch, built: bool, available: bool, expected: bool, reason: str
) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: built)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: available)
    info = hardware.probe("mps")
    assert info.available is expected
    assert reason in info.reason
    assert info.devices == (("mps",) if expected else ())


def test_detect_order(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torch(monkeypatch)
    assert [h.name for h in hardware.detect()] == list(hardware.ORDER)


# -- cuda.py -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hardware_name", "requested", "bf16", "expected"),
    [
        ("cuda", None, True, "bfloat16"),
        ("cuda", None, False, "float16"),
        ("cuda", "auto", True, "bfloat16"),
        ("cuda", "bfloat16", False, "float16"),  # a skill's default on a T4 / V100
        ("cuda", "float32", True, "float32"),
        ("cuda", "float16", True, "float16"),
        ("rocm", None, True, "bfloat16"),
        ("rocm", None, False, "float16"),
        ("mps", None, True, "float16"),
        ("mps", "float32", True, "float32"),
        ("cpu", None, True, "float32"),
    ],
)
def test_torch_dtype_for(
    monkeypatch: pytest.MonkeyPatch,
    hardware_name: str,
    requested: str | None,
    bf16: bool,
    expected: str,
) -> None:
    seen = {}

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        seen["emulation"] = including_emulation
        return bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert cuda.torch_dtype_for(hardware_name, requested) == expected
    if seen:
        assert seen["emulation"] is False  # emulated bfloat16 is slower than float16


def test_torch_dtype_for_refuses_unknown() -> None:
    with pytest.raises(InvalidInput, match="unknown dtype"):
        cuda.torch_dtype_for("cuda", "float8")


def test_attn_implementation() -> None:
    assert cuda.attn_implementation("cuda") == "sdpa"
    assert cuda.attn_implementation("mps", "BertModel") == "sdpa"
    assert cuda.attn_implementation("cpu", "BertModel") is None
    assert cuda.attn_implementation("cuda", "BertModel", "eager") == "eager"
    assert cuda.attn_implementation("cuda", "NoSuchModel") is None


def test_pin_on_cpu_moves_and_casts() -> None:
    batch = {"pixel_values": torch.ones(2, 3), "input_ids": torch.ones(2, 3, dtype=torch.long)}
    placed = cuda.pin(batch, "cpu", "bfloat16")
    assert placed["pixel_values"].dtype == torch.bfloat16
    assert placed["input_ids"].dtype == torch.long  # ids keep their type


def test_batch_size_from_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * 2**30, 80 * 2**30))
    # 8 GiB usable, 1 GiB to load: 7 GiB / 100 MiB = 71 -> 64
    assert cuda.batch_size_from_free_memory(2**30, 100 * 2**20, "cuda:0") == 64
    assert cuda.batch_size_from_free_memory(0, 2**20, "cuda:0", limit=256) == 256
    assert cuda.batch_size_from_free_memory(20 * 2**30, 2**20, "cuda:0") == 1
    with pytest.raises(ValueError, match="positive"):
        cuda.batch_size_from_free_memory(0, 0)


def test_per_item_bytes() -> None:
    vit = SimpleNamespace(hidden_size=768, num_attention_heads=12, image_size=224, patch_size=16)
    tokens = 197
    assert cuda.per_item_bytes(vit, "float16") == 2 * tokens * (16 * 768 + 12 * tokens)
    assert cuda.per_item_bytes(SimpleNamespace(), "float32") == 64 * 2**20


def test_bucketed_pads_to_powers_of_two_and_cuts_back() -> None:
    seen: list[int] = []

    def forward(pixel_values: torch.Tensor, scale: float = 1.0) -> Any:
        seen.append(pixel_values.shape[0])
        from transformers.modeling_outputs import ImageClassifierOutput

        return ImageClassifierOutput(
            logits=pixel_values.sum(dim=1) * scale, hidden_states=(pixel_values, pixel_values)
        )

    wrapped = cuda.bucketed(forward, forward, max_batch=8)
    for rows, padded in [(1, 1), (3, 4), (5, 8), (8, 8), (11, 11)]:
        x = torch.arange(rows * 2, dtype=torch.float32).reshape(rows, 2)
        out = wrapped(pixel_values=x, scale=2.0)
        assert seen[-1] == padded
        assert torch.equal(out.logits, x.sum(dim=1) * 2.0)
        assert all(h.shape[0] == rows for h in out.hidden_states)
    import inspect

    assert list(inspect.signature(wrapped).parameters) == ["pixel_values", "scale"]


def test_compile_refuses_a_cpu_model() -> None:
    with pytest.raises(InvalidInput, match="CUDA or ROCm"):
        cuda.compile(torch.nn.Linear(2, 2))


# -- absent runtimes ------------------------------------------------------------------------------


def test_vllm_absent_is_hardware_unavailable() -> None:
    skill = skill_class("llama")()
    with pytest.raises(HardwareUnavailable, match="vLLM is not usable here"):
        vllm_engine.load_endpoint(skill, "whatever", "text_generation")


def test_tensorrt_absent_is_hardware_unavailable(tmp_path: Any) -> None:
    assert tensorrt.available() is False
    with pytest.raises(HardwareUnavailable, match="tensorrt is not installed"):
        tensorrt.load_endpoint(
            skill_class("vit")(), "whatever", "image_classification", onnx_path=tmp_path / "x"
        )


def test_load_cuda_without_cuda_is_hardware_unavailable() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for name in ("cuda", "rocm", "mps"):
        with pytest.raises(HardwareUnavailable, match=f"{name} is not available here"):
            gpu.load_cuda(skill_class("bert")(), "whatever", "text_embedding", name, "cuda:0")


def test_tensorrt_profile() -> None:
    shapes = tensorrt.profile(
        {"pixel_values": (-1, 3, 224, 224), "input_ids": (-1, -1)},
        max_batch=32,
        opt_batch=8,
        max_tokens=256,
        opt_tokens=64,
    )
    assert shapes["pixel_values"] == ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
    assert shapes["input_ids"] == ((1, 1), (8, 64), (32, 256))


# -- vLLM's parameter mapping (pure functions; the engine itself runs in tests/gpu) ------------


def test_sampling_kwargs() -> None:
    sampled = GenerationParams(
        do_sample=True, temperature=0.7, top_p=0.9, top_k=40, seed=3, max_new_tokens=20
    )
    kwargs = vllm_engine.sampling_kwargs(sampled, {2}, default_repetition_penalty=1.1)
    assert kwargs == {
        "max_tokens": 20,
        "ignore_eos": False,
        "detokenize": False,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 40,
        "seed": 3,
        "repetition_penalty": 1.1,
        "stop_token_ids": [2],
    }
    greedy = GenerationParams(min_new_tokens=50, max_new_tokens=10, stop=["x"])
    kwargs = vllm_engine.sampling_kwargs(greedy, {2, 7}, text_handling="vllm")
    assert kwargs["temperature"] == 0.0 and kwargs["min_tokens"] == 10
    assert kwargs["stop"] == ["x"] and kwargs["stop_token_ids"] == [2, 7]


def test_engine_args_for_gguf(tmp_path: Any) -> None:
    from hfskills.skillset.runtime.checkpoint import Checkpoint

    (tmp_path / "tokenizer.json").write_text("{}")
    ckpt = Checkpoint(str(tmp_path), {"gguf_file": "m.Q4.gguf"})
    args = vllm_engine.engine_args(
        ckpt,
        "bfloat16",
        {"max_model_len": 1024, "revision": "abc"},
        {"model", "tokenizer", "dtype"},
    )
    assert args == {
        "model": str(tmp_path / "m.Q4.gguf"),
        "tokenizer": str(tmp_path),
        "dtype": "bfloat16",
    }
    args = vllm_engine.engine_args(Checkpoint("org/model"), "float16", {}, None)
    assert args["model"] == "org/model" and args["gpu_memory_utilization"] == 0.8
