"""OpenAI's audio routes: ``POST /v1/audio/transcriptions`` (a ``multipart/form-data`` form with
the audio ``file``, as the openai SDK's ``client.audio.transcriptions.create`` sends it) and
``POST /v1/audio/speech`` (a JSON body; the answer is the audio itself: `host.serving.speech`).

The form is read by Starlette (python-multipart) and validated as
`host.protocol.audio.TranscriptionRequest`; the serving layer (`host.serving.audio`) checks the
audio and answers in the asked ``response_format``.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..openapi import protocol
from ..protocol import audio as pa
from ..serving import audio as serving
from ..serving import speech as speaking
from ..tracing import span
from .common import context, host, parse

#: Form parts other than the file: OpenAI's fields are short (a prompt is the longest).
MAX_FIELD_BYTES = 64 * 1024


async def _form(request: Request, limit: int) -> pa.TranscriptionRequest:
    with span("parse"):
        async with request.form(max_files=1, max_fields=32, max_part_size=MAX_FIELD_BYTES) as form:
            fields: dict[str, Any] = {}
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    value = await value.read(limit + 1)  # one byte more: over the limit is a 413
                if key.endswith("[]"):
                    fields.setdefault(key, []).append(value)
                else:
                    fields[key] = value
        return pa.TranscriptionRequest.model_validate(fields)


@protocol(pa.TranscriptionRequest, pa.Transcription, content="multipart/form-data")
async def transcriptions(request: Request) -> Response:
    """Transcribe audio into text (multipart form; json, text, verbose_json, srt or vtt)."""
    limit = host(request).settings.max_audio_bytes
    body = await _form(request, limit)
    return await serving.transcriptions(host(request).service, body, context(request), limit)


@protocol(pa.SpeechRequest, produces=tuple(speaking.MEDIA_TYPES.values()))
async def speech(request: Request) -> Response:
    """Generate speech from text (the audio bytes: wav, pcm or flac)."""
    body = await parse(request, pa.SpeechRequest)
    return await speaking.speech(host(request).service, body, context(request))


routes = [
    Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
    Route("/v1/audio/speech", speech, methods=["POST"]),
]
