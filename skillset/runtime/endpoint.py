"""`Endpoint`: what an ``init_<hardware>`` returns and every handler closes over."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: A handler takes one batch (a list of inputs) plus shared params and returns one result per input.
Handler = Callable[..., list[Any]]
#: A stream handler takes one input and yields JSON-ready events, token by token.
StreamHandler = Callable[..., Iterator[dict[str, Any]]]


@dataclass
class Endpoint:
    """A loaded model ready to serve one task on one device.

    ``model`` is a torch module, or for other runtimes an object with the same call interface
    (an OpenVINO or ONNX Runtime session wrapper). ``memory_bytes`` is measured after loading,
    from the tensors the model really holds, and is what the host's memory budget counts.
    """

    model: Any
    processor: Any
    task: str
    hardware: str
    device: str
    dtype: str
    model_id: str
    skill: str
    batch_size: int = 8
    memory_bytes: int = 0
    config: Any = None
    #: Checkpoint-specific settings read at load time (pooling, labels, generation defaults...).
    settings: dict[str, Any] = field(default_factory=dict)
    #: Whether string inputs may name local files (True in-process; the host turns it off).
    allow_local_paths: bool = True
    #: A generation engine that batches this model's requests itself (OpenVINO GenAI, vLLM):
    #: handlers and the host submit to it instead of calling ``model`` (see engines.py).
    engine: Any = None

    def close(self) -> None:
        """Drop the model and free its memory (and the accelerator's cache, if any)."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        self.model = None
        self.processor = None
        gc.collect()
        try:
            import torch

            if self.hardware in ("cuda", "rocm") and torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a dependency
            pass

    def __repr__(self) -> str:
        mib = self.memory_bytes / 2**20
        return (
            f"Endpoint(skill={self.skill!r}, model_id={self.model_id!r}, task={self.task!r}, "
            f"hardware={self.hardware!r}, device={self.device!r}, dtype={self.dtype!r}, "
            f"memory={mib:.1f} MiB)"
        )
