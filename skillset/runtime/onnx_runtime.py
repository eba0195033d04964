"""Non-generative tasks on ONNX Runtime: one ONNX export per checkpoint and task, cached, opened
with the execution providers asked for (QNN on Qualcomm NPUs via ``init_qnn``; the CPU provider
in tests, which runs the very same export-and-session path).

Exporter: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based exporter, with
``dynamic_axes`` for the axes that vary between the two example batches (export.py). It traces
exactly as ``openvino.convert_model`` does, so both backends see the same graph; it exported
bert, vit, swin, deberta-v2, wav2vec2 (CTC), clip, siglip, detr and gpt2 classification in
0.2-1 s each, where the torch.export-based exporter (``dynamo=True``, the default since torch
2.9) took 3-10 s and failed on swin (a ``view`` it cannot express with a dynamic batch). The
TorchScript exporter is deprecated, so when it fails or is gone the torch.export exporter is
tried next (it needs ``onnxscript``). A trace can bake an input size into the graph; every
export is therefore run on a differently-shaped batch and compared with torch before it is
cached (export.verify).

QNN: the provider gets ``backend_path`` for the HTP (NPU) backend (``QnnHtp.dll`` on Windows,
``libQnnHtp.so`` elsewhere) unless the caller passes its own provider options. The HTP backend
needs static shapes and is fastest with quantized or FP16 graphs; this float32 export with
dynamic axes is the starting point (nodes QNN cannot take fall back to ONNX Runtime's CPU).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import export
from .endpoint import Endpoint
from .errors import HardwareUnavailable, first_line
from .graph_model import GraphModel

log = logging.getLogger("hfskills.runtime")

#: Options beyond torch's LOAD_OPTIONS (none yet).
OPTIONS: frozenset[str] = frozenset()
ONNX_FILE = "model.onnx"
OPSET = 17
#: The QNN backend library that runs graphs on the Hexagon NPU (HTP).
QNN_HTP_BACKEND = "QnnHtp.dll" if sys.platform == "win32" else "libQnnHtp.so"

Provider = str | tuple[str, dict[str, Any]]


def provider_options(providers: Sequence[Provider]) -> list[tuple[str, dict[str, Any]]]:
    """Providers as ``(name, options)``; QNN gets the HTP backend unless told otherwise."""
    chosen = []
    for provider in providers:
        name, opts = (provider, {}) if isinstance(provider, str) else provider
        opts = dict(opts)
        if name == "QNNExecutionProvider" and "backend_type" not in opts:
            opts.setdefault("backend_path", QNN_HTP_BACKEND)
        chosen.append((name, opts))
    return chosen


def require_providers(names: Sequence[str]) -> None:
    """`HardwareUnavailable` naming the available providers when one of ``names`` is not in
    this onnxruntime build (how ``init_qnn`` fails on a machine without a Qualcomm NPU)."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    missing = [name for name in names if name not in available]
    if missing or not names:
        raise HardwareUnavailable(
            f"onnxruntime {onnxruntime.__version__} has no {', '.join(missing) or 'provider'} "
            f"here; available providers: {available}"
        )


def runner(session: Any, outputs: tuple[str, ...]) -> export.Runner:
    """Run a session (thread-safe) on the inputs it declares."""
    names = [i.name for i in session.get_inputs()]

    def run(arrays: dict[str, Any]) -> list[Any]:
        return session.run(list(outputs), {name: arrays[name] for name in names})

    return run


def _session(path: Path, providers: list[tuple[str, dict[str, Any]]]) -> Any:
    import onnxruntime

    return onnxruntime.InferenceSession(
        str(path),
        providers=[name for name, _ in providers],
        provider_options=[opts for _, opts in providers],
    )


def write(exp: export.Export, directory: Path) -> export.Runner:
    """Export to ``directory/model.onnx`` (see the module docstring for the exporter)."""
    import torch

    path, spec = directory / ONNX_FILE, exp.spec
    names = {"input_names": list(spec.inputs), "output_names": list(spec.outputs)}
    try:
        torch.onnx.export(
            exp.module,
            exp.example,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            dynamic_axes={**spec.dynamic_inputs, **spec.dynamic_outputs},
            **names,
        )
    except Exception as exc:
        log.info("the TorchScript ONNX exporter failed (%s); trying torch.export", exc)
        from torch.export import Dim

        shapes = tuple(
            {axis: Dim.AUTO for axis in spec.dynamic_inputs.get(name, {})} for name in spec.inputs
        )
        torch.onnx.export(
            exp.module,
            exp.example,
            str(path),
            dynamo=True,
            dynamic_shapes=(shapes,),
            verbose=False,
            **names,
        )
    return runner(_session(path, [("CPUExecutionProvider", {})]), spec.outputs)


def onnx_file(skill: Any, model: str, task: str, **options: Any) -> Path:
    """The shared ONNX export of ``model`` for ``task`` (cached; what TensorRT builds from)."""
    export.check_options(options, OPTIONS)
    prepared = export.prepare(
        skill, model, task, fmt="onnx", precision="f32", options=options, write=write
    )
    return prepared.path / ONNX_FILE


def load_endpoint(
    skill: Any,
    model: str,
    task: str,
    *,
    providers: Sequence[Provider],
    hardware: str,
    **options: Any,
) -> Endpoint:
    """Serve ``model`` for ``task`` from a cached ONNX export opened with ``providers``.

    Options: torch's LOAD_OPTIONS (used when exporting). ``hardware`` names the endpoint's
    hardware (``"qnn"``) and so which ``create_<hardware>_<task>_endpoint_handler`` serves it.
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise HardwareUnavailable(f"onnxruntime is not installed ({exc}); extra: onnx") from exc
    export.check_options(options, OPTIONS)
    chosen = provider_options(providers)
    require_providers([name for name, _ in chosen])
    prepared = export.prepare(
        skill, model, task, fmt="onnx", precision="f32", options=options, write=write
    )
    path = prepared.path / ONNX_FILE
    try:
        session = _session(path, chosen)
    except Exception as exc:  # onnxruntime raises its own exception types
        first = first_line(exc)
        raise HardwareUnavailable(
            f"onnxruntime cannot open {model!r} with {[n for n, _ in chosen]}: {first}"
        ) from exc
    graph = GraphModel(
        prepared.spec, runner(session, prepared.spec.outputs), prepared.config, runtime="onnx"
    )
    endpoint = export.make_endpoint(
        skill,
        model,
        task,
        prepared,
        graph,
        hardware=hardware,
        memory_bytes=export.files_size(prepared.path, (".onnx", ".data")),
        options=options,
    )
    endpoint.settings.update(onnx_path=str(path), providers=session.get_providers())
    log.info("loaded %s from %s with %s", endpoint, path, session.get_providers())
    return endpoint
