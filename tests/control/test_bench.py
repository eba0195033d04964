"""The benchmark harness over real HTTP (uvicorn on 127.0.0.1, tiny checkpoints, SQLite):
``hfskills bench`` against a URL and against the local catalog writes JSONL records with vLLM's
metric names and sane numbers; an eval file's quality is recorded and written to the registry;
automatic runs every N client calls append ``source: "auto"`` records (their own calls are not
counted) and feed the costs' throughput; ``GET /benchmark/summary`` and ``--summary``; bad
input (unknown model, bad eval file, unreachable server) is one clear line and its exit code.
Every load is bounded (a few requests of a few tokens)."""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from hfskills.host import cli
from hfskills.host.config import load_settings
from hfskills.host.control import bench
from tests.host.conftest import Server, start

EVERY = 3
MAX_TOKENS = 8
NUM_PROMPTS = 6

TOML = """
[[models]]
name = "gen"
checkpoint = "{generator}"
version = "7"

[[models]]
name = "gen-auto"
checkpoint = "{generator}"

[[models]]
name = "emb"
checkpoint = "{embedder}"

[[models]]
name = "cls"
checkpoint = "{classifier}"
"""

#: vLLM's names (``vllm bench serve --save-result``) every record carries.
VLLM_KEYS = [
    "duration",
    "completed",
    "failed",
    "total_input_tokens",
    "total_output_tokens",
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
] + [
    f"{stat}_{metric}_ms"
    for metric in ("ttft", "tpot", "itl", "e2el")
    for stat in ("mean", "median", "std", "p50", "p95", "p99")
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def config(root: Path, task_checkpoint) -> Path:
    path = root / "hfskills.toml"
    path.write_text(
        TOML.format(
            generator=task_checkpoint("llama", "text_generation"),
            embedder=task_checkpoint("bert", "text_embedding"),
            classifier=task_checkpoint("bert", "text_classification"),
        )
    )
    return path


@pytest.fixture(scope="module")
def server(root: Path, config: Path, fresh_database) -> Any:
    settings = load_settings(
        config,
        embedded_default=False,
        database_url=fresh_database("sqlite"),
        auto_bench_every=EVERY,
        bench_jsonl=root / "server.jsonl",
    )
    server = start(settings)
    yield server
    server.stop()


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["bench", *args])
    out, err = capsys.readouterr()
    return code, out, err


def records(path: Path, **match: Any) -> list[dict[str, Any]]:
    return [r for r in bench.read(path) if all(r.get(k) == v for k, v in match.items())]


def check_metrics(record: dict[str, Any], completed: int) -> None:
    for key in VLLM_KEYS:
        assert key in record, key
    assert record["completed"] == completed and record["failed"] == 0
    assert record["errors"] == []
    assert record["duration"] > 0 and record["request_throughput"] > 0
    assert record["tokens_per_s"] == record["total_token_throughput"] > 0
    for stat in ("mean", "median", "p50", "p95", "p99"):
        assert record[f"{stat}_e2el_ms"] > 0
    assert record["p50_e2el_ms"] <= record["p95_e2el_ms"] <= record["p99_e2el_ms"]
    assert record["hardware"] and record["peak_memory_bytes"] > 0
    datetime.datetime.fromisoformat(record["timestamp"])


def check_generation(record: dict[str, Any], completed: int, tokens: int) -> None:
    check_metrics(record, completed)
    assert record["task"] == "text_generation"
    assert record["total_output_tokens"] == completed * tokens  # ignore_eos: each is full
    assert record["output_throughput"] > 0
    for stat in ("mean", "median", "p50", "p95", "p99"):
        # each request's first token comes before its end, so every percentile is ordered
        assert 0 < record[f"{stat}_ttft_ms"] <= record[f"{stat}_e2el_ms"]
        assert record[f"{stat}_tpot_ms"] > 0 and record[f"{stat}_itl_ms"] >= 0


def test_bench_url_writes_vllm_metrics(server: Server, root: Path, capsys) -> None:
    out = root / "cli.jsonl"
    code, table, _ = run_cli(
        capsys,
        "--url", server.base, "--model", "gen", "--model", "emb", "--num-prompts",
        str(NUM_PROMPTS), "--concurrency", "3", "--max-tokens", str(MAX_TOKENS), "--out",
        str(out), "--no-progress",
    )  # fmt: skip
    assert code == 0
    assert "TTFT p50" in table and f"appended 2 record(s) to {out}" in table
    gen, emb = bench.read(out)
    assert (gen["model"], gen["version"], gen["source"]) == ("gen", "7", "cli")
    assert gen["num_prompts"] == NUM_PROMPTS and gen["max_concurrency"] == 3
    check_generation(gen, NUM_PROMPTS, MAX_TOKENS)
    assert (emb["model"], emb["version"], emb["task"]) == ("emb", "1", "text_embedding")
    check_metrics(emb, NUM_PROMPTS)
    assert emb["total_input_tokens"] > 0 and emb["total_output_tokens"] == 0
    assert emb["mean_ttft_ms"] is None and emb["p99_itl_ms"] is None
    assert bench.latest_throughput(out) == {
        ("gen", gen["hardware"]): gen["tokens_per_s"],
        ("emb", emb["hardware"]): emb["tokens_per_s"],
    }


def test_bench_local_catalog(root: Path, config: Path, capsys, monkeypatch) -> None:
    """Without --url the catalog is served in this process for the run."""
    monkeypatch.setenv("HFSKILLS_EMBEDDED_DEFAULT", "false")
    monkeypatch.setenv("HFSKILLS_DATABASE_URL", f"sqlite:///{root / 'local.db'}")
    out = root / "local.jsonl"
    code, table, _ = run_cli(
        capsys, "--config", str(config), "--model", "cls", "--num-prompts", "3",
        "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert code == 0, table
    (record,) = bench.read(out)
    assert record["model"] == "cls" and record["backend"] == "hf-inference"
    assert record["base_url"].startswith("http://127.0.0.1:")
    assert record["completed"] == 3 and record["failed"] == 0


def test_eval_quality_updates_registry(server: Server, root: Path, capsys) -> None:
    with server.client() as http:
        answer = http.post(
            "/v1/chat/completions",
            json={
                "model": "gen",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
            },
        ).json()["choices"][0]["message"]["content"]
        labels = http.post("/models/cls", json={"inputs": "hello"}).json()
    top = max(labels[0] if isinstance(labels[0], list) else labels, key=lambda x: x["score"])
    wrong = "LABEL_A" if top["label"] != "LABEL_A" else "LABEL_B"
    lines = [
        {"prompt": "hi", "expected": answer[:3], "task": "text_generation"},
        {"prompt": "hi", "expected": answer, "task": "text_generation", "match": "exact"},
        {"prompt": "hi", "expected": "zzz-never-said", "task": "text_generation"},
        {"prompt": "hello", "expected": top["label"], "task": "text_classification"},
        {"prompt": "hello", "expected": wrong, "task": "text_classification"},
    ]
    eval_file = root / "qa.jsonl"
    eval_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = root / "eval.jsonl"
    code, table, _ = run_cli(
        capsys, "--url", server.base, "--model", "gen", "--model", "cls", "--num-prompts", "2",
        "--concurrency", "1", "--max-tokens", str(MAX_TOKENS), "--eval", str(eval_file),
        "--update-registry", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert code == 0, table
    gen, cls = bench.read(out)
    assert gen["quality"] == {"qa": round(2 / 3, 6)} and gen["eval"]["scored"] == 3
    assert cls["quality"] == {"qa": 0.5} and cls["eval"]["correct"] == 1
    assert "registry: gen@7 quality qa=0.666667" in table
    assert "registry: cls@1 quality qa=0.5" in table
    with server.client() as http:
        assert http.get("/api/models/gen").json()["quality"] == {"qa": round(2 / 3, 6)}
        assert http.get("/api/models/cls").json()["quality"] == {"qa": 0.5}
        changes = http.get("/api/audit", params={"model_id": "cls"}).json()["data"]
    assert changes[0]["after"]["quality"] == {"qa": 0.5}


def wait_for(path: Path, timeout_s: float = 60, **match: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = records(path, **match)
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no record {match} in {path} within {timeout_s} s")


def test_auto_bench_every_n_client_calls(server: Server, root: Path) -> None:
    path = root / "server.jsonl"
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="none", max_retries=0)
    chat = {"model": "gen-auto", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(EVERY - 1):
        client.chat.completions.create(**chat, max_tokens=2)
    time.sleep(0.5)
    assert not records(path, model="gen-auto")  # not yet: N-1 calls
    client.chat.completions.create(**chat, max_tokens=2)
    (record,) = wait_for(path, model="gen-auto")
    assert record["source"] == "auto" and record["version"] == "1"
    assert record["backend"] == "in-process"
    check_generation(record, len(bench.PROMPTS), record["max_tokens"])
    autobench = server.host.autobench
    deadline = time.monotonic() + 10
    while "gen-auto" in autobench.running and time.monotonic() < deadline:
        time.sleep(0.05)
    # its own 8 calls (origin bench) were not counted as client traffic
    assert autobench.counts.get("gen-auto", 0) == 0
    throughput = getattr(getattr(server.host.control, "costs", None), "throughput", None)
    if throughput is not None:  # the cost tracking got the measured tokens/s
        key = ("gen-auto", record["hardware"])
        assert throughput.benched[key] == record["tokens_per_s"]
    for _ in range(EVERY - 1):  # the count starts again
        client.chat.completions.create(**chat, max_tokens=2)
    time.sleep(0.5)
    assert len(records(path, model="gen-auto")) == 1


def test_summary_route_and_table(server: Server, root: Path, capsys) -> None:
    wait_for(root / "server.jsonl", model="gen-auto")
    with server.client() as http:
        body = http.get("/benchmark/summary").json()
        auto = http.get("/benchmark/summary", params={"source": "auto", "model": "gen-auto"})
        bad = http.get("/benchmark/summary", params={"source": "nope"})
    assert body["path"] == str(root / "server.jsonl")
    (row,) = auto.json()["data"]
    assert (row["model"], row["version"], row["sources"]) == ("gen-auto", "1", {"auto": 1})
    assert row["runs"] == 1 and row["completed"] == len(bench.PROMPTS) and row["failed"] == 0
    assert row["tokens_per_s"]["mean"] == row["tokens_per_s"]["p95"] > 0
    assert row["median_ttft_ms"]["mean"] <= row["median_e2el_ms"]["mean"]
    assert bad.status_code == 400 and "source must be one of ['cli', 'auto']" in bad.text

    # beside the benchmarks: the users' feedback and the cost at the measured tokens/s
    wait_for(root / "server.jsonl", model="gen", source="auto")  # the CLI runs' calls made one
    with server.client() as http:
        patched = http.patch("/api/models/gen", json={"cost": {"hardware_hourly_usd": 0.9}})
        assert patched.status_code == 200, patched.text
        chat = {"model": "gen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        answered = http.post("/v1/chat/completions", json=chat, headers={"X-Request-Id": "fb-1"})
        assert answered.status_code == 200
        given = http.post("/api/feedback", json={"request_id": "fb-1", "score": 1.0})
        assert given.status_code in (200, 201), given.text
        (row,) = http.get("/benchmark/summary", params={"model": "gen", "source": "auto"}).json()[
            "data"
        ]
    assert row["feedback"]["count"] == 1 and row["feedback"]["mean_score"] == 1.0
    tps = row["tokens_per_s"]["mean"]
    assert row["cost_per_1k_tokens"] == round(0.9 / (tps * 3600 / 1000), 6)

    code, table, _ = run_cli(capsys, "--summary", "--url", server.base)
    assert code == 0
    header = table.splitlines()[0].split()
    assert header[:5] == ["model", "version", "hardware", "runs", "tokens/s"]
    assert "feedback" in header and "$/1k" in header
    assert any(line.startswith("gen-auto ") for line in table.splitlines())
    (gen_line,) = [line for line in table.splitlines() if line.startswith("gen ")]
    assert "1.00 (1)" in gen_line

    code, table, _ = run_cli(capsys, "--summary", "--out", str(root / "cli.jsonl"))
    assert code == 0
    lines = table.splitlines()
    assert [line.split()[0] for line in lines[2:4]] == ["emb", "gen"]
    assert lines[-1] == f"2 run(s) from {root / 'cli.jsonl'}"


def test_bad_input(server: Server, root: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "--url", server.base, "--model", "nope", "--no-progress")
    assert code == 1
    assert err.strip().splitlines() == [
        f"hfskills: error: model 'nope' is not served at {server.base} "
        "(served: gen, gen-auto, emb, cls)"
    ]
    broken = root / "broken.jsonl"
    broken.write_text('{"prompt": "hi", "expected": "x"}\n{"prompt": 3}\n')
    code, _, err = run_cli(capsys, "--url", server.base, "--eval", str(broken))
    assert code == 1 and f"eval file {broken} line 2" in err
    code, _, err = run_cli(capsys, "--url", server.base, "--update-registry")
    assert code == 1 and "--update-registry needs --eval" in err
    code, _, err = run_cli(capsys, "--url", server.base, "--model", "emb", "--task",
                           "text_generation")  # fmt: skip
    assert code == 1 and "model 'emb' serves ['text_embedding'], not text_generation" in err


def test_unreachable_url_is_one_line_exit_2() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "hfskills.host.cli", "bench", "--url", f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"hfskills: error: cannot reach http://127.0.0.1:{port}")
