"""``POST /v1/audio/transcriptions`` with the openai SDK against a real server, on tiny
random-weight Whisper (seq2seq, with timestamps and languages) and wav2vec2 (CTC) checkpoints.

Expected texts come from transformers run directly on the same checkpoint and audio (the
feature extractor and ``generate``, or CTC's argmax), so the HTTP path, the form, the decoding
of the WAV the test writes and the response shapes are all checked against the reference.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile
import torch
import transformers

from tests.checkpoints import tiny_audio

from .conftest import entry

RATE = 16000


@pytest.fixture(scope="module")
def checkpoints(task_checkpoint) -> dict[str, Path]:
    return {
        "whisper": task_checkpoint("whisper", "automatic_speech_recognition"),
        "ctc": task_checkpoint("wav2vec2", "automatic_speech_recognition"),
        "llama": task_checkpoint("llama", "text_generation"),
    }


@pytest.fixture(scope="module")
def server(serve, checkpoints):
    models = [
        entry("tiny-whisper", checkpoints["whisper"]),
        entry("tiny-ctc", checkpoints["ctc"]),
        entry("tiny-llama", checkpoints["llama"]),
    ]
    return serve(models=models, embedded_default=False, max_audio_bytes=128 * 1024)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0)


def wav_file(tmp_path: Path, seconds: float, seed: int = 0, name: str = "clip.wav") -> Path:
    """A mono 16 kHz WAV written by the test (soundfile): a tone with a little noise."""
    path = tmp_path / name
    soundfile.write(path, tiny_audio(seconds, RATE, seed=seed), RATE, format="WAV")
    return path


def samples(path: Path) -> np.ndarray:
    """The WAV as the server reads it (float32; the file holds 16-bit PCM)."""
    wave, rate = soundfile.read(path, dtype="float32")
    assert rate == RATE
    return wave


def whisper_reference(path: Path, wave: np.ndarray, **options) -> tuple[list[int], object]:
    """transformers' own Whisper: feature extractor + ``generate`` (long-form past the window)."""
    processor = transformers.AutoProcessor.from_pretrained(path)
    model = transformers.WhisperForConditionalGeneration.from_pretrained(path).eval()
    extractor = processor.feature_extractor
    long_form = len(wave) > extractor.n_samples
    extra = (
        {"truncation": False, "padding": "longest", "return_attention_mask": True}
        if long_form
        else {}
    )
    features = extractor([wave], sampling_rate=RATE, return_tensors="pt", **extra)
    if long_form:
        options.setdefault("return_timestamps", True)
    with torch.no_grad():
        ids = model.generate(**features, **options)[0]
    return ids, processor


def test_json_text_equals_transformers_generate(client, checkpoints, tmp_path) -> None:
    clip = wav_file(tmp_path, 0.8)
    with clip.open("rb") as audio:
        got = client.audio.transcriptions.create(model="tiny-whisper", file=audio)
    ids, processor = whisper_reference(checkpoints["whisper"], samples(clip))
    expected = processor.decode(ids, skip_special_tokens=True).strip()
    assert got.text == expected
    assert got.usage.type == "duration" and got.usage.seconds == pytest.approx(0.8)
    text = client.audio.transcriptions.create(
        model="tiny-whisper", file=clip.read_bytes(), response_format="text"
    )
    assert text == expected


def test_verbose_json_segments_are_the_models_timestamps(client, checkpoints, tmp_path) -> None:
    clip = wav_file(tmp_path, 0.8)
    with clip.open("rb") as audio:
        got = client.audio.transcriptions.create(
            model="tiny-whisper",
            file=audio,
            response_format="verbose_json",
            timestamp_granularities=["segment"],
        )
    ids, processor = whisper_reference(
        checkpoints["whisper"], samples(clip), return_timestamps=True
    )
    expected = processor.tokenizer.decode(ids, output_offsets=True, skip_special_tokens=True)
    assert expected["offsets"], "the tiny Whisper gives timestamps"
    assert got.text == expected["text"].strip()
    assert got.duration == pytest.approx(0.8)
    assert [s.text for s in got.segments] == [o["text"] for o in expected["offsets"]]
    for segment, offset in zip(got.segments, expected["offsets"], strict=True):
        start, end = offset["timestamp"]
        assert segment.start == pytest.approx(min(start, 0.8))
        assert segment.end == pytest.approx(min(end, 0.8))
        assert 0 <= segment.start <= segment.end <= got.duration
    assert [s.id for s in got.segments] == list(range(len(got.segments)))


def test_subtitles(client, tmp_path) -> None:
    clip = wav_file(tmp_path, 0.8).read_bytes()
    srt = client.audio.transcriptions.create(model="tiny-whisper", file=clip, response_format="srt")
    assert srt.startswith("1\n00:00:00,")
    assert " --> 00:00:0" in srt
    vtt = client.audio.transcriptions.create(model="tiny-whisper", file=clip, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.")


def test_language_and_prompt_reach_whisper(client, checkpoints, tmp_path) -> None:
    clip = wav_file(tmp_path, 0.8)
    wave = samples(clip)
    got = client.audio.transcriptions.create(
        model="tiny-whisper", file=clip.read_bytes(), language="fr"
    )
    ids, processor = whisper_reference(checkpoints["whisper"], wave, language="fr")
    assert got.text == processor.decode(ids, skip_special_tokens=True).strip()
    got = client.audio.transcriptions.create(
        model="tiny-whisper", file=clip.read_bytes(), prompt="hello world"
    )
    prompt = processor.get_prompt_ids("hello world", return_tensors="pt")
    ids, processor = whisper_reference(checkpoints["whisper"], wave, prompt_ids=prompt)
    assert got.text == processor.decode(ids, skip_special_tokens=True).strip()
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(
            model="tiny-whisper", file=clip.read_bytes(), language="xx"
        )
    assert refused.value.body["param"] == "language"
    assert "['de', 'en', 'fr']" in refused.value.body["message"]


def test_a_clip_longer_than_whispers_window_is_transcribed_whole(
    client, checkpoints, tmp_path
) -> None:
    """The tiny Whisper's window is 1 s (a real one's 30 s): 2.5 s go through long-form
    generation, as transformers' own ``generate`` does it, not cut to the window."""
    clip = wav_file(tmp_path, 2.5)
    got = client.audio.transcriptions.create(
        model="tiny-whisper", file=clip.read_bytes(), response_format="verbose_json"
    )
    ids, processor = whisper_reference(checkpoints["whisper"], samples(clip))
    expected = processor.tokenizer.decode(ids, output_offsets=True, skip_special_tokens=True)
    assert got.text == expected["text"].strip()
    assert len(got.segments) == len(expected["offsets"])
    assert got.segments[-1].end <= 2.5


def test_ctc_model_one_segment(client, checkpoints, tmp_path) -> None:
    clip = wav_file(tmp_path, 0.6, seed=1)
    processor = transformers.AutoProcessor.from_pretrained(checkpoints["ctc"])
    model = transformers.Wav2Vec2ForCTC.from_pretrained(checkpoints["ctc"]).eval()
    features = processor.feature_extractor([samples(clip)], sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        expected = processor.batch_decode(model(**features).logits.argmax(-1))[0]
    with clip.open("rb") as audio:  # language and prompt: hints a CTC model ignores
        got = client.audio.transcriptions.create(
            model="tiny-ctc",
            file=audio,
            response_format="verbose_json",
            language="en",
            prompt="hello",
        )
    assert got.text == expected
    assert len(got.segments) == 1
    segment = got.segments[0]
    assert (segment.start, segment.end, segment.text) == (0.0, pytest.approx(0.6), expected)


def test_bad_audio_and_sizes_name_the_file(client, server, tmp_path) -> None:
    for bad in (b"this is not audio at all", b"RIFF\x00\x00\x00\x00WAVE"):
        with pytest.raises(openai.BadRequestError) as refused:
            client.audio.transcriptions.create(model="tiny-whisper", file=("a.m4a", bad))
        assert refused.value.body["param"] == "file"
        assert "could not decode the audio" in refused.value.body["message"]
    big = wav_file(tmp_path, 5.0, name="big.wav")  # 160 kB of 16-bit PCM: over the 128 KiB limit
    with pytest.raises(openai.APIStatusError) as refused:
        client.audio.transcriptions.create(model="tiny-whisper", file=big.open("rb"))
    assert refused.value.status_code == 413
    assert refused.value.body["param"] == "file"
    with httpx.Client(base_url=server.base, timeout=60) as http:  # no file at all
        answer = http.post("/v1/audio/transcriptions", data={"model": "tiny-whisper"})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["param"] == "file"
        answer = http.post(  # JSON is not a form
            "/v1/audio/transcriptions", json={"model": "tiny-whisper", "file": "abc"}
        )
        assert answer.status_code == 422, answer.text


def test_models_that_do_not_transcribe(client, tmp_path) -> None:
    clip = wav_file(tmp_path, 0.5).read_bytes()
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(model="tiny-llama", file=clip)
    assert "does not serve automatic_speech_recognition" in refused.value.body["message"]
    assert refused.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model="no-such-model", file=clip)


def test_the_route_is_in_the_openapi_document_as_a_form(server) -> None:
    with httpx.Client(base_url=server.base, timeout=60) as http:
        document = http.get("/openapi.json").json()
    operation = document["paths"]["/v1/audio/transcriptions"]["post"]
    form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    name = form["$ref"].rsplit("/", 1)[1]
    fields = document["components"]["schemas"][name]["properties"]
    assert fields["file"]["format"] == "binary"
    assert set(fields["response_format"]["enum"]) >= {"json", "text", "verbose_json"}
