"""The stateful OpenVINO IR export of decoder checkpoints, run by OpenVINO GenAI on CPU.

Greedy token ids from GenAI (the stateful SDPA path of ``LLMPipeline`` and the PagedAttention
path of ``ContinuousBatchingPipeline``) must equal transformers' ``generate`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

ov = pytest.importorskip("openvino")
genai = pytest.importorskip("openvino_genai")
pytest.importorskip("openvino_tokenizers")

from hfskills.skillset.runtime import openvino_decoder  # noqa: E402
from hfskills.skillset.runtime.errors import HardwareUnavailable, InvalidInput  # noqa: E402

ARCHITECTURES = ("llama", "qwen2", "gpt2", "mistral", "phi3", "gemma", "gpt_neox", "opt")
PROMPT = "hello world, the capital of france is"
NEW_TOKENS = 12
# Exact f32 everywhere: no bf16/f16 inference, no f16/u8 KV cache, no dynamic quantization.
EXACT = {
    "INFERENCE_PRECISION_HINT": "f32",
    "KV_CACHE_PRECISION": "f32",
    "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
}


def greedy(max_new_tokens: int = NEW_TOKENS, *, ignore_eos: bool = True) -> genai.GenerationConfig:
    """Greedy; by default exactly ``max_new_tokens`` tokens, like the reference."""
    config = genai.GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False)
    config.ignore_eos = ignore_eos
    return config


@pytest.fixture(scope="module")
def exported(
    task_checkpoint: Callable[[str, str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], tuple[Path, Path]]:
    """``exported(model_type) -> (checkpoint, export)``, exported once per module."""
    root = tmp_path_factory.mktemp("openvino_decoder")
    done: dict[str, tuple[Path, Path]] = {}

    def get(model_type: str) -> tuple[Path, Path]:
        if model_type not in done:
            source = task_checkpoint(model_type, "text_generation")
            dest = openvino_decoder.export(str(source), root / model_type)
            done[model_type] = (source, dest)
        return done[model_type]

    return get


def reference(source: Path, ids: np.ndarray, max_new_tokens: int = NEW_TOKENS) -> list[int]:
    model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    prompt = torch.from_numpy(ids)
    with torch.no_grad():
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,  # no early eos: compare every position
            do_sample=False,
        )
    return out[0, ids.shape[1] :].tolist()


def prompt_ids(source: Path, text: str = PROMPT) -> np.ndarray:
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    return tokenizer(text, return_tensors="np").input_ids.astype(np.int64)


def run_to_end(pipe: genai.ContinuousBatchingPipeline, handles: dict[int, object]) -> dict:
    """Step until done, streaming each handle's new tokens as the server engine would."""
    streamed: dict[int, list[int]] = {key: [] for key in handles}
    reasons: dict[int, object] = {}
    while pipe.has_non_finished_requests():
        pipe.step()
        for key, handle in handles.items():
            if handle.can_read():
                for output in handle.read().values():  # {sequence index: GenerationOutput}
                    streamed[key] += output.generated_ids
                    reasons[key] = output.finish_reason
    return {"tokens": streamed, "reasons": reasons}


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_export_matches_transformers(
    model_type: str, exported: Callable[[str], tuple[Path, Path]]
) -> None:
    source, dest = exported(model_type)
    files = {p.name for p in dest.iterdir()}
    for name in ("openvino_model", "openvino_tokenizer", "openvino_detokenizer"):
        assert {f"{name}.xml", f"{name}.bin"} <= files
    assert {"config.json", "generation_config.json", "tokenizer_config.json"} <= files
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(f".{model_type}-")]

    model = ov.Core().read_model(dest / "openvino_model.xml")
    inputs = {port.get_any_name() for port in model.inputs}
    assert inputs == {"input_ids", "attention_mask", "position_ids", "beam_idx"}
    assert [port.get_any_name() for port in model.outputs] == ["logits"]
    layers = transformers.AutoConfig.from_pretrained(source).num_hidden_layers
    assert len(model.get_sinks()) == 2 * layers  # one Assign per past key and value

    ids = prompt_ids(source)
    expected = reference(source, ids)
    config = greedy()

    # The stateful model as exported: ReadValue/Assign KV cache, beam_idx reordering.
    llm = genai.LLMPipeline(str(dest), "CPU", ATTENTION_BACKEND="SDPA", **EXACT)
    assert llm.generate(ov.Tensor(ids), config).tokens[0] == expected
    assert llm.get_tokenizer().encode(PROMPT).input_ids.data.tolist()[0] == ids[0].tolist()

    # Continuous batching: GenAI rewrites the model to PagedAttention.
    pipe = genai.ContinuousBatchingPipeline(str(dest), genai.SchedulerConfig(), "CPU", EXACT)
    handle = pipe.add_request(0, ov.Tensor(ids), config)
    result = run_to_end(pipe, {0: handle})
    assert result["tokens"][0] == expected
    assert result["reasons"][0] == genai.GenerationFinishReason.LENGTH
    assert handle.get_status() == genai.GenerationStatus.FINISHED


def test_continuous_batching_api(exported: Callable[[str], tuple[Path, Path]]) -> None:
    """Concurrent requests, a stop token, stop() and cancel(): the calls the server engine makes."""
    source, dest = exported("llama")
    pipe = genai.ContinuousBatchingPipeline(str(dest), genai.SchedulerConfig(), "CPU", EXACT)
    short, long = prompt_ids(source, "hello world"), prompt_ids(source)
    expected_short, expected_long = reference(source, short, 20), reference(source, long)

    # Two requests of different lengths in one batch, plus one that stops on a chosen token.
    stop_at = expected_long[2]
    stopping = greedy(ignore_eos=False)
    stopping.set_eos_token_id(transformers.AutoConfig.from_pretrained(source).eos_token_id)
    stopping.stop_token_ids = {stopping.eos_token_id, stop_at}
    handles = {
        1: pipe.add_request(1, ov.Tensor(short), greedy(20)),
        2: pipe.add_request(2, ov.Tensor(long), greedy()),
        3: pipe.add_request(3, ov.Tensor(long), stopping),
    }
    result = run_to_end(pipe, handles)
    assert result["tokens"][1] == expected_short
    assert result["tokens"][2] == expected_long
    stop_index = expected_long.index(stop_at)  # the stop token is part of the output
    assert result["tokens"][3] == expected_long[: stop_index + 1]
    assert result["reasons"][3] == genai.GenerationFinishReason.STOP

    # A text prompt goes through the exported tokenizer: same tokens as the id prompt.
    handle = pipe.add_request(4, PROMPT, greedy())
    assert run_to_end(pipe, {4: handle})["tokens"][4] == expected_long

    # stop(): finishes early; tokens read before stay valid, the handle reports STOP.
    stopped = pipe.add_request(5, ov.Tensor(long), greedy(40))
    cancelled = pipe.add_request(6, ov.Tensor(long), greedy(40))
    pipe.step()
    pipe.step()
    first = [t for output in stopped.read().values() for t in output.generated_ids]
    assert first == expected_long[: len(first)] and first
    stopped.stop()
    cancelled.cancel()  # dropped: the handle must not be read afterwards
    assert stopped.get_status() == genai.GenerationStatus.STOP
    assert cancelled.get_status() == genai.GenerationStatus.CANCEL
    steps = 0
    while pipe.has_non_finished_requests():
        pipe.step()
        steps += 1
    assert steps <= 1


def test_unsupported_configs_raise_hardware_unavailable(tmp_path: Path) -> None:
    sliding = transformers.MistralConfig(sliding_window=16)
    assert "sliding_attention" in (openvino_decoder.unsupported_reason(sliding) or "")
    assert not openvino_decoder.supported(transformers.T5Config())
    assert openvino_decoder.supported(transformers.LlamaConfig())
    with pytest.raises(HardwareUnavailable, match="sliding_attention"):
        openvino_decoder.require_supported(sliding)

    sliding.save_pretrained(tmp_path / "sliding")
    with pytest.raises(HardwareUnavailable):
        openvino_decoder.export(str(tmp_path / "sliding"), tmp_path / "out")
    with pytest.raises(InvalidInput):
        openvino_decoder.export(str(tmp_path / "sliding"), tmp_path / "out", precision="int4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sliding"]  # nothing half-written
