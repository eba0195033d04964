"""`load_cuda`: where ``init_cuda``, ``init_rocm`` and ``init_mps`` send a load.

The decision, per DESIGN.md (Hardware):

- decoder text generation on CUDA: vLLM (vllm_engine.py) when it is installed and can run the
  checkpoint;
- vision and encoder tasks on CUDA: TensorRT (tensorrt.py) when it is installed and an ONNX
  export of the checkpoint is at hand;
- everything else, and every fallback: torch on the GPU (`Skill.load_torch`) in the dtype
  `cuda.torch_dtype_for` picks, with sdpa attention, and CUDA graphs when asked (``compile``).

The ``engine`` option forces a path: "vllm" or "tensorrt" (their failure is then the load's
failure), or "torch"; "auto" (the default) falls back to torch with a log line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from . import cuda, generation
from . import hardware as detection
from .endpoint import Endpoint
from .errors import HardwareUnavailable, InvalidInput

log = logging.getLogger("hfskills.runtime")

ENGINES = ("auto", "vllm", "tensorrt", "torch")
#: What TensorRT serves: tasks whose handler makes one ``model(**batch)`` call, of encoder and
#: vision skills (the engine replaces exactly that call).
TENSORRT_TASKS = (
    "image_classification",
    "text_embedding",
    "text_classification",
    "token_classification",
    "fill_mask",
    "question_answering",
)
TENSORRT_FAMILIES = ("encoder", "vision")
#: Tasks that generate (or decode audio of any length): no CUDA graphs, no TensorRT.
GENERATION_TASKS = generation.GENERATION_TASKS | {"automatic_speech_recognition"}
#: Options only this module reads (the torch path would refuse them).
GPU_OPTIONS = frozenset({"engine", "compile", "onnx_path"})


def _all_options() -> tuple[frozenset[str], frozenset[str]]:
    from . import tensorrt, torch_backend, vllm_engine

    every = (
        torch_backend.LOAD_OPTIONS
        | {"dtype"}
        | GPU_OPTIONS
        | vllm_engine.OPTIONS
        | tensorrt.OPTIONS
    )
    return frozenset(every), frozenset(every - torch_backend.LOAD_OPTIONS - {"dtype"})


#: Every option ``init_cuda``/``init_rocm``/``init_mps`` accept (a catalog entry may name any);
#: and those that only GPU paths read, which a CPU fallback should drop rather than refuse.
OPTIONS, GPU_ONLY_OPTIONS = _all_options()


def load_cuda(
    skill: Any,
    model: str,
    task: str,
    hardware: str = "cuda",
    device: str = "cuda:0",
    **options: Any,
) -> Endpoint:
    """Load ``model`` for ``task`` on a GPU backend (cuda, rocm or mps): vLLM, TensorRT or torch
    (see the module docstring). Raises `HardwareUnavailable` when the backend is absent."""
    detection.require(hardware)
    skill.check_task(task)
    engine = options.pop("engine", None) or "auto"
    if engine not in ENGINES:
        raise InvalidInput(f"engine must be one of {list(ENGINES)}", param="engine")
    onnx_path = options.pop("onnx_path", None)
    on_cuda = hardware == "cuda"
    if engine in ("vllm", "tensorrt") and not on_cuda:
        raise HardwareUnavailable(f"{engine} runs on NVIDIA GPUs (cuda), not {hardware}")

    if engine in ("auto", "vllm") and on_cuda and _decoder_generation(skill, task):
        from . import vllm_engine

        vllm_options = dict(options)
        _drop(vllm_options, tensorrt_only=True)
        try:
            return vllm_engine.load_endpoint(skill, model, task, device=device, **vllm_options)
        except HardwareUnavailable as exc:
            if engine == "vllm":
                raise
            log.info("%s: vLLM unavailable (%s); loading with torch", model, exc.message)
        _drop(options, vllm_only=True)
    elif engine == "vllm":
        raise HardwareUnavailable(f"vLLM serves decoder text generation, not {task}")
    else:
        _drop(options, vllm_only=True)

    if engine in ("auto", "tensorrt") and on_cuda and _tensorrt_task(skill, task):
        from . import tensorrt

        try:
            if engine == "auto" and options.get("dtype") == "float32":
                raise HardwareUnavailable("float32 asked for; TensorRT engines here are fp16")
            if not tensorrt.available():
                raise HardwareUnavailable("tensorrt is not installed")
            if onnx_path is None:  # the shared ONNX export, made on the CPU and cached
                from . import onnx_runtime, torch_backend

                export_options = {
                    k: v for k, v in options.items() if k in torch_backend.LOAD_OPTIONS
                }
                onnx_path = onnx_runtime.onnx_file(skill, model, task, **export_options)
            return tensorrt.load_endpoint(
                skill, model, task, onnx_path=Path(onnx_path), device=device, **options
            )
        except HardwareUnavailable as exc:
            if engine == "tensorrt":
                raise
            log.info("%s: TensorRT unavailable (%s); loading with torch", model, exc.message)
    elif engine == "tensorrt":
        raise HardwareUnavailable(f"TensorRT serves {list(TENSORRT_TASKS)} here, not {task}")
    _drop(options, tensorrt_only=True)
    return load_torch(skill, model, task, hardware, device, **options)


def load_torch(
    skill: Any, model: str, task: str, hardware: str, device: str, **options: Any
) -> Endpoint:
    """The torch path on a GPU: dtype by `cuda.torch_dtype_for`, sdpa attention where the
    model has it, CUDA graphs with ``compile=True`` (or a torch.compile mode name)."""
    mode = options.pop("compile", None)
    if mode and (task in GENERATION_TASKS or hardware not in ("cuda", "rocm")):
        raise InvalidInput(
            "compile (CUDA graphs) is for encoder and vision tasks on cuda or rocm", param="compile"
        )
    requested = options.pop("dtype", None) or skill.dtypes.get(hardware)
    dtype = cuda.torch_dtype_for(hardware, requested)
    model_class = skill.model_classes.get(task)
    attn = cuda.attn_implementation(hardware, model_class, options.pop("attn_implementation", None))
    if attn is not None:
        options["attn_implementation"] = attn
    batch_size = options.pop("batch_size", None)
    endpoint = skill.load_torch(
        model, task, hardware=hardware, device=device, dtype=dtype, **options
    )
    if batch_size is not None:
        endpoint.batch_size = int(batch_size)
    elif hardware in ("cuda", "rocm") and task not in GENERATION_TASKS:
        per_item = cuda.per_item_bytes(endpoint.config, dtype)
        endpoint.batch_size = cuda.batch_size_from_free_memory(0, per_item, device, limit=64)
    if mode:
        cuda.compile(endpoint.model, "reduce-overhead" if mode is True else str(mode))
        endpoint.settings["compiled"] = "reduce-overhead" if mode is True else str(mode)
    return endpoint


def _decoder_generation(skill: Any, task: str) -> bool:
    return task == "text_generation" and getattr(skill, "family", None) == "decoder"


def _tensorrt_task(skill: Any, task: str) -> bool:
    return task in TENSORRT_TASKS and getattr(skill, "family", None) in TENSORRT_FAMILIES


def _drop(options: dict[str, Any], *, vllm_only: bool = False, tensorrt_only: bool = False) -> None:
    """Remove the options only the skipped engine reads, so the next path accepts the rest."""
    from . import tensorrt, vllm_engine

    names = set()
    if vllm_only:
        names |= vllm_engine.VLLM_OPTIONS - {"dtype"}
    if tensorrt_only:
        names |= tensorrt.TENSORRT_OPTIONS
    for name in names:
        if name in options:
            log.info("option %s is for another engine; ignored here", name)
            options.pop(name)
