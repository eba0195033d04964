"""What every generated skill shares: the `Endpoint`, hardware detection, loading, input
decoding, pooling, labels, generation, and the `Staged` handler (prepare -> forward -> finish).
Generated skills import from here; nothing hardware-generic is pasted into a skill."""

from . import (
    backends,
    cache,
    checkpoint,
    engines,
    generation,
    gpu,
    hardware,
    labels,
    media,
    pooling,
    spans,
    staged,
    text,
    torch_backend,
)
from .endpoint import Endpoint, Handler, StreamHandler
from .errors import (
    GeneratorError,
    HardwareUnavailable,
    HFSkillsError,
    InferenceError,
    InvalidInput,
    ModelLoadError,
    UnsupportedTask,
)
from .skill import Skill
from .staged import Prepared, Staged

__all__ = [
    "Endpoint",
    "GeneratorError",
    "HFSkillsError",
    "Handler",
    "HardwareUnavailable",
    "InferenceError",
    "InvalidInput",
    "ModelLoadError",
    "Prepared",
    "Skill",
    "Staged",
    "StreamHandler",
    "UnsupportedTask",
    "backends",
    "cache",
    "checkpoint",
    "engines",
    "generation",
    "gpu",
    "hardware",
    "labels",
    "media",
    "pooling",
    "spans",
    "staged",
    "text",
    "torch_backend",
]
