"""What every generated skill shares: the `Skill` base and its `Task` declaration, every task's
one implementation (`tasks`), the `Endpoint`, hardware detection, loading, input decoding,
pooling, labels, generation, and the `Staged` handler (prepare -> forward -> finish).
A generated skill imports `Skill` and `Task` from here and declares; it holds no code."""

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
from .skill import Skill, Task
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
    "Task",
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
