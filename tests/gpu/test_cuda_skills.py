"""Skills on a CUDA GPU through `gpu.load_cuda` (the torch path) against the same skills on the
CPU: the same checkpoint, inputs and handlers; tolerances by dtype.

float32 on the GPU differs from the CPU only by summation order (and TF32 convolutions where
cuDNN allows them); bfloat16 keeps 8 bits of mantissa, float16 11, so their tolerances are
those of the format on these tiny random models' small activations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from hfskills.skillset.runtime import cuda, gpu, hardware
from hfskills.skillset.runtime.continuous import DecodeEngine
from hfskills.skillset.runtime.generation import GenerationParams
from tests.checkpoints import tiny_image
from tests.conftest import skill_class

TEXTS = ["hello world", "the capital of france is paris", "a b c", "good morning"]
IMAGES = [tiny_image(48, seed=0), tiny_image(40, seed=1), tiny_image(56, seed=2)]
#: dtype -> absolute tolerance on normalized embeddings and on softmax scores
TOLERANCE = {"float32": 2e-3, "float16": 1e-2, "bfloat16": 4e-2}


def both(task_checkpoint: Any, model_type: str, task: str, **options: Any) -> tuple[Any, Any]:
    """(cpu handler, cuda handler) for ``task``, the cuda one from `gpu.load_cuda`."""
    path = str(task_checkpoint(model_type, task))
    skill = skill_class(model_type)()
    cpu = skill.init_cpu(path, task)
    on_gpu = gpu.load_cuda(skill, path, task, "cuda", "cuda:0", engine="torch", **options)
    assert on_gpu.hardware == "cuda" and on_gpu.device == "cuda:0"
    assert next(on_gpu.model.parameters()).device.type == "cuda"
    return skill.handler(cpu), skill.handler(on_gpu)


def test_cuda_is_detected() -> None:
    hardware.probe.cache_clear()
    info = hardware.require("cuda")
    assert info.devices and torch.cuda.get_device_name(0) in info.reason


def test_dtype_rule_on_this_gpu() -> None:
    expected = "bfloat16" if torch.cuda.get_device_capability(0)[0] >= 8 else "float16"
    assert cuda.torch_dtype_for("cuda") == expected


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_bert_embeddings(task_checkpoint: Any, dtype: str) -> None:
    on_cpu, on_gpu = both(task_checkpoint, "bert", "text_embedding", dtype=dtype)
    expected = np.array(on_cpu(TEXTS))
    got = np.array(on_gpu(TEXTS))
    assert got.shape == expected.shape
    assert np.allclose(got, expected, atol=TOLERANCE[dtype]), np.abs(got - expected).max()
    cosine = (
        (got * expected).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(expected, axis=-1)
    )
    assert cosine.min() > 0.999


def scores(results: list[list[dict[str, Any]]]) -> np.ndarray:
    return np.array(
        [[r["score"] for r in sorted(res, key=lambda r: r["label"])] for res in results]
    )


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_vit_classification(task_checkpoint: Any, dtype: str) -> None:
    on_cpu, on_gpu = both(task_checkpoint, "vit", "image_classification", dtype=dtype)
    expected, got = scores(on_cpu(IMAGES)), scores(on_gpu(IMAGES))
    assert np.allclose(got, expected, atol=TOLERANCE[dtype]), np.abs(got - expected).max()


def test_vit_cuda_graphs(task_checkpoint: Any) -> None:
    """compile=True: CUDA graphs per power-of-two batch; any batch size gives eager's scores."""
    on_cpu, on_gpu = both(
        task_checkpoint, "vit", "image_classification", dtype="float32", compile=True
    )
    for n in (1, 3, 2, 3):  # 3 pads to 4; the second 3 replays the recorded graph
        images = (IMAGES * 2)[:n]
        expected, got = scores(on_cpu(images)), scores(on_gpu(images))
        assert np.allclose(got, expected, atol=TOLERANCE["float32"])


def test_llama_generation_float32_greedy(task_checkpoint: Any) -> None:
    path = str(task_checkpoint("llama", "text_generation"))
    skill = skill_class("llama")()
    cpu = skill.init_cpu(path, "text_generation")
    on_gpu = gpu.load_cuda(skill, path, "text_generation", engine="torch", dtype="float32")
    assert on_gpu.engine is None and on_gpu.dtype == "float32"
    params = {"max_new_tokens": 12}
    prompts = ["hello world", "the capital of france is"]
    expected = skill.handler(cpu)(prompts, **params)
    got = skill.handler(on_gpu)(prompts, **params)
    for want, have in zip(expected, got, strict=True):
        assert have["token_ids"][:8] == want["token_ids"][:8]
        assert have["prompt_tokens"] == want["prompt_tokens"]
    # the host's continuous-batching engine on the GPU gives the same tokens
    engine = DecodeEngine(on_gpu.model, on_gpu.processor, on_gpu.device)
    try:
        streamed = [engine.submit(p, GenerationParams(**params)).result() for p in prompts]
    finally:
        engine.close()
    assert [s["token_ids"][:8] for s in streamed] == [g["token_ids"][:8] for g in got]


def test_llama_generation_bfloat16_runs(task_checkpoint: Any) -> None:
    path = str(task_checkpoint("llama", "text_generation"))
    skill = skill_class("llama")()
    on_gpu = gpu.load_cuda(skill, path, "text_generation", engine="torch")
    assert on_gpu.dtype == cuda.torch_dtype_for("cuda")
    (result,) = skill.handler(on_gpu)(["hello world"], max_new_tokens=6, ignore_eos=True)
    assert len(result["token_ids"]) == 6 and result["finish_reason"] == "length"


def test_pin_and_batch_size() -> None:
    batch = {"pixel_values": torch.randn(4, 3, 8, 8), "ids": torch.arange(4)}
    placed = cuda.pin(batch, "cuda:0", "float16")
    torch.cuda.synchronize()
    assert placed["pixel_values"].device.type == "cuda"
    assert placed["pixel_values"].dtype == torch.float16 and placed["ids"].dtype == torch.long
    assert torch.allclose(placed["pixel_values"].float().cpu(), batch["pixel_values"], atol=1e-2)
    size = cuda.batch_size_from_free_memory(0, 2**20, "cuda:0", limit=128)
    assert size == 128
    assert cuda.batch_size_from_free_memory(0, 2**50, "cuda:0") == 1
