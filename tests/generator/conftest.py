from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def config_dir(tmp_path: Path):
    """Write a checkpoint directory holding just ``config.json`` (metadata is all we read)."""

    def make(config: dict[str, Any], name: str = "ckpt") -> Path:
        directory = tmp_path / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
        return directory

    return make


def hf_cache_entry(cache: Path, repo_id: str, files: dict[str, str]) -> Path:
    """Lay out ``repo_id`` in the Hugging Face cache format (refs/main -> snapshots/<sha>/...)."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    for name, text in files.items():
        (snapshot / name).write_text(text, encoding="utf-8")
    return snapshot
