"""LoRA adapters: each a model of its own name on one base (vLLM's ``--lora-modules``), and
TGI's ``adapter_id``; parity with transformers + peft; rows of different adapters in one batch.

Two random adapters (peft, non-zero weights) on the tiny llama. Every answer is compared with
the same prompt run through ``PeftModel`` alone, greedy; the three answers differ from each
other, so an adapter that is ignored (or the wrong one) fails the test.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hfskills.host.catalog import CatalogError, positional_entries, resolve_entry
from hfskills.host.config import ModelEntry
from hfskills.host.discovery import discover

from .conftest import entry

PROMPT = "the quick brown fox"
TOKENS = 8
TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj"]


def _adapter(base: Path, target: Path, seed: int, rank: int) -> Path:
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_pretrained(base)
        config = LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            target_modules=TARGETS,
            init_lora_weights=False,  # random, non-zero: the adapter changes the output
            task_type="CAUSAL_LM",
        )
        get_peft_model(model, config).save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def lora(task_checkpoint: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = task_checkpoint("llama", "text_generation")
    root = tmp_path_factory.mktemp("lora")
    return {
        "base": base,
        "sql": _adapter(base, root / "sql", seed=1, rank=4),
        "chat": _adapter(base, root / "chat", seed=2, rank=8),
    }


def _reference(lora: dict[str, Path], adapter: str | None) -> str:
    """transformers (+ peft) alone, greedy: the text a request must get."""
    import torch
    import transformers
    from peft import PeftModel

    tokenizer = transformers.AutoTokenizer.from_pretrained(lora["base"])
    model = transformers.AutoModelForCausalLM.from_pretrained(lora["base"])
    if adapter is not None:
        model = PeftModel.from_pretrained(model, lora[adapter])
    model.eval()
    ids = tokenizer(PROMPT, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=TOKENS, do_sample=False, min_new_tokens=TOKENS)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.fixture(scope="module")
def expected(lora: dict[str, Path]) -> dict[str, str]:
    texts = {"tiny": _reference(lora, None), "sql": _reference(lora, "sql")}
    texts["chat"] = _reference(lora, "chat")
    assert len(set(texts.values())) == 3, texts  # else the test could not tell them apart
    return texts


@pytest.fixture(scope="module")
def server(serve: Any, lora: dict[str, Path]) -> Any:
    adapters = {"sql": str(lora["sql"]), "chat": str(lora["chat"])}
    return serve(
        models=[entry("tiny", lora["base"], hardware=["cpu"], adapters=adapters)],
        embedded_default=False,
    )


def _complete(client: Any, model: str) -> str:
    answer = client.completions.create(
        model=model,
        prompt=PROMPT,
        max_tokens=TOKENS,
        temperature=0,
        extra_body={"min_tokens": TOKENS},
    )
    return answer.choices[0].text


@pytest.fixture(scope="module")
def client(server: Any) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0, timeout=120)


def test_each_adapter_is_a_model_with_parity(client: Any, expected: dict[str, str]) -> None:
    for model, text in expected.items():
        assert _complete(client, model) == text, model


def test_adapters_listed_with_their_parent(client: Any) -> None:
    cards = {m.id: m for m in client.models.list().data}
    assert {"tiny", "sql", "chat"} <= set(cards)
    assert cards["sql"].parent == "tiny" and cards["chat"].parent == "tiny"
    assert getattr(cards["tiny"], "parent", None) is None


def test_adapters_mix_in_one_batch(client: Any, expected: dict[str, str], server: Any) -> None:
    """Requests for the base and both adapters at once: each row its own adapter, one model."""
    models = ["tiny", "sql", "chat"] * 4
    with ThreadPoolExecutor(len(models)) as pool:
        got = list(pool.map(lambda m: _complete(client, m), models))
    assert got == [expected[m] for m in models]
    resident = server.host.loader.resident()
    assert [r["model"] for r in resident] == ["tiny"]  # one base holds every adapter


def test_adapter_streams(client: Any, expected: dict[str, str]) -> None:
    chunks = client.completions.create(
        model="sql",
        prompt=PROMPT,
        max_tokens=TOKENS,
        temperature=0,
        stream=True,
        extra_body={"min_tokens": TOKENS},
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected["sql"]


def test_chat_names_the_adapter(client: Any) -> None:
    answer = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0
    )
    assert answer.model == "chat"


def test_tgi_adapter_id(server: Any, expected: dict[str, str], monkeypatch: Any) -> None:
    import huggingface_hub

    # the suite sets HF_HUB_OFFLINE for transformers; the client's own calls go to 127.0.0.1
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    tgi = huggingface_hub.InferenceClient(base_url=server.base, timeout=120)
    for adapter in ("sql", "chat"):
        got = tgi.text_generation(
            PROMPT,
            max_new_tokens=TOKENS,
            adapter_id=adapter,
            details=True,
            decoder_input_details=False,
        )
        # TGI's min_new_tokens is not a parameter: compare the tokens it did generate
        assert expected[adapter].startswith(got.generated_text), adapter
        assert got.generated_text, adapter
    with server.client() as http:
        bad = http.post(
            "/generate",
            json={"inputs": PROMPT, "parameters": {"max_new_tokens": 2, "adapter_id": "nope"}},
        )
    assert bad.status_code == 422, bad.text
    body = bad.json()
    assert set(body) == {"error", "error_type"} and "nope" in body["error"]
    assert "sql" in body["error"] and "chat" in body["error"]


def test_adapter_memory_shares_the_base(server: Any, lora: dict[str, Path]) -> None:
    """The base's weights once, plus each adapter's low-rank matrices."""
    import transformers
    from safetensors import safe_open

    from hfskills.skillset.runtime.torch_backend import measure_bytes

    loaded = next(iter(server.host.loader.cache.values()))
    base_bytes = measure_bytes(transformers.AutoModelForCausalLM.from_pretrained(lora["base"]))
    adapter_bytes = 0
    for name in ("sql", "chat"):
        with safe_open(lora[name] / "adapter_model.safetensors", "pt") as f:
            adapter_bytes += sum(
                f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in f.keys()
            )
    assert loaded.endpoint.memory_bytes == base_bytes + adapter_bytes
    assert adapter_bytes < base_bytes / 4  # not a copy of the base per adapter


def test_openvino_falls_back_to_torch_with_a_reason(
    serve: Any, lora: dict[str, Path], caplog: Any
) -> None:
    pytest.importorskip("openvino_genai")
    adapters = {"sql": str(lora["sql"])}
    server = serve(
        models=[entry("tiny-ov", lora["base"], hardware=["openvino", "cpu"], adapters=adapters)],
        embedded_default=False,
    )
    with caplog.at_level(logging.WARNING, logger="hfskills.host"), server.client() as http:
        answer = http.post(
            "/v1/completions", json={"model": "sql", "prompt": PROMPT, "max_tokens": 2}
        )
    assert answer.status_code == 200, answer.text
    assert [r["hardware"] for r in server.host.loader.resident()] == ["cpu"]
    assert "tiny-ov: openvino skipped, LoRA adapters are served on torch and vLLM" in caplog.text
    assert "continuous-batching pipeline applies one adapter set" in caplog.text


def test_runtimes_without_per_request_adapters_refuse_them(lora: dict[str, Path]) -> None:
    """Should the host still ask OpenVINO (a catalog it did not check), the runtime refuses
    with the reason, so the host falls back (never a silent base-model answer)."""
    pytest.importorskip("openvino_genai")
    from hfskills.skillset.hf_llama import hf_llama
    from hfskills.skillset.runtime.errors import HardwareUnavailable

    with pytest.raises(HardwareUnavailable, match="one adapter set to every running request"):
        hf_llama().init_openvino(
            str(lora["base"]), "text_generation", adapters={"sql": str(lora["sql"])}
        )


def test_seq2seq_adapter_parity(serve: Any, task_checkpoint: Any, tmp_path: Path) -> None:
    """An encoder-decoder's adapter: the batch path (transformers' generate with peft's
    adapter_names), through the Inference API's route."""
    import torch
    import transformers
    from peft import LoraConfig, PeftModel, get_peft_model

    base = task_checkpoint("t5", "text2text_generation")
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(base)
        config = LoraConfig(r=4, target_modules=["q", "v", "o"], init_lora_weights=False)
        get_peft_model(model, config).save_pretrained(tmp_path / "t5-lora")
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    ids = tokenizer(PROMPT, return_tensors="pt")

    def reference(adapter: bool) -> str:
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(base)
        if adapter:
            model = PeftModel.from_pretrained(model, tmp_path / "t5-lora")
        with torch.inference_mode():
            out = model.eval().generate(**ids, max_new_tokens=TOKENS, do_sample=False)
        return tokenizer.decode(out[0], skip_special_tokens=True)

    expected = {"t5": reference(False), "t5-lora": reference(True)}
    assert expected["t5"] != expected["t5-lora"]
    adapters = {"t5-lora": str(tmp_path / "t5-lora")}
    server = serve(
        models=[entry("t5", base, hardware=["cpu"], adapters=adapters)], embedded_default=False
    )
    parameters = {"max_new_tokens": TOKENS}
    with server.client() as http:
        for name, text in expected.items():  # the Inference API, POST / and the design's route
            for url, body in (
                (f"/models/{name}", {"inputs": PROMPT, "parameters": parameters}),
                ("/", {"model": name, "inputs": PROMPT, "parameters": parameters}),
                ("/v1/generate", {"model": name, "inputs": PROMPT, "parameters": parameters}),
            ):
                got = http.post(url, json=body)
                assert got.status_code == 200, (url, got.text)
                assert got.json() == [{"generated_text": text}], (url, name)


# -- the catalog ---------------------------------------------------------------------------------
def test_lora_modules_flag(lora: dict[str, Path]) -> None:
    [one] = positional_entries([str(lora["base"])], lora_modules=[f"sql={lora['sql']}"])
    assert one.adapters == {"sql": str(lora["sql"].resolve())}
    with pytest.raises(CatalogError, match="NAME=PATH"):
        positional_entries([str(lora["base"])], lora_modules=["sql"])
    with pytest.raises(CatalogError, match="exactly one MODEL"):
        positional_entries(
            [str(lora["base"]), str(lora["base"])], lora_modules=[f"sql={lora['sql']}"]
        )
    with pytest.raises(CatalogError, match="adapter name"):
        positional_entries([str(lora["base"])], lora_modules=[f"-bad={lora['sql']}"])


def test_catalog_refuses_what_is_no_lora_adapter(
    lora: dict[str, Path], task_checkpoint: Any, tmp_path: Path
) -> None:
    registry = discover()
    with pytest.raises(CatalogError, match=r"holds no adapter_config\.json"):
        resolve_entry(
            ModelEntry(name="t", checkpoint=str(lora["base"]), adapters={"x": str(tmp_path)}),
            registry,
        )
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    (prefix / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(CatalogError, match="PREFIX_TUNING adapter; LoRA adapters are served"):
        resolve_entry(
            ModelEntry(name="t", checkpoint=str(lora["base"]), adapters={"x": str(prefix)}),
            registry,
        )
    embedder = task_checkpoint("bert", "text_embedding")
    with pytest.raises(CatalogError, match="served for"):
        resolve_entry(
            ModelEntry(name="e", checkpoint=str(embedder), adapters={"x": str(lora["sql"])}),
            registry,
        )
    clash = ModelEntry(
        name="t", checkpoint=str(lora["base"]), aliases=["sql"], adapters={"sql": str(lora["sql"])}
    )
    from hfskills.host.catalog import build
    from hfskills.host.config import load_settings

    with pytest.raises(CatalogError, match="used twice"):
        build(load_settings(models=[clash.model_dump()], embedded_default=False), registry)


def test_models_command_shows_adapters_and_their_hardware(
    lora: dict[str, Path], capsys: Any
) -> None:
    from hfskills.host.cli import main

    assert main(["models", str(lora["base"]), "--lora-modules", f"sql={lora['sql']}"]) == 0
    line = capsys.readouterr().out.strip()
    assert "(LoRA adapters: sql)" in line
    assert "cpu (torch)" in line and "openvino" not in line  # openvino skipped: no adapters


def test_every_served_name_has_a_running_series_before_its_first_request(
    serve: Any, lora: dict[str, Path]
) -> None:
    """An autoscaler on hfskills_requests_running (deploy/k8s) reads 0 for a fresh pod."""
    adapters = {"sql": str(lora["sql"])}
    server = serve(
        models=[entry("fresh", lora["base"], hardware=["cpu"], adapters=adapters)],
        embedded_default=False,
    )
    with server.client() as http:
        text = http.get("/metrics").text
    for name in ("fresh", "sql"):
        assert f'hfskills_requests_running{{model="{name}"}} 0.0' in text, name
