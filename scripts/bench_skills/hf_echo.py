"""hf_echo: a skill that does no work, for scripts/bench_overhead.py.

It satisfies the hfskills skill contract (`host/discovery.py` `contract_errors`) for one task,
`text_classification`, on the CPU: each input comes back as `[{"label": <input>, "score": 1.0}]`,
so what the benchmark measures is the host's own request path (routing, parsing, the model
cache, the worker pool, metrics, logging and the response), not a model.

    [[models]]
    name = "echo"
    skill = "hf_echo"
    checkpoint = "none"
    tasks = ["text_classification"]
"""

from __future__ import annotations

from typing import Any, ClassVar

from hfskills.skillset import runtime
from hfskills.skillset.runtime import Endpoint, Handler


class hf_echo(runtime.Skill):
    """Echo each text input back as its own label."""

    model_type = "echo"
    family = "benchmark"
    tasks = ("text_classification",)
    hardware = ("cpu",)
    model_classes: ClassVar[dict[str, str]] = {"text_classification": "none"}
    processors: ClassVar[dict[str, str]] = {"text_classification": "none"}
    dtypes: ClassVar[dict[str, str]] = {"cpu": "float32"}

    def init_cpu(self, model: str, task: str, **options: Any) -> Endpoint:
        """Nothing to load: an endpoint with no model and no processor."""
        self.check_task(task)
        return Endpoint(
            model=None,
            processor=None,
            task=task,
            hardware="cpu",
            device="cpu",
            dtype="float32",
            model_id=model,
            skill=type(self).__name__,
            allow_local_paths=bool(options.get("allow_local_paths", False)),
        )

    def create_cpu_text_classification_endpoint_handler(self, endpoint: Endpoint) -> Handler:
        def handler(
            inputs: list[Any],
            *,
            top_k: int | None = None,
            function_to_apply: str | None = None,
            truncate: bool = True,
        ) -> list[list[dict[str, Any]]]:
            return [[{"label": str(text), "score": 1.0}] for text in inputs]

        return handler
