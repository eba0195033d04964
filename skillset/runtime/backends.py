"""Non-torch runtimes (OpenVINO, ONNX Runtime with QNN): entry points the skills call.

Their exporters and sessions arrive with the hardware-backends issue; until then each entry
point raises `HardwareUnavailable` saying so, never a silent fallback to another device.
"""

from __future__ import annotations

from typing import Any

from . import hardware
from .endpoint import Endpoint
from .errors import HardwareUnavailable


def load_openvino(
    skill: Any, model: str, task: str, device: str = "CPU", **options: Any
) -> Endpoint:
    hardware.require("openvino")
    skill.check_task(task)
    raise HardwareUnavailable(
        "OpenVINO is installed, but hfskills 0.1 has no OpenVINO export yet; use init_cpu"
    )


def load_qnn(skill: Any, model: str, task: str, **options: Any) -> Endpoint:
    hardware.require("qnn")
    skill.check_task(task)
    raise HardwareUnavailable(
        "QNNExecutionProvider is present, but hfskills 0.1 has no ONNX export yet; use init_cpu"
    )
