"""Decoder generation on OpenVINO GenAI through the skill contract (``init_openvino``).

A tiny llama checkpoint is exported to a stateful IR (cached under ``HFSKILLS_CACHE``) and run
by `GenAIEngine`; with ``precision="f32"`` its greedy tokens equal the torch CPU skill's
exactly, batched or streamed, and stop strings, seeds, usage counts and cancellation behave
as on torch.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("openvino_genai")
pytest.importorskip("openvino_tokenizers")

from tests.conftest import skill_class

PROMPTS = [
    "hello world",
    [{"role": "user", "content": "the capital of france is"}],
    "one two three four five six seven",
]


@pytest.fixture(scope="module")
def pair(long_llama, tmp_path_factory):
    """(skill, openvino endpoint, cpu endpoint) on the same tiny llama checkpoint (with 8192
    positions, so that a stream can run for seconds)."""
    cache = tmp_path_factory.mktemp("hfskills-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("HFSKILLS_CACHE", str(cache))
    path = str(long_llama)
    skill = skill_class("llama")()
    ov = skill.init_openvino(path, "text_generation", precision="f32")
    cpu = skill.init_cpu(path, "text_generation")
    yield skill, ov, cpu
    ov.close()
    mp.undo()


def test_greedy_tokens_equal_torch(pair) -> None:
    skill, ov, cpu = pair
    assert ov.hardware == "openvino" and type(ov.engine).__name__ == "GenAIEngine"
    on_ov = skill.create_openvino_text_generation_endpoint_handler(ov)
    on_cpu = skill.create_cpu_text_generation_endpoint_handler(cpu)
    params = {"max_new_tokens": 12, "ignore_eos": True}
    batch = on_ov(PROMPTS, **params)
    alone = [on_cpu([p], **params)[0] for p in PROMPTS]
    for got, want in zip(batch, alone, strict=True):
        assert got["token_ids"] == want["token_ids"] and len(got["token_ids"]) == 12
        assert got["text"] == want["text"] and got["prompt_tokens"] == want["prompt_tokens"]
        assert got["finish_reason"] == "length"


def test_stream_equals_batch_and_stop_strings_cut(pair) -> None:
    skill, ov, _ = pair
    handler = skill.create_openvino_text_generation_endpoint_handler(ov)
    whole = handler(["hello world"], max_new_tokens=10, ignore_eos=True)[0]
    events = list(handler.stream("hello world", max_new_tokens=10, ignore_eos=True))
    assert "".join(e["text"] for e in events) == whole["text"]
    assert events[-1]["token_ids"] == whole["token_ids"]
    words = whole["text"].split()
    assert len(words) >= 3, whole
    stop = words[2]
    cut = handler(["hello world"], max_new_tokens=10, ignore_eos=True, stop=[stop])[0]
    assert cut["finish_reason"] == "stop" and cut["stop_sequence"] == stop
    assert cut["text"] == whole["text"][: whole["text"].index(stop)]


def test_seeded_sampling_repeats_and_params_are_checked(pair) -> None:
    skill, ov, _ = pair
    handler = skill.create_openvino_text_generation_endpoint_handler(ov)
    sampled = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.5, "seed": 7}
    first = handler(["hello world"], **sampled)[0]["token_ids"]
    assert handler(["hello world"], **sampled)[0]["token_ids"] == first
    from hfskills.skillset.runtime.errors import InvalidInput

    with pytest.raises(InvalidInput, match="max_new_tokens"):
        handler(["hello world"], max_new_tokens=0)
    with pytest.raises(InvalidInput, match="stop"):
        handler(["hello world"], stop=[""])


def test_closing_a_stream_cancels_it_in_the_engine(pair) -> None:
    skill, ov, _ = pair
    handler = skill.create_openvino_text_generation_endpoint_handler(ov)
    stream = handler.stream("hello world", max_new_tokens=8000, ignore_eos=True)
    next(stream), next(stream)
    stream.close()
    deadline = time.monotonic() + 10
    while ov.engine.load and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ov.engine.load == 0


def test_the_export_is_cached(pair, long_llama, tmp_path_factory) -> None:
    from hfskills.skillset.runtime import cache, checkpoint

    skill, ov, _ = pair
    source = ov.settings["genai_source"]
    assert cache.ready(Path(source))
    stamp = (Path(source) / "openvino_model.xml").stat().st_mtime_ns
    again = skill.init_openvino(str(long_llama), "text_generation", precision="f32")
    try:
        assert again.settings["genai_source"] == source  # same key: no second export
        assert (Path(source) / "openvino_model.xml").stat().st_mtime_ns == stamp
    finally:
        again.close()
    ckpt = checkpoint.resolve(str(long_llama))
    assert cache.key(ckpt, "text_generation", "openvino-genai", "f32") in source
