"""Audio tasks, once for every architecture: speech recognition and audio classification.

Clips arrive as float arrays at the model's sampling rate, or WAV/FLAC bytes, base64 strings or
(when the endpoint allows) paths, decoded and resampled by `media.audios`. Architectures differ
by declared `Task.variant`: ``ctc`` speech recognition is one forward pass and a greedy CTC
decode (wav2vec2, HuBERT...), ``seq2seq`` generates the text with the decoder (Whisper...).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import generation, labels, media, torch_backend
from ..endpoint import Endpoint, Handler
from ..skill import Task


def automatic_speech_recognition(endpoint: Endpoint, task: Task) -> Handler:
    """Transcribe audio: `{text}` per input. ``ctc``: greedy CTC decoding, clips batched only
    with clips of the same length (no clip is transcribed with padding). ``seq2seq``: generated
    by the decoder; param `max_new_tokens` (default: the checkpoint's generation config).
    """
    model, processor = endpoint.model, endpoint.processor
    extractor = processor.feature_extractor
    rate = extractor.sampling_rate

    def features(waves: list[Any]) -> dict[str, Any]:
        batch = extractor(waves, sampling_rate=rate, return_tensors="pt")
        return torch_backend.place(batch, endpoint)

    if task.variant == "ctc":

        def transcribe(waves: list[Any]) -> list[dict[str, Any]]:
            with torch.inference_mode():
                token_ids = model(**features(waves)).logits.argmax(dim=-1)
            return [{"text": said} for said in processor.batch_decode(token_ids.cpu())]

        def ctc(inputs: list[Any]) -> list[dict[str, Any]]:
            waves = media.audios(inputs, rate, allow_paths=endpoint.allow_local_paths)
            return media.by_length(waves, transcribe)

        return ctc

    def seq2seq(inputs: list[Any], *, max_new_tokens: int | None = None) -> list[dict[str, Any]]:
        limits = {}
        if max_new_tokens is not None:
            parsed = generation.GenerationParams.parse({"max_new_tokens": max_new_tokens})
            limits["max_new_tokens"] = parsed.max_new_tokens
        waves = media.audios(inputs, rate, allow_paths=endpoint.allow_local_paths)
        with torch.inference_mode():
            token_ids = model.generate(**features(waves), **limits)
        decoded = processor.batch_decode(token_ids.cpu(), skip_special_tokens=True)
        return [{"text": said.strip()} for said in decoded]

    return seq2seq


def audio_classification(endpoint: Endpoint, task: Task) -> Handler:
    """Classify audio clips: `[{label, score}, ...]` per input, highest first. Params: `top_k`,
    `function_to_apply`. Clips are batched only with clips of the same length, so no clip is
    scored with padding.
    """
    model, extractor = endpoint.model, endpoint.processor
    rate = extractor.sampling_rate
    finish = labels.finish_ranked(endpoint.config)

    def handler(
        inputs: list[Any], *, top_k: int | None = None, function_to_apply: str | None = None
    ) -> list[list[dict[str, Any]]]:
        def classify(waves: list[Any]) -> list[list[dict[str, Any]]]:
            batch = extractor(waves, sampling_rate=rate, return_tensors="pt")
            batch = torch_backend.place(torch_backend.accepted_inputs(model, batch), endpoint)
            with torch.inference_mode():
                logits = model(**batch).logits
            return finish(waves, logits, top_k=top_k, function_to_apply=function_to_apply)

        waves = media.audios(inputs, rate, allow_paths=endpoint.allow_local_paths)
        return media.by_length(waves, classify)

    return handler
