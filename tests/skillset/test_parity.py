"""Parity: every committed skill's CPU output equals transformers' own on the same checkpoint.

Each test loads a tiny random-weight checkpoint through the skill (exactly as from the hub)
and through transformers directly (Auto classes and pipelines, independent of the skill's
code), runs the same inputs, and compares: `torch.allclose` with the tolerance stated per
test, exact token ids for greedy generation, identical labels and span offsets.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any

import numpy as np
import pytest
import torch
import transformers

from hfskills.generator.cli import committed_model_types
from hfskills.generator.render import HARDWARE
from tests.checkpoints import ARCHITECTURES, tiny_audio, tiny_image
from tests.conftest import skill_class
from tests.generator.test_render import SKILLSET

ATOL = 1e-5  # float32 on the same CPU: only summation order may differ
TEXTS = ["hello world", "the capital of france is paris", "a b c"]


def recipe_types() -> list[str]:
    """Committed skills with a hand-tuned recipe in tests/checkpoints.py; the coverage sweep
    (scripts/coverage) verifies every other committed skill."""
    return [t for t in committed_model_types(SKILLSET) if t in ARCHITECTURES]


def with_task(task: str) -> list[str]:
    return [t for t in recipe_types() if task in skill_class(t).tasks]


def with_variant(task: str, *variants: str) -> list[str]:
    return [t for t in with_task(task) if skill_class(t).tasks[task].variant in variants]


def skill_handler(task_checkpoint: Any, model_type: str, task: str) -> tuple[Any, Any]:
    path = task_checkpoint(model_type, task)
    skill = skill_class(model_type)()
    endpoint = skill.init_cpu(str(path), task)
    assert (endpoint.hardware, endpoint.device, endpoint.dtype) == ("cpu", "cpu", "float32")
    assert endpoint.memory_bytes > 0
    return getattr(skill, f"create_cpu_{task}_endpoint_handler")(endpoint), path


def forward_inputs(model: Any, batch: Any, method: str = "forward") -> dict[str, Any]:
    accepted = inspect.signature(getattr(model, method)).parameters
    return {k: v for k, v in batch.items() if k in accepted}


# -- text encoders ---------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", with_task("text_embedding"))
def test_text_embedding(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "text_embedding")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    family = skill_class(model_type).family
    if family == "vision-text":
        model = transformers.AutoModel.from_pretrained(path).eval()
        # SigLIP was trained on texts padded to max_length and pools the last position: a
        # shorter pad would make a text's vector depend on its batch
        padding = "max_length" if "siglip" in model_type else True
        limit = min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings)
        batch = tokenizer(
            TEXTS, padding=padding, max_length=limit, truncation=True, return_tensors="pt"
        )
        with torch.no_grad():
            out = model.get_text_features(**forward_inputs(model, batch, "get_text_features"))
        expected = out if isinstance(out, torch.Tensor) else out.pooler_output
    else:
        model = transformers.AutoModel.from_pretrained(path).eval()
        batch = tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**forward_inputs(model, batch)).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    got = torch.tensor(handler(TEXTS))
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=ATOL), (got - expected).abs().max()


@pytest.mark.parametrize("model_type", with_task("fill_mask"))
def test_fill_mask(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "fill_mask")
    pipe = transformers.pipeline("fill-mask", model=str(path), device="cpu")
    mask = pipe.tokenizer.mask_token
    texts = [f"the capital of france is {mask}", f"hello {mask} world"]
    got = handler(texts, top_k=4)
    for text, result in zip(texts, got, strict=True):
        expected = pipe(text, top_k=4)
        assert [r["token"] for r in result] == [e["token"] for e in expected]
        assert np.allclose([r["score"] for r in result], [e["score"] for e in expected], atol=ATOL)
        assert [r["sequence"] for r in result] == [e["sequence"] for e in expected]


@pytest.mark.parametrize("model_type", with_task("text_classification"))
def test_text_classification(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "text_classification")
    pipe = transformers.pipeline("text-classification", model=str(path), device="cpu")
    texts = TEXTS[:1] if skill_class(model_type).family == "decoder" else TEXTS
    for text, result in zip(texts, handler(texts), strict=True):
        expected = pipe(text, top_k=None)
        assert [r["label"] for r in result] == [e["label"] for e in expected]
        assert {r["label"] for r in result} == {"LABEL_A", "LABEL_B", "LABEL_C"}
        assert np.allclose([r["score"] for r in result], [e["score"] for e in expected], atol=ATOL)


@pytest.mark.parametrize("model_type", with_task("text_classification"))
def test_text_classification_batch_equals_single(task_checkpoint: Any, model_type: str) -> None:
    """Padding inside a batch (right or left) must not change any row's scores."""
    handler, _ = skill_handler(task_checkpoint, model_type, "text_classification")
    batched = handler(TEXTS)
    for text, row in zip(TEXTS, batched, strict=True):
        alone = handler([text])[0]
        assert [r["label"] for r in row] == [r["label"] for r in alone]
        assert np.allclose([r["score"] for r in row], [r["score"] for r in alone], atol=1e-4)


@pytest.mark.parametrize("model_type", with_task("token_classification"))
def test_token_classification(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "token_classification")
    pipe = transformers.pipeline("token-classification", model=str(path), device="cpu")
    for text, result in zip(TEXTS, handler(TEXTS, ignore_labels=[]), strict=True):
        expected = pipe(text, ignore_labels=[])
        keys = ("entity", "index", "start", "end")
        assert [tuple(r[k] for k in keys) for r in result] == [
            tuple(e[k] for k in keys) for e in expected
        ]
        assert np.allclose([r["score"] for r in result], [e["score"] for e in expected], atol=ATOL)
        assert all(text[r["start"] : r["end"]] == r["word"] for r in result)


def _reference_answer(model: Any, tokenizer: Any, question: str, context: str) -> dict[str, Any]:
    """Brute force over every span, independent of the skill's vectorised search."""
    enc = tokenizer(question, context, return_tensors="pt", return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")[0].tolist()
    in_context = [sid == 1 for sid in enc.sequence_ids(0)]
    with torch.no_grad():
        out = model(**forward_inputs(model, enc))
    start = out.start_logits[0].masked_fill(~torch.tensor(in_context), -1e4).softmax(-1)
    end = out.end_logits[0].masked_fill(~torch.tensor(in_context), -1e4).softmax(-1)
    best = max(
        (
            (float(start[s] * end[e]), s, e)
            for s, e in itertools.product(range(len(offsets)), repeat=2)
            if in_context[s] and in_context[e] and 0 <= e - s < 15
        ),
    )
    score, s, e = best
    return {
        "answer": context[offsets[s][0] : offsets[e][1]],
        "score": score,
        "start": offsets[s][0],
        "end": offsets[e][1],
    }


@pytest.mark.parametrize("model_type", with_task("question_answering"))
def test_question_answering(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "question_answering")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(path).eval()
    inputs = [
        {"question": "what is the capital of france", "context": "the capital of france is paris"},
        {"question": "who", "context": "hello world and a b c"},
    ]
    for item, got in zip(inputs, handler(inputs), strict=True):
        expected = _reference_answer(model, tokenizer, item["question"], item["context"])
        assert (got["answer"], got["start"], got["end"]) == (
            expected["answer"],
            expected["start"],
            expected["end"],
        )
        assert got["score"] == pytest.approx(expected["score"], abs=ATOL)


# -- generation ------------------------------------------------------------------------------


def _cut_at_eos(ids: list[int], eos: set[int]) -> list[int]:
    return next((ids[:i] for i, t in enumerate(ids) if t in eos), ids)


def _eos(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


@pytest.mark.parametrize("model_type", with_task("text_generation"))
def test_text_generation_greedy_exact_tokens(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "text_generation")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, padding_side="left")
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts = ["hello world", "the capital of france is"]
    batch = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **batch, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    expected = [
        _cut_at_eos(row[batch["input_ids"].shape[1] :], _eos(model)) for row in out.tolist()
    ]
    got = handler(prompts, max_new_tokens=8)
    assert [g["token_ids"] for g in got] == expected
    for g in got:
        assert g["finish_reason"] == ("length" if len(g["token_ids"]) == 8 else "stop")
        assert g["text"] == tokenizer.decode(g["token_ids"], skip_special_tokens=True)
    # one prompt alone gives the same tokens as inside the batch
    single = tokenizer(prompts[:1], return_tensors="pt")
    with torch.no_grad():
        alone = model.generate(
            **single, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    assert handler(prompts[:1], max_new_tokens=8)[0]["token_ids"] == _cut_at_eos(
        alone[0, single["input_ids"].shape[1] :].tolist(), _eos(model)
    )


@pytest.mark.parametrize("model_type", with_task("text_generation"))
def test_text_generation_stream_matches_batch(task_checkpoint: Any, model_type: str) -> None:
    handler, _ = skill_handler(task_checkpoint, model_type, "text_generation")
    whole = handler(["hello world"], max_new_tokens=6)[0]
    events = list(handler.stream("hello world", max_new_tokens=6))
    assert [e["token_id"] for e in events[:-1]] == whole["token_ids"]
    assert "".join(e["text"] for e in events) == whole["text"] == events[-1]["generated_text"]
    assert events[-1]["finish_reason"] == whole["finish_reason"]


@pytest.mark.parametrize("model_type", with_task("text2text_generation"))
def test_text2text_generation_greedy_exact_tokens(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "text2text_generation")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    prompts = ["hello world", "the capital of france is paris"]
    batch = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    expected = [_cut_at_eos(row[1:], _eos(model)) for row in out.tolist()]
    assert [g["token_ids"] for g in handler(prompts, max_new_tokens=8)] == expected


# -- vision ------------------------------------------------------------------------------------

IMAGES = [tiny_image(48, seed=0), tiny_image(40, seed=1)]


@pytest.mark.parametrize("model_type", with_task("image_classification"))
def test_image_classification(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "image_classification")
    pipe = transformers.pipeline("image-classification", model=str(path), device="cpu")
    for image, result in zip(IMAGES, handler(IMAGES), strict=True):
        expected = pipe(image, top_k=None)
        assert [r["label"] for r in result] == [e["label"] for e in expected]
        assert np.allclose([r["score"] for r in result], [e["score"] for e in expected], atol=ATOL)


@pytest.mark.parametrize("model_type", with_task("object_detection"))
def test_object_detection(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "object_detection")
    pipe = transformers.pipeline("object-detection", model=str(path), device="cpu")
    for image, result in zip(IMAGES, handler(IMAGES, threshold=0.0), strict=True):
        expected = sorted(pipe(image, threshold=0.0), key=lambda d: -d["score"])
        assert len(result) == len(expected) > 0
        assert [(r["label"], r["box"]) for r in result] == [
            (e["label"], e["box"]) for e in expected
        ]
        assert np.allclose([r["score"] for r in result], [e["score"] for e in expected], atol=ATOL)
        assert all(0 <= r["box"]["xmin"] <= r["box"]["xmax"] <= image.width for r in result)


@pytest.mark.parametrize("model_type", with_task("zero_shot_image_classification"))
def test_zero_shot_image_classification(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "zero_shot_image_classification")
    pipe = transformers.pipeline("zero-shot-image-classification", model=str(path), device="cpu")
    labels = ["hello", "world", "paris"]
    for image, result in zip(IMAGES, handler(IMAGES, candidate_labels=labels), strict=True):
        expected = pipe(image, candidate_labels=labels)
        assert np.allclose(
            [r["score"] for r in sorted(result, key=lambda r: r["label"])],
            [e["score"] for e in sorted(expected, key=lambda e: e["label"])],
            atol=ATOL,
        )


@pytest.mark.parametrize("model_type", with_variant("image_embedding", "default"))
def test_image_embedding(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "image_embedding")
    processor = transformers.AutoImageProcessor.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        out = model.get_image_features(**processor(images=IMAGES, return_tensors="pt"))
    expected = out if isinstance(out, torch.Tensor) else out.pooler_output
    assert torch.allclose(torch.tensor(handler(IMAGES)), expected, atol=ATOL)


@pytest.mark.parametrize("model_type", with_task("image_to_text"))
def test_image_to_text_greedy_exact_tokens(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "image_to_text")
    processor = transformers.AutoProcessor.from_pretrained(path)
    model = transformers.AutoModelForImageTextToText.from_pretrained(path).eval()
    with torch.no_grad():
        out = model.generate(
            **processor(images=IMAGES, return_tensors="pt"), max_new_tokens=6, do_sample=False
        )
    expected = [_cut_at_eos(row[1:], _eos(model)) for row in out.tolist()]
    assert [g["token_ids"] for g in handler(IMAGES, max_new_tokens=6)] == expected


# -- audio -------------------------------------------------------------------------------------

AUDIO = [tiny_audio(1.0, seed=0), tiny_audio(0.6, seed=1)]


@pytest.mark.parametrize("model_type", with_task("automatic_speech_recognition"))
def test_automatic_speech_recognition(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "automatic_speech_recognition")
    processor = transformers.AutoProcessor.from_pretrained(path)
    rate = processor.feature_extractor.sampling_rate
    if skill_class(model_type).model_classes["automatic_speech_recognition"].endswith("ForCTC"):
        model = transformers.AutoModelForCTC.from_pretrained(path).eval()
        expected = []
        for wave in AUDIO:  # one clip at a time, as transformers' pipeline runs them
            feats = processor.feature_extractor([wave], sampling_rate=rate, return_tensors="pt")
            with torch.no_grad():
                expected += processor.batch_decode(model(**feats).logits.argmax(-1))
    else:
        model = transformers.AutoModelForSpeechSeq2Seq.from_pretrained(path).eval()
        feats = processor.feature_extractor(AUDIO, sampling_rate=rate, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**feats, max_new_tokens=10)
        expected = [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
    assert [
        r["text"]
        for r in handler(AUDIO, **({} if "CTC" in str(type(model)) else {"max_new_tokens": 10}))
    ] == expected


@pytest.mark.parametrize("model_type", with_task("audio_classification"))
def test_audio_classification(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "audio_classification")
    extractor = transformers.AutoFeatureExtractor.from_pretrained(path)
    model = transformers.AutoModelForAudioClassification.from_pretrained(path).eval()
    got = handler(AUDIO)
    for wave, result in zip(AUDIO, got, strict=True):
        feats = extractor([wave], sampling_rate=extractor.sampling_rate, return_tensors="pt")
        with torch.no_grad():
            probs = model(**forward_inputs(model, feats)).logits.softmax(-1)[0]
        order = probs.argsort(descending=True).tolist()
        assert [r["label"] for r in result] == [model.config.id2label[i] for i in order]
        assert np.allclose([r["score"] for r in result], probs[order].tolist(), atol=1e-4)


def test_every_committed_task_has_a_parity_test() -> None:
    tested = {
        name.removeprefix("test_").split("_greedy")[0]
        for name in globals()
        if name.startswith("test_")
    }
    for model_type in recipe_types():
        for task in skill_class(model_type).tasks:
            assert task in tested, f"{model_type}:{task} has no parity test"
    assert HARDWARE[0] == "cpu"


# -- dense vision, open-vocabulary detection, backbone embeddings ------------------------------


def _png(data: str) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


@pytest.mark.parametrize("model_type", with_variant("image_embedding", "pooled"))
def test_image_embedding_pooled(task_checkpoint: Any, model_type: str) -> None:
    """A vision backbone's embedding is what transformers' image-feature-extraction pipeline
    returns with pool=True (pooler_output), flattened."""
    handler, path = skill_handler(task_checkpoint, model_type, "image_embedding")
    pipe = transformers.pipeline("image-feature-extraction", model=str(path), device="cpu")
    got = handler(IMAGES)
    for image, vector in zip(IMAGES, got, strict=True):
        expected = torch.tensor(pipe(image, pool=True)).flatten()
        assert torch.allclose(torch.tensor(vector), expected, atol=ATOL)
    assert handler(IMAGES, normalize=True)[0] == pytest.approx(
        torch.nn.functional.normalize(torch.tensor(got[0]), dim=0).tolist(), abs=ATOL
    )


@pytest.mark.parametrize("model_type", with_task("zero_shot_object_detection"))
def test_zero_shot_object_detection(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "zero_shot_object_detection")
    pipe = transformers.pipeline("zero-shot-object-detection", model=str(path), device="cpu")
    labels = ["cat", "dog"]
    got = handler(IMAGES, candidate_labels=labels, threshold=0.0)
    for image, result in zip(IMAGES, got, strict=True):
        expected = pipe(image, candidate_labels=labels, threshold=0.0)
        assert len(result) == len(expected) > 0
        assert [(r["label"], r["box"]) for r in result] == [
            (e["label"], e["box"]) for e in expected
        ]
        assert np.allclose([r["score"] for r in result], [e["score"] for e in expected], atol=ATOL)
    top = handler(IMAGES[:1], candidate_labels=labels, top_k=3)[0]
    assert top == pipe(IMAGES[0], candidate_labels=labels, top_k=3)


@pytest.mark.parametrize("model_type", with_task("depth_estimation"))
def test_depth_estimation(task_checkpoint: Any, model_type: str) -> None:
    handler, path = skill_handler(task_checkpoint, model_type, "depth_estimation")
    pipe = transformers.pipeline("depth-estimation", model=str(path), device="cpu")
    for image, result in zip(IMAGES, handler(IMAGES), strict=True):
        expected = pipe(image)
        depth = torch.tensor(result["predicted_depth"])
        assert depth.shape == (image.height, image.width) == expected["predicted_depth"].shape
        assert torch.allclose(depth, expected["predicted_depth"], atol=ATOL)
        picture = _png(result["depth"]).astype(int)
        assert picture.shape == (image.height, image.width)
        assert np.abs(picture - np.asarray(expected["depth"]).astype(int)).max() <= 1


@pytest.mark.parametrize("model_type", with_task("image_segmentation"))
def test_image_segmentation(task_checkpoint: Any, model_type: str) -> None:
    """Segments as transformers' image-segmentation pipeline returns them for the declared
    subtask (thresholds 0 so that random weights still give segments), and semantic ones."""
    handler, path = skill_handler(task_checkpoint, model_type, "image_segmentation")
    subtask = skill_class(model_type).tasks["image_segmentation"].variant
    pipe = transformers.pipeline("image-segmentation", model=str(path), device="cpu")
    zero = {"threshold": 0.0, "mask_threshold": 0.0, "overlap_mask_area_threshold": 0.0}
    for image, result in zip(IMAGES, handler(IMAGES, **zero), strict=True):
        expected = pipe(image, subtask=subtask, **zero)
        assert len(result) == len(expected) > 0
        assert [r["label"] for r in result] == [e["label"] for e in expected]
        if subtask == "semantic":
            assert all(r["score"] is None for r in result)
        else:
            assert np.allclose(
                [r["score"] for r in result], [e["score"] for e in expected], atol=ATOL
            )
        for r, e in zip(result, expected, strict=True):
            assert np.array_equal(_png(r["mask"]), np.asarray(e["mask"]))
    semantic_too = hasattr(pipe.image_processor, "post_process_semantic_segmentation")
    if subtask != "semantic" and semantic_too:
        semantic = handler(IMAGES, subtask="semantic")
        for image, result in zip(IMAGES, semantic, strict=True):
            expected = pipe(image, subtask="semantic")
            assert [r["label"] for r in result] == [e["label"] for e in expected]
            for r, e in zip(result, expected, strict=True):
                assert np.array_equal(_png(r["mask"]), np.asarray(e["mask"]))


# -- text to audio -----------------------------------------------------------------------------


def _wav(data: str) -> tuple[np.ndarray, int]:
    import base64
    import io

    import soundfile

    audio, rate = soundfile.read(io.BytesIO(base64.b64decode(data)), dtype="float32")
    return audio, rate


@pytest.mark.parametrize("model_type", with_task("text_to_audio"))
def test_text_to_audio(task_checkpoint: Any, model_type: str) -> None:
    """The waveform of transformers' text-to-audio pipeline under the same seed (VITS samples
    noise), read back from the skill's float32 WAV; a seed makes the call reproducible."""
    handler, path = skill_handler(task_checkpoint, model_type, "text_to_audio")
    pipe = transformers.pipeline("text-to-audio", model=str(path), device="cpu")
    texts = ["hello world", "the capital of france is paris"]
    got = handler(texts, seed=3)
    torch.manual_seed(3)
    expected = [pipe(text) for text in texts]
    for result, reference in zip(got, expected, strict=True):
        audio, rate = _wav(result["audio"])
        assert rate == result["sampling_rate"] == reference["sampling_rate"]
        assert audio.shape == reference["audio"].shape and audio.size > 0
        assert np.allclose(audio, reference["audio"], atol=ATOL)
    assert handler(texts[:1], seed=3) == got[:1]
    state = torch.random.get_rng_state()
    handler(texts[:1], seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
