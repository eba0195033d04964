"""Non-generative tasks on OpenVINO: the torch model converted to OpenVINO IR, cached, compiled.

``openvino.convert_model`` traces the call the task's handler makes (export.py) with
``torch.jit.trace`` on the first example batch; the axes that vary between the two example
batches (batch, sequence, audio time, DETR's image sides) are converted as dynamic dimensions,
the rest stay static. The IR is saved with ``openvino.save_model`` into the export cache
(``$HFSKILLS_CACHE/openvino/...``), checked against torch on a differently-shaped batch, and
reused on the next load without loading the torch weights (only the processor and config).
Optimum-intel is not used: it does not support the transformers version this project pins.

``precision`` picks the compiled model's ``INFERENCE_PRECISION_HINT``: "f32" (default, matches
torch to ~1e-6), "bf16" or "f16" (faster on CPUs with AMX/AVX512-BF16 or FP16 support; the CPU
plugin substitutes what the processor has, e.g. bf16 for f16), or "auto" (no hint: the
device's own default, as for GenAI). The hint applies when compiling, so "f32", "bf16" and
"auto" share one IR with float32 weights; "f16" has its own, with FP16 weights (half the file).
"""

from __future__ import annotations

import functools
import logging
import queue
from pathlib import Path
from typing import Any

from . import export
from .endpoint import Endpoint
from .errors import HardwareUnavailable, InvalidInput, first_line
from .graph_model import GraphModel

log = logging.getLogger("hfskills.runtime")

PRECISIONS = ("f32", "bf16", "f16", "auto")
#: Options beyond torch's LOAD_OPTIONS.
OPTIONS = frozenset({"precision"})
IR_FILE = "model.xml"
#: Device prefixes that name a virtual OpenVINO device rather than a physical one.
_VIRTUAL = ("AUTO", "HETERO", "MULTI", "BATCH")


@functools.cache
def core() -> Any:
    """One OpenVINO `Core` per process (thread-safe; compiled models share its plugins)."""
    import openvino

    return openvino.Core()


def runner(compiled: Any, inputs: tuple[str, ...]) -> export.Runner:
    """Run a compiled model (inputs in ``inputs`` order) from any thread: each call takes an
    idle infer request (or makes one) and hands it back, so no two calls share a request."""
    idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
    count = len(compiled.outputs)

    def run(arrays: dict[str, Any]) -> list[Any]:
        try:
            request = idle.get_nowait()
        except queue.Empty:
            request = compiled.create_infer_request()
        try:
            result = request.infer({i: arrays[name] for i, name in enumerate(inputs)})
            return [result[i] for i in range(count)]  # copies: the request is reused
        finally:
            idle.put(request)

    return run


def _name_ports(model: Any, spec: export.GraphSpec) -> None:
    """Give the IR's inputs and outputs the spec's names (taken off any inner tensor first)."""
    wanted = set(spec.inputs) | set(spec.outputs)
    for op in model.get_ordered_ops():
        for port in op.outputs():
            names = port.get_names()
            if names & wanted:
                port.get_tensor().set_names(names - wanted)
    for port, name in zip(model.inputs, spec.inputs, strict=True):
        port.get_tensor().set_names({name})
    for port, name in zip(model.outputs, spec.outputs, strict=True):
        port.get_tensor().set_names({name})


def _writer(weights: str) -> export.Writer:
    def write(exp: export.Export, directory: Path) -> export.Runner:
        import openvino

        shapes = [
            openvino.PartialShape(exp.spec.shape(name, tensor))
            for name, tensor in zip(exp.spec.inputs, exp.example, strict=True)
        ]
        model = openvino.convert_model(exp.module, example_input=exp.example, input=shapes)
        if len(model.inputs) != len(exp.spec.inputs) or len(model.outputs) != len(exp.spec.outputs):
            raise HardwareUnavailable(
                f"the OpenVINO conversion has {len(model.inputs)} inputs and "
                f"{len(model.outputs)} outputs; expected {exp.spec.inputs} -> {exp.spec.outputs}"
            )
        _name_ports(model, exp.spec)
        path = directory / IR_FILE
        openvino.save_model(model, str(path), compress_to_fp16=weights == "f16")
        check = core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return runner(check, exp.spec.inputs)

    return write


def _check_device(device: str) -> None:
    available = list(core().available_devices)
    base = device.split(":")[0].split(".")[0]
    if base not in _VIRTUAL and base not in {d.split(".")[0] for d in available}:
        raise HardwareUnavailable(
            f"OpenVINO device {device!r} is not available here; devices: {available}"
        )


def load_endpoint(
    skill: Any, model: str, task: str, device: str = "CPU", **options: Any
) -> Endpoint:
    """Serve ``model`` for ``task`` from a cached OpenVINO IR compiled on ``device``.

    Options: torch's LOAD_OPTIONS (gguf_file, revision, batch_size, local_files_only,
    allow_local_paths, attn_implementation: used when exporting) and ``precision``.
    """
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        raise HardwareUnavailable(f"openvino is not installed ({exc}); extra: openvino") from exc
    export.check_options(options, OPTIONS)
    precision = options.pop("precision", None) or "f32"
    if precision not in PRECISIONS:
        raise InvalidInput(f"precision must be one of {list(PRECISIONS)}", param="precision")
    export.require_exportable(skill, task)
    _check_device(device)
    weights = "f16" if precision == "f16" else "f32"  # what the IR stores (its cache key)
    prepared = export.prepare(
        skill,
        model,
        task,
        fmt="openvino",
        precision=weights,
        options=options,
        write=_writer(weights),
        tolerance=2e-2 if weights == "f16" else 1e-3,  # f16: weights rounded to FP16
    )
    ir = prepared.path / IR_FILE
    try:
        hint = {} if precision == "auto" else {"INFERENCE_PRECISION_HINT": precision}
        compiled = core().compile_model(str(ir), device, hint)
    except RuntimeError as exc:
        first = first_line(exc)
        raise HardwareUnavailable(
            f"OpenVINO cannot compile {model!r} on {device}: {first}"
        ) from exc
    graph = GraphModel(
        prepared.spec, runner(compiled, prepared.spec.inputs), prepared.config, runtime="openvino"
    )
    endpoint = export.make_endpoint(
        skill,
        model,
        task,
        prepared,
        graph,
        hardware="openvino",
        memory_bytes=export.files_size(prepared.path, (".bin",)),
        options=options,
    )
    endpoint.settings.update(openvino_device=device, ir_path=str(ir), precision=precision)
    log.info("loaded %s from %s", endpoint, ir)
    return endpoint
