"""What each client method sends and how it reads the answer, once for both clients.

Policy: a method is a `Call` (method, path, query, JSON body, the parser of a 2xx answer,
whether it may be repeated); `Client` and `AsyncClient` only send calls. Bodies go to the server
as given: the server validates them, so a bad field is the server's typed 4xx (``param`` names
it), never a second set of rules here. Names in paths are percent-quoted except ``/`` (model
names may contain it: the server's routes take the rest of the path).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from .types import (
    BenchmarkSummary,
    CostReport,
    LoadResult,
    Model,
    RegisteredModel,
    ResidentModel,
    Route,
    Selection,
    SwitchReport,
)

T = TypeVar("T")

#: Methods HTTP defines as idempotent: repeated after a connection broke mid-request.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})

#: A task (``text_classification``) -> its Inference API pipeline (``text-classification``),
#: for ``POST /models/{name}/pipeline/{pipeline}`` (host/protocol/hf.py's HF_TASKS, inverted;
#: tests/host/test_client.py checks the two agree).
PIPELINES = {
    "text_embedding": "feature-extraction",
    "fill_mask": "fill-mask",
    "text_classification": "text-classification",
    "token_classification": "token-classification",
    "question_answering": "question-answering",
    "text_generation": "text-generation",
    "text2text_generation": "text2text-generation",
    "image_classification": "image-classification",
    "object_detection": "object-detection",
    "zero_shot_image_classification": "zero-shot-image-classification",
    "image_embedding": "image-feature-extraction",
    "zero_shot_object_detection": "zero-shot-object-detection",
    "depth_estimation": "depth-estimation",
    "image_segmentation": "image-segmentation",
    "text_to_audio": "text-to-audio",
    "automatic_speech_recognition": "automatic-speech-recognition",
    "audio_classification": "audio-classification",
    "image_to_text": "image-to-text",
}


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    #: None: as the method (`IDEMPOTENT`); True for a POST that changes nothing when repeated
    idempotent: bool | None = None

    @property
    def repeatable(self) -> bool:
        return self.method in IDEMPOTENT if self.idempotent is None else self.idempotent


def name(value: str) -> str:
    return quote(value, safe="/:@+")


def query(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _as(cls: Callable[..., T]) -> Callable[[httpx.Response], T]:
    return lambda response: cls(**response.json())


def _listed(cls: Callable[..., T]) -> Callable[[httpx.Response], list[T]]:
    return lambda response: [cls(**item) for item in response.json()["data"]]


def _media(value: Any) -> Any:
    """Bytes (an image, an audio clip) as base64, which the Inference API reads in JSON."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, list):
        return [_media(v) for v in value]
    if isinstance(value, dict):
        return {k: _media(v) for k, v in value.items()}
    return value


def _answer(response: httpx.Response) -> Any:
    """The Inference API's answer: JSON, or the bytes of a file (text to audio: a WAV)."""
    if "json" in response.headers.get("content-type", ""):
        return response.json()
    return response.content


def infer(model: str, inputs: Any, task: str | None, params: Mapping[str, Any]) -> Call[Any]:
    body: dict[str, Any] = {"inputs": _media(inputs)}
    if params:
        body["parameters"] = dict(params)
    if task is None:  # the design's route: the model's (or the route's) first task
        return Call("POST", f"/v1/infer/{name(model)}", _answer, body)
    pipeline = PIPELINES.get(task, task)  # a task, or already a pipeline name (summarization)
    return Call("POST", f"/models/{name(model)}/pipeline/{name(pipeline)}", _answer, body)


def model_ids() -> Call[list[str]]:
    return Call("GET", "/v1/models", lambda r: [card["id"] for card in r.json()["data"]])


def _models(response: httpx.Response) -> list[Model]:
    body = response.json()
    resident: dict[str, list[dict[str, Any]]] = {}
    for item in body["resident"]:
        resident.setdefault(item["model"], []).append(item)
    return [Model(**m, resident=resident.get(m["name"], [])) for m in body["models"]]


def models() -> Call[list[Model]]:
    return Call("GET", "/admin/models", _models)


def resident() -> Call[list[ResidentModel]]:
    return Call(
        "GET", "/admin/models", lambda r: [ResidentModel(**m) for m in r.json()["resident"]]
    )


def load(model: str, task: str | None) -> Call[LoadResult]:
    # loading a loaded model answers at once: safe to repeat
    path = f"/admin/models/{name(model)}/load"
    return Call("POST", path, _as(LoadResult), params=query(task=task), idempotent=True)


def unload(model: str) -> Call[int]:
    return Call("POST", f"/admin/models/{name(model)}/unload", lambda r: r.json()["unloaded"])


def switch(version: str, route: str, model_id: str | None) -> Call[SwitchReport]:
    body = query(route=route, model_id=model_id)
    return Call("POST", f"/model/switch/{name(version)}", _as(SwitchReport), body)


def registered_models(
    status: str | None, task: str | None, provider: str | None
) -> Call[list[RegisteredModel]]:
    params = query(status=status, task=task, provider=provider)
    return Call("GET", "/api/models", _listed(RegisteredModel), params=params)


def registered_model(
    method: str, model_id: str, version: str | None, body: Any = None
) -> Call[RegisteredModel]:
    """``GET``, ``PATCH`` or ``DELETE /api/models/{model_id}`` (``?version=``)."""
    path = f"/api/models/{name(model_id)}"
    return Call(method, path, _as(RegisteredModel), body, params=query(version=version))


def register(model_id: str, fields: Mapping[str, Any]) -> Call[RegisteredModel]:
    return Call("POST", "/api/models", _as(RegisteredModel), {"model_id": model_id, **fields})


def routes() -> Call[list[Route]]:
    return Call("GET", "/api/routes", _listed(Route))


def route(method: str, route_name: str, body: Any = None) -> Call[Route]:
    """``GET``, ``PUT`` or ``DELETE /api/routes/{name}``."""
    return Call(method, f"/api/routes/{name(route_name)}", _as(Route), body)


def route_body(
    targets: Mapping[str, float], fallbacks: list[str] | None, challenger: Mapping[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"targets": [{"model": m, "weight": w} for m, w in targets.items()]}
    if fallbacks:
        body["fallbacks"] = list(fallbacks)
    if challenger is not None:
        body["challenger"] = dict(challenger)
    return body


def select(task_type: str, fields: Mapping[str, Any]) -> Call[Selection]:
    body = {"task_type": task_type, **query(**fields)}
    return Call("POST", "/api/models/select", _as(Selection), body, idempotent=True)


def costs(hours: float) -> Call[CostReport]:
    return Call("GET", "/api/models/costs", _as(CostReport), params={"hours": hours})


def benchmarks(
    model: str | None, hardware: str | None, source: str | None
) -> Call[list[BenchmarkSummary]]:
    params = query(model=model, hardware=hardware, source=source)
    return Call("GET", "/benchmark/summary", _listed(BenchmarkSummary), params=params)


def _any_json(response: httpx.Response) -> Any:
    return response.json() if response.content else None


def raw(method: str, path: str, body: Any, params: Mapping[str, Any] | None) -> Call[Any]:
    """Any other route, its JSON answer as is (None for an empty body)."""
    return Call(method.upper(), path, _any_json, body, params=query(**(params or {})))
