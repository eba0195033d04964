"""Routing's cost in-process: selections per second and per-selection latency, routed vs direct.

One `Host` (the embedded default catalog, a SQLite control plane in a temporary directory; no
model is loaded) and, in one invocation, these sides, each ``--requests`` selections:
  direct         what a request naming a model pays: the router's lookup (a miss) and
                 `ModelLoader.resolve` (catalog lookup, the registry's gate)
  routed-anon    a route of two weighted targets, anonymous: router lookup, the request's own
                 draw, the candidates (health and gate checks), then `resolve` of the target
  routed-user    the same for a known user: the blake2b stable hash of route and user
  canary-chain   a 95/5 canary route with a two-model fallback chain, known users
  auto           model "auto": the balanced strategy's ranking of the served models for the
                 task (scores computed per request), then the candidates and `resolve`
Selections per second come from a timed loop; p50/p99 from timing each selection alone
(perf_counter_ns, its own ~0.1 µs included). Targets: >= 10 000 selections/s routed, routing
adds < 1 ms p99. Example: scripts/bench_routing.py --requests 200000
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import bench_common as bc

from hfskills.host.config import load_settings
from hfskills.host.protocol.routes import RouteBody
from hfskills.host.state import Host

USERS = 10_000


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


def main() -> int:
    p = bc.parser("bench_routing", __doc__, requests=200_000, duration=0)
    args = p.parse_args()
    n = 20_000 if args.quick else args.requests
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
    bc.write_json(
        args.out,
        {
            "machine": bc.machine(),
            "selections": n,
            "sides": results,
            "ratio_routed_vs_direct": {
                k: round(base["selections_per_s"] / r["selections_per_s"], 3)
                for k, r in results.items()
            },
            "targets": targets,
        },
    )
    return 0 if all(t["met"] for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
