"""GPU code that must be right before a GPU ever sees it, checked on a CPU.

- `runtime.hardware` detection of cuda, rocm and mps, with only torch's attributes faked;
- `cuda.py`'s rules (dtype, attention, pinned copies, batch size, batch buckets for graphs);
- vLLM, TensorRT and `gpu.load_cuda` refusing clearly here (`HardwareUnavailable`), and
  `gpu.load_cuda`'s choice of path with the engines faked;
- `VLLMEngine` driven by a fake ``AsyncLLM`` that decodes the tiny llama greedily on the CPU
  and answers as vLLM does (delta outputs, EOS as a stop token id, vLLM-style stop strings):
  events, results, stop strings, usage and cancellation match the torch `DecodeEngine`'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from hfskills.skillset.runtime import cuda, gpu, hardware, tensorrt, vllm_engine
from hfskills.skillset.runtime.continuous import DecodeEngine
from hfskills.skillset.runtime.engines import DONE
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


# -- gpu.load_cuda's choice, with the engines faked ---------------------------------------------


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """CUDA "present" with bfloat16; vLLM and TensorRT absent; load_torch recorded."""
    fake_torch(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 * 2**30, 80 * 2**30))
    calls: dict[str, Any] = {}

    def no_vllm(*args: Any, **kwargs: Any) -> Any:
        calls["vllm"] = kwargs
        raise HardwareUnavailable("vLLM is not usable here")

    def load_torch(self: Any, model: str, task: str, **kwargs: Any) -> Any:
        calls["torch"] = kwargs
        return SimpleNamespace(config=SimpleNamespace(hidden_size=32), batch_size=8, settings={})

    monkeypatch.setattr(vllm_engine, "load_endpoint", no_vllm)
    monkeypatch.setattr(tensorrt, "available", lambda: False)
    monkeypatch.setattr(skill_class("llama"), "load_torch", load_torch)
    monkeypatch.setattr(skill_class("vit"), "load_torch", load_torch)
    return calls


def test_load_cuda_decoder_tries_vllm_then_torch(fake_gpu: dict[str, Any]) -> None:
    skill = skill_class("llama")()
    gpu.load_cuda(skill, "m", "text_generation", "cuda", "cuda:0", gpu_memory_utilization=0.5)
    assert fake_gpu["vllm"] == {"device": "cuda:0", "gpu_memory_utilization": 0.5}
    torch_kwargs = fake_gpu["torch"]
    assert torch_kwargs["dtype"] == "bfloat16"
    assert torch_kwargs["attn_implementation"] == "sdpa"
    assert "gpu_memory_utilization" not in torch_kwargs  # vLLM's own option is dropped


def test_load_cuda_forced_engines(fake_gpu: dict[str, Any]) -> None:
    skill = skill_class("llama")()
    with pytest.raises(HardwareUnavailable, match="vLLM is not usable"):
        gpu.load_cuda(skill, "m", "text_generation", engine="vllm")
    fake_gpu.clear()
    gpu.load_cuda(skill, "m", "text_generation", engine="torch")
    assert "vllm" not in fake_gpu and "torch" in fake_gpu
    with pytest.raises(HardwareUnavailable, match="TensorRT serves encoder and vision"):
        gpu.load_cuda(skill, "m", "text_generation", engine="tensorrt")
    with pytest.raises(InvalidInput, match="engine must be one of"):
        gpu.load_cuda(skill, "m", "text_generation", engine="onnx")
    with pytest.raises(InvalidInput, match="compile"):
        gpu.load_cuda(skill, "m", "text_generation", engine="torch", compile=True)


def test_load_cuda_vision_falls_back_to_torch(fake_gpu: dict[str, Any]) -> None:
    skill = skill_class("vit")()
    endpoint = gpu.load_cuda(skill, "m", "image_classification", dtype="float16")
    assert "vllm" not in fake_gpu
    assert fake_gpu["torch"]["dtype"] == "float16"
    assert endpoint.batch_size == 64  # from the faked free memory
    with pytest.raises(HardwareUnavailable, match="tensorrt is not installed"):
        gpu.load_cuda(skill, "m", "image_classification", engine="tensorrt")


# -- VLLMEngine over a fake AsyncLLM --------------------------------------------------------------


class FakeAsyncLLM:
    """vLLM's ``AsyncLLM.generate`` as the engine uses it, decoding the tiny llama greedily.

    Mirrors vLLM: delta outputs (``merge`` tokens per output, as when a consumer lags), the
    EOS that ends a request in ``token_ids`` (not in the text) with ``stop_reason`` = its id,
    ``min_tokens``
    masking EOS, and with ``detokenize`` its incremental text with stop strings held back
    (the longest one's length minus one) and cut out of the text.
    """

    def __init__(self, model: Any, tokenizer: Any, merge: int = 1) -> None:
        self.model, self.tokenizer, self.merge = model, tokenizer, merge
        self.aborted: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.shut = False

    async def generate(
        self, prompt: dict[str, Any], sampling: dict[str, Any], request_id: str
    ) -> AsyncIterator[Any]:
        self.requests.append(sampling)
        ids = list(prompt["prompt_token_ids"])
        stops = sampling.get("stop") or []
        eos = set(sampling.get("stop_token_ids") or [])
        tokens: list[int] = []
        sent = 0  # characters of text already sent
        pending: list[int] = []
        try:
            while True:
                await asyncio.sleep(0.001)
                with torch.inference_mode():
                    logits = self.model(input_ids=torch.tensor([ids + tokens])).logits[0, -1]
                    if len(tokens) < sampling.get("min_tokens", 0) and eos:
                        logits[sorted(eos)] = float("-inf")
                    token = int(logits.argmax())
                tokens.append(token)
                pending.append(token)
                reason = stop_reason = None
                if token in eos and not sampling["ignore_eos"]:
                    reason, stop_reason = "stop", token
                elif len(tokens) >= sampling["max_tokens"]:
                    reason = "length"
                # vLLM does not detokenize the stop token id that ended a request
                shown = tokens[:-1] if isinstance(stop_reason, int) else tokens
                text = self.tokenizer.decode(shown, skip_special_tokens=True)
                if stops and sampling["detokenize"]:
                    hits = [(text.find(s), s) for s in stops if s in text]
                    if hits:
                        cut, stop_reason = min(hits)
                        text, reason = text[:cut], "stop"
                hold = 0 if reason else max((len(s) - 1 for s in stops), default=0)
                visible = text[: max(sent, len(text) - hold)] if sampling["detokenize"] else ""
                if reason or len(pending) >= self.merge:
                    delta = visible[sent:]
                    sent = len(visible)
                    completion = SimpleNamespace(
                        token_ids=pending, text=delta, finish_reason=reason, stop_reason=stop_reason
                    )
                    yield SimpleNamespace(
                        prompt_token_ids=ids, outputs=[completion], finished=reason is not None
                    )
                    pending = []
                if reason:
                    return
        except (asyncio.CancelledError, GeneratorExit):
            self.aborted.append(request_id)
            raise

    def shutdown(self) -> None:
        self.shut = True


@pytest.fixture(scope="module")
def tiny_llama(task_checkpoint: Any) -> Any:
    skill = skill_class("llama")()
    endpoint = skill.init_cpu(str(task_checkpoint("llama", "text_generation")), "text_generation")
    yield endpoint
    endpoint.close()


@pytest.fixture(scope="module")
def reference(tiny_llama: Any) -> Iterator[DecodeEngine]:
    engine = DecodeEngine(tiny_llama.model, tiny_llama.processor, "cpu")
    yield engine
    engine.close()


def fake_engine(
    tiny_llama: Any, text_handling: str, merge: int = 1, eos_ids: set[int] | None = None
) -> tuple[vllm_engine.VLLMEngine, FakeAsyncLLM]:
    llm = FakeAsyncLLM(tiny_llama.model, tiny_llama.processor, merge)
    gen = tiny_llama.model.generation_config
    engine = vllm_engine.VLLMEngine(
        lambda: llm,
        tiny_llama.processor,
        eos_ids or {gen.eos_token_id},
        text_handling=text_handling,
        make_sampling=lambda kwargs: kwargs,
    )
    return engine, llm


PROMPTS: list[Any] = [
    "hello world",
    "the capital of france is",
    [{"role": "user", "content": "tell me a story about a cat"}],
]


def events(sequence: Any) -> list[dict[str, Any]]:
    out = []
    while (item := sequence.events.get(timeout=60)) is not DONE:
        if isinstance(item, BaseException):
            raise item
        out.append(item)
    return out


@pytest.mark.parametrize(("text_handling", "merge"), [("hfskills", 1), ("vllm", 1), ("vllm", 3)])
def test_fake_vllm_matches_the_torch_engine(
    tiny_llama: Any, reference: DecodeEngine, text_handling: str, merge: int
) -> None:
    engine, llm = fake_engine(tiny_llama, text_handling, merge)
    try:
        for params in (
            GenerationParams(max_new_tokens=12),
            GenerationParams(max_new_tokens=9, ignore_eos=True),
        ):
            expected = [reference.submit(p, params).result() for p in PROMPTS]
            sequences = [engine.submit(p, params) for p in PROMPTS]
            for sequence, want in zip(sequences, expected, strict=True):
                stream = events(sequence)
                final = stream[-1]
                tokens = [e for e in stream[:-1] if e["token_id"] is not None]
                assert [e["token_id"] for e in tokens] == want["token_ids"]
                assert "".join(e["text"] for e in stream) == want["text"]
                assert final["finish_reason"] == want["finish_reason"]
                assert final["token_id"] is None
                assert final["generated_text"] == want["text"]
                assert final["token_ids"] == want["token_ids"]
                assert final["prompt_tokens"] == want["prompt_tokens"]
                assert final["stop_sequence"] is None
        assert engine.load == 0
        greedy = llm.requests[0]
        assert greedy["temperature"] == 0.0 and greedy["detokenize"] is (text_handling == "vllm")
        assert llm.requests[-1]["ignore_eos"] and llm.requests[-1]["min_tokens"] == 9
        assert "stop_token_ids" not in llm.requests[-1]
    finally:
        engine.close()
    assert llm.shut


@pytest.mark.parametrize("text_handling", ["hfskills", "vllm"])
def test_fake_vllm_stop_strings(
    tiny_llama: Any, reference: DecodeEngine, text_handling: str
) -> None:
    base = reference.submit("hello world", GenerationParams(max_new_tokens=16, ignore_eos=True))
    text = base.result()["text"]
    words = text.split()
    assert len(words) > 3, text
    stop = words[2]
    params = GenerationParams(max_new_tokens=16, ignore_eos=True, stop=[stop, "zzzz never"])
    want = reference.submit("hello world", params).result()
    assert want["finish_reason"] == "stop" and want["stop_sequence"] == stop
    engine, llm = fake_engine(tiny_llama, text_handling)
    try:
        got = engine.submit("hello world", params).result()
        assert got == want
        if text_handling == "hfskills":  # the request ran on in vLLM: it was aborted
            assert llm.aborted
    finally:
        engine.close()


@pytest.mark.parametrize(("text_handling", "merge"), [("hfskills", 1), ("vllm", 1), ("vllm", 2)])
def test_fake_vllm_eos(
    tiny_llama: Any, reference: DecodeEngine, text_handling: str, merge: int
) -> None:
    """The random model never samples its EOS: call its 5th greedy token EOS on both sides."""
    free = reference.submit("hello world", GenerationParams(max_new_tokens=8)).result()
    eos = free["token_ids"][4]
    assert eos not in free["token_ids"][:4]
    torch_engine = DecodeEngine(tiny_llama.model, tiny_llama.processor, "cpu")
    torch_engine.eos_ids = {eos}
    engine, llm = fake_engine(tiny_llama, text_handling, merge, eos_ids={eos})
    try:
        for params in (
            GenerationParams(max_new_tokens=8),
            GenerationParams(max_new_tokens=8, min_new_tokens=6),
        ):
            want = torch_engine.submit("hello world", params).result()
            got = engine.submit("hello world", params).result()
            assert got == want
        assert want["finish_reason"] == "length" and eos not in want["token_ids"][:6]
        first = torch_engine.submit("hello world", GenerationParams(max_new_tokens=8)).result()
        assert first["finish_reason"] == "stop" and first["token_ids"] == free["token_ids"][:4]
        assert llm.requests[0]["stop_token_ids"] == [eos]
    finally:
        engine.close()
        torch_engine.close()


def test_fake_vllm_cancel_and_errors(tiny_llama: Any) -> None:
    engine, llm = fake_engine(tiny_llama, "hfskills")
    try:
        sequence = engine.submit("hello world", GenerationParams(max_new_tokens=500))
        stream = sequence.stream()
        next(stream), next(stream)
        stream.close()  # the consumer went away
        deadline = time.monotonic() + 10
        while engine.load and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.load == 0
        assert llm.aborted == [sequence.handle]
        # a bad prompt is the request's error, then DONE
        with pytest.raises(InvalidInput):
            engine.submit(42, GenerationParams()).result()
        cancelled = engine.submit("hello", GenerationParams(max_new_tokens=500))
        cancelled.cancelled.set()
        items = []
        while (item := cancelled.events.get(timeout=10)) is not DONE:
            items.append(item)
        assert all(e.get("finish_reason") is None for e in items)  # no final event: cancelled
    finally:
        engine.close()
    with pytest.raises(Exception, match="stopped"):
        engine.submit("hello", GenerationParams())


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
