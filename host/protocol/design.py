"""The design's own routes (``/v1/infer/{model}``, ``/v1/generate``, ``/v1/embed``,
``/v1/classify``, ``/v1/detect``): the Inference API body, with the model in the path or in the
body's ``model``; the answers are the Inference API's for the task (host/serving/hf.py)."""

from __future__ import annotations

from pydantic import Field

from .hf import InferenceRequest


class TaskRequest(InferenceRequest):
    """``{"model", "inputs", "parameters", "stream"}``: the Inference API body and the model
    (default: the default model of the route's first task that has one). An image or audio
    input may also be the raw request body (then the default model answers)."""

    model: str | None = Field(
        None,
        min_length=1,
        description="a model, route or auto; default: the default model of the route's task",
    )
