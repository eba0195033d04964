"""TensorRT engines for vision and encoder models on NVIDIA GPUs (when ``tensorrt`` is installed).

An engine is built from the checkpoint's ONNX file, which comes from the shared ONNX export
(``skillset/runtime/export.py``, the same file ONNX Runtime opens; this module never exports),
in fp16 with one optimization profile whose batch dimension (and sequence dimension, for text)
is dynamic: shapes from 1 to ``max_batch`` x ``max_tokens``, tuned for ``opt_batch``. Building
takes minutes, so the serialized engine is cached on disk under
``cache.entry(ckpt, task, "tensorrt", "fp16", shapes=..., gpu=...)``: a new checkpoint, other
shapes, another GPU model or another TensorRT version get their own engine.

`TensorRTModel` runs it with torch CUDA tensors as inputs and outputs (no host copies): it is
called like the transformers model it replaces (``model(**batch).logits``), so the skills'
handlers run unchanged. Without ``tensorrt``, `available` is False and `load_endpoint` raises
`HardwareUnavailable`: the caller falls back to the torch path.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any

from . import cache, checkpoint, hardware, torch_backend
from . import options as options_mod
from .endpoint import Endpoint
from .errors import HardwareUnavailable, InferenceError, InvalidInput, ModelLoadError

log = logging.getLogger("hfskills.runtime")

PRECISION = "fp16"
#: Options `load_endpoint` accepts besides the torch path's.
TENSORRT_OPTIONS = frozenset({"max_batch", "opt_batch", "max_tokens", "opt_tokens"})
#: ``dtype`` is accepted and not used: the engine computes in fp16 (its inputs stay float32).
OPTIONS = frozenset(torch_backend.LOAD_OPTIONS | TENSORRT_OPTIONS | {"dtype"})

#: A dynamic-dimension profile: input name -> (min shape, opt shape, max shape).
Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def available() -> bool:
    """Whether the ``tensorrt`` Python package can be imported here."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import tensorrt  # noqa: F401
    except Exception:  # a wheel whose CUDA libraries are missing
        return False
    return True


def profile(
    inputs: dict[str, tuple[int, ...]],
    *,
    max_batch: int = 64,
    opt_batch: int = 16,
    max_tokens: int = 512,
    opt_tokens: int = 128,
) -> Profile:
    """The optimization profile for an ONNX graph's inputs (``-1`` marks a dynamic dimension):
    dimension 0 is the batch (1 .. max_batch), any other dynamic one a sequence length
    (1 .. max_tokens); fixed dimensions (image size, channels) stay as they are."""
    shapes: Profile = {}
    for name, dims in inputs.items():
        low, opt, high = [], [], []
        for axis, dim in enumerate(dims):
            if dim is not None and dim >= 0:
                low.append(dim), opt.append(dim), high.append(dim)
            elif axis == 0:
                low.append(1), opt.append(min(opt_batch, max_batch)), high.append(max_batch)
            else:
                low.append(1), opt.append(min(opt_tokens, max_tokens)), high.append(max_tokens)
        shapes[name] = (tuple(low), tuple(opt), tuple(high))
    return shapes


def onnx_inputs(network: Any) -> dict[str, tuple[int, ...]]:
    """Input name -> shape (``-1`` where dynamic) of a parsed TensorRT network."""
    return {
        network.get_input(i).name: tuple(int(d) for d in network.get_input(i).shape)
        for i in range(network.num_inputs)
    }


def build(onnx_path: Path, plan: Path, limits: dict[str, int]) -> Profile:
    """Parse ``onnx_path``, build an fp16 engine with one dynamic profile, write it to ``plan``."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # TensorRT 8: explicit batch is opt-in
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise HardwareUnavailable(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    shapes = profile(onnx_inputs(network), **limits)
    config = builder.create_builder_config()
    if getattr(builder, "platform_has_fast_fp16", True):  # deprecated (always true) in 10.x
        config.set_flag(trt.BuilderFlag.FP16)
    optimization = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        optimization.set_shape(name, low, opt, high)
    config.add_optimization_profile(optimization)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise HardwareUnavailable(f"TensorRT could not build an engine from {onnx_path.name}")
    plan.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan.with_suffix(".partial")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(plan)
    return shapes


class _Outputs(dict):
    """Output name -> tensor, also readable as attributes (``out.logits``), like ModelOutput."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class TensorRTModel:
    """A deserialized engine, called with torch tensors like a transformers model.

    Inputs are bound by name (anything the engine does not take, e.g. ``token_type_ids`` of
    a graph exported without them, is ignored), moved to the engine's device and dtype; outputs
    are fresh torch CUDA tensors. Calls are serialized (one execution context); each runs on
    torch's current CUDA stream, so no synchronization is needed before using the outputs.
    """

    def __init__(self, plan: bytes, device: str = "cuda:0") -> None:
        import tensorrt as trt
        import torch

        self.device = torch.device(device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with torch.cuda.device(self.device):
            self.engine = self.runtime.deserialize_cuda_engine(plan)
            if self.engine is None:
                raise HardwareUnavailable("TensorRT could not load the cached engine")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self.dtypes = {n: _torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}
        self.lock = threading.Lock()

    def forward(self, **inputs: Any) -> _Outputs:
        import torch

        missing = [n for n in self.inputs if n not in inputs]
        if missing:
            raise InvalidInput(f"the TensorRT engine needs input(s) {missing}")
        with self.lock, torch.cuda.device(self.device):
            bound = {}
            for name in self.inputs:
                tensor = inputs[name].to(self.device, dtype=self.dtypes[name]).contiguous()
                bound[name] = tensor  # kept alive until the engine has run
                if not self.context.set_input_shape(name, tuple(tensor.shape)):
                    raise InvalidInput(
                        f"input {name} of shape {tuple(tensor.shape)} is outside the engine's "
                        "optimization profile"
                    )
                self.context.set_tensor_address(name, tensor.data_ptr())
            out = _Outputs()
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                out[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
                self.context.set_tensor_address(name, out[name].data_ptr())
            stream = torch.cuda.current_stream(self.device)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise InferenceError("TensorRT execution failed")
        return out

    __call__ = forward

    def eval(self) -> TensorRTModel:
        return self


def _torch_dtype(trt_dtype: Any) -> Any:
    import tensorrt as trt
    import torch

    table = {
        "FLOAT": torch.float32,
        "HALF": torch.float16,
        "BF16": torch.bfloat16,
        "INT8": torch.int8,
        "INT32": torch.int32,
        "INT64": torch.int64,
        "BOOL": torch.bool,
        "UINT8": torch.uint8,
    }
    for name, dtype in table.items():
        if getattr(trt.DataType, name, None) == trt_dtype:
            return dtype
    raise HardwareUnavailable(f"TensorRT tensor type {trt_dtype} has no torch equivalent")


def load_endpoint(
    skill: Any,
    model: str,
    task: str,
    *,
    onnx_path: Path,
    device: str = "cuda:0",
    **options: Any,
) -> Endpoint:
    """``model`` for ``task`` on a TensorRT engine built from ``onnx_path`` (the shared ONNX
    export of this checkpoint and task), cached on disk; `HardwareUnavailable` without
    TensorRT or CUDA, or when TensorRT cannot build the graph."""
    if not available():
        raise HardwareUnavailable("tensorrt is not installed (pip install tensorrt)")
    hardware.require("cuda")
    skill.check_task(task)
    options_mod.check(options, OPTIONS)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise HardwareUnavailable(f"no ONNX export at {onnx_path}")
    import tensorrt as trt
    import torch
    from transformers import AutoConfig

    ckpt = checkpoint.resolve(model, options.get("gguf_file"))
    limits = {k: int(options[k]) for k in TENSORRT_OPTIONS if options.get(k) is not None}
    gpu = torch.cuda.get_device_name(torch.device(device))
    path = cache.entry(
        ckpt,
        task,
        "tensorrt",
        PRECISION,
        shapes=sorted(limits.items()),
        gpu=gpu,
        tensorrt=trt.__version__,
        onnx=[onnx_path.name, onnx_path.stat().st_size, onnx_path.stat().st_mtime_ns],
        revision=options.get("revision"),
    )
    plan = path / "model.plan"
    if not cache.ready(path):
        log.info("building a TensorRT engine for %s/%s in %s (minutes)", model, task, path)
        with torch.cuda.device(torch.device(device)):
            shapes = build(onnx_path, plan, limits)
        cache.mark_ready(
            path,
            {"checkpoint": ckpt.location, "gpu": gpu, "shapes": shapes, "onnx": str(onnx_path)},
        )
    hub = {k: options[k] for k in ("revision", "local_files_only") if options.get(k) is not None}
    try:
        processor = torch_backend.load_processor(skill.processors[task], ckpt, **hub)
        config = AutoConfig.from_pretrained(ckpt.location, **ckpt.kwargs, **hub)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"could not load {model!r}'s processor or config: {exc}") from exc
    net = TensorRTModel(plan.read_bytes(), device)
    endpoint = Endpoint(
        model=net,
        processor=processor,
        task=task,
        hardware="cuda",
        device=device,
        dtype="float32",  # the inputs' dtype; the engine computes in fp16 inside
        model_id=str(model),
        skill=type(skill).__name__,
        batch_size=int(options.get("batch_size", 8)),
        memory_bytes=plan.stat().st_size,
        config=config,
        allow_local_paths=bool(options.get("allow_local_paths", True)),
    )
    endpoint.settings.update(
        checkpoint=ckpt, engine="tensorrt", precision=PRECISION, tensorrt_plan=str(plan)
    )
    log.info("loaded %s on TensorRT from %s", endpoint, plan)
    return endpoint
