"""Tests that need an NVIDIA (or ROCm) GPU: every test in this folder is skipped, with the
reason, where torch sees no CUDA device (CI, the CPU development machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


def _why_not() -> str | None:
    if torch.cuda.is_available():
        return None
    hip, cuda = torch.version.hip, torch.version.cuda
    build = f"built for HIP {hip}" if hip else f"built for CUDA {cuda}" if cuda else "a CPU build"
    return f"torch {torch.__version__} ({build}) sees no CUDA device"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _why_not()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"tests/gpu needs a GPU; {reason}")
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(skip)
