"""Loading a checkpoint with torch on one device: the path shared by cpu, cuda, rocm and mps.

The skill says what is model-specific (the transformers class for the task, which processor,
the dtype for the hardware); this module does the generic rest: resolve the checkpoint, load
processor and model, place them, measure memory, and wrap it all in an `Endpoint`.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from . import checkpoint as checkpoints
from .endpoint import Endpoint
from .errors import InvalidInput, ModelLoadError, first_line
from .options import check as check_options

log = logging.getLogger("hfskills.runtime")

#: Processor kinds a skill can name, and the transformers auto class that loads each.
PROCESSOR_CLASSES = {
    "tokenizer": "AutoTokenizer",
    "image_processor": "AutoImageProcessor",
    "feature_extractor": "AutoFeatureExtractor",
    "processor": "AutoProcessor",
}

#: Options every ``init_<hw>`` accepts (anything else is a clear error, not silently ignored).
LOAD_OPTIONS = frozenset(
    {
        "gguf_file",
        "revision",
        "attn_implementation",
        "batch_size",
        "local_files_only",
        "allow_local_paths",
        # LoRA adapters, served name -> PEFT adapter directory (adapters.py): the catalog's
        "adapters",
    }
)


def dtype_of(name: str) -> Any:
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise InvalidInput(
            f"unknown dtype {name!r}; use float32, bfloat16 or float16", param="dtype"
        )
    return dtype


def measure_bytes(model: Any) -> int:
    """Bytes held by the model's parameters and buffers (shared storages counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        storage = tensor.untyped_storage()
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
    return total


def place(batch: Any, endpoint: Endpoint) -> dict[str, Any]:
    """Move a processor's output to the endpoint's device; floating inputs take its dtype.
    On CUDA the copies go through pinned memory, non-blocking (`cuda.pin`)."""
    from . import cuda

    return cuda.pin(batch, endpoint.device, dtype_of(endpoint.dtype))


def accepted_inputs(model: Any, batch: dict[str, Any], method: str = "forward") -> dict[str, Any]:
    """Drop processor outputs the model's ``method`` does not take (e.g. token_type_ids)."""
    params = inspect.signature(getattr(model, method)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return batch
    return {key: value for key, value in batch.items() if key in params}


def _share_padding(processor: Any, model: Any) -> None:
    """Tokenizers without a pad token pad with EOS; the model config learns the pad id."""
    tokenizer = getattr(processor, "tokenizer", processor)
    if getattr(tokenizer, "pad_token", "absent") is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None and getattr(model.config, "pad_token_id", 0) is None:
        model.config.pad_token_id = pad


def load_processor(kind: str, ckpt: checkpoints.Checkpoint, **kwargs: Any) -> Any:
    import transformers

    auto = getattr(transformers, PROCESSOR_CLASSES[kind])
    return auto.from_pretrained(ckpt.location, **ckpt.kwargs, **kwargs)


def load_endpoint(
    *,
    skill: str,
    model: str,
    task: str,
    model_class: str,
    processor: str,
    hardware: str,
    device: str,
    dtype: str,
    batch_size: int = 8,
    **options: Any,
) -> Endpoint:
    """Load ``model`` with ``transformers.<model_class>`` onto ``device`` and return an Endpoint."""
    import transformers

    check_options(options, LOAD_OPTIONS | {"dtype"})
    batch_size = int(options.pop("batch_size", batch_size))
    allow_local_paths = bool(options.pop("allow_local_paths", True))
    ckpt = checkpoints.resolve(model, options.pop("gguf_file", None))
    lora = options.pop("adapters", None) or {}
    extra = {k: v for k, v in options.items() if v is not None}
    # the processor takes only where-to-load options; model options stay with the model
    processor_extra = {k: v for k, v in extra.items() if k in ("revision", "local_files_only")}
    torch_dtype = dtype_of(dtype)
    try:
        proc = load_processor(processor, ckpt, **processor_extra)
        cls = getattr(transformers, model_class)
        net = cls.from_pretrained(ckpt.location, dtype=torch_dtype, **ckpt.kwargs, **extra)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
        raise ModelLoadError(
            f"could not load {model!r} as {model_class}: {first_line(exc)}"
        ) from exc
    net = net.to(device).eval()
    _share_padding(proc, net)
    if lora:  # after padding is shared: the wrapper reads the base's config
        from . import adapters

        net = adapters.attach(net, lora)
    endpoint = Endpoint(
        model=net,
        processor=proc,
        task=task,
        hardware=hardware,
        device=device,
        dtype=dtype,
        model_id=str(model),
        skill=skill,
        batch_size=batch_size,
        memory_bytes=measure_bytes(net),
        config=net.config,
        allow_local_paths=allow_local_paths,
    )
    endpoint.settings["checkpoint"] = ckpt
    if lora:
        endpoint.settings["adapters"] = sorted(lora)
    log.info("loaded %s", endpoint)
    return endpoint
