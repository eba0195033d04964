"""Hardware selection per model: which backends to try, in order, and the fallback on failure.

Candidates are the model's preference (or `default_order`), kept where the skill has a handler
for the task on that hardware (a pair it declares unsupported is never tried), the hardware is
present, and (for GPUs) the checkpoint fits in free memory. CPU is always the
last resort. A ``HardwareUnavailable`` from ``init_<hw>`` moves on to the next candidate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from hfskills.skillset.runtime import Endpoint, backends, hardware
from hfskills.skillset.runtime.errors import HardwareUnavailable, ModelLoadError
from hfskills.skillset.runtime.options import for_hardware

from .catalog import ServedModel

log = logging.getLogger("hfskills.host")


def free_memory(name: str) -> int | None:
    """Free bytes on a GPU backend, or None when it cannot be told."""
    if name in ("cuda", "rocm"):
        import torch

        return int(torch.cuda.mem_get_info()[0])
    return None


#: (family, task) pairs whose default order tries OpenVINO before torch on the CPU: where it is
#: measured to win (docs/hardware.md: GenAI decodes 3-5x faster than torch here). Any other
#: model runs on OpenVINO when its catalog entry asks, e.g. ``hardware = ["openvino", "cpu"]``.
OPENVINO_BY_DEFAULT = frozenset({("decoder", "text_generation")})


def default_order(family: str, task: str | None) -> list[str]:
    """Detection order (GPUs first), with OpenVINO kept only where it is the measured win."""
    if (family, task) in OPENVINO_BY_DEFAULT:
        return list(hardware.ORDER)
    return [name for name in hardware.ORDER if name != "openvino"]


def supports(cls: type, hardware: str, task: str | None) -> bool:
    """Whether the skill has a handler for ``task`` on ``hardware`` (a pair it declares
    unsupported has none, so it is never tried)."""
    if hardware not in cls.hardware:
        return False
    return task is None or callable(
        getattr(cls, f"create_{hardware}_{task}_endpoint_handler", None)
    )


class HardwareManager:
    def __init__(self, probe: Callable[[str], hardware.HardwareInfo] = hardware.probe) -> None:
        self.probe = probe

    def report(self) -> list[dict[str, Any]]:
        return [
            {
                "name": h.name,
                "available": h.available,
                "reason": h.reason,
                "devices": list(h.devices),
            }
            for h in (self.probe(name) for name in hardware.ORDER)
        ]

    def candidates(self, model: ServedModel, task: str | None = None) -> list[tuple[str, str]]:
        """``[(hardware, why)]`` in the order to try: the model's own, else `default_order`."""
        order = list(model.hardware) or default_order(model.skill.cls.family, task)
        picked: list[tuple[str, str]] = []
        for name in order:
            if not supports(model.skill.cls, name, task):
                continue
            if model.adapters and name in backends.NO_ADAPTERS:
                log.warning(
                    "%s: %s skipped, LoRA adapters are served on torch and vLLM: %s",
                    model.name,
                    name,
                    backends.NO_ADAPTERS[name],
                )
                continue
            info = self.probe(name)
            if not info.available:
                continue
            free = free_memory(name)
            if free is not None and model.size_bytes and model.size_bytes * 1.2 > free:
                log.info(
                    "%s: %s skipped, checkpoint %d B > free %d B",
                    model.name,
                    name,
                    model.size_bytes,
                    free,
                )
                continue
            picked.append((name, info.reason))
        if "cpu" not in (p[0] for p in picked) and supports(model.skill.cls, "cpu", task):
            picked.append(("cpu", "fallback"))
        return picked

    def load(self, model: ServedModel, task: str) -> Endpoint:
        """Load on the first candidate that works (in the calling worker thread)."""
        skill = model.skill.cls()
        failures = []
        for name, _ in self.candidates(model, task):
            try:
                # clients' strings are never file paths, unless the catalog entry says so
                options = {"allow_local_paths": False, **model.options}
                endpoint = skill.init(name, model.location, task, **for_hardware(name, options))
            except HardwareUnavailable as exc:
                log.warning(
                    "%s/%s: %s unavailable (%s); falling back", model.name, task, name, exc.message
                )
                failures.append(f"{name}: {exc.message}")
                continue
            return endpoint
        raise ModelLoadError(f"{model.name}: no hardware could load it ({'; '.join(failures)})")
