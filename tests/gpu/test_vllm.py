"""`VLLMEngine` on a real vLLM (skipped without it): greedy tokens equal transformers' in
float32, streamed events, cancellation, stop strings and usage, in both text handlings.

The checkpoint is the test suite's tiny llama (`task_checkpoint`: its tokenizer, chat template
and special ids) with attention heads widened to 64 dimensions: the suite's 8-dimension heads
are below what vLLM's attention kernels take.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from hfskills.skillset.runtime import vllm_engine
from hfskills.skillset.runtime.engines import DONE
from hfskills.skillset.runtime.errors import InvalidInput
from hfskills.skillset.runtime.generation import GenerationParams
from tests.conftest import skill_class

pytest.importorskip("vllm", reason="vLLM is not installed (extra: cuda)")

PROMPTS: list[Any] = [
    "hello world",
    "the capital of france is",
    [{"role": "user", "content": "tell me a story about a cat"}],
]


@pytest.fixture(scope="module")
def checkpoint(task_checkpoint: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = Path(task_checkpoint("llama", "text_generation"))
    target = tmp_path_factory.mktemp("vllm") / "llama"
    shutil.copytree(base, target, ignore=shutil.ignore_patterns("*.safetensors"))
    config = transformers.AutoConfig.from_pretrained(base)
    config.update(
        {
            "hidden_size": 256,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "intermediate_size": 512,
            "torch_dtype": "float32",
            "max_position_embeddings": 4096,  # room for test_cancellation's long request
        }
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(target)
    tokenizer_config = target / "tokenizer_config.json"
    if tokenizer_config.is_file():  # the tokenizer's limit too (the host takes the smaller)
        data = json.loads(tokenizer_config.read_text())
        data["model_max_length"] = 4096
        tokenizer_config.write_text(json.dumps(data))
    return target


@pytest.fixture(scope="module", params=["hfskills", "vllm"])
def endpoint(request: pytest.FixtureRequest, checkpoint: Path) -> Iterator[Any]:
    skill = skill_class("llama")()
    ep = vllm_engine.load_endpoint(
        skill,
        str(checkpoint),
        "text_generation",
        dtype="float32",
        gpu_memory_utilization=0.25,
        enforce_eager=True,
        text_handling=request.param,
    )
    yield ep
    ep.close()


@pytest.fixture(scope="module")
def reference(checkpoint: Path) -> Any:
    """transformers greedy on the GPU in float32: the skill's own torch handler."""
    skill = skill_class("llama")()
    ep = skill.load_torch(
        str(checkpoint), "text_generation", hardware="cuda", device="cuda:0", dtype="float32"
    )
    return skill.handler(ep)


def drain(sequence: Any) -> list[dict[str, Any]]:
    out = []
    while (item := sequence.events.get(timeout=120)) is not DONE:
        if isinstance(item, BaseException):
            raise item
        out.append(item.as_dict())  # the engine's typed events, as a skill stream gives them
    return out


def test_endpoint(endpoint: Any) -> None:
    assert endpoint.engine is not None and endpoint.hardware == "cuda"
    assert endpoint.dtype == "float32" and endpoint.memory_bytes > 0
    assert endpoint.settings["engine"] == "vllm"


def test_greedy_matches_transformers(endpoint: Any, reference: Any) -> None:
    params = {"max_new_tokens": 24}
    expected = [reference([p], **params)[0] for p in PROMPTS]  # unpadded, as vLLM runs them
    got = [endpoint.engine.submit(p, GenerationParams(**params)).result() for p in PROMPTS]
    for want, have in zip(expected, got, strict=True):
        assert have["token_ids"] == want["token_ids"]
        assert have["prompt_tokens"] == want["prompt_tokens"]
        assert have["finish_reason"] == want["finish_reason"]
        if endpoint.settings["text_handling"] == "hfskills":
            assert have["text"] == want["text"]


def test_skill_handler_uses_the_engine(endpoint: Any) -> None:
    handler = skill_class("llama")().handler(endpoint)
    got = handler(PROMPTS[:2], max_new_tokens=8, ignore_eos=True)
    assert [len(r["token_ids"]) for r in got] == [8, 8]
    assert [r["finish_reason"] for r in got] == ["length", "length"]
    *tokens, final = handler.stream(PROMPTS[0], max_new_tokens=8, ignore_eos=True)
    assert final["token_ids"] == got[0]["token_ids"] == [e["token_id"] for e in tokens]


def test_streaming_events(endpoint: Any) -> None:
    params = GenerationParams(max_new_tokens=10, ignore_eos=True)
    events = drain(endpoint.engine.submit("hello world", params))
    tokens, final = events[:-1], events[-1]
    assert len(tokens) == 10
    assert all(set(e) == {"token_id", "text", "finish_reason"} for e in tokens)
    assert all(e["finish_reason"] is None and isinstance(e["token_id"], int) for e in tokens)
    assert final["token_id"] is None and final["finish_reason"] == "length"
    assert final["token_ids"] == [e["token_id"] for e in tokens]
    assert "".join(e["text"] for e in events) == final["generated_text"]


def test_usage(endpoint: Any) -> None:
    tokenizer = endpoint.processor
    for prompt in PROMPTS:
        text = (
            prompt
            if isinstance(prompt, str)
            else tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        )
        result = endpoint.engine.submit(
            prompt, GenerationParams(max_new_tokens=5, ignore_eos=True)
        ).result()
        assert result["prompt_tokens"] == len(tokenizer(text)["input_ids"])
        assert len(result["token_ids"]) == 5


def test_stop_strings(endpoint: Any, reference: Any) -> None:
    (free,) = reference(["hello world"], max_new_tokens=24, ignore_eos=True)
    words = free["text"].split()
    assert len(words) > 3, free
    stop = words[2]
    params = {"max_new_tokens": 24, "ignore_eos": True, "stop": [stop]}
    (want,) = reference(["hello world"], **params)
    got = endpoint.engine.submit("hello world", GenerationParams(**params)).result()
    assert got["finish_reason"] == "stop" and got["stop_sequence"] == stop
    assert got["token_ids"] == want["token_ids"] and stop not in got["text"]
    if endpoint.settings["text_handling"] == "hfskills":
        assert got["text"] == want["text"]
    else:  # vLLM renders the first token after the prompt: its leading space may differ
        assert got["text"].strip() == want["text"].strip()


def test_cancellation(endpoint: Any) -> None:
    engine = endpoint.engine
    sequence = engine.submit("hello world", GenerationParams(max_new_tokens=2000, ignore_eos=True))
    stream = sequence.stream()
    first = [next(stream) for _ in range(3)]
    assert all(e.token_id is not None for e in first)
    stream.close()  # the consumer left
    deadline = time.monotonic() + 10
    while engine.load and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.load == 0
    # the engine is still healthy
    assert engine.submit("hello", GenerationParams(max_new_tokens=3)).result()["token_ids"]


def test_prompt_too_long_is_the_requests_error(endpoint: Any) -> None:
    long = " ".join(["hello"] * 400)  # beyond max_model_len (128 positions)
    with pytest.raises(InvalidInput):
        endpoint.engine.submit(long, GenerationParams(max_new_tokens=4)).result()
    assert endpoint.engine.submit("hello", GenerationParams(max_new_tokens=2)).result()
