"""OpenAI's audio API models: ``POST /v1/audio/transcriptions`` (a multipart form in, JSON or
text out), as OpenAI names the fields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ResponseFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]


class TranscriptionRequest(BaseModel):
    """The form's fields (``multipart/form-data``). Unknown fields are ignored, as OpenAI's
    newer fields (``chunking_strategy``, ``include[]``, ``stream``) may come from any client."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    file: bytes = Field(
        ...,
        description="the audio: WAV, FLAC, OGG/Vorbis, MP3, AIFF and the other formats libsndfile "
        "reads (no ffmpeg: not M4A, MP4 or WebM); at most max_audio_bytes",
    )
    model: str = Field(..., min_length=1, description="a speech-recognition model")
    language: str | None = Field(
        None,
        max_length=64,
        description="ISO-639-1 code (or name) of the audio's language, for models that take one "
        "(Whisper's); others ignore it",
    )
    prompt: str | None = Field(
        None,
        max_length=4096,
        description="text that conditions the transcript, for models that take one (Whisper's)",
    )
    response_format: ResponseFormat = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0, description="0: greedy; above: sampled")
    timestamp_granularities: list[Literal["segment"]] | None = Field(
        None,
        alias="timestamp_granularities[]",
        description="segment timestamps only (in verbose_json); word timestamps are not given",
    )


class TranscriptionUsage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class Transcription(BaseModel):
    """``response_format: json``."""

    text: str
    usage: TranscriptionUsage | None = None


class TranscriptionSegment(BaseModel):
    """One piece of the transcript with its times (seconds). ``avg_logprob``,
    ``compression_ratio`` and ``no_speech_prob`` are Whisper's decoding statistics: not
    measured here (null), but ``compression_ratio``, computed from the text as Whisper does."""

    id: int
    seek: int = 0
    start: float
    end: float
    text: str
    tokens: list[int] = Field(default_factory=list)
    temperature: float
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None


class TranscriptionVerbose(BaseModel):
    """``response_format: verbose_json``: the segments are the model's timestamped pieces when it
    gives timestamps (Whisper's), else one segment over the whole clip."""

    task: Literal["transcribe"] = "transcribe"
    language: str | None
    duration: float
    text: str
    segments: list[TranscriptionSegment]
    usage: TranscriptionUsage | None = None
