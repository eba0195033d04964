"""Tracing over real HTTP: a real server exports its spans with OTLP/HTTP to a receiver this test
starts on 127.0.0.1, which decodes each ``ExportTraceServiceRequest`` (opentelemetry-proto).

Each request carries a W3C ``traceparent`` of the test's own, so its spans are found by trace
id and the server span's parent is the test's span. Checked: the span tree of an embedding, a
chat completion and a stream (parse, route, queue, load, batch -> forward or engine, response,
all children of the one server span), one ``engine`` and one ``response`` span for a stream
however many chunks it sends, the JSON log line carrying the trace id (also a line written in
a worker thread, and a batch's in its own request's trace, not in the one that started the
batcher), and that tracing stays off (no middleware, no-op hooks) without the OTEL_*
environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gzip
import itertools
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hfskills.host import logs, tracing
from hfskills.host.batching import DynamicBatcher, Stages
from hfskills.skillset.runtime.staged import Prepared

from .conftest import Server, entry


def _require_otel() -> None:
    """Skip without the ``otel`` extra; under scripts/test (HFSKILLS_TEST_STRICT=1) fail."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.proto.collector.trace.v1.trace_service_pb2
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as missing:
        why = f"OpenTelemetry is not installed ({missing.name}): pip install 'hfskills[otel]'"
        if os.environ.get("HFSKILLS_TEST_STRICT") == "1":
            pytest.fail(why)
        pytest.skip(why)


# -- the OTLP/HTTP receiver -----------------------------------------------------------------


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent: str
    kind: int
    start: int
    end: int
    status: int  # 0 unset, 1 ok, 2 error
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    service: str = ""


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver:
    """An OTLP/HTTP traces endpoint (``POST /v1/traces``, protobuf, gzip or not)."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as service

        self.spans: list[Span] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = service.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.take(self.path, request)
                reply = service.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self, path: str, request: Any) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    spans.append(
                        Span(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent=s.parent_span_id.hex(),
                            kind=s.kind,
                            start=s.start_time_unix_nano,
                            end=s.end_time_unix_nano,
                            status=s.status.code,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            events=[e.name for e in s.events],
                            service=str(resource.get("service.name", "")),
                        )
                    )
        with self.lock:
            self.paths.append(path)
            self.spans.extend(spans)

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the server under test --------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    _require_otel()
    started = Receiver()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def server(serve, task_checkpoint, receiver) -> Server:
    models = [
        entry("embed", task_checkpoint("bert", "text_embedding")),
        # loaded by one test only: its load's lines, written in a worker thread
        entry("embed-thread", task_checkpoint("bert", "text_embedding")),
        entry("gen", task_checkpoint("llama", "text_generation"), hardware=["cpu"]),  # torch
    ]
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,  # + /v1/traces
        "OTEL_SERVICE_NAME": "hfskills-test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: spans leave promptly
    }
    with pytest.MonkeyPatch.context() as patch:  # read once, when the app is built
        for key, value in env.items():
            patch.setenv(key, value)
        for key in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            patch.delenv(key, raising=False)
        return serve(models=models, embedded_default=False)


def traceparent() -> tuple[str, str, dict[str, str]]:
    """A new trace id, the client's span id, and the header that carries them."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, {"traceparent": f"00-{trace_id}-{span_id}-01"}


def spans_of(server: Server, receiver: Receiver, trace_id: str, at_least: int) -> list[Span]:
    """The trace's spans once its server span (the last to end) and ``at_least`` spans came."""
    deadline = time.monotonic() + 20
    while True:
        server.app.state.tracing.force_flush(5000)
        spans = receiver.trace(trace_id)
        if len(spans) >= at_least and any(s.kind == 2 for s in spans):  # SPAN_KIND_SERVER
            return spans
        if time.monotonic() > deadline:
            raise AssertionError(f"trace {trace_id}: {[s.name for s in spans]}")
        time.sleep(0.05)


def tree(spans: list[Span], client_span: str) -> tuple[Span, dict[str, list[Span]]]:
    """The server span (child of the client's span) and every span's children by name."""
    (root,) = [s for s in spans if s.kind == 2]
    assert root.parent == client_span
    children: dict[str, list[Span]] = {}
    for s in spans:
        children.setdefault(s.parent, []).append(s)
    return root, children


def names(spans: list[Span]) -> list[str]:
    return sorted(s.name for s in spans)


# -- the tests --------------------------------------------------------------------------------


def test_an_embedding_is_one_trace_with_a_span_per_step(server, receiver) -> None:
    trace_id, client_span, headers = traceparent()
    with server.client() as http:
        answer = http.post(
            "/v1/embeddings", json={"model": "embed", "input": ["a b", "c"]}, headers=headers
        )
    assert answer.status_code == 200, answer.text
    spans = spans_of(server, receiver, trace_id, at_least=8)
    root, children = tree(spans, client_span)
    assert root.name == "POST /v1/embeddings" and root.service == "hfskills-test"
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["http.route"] == "/v1/embeddings"
    assert root.attributes["hfskills.request_id"] == answer.headers["x-request-id"]
    assert root.attributes["hfskills.model"] == answer.headers["x-hfskills-model"]
    steps = {s.name: s for s in children[root.span_id]}
    # the model was not resident: this request waited for its load
    assert names(children[root.span_id]) == [
        "batch", "load", "parse", "queue", "response", "route",
    ]  # fmt: skip
    assert steps["load"].attributes["hfskills.model"] == "embed"
    assert steps["load"].attributes["hfskills.joined"] is False
    assert steps["queue"].attributes["hfskills.priority"] == "normal"
    batch = steps["batch"]
    assert (
        batch.attributes["hfskills.hardware"] == "cpu" and batch.attributes["hfskills.inputs"] == 2
    )
    (forward,) = children[batch.span_id]
    assert forward.name == "forward" and forward.attributes["hfskills.rows"] == 2
    assert batch.start <= forward.start <= forward.end <= batch.end
    # in order: parse, route, queue, load, the work, the response; all within the server span
    order = [steps[n] for n in ("parse", "route", "queue", "load", "batch", "response")]
    assert all(a.start <= b.start for a, b in itertools.pairwise(order))
    assert all(root.start <= s.start <= s.end <= root.end for s in spans if s is not root)
    assert all(s.status != 2 for s in spans)

    trace_id, client_span, headers = traceparent()  # resident now: no load span
    with server.client() as http:
        again = http.post("/v1/embeddings", json={"model": "embed", "input": "x"}, headers=headers)
    assert again.status_code == 200
    root, children = tree(spans_of(server, receiver, trace_id, at_least=7), client_span)
    assert names(children[root.span_id]) == ["batch", "parse", "queue", "response", "route"]


def test_a_chat_completion_runs_in_the_engine_span(server, receiver) -> None:
    trace_id, client_span, headers = traceparent()
    body = {"model": "gen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with server.client() as http:
        answer = http.post("/v1/chat/completions", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    root, children = tree(spans_of(server, receiver, trace_id, at_least=7), client_span)
    assert root.name == "POST /v1/chat/completions"
    steps = {s.name: s for s in children[root.span_id]}
    assert {"parse", "route", "queue", "engine", "response"} <= set(steps), steps
    assert "batch" not in steps  # a generation engine batches itself
    assert steps["engine"].attributes["hfskills.model"] == "gen"


def test_a_stream_is_one_engine_span_and_one_response_span(server, receiver) -> None:
    trace_id, client_span, headers = traceparent()
    body = {"model": "gen", "prompt": "one two", "max_tokens": 12, "stream": True}
    body["ignore_eos"] = True
    with server.client() as http:
        with http.stream("POST", "/v1/completions", json=body, headers=headers) as stream:
            assert stream.status_code == 200
            events = [line for line in stream.iter_lines() if line.startswith("data:")]
    # 12 tokens, but not one event each: a token whose text is not yet whole (part of a
    # character, a pending space) waits for the next, so 11 events were seen now and then
    assert len(events) >= 6 and events[-1] == "data: [DONE]"
    spans = spans_of(server, receiver, trace_id, at_least=6)
    root, children = tree(spans, client_span)
    steps = children[root.span_id]
    assert names(steps).count("engine") == 1 and names(steps).count("response") == 1
    (engine,) = [s for s in steps if s.name == "engine"]
    (response,) = [s for s in steps if s.name == "response"]
    assert engine.attributes["hfskills.stream"] is True
    assert engine.attributes["hfskills.completion_tokens"] == 12
    assert engine.attributes["hfskills.status"] == "ok"
    assert engine.events == ["first_token"]
    assert response.attributes["hfskills.chunks"] >= len(events)  # one span, every chunk
    assert response.attributes["hfskills.complete"] is True
    assert len(spans) <= 8, names(spans)  # no span per chunk


def test_json_logs_carry_the_trace_id(server, receiver) -> None:
    lines: list[dict[str, Any]] = []
    formatter = logs.JsonFormatter()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(formatter.format(record)))  # formatted where logged

    logger = logging.getLogger("hfskills.requests")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        trace_id, _, headers = traceparent()
        with server.client() as http:
            answer = http.post(
                "/v1/embeddings", json={"model": "embed", "input": "x"}, headers=headers
            )
        assert answer.status_code == 200
        spans = spans_of(server, receiver, trace_id, at_least=5)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    (line,) = [line for line in lines if line.get("event") == "request"]
    assert line["trace_id"] == trace_id
    assert line["span_id"] in {s.span_id for s in spans}
    assert "trace_id" not in json.loads(formatter.format(logging.makeLogRecord({"msg": "x"})))


class Collect(logging.Handler):
    """Each record as the JSON formatter writes it, formatted where (in the thread) it is logged,
    with that thread's name."""

    def __init__(self) -> None:
        super().__init__()
        self.formatter_ = logs.JsonFormatter()
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.threadName, json.loads(self.formatter_.format(record))))


@contextlib.contextmanager
def collected(name: str) -> Iterator[Collect]:
    logger, handler = logging.getLogger(name), Collect()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_line_logged_in_a_worker_thread_carries_the_trace_id(server, receiver) -> None:
    """The load runs in the worker pool: the line the skill's loader logs there ("loaded ...",
    hfskills.runtime) carries the trace of the request that started the load, under its
    ``load`` span."""
    trace_id, _, headers = traceparent()
    with collected("hfskills.runtime") as collect:
        with server.client() as http:
            answer = http.post(
                "/v1/embeddings", json={"model": "embed-thread", "input": "x"}, headers=headers
            )
        assert answer.status_code == 200, answer.text
    spans = spans_of(server, receiver, trace_id, at_least=8)
    (load,) = [s for s in spans if s.name == "load"]
    loaded = [(t, line) for t, line in collect.lines if line["message"].startswith("loaded ")]
    assert loaded, collect.lines
    for thread, line in loaded:
        assert thread.startswith("hfskills-worker"), thread  # not the event loop's
        assert line.get("trace_id") == trace_id, line
        assert line["span_id"] == load.span_id


def test_a_batch_runs_in_its_own_request_trace() -> None:
    """The dynamic batcher's loop is started by one request and forms later requests' batches
    too: a batch's thread work logs its own (oldest) request's trace, never the starter's, and
    no request's other state (here a context variable of the test's) reaches it."""
    _require_otel()
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    tracer = tracing.tracer_of(provider)
    marker: contextvars.ContextVar[str | None] = contextvars.ContextVar("marker", default=None)
    logger = logging.getLogger("hfskills.test.batch")
    release = threading.Event()

    def forward(items: list[Prepared]) -> list[Any]:
        logger.info("forward %s marker=%s", items[0].features, marker.get())
        if items[0].features == "first":
            release.wait(10)  # the second request's batch forms while this one runs
        return [item.features for item in items]

    async def prepare(inputs: list[Any], params: dict[str, Any]) -> list[Prepared]:
        return [Prepared(x, 1) for x in inputs]

    async def run_forward(items: list[Prepared], params: dict[str, Any]) -> Any:
        return await tracing.in_thread(None, forward, items)

    async def finish(items: list[Prepared], output: Any, params: dict[str, Any]) -> list[Any]:
        return output

    async def request(batcher: DynamicBatcher, text: str, params: dict[str, Any]) -> str:
        token = tracing._TRACER.set(tracer)  # as the middleware does for a request
        marker.set(text)
        try:
            with tracer.start_as_current_span(text) as root:
                with tracing.span("batch"):
                    await batcher.submit([text], params)
                return format(root.get_span_context().trace_id, "032x")
        finally:
            tracing._TRACER.reset(token)

    async def main() -> dict[str, str]:
        batcher = DynamicBatcher(Stages(prepare, run_forward, finish), max_wait_s=0.0)
        texts = ("first", "starter", "second")
        # other parameters each: no two share a batch
        runs = {"first": asyncio.ensure_future(request(batcher, "first", {"n": 1}))}
        while batcher.batches == 0:  # the first batch is in its forward pass
            await asyncio.sleep(0.01)
        for n, text in enumerate(texts[1:], 2):  # "starter" starts the loop that waits for
            runs[text] = asyncio.ensure_future(request(batcher, text, {"n": n}))  # the model
            await asyncio.sleep(0.2)  # and that forms "second"'s batch too
        release.set()
        return {text: await runs[text] for text in texts}

    with collected("hfskills.test.batch") as collect:
        traces = asyncio.run(main())
    assert len(set(traces.values())) == 3
    by_input = {line["message"].split()[1]: line for _, line in collect.lines}
    assert set(by_input) == set(traces)
    for text, trace_id in traces.items():
        assert by_input[text].get("trace_id") == trace_id, (text, by_input)
    assert all(line["message"].endswith("marker=None") for line in by_input.values())
    provider.shutdown()


def test_probes_and_scrapes_are_not_traced(server, receiver) -> None:
    probe, _, probe_headers = traceparent()
    trace_id, _, headers = traceparent()
    with server.client() as http:
        for path in ("/health", "/ready", "/metrics"):
            assert http.get(path, headers=probe_headers).status_code == 200
        assert http.get("/v1/models", headers=headers).status_code == 200
    spans_of(server, receiver, trace_id, at_least=2)  # flushed after the probes
    assert receiver.trace(probe) == []


def test_receiver_got_otlp_http_posts(receiver) -> None:
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}


# -- off -------------------------------------------------------------------------------------


def test_tracing_is_off_without_the_environment(serve, task_checkpoint, monkeypatch) -> None:
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)
    quiet = serve(
        models=[entry("embed", task_checkpoint("bert", "text_embedding"))], embedded_default=False
    )
    assert quiet.app.state.tracing is None
    assert not any(m.cls is tracing.Middleware for m in quiet.app.user_middleware)
    with quiet.client() as http:
        assert http.post("/v1/embeddings", json={"model": "embed", "input": "x"}).status_code == 200
    assert tracing.span("x") is tracing.NOOP and tracing.start("x") is tracing.NOOP
    assert tracing.parent() is None and tracing.current_ids() is None


def test_when_tracing_is_wanted() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert not tracing.wanted("auto", {})
    assert tracing.wanted("auto", endpoint)
    assert tracing.wanted("auto", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"})
    assert tracing.wanted("auto", {"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted("auto", {**endpoint, "OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.wanted("auto", {**endpoint, "OTEL_SDK_DISABLED": "true"})
    assert not tracing.wanted("off", endpoint)
    assert tracing.wanted("on", {})
    _require_otel()
    with pytest.raises(tracing.TracingUnavailable, match="otlp or console"):
        tracing.setup("on", {"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(tracing.TracingUnavailable, match="http/protobuf or grpc"):
        tracing.setup("on", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_otlp_over_grpc_reaches_a_grpc_receiver() -> None:
    """``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``: the same spans through a gRPC TraceService."""
    _require_otel()
    try:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as service
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as rpc
    except ImportError as missing:
        why = f"OTLP over gRPC is not installed ({missing.name}): pip install 'hfskills[otel]'"
        if os.environ.get("HFSKILLS_TEST_STRICT") == "1":
            pytest.fail(why)
        pytest.skip(why)
    names_seen: list[str] = []

    class Traces(rpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (the service's name)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    names_seen.extend(s.name for s in scope_spans.spans)
            return service.ExportTraceServiceResponse()

    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    rpc.add_TraceServiceServicer_to_server(Traces(), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }
        with pytest.MonkeyPatch.context() as patch:  # the exporter reads the environment
            for key, value in env.items():
                patch.setenv(key, value)
            provider = tracing.setup("auto")
        assert provider is not None
        with tracing.tracer_of(provider).start_as_current_span("over-grpc"):
            pass
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        grpc_server.stop(0)
    assert names_seen == ["over-grpc"]
