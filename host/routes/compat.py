"""``POST /``: TGI's compat route (``compat_generate``) and TEI's root route, for the server's
root model: the Inference API body (``{"inputs", "parameters", "stream"}``, or a raw
image/audio body), answered as ``/models/{root}`` answers it (host/serving/hf.py). This is
where `huggingface_hub.InferenceClient(base_url=...)` posts every non-chat task.

A request does not say its task (`InferenceClient` sends ``{"inputs": "...",
"parameters": {}}`` for text classification and text generation alike), so the route serves
one model, the root model: the body's ``model`` (an hfskills extension), else
``default_models.root``, else the only model the server serves, else the default
``text_generation`` model (TGI's meaning of ``/``). On a server of several models without a
text generation model, name one (400 otherwise), or point the client at
``{base}/models/{name}``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import APIError
from ..openapi import protocol
from ..protocol.design import TaskRequest
from ..serving import hf as serving
from ..tracing import span
from .common import context, default_model, host, inference_request, route_task, routed

ROOT = "root"  # the default_models key of the root model


def root_model(request: Request, named: str | None) -> str:
    """The model ``POST /`` runs (see the module's docstring)."""
    if named is not None:
        return named
    settings = host(request).settings
    if ROOT in settings.default_models:
        return default_model(request, ROOT)
    defaults = host(request).defaults()
    served = {name for key, name in defaults.items() if key != ROOT}
    if len(served) == 1:
        return served.pop()
    if "text_generation" in defaults or "text_generation" in settings.default_models:
        return default_model(request, "text_generation")
    raise APIError(
        400,
        f"POST / serves one model, and this server serves several ({sorted(served)}): name it "
        "in the body's model, post to /models/{name} (InferenceClient(base_url=f'{base}/models/"
        "{name}')), or configure default_models.root",
        param="model",
    )


@protocol(TaskRequest)
async def root(request: Request) -> Response:
    """TGI and TEI's root route: the root model's task, with the Inference API body."""
    with span("parse"):
        payload = inference_request(request, await request.body())
    named = (payload.model_extra or {}).pop("model", None)
    if named is not None:
        named = TaskRequest.model_validate({"inputs": None, "model": named}).model
    name = root_model(request, named)
    if routed(request, name):
        task = route_task(request, name, None)
    else:
        await host(request).loader.admit(name)
        model, task = host(request).loader.resolve(name)
        name = model.canonical(name)
    target = serving.Target(host(request).service, name, task, context(request))
    return await serving.inference(target, payload)


routes = [Route("/", root, methods=["POST"])]
