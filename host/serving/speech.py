"""OpenAI's speech serving (``POST /v1/audio/speech``): text to audio bytes, on the models that
serve ``text_to_audio`` (VITS, MusicGen...).

The skill answers a 32-bit float WAV; this layer clips it to [-1, 1] and writes it as 16-bit
samples (OpenAI's own ``wav`` and ``pcm`` are 16-bit): ``wav`` and ``flac`` through libsndfile,
``pcm`` as the raw little-endian samples (channels interleaved), at the model's own sampling rate,
which ``X-Sample-Rate`` states (``X-Channels`` the channel count) on every answer. mp3, opus and
aac need an encoder libsndfile lacks here (ffmpeg is not used): a 400 naming
``response_format`` before the model is touched, as is ``stream_format: sse``.

``voice``: a speaker index (``"0"``, ``"1"``...) selects a speaker of a multi-speaker model
(``speaker_id``; a one-speaker model refuses an index: 400 naming ``voice``); any other voice
(OpenAI's names, a custom voice's id) is accepted and ignored, as a model speaks with its own
voice. ``speed`` other than 1.0 is the model's ``speaking_rate`` (VITS); a model without one
refuses it (400 naming ``speed``) rather than answer at another speed than asked.
``instructions`` is accepted and ignored.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from starlette.responses import Response

from ..errors import APIError
from ..inference import InferenceService
from ..protocol import audio as pa
from ..scheduler import RequestContext
from .common import client_words

TASK = "text_to_audio"
#: The skill's parameter names -> the request's (errors name what the client sent).
WORDS = {"inputs": "input", "speaking_rate": "speed", "speaker_id": "voice"}
MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac"}
#: libsndfile's container per served format (pcm has none).
CONTAINERS = {"wav": "WAV", "flac": "FLAC"}


def check_format(body: pa.SpeechRequest) -> None:
    """A 400 naming the field for an answer this server cannot give."""
    if body.response_format not in pa.SPEECH_FORMATS:
        raise APIError(
            400,
            f"response_format: {body.response_format!r} is not served here; send one of "
            f"{list(pa.SPEECH_FORMATS)} (mp3, opus and aac need ffmpeg, which this server "
            "does not use)",
            code="unsupported_format",
            param="response_format",
        )
    if body.stream_format == "sse":
        raise APIError(
            400,
            "stream_format: 'sse' is not served; the audio comes whole ('audio')",
            code="unsupported_format",
            param="stream_format",
        )


def _params(body: pa.SpeechRequest) -> dict[str, Any]:
    """The skill's parameters: only what changes its answer (see the module's policy)."""
    params: dict[str, Any] = {}
    if body.speed != 1.0:
        params["speaking_rate"] = body.speed
    voice = body.voice.id if isinstance(body.voice, pa.VoiceID) else body.voice
    if voice is not None and voice.strip().isdecimal():
        params["speaker_id"] = int(voice.strip())
    if body.seed is not None:
        params["seed"] = body.seed
    return params


def samples16(wav: bytes) -> tuple[np.ndarray, int]:
    """The skill's float WAV as 16-bit samples (frames x channels, clipped) and its rate."""
    import soundfile

    audio, rate = soundfile.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return np.rint(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2"), int(rate)


def encode(samples: np.ndarray, rate: int, response_format: str) -> bytes:
    """16-bit samples (frames x channels) in a served format."""
    if response_format == "pcm":
        return np.ascontiguousarray(samples, "<i2").tobytes()
    import soundfile

    out = io.BytesIO()
    container = CONTAINERS[response_format]
    soundfile.write(out, samples, rate, format=container, subtype="PCM_16")
    return out.getvalue()


async def speech(
    service: InferenceService, body: pa.SpeechRequest, ctx: RequestContext
) -> Response:
    check_format(body)
    with client_words(WORDS):
        outcome = await service.run(body.model, TASK, [body.input], _params(body), ctx)
    samples, rate = samples16(base64.b64decode(outcome.results[0]["audio"]))
    headers = {"X-Sample-Rate": str(rate), "X-Channels": str(samples.shape[1])}
    return Response(
        encode(samples, rate, body.response_format),
        media_type=MEDIA_TYPES[body.response_format],
        headers=headers,
    )
