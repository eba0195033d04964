"""``hfskills bench``: load a server's models over HTTP and record what was measured.

Policy:

- The server is ``--url``, or, without one, the local catalog (``--config``, the
  ``HFSKILLS_*`` environment) served in this process by uvicorn on 127.0.0.1 at a free port for
  the run's length. Either way every request goes over real HTTP.
- Generation models get streamed chat completions (``/v1/chat/completions``, greedy,
  ``ignore_eos`` so each answer is ``--max-tokens`` long, usage in the last chunk): TTFT is the
  time to the first chunk with text, ITL every gap between two such chunks, TPOT the time after
  the first token over the other tokens. Embedding models get ``/v1/embeddings`` and
  classifiers the Inference API (``POST /models/{name}``): latency only, tokens are the
  prompt's. Metric names are ``vllm bench serve``'s (host/control/bench.py).
- Bounded in count and time: one warm-up request per model (it loads the model; not
  counted), then at most ``--num-prompts`` requests, ``--concurrency`` at once; none starts
  after ``--max-seconds``, and each is bounded by ``--timeout``.
- Peak memory is the server's: the largest ``used_bytes`` (bytes its resident models hold)
  that ``GET /admin/models`` reported during the run; hardware is where the model is resident.
  The model and version recorded are the ``X-HFSkills-Model`` header's (``name@version``):
  the served model that answered, also when an alias or a route was asked (``asked``).
- Quality (``--eval FILE``): each JSONL line ``{"prompt", "expected", "task"?, "match"?}``
  scores generation (greedy; ``contains`` or ``exact``) and classification (the top label)
  models of its task (any task when not given); the score is correct / scored, in 0..1,
  recorded as ``quality: {name: score}`` and, with ``--update-registry``, written to the
  registry (``PATCH /api/models/{model}?version=``).
- One JSON line per model run is appended to ``--out`` (``source: "cli"``). Exit status: 0;
  1 when a model answered nothing, a name is unknown, or a file or the registry update is bad;
  2 when the server cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from tqdm import tqdm

from hfskills.skillset.runtime.errors import HFSkillsError

from .control import bench

if TYPE_CHECKING:
    from .config import Settings

#: The tasks ``hfskills bench`` loads, and the API each is loaded through.
BACKENDS = {
    "text_generation": "openai-chat",
    "text_embedding": "openai-embeddings",
    "text_classification": "hf-inference",
}
#: The tasks an eval file scores.
SCORED = ("text_generation", "text_classification")
MATCHES = ("contains", "exact")
MAX_EVAL_LINES = 10_000
#: Seconds between two reads of the server's memory during a run.
MEMORY_POLL_S = 0.5


class BenchError(HFSkillsError):
    code = "bench_error"
    exit_code = 1


class Unreachable(BenchError):
    exit_code = 2


@dataclass
class Options:
    url: str | None
    models: list[str]
    task: str | None
    num_prompts: int
    concurrency: int
    max_seconds: float
    max_tokens: int
    timeout_s: float
    out: Path
    eval_file: Path | None = None
    eval_name: str | None = None
    match: str = "contains"
    update_registry: bool = False
    progress: bool = True


@dataclass(frozen=True)
class Target:
    name: str
    task: str


@dataclass(frozen=True)
class EvalItem:
    prompt: str
    expected: str
    task: str | None
    match: str | None


# -- inputs -------------------------------------------------------------------------------------


def read_eval(path: Path) -> list[EvalItem]:
    """The eval file's lines, checked: a bad line is an error naming its number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise BenchError(f"cannot read eval file {path}: {error.strerror or error}") from None
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            raise BenchError(f"eval file {path} line {number}: not JSON") from None
        if not isinstance(data, dict):
            raise BenchError(f"eval file {path} line {number}: not a JSON object")
        prompt, expected = data.get("prompt"), data.get("expected")
        task, match = data.get("task"), data.get("match")
        if not isinstance(prompt, str) or not prompt or not isinstance(expected, str):
            raise BenchError(
                f"eval file {path} line {number}: needs string fields 'prompt' and 'expected'"
            )
        if task is not None and task not in SCORED:
            raise BenchError(f"eval file {path} line {number}: task must be one of {list(SCORED)}")
        if match is not None and match not in MATCHES:
            raise BenchError(
                f"eval file {path} line {number}: match must be one of {list(MATCHES)}"
            )
        items.append(EvalItem(prompt, expected, task, match))
        if len(items) > MAX_EVAL_LINES:
            raise BenchError(f"eval file {path}: more than {MAX_EVAL_LINES} lines")
    if not items:
        raise BenchError(f"eval file {path} has no lines")
    return items


def eval_name(path: Path) -> str:
    """The quality metric's default name: the eval file's stem, in the registry's alphabet."""
    name = re.sub(r"[^\w.:/-]", "_", path.stem).lstrip("._:/-")
    return name[:64] or "eval"


def _message(response: httpx.Response) -> str:
    """An error answer in one line: its status and message."""
    try:
        error = response.json().get("error")
        text = error.get("message") if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError):
        text = response.text
    return f"{response.status_code}: {(text or '').strip()[:200]}"


# -- the server ---------------------------------------------------------------------------------


async def get(client: httpx.AsyncClient, path: str) -> httpx.Response:
    """A GET that turns an unreachable server into `Unreachable` (one line, exit 2)."""
    try:
        return await client.get(path)
    except httpx.TransportError as error:
        reason = str(error) or type(error).__name__
        raise Unreachable(f"cannot reach {client.base_url}: {reason}") from None


async def discover(client: httpx.AsyncClient, names: list[str], task: str | None) -> list[Target]:
    """The models to load and the task of each: the catalog's (``/admin/models``), else what
    ``/v1/models`` lists (routes, other servers) with ``--task``."""
    listed = await get(client, "/v1/models")
    if listed.status_code != 200:
        raise BenchError(f"{client.base_url}/v1/models answered {_message(listed)}")
    ids = [card["id"] for card in listed.json().get("data", [])]
    admin = await get(client, "/admin/models")
    tasks: dict[str, list[str]] = {}
    canonical: list[str] = []  # served models, not their aliases
    if admin.status_code == 200:
        for model in admin.json().get("models", []):
            canonical.append(model["name"])
            for name in [model["name"], *model.get("aliases", [])]:
                tasks[name] = list(model.get("tasks", []))
    if not names:
        names = [n for n in canonical if n in ids and any(t in BACKENDS for t in tasks[n])]
        if not names:
            raise BenchError(f"{client.base_url} serves no model of {list(BACKENDS)}")
    targets = []
    for name in names:
        if name not in ids:
            raise BenchError(
                f"model {name!r} is not served at {client.base_url} (served: {', '.join(ids)})"
            )
        if name in tasks:
            usable = [t for t in tasks[name] if t in BACKENDS and task in (None, t)]
            if not usable:
                wanted = task or f"any of {list(BACKENDS)}"
                raise BenchError(f"model {name!r} serves {tasks[name]}, not {wanted}")
            targets.append(Target(name, usable[0]))
        elif task is None:
            raise BenchError(f"model {name!r} is not a catalog model (a route?): give --task")
        else:
            targets.append(Target(name, task))
    return targets


async def resident(client: httpx.AsyncClient) -> dict[str, Any] | None:
    """``GET /admin/models`` (None when the server has no such route or cannot answer)."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
        response = await client.get("/admin/models")
        if response.status_code == 200:
            return response.json()
    return None


async def watch_memory(client: httpx.AsyncClient, stop: asyncio.Event) -> int | None:
    """The largest ``used_bytes`` the server reported until ``stop`` is set."""
    peak: int | None = None
    while True:
        state = await resident(client)
        if state is not None and isinstance(state.get("used_bytes"), int):
            peak = max(peak or 0, state["used_bytes"])
        if stop.is_set():
            return peak
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), MEMORY_POLL_S)


# -- one request --------------------------------------------------------------------------------


async def request(
    client: httpx.AsyncClient, target: Target, prompt: str, opts: Options
) -> tuple[bench.Sample, str | None]:
    """One timed request, and the ``X-HFSkills-Model`` header of its answer."""
    start = time.perf_counter()
    try:
        if target.task == "text_generation":
            return await _stream(client, target, prompt, opts, start)
        if target.task == "text_embedding":
            body = {"model": target.name, "input": prompt}
            response = await client.post("/v1/embeddings", json=body)
        else:
            response = await client.post(f"/models/{target.name}", json={"inputs": prompt})
        latency = time.perf_counter() - start
        header = response.headers.get("x-hfskills-model")
        if response.status_code != 200:
            return bench.Sample(False, latency, error=_message(response)), header
        tokens = 0
        if target.task == "text_embedding":
            tokens = int(response.json().get("usage", {}).get("prompt_tokens", 0))
        return bench.Sample(True, latency, prompt_tokens=tokens), header
    except (httpx.HTTPError, ValueError) as error:
        message = f"{type(error).__name__}: {error}".strip()[:200]
        return bench.Sample(False, time.perf_counter() - start, error=message), None


async def _stream(
    client: httpx.AsyncClient, target: Target, prompt: str, opts: Options, start: float
) -> tuple[bench.Sample, str | None]:
    body = {
        "model": target.name,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": opts.max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    ttft: float | None = None
    last, chunks = start, 0
    itl: list[float] = []
    usage: dict[str, Any] = {}
    error: str | None = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        header = response.headers.get("x-hfskills-model")
        if response.status_code != 200:
            await response.aread()
            return bench.Sample(
                False, time.perf_counter() - start, error=_message(response)
            ), header
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("error"):
                error = str(chunk["error"].get("message", chunk["error"]))[:200]
                continue
            usage = chunk.get("usage") or usage
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                now = time.perf_counter()
                if ttft is None:
                    ttft = now - start
                else:
                    itl.append(now - last)
                last, chunks = now, chunks + 1
    latency = time.perf_counter() - start
    if error is not None:
        return bench.Sample(False, latency, error=error), header
    sample = bench.Sample(
        True,
        latency,
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        output_tokens=int(usage.get("completion_tokens", chunks)),
        ttft=ttft,
        itl=itl,
    )
    return sample, header


# -- one model ----------------------------------------------------------------------------------


async def load(
    client: httpx.AsyncClient, target: Target, opts: Options
) -> tuple[list[bench.Sample], list[str], float, bool]:
    """Up to ``num_prompts`` requests, ``concurrency`` at once, none started after
    ``max_seconds``: the samples, the answers' model headers, the duration, whether time
    stopped it."""
    gate = asyncio.Semaphore(opts.concurrency)
    samples: list[bench.Sample] = []
    answered: list[str] = []
    start = time.perf_counter()
    stop_at = start + opts.max_seconds
    bar = tqdm(
        total=opts.num_prompts,
        desc=target.name,
        unit="req",
        file=sys.stderr,
        disable=not opts.progress,
        dynamic_ncols=True,
    )

    async def one(index: int) -> None:
        async with gate:
            if time.perf_counter() >= stop_at:
                return
            prompt = bench.PROMPTS[index % len(bench.PROMPTS)]
            sample, header = await request(client, target, prompt, opts)
            samples.append(sample)
            if header:
                answered.append(header)
            bar.update(1)

    try:
        await asyncio.gather(*(one(i) for i in range(opts.num_prompts)))
    finally:
        bar.close()
    duration = time.perf_counter() - start
    return samples, answered, duration, len(samples) < opts.num_prompts


def _version(answered: list[str]) -> tuple[str | None, str | None]:
    """(model, version) from the ``X-HFSkills-Model`` headers, when all answers agree."""
    named = set(answered)
    if len(named) != 1:
        return None, None
    model, _, version = next(iter(named)).rpartition("@")
    return (model, version) if model else (version, None)


async def evaluate(
    client: httpx.AsyncClient, target: Target, items: list[EvalItem], opts: Options
) -> tuple[int, int]:
    """(correct, scored) over the eval lines of this model's task."""
    mine = [i for i in items if i.task in (None, target.task)]
    if target.task not in SCORED or not mine:
        return 0, 0
    gate = asyncio.Semaphore(opts.concurrency)

    async def score(item: EvalItem) -> bool:
        async with gate:
            if target.task == "text_generation":
                response = await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": target.name,
                        "messages": [{"role": "user", "content": item.prompt}],
                        "max_tokens": opts.max_tokens,
                        "temperature": 0,
                    },
                )
                if response.status_code != 200:
                    return False
                text = response.json()["choices"][0]["message"]["content"] or ""
                if (item.match or opts.match) == "exact":
                    return text.strip() == item.expected.strip()
                return item.expected.strip().casefold() in text.casefold()
            response = await client.post(f"/models/{target.name}", json={"inputs": item.prompt})
            if response.status_code != 200:
                return False
            return _top_label(response.json()) == item.expected

    results = await asyncio.gather(*(score(i) for i in mine))
    return sum(results), len(results)


def _top_label(answer: Any) -> str | None:
    """The best label of a classification answer (a list of ``{label, score}``, nested)."""
    while isinstance(answer, list) and answer and isinstance(answer[0], list):
        answer = answer[0]
    if not isinstance(answer, list) or not answer:
        return None
    best = max(answer, key=lambda item: item.get("score", 0))
    return best.get("label")


async def run_target(
    client: httpx.AsyncClient, target: Target, opts: Options, items: list[EvalItem] | None
) -> dict[str, Any]:
    """One model's run: its JSONL record."""
    await request(client, target, bench.PROMPTS[0], opts)  # warm-up (a load), not counted
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_memory(client, stop))
    try:
        samples, answered, duration, timed_out = await load(client, target, opts)
    finally:
        stop.set()
        peak = await watcher
    model, version = _version(answered)
    generation = target.task == "text_generation"
    record: dict[str, Any] = {
        "timestamp": bench.now(),
        "source": "cli",
        "model": model or target.name,  # the served model that answered
        "version": version,
        "hardware": None,
        "task": target.task,
        "backend": BACKENDS[target.task],
        "base_url": str(client.base_url),
        "num_prompts": opts.num_prompts,
        "max_concurrency": opts.concurrency,
        "max_seconds": opts.max_seconds,
        "stopped_by_time": timed_out,
        "max_tokens": opts.max_tokens if generation else None,
        **bench.metrics(samples, duration),
        "peak_memory_bytes": peak,
        "model_memory_bytes": None,
    }
    if model and model != target.name:
        record["asked"] = target.name  # an alias, or a route that chose the model
    state = await resident(client)
    for entry in (state or {}).get("resident", []):
        if entry.get("model") == record["model"] and entry.get("task") == target.task:
            record["hardware"] = entry.get("hardware")
            record["model_memory_bytes"] = entry.get("memory_bytes")
    if items is not None:
        correct, scored = await evaluate(client, target, items, opts)
        if scored:
            assert opts.eval_name is not None
            record["quality"] = {opts.eval_name: round(correct / scored, 6)}
            record["eval"] = {"file": str(opts.eval_file), "scored": scored, "correct": correct}
    return record


async def update_registry(client: httpx.AsyncClient, record: dict[str, Any]) -> str:
    """Write a record's quality to the registry; the line that says so."""
    model = record["model"]
    params = {"version": record["version"]} if record.get("version") else {}
    response = await client.patch(
        f"/api/models/{model}", params=params, json={"quality": record["quality"]}
    )
    if response.status_code != 200:
        raise BenchError(f"registry update of {model!r} failed: {_message(response)}")
    body = response.json()
    scores = ", ".join(f"{k}={v}" for k, v in record["quality"].items())
    return f"registry: {body['model_id']}@{body['version']} quality {scores}"


async def bench_url(url: str, opts: Options) -> int:
    items = read_eval(opts.eval_file) if opts.eval_file is not None else None
    timeout = httpx.Timeout(opts.timeout_s, connect=min(opts.timeout_s, 10.0))
    limits = httpx.Limits(max_connections=opts.concurrency + 2)
    headers = {"X-Request-Timeout": f"{min(opts.timeout_s, 3600):g}"}
    async with httpx.AsyncClient(
        base_url=url, timeout=timeout, limits=limits, headers=headers
    ) as client:
        targets = await discover(client, opts.models, opts.task)
        records = []
        for target in targets:
            record = await run_target(client, target, opts, items)
            bench.append(opts.out, record)
            records.append(record)
        print(bench.runs_table(records))
        print(f"appended {len(records)} record(s) to {opts.out}")
        for record in records:
            if record["completed"] == 0:
                errors = "; ".join(record["errors"]) or "no request ran"
                print(
                    f"hfskills: error: {record['model']} answered nothing: {errors}",
                    file=sys.stderr,
                )
        if opts.update_registry:
            for record in records:
                if record.get("quality"):
                    print(await update_registry(client, record))
    return 1 if any(r["completed"] == 0 for r in records) else 0


# -- the local catalog --------------------------------------------------------------------------


@contextlib.contextmanager
def local_server(settings: Settings) -> Iterator[str]:
    """The catalog served in this process on 127.0.0.1 at a free port; its base URL."""
    import uvicorn

    from .app import build_app

    app = build_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="hfskills-bench-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise BenchError("the local server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# -- the summary --------------------------------------------------------------------------------


def print_summary(url: str | None, path: Path) -> int:
    """The comparison table from ``url``'s ``/benchmark/summary``, else from ``path``."""
    if url is None:
        rows = bench.summary(bench.read(path))
        where = str(path)
    else:
        try:
            response = httpx.get(f"{url.rstrip('/')}/benchmark/summary", timeout=30)
        except httpx.TransportError as error:
            raise Unreachable(f"cannot reach {url}: {error or type(error).__name__}") from None
        if response.status_code != 200:
            raise BenchError(f"{url}/benchmark/summary answered {_message(response)}")
        body = response.json()
        rows, where = body["data"], f"{url} ({body.get('path')})"
    if not rows:
        print(f"no benchmark records in {where}")
        return 0
    print(bench.summary_table(rows))
    print(f"{sum(r['runs'] for r in rows)} run(s) from {where}")
    return 0


# -- the command --------------------------------------------------------------------------------


def options(args: argparse.Namespace, settings: Settings) -> Options:
    out = Path(args.out) if args.out else bench.path_of(settings.bench_jsonl)
    eval_file = Path(args.eval) if args.eval else None
    if args.update_registry and eval_file is None:
        raise BenchError("--update-registry needs --eval FILE")
    return Options(
        url=args.url.rstrip("/") if args.url else None,
        models=list(args.bench_models or []),
        task=args.task,
        num_prompts=args.num_prompts,
        concurrency=args.concurrency,
        max_seconds=args.max_seconds,
        max_tokens=args.max_tokens,
        timeout_s=args.timeout,
        out=out,
        eval_file=eval_file,
        eval_name=args.eval_name or (eval_name(eval_file) if eval_file else None),
        match=args.match,
        update_registry=args.update_registry,
        progress=not args.no_progress,
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    opts = options(args, settings)
    if args.summary:
        return print_summary(opts.url, opts.out)
    if opts.eval_file is not None:
        read_eval(opts.eval_file)  # a bad file fails before any load
    if opts.url is not None:
        return asyncio.run(bench_url(opts.url, opts))
    with local_server(settings) as url:
        return asyncio.run(bench_url(url, opts))
