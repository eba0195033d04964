"""``GET /openapi.json``, generated from the protocol models each route declares.

Each operation has its request body and 200 answer (`protocol`: a JSON model, or binary bodies
of the media types in ``produces``), its path parameters (with the real constraints where there
are some: `_string`), its query parameters (``protocol(...,
query=)``), and a ``default`` answer: the error body of its API family (host/errors.py),
OpenAI's under ``/v1/``, ``/api/`` and ``/model/switch/``, TGI's elsewhere.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import hfskills

from .errors import is_openai
from .protocol.hf import HF_TASKS

#: The two error bodies (host/errors.py's `error_body`), as components.
ERRORS: dict[str, dict[str, Any]] = {
    "OpenAIError": {
        "title": "OpenAIError",
        "description": "An error under /v1/, /api/ and /model/switch/ (OpenAI's shape).",
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string", "minLength": 1},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": "string", "minLength": 1},
                },
            }
        },
    },
    "TGIError": {
        "title": "TGIError",
        "description": "An error on the Hugging Face, TGI, TEI and operations routes.",
        "type": "object",
        "required": ["error", "error_type"],
        "properties": {
            "error": {"type": "string", "minLength": 1},
            "error_type": {"type": "string"},
        },
    },
}


def schema(routes: list[Route], served: list[str] | None = None) -> dict[str, Any]:
    """The OpenAPI document; ``served`` (every model name and alias) becomes the enum of each
    ``model`` field and ``{name}`` path parameter, the real constraint a client must meet."""
    models: list[type[BaseModel]] = []
    for route in routes:
        for model in getattr(route.endpoint, "__protocol__", ()):
            if model is not None and model not in models:
                models.append(model)
    _, definitions = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, Any] = {}
    for route in routes:
        request_model, response_model = getattr(route.endpoint, "__protocol__", (None, None))
        for method in sorted((route.methods or set()) - {"HEAD"}):
            error = "OpenAIError" if is_openai(route.path) else "TGIError"
            op: dict[str, Any] = {
                "summary": (route.endpoint.__doc__ or route.name).strip().splitlines()[0],
                "responses": {
                    "200": {"description": "OK"},
                    "default": {
                        "description": "An error, in the API family's shape",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{error}"}
                            }
                        },
                    },
                },
            }
            if request_model is not None:
                content = getattr(route.endpoint, "__content__", "application/json")
                op["requestBody"] = {
                    "content": {
                        content: {
                            "schema": {"$ref": f"#/components/schemas/{request_model.__name__}"}
                        }
                    }
                }
            if response_model is not None:
                op["responses"]["200"]["content"] = {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{response_model.__name__}"}
                    }
                }
            for media in getattr(route.endpoint, "__produces__", ()):
                binary = {"schema": {"type": "string", "format": "binary"}}
                op["responses"]["200"].setdefault("content", {})[media] = binary
            names = re.findall(r"\{(\w+)(?::\w+)?\}", route.path)
            parameters = [
                {"name": n, "in": "path", "required": True, "schema": _string(n, served)}
                for n in names
            ]
            for name, param in (getattr(route.endpoint, "__query__", None) or {}).items():
                parameters.append({"name": name, "in": "query", "required": False, **param})
            if parameters:
                op["parameters"] = parameters
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # Starlette's {name:path}
            paths.setdefault(path, {})[method.lower()] = op
    components = definitions.get("$defs", {})
    components.update(ERRORS)
    if served:
        for component in components.values():
            model = component.get("properties", {}).get("model")
            if model is not None and model.get("type") == "string":
                model["enum"] = list(served)
    return {
        "openapi": "3.1.0",
        "info": {"title": "hfskills", "version": hfskills.__version__},
        "paths": paths,
        "components": {"schemas": components},
    }


#: Path parameters' patterns, as the routes check them (``scope``: host/routes/costs.py;
#: ``version``: host/routes/switch.py).
PATTERNS = {
    "scope": r"^(global|model:.+)$",
    "version": r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$",
}


def _string(name: str, served: list[str] | None) -> dict[str, Any]:
    if name == "name" and served:
        return {"type": "string", "enum": list(served)}
    if name == "task":
        return {"type": "string", "enum": sorted(HF_TASKS)}
    if name in PATTERNS:
        return {"type": "string", "pattern": PATTERNS[name]}
    return {"type": "string"}


def query(
    kind: str = "string",
    description: str | None = None,
    *,
    enum: tuple[str, ...] | list[str] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> dict[str, Any]:
    """A query parameter's OpenAPI fields, for ``protocol(..., query={name: query(...)})``."""
    schema: dict[str, Any] = {"type": kind}
    if enum is not None:
        schema["enum"] = list(enum)
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    out: dict[str, Any] = {"schema": schema}
    if description:
        out["description"] = description
    return out


def openapi_route(routes: list[Route], served: list[str] | None = None) -> Route:
    document = schema(routes, served)

    async def openapi(request: Request) -> JSONResponse:
        """The OpenAPI document of every route, from the pydantic protocol models."""
        return JSONResponse(document)

    return Route("/openapi.json", openapi, methods=["GET"])


def protocol(
    request: type[BaseModel] | None,
    response: type[BaseModel] | None = None,
    *,
    query: dict[str, dict[str, Any]] | None = None,
    content: str = "application/json",
    produces: tuple[str, ...] = (),
):
    """Declare a route's request and response models, and its query parameters (name ->
    `query`'s fields; the route still checks them itself), for the OpenAPI document;
    ``content``: the request body's media type (``multipart/form-data`` for a form, whose
    ``bytes`` fields are files); ``produces``: the media types of a binary answer (audio)."""
    models = (request, response)

    def mark(endpoint):
        endpoint.__protocol__ = models
        endpoint.__content__ = content
        if produces:
            endpoint.__produces__ = produces
        if query:
            endpoint.__query__ = query
        return endpoint

    return mark
