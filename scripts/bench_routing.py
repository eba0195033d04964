"""Routing's cost: selections per second in-process, and the latency it adds through HTTP.

Both sections run in one invocation (``--skip inprocess`` or ``--skip http`` leaves one out).

In-process: one `Host` (the embedded default catalog, a SQLite control plane in a temporary
directory; no model is loaded) and these sides, each ``--requests`` selections:
  direct         what a request naming a model pays: the router's lookup (a miss) and
                 `ModelLoader.resolve` (catalog lookup, the registry's gate)
  routed-anon    a route of two weighted targets, anonymous: router lookup, the request's own
                 draw, the candidates (health and gate checks), then `resolve` of the target
  routed-user    the same for a known user: the blake2b stable hash of route and user
  canary-chain   a 95/5 canary route with a two-model fallback chain, known users
  auto           model "auto": the balanced strategy's ranking of the served models for the
                 task (scores computed per request), then the candidates and `resolve`
Selections per second come from a timed loop; p50/p99 from timing each selection alone
(perf_counter_ns, its own ~0.1 µs included).

HTTP: `hfskills serve` (a subprocess, uvicorn on 127.0.0.1, log level warning, a SQLite
control plane in bench-results/) serving the embedded default's all-MiniLM-L6-v2 under two
names (``minilm`` and ``minilm-b``, one checkpoint, two loaded models), and the same
``POST /v1/embeddings`` request (one fixed sentence) sent ``--http-requests`` times per side,
from one client on a keep-alive connection (sequential: no queueing in the figures), naming:
  direct         the model ``minilm``
  direct-again   the same again: an A/A side, whose difference to direct is the noise floor
                 of the comparison (the machine, not routing)
  route-one      a route with the one target ``minilm``
  route-two      a route of two targets weighted 50/50 (``minilm``, ``minilm-b``), anonymous
  auto           ``auto``: the balanced strategy's choice among the two
The sides are interleaved, one request each per round in a shuffled order, so that a change of
load on the machine meets every side alike; each side's headers (X-HFSkills-Model and
X-HFSkills-Route) are checked before the timed rounds. p50/p95/p99 per side and the difference
to direct, and the median of the paired differences (a side's request minus direct's in the
same round: robust to load that changes during the run); ``--http-duration`` bounds the timed
rounds. ``--checkpoint tiny`` serves a tiny random BERT instead, so the model's own time (and
its variance) is small beside the routing's.

Targets: >= 10 000 selections/s routed in-process; routing adds < 1 ms p99 (in-process: the
selection's p99; HTTP: a side's p99 minus direct's).
Example: scripts/bench_routing.py --requests 200000 --http-requests 3000
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_common as bc

from hfskills.host.config import load_settings
from hfskills.host.protocol.routes import RouteBody
from hfskills.host.state import Host

USERS = 10_000
#: The HTTP sides: the ``model`` each names.
HTTP_SIDES = {
    "direct": "minilm",
    "direct-again": "minilm",
    "route-one": "one",
    "route-two": "two",
    "auto": "auto",
}
SENTENCE = "The committee postponed the vote until the new library opened."


def measure(select: Callable[[int], Any], n: int) -> dict[str, float]:
    """Selections per second over ``n`` calls, then p50/p99 of ``n // 10`` timed one by one."""
    for i in range(min(n, 1000)):  # warm
        select(i)
    start = time.perf_counter()
    for i in range(n):
        select(i)
    rate = n / (time.perf_counter() - start)
    clock, samples = time.perf_counter_ns, []
    for i in range(max(n // 10, 100)):
        t0 = clock()
        select(i)
        samples.append((clock() - t0) / 1000)
    return {
        "selections_per_s": rate,
        "mean_us": 1e6 / rate,
        "p50_us": bc.percentile(samples, 50),
        "p99_us": bc.percentile(samples, 99),
    }


def inprocess(n: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The in-process section: its JSON part and its targets."""
    with tempfile.TemporaryDirectory() as scratch:
        settings = load_settings(database_url=f"sqlite:///{scratch}/control.db")
        host = Host(settings)
        names = list(host.catalog.models)
        model = names[0]
        two = RouteBody.model_validate(
            {"targets": [{"model": model, "weight": 1}, {"model": names[-1], "weight": 1}]}
        )
        canary = RouteBody.model_validate(
            {
                "targets": [{"model": model, "weight": 95}, {"model": names[-1], "weight": 5}],
                "fallbacks": [names[-1], model],
            }
        )
        host.control.routes.put("two", two, "bench")
        host.control.routes.put("canary", canary, "bench")
        router, resolve = host.control.router, host.loader.resolve
        users = [f"user:{i}" for i in range(USERS)]
        draws = [random.random() for _ in range(USERS)]

        def direct(i: int) -> Any:
            plan = router.get(model)  # a miss: the name is a model
            assert plan is None
            return resolve(model)

        def routed(route: str, known: bool) -> Callable[[int], Any]:
            def select(i: int) -> Any:
                plan = router.get(route)
                assert plan is not None
                user = users[i % USERS] if known else None
                target = router.candidates(plan, user, draws[i % USERS])[0]
                return resolve(target)

            return select

        auto = host.control.registry.auto

        def automatic(i: int) -> Any:
            plan = auto.plan(host.catalog.models[model].tasks[0], "balanced")
            assert plan is not None
            return resolve(router.candidates(plan, None, draws[i % USERS])[0])

        sides = {
            "direct": direct,
            "routed-anon": routed("two", False),
            "routed-user": routed("two", True),
            "canary-chain": routed("canary", True),
            "auto": automatic,
        }
        results = {name: measure(select, n) for name, select in sides.items()}
        host.control.close()
        host.executor.shutdown(wait=False)

    base = results["direct"]
    rows = [
        [
            name,
            r["selections_per_s"],
            r["mean_us"],
            r["p50_us"],
            r["p99_us"],
            r["p99_us"] - base["p99_us"],
            base["selections_per_s"] / r["selections_per_s"],
        ]
        for name, r in results.items()
    ]
    bc.print_table(
        ["side", "selections/s", "mean µs", "p50 µs", "p99 µs", "added p99 µs", "cost vs direct"],
        rows,
        title=f"routing selections in-process, {n} per side (models {names})",
        digits=2,
    )
    worst = min(r["selections_per_s"] for k, r in results.items() if k != "direct")
    added_ms = max(r["p99_us"] for r in results.values()) / 1000
    targets = [
        bc.check("routed selections/s", worst, 10_000, unit="/s"),
        bc.check("routing p99 (ms)", added_ms, 1.0, unit=" ms", at_most=True),
    ]
    part = {
        "selections": n,
        "sides": results,
        "ratio_routed_vs_direct": {
            k: round(base["selections_per_s"] / r["selections_per_s"], 3)
            for k, r in results.items()
        },
    }
    return part, targets


def embedding_checkpoint(choice: str | None) -> Path:
    """``--checkpoint``: the embedded default's all-MiniLM-L6-v2 (None), ``tiny`` (a tiny
    random BERT built by the coverage sweep's recipe, in bench-results/), or a folder."""
    if choice is None:
        return bc.minilm_dir()
    if choice != "tiny":
        return Path(choice).resolve()
    from hfskills.generator.sweep.recipes import build_checkpoint

    target = bc.RESULTS / "tiny-bert"
    if not (target / "config.json").is_file():
        build_checkpoint("bert", target, num_labels=3)
    return target


def http_config(path: Path, database: Path, checkpoint: Path) -> Path:
    """The HTTP section's catalog: one checkpoint under two names, and the routes."""
    database.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "embedded_default = false\n"
        f"database_url = {f'sqlite:///{database}'!r}\n\n"
        + "".join(
            f'[[models]]\nname = "{name}"\ncheckpoint = {str(checkpoint)!r}\nskill = "hf_bert"\n'
            'tasks = ["text_embedding"]\n\n'
            for name in ("minilm", "minilm-b")
        )
        + '[[routes]]\nname = "one"\ntargets = [{model = "minilm", weight = 1}]\n\n'
        '[[routes]]\nname = "two"\n'
        'targets = [{model = "minilm", weight = 1}, {model = "minilm-b", weight = 1}]\n',
        encoding="utf-8",
    )
    return path


def check_headers(base: str) -> dict[str, dict[str, str | None]]:
    """One request per side through httpx: 200, and the answering model's headers as the side
    expects them (direct: no route header)."""
    import httpx

    seen: dict[str, dict[str, str | None]] = {}
    with httpx.Client(base_url=bc.local_only(base), timeout=300, trust_env=False) as client:
        for side, model in HTTP_SIDES.items():
            for _ in range(4):  # both arms of route-two get loaded and warm
                r = client.post("/v1/embeddings", json={"model": model, "input": SENTENCE})
                if r.status_code != 200:
                    raise RuntimeError(f"{side}: HTTP {r.status_code}: {r.text[:200]}")
                answered = r.headers.get("x-hfskills-model", "")
                route = r.headers.get("x-hfskills-route")
                expected_route = None if model == HTTP_SIDES["direct"] else model
                if route != expected_route or answered.split("@")[0] not in ("minilm", "minilm-b"):
                    raise RuntimeError(f"{side}: unexpected headers {dict(r.headers)}")
                seen.setdefault(side, {"x-hfskills-model": answered, "x-hfskills-route": route})
    return seen


async def interleaved(port: int, n: int, duration: float, warm: int) -> dict[str, list[float]]:
    """``n`` rounds (bounded by ``duration`` seconds), each one request per side in a shuffled
    order, from one keep-alive connection; seconds per request by side."""
    bodies = {
        side: json.dumps({"model": model, "input": SENTENCE}).encode()
        for side, model in HTTP_SIDES.items()
    }
    samples: dict[str, list[float]] = {side: [] for side in HTTP_SIDES}
    order = list(HTTP_SIDES)
    rng = random.Random(0)
    deadline = float("inf")
    async with bc.RawPool(port, 1) as pool:
        for i in range(warm + n):
            if i == warm:
                deadline = time.perf_counter() + duration
            elif i > warm and time.perf_counter() >= deadline:
                break
            rng.shuffle(order)
            for side in order:
                start = time.perf_counter()
                status, answer = await pool.post("/v1/embeddings", bodies[side])
                elapsed = time.perf_counter() - start
                if status != 200:
                    raise RuntimeError(f"{side}: HTTP {status}: {answer[:200]!r}")
                if i >= warm:
                    samples[side].append(elapsed)
    return samples


def http_added(args: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The HTTP section: its JSON part and its target."""
    n = min(args.http_requests, 300) if args.quick else args.http_requests
    checkpoint = embedding_checkpoint(args.checkpoint)
    label = "all-MiniLM-L6-v2" if args.checkpoint is None else checkpoint.name
    config = http_config(
        bc.RESULTS / "bench_routing.toml", bc.RESULTS / "bench_routing.db", checkpoint
    )
    port = bc.free_port()
    command = bc.hfskills_command(
        "serve", "--config", str(config), "--port", str(port), "--log-level", "warning"
    )
    server = bc.Server("routing-http", command, port, env=bc.host_env(args.host_src))
    title = f"routing through HTTP, {n} requests per side, interleaved"
    with bc.section(title, args.wait_quiet) as meter, server as s:
        headers = check_headers(s.base)
        samples = asyncio.run(interleaved(port, n, args.http_duration, warm=50))
    results: dict[str, dict[str, Any]] = {}
    direct_ms = [v * 1000 for v in samples["direct"]]
    for side, values in samples.items():
        ms = [v * 1000 for v in values]
        # the same round's side minus direct: robust to the machine's load changing
        paired = [a - b for a, b in zip(ms, direct_ms, strict=False)]
        results[side] = {
            "model": HTTP_SIDES[side],
            "requests": len(ms),
            "mean_ms": sum(ms) / len(ms),
            "p50_ms": bc.percentile(ms, 50),
            "p95_ms": bc.percentile(ms, 95),
            "p99_ms": bc.percentile(ms, 99),
            "paired_median_added_ms": bc.percentile(paired, 50),
            "headers": headers[side],
        }
    base = results["direct"]
    for r in results.values():
        for q in ("mean", "p50", "p95", "p99"):
            r[f"added_{q}_ms"] = r[f"{q}_ms"] - base[f"{q}_ms"]
        r["p50_ratio_vs_direct"] = bc.ratio(r["p50_ms"], base["p50_ms"])
    rows = [
        [
            side,
            r["requests"],
            r["p50_ms"],
            r["p95_ms"],
            r["p99_ms"],
            r["added_p50_ms"],
            r["added_p95_ms"],
            r["added_p99_ms"],
            r["paired_median_added_ms"],
            r["p50_ratio_vs_direct"],
        ]
        for side, r in results.items()
    ]
    headers_row = ["side", "requests", "p50 ms", "p95 ms", "p99 ms", "+p50 ms", "+p95 ms"]
    bc.print_table(
        [*headers_row, "+p99 ms", "paired +median ms", "p50 vs direct"],
        rows,
        title=f"{title} (POST /v1/embeddings, 1 client, {label}; +: minus direct)",
        digits=3,
    )
    worst = max(r["added_p99_ms"] for side, r in results.items() if not side.startswith("direct"))
    floor = results["direct-again"]
    print(
        f"A/A noise floor (direct-again - direct): p50 {floor['added_p50_ms']:+.3f} ms, "
        f"p95 {floor['added_p95_ms']:+.3f} ms, p99 {floor['added_p99_ms']:+.3f} ms; other "
        f"processes used {meter.other_cores:.2f} cores"
    )
    targets = [bc.check("routing adds through HTTP, p99 (ms)", worst, 1.0, " ms", at_most=True)]
    part = {
        "checkpoint": str(checkpoint),
        "requests_per_side": n,
        "duration_cap_s": args.http_duration,
        "other_cores": meter.other_cores,
        "sides": results,
    }
    return part, targets


def main() -> int:
    p = bc.parser("bench_routing", __doc__, requests=200_000, duration=0)
    p.add_argument(
        "--http-requests",
        type=int,
        default=2000,
        help="HTTP section: requests per side (default 2000; --quick: 300)",
    )
    p.add_argument(
        "--http-duration",
        type=float,
        default=120.0,
        help="HTTP section: seconds after which no new round starts (default 120)",
    )
    p.add_argument(
        "--checkpoint",
        metavar="DIR|tiny",
        help="HTTP section: the embedding checkpoint (default: the embedded default's "
        "all-MiniLM-L6-v2; tiny: a tiny random BERT, so the model's own time is small)",
    )
    p.set_defaults(wait_quiet=0.0)
    args = p.parse_args()
    n = 20_000 if args.quick else args.requests
    out: dict[str, Any] = {"machine": bc.machine(args.host_src)}
    targets: list[dict[str, Any]] = []
    if "inprocess" not in args.skip:
        part, met = inprocess(n)
        out.update(part)  # top level, as before the HTTP section
        targets += met
    if "http" not in args.skip:
        part, met = http_added(args)
        out["http"] = part
        targets += met
    out["targets"] = targets
    bc.write_json(args.out, out)
    return 0 if all(t["met"] for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
