"""The coverage sweep (scripts/coverage): the CI sample verifies through the real code path in
worker subprocesses; a crash, a failing stage and a hang each end as one failed type with its
stage and reason while the other types still verify; a wrong output is caught by the reference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import hfskills.generator.sweep as sweep
from hfskills.generator.cli import main as generate_skill
from hfskills.generator.sweep import references, tiny, worker
from hfskills.generator.sweep.run import SAMPLE, merge, summary, write_docs

REPO = Path(__file__).resolve().parents[2]


def run_sweep(tmp_path: Path, *args: str, env: dict[str, str] | None = None, limit: int = 600):
    out = tmp_path / "coverage.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "hfskills.generator.sweep",
            "--no-progress",
            "--out",
            str(out),
            *args,
        ],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=limit,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    data = json.loads(out.read_text())
    return {r["model_type"]: r for r in data["results"]}, completed.stdout, data


def test_sample_sweep_verifies_every_sample_type(tmp_path: Path) -> None:
    results, table, data = run_sweep(tmp_path, "--sample", "--jobs", "2")
    assert set(results) == set(SAMPLE)
    failed = {
        t: f"{r['stage']}: {r['reason']}" for t, r in results.items() if r["status"] != "verified"
    }
    assert not failed
    for model_type in SAMPLE:
        assert model_type in table
    assert data["counts"]["all"]["verified"] == len(SAMPLE)
    assert data["transformers"] and data["wall_seconds"] > 0


def test_a_crash_and_a_failing_stage_fail_alone(tmp_path: Path) -> None:
    inject = {worker.INJECT_ENV: "vit:crash,resnet:fail"}
    results, table, _ = run_sweep(
        tmp_path, "--types", "vit,resnet,convnext", "--jobs", "1", env=inject, limit=300
    )
    assert results["vit"]["status"] == "failed"
    assert results["vit"]["stage"] == "classify"  # the last stage it announced
    assert results["vit"]["reason"].startswith("crash: the worker exited with code 3")
    assert results["resnet"]["status"] == "failed"
    assert (results["resnet"]["stage"], results["resnet"]["reason"]) == (
        "config",
        "injected failure (HFSKILLS_SWEEP_INJECT)",
    )
    assert results["convnext"]["status"] == "verified"  # after the crash, a new worker
    assert "injected failure" in table


def test_a_hang_is_killed_at_the_timeout_and_recorded(tmp_path: Path) -> None:
    inject = {worker.INJECT_ENV: "vit:hang"}
    results, _, data = run_sweep(
        tmp_path, "--types", "vit,resnet", "--jobs", "1", "--timeout", "30", env=inject, limit=300
    )
    assert results["vit"]["status"] == "failed"
    assert results["vit"]["reason"].startswith("timeout: no result within 30 s")
    assert 25 <= results["vit"]["seconds"] < 60
    assert results["resnet"]["status"] == "verified"
    assert data["counts"]["vision"] == {"verified": 1, "failed": 1, "unsupported": 0, "total": 2}


def test_unsupported_types_are_counted_not_failed(tmp_path: Path) -> None:
    results, _, data = run_sweep(tmp_path, "--types", "clip_text_model,resnet", limit=300)
    assert results["clip_text_model"]["status"] == "unsupported"
    assert results["clip_text_model"]["stage"] == "classify"
    assert data["counts"]["all"]["failed"] == 0


def test_a_wrong_output_fails_verification(tmp_path: Path, monkeypatch) -> None:
    """The reference catches a handler whose scores are off by 1e-3 (the tolerance is 1e-5)."""
    original = references.REFERENCES["image_classification"]

    def perturbed(handler: Any, path: Path, skill: type) -> None:
        def wrong(inputs: list, **params: Any) -> list:
            out = handler(inputs, **params)
            return [[r | {"score": r["score"] + 1e-3} for r in row] for row in out]

        original(wrong, path, skill)

    monkeypatch.setitem(references.REFERENCES, "image_classification", perturbed)
    record = worker.verify("vit", tmp_path / "work", lambda stage: None)
    assert (record["status"], record["stage"]) == ("failed", "verify:image_classification")
    assert record["reason"].startswith("scores: max abs difference 0.001 > 1e-05")
    monkeypatch.setitem(references.REFERENCES, "image_classification", original)
    assert worker.verify("vit", tmp_path / "again", lambda stage: None)["status"] == "verified"


def test_generic_shrinking_keeps_stage_counts_and_cuts_per_layer_lists() -> None:
    swin = tiny.shrink(
        {"depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "embed_dim": 96, "num_layers": 4}
    )
    assert swin == {"depths": [1, 1, 1, 1], "num_heads": [1, 2, 4, 8], "embed_dim": 32}
    llama = tiny.shrink(
        {"hidden_size": 4096, "num_hidden_layers": 32, "layer_types": ["full"] * 32, "x": 1}
    )
    assert llama["hidden_size"] == 32 and llama["num_hidden_layers"] == 2
    assert llama["layer_types"] == ["full", "full"]
    config = tiny.tiny_config("llama", vocab_size=600)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (32, 2, 600)
    assert config.id2label == {0: "LABEL_A", 1: "LABEL_B", 2: "LABEL_C"}


def test_every_exception_states_its_reason() -> None:
    for model_type, quirk in tiny.EXCEPTIONS.items():
        assert quirk.reason.strip(), model_type


def test_generate_skill_says_why_a_type_failed_the_sweep(tmp_path, monkeypatch, capsys) -> None:
    record = {
        "model_type": "gpt2",
        "family": "decoder",
        "tasks": ["text_generation"],
        "status": "failed",
        "stage": "verify:text_generation",
        "reason": "greedy token ids: [1] != [2]",
    }
    monkeypatch.setattr(sweep, "load_results", lambda: {"gpt2": record})
    assert sweep.explain("bert") is None
    assert generate_skill(["--model-type", "gpt2", "--output", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "gpt2 failed the coverage sweep at verify:text_generation: greedy token ids" in err
    assert "docs/coverage.md" in err


def test_committed_coverage_matches_the_docs() -> None:
    """docs/coverage.md is generated from the package's coverage.json (scripts/coverage
    --write-docs): regenerating it from the committed JSON gives the committed page."""
    if not sweep.CANONICAL.is_file():
        pytest.skip("no committed coverage.json yet")
    data = json.loads(sweep.CANONICAL.read_text())
    assert data["counts"] == summary(data["results"])
    assert merge(None, data, full=True) is data
    docs = REPO / "docs" / "coverage.md"
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / "coverage.md"
        write_docs(data, fresh)
        assert fresh.read_text() == docs.read_text()
