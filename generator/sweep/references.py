# The sweep's oracle: for each task, what transformers itself returns on the same checkpoint
# (Auto classes and pipelines, never the skill's code), and the comparison with the skill's
# output. Hand-written because "the same answer" differs per task: float tolerances for scores,
# exact token ids for greedy generation, identical labels, spans and boxes.
"""References per task: ``REFERENCES[task](handler, path, skill_cls)`` raises `Mismatch`.

Tolerances (float32 on one CPU, where only summation order may differ): ``ATOL`` for
embeddings, scores and logits; audio classification ``AUDIO_ATOL`` (feature extraction is
recomputed per clip). Token ids, labels, spans, boxes and texts must be identical. Append a
function to :data:`REFERENCES` to verify a new task.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from .recipes import tiny_audio, tiny_image

ATOL = 1e-5
AUDIO_ATOL = 1e-4
TEXTS = ["hello world", "the capital of france is paris", "a b c"]
IMAGES = [tiny_image(48, seed=0), tiny_image(40, seed=1)]
AUDIO = [tiny_audio(1.0, seed=0), tiny_audio(0.6, seed=1)]

Reference = Callable[[Any, Path, type], None]


class Mismatch(AssertionError):
    """The skill's output differs from transformers' own."""


def check(condition: Any, message: str) -> None:
    if not condition:
        raise Mismatch(message)


def close(got: Any, expected: Any, what: str, atol: float = ATOL) -> None:
    got_t = torch.as_tensor(np.asarray(got, dtype=np.float64))
    exp_t = torch.as_tensor(np.asarray(expected, dtype=np.float64))
    check(got_t.shape == exp_t.shape, f"{what}: shape {tuple(got_t.shape)} != {tuple(exp_t.shape)}")
    if got_t.numel():
        diff = float((got_t - exp_t).abs().max())
        check(diff <= atol, f"{what}: max abs difference {diff:.3g} > {atol}")


def equal(got: Any, expected: Any, what: str) -> None:
    check(got == expected, f"{what}: {_short(got)} != {_short(expected)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def forward_inputs(model: Any, batch: Any, method: str = "forward") -> dict[str, Any]:
    accepted = inspect.signature(getattr(model, method)).parameters
    return {k: v for k, v in batch.items() if k in accepted}


def _eos(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


def _cut_at_eos(ids: list[int], eos: set[int]) -> list[int]:
    return next((ids[:i] for i, t in enumerate(ids) if t in eos), ids)


# -- text ------------------------------------------------------------------------------------


def text_embedding(handler: Any, path: Path, skill: type) -> None:
    """Each text embedded alone (no padding): what one text's vector is, whatever the skill
    batches it with."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    rows = []
    # SigLIP was trained on texts padded to max_length (transformers' pipelines pad so), at
    # most the text model's positions
    padding = "max_length" if "siglip" in skill.model_type else False
    config = getattr(model.config, "text_config", model.config)
    limit = min(tokenizer.model_max_length, config.max_position_embeddings)
    for text in TEXTS:
        batch = tokenizer(
            [text], padding=padding, max_length=limit, truncation=True, return_tensors="pt"
        )
        with torch.no_grad():
            if skill.family == "vision-text":
                out = model.get_text_features(**forward_inputs(model, batch, "get_text_features"))
                rows.append(out if isinstance(out, torch.Tensor) else out.pooler_output)
            else:
                hidden = model(**forward_inputs(model, batch)).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                mean = (hidden * mask).sum(1) / mask.sum(1)
                rows.append(torch.nn.functional.normalize(mean, dim=-1))
    close(handler(TEXTS), torch.cat(rows), "embeddings")


def fill_mask(handler: Any, path: Path, skill: type) -> None:
    pipe = transformers.pipeline("fill-mask", model=str(path), device="cpu")
    mask = pipe.tokenizer.mask_token
    texts = [f"the capital of france is {mask}", f"hello {mask} world"]
    for text, result in zip(texts, handler(texts, top_k=4), strict=True):
        expected = pipe(text, top_k=4)
        equal([r["token"] for r in result], [e["token"] for e in expected], "tokens")
        close([r["score"] for r in result], [e["score"] for e in expected], "scores")
        equal([r["sequence"] for r in result], [e["sequence"] for e in expected], "sequences")


def text_classification(handler: Any, path: Path, skill: type) -> None:
    pipe = transformers.pipeline("text-classification", model=str(path), device="cpu")
    texts = TEXTS[:1] if skill.family == "decoder" else TEXTS
    for text, result in zip(texts, handler(texts), strict=True):
        expected = pipe(text, top_k=None)
        equal([r["label"] for r in result], [e["label"] for e in expected], "labels")
        close([r["score"] for r in result], [e["score"] for e in expected], "scores")


def token_classification(handler: Any, path: Path, skill: type) -> None:
    pipe = transformers.pipeline("token-classification", model=str(path), device="cpu")
    keys = ("entity", "index", "start", "end")
    for text, result in zip(TEXTS, handler(TEXTS, ignore_labels=[]), strict=True):
        expected = pipe(text, ignore_labels=[])
        equal(
            [tuple(r[k] for k in keys) for r in result],
            [tuple(e[k] for k in keys) for e in expected],
            "entities",
        )
        close([r["score"] for r in result], [e["score"] for e in expected], "scores")


def _reference_answer(model: Any, tokenizer: Any, question: str, context: str) -> dict[str, Any]:
    """Brute force over every span, independent of the skill's vectorised search."""
    enc = tokenizer(question, context, return_tensors="pt", return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")[0].tolist()
    in_context = [sid == 1 for sid in enc.sequence_ids(0)]
    with torch.no_grad():
        out = model(**forward_inputs(model, enc))
    start = out.start_logits[0].masked_fill(~torch.tensor(in_context), -1e4).softmax(-1)
    end = out.end_logits[0].masked_fill(~torch.tensor(in_context), -1e4).softmax(-1)
    score, s, e = max(
        (float(start[s] * end[e]), s, e)
        for s, e in itertools.product(range(len(offsets)), repeat=2)
        if in_context[s] and in_context[e] and 0 <= e - s < 15
    )
    return {"answer": context[offsets[s][0] : offsets[e][1]], "score": score}


def question_answering(handler: Any, path: Path, skill: type) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(path).eval()
    inputs = [
        {"question": "what is the capital of france", "context": "the capital of france is paris"},
        {"question": "who", "context": "hello world and a b c"},
    ]
    for item, got in zip(inputs, handler(inputs), strict=True):
        expected = _reference_answer(model, tokenizer, item["question"], item["context"])
        equal(got["answer"], expected["answer"], "answer")
        close([got["score"]], [expected["score"]], "score")


def text_generation(handler: Any, path: Path, skill: type) -> None:
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
    width = batch["input_ids"].shape[1]
    expected = [_cut_at_eos(row[width:], _eos(model)) for row in out.tolist()]
    got = handler(prompts, max_new_tokens=8)
    equal([g["token_ids"] for g in got], expected, "greedy token ids")
    for g in got:
        equal(g["text"], tokenizer.decode(g["token_ids"], skip_special_tokens=True), "text")


def text2text_generation(handler: Any, path: Path, skill: type) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    prompts = ["hello world", "the capital of france is paris"]
    batch = tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**forward_inputs(model, batch), max_new_tokens=8, do_sample=False)
    expected = [_cut_at_eos(row[1:], _eos(model)) for row in out.tolist()]
    got = handler(prompts, max_new_tokens=8)
    equal([g["token_ids"] for g in got], expected, "greedy token ids")


# -- vision ----------------------------------------------------------------------------------


def image_classification(handler: Any, path: Path, skill: type) -> None:
    pipe = transformers.pipeline("image-classification", model=str(path), device="cpu")
    for image, result in zip(IMAGES, handler(IMAGES), strict=True):
        expected = pipe(image, top_k=None)
        equal([r["label"] for r in result], [e["label"] for e in expected], "labels")
        close([r["score"] for r in result], [e["score"] for e in expected], "scores")


def object_detection(handler: Any, path: Path, skill: type) -> None:
    pipe = transformers.pipeline("object-detection", model=str(path), device="cpu")
    for image, result in zip(IMAGES, handler(IMAGES, threshold=0.0), strict=True):
        expected = sorted(pipe(image, threshold=0.0), key=lambda d: -d["score"])
        check(len(expected) > 0, "transformers' pipeline found no boxes at threshold 0")
        equal(
            [(r["label"], r["box"]) for r in result],
            [(e["label"], e["box"]) for e in expected],
            "labels and boxes",
        )
        close([r["score"] for r in result], [e["score"] for e in expected], "scores")


def zero_shot_image_classification(handler: Any, path: Path, skill: type) -> None:
    pipe = transformers.pipeline("zero-shot-image-classification", model=str(path), device="cpu")
    labels = ["hello", "world", "paris"]
    for image, result in zip(IMAGES, handler(IMAGES, candidate_labels=labels), strict=True):
        expected = pipe(image, candidate_labels=labels)
        close(
            [r["score"] for r in sorted(result, key=lambda r: r["label"])],
            [e["score"] for e in sorted(expected, key=lambda e: e["label"])],
            "scores",
        )


def image_embedding(handler: Any, path: Path, skill: type) -> None:
    processor = transformers.AutoImageProcessor.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        out = model.get_image_features(**processor(images=IMAGES, return_tensors="pt"))
    expected = out if isinstance(out, torch.Tensor) else out.pooler_output
    close(handler(IMAGES), expected, "image embeddings")


def image_to_text(handler: Any, path: Path, skill: type) -> None:
    processor = transformers.AutoProcessor.from_pretrained(path)
    model = transformers.AutoModelForImageTextToText.from_pretrained(path).eval()
    with torch.no_grad():
        out = model.generate(
            **processor(images=IMAGES, return_tensors="pt"), max_new_tokens=6, do_sample=False
        )
    expected = [_cut_at_eos(row[1:], _eos(model)) for row in out.tolist()]
    got = handler(IMAGES, max_new_tokens=6)
    equal([g["token_ids"] for g in got], expected, "greedy token ids")


# -- audio -----------------------------------------------------------------------------------


def automatic_speech_recognition(handler: Any, path: Path, skill: type) -> None:
    processor = transformers.AutoProcessor.from_pretrained(path)
    rate = processor.feature_extractor.sampling_rate
    if skill.model_classes["automatic_speech_recognition"].endswith("ForCTC"):
        model = transformers.AutoModelForCTC.from_pretrained(path).eval()
        expected = []
        for wave in AUDIO:  # one clip at a time, as transformers' pipeline runs them
            feats = processor.feature_extractor([wave], sampling_rate=rate, return_tensors="pt")
            with torch.no_grad():
                logits = model(**forward_inputs(model, feats)).logits
            expected += processor.batch_decode(logits.argmax(-1))
        got = handler(AUDIO)
    else:
        model = transformers.AutoModelForSpeechSeq2Seq.from_pretrained(path).eval()
        expected = []
        for wave in AUDIO:  # one clip at a time: no padding for the skill to match
            feats = processor.feature_extractor([wave], sampling_rate=rate, return_tensors="pt")
            with torch.no_grad():
                ids = model.generate(**forward_inputs(model, feats), max_new_tokens=10)
            expected += [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
        got = handler(AUDIO, max_new_tokens=10)
    equal([r["text"] for r in got], expected, "transcripts")


def audio_classification(handler: Any, path: Path, skill: type) -> None:
    extractor = transformers.AutoFeatureExtractor.from_pretrained(path)
    model = transformers.AutoModelForAudioClassification.from_pretrained(path).eval()
    for wave, result in zip(AUDIO, handler(AUDIO), strict=True):
        feats = extractor([wave], sampling_rate=extractor.sampling_rate, return_tensors="pt")
        with torch.no_grad():
            probs = model(**forward_inputs(model, feats)).logits.softmax(-1)[0]
        order = probs.argsort(descending=True).tolist()
        equal([r["label"] for r in result], [model.config.id2label[i] for i in order], "labels")
        close([r["score"] for r in result], probs[order].tolist(), "scores", atol=AUDIO_ATOL)


# -- dense vision, open-vocabulary detection, backbone embeddings ----------------------------


def _png(data: str) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def image_embedding_any(handler: Any, path: Path, skill: type) -> None:
    """``default``: the joint model's get_image_features; ``pooled``: a vision backbone's
    pooler_output, as the image-feature-extraction pipeline returns it with pool=True."""
    if skill.tasks["image_embedding"].variant != "pooled":
        image_embedding(handler, path, skill)
        return
    pipe = transformers.pipeline("image-feature-extraction", model=str(path), device="cpu")
    expected = [np.asarray(pipe(image, pool=True)).reshape(-1) for image in IMAGES]
    close(handler(IMAGES), expected, "pooled image embeddings")


def zero_shot_object_detection(handler: Any, path: Path, skill: type) -> None:
    pipe = transformers.pipeline("zero-shot-object-detection", model=str(path), device="cpu")
    labels = ["cat", "dog"]
    got = handler(IMAGES, candidate_labels=labels, threshold=0.0)
    for image, result in zip(IMAGES, got, strict=True):
        expected = pipe(image, candidate_labels=labels, threshold=0.0)
        check(len(expected) > 0, "transformers' pipeline found no boxes at threshold 0")
        equal(
            [(r["label"], r["box"]) for r in result],
            [(e["label"], e["box"]) for e in expected],
            "labels and boxes",
        )
        close([r["score"] for r in result], [e["score"] for e in expected], "scores")


def depth_estimation(handler: Any, path: Path, skill: type) -> None:
    pipe = transformers.pipeline("depth-estimation", model=str(path), device="cpu")
    for image, result in zip(IMAGES, handler(IMAGES), strict=True):
        expected = pipe(image)
        close(result["predicted_depth"], expected["predicted_depth"], "predicted depth")
        picture = _png(result["depth"]).astype(int)
        reference = np.asarray(expected["depth"]).astype(int)
        check(picture.shape == reference.shape, f"depth image {picture.shape} != {reference.shape}")
        close(picture, reference, "depth image", atol=1)


def image_segmentation(handler: Any, path: Path, skill: type) -> None:
    subtask = skill.tasks["image_segmentation"].variant
    pipe = transformers.pipeline("image-segmentation", model=str(path), device="cpu")
    zero = {"threshold": 0.0, "mask_threshold": 0.0, "overlap_mask_area_threshold": 0.0}
    for image, result in zip(IMAGES, handler(IMAGES, **zero), strict=True):
        expected = pipe(image, subtask=subtask, **zero)
        check(len(expected) > 0, "transformers' pipeline found no segment")
        equal([r["label"] for r in result], [e["label"] for e in expected], "labels")
        if subtask != "semantic":
            close([r["score"] for r in result], [e["score"] for e in expected], "scores")
        for r, e in zip(result, expected, strict=True):
            check(np.array_equal(_png(r["mask"]), np.asarray(e["mask"])), "masks differ")


def text_to_audio(handler: Any, path: Path, skill: type) -> None:
    """The text-to-audio pipeline's waveform under the same seed, read back from the WAV."""
    import base64
    import io

    import soundfile

    pipe = transformers.pipeline("text-to-audio", model=str(path), device="cpu")
    texts = TEXTS[:2]
    generative = getattr(transformers, skill.model_classes["text_to_audio"]).can_generate()
    limits = {"max_new_tokens": 8} if generative else {}  # tiny models have few positions
    got = handler(texts, seed=3, **limits)
    torch.manual_seed(3)
    for result, text in zip(got, texts, strict=True):
        expected = pipe(text, **({"forward_params": limits} if limits else {}))
        audio, rate = soundfile.read(io.BytesIO(base64.b64decode(result["audio"])), dtype="float32")
        equal(rate, expected["sampling_rate"], "sampling rate")
        check(audio.size > 0, "no audio")
        close(audio.T if audio.ndim > 1 else audio, expected["audio"], "waveform")


#: task -> reference check; a task with no entry here cannot be verified.
REFERENCES: dict[str, Reference] = {
    "text_embedding": text_embedding,
    "fill_mask": fill_mask,
    "text_classification": text_classification,
    "token_classification": token_classification,
    "question_answering": question_answering,
    "text_generation": text_generation,
    "text2text_generation": text2text_generation,
    "image_classification": image_classification,
    "object_detection": object_detection,
    "zero_shot_image_classification": zero_shot_image_classification,
    "image_embedding": image_embedding_any,
    "zero_shot_object_detection": zero_shot_object_detection,
    "depth_estimation": depth_estimation,
    "image_segmentation": image_segmentation,
    "image_to_text": image_to_text,
    "automatic_speech_recognition": automatic_speech_recognition,
    "audio_classification": audio_classification,
    "text_to_audio": text_to_audio,
}
