"""The staged handler contract (prepare -> forward -> finish), on tiny checkpoints.

Parity: running the stages apart, as the host does (each request prepared on its own, one
forward over items from several requests, in any order), gives what the plain call
``handler(inputs)`` gives, and that is what transformers gives. Usage: prepare's token counts
are the tokenizer's own. No mocks, no timing.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
import torch
import transformers

from hfskills.skillset import runtime
from hfskills.skillset.runtime import InvalidInput, Prepared, Staged
from tests.checkpoints import tiny_image
from tests.conftest import skill_class

TEXT_TASKS = (
    "text_embedding",
    "text_classification",
    "token_classification",
    "fill_mask",
    "question_answering",
)
TEXTS = ["hello world", "the capital of france is paris", "a b c", "one two three four five six"]


def load(task_checkpoint: Any, model_type: str, task: str) -> tuple[Staged, Any, Any]:
    path = task_checkpoint(model_type, task)
    skill = skill_class(model_type)()
    endpoint = skill.init_cpu(str(path), task)
    return skill.handler(endpoint), endpoint, path


def inputs_for(task: str, tokenizer: Any) -> list[Any]:
    if task == "fill_mask":
        return [f"{t} {tokenizer.mask_token}" for t in TEXTS]
    if task == "question_answering":
        return [{"question": "what is it?", "context": t} for t in TEXTS]
    return list(TEXTS)


def staged_apart(handler: Staged, inputs: list[Any], params: dict[str, Any]) -> list[Any]:
    """As the host runs it: each input prepared as a request of its own, then one batch in
    reverse order (so every row sits elsewhere than in the plain call)."""
    items = [handler.run_prepare([x], params)[0] for x in inputs]
    batch = items[::-1]
    results = handler.run_finish(batch, handler.run_forward(batch, params), params)
    return results[::-1]


def assert_same(a: Any, b: Any, atol: float = 1e-5) -> None:
    """Equal structure, equal strings and ints, floats within ``atol``."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=atol)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key], atol)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y, atol)
    else:
        assert a == b


@pytest.mark.parametrize("task", TEXT_TASKS)
def test_stages_apart_equal_the_plain_call(task_checkpoint: Any, task: str) -> None:
    handler, endpoint, _ = load(task_checkpoint, "bert", task)
    assert isinstance(handler, Staged)
    inputs = inputs_for(task, endpoint.processor)
    assert_same(staged_apart(handler, inputs, {}), handler(inputs))


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert", "gpt2", "clip"])
def test_embedding_and_classification_equal_transformers(
    task_checkpoint: Any, model_type: str
) -> None:
    task = "text_embedding" if model_type != "gpt2" else "text_classification"
    handler, _, path = load(task_checkpoint, model_type, task)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    texts = TEXTS[:1] if model_type == "gpt2" else TEXTS  # gpt2 pads with EOS: one at a time
    got = staged_apart(handler, texts, {})
    for text, result in zip(texts, got, strict=True):
        enc = tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            if model_type == "clip":
                model = transformers.AutoModel.from_pretrained(path).eval()
                out = model.get_text_features(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
                )
                expected = (out if isinstance(out, torch.Tensor) else out.pooler_output)[0]
            elif task == "text_embedding":
                model = transformers.AutoModel.from_pretrained(path).eval()
                hidden = model(
                    **{k: v for k, v in enc.items() if k != "token_type_ids"}
                ).last_hidden_state
                expected = torch.nn.functional.normalize(hidden.mean(dim=1), dim=-1)[0]
            else:
                model = transformers.AutoModelForSequenceClassification.from_pretrained(path)
                expected = model.eval()(**enc).logits.softmax(-1)[0]
        if task == "text_embedding":
            assert np.allclose(result, expected.tolist(), atol=1e-5)
        else:
            scores = sorted(expected.tolist(), reverse=True)
            assert np.allclose([r["score"] for r in result], scores, atol=1e-5)


@pytest.mark.parametrize(
    ("model_type", "task"),
    [
        ("vit", "image_classification"),
        ("convnext", "image_classification"),
        ("clip", "image_embedding"),
    ],
)
def test_image_stages_apart_equal_the_plain_call(
    task_checkpoint: Any, model_type: str, task: str
) -> None:
    handler, _, _ = load(task_checkpoint, model_type, task)
    assert isinstance(handler, Staged)
    images = [tiny_image(48, seed=0), tiny_image(40, seed=1), tiny_image(64, seed=2)]
    assert [item.tokens for item in handler.run_prepare(images, {})] == [1, 1, 1]
    assert_same(staged_apart(handler, images, {}), handler(images))


@pytest.mark.parametrize(
    "model_type",
    ["bert", "roberta", "xlm-roberta", "electra", "albert", "distilbert", "mpnet", "deberta-v2"],
)
def test_traced_forward_equals_each_input_alone(task_checkpoint: Any, model_type: str) -> None:
    """On the CPU the forward runs as a TorchScript trace where that is exact (checked at the
    first batch against the eager call, on probes of other shapes and padding): the vectors
    still equal each input run alone through transformers, whether it traced or not."""
    handler, _, path = load(task_checkpoint, model_type, "text_embedding")
    words = "the capital of france is paris and it is a city".split()
    texts = [" ".join(words[: 1 + i % len(words)] * (1 + i // 5)) for i in range(12)]
    model = transformers.AutoModel.from_pretrained(path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    first = staged_apart(handler, texts[:5], {})  # the trace is made (or refused) here
    got = first + staged_apart(handler, texts[5:], {})  # and used here, on other shapes
    for text, vector in zip(texts, got, strict=True):
        with torch.no_grad():
            hidden = model(**tokenizer([text], return_tensors="pt")).last_hidden_state
        expected = torch.nn.functional.normalize(hidden.mean(dim=1), dim=-1)[0]
        assert np.allclose(vector, expected.tolist(), atol=1e-5), text
    traced = inspect.getclosurevars(handler.forward).nonlocals["hidden_states"]
    assert isinstance(traced, runtime.staged.Traced)
    if model_type == "bert":  # the benchmark's architecture: its trace is exact, and in use
        assert [t is not None for t in traced.traces.values()] == [True]


def test_the_handler_signature_is_the_union_of_the_stages(task_checkpoint: Any) -> None:
    handler, _, _ = load(task_checkpoint, "bert", "text_embedding")
    params = inspect.signature(handler).parameters
    assert list(params) == ["inputs", "truncate", "normalize", "dimensions"]
    assert handler.params_for("finish", {"truncate": False, "dimensions": 4}) == {"dimensions": 4}
    assert handler.params_for("prepare", {"truncate": False, "dimensions": 4}) == {
        "truncate": False
    }
    with pytest.raises(TypeError):
        handler(["hello"], temperature=1.0)
    assert len(handler(["hello"], dimensions=4)[0]) == 4


def test_a_staged_handler_of_plain_functions() -> None:
    def prepare(inputs: list[str], *, upper: bool = False) -> list[Prepared]:
        return [Prepared(x.upper() if upper else x, len(x)) for x in inputs]

    def forward(batch: list[Prepared]) -> list[str]:
        return [item.features[::-1] for item in batch]

    def finish(batch: list[Prepared], output: list[str], *, suffix: str = "") -> list[str]:
        return [out + suffix for out in output]

    handler = Staged(prepare, forward, finish)
    assert handler(["ab", "cde"], upper=True, suffix="!") == ["BA!", "EDC!"]
    assert [i.tokens for i in handler.run_prepare(["ab", "cde"], {})] == [2, 3]

    def finish_clash(batch: list[Prepared], output: Any, *, upper: bool = True) -> list[Any]:
        return output

    with pytest.raises(TypeError, match="upper"):
        Staged(prepare, forward, finish_clash)


# -- prepare and collate ---------------------------------------------------------------------


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_collate_of_prepared_inputs_equals_encode(task_checkpoint: Any, padding_side: str) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        task_checkpoint("bert", "text_embedding")
    )
    tokenizer.padding_side = padding_side
    ids = [tokenizer(t)["input_ids"] for t in TEXTS]
    pairs = {"pairs": TEXTS[::-1]}
    for inputs, extra in ((TEXTS, {}), (ids, {}), (TEXTS, pairs)):
        encoded = runtime.text.encode(tokenizer, inputs, limit=32, **extra)
        collated = runtime.text.collate(
            tokenizer, runtime.text.prepare(tokenizer, inputs, limit=32, **extra)
        )
        assert collated.keys() == encoded.keys()
        for key in encoded:
            assert torch.equal(collated[key], encoded[key]), key


def test_prepare_counts_real_tokens_and_truncates(task_checkpoint: Any) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        task_checkpoint("bert", "text_embedding")
    )
    items = runtime.text.prepare(tokenizer, TEXTS, limit=32)
    assert [i.tokens for i in items] == [len(tokenizer(t)["input_ids"]) for t in TEXTS]
    long = " ".join(["word"] * 100)
    assert runtime.text.prepare(tokenizer, [long], limit=16)[0].tokens == 16
    with pytest.raises(InvalidInput, match="at most 16"):
        runtime.text.prepare(tokenizer, [long], limit=16, truncate=False)
    with pytest.raises(InvalidInput, match="token ids"):
        runtime.text.prepare(tokenizer, [[1, 2, 10**8]], limit=16)


def test_a_batch_may_mix_token_ids_and_strings(task_checkpoint: Any) -> None:
    """Requests with equal params share a batch even when one sends token ids: the id input
    has no token_type_ids, and zeros (what the model uses without them) are filled in."""
    handler, endpoint, _ = load(task_checkpoint, "bert", "text_embedding")
    ids = endpoint.processor(TEXTS[1])["input_ids"]
    items = handler.run_prepare([TEXTS[0]], {}) + handler.run_prepare([ids], {})
    mixed = handler.run_finish(items, handler.run_forward(items, {}), {})
    assert_same(mixed, [handler([TEXTS[0]])[0], handler([ids])[0]])
    assert mixed[1] == pytest.approx(handler([TEXTS[1]])[0], abs=1e-5)


def test_fill_mask_names_the_input_without_a_mask(task_checkpoint: Any) -> None:
    handler, endpoint, _ = load(task_checkpoint, "bert", "fill_mask")
    mask = endpoint.processor.mask_token
    with pytest.raises(InvalidInput, match=r"inputs\[1\]"):
        handler.run_prepare([f"a {mask}", "no mask here"], {})


def test_a_same_length_handler_never_pads() -> None:
    """``same_length`` (the ``unpadded`` variant: FNet, Nystromformer, YOSO, ConvBERT): each
    forward sees inputs of one token count only, and results come back in input order."""
    seen: list[list[int]] = []

    def prepare(inputs: list[str]) -> list[Prepared]:
        return [Prepared(x, len(x)) for x in inputs]

    def forward(batch: list[Prepared]) -> list[str]:
        seen.append([item.tokens for item in batch])
        return [item.features.upper() for item in batch]

    def finish(batch: list[Prepared], output: list[str]) -> list[str]:
        return output

    inputs = ["ab", "cde", "xy", "f", "ghi"]
    padded = Staged(prepare, forward, finish)
    assert padded(inputs) == [x.upper() for x in inputs] and seen == [[2, 3, 2, 1, 3]]
    seen.clear()
    unpadded = Staged(prepare, forward, finish, same_length=True)
    assert unpadded(inputs) == [x.upper() for x in inputs]
    assert sorted(seen) == [[1], [2, 2], [3, 3]]


def test_fnet_answers_alike_alone_and_in_a_batch(tmp_path: Any) -> None:
    """FNet mixes every position by a Fourier transform (no attention mask): padded into a
    batch, a text's answer changed. Its skill declares ``unpadded``, so it no longer does."""
    from hfskills.generator.sweep import tiny
    from hfskills.generator.taxonomy import classify

    skill = skill_class("fnet")()
    assert skill.tasks["text_classification"].variant == "unpadded"
    path = tiny.build("fnet", classify("fnet"), tmp_path)["text_classification"]
    handler = skill.handler(skill.init_cpu(str(path), "text_classification"))
    texts = ["hello world", "the capital of france is paris", "a"]
    alone = [handler([text])[0] for text in texts]
    assert handler(texts) == alone
