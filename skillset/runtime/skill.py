"""`Skill`: the base of every generated ``hf_<model_type>`` class, and `Task`, its declaration.

A generated class only declares what is particular to its architecture: the transformers class
and processor of each task (with the task's variant where architectures differ), the dtype per
hardware, and the (hardware, task) pairs that cannot work, with the reason. Everything else is
here, once:

- ``init_<hardware>(model, task, **options)`` for the six hardware kinds: torch on cpu, cuda,
  rocm and mps, a graph export on openvino and qnn. Hardware a skill does not declare raises
  `HardwareUnavailable`; a declared-unsupported pair raises `UnsupportedTask` at once, before
  anything loads.
- ``create_<hardware>_<task>_endpoint_handler(endpoint)`` for every supported pair (the
  contract users and the host call), defined when the class is created; unsupported pairs
  have none. Each returns ``runtime.tasks.build(endpoint, task)``: the task's one
  implementation, chosen by name and variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from . import torch_backend
from .endpoint import Endpoint, Handler
from .errors import HardwareUnavailable, UnsupportedTask

#: Every hardware kind, in the order a skill lists them.
HARDWARE = ("cpu", "cuda", "rocm", "mps", "openvino", "qnn")


@dataclass(frozen=True)
class Task:
    """One task of a skill: the transformers class that loads it, what prepares its inputs
    (tokenizer | image_processor | feature_extractor | processor), and which implementation of
    the task runs it where architectures differ (see `runtime.tasks`; "default" elsewhere)."""

    model_class: str
    processor: str
    variant: str = "default"


class Skill:
    model_type: ClassVar[str]
    family: ClassVar[str]
    #: task name -> its declaration
    tasks: ClassVar[dict[str, Task]]
    #: hardware -> the dtype the checkpoint loads in there
    dtypes: ClassVar[dict[str, str]]
    hardware: ClassVar[tuple[str, ...]] = HARDWARE
    #: (hardware, task) -> why that pair cannot work
    unsupported: ClassVar[dict[tuple[str, str], str]] = {}
    source_checkpoint: ClassVar[str | None] = None
    # Derived from `tasks` when the class is created (what loaders read):
    model_classes: ClassVar[dict[str, str]]
    processors: ClassVar[dict[str, str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(cls.__dict__.get("tasks"), dict):
            return  # an intermediate or hand-written class that defines its own methods
        cls.model_classes = {name: t.model_class for name, t in cls.tasks.items()}
        cls.processors = {name: t.processor for name, t in cls.tasks.items()}
        for hw in cls.hardware:
            for name in cls.tasks:
                if (hw, name) not in cls.unsupported:
                    method = _create_handler(hw, name)
                    setattr(cls, method.__name__, method)

    def __init__(
        self, resources: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        self.resources = dict(resources or {})
        self.metadata = dict(metadata or {})

    # -- declarations --------------------------------------------------------------------------

    def check_task(self, task: str) -> str:
        if task not in self.tasks:
            raise UnsupportedTask(
                f"the {self.model_type} skill has no task {task!r}; it serves {list(self.tasks)}",
                param="task",
            )
        return task

    def check_pair(self, hardware: str, task: str) -> None:
        """`HardwareUnavailable` / `UnsupportedTask` at once for what the skill declares it
        cannot run."""
        if hardware not in self.hardware:
            raise HardwareUnavailable(f"the {self.model_type} skill does not support {hardware}")
        self.check_task(task)
        reason = self.unsupported.get((hardware, task))
        if reason is not None:
            raise UnsupportedTask(
                f"the {self.model_type} skill cannot run {task} on {hardware}: {reason}",
                param="task",
            )

    def supports(self, hardware: str, task: str) -> bool:
        return callable(getattr(self, f"create_{hardware}_{task}_endpoint_handler", None))

    # -- loading -------------------------------------------------------------------------------

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

    def init_cpu(self, model: str, task: str, **options: Any) -> Endpoint:
        """Load `model` for `task` with torch on the CPU (the skill's cpu dtype, float32)."""
        self.check_pair("cpu", task)
        return self.load_torch(model, task, hardware="cpu", device="cpu", **options)

    def init_cuda(self, model: str, task: str, device: str = "cuda:0", **options: Any) -> Endpoint:
        """Load `model` for `task` on an NVIDIA GPU: vLLM for decoder generation and TensorRT
        for single-pass tasks when installed, else torch (bfloat16 where the GPU has it, SDPA
        attention). Options: `engine` (auto, vllm, tensorrt, torch), `compile` (CUDA graphs)."""
        from . import gpu

        self.check_pair("cuda", task)
        return gpu.load_cuda(self, model, task, "cuda", device, **options)

    def init_rocm(self, model: str, task: str, device: str = "cuda:0", **options: Any) -> Endpoint:
        """Load `model` for `task` with torch's HIP build on an AMD GPU."""
        from . import gpu

        self.check_pair("rocm", task)
        return gpu.load_cuda(self, model, task, "rocm", device, **options)

    def init_mps(self, model: str, task: str, **options: Any) -> Endpoint:
        """Load `model` for `task` with torch on Apple's Metal device."""
        from . import gpu

        self.check_pair("mps", task)
        return gpu.load_cuda(self, model, task, "mps", "mps", **options)

    def init_openvino(self, model: str, task: str, device: str = "CPU", **options: Any) -> Endpoint:
        """Export `model` for `task` to OpenVINO IR (decoders: OpenVINO GenAI) and run it on an
        OpenVINO `device`."""
        from . import backends

        self.check_pair("openvino", task)
        return backends.load_openvino(self, model, task, device=device, **options)

    def init_qnn(self, model: str, task: str, **options: Any) -> Endpoint:
        """Export `model` for `task` to ONNX and run it with ONNX Runtime's QNN provider."""
        from . import backends

        self.check_pair("qnn", task)
        return backends.load_qnn(self, model, task, **options)

    # -- what the host calls -------------------------------------------------------------------

    def init(self, hardware: str, model: str, task: str, **options: Any) -> Endpoint:
        """``init_<hardware>`` by name."""
        if hardware not in self.hardware:
            raise HardwareUnavailable(f"the {self.model_type} skill does not support {hardware}")
        return getattr(self, f"init_{hardware}")(model, task, **options)

    def handler(self, endpoint: Endpoint) -> Handler:
        """``create_<hardware>_<task>_endpoint_handler`` for a loaded endpoint."""
        return getattr(self, f"create_{endpoint.hardware}_{endpoint.task}_endpoint_handler")(
            endpoint
        )


def _create_handler(hardware: str, task: str) -> Any:
    """A generated ``create_<hardware>_<task>_endpoint_handler``: the task's one runtime
    implementation (`runtime.tasks.build`) for an endpoint loaded for that pair."""

    def create(self: Skill, endpoint: Endpoint) -> Handler:
        from . import tasks

        if (endpoint.hardware, endpoint.task) != (hardware, task):
            raise UnsupportedTask(
                f"this handler is for {task} on {hardware}; the endpoint was loaded for "
                f"{endpoint.task} on {endpoint.hardware}",
                param="task",
            )
        return tasks.build(endpoint, self.tasks[task])

    create.__name__ = create.__qualname__ = f"create_{hardware}_{task}_endpoint_handler"
    create.__doc__ = f"The {task} handler of an endpoint loaded with ``init_{hardware}``."
    return create
