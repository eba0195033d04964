"""Benchmark records: the metrics of one model run, the JSONL file they are appended to, and
what is read back from it (`summary`, `latest_throughput`).

Policy:

- One JSON line per model run, appended to one file (the ``bench_jsonl`` setting; default
  ``bench.jsonl`` in the host's state directory, beside ``control.db``). ``hfskills bench``
  (``source: "cli"``) and the host's automatic runs (``source: "auto"``, autobench.py) share
  it. A line is written with one ``write`` on a file opened for appending, so concurrent
  writers never interleave within a line; unreadable lines are skipped when reading.
- Metric names are ``vllm bench serve``'s (``vllm/benchmarks/serve.py``): ``completed``,
  ``failed``, ``duration``, ``total_input_tokens``, ``total_output_tokens``,
  ``request_throughput``, ``output_throughput``, ``total_token_throughput``, and for each of
  ``ttft``, ``tpot``, ``itl`` and ``e2el``: ``mean_*_ms``, ``median_*_ms``, ``std_*_ms`` and
  ``p50_*_ms``, ``p95_*_ms``, ``p99_*_ms`` (numpy's linear percentiles, as vLLM). TPOT is a
  request's time after its first token over its other tokens; ITL every gap between two
  streamed chunks. Metrics that do not apply (TTFT of an embedding) are null.
- ``tokens_per_s`` is the aggregate rate the costs use (``latest_throughput``,
  host/control/costs.py): ``total_token_throughput``, prompt and generated tokens per second
  of the whole run, as live traffic counts a call's tokens (an embedding's are its prompt's).
  ``output_throughput`` is generated tokens per second alone.
- Reading is bounded: only the file's last `MAX_READ_BYTES` are read, so a file that grows
  for months never slows ``GET /benchmark/summary``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .db import state_dir

#: The latency metrics, in vLLM's names (``{mean,median,std,pNN}_{name}_ms``).
LATENCIES = ("ttft", "tpot", "itl", "e2el")
PERCENTILES = (50, 95, 99)
#: How much of the end of the JSONL file a reader looks at.
MAX_READ_BYTES = 32 * 2**20
#: Distinct error messages kept in a record.
MAX_ERRORS = 5
#: The small fixed prompt set of automatic runs, and the default prompts of ``hfskills bench``.
PROMPTS = (
    "Explain in one sentence why the sky is blue.",
    "Write a short poem about a lighthouse keeper.",
    "List three uses of a paper clip.",
    "Summarise the plot of a detective story in two sentences.",
    "What is the capital of France, and what river runs through it?",
    "Give a friendly greeting to a new colleague.",
    "Describe the smell of rain on a summer evening.",
    "Translate 'good morning' into Spanish and German.",
)
#: The metrics ``GET /benchmark/summary`` aggregates over runs (mean and p95 of each).
SUMMARY_METRICS = (
    "tokens_per_s",
    "output_throughput",
    "request_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "median_e2el_ms",
    "p99_e2el_ms",
)


def default_path() -> Path:
    """``bench.jsonl`` in the host's state directory (``$XDG_STATE_HOME/hfskills``)."""
    return state_dir() / "bench.jsonl"


def path_of(configured: str | os.PathLike[str] | None) -> Path:
    """The ``bench_jsonl`` setting's file, or the default."""
    return Path(configured).expanduser() if configured else default_path()


def now() -> str:
    """A record's timestamp: UTC, ISO 8601, to the millisecond."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


@dataclass
class Sample:
    """One request's measurements (seconds). ``ttft`` and ``itl`` only for streams."""

    ok: bool
    latency: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft: float | None = None
    itl: list[float] = field(default_factory=list)
    error: str | None = None


def _stats(name: str, values_s: Sequence[float]) -> dict[str, float | None]:
    keys = [f"mean_{name}_ms", f"median_{name}_ms", f"std_{name}_ms"]
    keys += [f"p{p}_{name}_ms" for p in PERCENTILES]
    if not values_s:
        return dict.fromkeys(keys, None)
    ms = np.asarray(values_s, dtype=float) * 1000
    values = [float(np.mean(ms)), float(np.median(ms)), float(np.std(ms))]
    values += [float(np.percentile(ms, p)) for p in PERCENTILES]
    return {k: round(v, 3) for k, v in zip(keys, values, strict=True)}


def metrics(samples: Sequence[Sample], duration: float) -> dict[str, Any]:
    """vLLM's serving metrics from the requests of one run that took ``duration`` seconds."""
    done = [s for s in samples if s.ok]
    failed = [s for s in samples if not s.ok]
    total_in = sum(s.prompt_tokens for s in done)
    total_out = sum(s.output_tokens for s in done)
    span = duration if duration > 0 else math.inf
    out: dict[str, Any] = {
        "duration": round(duration, 4),
        "completed": len(done),
        "failed": len(failed),
        "errors": list(dict.fromkeys(s.error or "error" for s in failed))[:MAX_ERRORS],
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": round(len(done) / span, 4),
        "output_throughput": round(total_out / span, 4),
        "total_token_throughput": round((total_in + total_out) / span, 4),
    }
    out["tokens_per_s"] = out["total_token_throughput"]
    streamed = [s for s in done if s.ttft is not None]
    tpot = [
        (s.latency - s.ttft) / (s.output_tokens - 1)
        for s in streamed
        if s.ttft is not None and s.output_tokens > 1
    ]
    out.update(_stats("ttft", [s.ttft for s in streamed if s.ttft is not None]))
    out.update(_stats("tpot", tpot))
    out.update(_stats("itl", [gap for s in streamed for gap in s.itl]))
    out.update(_stats("e2el", [s.latency for s in done]))
    return out


# -- the file -----------------------------------------------------------------------------------


def append(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a JSON line (one ``write`` call; the folder is made if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def read(path: Path, max_bytes: int = MAX_READ_BYTES) -> list[dict[str, Any]]:
    """The records in the last ``max_bytes`` of the file, oldest first ([] when it is absent);
    a line that is not a JSON object (a partial first line, a hand edit) is skipped."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            raw = f.read()
    except FileNotFoundError:
        return []
    records = []
    for line in raw.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("model"), str):
            records.append(item)
    return records


def latest_throughput(path: Path) -> dict[tuple[str, str], float]:
    """(model, hardware) -> the aggregate tokens/s of its newest run with answers (for costs:
    ``cost_per_1k_tokens = hardware_hourly_usd / (tokens_per_s * 3600 / 1000)``)."""
    latest: dict[tuple[str, str], tuple[str, float]] = {}
    for record in read(path):
        tps, hardware = record.get("tokens_per_s"), record.get("hardware")
        if not isinstance(tps, int | float) or tps <= 0 or not isinstance(hardware, str):
            continue
        key, stamp = (record["model"], hardware), str(record.get("timestamp", ""))
        if key not in latest or stamp >= latest[key][0]:
            latest[key] = (stamp, float(tps))
    return {key: tps for key, (_, tps) in latest.items()}


# -- the summary --------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _aggregate(values: Iterable[Any]) -> dict[str, float | None]:
    numbers = [v for v in (_number(x) for x in values) if v is not None]
    if not numbers:
        return {"mean": None, "p95": None}
    return {
        "mean": round(float(np.mean(numbers)), 3),
        "p95": round(float(np.percentile(numbers, 95)), 3),
    }


def summary(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, version, hardware): runs, their sources, the last run's time, mean and p95
    over runs of `SUMMARY_METRICS`, requests answered and failed, the newest quality scores."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for record in records:
        key = (record["model"], str(record.get("version")), str(record.get("hardware")))
        groups.setdefault(key, []).append(record)
    out = []
    for (model, _, _), runs in sorted(groups.items()):
        runs.sort(key=lambda r: str(r.get("timestamp", "")))
        last = runs[-1]
        quality: dict[str, float] = {}
        for run in runs:  # the newest score of each name
            if isinstance(run.get("quality"), dict):
                quality.update(run["quality"])
        sources: dict[str, int] = {}
        for run in runs:
            source = str(run.get("source", "cli"))
            sources[source] = sources.get(source, 0) + 1
        row: dict[str, Any] = {
            "model": model,
            "version": last.get("version"),
            "hardware": last.get("hardware"),
            "task": last.get("task"),
            "runs": len(runs),
            "sources": sources,
            "last_run": last.get("timestamp"),
            "completed": sum(int(_number(r.get("completed")) or 0) for r in runs),
            "failed": sum(int(_number(r.get("failed")) or 0) for r in runs),
            "peak_memory_bytes": max(
                (int(v) for r in runs if (v := _number(r.get("peak_memory_bytes"))) is not None),
                default=None,
            ),
            "quality": quality,
        }
        for name in SUMMARY_METRICS:
            row[name] = _aggregate(r.get(name) for r in runs)
        out.append(row)
    return out


# -- tables -------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    number = _number(value)
    if number is None:
        return "-" if value is None else str(value)
    return f"{number:.{digits}f}"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """A plain text table: columns as wide as their widest cell, numbers right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            numeric = cell[:1].isdigit() or cell == "-"
            parts.append(cell.rjust(widths[i]) if numeric and i else cell.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _quality(value: Any) -> str:
    if not isinstance(value, dict) or not value:
        return "-"
    return ", ".join(f"{k}={_fmt(v, 3)}" for k, v in sorted(value.items()))


RUN_HEADER = (
    "model", "version", "hardware", "task", "ok", "failed", "req/s", "tok/s", "out tok/s",
    "TTFT p50", "TTFT p99", "TPOT p50", "ITL p99", "e2e p50", "e2e p99", "peak MiB", "quality",
)  # fmt: skip


def runs_table(records: Sequence[dict[str, Any]]) -> str:
    """The table ``hfskills bench`` prints after its runs (latencies in ms)."""
    rows = []
    for r in records:
        peak = _number(r.get("peak_memory_bytes"))
        rows.append(
            [
                r["model"],
                str(r.get("version") or "-"),
                str(r.get("hardware") or "-"),
                str(r.get("task") or "-"),
                str(r.get("completed", 0)),
                str(r.get("failed", 0)),
                _fmt(r.get("request_throughput"), 2),
                _fmt(r.get("tokens_per_s"), 1),
                _fmt(r.get("output_throughput"), 1),
                _fmt(r.get("median_ttft_ms")),
                _fmt(r.get("p99_ttft_ms")),
                _fmt(r.get("median_tpot_ms")),
                _fmt(r.get("p99_itl_ms")),
                _fmt(r.get("median_e2el_ms")),
                _fmt(r.get("p99_e2el_ms")),
                _fmt(None if peak is None else peak / 2**20, 1),
                _quality(r.get("quality")),
            ]
        )
    return table(rows, RUN_HEADER)


SUMMARY_HEADER = (
    "model", "version", "hardware", "runs", "tokens/s", "out tok/s", "TTFT p50", "TTFT p99",
    "e2e p50", "e2e p99", "req/s", "errors", "quality", "feedback", "$/1k tok", "last run",
)  # fmt: skip


def _feedback(value: Any) -> str:
    if not isinstance(value, dict) or not value.get("count"):
        return "-"
    mean = value.get("mean_score")
    return f"{_fmt(mean, 2)} ({value['count']})" if mean is not None else f"({value['count']})"


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison table of ``hfskills bench --summary``: per model, version and hardware,
    the mean over runs of each metric (latencies in ms), failed requests, quality; from a
    server also its users' feedback (mean score, count) and cost per 1000 tokens."""

    def mean(row: dict[str, Any], name: str) -> Any:
        value = row.get(name)
        return value.get("mean") if isinstance(value, dict) else None

    body = [
        [
            row["model"],
            str(row.get("version") or "-"),
            str(row.get("hardware") or "-"),
            str(row.get("runs", 0)),
            _fmt(mean(row, "tokens_per_s")),
            _fmt(mean(row, "output_throughput")),
            _fmt(mean(row, "median_ttft_ms")),
            _fmt(mean(row, "p99_ttft_ms")),
            _fmt(mean(row, "median_e2el_ms")),
            _fmt(mean(row, "p99_e2el_ms")),
            _fmt(mean(row, "request_throughput"), 2),
            str(row.get("failed", 0)),
            _quality(row.get("quality")),
            _feedback(row.get("feedback")),
            _fmt(row.get("cost_per_1k_tokens"), 6),
            str(row.get("last_run") or "-")[:19],
        ]
        for row in rows
    ]
    return table(body, SUMMARY_HEADER)
