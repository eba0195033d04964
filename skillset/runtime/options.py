"""Which ``init_<hardware>`` options each backend reads.

Every loader refuses an option it does not know (a typo is an error, not a silent default).
A served model's catalog entry may name options for several backends (``precision`` for
OpenVINO, ``gpu_memory_utilization`` for vLLM...), so the host hands each ``init_<hardware>``
only the ones that backend reads (`for_hardware`), and accepts at start-up any option some
backend reads (`every`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import InvalidInput


def check(options: Mapping[str, Any], accepted: frozenset[str]) -> None:
    """`InvalidInput` naming each option that ``accepted`` does not: the one check every
    loader makes (torch, OpenVINO IR and GenAI, ONNX Runtime, TensorRT, vLLM)."""
    unknown = set(options) - accepted
    if unknown:
        raise InvalidInput(
            f"unknown load option(s) {sorted(unknown)}; accepted: {sorted(accepted)}"
        )


def accepted(hardware: str) -> frozenset[str]:
    """The options ``init_<hardware>`` accepts."""
    from .torch_backend import LOAD_OPTIONS  # (torch_backend checks its options with `check`)

    if hardware in ("cuda", "rocm", "mps"):
        from . import gpu

        return gpu.OPTIONS
    if hardware == "openvino":
        from . import genai, openvino_ir

        return genai.OPTIONS | LOAD_OPTIONS | openvino_ir.OPTIONS
    if hardware == "qnn":
        from . import onnx_runtime

        return LOAD_OPTIONS | onnx_runtime.OPTIONS
    return LOAD_OPTIONS | {"dtype"}


def every() -> frozenset[str]:
    """Options some backend reads: what a catalog entry may name."""
    names: frozenset[str] = frozenset()
    for hardware in ("cpu", "cuda", "openvino", "qnn"):
        names |= accepted(hardware)
    return names


def for_hardware(hardware: str, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that ``init_<hardware>`` reads."""
    keep = accepted(hardware)
    return {name: value for name, value in options.items() if name in keep}
