"""``GET /openapi.json``, generated from the protocol models each route declares."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import hfskills

from .protocol.hf import HF_TASKS


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
            op: dict[str, Any] = {
                "summary": (route.endpoint.__doc__ or route.name).strip().splitlines()[0],
                "responses": {"200": {"description": "OK"}},
            }
            if request_model is not None:
                op["requestBody"] = {
                    "content": {
                        "application/json": {
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
            names = re.findall(r"\{(\w+)(?::\w+)?\}", route.path)
            if names:
                op["parameters"] = [
                    {"name": n, "in": "path", "required": True, "schema": _string(n, served)}
                    for n in names
                ]
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # Starlette's {name:path}
            paths.setdefault(path, {})[method.lower()] = op
    components = definitions.get("$defs", {})
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


def _string(name: str, served: list[str] | None) -> dict[str, Any]:
    if name == "name" and served:
        return {"type": "string", "enum": list(served)}
    if name == "task":
        return {"type": "string", "enum": sorted(HF_TASKS)}
    return {"type": "string"}


def openapi_route(routes: list[Route], served: list[str] | None = None) -> Route:
    document = schema(routes, served)

    async def openapi(request: Request) -> JSONResponse:
        """The OpenAPI document of every route, from the pydantic protocol models."""
        return JSONResponse(document)

    return Route("/openapi.json", openapi, methods=["GET"])


def protocol(request: type[BaseModel] | None, response: type[BaseModel] | None = None):
    """Declare a route's request and response models for the OpenAPI document."""
    models = (request, response)

    def mark(endpoint):
        endpoint.__protocol__ = models
        return endpoint

    return mark
