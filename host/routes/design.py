"""The design's routes: ``POST /v1/infer/{model}`` (any task, the Inference API body) and the
task-named ``POST /v1/generate``, ``/v1/embed``, ``/v1/classify``, ``/v1/detect`` (the model in
the body's ``model``). Thin: each hands the Inference API body to the same serving function
as ``/models/{name}`` (host/serving/hf.py), so the answers are the Inference API's; errors
answer in OpenAI's shape (``/v1/``).

A task-named route runs the first of its tasks (`TASKS`) that the model serves: ``/v1/classify``
a text, image, audio or zero-shot image classifier, ``/v1/detect`` an object detector or a
zero-shot one, ``/v1/generate`` a decoder, an encoder-decoder or a captioner, ``/v1/embed`` a
text or image embedder. A model that serves none of them: 400 naming ``model``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import APIError
from ..openapi import protocol
from ..protocol import hf
from ..protocol.design import TaskRequest
from ..serving import hf as serving
from ..tracing import span
from .common import context, default_model, host, inference_request, route_task, routed

#: route -> the tasks it runs, in order of preference
TASKS: dict[str, tuple[str, ...]] = {
    "generate": ("text_generation", "text2text_generation", "image_to_text"),
    "embed": ("text_embedding", "image_embedding"),
    "classify": (
        "text_classification",
        "image_classification",
        "audio_classification",
        "zero_shot_image_classification",
    ),
    "detect": ("object_detection", "zero_shot_object_detection"),
}


async def _payload(request: Request) -> tuple[hf.InferenceRequest, str | None]:
    """The Inference API body and the body's ``model`` (None: a raw body, or none named)."""
    with span("parse"):
        payload = inference_request(request, await request.body())
    named = (payload.model_extra or {}).pop("model", None)
    if named is not None:
        named = TaskRequest.model_validate({"inputs": None, "model": named}).model
    return payload, named


async def _target(request: Request, name: str, tasks: tuple[str, ...] | None) -> tuple[str, str]:
    """(the name to run, its task): a route's first target's task, else the model's first
    task of ``tasks`` (any of its tasks when ``tasks`` is None: its first)."""
    if routed(request, name):
        try:
            task = route_task(request, name, None)
        except APIError:
            if tasks is None:
                raise
            task = tasks[0]  # auto: the route's first task
    else:
        await host(request).loader.admit(name)
        model, _ = host(request).loader.resolve(name)
        name = model.canonical(name)
        served = [t for t in model.tasks if tasks is None or t in tasks]
        if not served:
            raise APIError(
                400,
                f"model {name!r} serves {list(model.tasks)}; this route runs {list(tasks or ())}",
                code="unsupported_task",
                param="model",
            )
        task = served[0]
    if tasks is not None and task not in tasks:
        raise APIError(
            400,
            f"model {name!r} runs {task}; this route runs {list(tasks)}",
            code="unsupported_task",
            param="model",
        )
    return name, task


def _default(request: Request, tasks: tuple[str, ...]) -> str:
    for task in tasks:
        try:
            return default_model(request, task)
        except APIError:
            continue
    raise APIError(404, f"no model serves {list(tasks)}; name one in model", code="model_not_found")


async def _run(request: Request, route: str) -> Response:
    payload, named = await _payload(request)
    tasks = TASKS[route]
    name, task = await _target(request, named or _default(request, tasks), tasks)
    target = serving.Target(host(request).service, name, task, context(request))
    return await serving.inference(target, payload)


@protocol(hf.InferenceRequest)
async def infer(request: Request) -> Response:
    """Run the model in the path on its (first) task, with the Inference API body."""
    payload, _ = await _payload(request)
    name, task = await _target(request, request.path_params["model"], None)
    target = serving.Target(host(request).service, name, task, context(request))
    return await serving.inference(target, payload)


@protocol(TaskRequest)
async def generate(request: Request) -> Response:
    """Generate text (a decoder, an encoder-decoder, or an image captioner)."""
    return await _run(request, "generate")


@protocol(TaskRequest)
async def embed(request: Request) -> Response:
    """Embed texts or images, as ``[[f32]]``."""
    return await _run(request, "embed")


@protocol(TaskRequest)
async def classify(request: Request) -> Response:
    """Classify texts (or text pairs), images or audio."""
    return await _run(request, "classify")


@protocol(TaskRequest)
async def detect(request: Request) -> Response:
    """Detect objects in an image (boxes, labels, scores)."""
    return await _run(request, "detect")


routes = [
    Route("/v1/infer/{model:path}", infer, methods=["POST"]),
    Route("/v1/generate", generate, methods=["POST"]),
    Route("/v1/embed", embed, methods=["POST"]),
    Route("/v1/classify", classify, methods=["POST"]),
    Route("/v1/detect", detect, methods=["POST"]),
]
