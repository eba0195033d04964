"""OpenTelemetry tracing: one trace per HTTP request, off (and free) unless asked for.

The policy, stated once:

- On when the ``tracing`` setting is ``on``, or ``auto`` (the default) and the standard
  environment asks for traces: ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, or ``OTEL_TRACES_EXPORTER`` names an exporter.
  ``OTEL_TRACES_EXPORTER=none`` and ``OTEL_SDK_DISABLED=true`` turn it off, as does ``off``.
- Exported as ``OTEL_TRACES_EXPORTER`` says (default ``otlp``; ``console`` prints spans): OTLP
  over HTTP/protobuf by default, over gRPC with ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL=grpc``
  (the ``opentelemetry-exporter-otlp-proto-grpc`` package). Endpoint, headers, timeout,
  compression, sampler (``OTEL_TRACES_SAMPLER``), batching (``OTEL_BSP_*``) and resource
  (``OTEL_SERVICE_NAME``, default ``hfskills``; ``OTEL_RESOURCE_ATTRIBUTES``) are read by the
  SDK from the ``OTEL_*`` variables as everywhere else. The SDK is the ``otel`` extra: ``on``
  without it stops start-up with one line; ``auto`` without it warns and serves untraced.
- `Middleware` (outermost) opens each HTTP request's server span, continuing the client's
  W3C ``traceparent``, and one ``response`` span from the response's start to its last byte: a
  stream is one span however many chunks it sends (the paths in ``tracing_excluded_paths``,
  probes and scrapes, are not traced). The request path adds, as children:
  ``parse`` (body and validation), ``route`` (a route's or ``auto``'s choice), ``queue`` (the
  scheduler's slot), ``load`` (waiting for a model that is not resident), ``batch`` (a
  request's time in the dynamic batcher) with ``forward`` (its batch's forward pass), and
  ``engine`` (a generation engine's work or a remote model's; a stream's ends with the stream,
  and is current while the stream starts, `current`), with ``remote`` (a call to a remote
  model's server, kind client).
- Each app keeps its own provider (several apps may live in one process); the middleware puts
  its tracer in a context variable that the hooks read. Tracing off: no middleware, and each
  hook is that one context-variable read, which returns the shared no-op `NOOP`.
- Threads: work handed to a thread (`in_thread`, `bound`: the worker pool, a model's forward
  lanes, a stream's pump, a load) runs in a copy of the handing coroutine's context, as
  `asyncio.to_thread` does: its log lines carry the trace id and spans opened there are
  children of the request's. Work that serves several requests at once runs in none of their
  contexts but under the oldest one's trace only (`attached`): a batch's prepare, forward pass
  and finish log that request's trace id and ``batch`` span id (each request still gets its
  own ``forward`` span, `record`); no other request state (auth principal, noted headers, the
  request id) reaches it. A generation engine's own thread serves every sequence: its lines
  carry no trace id.
- Calls out: a remote model's HTTP request (host/control/remote.py) is a ``remote`` client span
  (`outgoing`) whose W3C ``traceparent`` goes with it (`headers`, the ``OTEL_PROPAGATORS``), so
  the remote's own spans join the request's trace.
- Logs: `current_ids` gives the active span's trace and span id (logs.py adds them).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hfskills.skillset.runtime.errors import HFSkillsError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("hfskills.host")

T = TypeVar("T")

#: The tracer of the app serving this request; None: tracing is off (every hook a no-op).
_TRACER: contextvars.ContextVar[Tracer | None] = contextvars.ContextVar(
    "hfskills_tracer", default=None
)
#: The instrumentation scope's name, as backends show it.
SCOPE = "hfskills.host"
INSTALL = "pip install 'hfskills[otel]'"


class TracingUnavailable(HFSkillsError):
    """Tracing was asked for and cannot be set up (start-up stops with one line, exit 2)."""

    code = "tracing_unavailable"
    status = 500
    exit_code = 2


class NoSpan:
    """What every hook gets while tracing is off: a context manager and a span doing nothing."""

    __slots__ = ()

    def __enter__(self) -> NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        return None

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        return None

    def end(self, end_time: int | None = None) -> None:
        return None

    def is_recording(self) -> bool:
        return False


NOOP = NoSpan()

#: A parent to attach a span to later (`record`): the tracer and the context it was taken in.
Parent = tuple["Tracer", "Context"]


# -- the hooks (the request path) -------------------------------------------------------------


def _attributes(given: Mapping[str, Any]) -> dict[str, Any]:
    return {f"hfskills.{key}": value for key, value in given.items() if value is not None}


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A child of the current span for the ``with`` block (``hfskills.<key>`` attributes; an
    exception leaving the block is recorded and marks it an error); `NOOP` when off."""
    tracer = _TRACER.get()
    if tracer is None:
        return NOOP
    return tracer.start_as_current_span(name, attributes=_attributes(attributes))


def start(name: str, **attributes: Any) -> Any:
    """A child of the current span that is not made current, for the caller to ``end()``
    (a stream's ``engine`` span ends with the stream); `NOOP` when off."""
    tracer = _TRACER.get()
    if tracer is None:
        return NOOP
    return tracer.start_span(name, attributes=_attributes(attributes))


def current(started: Any) -> contextlib.AbstractContextManager[Any]:
    """``started`` (a span from `start`) current for the block, and not ended by it: what the
    block starts (a remote model's call, work handed to a thread) is its child. `NOOP` when off."""
    if started is NOOP or _TRACER.get() is None:
        return NOOP
    from opentelemetry import trace

    return trace.use_span(
        started, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


def parent() -> Parent | None:
    """Where a span `record`\\ ed later belongs: the current span; None when off."""
    tracer = _TRACER.get()
    if tracer is None:
        return None
    from opentelemetry import context

    return tracer, context.get_current()


def now() -> int:
    """A span's clock: nanoseconds since the epoch."""
    return time.time_ns()


def record(parents: Iterable[Parent | None], name: str, start_ns: int, **attributes: Any) -> None:
    """A span ``name`` from ``start_ns`` to now under each parent that is not None: work that
    served several requests at once (a batch's forward pass) appears in each one's trace."""
    end_ns: int | None = None
    for taken in parents:
        if taken is None:
            continue
        end_ns = end_ns or time.time_ns()
        tracer, context = taken
        child = tracer.start_span(
            name, context=context, start_time=start_ns, attributes=_attributes(attributes)
        )
        child.end(end_time=end_ns)


def current_ids() -> tuple[str, str] | None:
    """The active span's (trace id, span id) in hex, as OTLP backends show them; None when
    tracing is off or no span is active."""
    if _TRACER.get() is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


# -- threads and calls out ---------------------------------------------------------------------


def bound(fn: Callable[..., T], *args: Any) -> Callable[[], T]:
    """``fn(*args)``, to run in another thread in a copy of the current context (its trace, for
    spans and log lines): taken now, when the work is handed over."""
    return functools.partial(contextvars.copy_context().run, fn, *args)


async def in_thread(executor: Executor | None, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in one of ``executor``'s threads, in a copy of the current context (what
    `asyncio.to_thread` does for the loop's default executor)."""
    return await asyncio.get_running_loop().run_in_executor(executor, bound(fn, *args))


@contextlib.contextmanager
def attached(taken: Parent | None) -> Iterator[None]:
    """``taken``'s trace (a `parent`) current for the block: work for several requests (a
    batch, in a context of its own) runs under the oldest one's; a no-op for None."""
    if taken is None:
        yield
        return
    from opentelemetry import context

    tracer, otel = taken
    token = _TRACER.set(tracer)
    attach = context.attach(otel)
    try:
        yield
    finally:
        context.detach(attach)
        _TRACER.reset(token)


def outgoing(method: str, url: str, **attributes: Any) -> Any:
    """A client span, child of the current span and not made current, for an HTTP call to
    another service; used as ``with``, it ends with the block (an exception leaving it is
    recorded and marks it an error). `NOOP` when off."""
    tracer = _TRACER.get()
    if tracer is None:
        return NOOP
    from opentelemetry import trace

    return tracer.start_span(
        "remote",
        kind=trace.SpanKind.CLIENT,
        attributes={"http.request.method": method, "url.full": url, **_attributes(attributes)},
    )


def headers(call: Any) -> dict[str, str]:
    """The headers that carry ``call``'s span to the service called (W3C ``traceparent``, and
    what else ``OTEL_PROPAGATORS`` names); empty when off."""
    if call is NOOP or _TRACER.get() is None:
        return {}
    from opentelemetry import propagate, trace

    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(call))
    return carrier


# -- set-up -------------------------------------------------------------------------------------


def wanted(mode: str, env: Mapping[str, str]) -> bool:
    """Whether ``mode`` (``auto``, ``on``, ``off``) and the environment turn tracing on."""
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    if mode == "off" or disabled or exporters == "none":
        return False
    if mode == "on" or exporters:
        return True
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def setup(mode: str, env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """This app's tracer provider with its exporters, or None when tracing is off."""
    env = os.environ if env is None else env
    if not wanted(mode, env):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        why = f"tracing needs the OpenTelemetry SDK ({INSTALL})"
        if mode == "on":
            raise TracingUnavailable(why) from None
        log.warning("%s; the OTEL_* environment asks for traces: serving without them", why)
        return None
    exporters = dict(_exporters(env))
    resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "hfskills"}))
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER
    for exporter in exporters.values():
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*
    log.info("tracing on: spans to %s", ", ".join(exporters) or "no exporter")
    return provider


def _exporters(env: Mapping[str, str]) -> Iterable[tuple[str, SpanExporter]]:
    """(what it is, the exporter) for each name in ``OTEL_TRACES_EXPORTER``."""
    names = env.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    for name in (n.strip() for n in names.split(",")):
        if name == "otlp":
            yield _otlp(env)
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            yield "the console (stdout)", ConsoleSpanExporter()
        elif name not in ("", "none"):
            raise TracingUnavailable(
                f"OTEL_TRACES_EXPORTER={name!r}: hfskills exports traces with otlp or console"
            )


def _otlp(env: Mapping[str, str]) -> tuple[str, SpanExporter]:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
        or "http/protobuf"
    ).lower()
    try:
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        elif protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[no-redef]
                OTLPSpanExporter,
            )
        else:
            raise TracingUnavailable(
                f"OTLP protocol {protocol!r} is not supported: http/protobuf or grpc"
            )
    except ImportError:
        package = f"opentelemetry-exporter-otlp-proto-{'grpc' if protocol == 'grpc' else 'http'}"
        raise TracingUnavailable(f"OTLP over {protocol} needs {package} ({INSTALL})") from None
    exporter = OTLPSpanExporter()  # endpoint, headers, timeout, compression: OTEL_EXPORTER_OTLP_*
    where = getattr(exporter, "_endpoint", None)  # as the SDK resolved it from the environment
    return f"OTLP over {protocol}" + (f" at {where}" if where else ""), exporter


def tracer_of(provider: TracerProvider) -> Tracer:
    from hfskills import __version__

    return provider.get_tracer(SCOPE, __version__)


# -- the server span and the response span ------------------------------------------------------


class Middleware:
    """ASGI: each HTTP request's server span, current for the whole request with this app's
    tracer for the hooks, and one ``response`` span from ``http.response.start`` to the last
    body message. Its attributes: method, path, route template, status, the request id and the
    model that answered (from ``X-Request-Id`` and ``X-HFSkills-Model``); a 5xx is an error."""

    def __init__(self, app: ASGIApp, tracer: Tracer, excluded: Iterable[str] = ()) -> None:
        """``excluded``: paths served untraced (probes and scrapes)."""
        self.app, self.tracer, self.excluded = app, tracer, frozenset(excluded)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.excluded:
            return await self.app(scope, receive, send)
        from opentelemetry import propagate, trace

        headers = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope.get("headers") or []
        }
        method, path = scope.get("method", "GET"), scope.get("path", "")
        attributes = {"http.request.method": method, "url.path": path}
        client = scope.get("client")
        if client:
            attributes["client.address"] = str(client[0])
        token = _TRACER.set(self.tracer)
        response: Span | None = None
        chunks = size = 0
        try:
            with self.tracer.start_as_current_span(
                f"{method} {path}",
                context=propagate.extract(headers),  # a client's traceparent, else a new trace
                kind=trace.SpanKind.SERVER,
                attributes=attributes,
            ) as server:

                async def traced(message: Message) -> None:
                    nonlocal response, chunks, size
                    if message["type"] == "http.response.start":
                        response = self._respond(server, scope, method, message)
                    elif message["type"] == "http.response.body" and response is not None:
                        chunks, size = chunks + 1, size + len(message.get("body", b""))
                        if not message.get("more_body", False):
                            try:
                                await send(message)
                            finally:
                                _end(response, chunks, size, complete=True)
                                response = None
                            return
                    await send(message)

                await self.app(scope, receive, traced)
        finally:
            if response is not None:  # the client left, or the app failed, mid-response
                _end(response, chunks, size, complete=False)
            _TRACER.reset(token)

    def _respond(self, server: Span, scope: Scope, method: str, message: Message) -> Span:
        from opentelemetry import trace

        status = int(message["status"])
        route = getattr(scope.get("route"), "path", None)  # Starlette's matched route
        if route:
            server.update_name(f"{method} {route}")
            server.set_attribute("http.route", route)
        server.set_attribute("http.response.status_code", status)
        if status >= 500:
            server.set_status(trace.Status(trace.StatusCode.ERROR, f"HTTP {status}"))
        for key, value in message.get("headers") or ():
            if key == b"x-request-id":
                server.set_attribute("hfskills.request_id", value.decode("latin-1"))
            elif key == b"x-hfskills-model":
                server.set_attribute("hfskills.model", value.decode("latin-1"))
        return self.tracer.start_span(
            "response",
            context=trace.set_span_in_context(server),
            attributes={"http.response.status_code": status},
        )


def _end(response: Span, chunks: int, size: int, complete: bool) -> None:
    response.set_attribute("hfskills.chunks", chunks)
    response.set_attribute("hfskills.bytes", size)
    response.set_attribute("hfskills.complete", complete)
    response.end()
