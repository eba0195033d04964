"""Logprobs at the engine level: what each engine reports equals the model's own distribution.

The torch `DecodeEngine` on a tiny random-weight llama: every generated token's logprob equals
transformers' ``log_softmax(model(ids).logits)`` at that position (greedy, 1e-4), the top
alternatives are the true top-k, batched sequences with different asks get their own, and
sampling parameters do not change what is reported (the raw distribution, as vLLM's default
``logprobs_mode``). Prompt logprobs: the first token has none, the rest are the model's.
OpenVINO GenAI on the same checkpoint (f32) reports the same numbers for the chosen tokens.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from hfskills.skillset.runtime.generation import GenerationParams
from tests.conftest import skill_class

PROMPTS = ["hello world", "one two three four five", [{"role": "user", "content": "the sky"}]]


@pytest.fixture(scope="module")
def tiny(task_checkpoint) -> Any:
    """(endpoint, engine): a tiny llama on torch CPU and a `DecodeEngine` over it."""
    from hfskills.skillset.runtime.continuous import DecodeEngine

    skill = skill_class("llama")()
    endpoint = skill.init_cpu(str(task_checkpoint("llama", "text_generation")), "text_generation")
    engine = DecodeEngine(endpoint.model, endpoint.processor, endpoint.device)
    yield endpoint, engine
    engine.close()


def reference(endpoint: Any, prompt: Any, generated: list[int]) -> Any:
    """transformers' log-softmax over the prompt and the generated ids, one forward pass."""
    import torch

    from hfskills.skillset.runtime.engines import prompt_ids

    ids = prompt_ids(endpoint.processor, prompt)
    with torch.inference_mode():
        logits = endpoint.model(torch.tensor([ids + generated])).logits[0]
    return ids, torch.log_softmax(logits.float(), dim=-1)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_torch_engine_logprobs_equal_transformers(tiny, prompt) -> None:
    endpoint, engine = tiny
    params = GenerationParams(max_new_tokens=8, ignore_eos=True, logprobs=5, prompt_logprobs=3)
    result = engine.submit(prompt, params).result()
    generated = result["token_ids"]
    ids, table = reference(endpoint, prompt, generated)
    assert len(result["logprobs"]) == len(generated) == 8
    for i, (token, got) in enumerate(zip(generated, result["logprobs"], strict=True)):
        row = table[len(ids) - 1 + i]
        assert got["token_id"] == token
        assert got["logprob"] == pytest.approx(float(row[token]), abs=1e-4)
        assert got["logprob"] == pytest.approx(float(row.max()), abs=1e-4)  # greedy: the top-1
        values, top_ids = row.topk(5)
        assert [t for t, _ in got["top"]] == top_ids.tolist()
        assert [lp for _, lp in got["top"]] == pytest.approx(values.tolist(), abs=1e-4)
        assert sum(math.exp(lp) for _, lp in got["top"]) <= 1 + 1e-6
    prompt_lp = result["prompt_logprobs"]
    assert [p["token_id"] for p in prompt_lp] == ids
    assert prompt_lp[0]["logprob"] is None and prompt_lp[0]["top"] == []
    for i in range(1, len(ids)):
        assert prompt_lp[i]["logprob"] == pytest.approx(float(table[i - 1, ids[i]]), abs=1e-4)
        assert [t for t, _ in prompt_lp[i]["top"]] == table[i - 1].topk(3).indices.tolist()


def test_batched_asks_are_each_their_own(tiny) -> None:
    """Sequences in one batch asking 0, 2 or no alternatives (and sampled, penalised ones):
    each gets what it asked, and the raw distribution whatever its sampling parameters."""
    endpoint, engine = tiny
    base = {"max_new_tokens": 6, "ignore_eos": True}
    asks = [
        GenerationParams(**base, logprobs=0),
        GenerationParams(**base, logprobs=2),
        GenerationParams(**base),
        GenerationParams(
            **base,
            logprobs=1,
            do_sample=True,
            temperature=0.3,
            top_k=3,
            seed=1,
            repetition_penalty=1.5,
        ),
    ]
    results = [s.result() for s in [engine.submit("hello world", p) for p in asks]]
    assert [len(r["logprobs"][0]["top"]) for r in results if "logprobs" in r] == [0, 2, 1]
    assert "logprobs" not in results[2] and "prompt_logprobs" not in results[2]
    for result in (results[0], results[1], results[3]):
        ids, table = reference(endpoint, "hello world", result["token_ids"])
        for i, got in enumerate(result["logprobs"]):
            want = float(table[len(ids) - 1 + i, got["token_id"]])
            assert got["logprob"] == pytest.approx(want, abs=1e-4)
            assert got["logprob"] <= 0


def test_stream_carries_each_tokens_logprob(tiny) -> None:
    _, engine = tiny
    params = GenerationParams(max_new_tokens=5, ignore_eos=True, logprobs=1, prompt_logprobs=0)
    events = list(engine.submit("hello world", params).stream())
    tokens, final = events[:-1], events[-1]
    assert [e.logprob for e in tokens] == final.logprobs
    assert tokens[0].prompt_logprobs == final.prompt_logprobs
    assert all(e.prompt_logprobs is None for e in tokens[1:])
    assert [e.token_id for e in tokens] == final.token_ids


# -- OpenVINO GenAI ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def on_genai(task_checkpoint, tmp_path_factory) -> Any:
    """The same tiny llama on OpenVINO GenAI (a stateful IR export, f32)."""
    pytest.importorskip("openvino_genai")
    pytest.importorskip("openvino_tokenizers")
    mp = pytest.MonkeyPatch()
    mp.setenv("HFSKILLS_CACHE", str(tmp_path_factory.mktemp("hfskills-cache")))
    skill = skill_class("llama")()
    path = str(task_checkpoint("llama", "text_generation"))
    endpoint = skill.init_openvino(path, "text_generation", precision="f32")
    yield endpoint
    endpoint.close()
    mp.undo()


@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_genai_logprobs_equal_transformers(tiny, on_genai, prompt) -> None:
    """GenAI's chosen-token and prompt logprobs are the model's raw distribution's, as torch's
    (sampled and penalised too: the reported distribution is the raw one)."""
    endpoint, _ = tiny
    for extra in (
        {},
        {"do_sample": True, "temperature": 0.5, "seed": 3, "repetition_penalty": 1.3},
    ):
        params = GenerationParams(
            max_new_tokens=6, ignore_eos=True, logprobs=0, prompt_logprobs=0, **extra
        )
        result = on_genai.engine.submit(prompt, params).result()
        ids, table = reference(endpoint, prompt, result["token_ids"])
        assert [p["token_id"] for p in result["prompt_logprobs"]] == ids
        assert result["prompt_logprobs"][0]["logprob"] is None
        for i in range(1, len(ids)):
            want = float(table[i - 1, ids[i]])
            assert result["prompt_logprobs"][i]["logprob"] == pytest.approx(want, abs=1e-4)
        assert len(result["logprobs"]) == len(result["token_ids"]) == 6
        for i, got in enumerate(result["logprobs"]):
            want = float(table[len(ids) - 1 + i, got["token_id"]])
            assert got["logprob"] == pytest.approx(want, abs=1e-4) and got["top"] == []


def test_genai_refuses_alternatives_by_name(on_genai) -> None:
    from hfskills.skillset.runtime.errors import InvalidInput

    for name in ("logprobs", "prompt_logprobs"):
        params = GenerationParams(max_new_tokens=2, **{name: 2})
        with pytest.raises(InvalidInput) as info:
            on_genai.engine.submit("hello", params).result()
        assert info.value.param == name and "alternatives" in info.value.message


def test_genai_stream_and_plain_requests_beside_logprobs(on_genai) -> None:
    """A request without logprobs reports none; a stream's events carry each token's."""
    plain = on_genai.engine.submit("hello world", GenerationParams(max_new_tokens=3)).result()
    assert "logprobs" not in plain and "prompt_logprobs" not in plain
    params = GenerationParams(max_new_tokens=4, ignore_eos=True, logprobs=0, prompt_logprobs=0)
    events = list(on_genai.engine.submit("hello world", params).stream())
    assert [e.logprob for e in events[:-1]] == events[-1].logprobs
    assert events[0].prompt_logprobs == events[-1].prompt_logprobs


# -- vLLM (CUDA only: its answers are mapped here with vLLM's shapes, faked) ---------------------


def test_vllm_logprobs_map_onto_the_contract(tiny) -> None:
    """``SamplingParams`` get ``logprobs``/``prompt_logprobs``; vLLM's per-position
    ``{token: Logprob(logprob, rank)}`` becomes `TokenLogprob` (the token's, and the top ranked
    as many as asked), through both text handlings, EOS dropped as on torch."""
    from types import SimpleNamespace as Ns

    from hfskills.skillset.runtime import vllm_engine
    from hfskills.skillset.runtime.engines import Sequence

    endpoint, _ = tiny
    params = GenerationParams(max_new_tokens=4, logprobs=1, prompt_logprobs=0)
    kwargs = vllm_engine.sampling_kwargs(params, {2})
    assert kwargs["logprobs"] == 1 and kwargs["prompt_logprobs"] == 0
    assert "logprobs" not in vllm_engine.sampling_kwargs(GenerationParams(), {2})

    def lp(value: float, rank: int) -> Ns:
        return Ns(logprob=value, rank=rank, decoded_token=None)

    first = Ns(
        prompt_token_ids=[5, 6],
        prompt_logprobs=[None, {6: lp(-2.0, 3)}],
        finished=False,
        outputs=[
            Ns(
                token_ids=[7],
                logprobs=[{7: lp(-0.5, 2), 9: lp(-0.1, 1)}],
                text="a",
                finish_reason=None,
                stop_reason=None,
            )
        ],
    )
    last = Ns(
        prompt_token_ids=None,
        finished=True,
        outputs=[
            Ns(
                token_ids=[8, 2],
                logprobs=[{8: lp(-0.2, 1)}, {2: lp(-0.3, 1)}],
                text="b",
                finish_reason="stop",
                stop_reason=None,
            )
        ],
    )
    for state in (
        vllm_engine._TokenTextEvents(Sequence("x", params), endpoint.processor, {2}, 2),
        vllm_engine._VLLMTextEvents(Sequence("x", params), {2}, 2),
    ):
        state.update(first)
        state.update(last)
        events = list(state.sequence.events.queue)
        final = events[-1]
        assert final.token_ids == [7, 8]
        assert [(x.token_id, x.logprob, x.top) for x in final.logprobs] == [
            (7, -0.5, ((9, -0.1),)),
            (8, -0.2, ((8, -0.2),)),
        ]
        assert [(x.token_id, x.logprob) for x in final.prompt_logprobs] == [(5, None), (6, -2.0)]
        assert events[0].prompt_logprobs == final.prompt_logprobs
        assert [e.logprob for e in events[:-1]] == final.logprobs


# -- transformers' generate (the path without an engine) ---------------------------------------


def test_text_generator_logprobs_equal_transformers(tiny) -> None:
    """The skill's own handler (``generate``, left-padded batch) and its stream report what
    the engine reports: the reference's logprobs, top-k and prompt logprobs."""
    endpoint, _ = tiny
    skill = skill_class("llama")()
    handler = skill.create_cpu_text_generation_endpoint_handler(endpoint)
    params = {"max_new_tokens": 5, "ignore_eos": True, "logprobs": 3, "prompt_logprobs": 2}
    results = handler(PROMPTS[:2], **params)
    for prompt, result in zip(PROMPTS[:2], results, strict=True):
        ids, table = reference(endpoint, prompt, result["token_ids"])
        assert len(result["logprobs"]) == len(result["token_ids"]) == 5
        for i, got in enumerate(result["logprobs"]):
            row = table[len(ids) - 1 + i]
            assert got["logprob"] == pytest.approx(float(row[got["token_id"]]), abs=1e-4)
            assert [t for t, _ in got["top"]] == row.topk(3).indices.tolist()
        assert [p["token_id"] for p in result["prompt_logprobs"]] == ids
        assert result["prompt_logprobs"][0]["logprob"] is None
        for i in range(1, len(ids)):
            want = float(table[i - 1, ids[i]])
            assert result["prompt_logprobs"][i]["logprob"] == pytest.approx(want, abs=1e-4)
    events = list(handler.stream(PROMPTS[1], **params))
    assert [e["logprob"] for e in events[:-1]] == events[-1]["logprobs"]
    alone, batched = events[-1]["logprobs"], results[1]["logprobs"]  # padding: float noise
    assert [x["token_id"] for x in alone] == [x["token_id"] for x in batched]
    assert [x["logprob"] for x in alone] == pytest.approx([x["logprob"] for x in batched], abs=1e-4)
    assert events[0]["prompt_logprobs"] == events[-1]["prompt_logprobs"]
    assert len(events[0]["prompt_logprobs"]) == len(results[1]["prompt_logprobs"])
    plain = handler(PROMPTS[:1], max_new_tokens=3)[0]
    assert "logprobs" not in plain and "prompt_logprobs" not in plain
