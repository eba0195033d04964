"""Text to audio, once for every architecture: speech (VITS, MMS-TTS...) or music from text.

As transformers' text-to-audio pipeline: each text tokenized alone, then one forward pass of a
forward-only model (VITS: the waveform is its first output) or ``generate`` of a generative one
(MusicGen, Bark...), the audio squeezed to float32 and its sampling rate read from the config
(``sampling_rate`` / ``sample_rate``, the codec's, or the processor's feature extractor). The
answer per text is a WAV file (32-bit float, mono or the model's channels), base64-encoded,
with its sampling rate; the host's Inference API route answers with the WAV bytes themselves.
VITS samples noise: `seed` makes a call reproducible (torch's generator is forked, so the
process's own random state is left as it was). Models whose forward takes them (VITS) also take
`speaking_rate` (above 1: faster, shorter audio) and, with more than one speaker in the config,
`speaker_id`; a model that cannot use one refuses it rather than ignore it. A text of which the
tokenizer keeps nothing (VITS drops characters outside its vocabulary) is refused: the model
cannot speak zero tokens.
"""

from __future__ import annotations

import base64
import copy
import inspect
import struct
from typing import Any

import numpy as np
import torch

from .. import generation, media, torch_backend
from ..endpoint import Endpoint, Handler
from ..errors import InvalidInput, ModelLoadError
from ..skill import Task

#: Models whose generate takes the pipeline's generation parameters itself (no dict output).
OWN_GENERATION = ("bark", "seamless_m4t", "seamless_m4t_v2")
#: The speaking rates taken (OpenAI's speed range): VITS's durations, so the audio's length and
#: memory, scale with 1 / rate, and a rate near 0 would ask for unbounded audio.
SPEAKING_RATES = (0.25, 4.0)


def sampling_rate(model: Any, processor: Any) -> int | None:
    """The output's sampling rate, found where transformers' text-to-audio pipeline finds it."""
    config = copy.deepcopy(model.config)
    generation_config = model.__dict__.get("generation_config")
    if generation_config is not None:
        config.update({k: v for k, v in generation_config.to_dict().items() if v is not None})
    rate = None
    for name in ("sample_rate", "sampling_rate"):
        value = getattr(config, name, None)
        if value is not None:
            rate = value
        elif getattr(config, "codec_config", None) is not None:
            value = getattr(config.codec_config, name, None)
            if value is not None:
                rate = value
    if rate is None and hasattr(processor, "feature_extractor"):
        rate = processor.feature_extractor.sampling_rate
    return None if rate is None else int(rate)


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    """A float waveform (samples, or channels x samples) as a 32-bit float WAV file (format 3,
    with its ``fact`` chunk). Written here rather than by libsndfile, whose float WAVs carry a
    PEAK chunk with the time of writing: the same audio gives the same bytes."""
    frames = np.ascontiguousarray((audio.T if audio.ndim > 1 else audio[:, None]), "<f4")
    count, channels = frames.shape
    data = frames.tobytes()
    fmt = struct.pack("<HHIIHH", 3, channels, rate, rate * channels * 4, channels * 4, 32)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"fact" + struct.pack("<II", 4, count)
    chunks += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def wav_base64(audio: np.ndarray, rate: int) -> str:
    return base64.b64encode(wav_bytes(audio, rate)).decode("ascii")


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise InvalidInput("seed must be a non-negative integer", param="seed")
    return value


def _speaking_rate(value: Any, model: Any, generative: bool) -> float | None:
    if value is None:
        return None
    if generative or "speaking_rate" not in _forward_params(model):
        raise InvalidInput(
            "speaking_rate: this model has no speaking rate (VITS models have one)",
            param="speaking_rate",
        )
    low, high = SPEAKING_RATES
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidInput(
            f"speaking_rate must be a number from {low} to {high}", param="speaking_rate"
        )
    return float(value)


def _speaker_id(value: Any, model: Any, generative: bool) -> int | None:
    if value is None:
        return None
    speakers = getattr(model.config, "num_speakers", 1) or 1
    if generative or speakers <= 1 or "speaker_id" not in _forward_params(model):
        raise InvalidInput("speaker_id: this model has one speaker", param="speaker_id")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < speakers:
        raise InvalidInput(
            f"speaker_id must be an integer from 0 to {speakers - 1} (this model's speakers)",
            param="speaker_id",
        )
    return value


def _forward_params(model: Any) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def _decodes_audio(processor: Any) -> bool:
    """A multimodal processor turns generated audio codes into a waveform; a tokenizer does not
    (the pipeline has no processor for MusicGen, whose ``sequences`` are already audio)."""
    from transformers import PreTrainedTokenizerBase

    return (
        processor is not None
        and hasattr(processor, "decode")
        and not isinstance(processor, PreTrainedTokenizerBase)
    )


def _waveform(output: Any, processor: Any) -> np.ndarray:
    """The pipeline's postprocess: the audio out of whatever the model returned."""
    needs_decoding = False
    if isinstance(output, dict):
        if "audio" in output:
            output = output["audio"]
        elif "waveform" in output:
            output = output["waveform"]
        else:
            needs_decoding = True
            output = output["sequences"]
    elif isinstance(output, tuple):
        output = output[0]
    if needs_decoding and _decodes_audio(processor):
        output = processor.decode(output)
    if isinstance(output, list):
        output = output[0]
    return output.to(device="cpu", dtype=torch.float).numpy().squeeze()


def text_to_audio(endpoint: Endpoint, task: Task) -> Handler:
    """Generate audio from texts: per text `{audio: base64 WAV (float32), sampling_rate}`.
    Params: `seed` (default: none, so sampling models differ call to call), `max_new_tokens`
    (generative models only; default: the checkpoint's generation config), `speaking_rate`
    (VITS: 2.0 speaks twice as fast; default: the config's) and `speaker_id` (multi-speaker
    VITS: 0 to num_speakers - 1; default: none, the model's unconditioned voice).
    """
    model, processor = endpoint.model, endpoint.processor
    rate = sampling_rate(model, processor)
    if rate is None:
        raise ModelLoadError("the checkpoint names no sampling rate for its audio")
    model_type = model.config.model_type

    generative = model.can_generate()

    def run(text: str, limits: dict[str, Any], voice: dict[str, Any]) -> np.ndarray:
        batch = torch_backend.place(processor([text], return_tensors="pt"), endpoint)
        batch = torch_backend.accepted_inputs(model, dict(batch))
        ids = batch.get("input_ids")
        if not generative and ids is not None and ids.shape[-1] == 0:
            raise InvalidInput(
                "inputs: the model's tokenizer keeps no token of this text (characters outside "
                "its vocabulary are dropped), so there is nothing to speak",
                param="inputs",
            )
        with torch.inference_mode():
            if generative:
                own = model_type in OWN_GENERATION
                extra = {} if own else {"return_dict_in_generate": True}
                output = model.generate(**batch, **limits, **extra)
            else:
                output = model(**batch, **voice)[0]
        return _waveform(output, processor)

    def handler(
        inputs: list[Any],
        *,
        seed: int | None = None,
        max_new_tokens: int | None = None,
        speaking_rate: float | None = None,
        speaker_id: int | None = None,
    ) -> list[dict[str, Any]]:
        texts = media.texts(inputs)
        chosen = _seed(seed)
        rate_of_speech = _speaking_rate(speaking_rate, model, generative)
        speaker = _speaker_id(speaker_id, model, generative)
        voice: dict[str, Any] = {}
        if rate_of_speech is not None:
            voice["speaking_rate"] = rate_of_speech
        if speaker is not None:
            voice["speaker_id"] = speaker
        limits = {}
        if max_new_tokens is not None:
            if not generative:
                raise InvalidInput(
                    "max_new_tokens is for generative audio models (MusicGen, Bark...)",
                    param="max_new_tokens",
                )
            parsed = generation.GenerationParams.parse({"max_new_tokens": max_new_tokens})
            limits["max_new_tokens"] = parsed.max_new_tokens
        results = []
        device = torch.device(endpoint.device)
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if chosen is not None:
                torch.manual_seed(chosen)
            for text in texts:
                audio = run(text, limits, voice)
                results.append({"audio": wav_base64(audio, rate), "sampling_rate": rate})
        return results

    return handler
