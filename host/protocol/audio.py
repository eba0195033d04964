"""OpenAI's audio API models: ``POST /v1/audio/transcriptions`` (a multipart form in, JSON or
text out) and ``POST /v1/audio/speech`` (JSON in, audio bytes out), as OpenAI names the
fields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


#: The speech formats served: those libsndfile writes (no ffmpeg here for mp3, opus and aac).
SPEECH_FORMATS = ("wav", "pcm", "flac")
#: OpenAI's limit on ``input`` (characters).
MAX_SPEECH_INPUT = 4096
#: A voice's name or id (OpenAI's are short words and ``voice_...`` ids).
MAX_VOICE = 64


class VoiceID(BaseModel):
    """OpenAI's custom voice reference, ``{"id": "voice_1234"}``: its id counts as the voice."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(..., min_length=1, max_length=MAX_VOICE)


class SpeechRequest(BaseModel):
    """``POST /v1/audio/speech``. Unknown fields are ignored, as newer OpenAI fields may come
    from any client; ``seed`` is this server's own (VITS samples noise)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str = Field(..., min_length=1, description="a text-to-speech (text_to_audio) model")
    input: str = Field(
        ...,
        min_length=1,
        max_length=MAX_SPEECH_INPUT,
        description=f"the text to speak, at most {MAX_SPEECH_INPUT} characters",
    )
    voice: str | VoiceID | None = Field(
        None,
        description="a speaker index ('0', '1'...) for a model with several speakers "
        "(multi-speaker VITS); OpenAI's voice names (alloy, nova...) are accepted and ignored: "
        "a model speaks with its own voice",
    )
    response_format: str = Field(
        "wav",
        max_length=32,
        json_schema_extra={"enum": list(SPEECH_FORMATS)},
        description="wav (16-bit PCM, the default here; OpenAI's is mp3), pcm (raw 16-bit "
        "little-endian samples at the rate in X-Sample-Rate) or flac; mp3, opus and aac need "
        "ffmpeg, which this server does not use (400)",
    )
    speed: float = Field(
        1.0,
        ge=0.25,
        le=4.0,
        description="the speaking rate, for models that have one (VITS); on another model any "
        "value but 1.0 is a 400",
    )
    instructions: str | None = Field(
        None,
        max_length=MAX_SPEECH_INPUT,
        description="accepted and ignored: no model served here takes spoken instructions",
    )
    stream_format: Literal["audio", "sse"] = Field(
        "audio", description="audio (the whole file in one answer); sse is not served (400)"
    )
    seed: int | None = Field(
        None,
        ge=0,
        lt=2**63,
        description="this server's extension: the seed of the model's sampling (VITS's noise), "
        "so the same request gives the same audio",
    )

    @field_validator("input")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the text holds only whitespace; there is nothing to speak")
        return value

    @field_validator("voice")
    @classmethod
    def _short_voice(cls, value: str | VoiceID | None) -> str | VoiceID | None:
        # here, not as max_length in the union: an error there is located in the union's branch
        if isinstance(value, str) and len(value) > MAX_VOICE:
            raise ValueError(f"a voice is at most {MAX_VOICE} characters")
        return value
