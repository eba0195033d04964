"""MCP (the Model Context Protocol) at ``/mcp``: the served models as tools an agent can call.

Policy:

- Built with the official ``mcp`` SDK (the ``mcp`` extra), imported only here and only when
  ``mcp`` is on: without the package (or with ``mcp = false``) there is no ``/mcp`` route and the
  host runs as before.
- Streamable HTTP, stateless, JSON answers: each POST is one JSON-RPC exchange that any replica
  behind a load balancer can answer (no sticky sessions, no stream held open); the tools send
  nothing to the client unasked, so no session is needed: GET (a stream) and DELETE (a
  session's end) answer 405. The SDK's session manager runs in the host's lifespan
  (`lifespan`, entered by app.py).
- DNS-rebinding protection: the ``Host`` header must be one of ``mcp_allowed_hosts`` (default:
  loopback, any port; plus the address ``host`` names when it is one address), an ``Origin``
  header, when sent, one of those hosts over http(s) or one of ``cors_origins``; ``["*"]``
  turns the check off (behind a proxy that checks ``Host`` itself). Else 421 or 403.
- The same authentication as every route: ``/mcp`` is a user's route in auth.py's ``RULES``,
  so with authentication on the middleware answers 401/403 before the SDK reads the body. The
  SDK runs each message in the context of the HTTP request that sent it (its context streams
  carry ``contextvars``), so the principal the middleware set (`auth.PRINCIPAL`) holds in the
  tools: a key limited to models stays limited, its limits and safety switches count.
- Every tool goes through the serving layer the HTTP routes use (``serving.openai.chat`` and
  ``embeddings``, ``serving.vision``, ``serving.hf.inference``), with the request context the
  routes build (``X-Request-Timeout``, ``X-Priority``, the caller), so limits, safety, metrics,
  costs, routes and deadlines apply as on ``/v1/...``. Nothing here calls a model.
- An error becomes the tool's ``isError`` result with the message the HTTP route would answer,
  led by its status and code (``404 model_not_found: model 'x' does not exist; ...``), never a
  crash of the session; arguments that do not fit a tool's schema are refused by the SDK, also
  as ``isError``, naming the field.
- Not in the OpenAPI document (``include_in_schema=False``): MCP describes itself, each tool's
  arguments a JSON schema in ``tools/list``.
"""

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import auth, errors
from .protocol import hf as hf_protocol
from .protocol import openai as oa
from .routes.common import context, route_task, routed
from .routes.common import host as host_of
from .serving import hf as hf_serving
from .serving import openai as openai_serving
from .serving import vision

if TYPE_CHECKING:
    from mcp.server import MCPServer

    from .config import Settings

log = logging.getLogger("hfskills.host")

PATH = "/mcp"
#: The SDK's own loopback defaults; ``host:*`` is any port.
LOOPBACK = ("127.0.0.1:*", "localhost:*", "[::1]:*")
#: ``host`` values that listen on every address, so name none.
WILDCARDS = ("0.0.0.0", "::", "")

T = TypeVar("T")


# -- the tools' answers (their output schemas) -------------------------------------------------


class Loaded(BaseModel):
    task: str
    hardware: str
    device: str | None = None
    dtype: str | None = None


class ModelInfo(BaseModel):
    name: str
    tasks: list[str]
    aliases: list[str]
    adapters: list[str] = Field(description="LoRA adapters: each a model name of its own")
    loaded: list[Loaded] = Field(description="the tasks resident now, and on what hardware")


class ModelList(BaseModel):
    models: list[ModelInfo]
    routes: list[str] = Field(description="named routes: each is a model name too")


class Embeddings(BaseModel):
    model: str = Field(description="the model that answered")
    embeddings: list[list[float]] = Field(description="one vector per text, in order")
    prompt_tokens: int


class Inference(BaseModel):
    model: str
    task: str
    result: Any = Field(description="the Inference API's JSON answer for the task")


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


# -- the tools ---------------------------------------------------------------------------------


def _request(ctx: Any) -> Request:
    request = ctx.request_context.request
    if not isinstance(request, Request):  # only over HTTP; the route is the only transport
        raise RuntimeError("an MCP tool ran without its HTTP request")
    return request


async def _as_request(ctx: Any, work: Callable[[Request], Awaitable[T]], error: type) -> T:
    """Run ``work`` on the HTTP request that carried the call; any failure the route's error
    message (status, code, message, param), raised as ``error``."""
    try:
        return await work(_request(ctx))
    except Exception as exc:
        status, message, code, param = errors.from_exception(exc)
        where = f" (param {param})" if param else ""
        raise error(f"{status} {code or 'error'}: {message}{where}") from None


def _ctx(request: Request) -> Any:
    """The routes' request context, without the disconnect watch: the SDK owns the request's
    receive channel (its deadline still bounds the call)."""
    return dataclasses.replace(context(request), disconnected=None)


def _json(response: Response) -> Any:
    if response.media_type and not response.media_type.endswith("json"):  # a WAV file
        import base64

        encoded = base64.b64encode(response.body).decode("ascii")
        return {"media_type": response.media_type, "base64": encoded}
    return orjson.loads(response.body)


def _models(request: Request) -> ModelList:
    host = host_of(request)
    loaded: dict[str, list[Loaded]] = {}
    for item in host.loader.resident():
        loaded.setdefault(item["model"], []).append(
            Loaded(
                task=item["task"],
                hardware=item["hardware"],
                device=item["device"],
                dtype=str(item["dtype"]) if item["dtype"] is not None else None,
            )
        )
    gate = host.control.gate
    models = [  # what GET /v1/models lists: not retired, and the credential may use it
        ModelInfo(
            name=m.name,
            tasks=list(m.tasks),
            aliases=list(m.aliases),
            adapters=list(m.adapters),
            loaded=loaded.get(m.name, []),
        )
        for m in host.catalog.models.values()
        if not gate.retired(m.name) and auth.may_use(m.name, m)
    ]
    routes = [name for name in host.control.router.names() if auth.may_use(name)]
    return ModelList(models=models, routes=routes)


async def _chat(
    request: Request,
    model: str,
    messages: list[Message] | None,
    prompt: str | None,
    max_tokens: int | None,
    temperature: float | None,
) -> str:
    if (messages is None) == (prompt is None):
        raise errors.APIError(400, "give messages or a prompt (one of them)", param="messages")
    said = [m.model_dump() for m in messages] if messages else [{"role": "user", "content": prompt}]
    body = oa.ChatCompletionRequest.model_validate(
        {"model": model, "messages": said, "max_tokens": max_tokens, "temperature": temperature}
    )
    host = host_of(request)
    ctx = _ctx(request)
    if vision.wanted(host.service, body, model):  # as POST /v1/chat/completions chooses
        answer = await vision.chat(host.service, body, model, ctx, PATH, host.settings)
    else:
        answer = await openai_serving.chat(host.service, body, model, ctx, PATH)
    assert isinstance(answer, oa.ChatCompletionResponse)  # not streamed
    return answer.choices[0].message.content or ""


async def _embed(
    request: Request, model: str, texts: str | list[str], dimensions: int | None
) -> Embeddings:
    body = oa.EmbeddingRequest(model=model, input=texts, dimensions=dimensions)
    host = host_of(request)
    answer = _json(await openai_serving.embeddings(host.service, body, _ctx(request)))
    return Embeddings(
        model=answer["model"],
        embeddings=[item["embedding"] for item in answer["data"]],
        prompt_tokens=answer["usage"]["prompt_tokens"],
    )


async def _infer(
    request: Request, model: str, inputs: Any, task: str | None, parameters: dict[str, Any]
) -> Inference:
    """What ``POST /models/{model}`` (``/pipeline/{task}``) answers."""
    host = host_of(request)
    pipeline = task if task in hf_protocol.HF_TASKS else ""
    wanted = hf_protocol.HF_TASKS.get(task, task) if task else None
    name = model
    if routed(request, name):
        wanted = route_task(request, name, wanted)
    else:
        await host.loader.admit(name)
        served, wanted = host.loader.resolve(name, wanted)
        name = served.canonical(name)
    payload = hf_protocol.InferenceRequest(inputs=inputs, parameters=parameters or None)
    target = hf_serving.Target(host.service, name, wanted, _ctx(request), pipeline)
    return Inference(
        model=name, task=wanted, result=_json(await hf_serving.inference(target, payload))
    )


def _server() -> "MCPServer":
    from mcp.server import MCPServer
    from mcp.server.mcpserver import Context
    from mcp.server.mcpserver.exceptions import ToolError as Failed  # an isError result

    root = logging.getLogger()
    kept = root.handlers[:], root.level
    server = MCPServer(
        "hfskills",
        instructions="Models served by hfskills: list_models names them and their tasks; chat, "
        "embed and infer run them.",
    )
    # its constructor calls logging.basicConfig: with no logging set up yet (build_app outside
    # `hfskills serve`, e.g. in tests) that added a RichHandler at INFO to the root logger;
    # the host's logging is logs.py's alone
    root.handlers[:], root.level = kept
    if root.getEffectiveLevel() > logging.DEBUG:  # "Terminating session: None" at INFO: one
        logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)  # per POST

    @server.tool()
    async def list_models(ctx: Context) -> ModelList:
        """The models served (names, tasks, aliases, LoRA adapters, what is loaded on which
        hardware) and the named routes; a key limited to models sees only those."""

        async def work(request: Request) -> ModelList:
            return _models(request)

        return await _as_request(ctx, work, Failed)

    @server.tool()
    async def chat(
        ctx: Context,
        model: Annotated[str, Field(description="a model, alias, route or auto")],
        messages: Annotated[
            list[Message] | None, Field(description="the conversation; or give a prompt")
        ] = None,
        prompt: Annotated[str | None, Field(description="one user message")] = None,
        max_tokens: Annotated[int | None, Field(ge=1, description="unset: up to 512")] = None,
        temperature: Annotated[
            float | None, Field(ge=0, le=2, description="0: greedy; unset: 1")
        ] = None,
    ) -> str:
        """Chat with a text-generation model (OpenAI chat completions); the answer's text."""
        return await _as_request(
            ctx, lambda r: _chat(r, model, messages, prompt, max_tokens, temperature), Failed
        )

    @server.tool()
    async def embed(
        ctx: Context,
        model: Annotated[str, Field(description="an embedding model, alias or route")],
        texts: Annotated[str | list[str], Field(description="a text, or texts")],
        dimensions: Annotated[
            int | None, Field(ge=1, description="cut each vector to this many (Matryoshka)")
        ] = None,
    ) -> Embeddings:
        """Embed texts (OpenAI embeddings): one vector per text."""
        return await _as_request(ctx, lambda r: _embed(r, model, texts, dimensions), Failed)

    @server.tool()
    async def infer(
        ctx: Context,
        model: Annotated[str, Field(description="a model, alias or route")],
        inputs: Annotated[Any, Field(description="the task's inputs, as the Inference API")],
        task: Annotated[
            str | None,
            Field(
                description="a pipeline (e.g. feature-extraction, fill-mask) or a task of the "
                "model (e.g. text_embedding); unset: the model's first task"
            ),
        ] = None,
        parameters: Annotated[
            dict[str, Any] | None, Field(description="the task's parameters")
        ] = None,
    ) -> Inference:
        """Run any served task, as the Hugging Face Inference API (POST /models/{model}): the
        task's JSON answer."""
        return await _as_request(
            ctx, lambda r: _infer(r, model, inputs, task, parameters or {}), Failed
        )

    return server


def _security(settings: "Settings") -> Any:
    from mcp.server.transport_security import TransportSecuritySettings

    hosts = list(settings.mcp_allowed_hosts)
    if "*" in hosts:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    if settings.host not in WILDCARDS and not any(h.startswith(f"{settings.host}:") for h in hosts):
        hosts.append(f"[{settings.host}]:*" if ":" in settings.host else f"{settings.host}:*")
    origins = [f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[*origins, *settings.cors_origins],
    )


@dataclasses.dataclass
class Endpoint:
    server: Any  # MCPServer
    route: Route

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.server.session_manager.run():
            yield


def build(settings: "Settings") -> "Endpoint | None":
    """The ``/mcp`` endpoint; None when ``mcp`` is off or the ``mcp`` extra is not installed."""
    if not settings.mcp:
        return None
    try:
        from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
    except ImportError:
        log.info("/mcp is off: the mcp package is not installed (pip install 'hfskills[mcp]')")
        return None
    server = _server()
    server.streamable_http_app(  # makes the session manager
        streamable_http_path=PATH,
        stateless_http=True,
        json_response=True,
        transport_security=_security(settings),
        max_request_body_size=settings.max_body_bytes,
    )
    # POST only: stateless, there is no stream to GET (the SDK would hold one open that never
    # carries a message) and no session to DELETE; both answer 405, as the protocol asks
    route = Route(
        PATH,
        StreamableHTTPASGIApp(server.session_manager),
        methods=["POST"],
        include_in_schema=False,
    )
    return Endpoint(server, route)


@contextlib.asynccontextmanager
async def lifespan(endpoint: Endpoint | None) -> AsyncIterator[None]:
    """The MCP session manager's task group, for the host's lifespan (nothing when off)."""
    if endpoint is None:
        yield
        return
    async with endpoint.running():
        yield
