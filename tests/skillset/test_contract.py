"""The skill contract, checked on every committed skill and on the shared runtime."""

from __future__ import annotations

import ast
import importlib
import inspect

import pytest
import torch

from hfskills.generator.cli import committed_model_types
from hfskills.generator.render import HARDWARE
from hfskills.skillset.runtime import Endpoint, hardware
from hfskills.skillset.runtime.errors import (
    HardwareUnavailable,
    InvalidInput,
    ModelLoadError,
    UnsupportedTask,
)
from tests.conftest import skill_class
from tests.generator.test_render import SKILLSET

COMMITTED = committed_model_types(SKILLSET)


@pytest.mark.parametrize("model_type", COMMITTED)
def test_skill_declares_the_contract(model_type: str) -> None:
    cls = skill_class(model_type)
    assert cls.model_type == model_type
    assert cls.__name__ == "hf_" + model_type.replace("-", "_")
    assert cls.hardware == HARDWARE
    assert cls.tasks and set(cls.model_classes) == set(cls.tasks) == set(cls.processors)
    assert set(cls.dtypes) == set(HARDWARE)
    assert set(cls.unsupported) <= {(hw, task) for hw in HARDWARE for task in cls.tasks}
    skill = cls(resources={"x": 1}, metadata={"y": 2})
    assert (skill.resources, skill.metadata) == ({"x": 1}, {"y": 2})
    for hw in HARDWARE:
        assert "task" in inspect.signature(getattr(skill, f"init_{hw}")).parameters
        for task in cls.tasks:
            method = getattr(skill, f"create_{hw}_{task}_endpoint_handler", None)
            assert callable(method) == ((hw, task) not in cls.unsupported)


def test_a_skill_is_declarations_only() -> None:
    """A generated module is a page of documentation and tables: no function, one import."""
    sizes = sorted(len((SKILLSET / f"{m}.py").read_text().splitlines()) for m in _modules())
    assert sizes[len(sizes) // 2] <= 80, f"median committed skill has {sizes[len(sizes) // 2]}"
    for name in _modules():
        tree = ast.parse((SKILLSET / f"{name}.py").read_text())
        assert not any(isinstance(n, ast.FunctionDef | ast.Lambda) for n in ast.walk(tree))


def _modules() -> list[str]:
    return ["hf_" + t.replace("-", "_") for t in COMMITTED]


@pytest.mark.parametrize(
    ("model_type", "hw", "task"),
    [("llama", "qnn", "text_generation"), ("t5", "openvino", "text2text_generation")],
)
def test_a_declared_unsupported_pair_raises_at_once(model_type: str, hw: str, task: str) -> None:
    """hf_llama used to offer QNN text generation and hf_t5 OpenVINO text2text, which always
    raised after loading; now the pair has no handler and init refuses before any load."""
    skill = skill_class(model_type)()
    assert not skill.supports(hw, task)
    assert not hasattr(skill, f"create_{hw}_{task}_endpoint_handler")
    with pytest.raises(UnsupportedTask, match="graph export"):
        getattr(skill, f"init_{hw}")("/no/such/checkpoint", task)


def test_a_handler_refuses_an_endpoint_of_another_pair(task_checkpoint) -> None:
    skill = skill_class("bert")()
    endpoint = skill.init_cpu(str(task_checkpoint("bert", "fill_mask")), "fill_mask")
    with pytest.raises(UnsupportedTask, match="fill_mask on cpu"):
        skill.create_cpu_text_classification_endpoint_handler(endpoint)


def test_a_skill_imports_on_its_own() -> None:
    module = importlib.import_module("hfskills.skillset.hf_bert")
    assert next(iter(module.hf_bert.tasks)) == "text_embedding"
    assert module.__doc__ and "generate-skill --model-type bert" in module.__doc__


@pytest.mark.parametrize("hw", [h for h in HARDWARE if h != "cpu"])
def test_absent_hardware_raises_hardware_unavailable(hw: str) -> None:
    if hardware.probe(hw).available:
        pytest.skip(f"{hw} is present on this machine")
    with pytest.raises(HardwareUnavailable, match=hw):
        skill_class("bert")().init(hw, "unused", "text_embedding")


def test_detection_reports_every_backend_with_a_reason() -> None:
    found = hardware.detect()
    assert [h.name for h in found] == list(hardware.ORDER)
    assert all(h.reason for h in found)
    assert found[-1].available and found[-1].name == "cpu"
    assert hardware.probe("cuda").available == (
        torch.cuda.is_available() and torch.version.hip is None
    )


def test_unknown_task_is_unsupported(task_checkpoint) -> None:
    with pytest.raises(UnsupportedTask, match="fill_mask"):
        skill_class("gpt2")().init_cpu(str(task_checkpoint("gpt2", "text_generation")), "fill_mask")


def test_unknown_load_option_is_refused(task_checkpoint) -> None:
    path = task_checkpoint("bert", "text_embedding")
    with pytest.raises(InvalidInput, match="unknown load option"):
        skill_class("bert")().init_cpu(str(path), "text_embedding", trust_remote_code=True)


@pytest.mark.parametrize("model", ["/no/such/dir", "./relative/missing", ""])
def test_missing_checkpoint_is_a_load_error(model: str) -> None:
    with pytest.raises(ModelLoadError):
        skill_class("bert")().init_cpu(model, "text_embedding")


def test_endpoint_close_frees_the_model(task_checkpoint) -> None:
    endpoint = skill_class("bert")().init_cpu(
        str(task_checkpoint("bert", "fill_mask")), "fill_mask"
    )
    assert isinstance(endpoint, Endpoint) and "hf_bert" in repr(endpoint)
    endpoint.close()
    assert endpoint.model is None and endpoint.processor is None


def test_dtype_option_loads_in_that_dtype(task_checkpoint) -> None:
    path = task_checkpoint("bert", "text_classification")
    endpoint = skill_class("bert")().init_cpu(str(path), "text_classification", dtype="bfloat16")
    assert (
        endpoint.dtype == "bfloat16" and next(endpoint.model.parameters()).dtype == torch.bfloat16
    )
    result = skill_class("bert")().handler(endpoint)(["hello world"])
    assert len(result[0]) == 3


@pytest.mark.parametrize(
    ("task", "inputs", "params", "message"),
    [
        ("text_embedding", [], {}, "non-empty"),
        ("text_embedding", [1, 2], {}, "strings"),
        ("text_embedding", [[10**9]], {}, "token ids"),
        ("text_embedding", ["hello " * 500], {"truncate": False}, "at most"),
        ("text_embedding", ["hello"], {"dimensions": 0}, "dimensions"),
        ("fill_mask", ["no mask here"], {}, "exactly once"),
        ("fill_mask", ["[MASK] [MASK]"], {}, "exactly once"),
        ("fill_mask", ["[MASK]"], {"top_k": 0}, "top_k"),
        ("text_classification", ["x"], {"function_to_apply": "exp"}, "function_to_apply"),
        ("token_classification", ["x"], {"aggregation_strategy": "max"}, "aggregation"),
        ("question_answering", [{"question": "q"}], {}, "question"),
        ("question_answering", ["just a string"], {}, "question"),
    ],
)
def test_bad_inputs_raise_invalid_input(task_checkpoint, task, inputs, params, message) -> None:
    skill = skill_class("bert")()
    endpoint = skill.init_cpu(str(task_checkpoint("bert", task)), task)
    handler = skill.handler(endpoint)
    with pytest.raises(InvalidInput, match=message):
        handler(inputs, **params)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": [""]}, "stop"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_bad_generation_params_raise_invalid_input(task_checkpoint, params, message) -> None:
    skill = skill_class("llama")()
    endpoint = skill.init_cpu(str(task_checkpoint("llama", "text_generation")), "text_generation")
    with pytest.raises(InvalidInput, match=message):
        skill.handler(endpoint)(["hello"], **params)


def test_generation_stop_strings_sampling_and_stream(task_checkpoint) -> None:
    skill = skill_class("llama")()
    endpoint = skill.init_cpu(str(task_checkpoint("llama", "text_generation")), "text_generation")
    handler = skill.handler(endpoint)
    base = handler(["hello world"], max_new_tokens=12, ignore_eos=True)[0]
    assert len(base["token_ids"]) == 12 and base["finish_reason"] == "length"
    stop = base["text"][len(base["text"]) // 2 :][:3]
    if stop.strip():
        cut = handler(["hello world"], max_new_tokens=12, ignore_eos=True, stop=[stop])[0]
        assert cut["finish_reason"] == "stop" and stop not in cut["text"]
        assert base["text"].startswith(cut["text"])
        streamed = list(
            handler.stream("hello world", max_new_tokens=12, ignore_eos=True, stop=stop)
        )
        assert "".join(e["text"] for e in streamed) == cut["text"]
    sampled = [
        handler(["hello"], max_new_tokens=8, do_sample=True, temperature=1.5, seed=7)[0]
        for _ in range(2)
    ]
    assert sampled[0]["token_ids"] == sampled[1]["token_ids"]
    chat = handler([[{"role": "user", "content": "hello"}]], max_new_tokens=3)[0]
    assert chat["prompt_tokens"] > 2
    stream = handler.stream("hello", max_new_tokens=500, ignore_eos=True)
    first = [next(stream) for _ in range(3)]
    stream.close()  # the consumer went away: generation stops instead of running 500 tokens
    assert all(e["finish_reason"] is None for e in first)
