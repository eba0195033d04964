"""OpenAI's audio serving: transcriptions (``POST /v1/audio/transcriptions``), in OpenAI's
shapes: ``json``, ``text``, ``verbose_json``, ``srt`` and ``vtt``.

The audio is checked before the model is touched: over ``max_audio_bytes`` is a 413, a format
that libsndfile cannot read (no ffmpeg here: M4A, MP4, WebM) or an empty clip a 400, both
naming ``file``. The speech-recognition skill decodes and resamples it
(`hfskills.skillset.runtime.media.audio`) and transcribes it; segments come from the model's
timestamps when it gives them (Whisper's), else one segment spans the clip.
"""

from __future__ import annotations

import io
import zlib
from typing import Any

from starlette.responses import PlainTextResponse, Response

from ..errors import APIError
from ..inference import InferenceService
from ..protocol import audio as pa
from ..scheduler import RequestContext
from .common import FastJSONResponse, client_words

TASK = "automatic_speech_recognition"
#: The skill's parameter names -> the form's (errors name what the client sent).
WORDS = {"inputs": "file"}


def duration(data: bytes, limit: int) -> float:
    """Seconds of audio in ``data``, or a 4xx naming ``file``: 413 over ``limit`` bytes, 400
    for a format libsndfile cannot read or a clip without samples."""
    import soundfile

    if len(data) > limit:
        raise APIError(
            413,
            f"file: the audio is larger than the limit of {limit} bytes (max_audio_bytes)",
            code="payload_too_large",
            param="file",
        )
    if not data:
        raise APIError(400, "file: the file is empty", code="invalid_audio", param="file")
    try:
        info = soundfile.info(io.BytesIO(data))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise APIError(
            400,
            f"file: could not decode the audio ({_reason(exc)}); "
            "send WAV, FLAC, OGG/Vorbis, MP3 or another format libsndfile reads "
            "(M4A, MP4 and WebM need ffmpeg, which this server does not use)",
            code="invalid_audio",
            param="file",
        ) from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise APIError(400, "file: the audio holds no samples", code="invalid_audio", param="file")
    return info.frames / info.samplerate


def _reason(exc: BaseException) -> str:
    """libsndfile's own words (its message also names the in-memory file object)."""
    reason = getattr(exc, "error_string", None) or str(exc).rsplit(": ", 1)[-1]
    return reason.strip().rstrip(".") or type(exc).__name__


def _params(body: pa.TranscriptionRequest, timestamps: bool) -> dict[str, Any]:
    """The skill's parameters: only what the client set (a model that cannot use a language or
    a prompt ignores them; see the skill's docstring)."""
    params: dict[str, Any] = {}
    if body.language:
        params["language"] = body.language
    if body.prompt:
        params["prompt"] = body.prompt
    if body.temperature > 0:
        params["temperature"] = body.temperature
    if timestamps:
        params["return_timestamps"] = True
    return params


async def transcriptions(
    service: InferenceService, body: pa.TranscriptionRequest, ctx: RequestContext, limit: int
) -> Response:
    seconds = duration(body.file, limit)
    timed = body.response_format in ("verbose_json", "srt", "vtt")
    with client_words(WORDS):
        outcome = await service.run(body.model, TASK, [body.file], _params(body, timed), ctx)
    result = outcome.results[0]
    text = result["text"]
    usage = pa.TranscriptionUsage(seconds=round(seconds, 3))
    if body.response_format == "json":
        return FastJSONResponse(pa.Transcription(text=text, usage=usage).model_dump(mode="json"))
    if body.response_format == "text":
        return PlainTextResponse(text)
    segments = _segments(result, seconds, body.temperature, outcome.loaded.endpoint.processor)
    if body.response_format == "srt":
        return PlainTextResponse(srt(segments))
    if body.response_format == "vtt":
        return PlainTextResponse(vtt(segments), media_type="text/vtt")
    verbose = pa.TranscriptionVerbose(
        language=body.language,
        duration=round(seconds, 3),
        text=text,
        segments=segments,
        usage=usage,
    )
    return FastJSONResponse(verbose.model_dump(mode="json"))


def _segments(
    result: dict[str, Any], seconds: float, temperature: float, processor: Any
) -> list[pa.TranscriptionSegment]:
    """The model's timestamped chunks as segments (times kept inside the clip), or one segment
    over the whole clip when it gave none."""
    chunks = result.get("chunks")
    if not chunks:
        chunks = [{"text": result["text"], "timestamp": [0.0, seconds]}]
    tokenizer = getattr(processor, "tokenizer", None)
    segments = []
    for index, chunk in enumerate(chunks):
        start, end = chunk["timestamp"]
        start = min(max(float(start or 0.0), 0.0), seconds)
        end = min(max(float(end if end is not None else seconds), start), seconds)
        piece = chunk["text"]
        tokens = (
            tokenizer(piece, add_special_tokens=False)["input_ids"]
            if tokenizer is not None and piece
            else []
        )
        segments.append(
            pa.TranscriptionSegment(
                id=index,
                start=round(start, 3),
                end=round(end, 3),
                text=piece,
                tokens=list(tokens),
                temperature=temperature,
                compression_ratio=compression_ratio(piece),
            )
        )
    return segments


def compression_ratio(text: str) -> float | None:
    """Whisper's measure of repetition: the text's bytes over their zlib-compressed bytes."""
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 4) if data else None


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def srt(segments: list[pa.TranscriptionSegment]) -> str:
    """SubRip subtitles: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``."""
    cues = [
        f"{i + 1}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(segments)
    ]
    return "\n".join(cues)


def vtt(segments: list[pa.TranscriptionSegment]) -> str:
    """WebVTT subtitles: ``WEBVTT``, then ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` cues."""
    cues = [
        f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues)
