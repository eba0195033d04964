"""Hardware detection: which backends this machine has, and why (or why not).

Order of preference (DESIGN.md): cuda, rocm, mps, openvino, qnn, cpu. Detection only reads
facts (torch attributes, importable runtimes, their device lists); it never runs a model.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

from .errors import HardwareUnavailable

ORDER = ("cuda", "rocm", "mps", "openvino", "qnn", "cpu")


@dataclass(frozen=True)
class HardwareInfo:
    name: str
    available: bool
    reason: str
    devices: tuple[str, ...] = ()


def _torch_gpu(hip: bool) -> HardwareInfo:
    import torch

    name = "rocm" if hip else "cuda"
    built_hip = getattr(torch.version, "hip", None) is not None
    if hip != built_hip:
        build = "HIP (ROCm)" if built_hip else f"CUDA {torch.version.cuda or 'none (CPU build)'}"
        return HardwareInfo(name, False, f"torch {torch.__version__} is built for {build}")
    if not torch.cuda.is_available():
        return HardwareInfo(name, False, f"torch {torch.__version__}: no {name} device visible")
    count = torch.cuda.device_count()
    devices = tuple(f"cuda:{i}" for i in range(count))
    gpu = torch.cuda.get_device_name(0)
    return HardwareInfo(name, True, f"{count} device(s), first: {gpu}", devices)


def _mps() -> HardwareInfo:
    import torch

    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_built():
        return HardwareInfo("mps", False, "torch is not built with MPS (Apple silicon only)")
    if not mps.is_available():
        return HardwareInfo("mps", False, "MPS is built but no Metal device is available")
    return HardwareInfo("mps", True, "Apple Metal (MPS) device", ("mps",))


def _openvino() -> HardwareInfo:
    if importlib.util.find_spec("openvino") is None:
        return HardwareInfo("openvino", False, "openvino is not installed (extra: openvino)")
    try:
        import openvino

        devices = tuple(openvino.Core().available_devices)
    except Exception as exc:  # a broken install must not break detection
        return HardwareInfo("openvino", False, f"openvino failed to start: {exc}")
    return HardwareInfo("openvino", bool(devices), f"OpenVINO devices: {list(devices)}", devices)


def _qnn() -> HardwareInfo:
    if importlib.util.find_spec("onnxruntime") is None:
        return HardwareInfo("qnn", False, "onnxruntime is not installed (extra: onnx)")
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    if "QNNExecutionProvider" not in providers:
        return HardwareInfo("qnn", False, f"no QNNExecutionProvider (providers: {providers})")
    return HardwareInfo("qnn", True, "onnxruntime QNNExecutionProvider (Qualcomm NPU)", ("qnn",))


def _cpu() -> HardwareInfo:
    import os

    return HardwareInfo("cpu", True, f"{os.cpu_count()} logical cores", ("cpu",))


_PROBES = {
    "cuda": lambda: _torch_gpu(hip=False),
    "rocm": lambda: _torch_gpu(hip=True),
    "mps": _mps,
    "openvino": _openvino,
    "qnn": _qnn,
    "cpu": _cpu,
}


@functools.cache
def probe(name: str) -> HardwareInfo:
    """Detect one backend (cached: hardware does not come and go while a process runs)."""
    if name not in _PROBES:
        raise HardwareUnavailable(f"unknown hardware {name!r}; known: {', '.join(ORDER)}")
    return _PROBES[name]()


def detect() -> list[HardwareInfo]:
    """Every backend in preference order, available or not, each with its reason."""
    return [probe(name) for name in ORDER]


def require(name: str) -> HardwareInfo:
    """Return the backend's info, or raise `HardwareUnavailable` saying why it is absent."""
    info = probe(name)
    if not info.available:
        raise HardwareUnavailable(f"{name} is not available here: {info.reason}")
    return info
