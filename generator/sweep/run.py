# Orchestrates the coverage sweep: enumerates transformers' model_types, classifies them, hands
# the served ones to worker subprocesses (with a per-type timeout that kills and replaces a
# stuck worker), and writes the table, the JSON results, docs/coverage.md and verified skills.
"""``python -m hfskills.generator.sweep`` / ``scripts/coverage``: the coverage sweep."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfskills.skillset.runtime.errors import GeneratorError

from . import CANONICAL, REPO, record_reason

#: A fixed, diverse sample for CI: one or more types per family.
SAMPLE = ("bert", "llama", "t5", "vit", "whisper", "wav2vec2", "clip", "detr")
DOCS = REPO / "docs" / "coverage.md"
DEFAULT_OUT = Path("bench-results") / "coverage.json"
RECYCLE_AFTER = 40  # types per worker before it is replaced (bounds memory growth)
MAX_RSS = int(float(os.environ.get("HFSKILLS_SWEEP_MAX_GIB", "4")) * 2**30)  # per worker
STATUSES = ("verified", "failed", "unsupported")


def all_model_types() -> list[str]:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return sorted(CONFIG_MAPPING_NAMES)


def classify_all(types: list[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(types to verify, records of types with no served task)."""
    from hfskills.generator.taxonomy import classify

    served, unsupported = [], {}
    for model_type in types:
        try:
            classification = classify(model_type)
        except GeneratorError as exc:
            unsupported[model_type] = {
                "model_type": model_type,
                "family": "",
                "tasks": [],
                "status": "unsupported",
                "stage": "classify",
                "reason": exc.message,
            }
            continue
        served.append(model_type)
        del classification
    return served, unsupported


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------


@dataclass
class Worker:
    """One worker subprocess and the thread that reads its protocol lines into a queue."""

    log: Path
    process: subprocess.Popen[str] = field(init=False)
    lines: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)
    handled: int = 0

    def __post_init__(self) -> None:
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.setdefault("OMP_NUM_THREADS", "1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hfskills.generator.sweep.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("a"),
            text=True,
            env=env,
            start_new_session=True,  # its own process group: a kill takes its children too
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.lines.put(json.loads(line))
            except json.JSONDecodeError:
                continue
        self.lines.put(None)  # EOF: the worker exited

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()

    def close(self) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()

    def rss(self) -> int:
        """Resident memory of the worker in bytes (0 if it is gone)."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stderr_tail(self) -> str:
        try:
            lines = [
                line.strip()
                for line in self.log.read_text(errors="replace").splitlines()
                if line.strip()
            ]
        except OSError:
            return ""
        return lines[-1][:200] if lines else ""


def _verify_one(
    slot: Worker | None, model_type: str, root: Path, logs: Path, timeout: float
) -> tuple[Worker | None, dict[str, Any]]:
    """Send one type to ``slot`` (starting a worker if needed); return (worker, record)."""
    started = time.perf_counter()
    if slot is None:
        slot = Worker(logs / f"worker-{model_type}.log")
    stage = "start"
    deadline = started + timeout
    try:
        slot.send({"model_type": model_type, "root": str(root / model_type)})
    except (BrokenPipeError, OSError):
        slot.kill()
        slot = Worker(logs / f"worker-{model_type}.log")
        slot.send({"model_type": model_type, "root": str(root / model_type)})
    while True:
        remaining = deadline - time.perf_counter()
        try:
            message = slot.lines.get(timeout=min(max(remaining, 0.01), 1.0))
        except queue.Empty:
            message = "late" if remaining <= 1.0 else "wait"
        if message == "wait":
            if slot.rss() > MAX_RSS:
                slot.kill()
                reason = f"memory: the worker passed {MAX_RSS / 2**30:.0f} GiB and was killed"
                return None, _failed(model_type, stage, reason, started)
            continue
        if message == "late":
            slot.kill()
            reason = f"timeout: no result within {timeout:.0f} s (the worker was killed)"
            return None, _failed(model_type, stage, reason, started)
        if message is None:
            code = slot.process.wait()
            tail = slot.stderr_tail()
            reason = f"crash: the worker exited with code {code}" + (f" ({tail})" if tail else "")
            return None, _failed(model_type, stage, reason, started)
        if message.get("event") == "stage":
            stage = message["stage"]
        elif message.get("event") == "result":
            message.pop("event")
            slot.handled += 1
            if slot.handled >= RECYCLE_AFTER:
                slot.close()
                slot = None
            return slot, message


def _failed(model_type: str, stage: str, reason: str, started: float) -> dict[str, Any]:
    from hfskills.generator.taxonomy import classify

    classification = classify(model_type)
    return {
        "model_type": model_type,
        "family": classification.family,
        "tasks": [plan.name for plan in classification.tasks],
        "status": "failed",
        "stage": stage,
        "reason": reason,
        "seconds": round(time.perf_counter() - started, 2),
    }


def sweep(
    types: list[str],
    *,
    jobs: int,
    timeout: float,
    progress: bool = True,
    stream: Path | None = None,
) -> list[dict[str, Any]]:
    """Verify ``types`` in ``jobs`` worker subprocesses; return one record per type.

    With ``stream``, each record is also appended to that JSON-lines file as it arrives.
    """
    from tqdm import tqdm

    pending: queue.Queue[str] = queue.Queue()
    for model_type in types:
        pending.put(model_type)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    counts: Counter[str] = Counter()
    bar = tqdm(
        total=len(types), desc="coverage", unit="type", file=sys.stderr, disable=not progress
    )
    with tempfile.TemporaryDirectory(prefix="hfskills-coverage-") as scratch:
        root, logs = Path(scratch) / "work", Path(scratch) / "logs"
        logs.mkdir(parents=True)

        def run_slot() -> None:
            worker: Worker | None = None
            while True:
                try:
                    model_type = pending.get_nowait()
                except queue.Empty:
                    break
                worker, record = _verify_one(worker, model_type, root, logs, timeout)
                with lock:
                    results.append(record)
                    if stream is not None:
                        with stream.open("a") as f:
                            f.write(json.dumps(record) + "\n")
                    counts[record["status"]] += 1
                    bar.set_postfix(
                        verified=counts["verified"], failed=counts["failed"], refresh=False
                    )
                    bar.update(1)
            if worker is not None:
                worker.close()

        threads = [threading.Thread(target=run_slot) for _ in range(max(1, jobs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    bar.close()
    return results


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def summary(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Counts per family (and "all"): verified, failed, unsupported, total."""
    table: dict[str, Counter[str]] = {}
    for record in records:
        for key in (record["family"] or "(no served task)", "all"):
            table.setdefault(key, Counter())[record["status"]] += 1
    return {
        family: {**{s: counter[s] for s in STATUSES}, "total": sum(counter.values())}
        for family, counter in sorted(table.items(), key=lambda kv: (kv[0] == "all", kv[0]))
    }


def print_table(records: list[dict[str, Any]], out: Any = sys.stdout) -> None:
    rows = [r for r in records if r["status"] != "unsupported"]
    widths = (max([len(r["model_type"]) for r in rows] + [10]), 22)
    print(f"{'model_type':{widths[0]}}  {'family':{widths[1]}}  status    stage / reason", file=out)
    for r in sorted(rows, key=lambda r: r["model_type"]):
        tasks = ",".join(r["tasks"])
        line = f"{r['model_type']:{widths[0]}}  {r['family']:{widths[1]}}  {r['status']:8}  "
        line += record_reason(r) if r["status"] == "failed" else tasks
        print(line, file=out)
    unsupported = sum(r["status"] == "unsupported" for r in records)
    counts = summary(records)["all"] if records else {}
    print(
        f"\n{counts.get('verified', 0)} verified, {counts.get('failed', 0)} failed, "
        f"{unsupported} with no served task, of {len(records)} model_types",
        file=out,
    )


def report(records: list[dict[str, Any]], wall: float, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers

    return {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_seconds": round(wall, 1),
        "jobs": args.jobs,
        "timeout_seconds": args.timeout,
        "cpus": os.cpu_count(),
        "counts": summary(records),
        "results": sorted(records, key=lambda r: r["model_type"]),
    }


def merge(previous: dict[str, Any] | None, current: dict[str, Any], full: bool) -> dict[str, Any]:
    """A partial run (``--types``) updates its types in the previous full report."""
    if full or previous is None:
        return current
    by_type = {r["model_type"]: r for r in previous["results"]}
    by_type.update({r["model_type"]: r for r in current["results"]})
    merged = dict(previous)
    merged["results"] = sorted(by_type.values(), key=lambda r: r["model_type"])
    merged["counts"] = summary(merged["results"])
    merged["transformers"] = current["transformers"]
    merged["updated"] = current["date"]
    return merged


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_docs(data: dict[str, Any], path: Path = DOCS) -> None:
    results = data["results"]
    served = [r for r in results if r["status"] != "unsupported"]
    unsupported = sorted(r["model_type"] for r in results if r["status"] == "unsupported")
    counts = data["counts"]
    total = counts["all"]
    minutes = data["wall_seconds"] / 60
    lines = [
        "# Coverage: every model_type, verified or explained",
        "",
        "<!-- Generated by `scripts/coverage --write-docs`; do not edit by hand. -->",
        "",
        f"transformers {data['transformers']}, torch {data['torch']}; the sweep ran on "
        f"{data['date']} in {data['wall_seconds']:.0f} s ({minutes:.1f} min) with "
        f"{data['jobs']} worker(s) on {data['cpus']} CPU cores, {data['timeout_seconds']:.0f} s "
        "per type at most"
        + (f" (types re-run since: {data['updated']})" if data.get("updated") else "")
        + ".",
        "",
        f"**{total['verified']} of {total['verified'] + total['failed']} model_types with a "
        f"served task verified** ({total['failed']} failed, each with its reason below); "
        f"{total['unsupported']} of transformers' {total['total']} model_types map to no task "
        "hfskills serves.",
        "",
        "For each model_type the sweep (`generator/sweep/`) builds a tiny random-weight "
        "checkpoint offline (one generic shrinking of `AutoConfig.for_model`, with per-type "
        "exceptions in `generator/sweep/tiny.py`'s `EXCEPTIONS`), builds its tokenizer and "
        "processors offline, generates the skill (`generate-skill --model-type`), loads it with "
        "`init_cpu` exactly as from the hub, and compares every task the skill claims with "
        "transformers run directly (`generator/sweep/references.py`: allclose at 1e-5 for "
        "embeddings and scores, exact token ids for greedy generation, identical labels, spans, "
        "boxes and texts). Only verified skills are committed to `skillset/`.",
        "",
        "Stages: classify, config, processor, model (build the checkpoint), generate (render "
        "and import the skill), load (`init_cpu`), verify:&lt;task&gt;.",
        "",
        "## Re-run",
        "",
        "```bash",
        "scripts/coverage                        # every model_type: table on stdout, "
        "bench-results/coverage.json",
        "scripts/coverage --sample               # the fixed CI sample",
        "scripts/coverage --types bert,llama     # some types",
        "scripts/coverage --write-docs           # also update this page and the package's "
        "coverage.json",
        "scripts/coverage --commit skillset      # write the skill of every verified type",
        "```",
        "",
        "## Counts per family",
        "",
        "| family | verified | failed | total |",
        "| --- | ---: | ---: | ---: |",
    ]
    for family, c in counts.items():
        if family in ("all", "(no served task)"):
            continue
        lines.append(f"| {family} | {c['verified']} | {c['failed']} | {c['total']} |")
    lines.append(
        f"| **all** | **{total['verified']}** | **{total['failed']}** | "
        f"**{total['verified'] + total['failed']}** |"
    )
    failed = [r for r in served if r["status"] == "failed"]
    by_cause: dict[str, list[str]] = {}
    for r in failed:
        by_cause.setdefault(cause(r), []).append(r["model_type"])
    if by_cause:
        lines += ["", "## Failures by cause", "", "| cause | types | model_types |"]
        lines.append("| --- | ---: | --- |")
        for text, names in sorted(by_cause.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"| {_cell(text)} | {len(names)} | {', '.join(names)} |")
    lines += [
        "",
        "## Every model_type with a served task",
        "",
        "| model_type | family | tasks | status | stage | reason |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in served:
        lines.append(
            f"| {r['model_type']} | {r['family']} | {', '.join(r['tasks'])} | {r['status']} | "
            f"{r['stage']} | {_cell(r['reason'])} |"
        )
    lines += [
        "",
        f"## No served task ({len(unsupported)})",
        "",
        "These map to none of the tasks hfskills serves (most are sub-model configs with no head "
        "of their own): " + ", ".join(unsupported) + ".",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


#: Known causes of failure, (stage prefix, pattern in the reason, explanation), first match wins.
CAUSES: tuple[tuple[str, str, str], ...] = (
    (
        "",
        r"needs (\S+), which is not installed",
        "needs an optional library hfskills does not "
        "install (torchvision, torchaudio, timm, natten, ...)",
    ),
    ("processor", r"video_processor", "its processor needs a video processor (torchvision)"),
    (
        "processor",
        r"",
        "its processor cannot be built offline from defaults (special tokens, "
        "sub-tokenizers, audio tokenizers)",
    ),
    (
        "verify:image_to_text",
        r"has no attribute tokenizer",
        "transformers maps no processor for "
        "it: AutoProcessor gives a bare tokenizer, and image_to_text needs image processor + "
        "tokenizer",
    ),
    (
        "verify:image_to_text",
        r"",
        "a chat VLM: its processor or model needs a text prompt with "
        "image tokens, and image_to_text sends images alone (captioning)",
    ),
    (
        "verify:automatic_speech_recognition",
        r"Unable to convert output",
        "the seq2seq ASR handler batches clips of different lengths without padding",
    ),
    (
        "verify:automatic_speech_recognition",
        r"audio tokens do not match",
        "an audio LLM: it needs a prompt with audio tokens, and the ASR handler sends audio alone",
    ),
    (
        "verify:image_embedding",
        r"No pooled output",
        "the skill claims pooled image embeddings; "
        "transformers' image-feature-extraction pipeline gets no pooled output for it",
    ),
    (
        "verify",
        r"max abs difference|!=",
        "the skill's output differs from transformers' (scores beyond the tolerance, or other "
        "tokens or labels): a parity failure to investigate",
    ),
    (
        "config",
        r"",
        "the generic tiny config breaks one of its config's validation rules, or "
        "transformers' own default does",
    ),
    ("model", r"parameters after shrinking", "still too large after the generic shrinking"),
    ("model", r"", "the tiny config builds no model (a size rule the shrinking breaks)"),
    ("", r"timeout|crash|memory", "a timeout, crash or memory limit in its worker"),
    ("generate", r"", "the generator refuses it"),
)


def cause(record: dict[str, Any]) -> str:
    """The known cause of a failure (CAUSES), or its stage's generic one."""
    import re

    for stage, pattern, text in CAUSES:
        if record["stage"].startswith(stage) and re.search(pattern, record["reason"]):
            return text
    return f"{record['stage'].split(':')[0]}: another error in transformers or the skill"


def commit(records: list[dict[str, Any]], directory: Path) -> int:
    """Render and write the skill of every verified type into ``directory``."""
    from hfskills.generator.metadata import from_model_type
    from hfskills.generator.render import render, write

    written = 0
    for record in records:
        if record["status"] == "verified":
            write(render(from_model_type(record["model_type"])), directory, force=True)
            written += 1
    return written


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/coverage",
        description="Verify a generated skill for every transformers model_type on a tiny "
        "random checkpoint against transformers itself; print a table, write JSON.",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--types", help="comma-separated model_types (default: all)")
    which.add_argument("--sample", action="store_true", help=f"the CI sample: {','.join(SAMPLE)}")
    p.add_argument("--limit", type=int, help="only the first N model_types (after --types)")
    p.add_argument("--jobs", type=int, default=2, help="worker subprocesses (default 2)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per type (default 180)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON (default {DEFAULT_OUT})")
    p.add_argument(
        "--write-docs",
        action="store_true",
        help="write docs/coverage.md and the package's coverage.json (a partial run updates "
        "its types in them)",
    )
    p.add_argument(
        "--commit",
        nargs="?",
        const=REPO / "skillset",
        type=Path,
        metavar="DIR",
        help="write the skill of every verified type into DIR (default: the committed skillset)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    start = time.perf_counter()
    known = all_model_types()
    if args.sample:
        types = list(SAMPLE)
    elif args.types:
        types = [t.strip() for t in args.types.split(",") if t.strip()]
        unknown = [t for t in types if t not in known]
        if unknown:
            print(f"coverage: error: unknown model_type(s): {unknown}", file=sys.stderr)
            return 2
    else:
        types = known
    if args.limit is not None:
        types = types[: args.limit]
    served, unsupported = classify_all(types)
    records = list(unsupported.values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stream = args.out.with_suffix(".partial.jsonl")  # records as they come, while it runs
    stream.unlink(missing_ok=True)
    records += sweep(
        served,
        jobs=args.jobs,
        timeout=args.timeout,
        progress=not args.no_progress,
        stream=stream,
    )
    wall = time.perf_counter() - start
    data = report(records, wall, args)
    print_table(records)
    print(f"wall time {wall:.0f} s", file=sys.stderr)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    stream.unlink(missing_ok=True)
    print(f"wrote {args.out}", file=sys.stderr)
    if args.write_docs:
        previous = json.loads(CANONICAL.read_text()) if CANONICAL.is_file() else None
        canonical = merge(previous, data, full=types == known)
        CANONICAL.write_text(json.dumps(canonical, indent=1) + "\n")
        write_docs(canonical)
        print(f"wrote {CANONICAL} and {DOCS}", file=sys.stderr)
    if args.commit is not None:
        n = commit(records, args.commit)
        print(f"wrote {n} verified skill(s) into {args.commit}", file=sys.stderr)
    return 0
