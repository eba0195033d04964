"""Non-torch runtimes: the entry points ``init_openvino`` and ``init_qnn`` call.

- OpenVINO: decoder text generation runs on OpenVINO GenAI's continuous-batching pipeline
  (genai.py: a GGUF file read directly, or a stateful IR export of the checkpoint); every other
  task runs an OpenVINO IR export of the torch model (openvino_ir.py).
- ONNX Runtime: one ONNX export per checkpoint and task (onnx_runtime.py), opened with the
  execution providers asked for: QNN on Qualcomm NPUs (``init_qnn``), the CPU provider in tests.

What a runtime cannot run raises `HardwareUnavailable` with the reason, so the host falls
back to the next hardware; nothing silently runs on another device.
"""

from __future__ import annotations

from typing import Any

from . import hardware
from .endpoint import Endpoint
from .errors import HardwareUnavailable

#: Why a model with LoRA adapters does not run on a hardware whose runtime takes one adapter
#: set per pipeline, or none: the host skips it (host/hardware.py logs this reason) and loads
#: on torch or vLLM, which run each request's adapter (adapters.py, vllm_engine.py).
NO_ADAPTERS = {
    # read in GenAI 2026.4's source: ContinuousBatchingImpl::set_adapters is pipeline-wide
    "openvino": "OpenVINO GenAI's continuous-batching pipeline applies one adapter set to "
    "every running request, and an IR export holds the base's weights only",
    "qnn": "an ONNX export holds the base's weights only",
}


def _refuse_adapters(options: dict[str, Any], hardware_name: str) -> None:
    if options.get("adapters"):
        raise HardwareUnavailable(
            f"LoRA adapters are served on torch and vLLM: {NO_ADAPTERS[hardware_name]}"
        )


def load_openvino(
    skill: Any, model: str, task: str, device: str = "CPU", **options: Any
) -> Endpoint:
    hardware.require("openvino")
    _refuse_adapters(options, "openvino")
    skill.check_task(task)
    if task == "text_generation" and skill.family == "decoder":
        from . import genai

        return genai.load_endpoint(skill, model, task, device=device, **options)
    from . import openvino_ir

    return openvino_ir.load_endpoint(skill, model, task, device=device, **options)


def load_onnx(
    skill: Any, model: str, task: str, *, providers: list[str], hardware: str, **options: Any
) -> Endpoint:
    """Export ``model`` for ``task`` to ONNX (cached) and open it with ``providers``."""
    skill.check_task(task)
    _refuse_adapters(options, "qnn")
    from . import onnx_runtime

    return onnx_runtime.load_endpoint(
        skill, model, task, providers=providers, hardware=hardware, **options
    )


def load_qnn(skill: Any, model: str, task: str, **options: Any) -> Endpoint:
    hardware.require("qnn")
    return load_onnx(
        skill, model, task, providers=["QNNExecutionProvider"], hardware="qnn", **options
    )
