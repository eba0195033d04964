"""`Skill`: the base of every generated ``hf_<model_type>`` class.

A generated class declares what is architecture-specific (tasks, the transformers class per
task, processors, dtypes per hardware) and one handler factory per task; this base holds the
few generic methods they call, so no generated module repeats them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from . import torch_backend
from .endpoint import Endpoint, Handler
from .errors import HardwareUnavailable, UnsupportedTask


class Skill:
    model_type: ClassVar[str]
    family: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    hardware: ClassVar[tuple[str, ...]]
    model_classes: ClassVar[dict[str, str]]
    processors: ClassVar[dict[str, str]]
    dtypes: ClassVar[dict[str, str]]
    source_checkpoint: ClassVar[str | None] = None

    def __init__(
        self, resources: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        self.resources = dict(resources or {})
        self.metadata = dict(metadata or {})

    def check_task(self, task: str) -> str:
        if task not in self.tasks:
            raise UnsupportedTask(
                f"the {self.model_type} skill has no task {task!r}; it serves {list(self.tasks)}",
                param="task",
            )
        return task

    def load_torch(
        self, model: str, task: str, *, hardware: str, device: str, **options: Any
    ) -> Endpoint:
        """Load ``model`` for ``task`` with torch on ``device``, in the skill's dtype for it."""
        self.check_task(task)
        return torch_backend.load_endpoint(
            skill=type(self).__name__,
            model=model,
            task=task,
            model_class=self.model_classes[task],
            processor=self.processors[task],
            hardware=hardware,
            device=device,
            dtype=options.pop("dtype", None) or self.dtypes[hardware],
            **options,
        )

    def init(self, hardware: str, model: str, task: str, **options: Any) -> Endpoint:
        """``init_<hardware>`` by name (what the host calls)."""
        if hardware not in self.hardware:
            raise HardwareUnavailable(f"the {self.model_type} skill does not support {hardware}")
        return getattr(self, f"init_{hardware}")(model, task, **options)

    def handler(self, endpoint: Endpoint) -> Handler:
        """``create_<hardware>_<task>_endpoint_handler`` for a loaded endpoint."""
        return getattr(self, f"create_{endpoint.hardware}_{endpoint.task}_endpoint_handler")(
            endpoint
        )
