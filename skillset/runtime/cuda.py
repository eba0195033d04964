"""GPU specifics of the torch path (CUDA, ROCm, MPS): dtype, attention, transfers, batch size,
and CUDA graphs.

Everything here imports with a CPU-only torch; what needs a GPU asks for it when called.

- `torch_dtype_for`: the dtype a model loads in on a hardware: bfloat16 where the GPU computes
  it natively, else float16; float16 on MPS; float32 on CPUs.
- `attn_implementation`: "sdpa" (torch's fused attention) on GPUs, where the model supports it.
- `pin`: a processor's tensors to the GPU through pinned host memory, without blocking.
- `batch_size_from_free_memory`: how many inputs fit in what the GPU has free.
- `compile`: ``torch.compile`` with mode "reduce-overhead" (CUDA graphs) for encoder and vision
  models, with the batch padded to a power of two so a handful of graphs serve every batch.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from .errors import InvalidInput

log = logging.getLogger("hfskills.runtime")

GPUS = ("cuda", "rocm", "mps")
#: Torch devices of the GPU backends (ROCm's HIP build names its devices "cuda" too).
DEVICE_TYPES = {"cuda": "cuda", "rocm": "cuda", "mps": "mps", "cpu": "cpu"}
DTYPES = ("float32", "bfloat16", "float16")


def bf16_supported() -> bool:
    """Whether the current CUDA/ROCm device computes bfloat16 natively (Ampere, MI200 and up);
    emulated bfloat16 (older GPUs) is slower than float16, so it does not count."""
    import torch

    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch: no including_emulation argument
        return bool(torch.cuda.is_bf16_supported())


def torch_dtype_for(hardware: str, requested: str | None = None) -> str:
    """The dtype name a model loads in on ``hardware``.

    With nothing requested (or "auto"): cuda and rocm take bfloat16 when the GPU has it natively,
    else float16; mps float16; anything else float32. A requested dtype is kept, except bfloat16
    on a CUDA/ROCm GPU without native bfloat16, which becomes float16 (a skill's default of
    bfloat16 must still load on a T4 or V100).
    """
    if requested not in (None, "auto") and requested not in DTYPES:
        raise InvalidInput(f"unknown dtype {requested!r}; use one of {list(DTYPES)}", param="dtype")
    if hardware in ("cuda", "rocm"):
        if requested in (None, "auto", "bfloat16"):
            if bf16_supported():
                return "bfloat16"
            if requested == "bfloat16":
                log.info("%s: this GPU has no native bfloat16; loading in float16", hardware)
            return "float16"
        return str(requested)
    if requested in (None, "auto"):
        return "float16" if hardware == "mps" else "float32"
    return str(requested)


def attn_implementation(
    hardware: str, model_class: str | None = None, requested: str | None = None
) -> str | None:
    """The ``attn_implementation`` to load with: the requested one, else "sdpa" on GPUs when
    the transformers class supports it, else None (transformers' own default)."""
    if requested:
        return requested
    if hardware not in GPUS:
        return None
    if model_class is not None:
        import transformers

        cls = getattr(transformers, model_class, None)
        if cls is None or not getattr(cls, "_supports_sdpa", False):
            return None
    return "sdpa"


def pin(batch: Any, device: str = "cuda", dtype: Any = None) -> dict[str, Any]:
    """Move a processor's output to ``device``: through pinned (page-locked) host memory with
    ``non_blocking`` copies on CUDA, so the copy overlaps the work queued before it; a plain
    ``.to`` elsewhere. Floating tensors take ``dtype`` when given (a name or a torch dtype)."""
    import torch

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    target = torch.device(device)
    fast = target.type == "cuda" and torch.cuda.is_available()
    placed = {}
    for key, value in dict(batch).items():
        if isinstance(value, torch.Tensor):
            cast = dtype if dtype is not None and value.is_floating_point() else None
            if fast and value.device.type == "cpu":
                value = value.pin_memory().to(target, dtype=cast, non_blocking=True)
            else:
                value = value.to(target, dtype=cast)
        placed[key] = value
    return placed


def batch_size_from_free_memory(
    model_bytes: int,
    per_item_bytes_estimate: int,
    device: str = "cuda:0",
    *,
    headroom: float = 0.8,
    limit: int = 256,
) -> int:
    """The largest power of two of inputs whose activations fit in the GPU's free memory.

    ``model_bytes`` is memory still to be taken before the batch runs (0 when the model is
    already on the GPU: free memory already excludes it); ``headroom`` keeps a share of the free
    memory for the allocator's fragmentation and other processes. At least 1, at most ``limit``.
    """
    import torch

    if per_item_bytes_estimate <= 0:
        raise ValueError("per_item_bytes_estimate must be positive")
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    budget = int(free * headroom) - int(model_bytes)
    fits = max(1, budget // per_item_bytes_estimate)
    size = 1
    while size * 2 <= min(fits, limit):
        size *= 2
    return size


def per_item_bytes(config: Any, dtype: str, tokens: int | None = None) -> int:
    """A rough estimate of one input's peak activation memory in a transformer encoder: a layer's
    working set (about 16 hidden-size vectors per token, plus the attention matrix of each head).
    Convolutional models (no ``hidden_size``) count 64 MiB."""
    elem = 4 if dtype == "float32" else 2
    text = getattr(config, "text_config", None) or config
    vision = getattr(config, "vision_config", None) or config
    hidden = getattr(text, "hidden_size", None) or getattr(vision, "hidden_size", None)
    if not isinstance(hidden, int):
        return 64 * 2**20
    heads = getattr(text, "num_attention_heads", None) or 12
    if tokens is None:
        image, patch = getattr(vision, "image_size", None), getattr(vision, "patch_size", None)
        if isinstance(image, int) and isinstance(patch, int) and patch:
            tokens = (image // patch) ** 2 + 1
        else:
            tokens = min(int(getattr(text, "max_position_embeddings", 512) or 512), 512)
    return elem * tokens * (16 * hidden + heads * tokens)


# -- CUDA graphs ---------------------------------------------------------------------------------


def compile(model: Any, mode: str = "reduce-overhead", *, max_batch: int = 64) -> Any:
    """Compile ``model``'s forward with ``torch.compile(mode=mode)`` in place and return it.

    Mode "reduce-overhead" records CUDA graphs: one launch per forward instead of one per
    kernel, which is most of the gain for the small encoder and vision models served here. A
    graph holds one input shape, so every call's batch is padded to the next power of two (up
    to ``max_batch``) by repeating its first row, and the outputs are cut back: at most
    log2(max_batch)+1 graphs for a vision model (fixed image size). Text encoders see varying
    sequence lengths too; each new length compiles again (torch's recompile limit then falls
    back to eager), so compile pays off most for vision models. Calls are serialized and the
    outputs copied out of the graph's static buffers, so threads may share the model. The first
    call of each shape compiles (seconds); later calls replay.
    """
    import torch

    if model is None or not isinstance(model, torch.nn.Module):
        raise InvalidInput("compile needs a torch model")
    device = next(model.parameters()).device
    if device.type != "cuda":
        raise InvalidInput(f"compile (CUDA graphs) needs a CUDA or ROCm device, not {device}")
    forward = model.forward
    compiled = torch.compile(forward, mode=mode, dynamic=False)
    model.forward = bucketed(forward, compiled, max_batch=max_batch, graphs=True)
    log.info("compiled %s with torch.compile(mode=%r)", type(model).__name__, mode)
    return model


def bucketed(
    original: Callable[..., Any],
    run: Callable[..., Any],
    *,
    max_batch: int = 64,
    graphs: bool = False,
) -> Callable[..., Any]:
    """``run`` (the compiled ``original``) behind a forward that pads the batch dimension of
    every tensor argument to a power of two and cuts the outputs back to the real batch.

    Serialized by a lock; with ``graphs`` each call marks a new CUDA graph step and copies the
    outputs out of the graph's buffers (the next replay would overwrite them).
    """
    lock = threading.Lock()

    @functools.wraps(original)  # inspect.signature(model.forward) still sees the model's own
    def forward(*args: Any, **kwargs: Any) -> Any:
        import torch

        rows = _batch_rows(args, kwargs)
        if rows is None:
            return run(*args, **kwargs)
        padded = _bucket(rows, max_batch)
        if padded != rows:
            args = tuple(_pad(a, rows, padded) for a in args)
            kwargs = {k: _pad(v, rows, padded) for k, v in kwargs.items()}
        with lock:
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            out = run(*args, **kwargs)
            return _cut(out, rows, padded, copy=graphs)

    return forward


def _batch_rows(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    import torch

    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return None


def _bucket(rows: int, max_batch: int) -> int:
    if rows >= max_batch:
        return rows
    size = 1
    while size < rows:
        size *= 2
    return min(size, max_batch)


def _pad(value: Any, rows: int, padded: int) -> Any:
    import torch

    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows:
        filler = value[:1].expand(padded - rows, *value.shape[1:])
        return torch.cat([value, filler])
    return value


def _cut(value: Any, rows: int, padded: int, copy: bool) -> Any:
    """``value`` (a tensor, a ModelOutput, a tuple...) with its padded rows removed."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.dim() > 0 and value.shape[0] == padded:
            value = value[:rows]
        return value.clone() if copy else value
    if isinstance(value, dict):  # transformers' ModelOutput is an OrderedDict
        items = {k: _cut(v, rows, padded, copy) for k, v in value.items()}
        try:
            return type(value)(**items)
        except TypeError:
            return items
    if isinstance(value, tuple | list):
        return type(value)(_cut(v, rows, padded, copy) for v in value)
    return value
