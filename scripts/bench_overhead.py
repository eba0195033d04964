"""Request-path overhead: a skill that does nothing, through hfskills vs a bare Starlette route.

Sides, one after another, each under the same client load (64 concurrent clients, then 1):
  host          `hfskills serve` with scripts/bench_skills/hf_echo.py, POST /models/echo
                (the Inference API route, text_classification), default log level (info: one
                JSON log line per request)
  host-quiet    the same with --log-level warning (no per-request log line)
  host-nowait   the same with HFSKILLS_BATCH_WAIT_MS=0 (the batcher does not wait for company)
  plain         a bare Starlette app on uvicorn, one JSON POST route doing the same echo
  plain-thread  the same route, the echo run in a thread pool (as the host runs handlers)

Added latency = host p50 - plain p50. Target: < 1 ms at 64 clients. The load generator (raw
keep-alive HTTP/1.1 on asyncio, one process) shares the CPU with the server; its cost is in
every side alike.
Example: scripts/bench_overhead.py --quick
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import bench_common as bc

SKILLS = Path(__file__).resolve().parent / "bench_skills"
TARGET_MS = 1.0
#: the dynamic batcher's wait for company, off (an unknown HFSKILLS_* variable is ignored by a
#: host without batching)
NO_WAIT = {"HFSKILLS_BATCH_WAIT_MS": "0"}


def plain_app(thread_hop: bool) -> Any:
    """The floor: parse the JSON body, echo each input as a label, write JSON."""
    from concurrent.futures import ThreadPoolExecutor

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    pool = ThreadPoolExecutor(4)

    def run(batch: list[Any]) -> list[Any]:
        return [[{"label": str(text), "score": 1.0}] for text in batch]

    async def echo(request: Request) -> JSONResponse:
        inputs = (await request.json())["inputs"]
        batch = inputs if isinstance(inputs, list) else [inputs]
        if thread_hop:
            return JSONResponse(await asyncio.get_running_loop().run_in_executor(pool, run, batch))
        return JSONResponse(run(batch))

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/echo", echo, methods=["POST"]), Route("/health", health, methods=["GET"])]
    )


def serve_plain(port: int, thread_hop: bool) -> int:
    import uvicorn

    uvicorn.run(
        plain_app(thread_hop), host=bc.LOCAL, port=port, log_level="warning", access_log=False
    )
    return 0


def plain_command(port: int, thread_hop: bool) -> list[str]:
    cmd = [sys.executable, __file__, "--serve-plain", str(port)]
    return cmd + (["--thread-hop"] if thread_hop else [])


def host_config(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"skills_dirs = [{str(SKILLS)!r}]\n"
        "embedded_default = false\n\n"
        "[[models]]\n"
        'name = "echo"\n'
        'skill = "hf_echo"\n'
        'checkpoint = "none"\n'
        'tasks = ["text_classification"]\n',
        encoding="utf-8",
    )
    return path


async def measure(
    server: bc.Server, path: str, levels: list[tuple[int, int]], duration: float
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with bc.RawPool(server.port, max(c for c, _ in levels)) as pool:

        async def one(i: int) -> float:
            text = f"hello world {i}"
            body = json.dumps({"inputs": text}).encode()
            start = time.perf_counter()
            status, answer = await pool.post(path, body)
            elapsed = time.perf_counter() - start
            if status != 200 or json.loads(answer) != [[{"label": text, "score": 1.0}]]:
                raise RuntimeError(f"HTTP {status}: {answer[:200]!r}")
            return elapsed

        warm = await bc.closed_loop(64, 1000, 60.0, one)  # untimed (the host loads the skill)
        if warm.errors:
            raise RuntimeError(f"warm-up failed: {warm.errors[0]}")
        for concurrency, requests in levels:
            cpu = server.cpu_seconds()
            with bc.CpuMeter() as meter:
                load = await bc.closed_loop(concurrency, requests, duration, one)
            cpu = server.cpu_seconds() - cpu
            out[str(concurrency)] = {
                "requests": len(load.samples),
                "seconds": load.elapsed,
                "req_per_s": len(load.samples) / load.elapsed,
                "p50_ms": bc.percentile(load.samples, 50) * 1000,
                "p99_ms": bc.percentile(load.samples, 99) * 1000,
                "errors": len(load.errors),
                "first_errors": load.errors[:3],
                "stopped_by": load.stopped_by,
                "other_cores": meter.other_cores,
                "own_cores": meter.own_cores,
                "server_cpu_us_per_request": cpu / max(len(load.samples), 1) * 1e6,
            }
    return out


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-plain":  # the plain side's subprocess
        return serve_plain(int(sys.argv[2]), "--thread-hop" in sys.argv)
    p = bc.parser("bench_overhead", __doc__, requests=4000, duration=60.0)
    p.add_argument(
        "--sequential", type=int, default=500, help="requests from 1 client (default 500)"
    )
    args = p.parse_args()
    if args.quick:
        args.requests, args.sequential = min(args.requests, 1500), min(args.sequential, 200)
    levels = [(64, args.requests), (1, args.sequential)]
    config = host_config(bc.RESULTS / "bench_overhead.toml")
    sides = {
        "host": ("hfskills /models/echo (defaults)", "/models/echo", "info", {}),
        "host-quiet": ("hfskills, log level warning", "/models/echo", "warning", {}),
        "host-nowait": ("hfskills, batch_wait_ms=0", "/models/echo", "info", NO_WAIT),
        "plain": ("Starlette route on uvicorn", "/echo", None, {}),
        "plain-thread": ("Starlette route, echo in a thread pool", "/echo", None, {}),
    }
    results: dict[str, Any] = {}
    for side, (title, path, log_level, env) in sides.items():
        if side in args.skip:
            continue
        port = bc.free_port()
        if log_level:
            cmd = bc.hfskills_command(
                "serve", "--config", str(config), "--port", str(port), "--log-level", log_level
            )
        else:
            cmd = plain_command(port, thread_hop=side == "plain-thread")
        if log_level:
            env = {**env, **bc.host_env(args.host_src)}
        server = bc.Server(f"overhead-{side}", cmd, port, env=env)
        with bc.section(title, args.wait_quiet), server as s:
            results[side] = asyncio.run(measure(s, path, levels, args.duration))

    rows = []
    for side, by_level in results.items():
        for level, r in by_level.items():
            rows.append(
                [
                    sides[side][0],
                    level,
                    r["requests"],
                    r["req_per_s"],
                    r["p50_ms"],
                    r["p99_ms"],
                    r["server_cpu_us_per_request"],
                    r["errors"],
                    r["other_cores"],
                ]
            )
    headers = ["side", "clients", "requests", "req/s", "p50 ms", "p99 ms", "server CPU us/req"]
    headers += ["errors", "other load"]
    bc.print_table(headers, rows, "request-path overhead (echo)")

    def get(side: str, level: str, key: str) -> float | None:
        return (results.get(side, {}).get(level) or {}).get(key)

    added: dict[str, float | None] = {}
    others = ("host", "host-quiet", "host-nowait", "plain-thread")
    for side in others:
        for level in ("64", "1"):
            a, b = get(side, level, "p50_ms"), get("plain", level, "p50_ms")
            added[f"{side} - plain, p50 ms, {level} clients"] = (
                None if a is None or b is None else a - b
            )
    ratios = {
        f"{side}/plain req/s, {level} clients": bc.ratio(
            get(side, level, "req_per_s"), get("plain", level, "req_per_s")
        )
        for side in others
        for level in ("64", "1")
    }
    bc.print_table(["added latency", "ms"], [[k, v] for k, v in added.items()], "added p50")
    bc.print_table(["ratio", "value"], [[k, v] for k, v in ratios.items()], "ratios", digits=2)
    targets = [
        bc.check(
            "added p50 latency, host - plain, 64 clients",
            added["host - plain, p50 ms, 64 clients"],
            TARGET_MS,
            unit=" ms",
            at_most=True,
        )
    ]
    bc.write_json(
        args.out,
        {
            "benchmark": "overhead",
            "machine": bc.machine(args.host_src),
            "settings": {"levels": levels, "duration_cap_s": args.duration},
            "results": results,
            "added_p50_ms": added,
            "ratios": ratios,
            "targets": targets,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
