"""``POST /v1/audio/speech`` with the openai SDK against a real server, on tiny random-weight VITS
checkpoints (one speaker, and a copy with three).

Expected audio comes from transformers' ``VitsModel`` run directly on the same checkpoint and
text under the same seed (VITS samples noise; the request's ``seed`` is this server's extension),
quantized to 16 bits as the route writes it, so the HTTP path, the skill's parameters
(``speaking_rate``, ``speaker_id``) and each container are all checked against the reference.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile
import torch
import transformers

from .conftest import entry

RATE = 16000  # the tiny VITS's config.sampling_rate
TEXT = "hello world"


@pytest.fixture(scope="module")
def checkpoints(task_checkpoint, tmp_path_factory) -> dict[str, Path]:
    vits = task_checkpoint("vits", "text_to_audio")
    return {
        "vits": vits,
        "speakers": speakers_copy(vits, tmp_path_factory.mktemp("vits-speakers"), 3),
        "llama": task_checkpoint("llama", "text_generation"),
    }


def speakers_copy(source: Path, target: Path, speakers: int) -> Path:
    """The tiny VITS with a speaker embedding of ``speakers`` speakers (fresh random weights)."""
    shutil.copytree(
        source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors")
    )
    config = json.loads((target / "config.json").read_text())
    config.update(num_speakers=speakers, speaker_embedding_size=8)
    (target / "config.json").write_text(json.dumps(config))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.VitsModel(transformers.VitsConfig.from_pretrained(target))
    model.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def server(serve, checkpoints):
    models = [
        entry("tiny-vits", checkpoints["vits"]),
        entry("tiny-vits-speakers", checkpoints["speakers"]),
        entry("tiny-llama", checkpoints["llama"]),
    ]
    return serve(models=models, embedded_default=False)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0)


def reference(path: Path, text: str, seed: int, **options) -> np.ndarray:
    """transformers' VITS on the text under ``seed``, as the 16-bit samples the route writes."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.VitsModel.from_pretrained(path).eval()
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        wave = model(**tokenizer([text], return_tensors="pt"), **options).waveform[0].numpy()
    return np.rint(np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16)


def same(got: np.ndarray, expected: np.ndarray) -> None:
    """The same samples: equal length, and at most one 16-bit step apart (float sums in another
    thread may round one sample the other way)."""
    assert got.shape == expected.shape and got.size > 0
    assert np.abs(got.astype(np.int32) - expected.astype(np.int32)).max() <= 1
    assert np.abs(expected).max() > 100, "the reference is not silence"


def speak(client: openai.OpenAI, **options):
    """The raw answer (headers and bytes) of ``client.audio.speech.create``."""
    options = {"model": "tiny-vits", "voice": "alloy", "input": TEXT, **options}
    return client.audio.speech.with_raw_response.create(**options)


def test_wav_equals_transformers_vits(client, checkpoints) -> None:
    answer = speak(client, response_format="wav", extra_body={"seed": 3})
    assert answer.headers["content-type"] == "audio/wav"
    assert answer.headers["x-sample-rate"] == str(RATE)
    assert answer.headers["x-channels"] == "1"
    data = answer.parse().content
    info = soundfile.info(io.BytesIO(data))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", RATE, 1)
    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    assert rate == RATE
    same(samples, reference(checkpoints["vits"], TEXT, 3))
    again = client.audio.speech.create(
        model="tiny-vits", voice="alloy", input=TEXT, response_format="wav", extra_body={"seed": 3}
    )
    assert again.content == data  # the seed makes the call reproducible


def test_pcm_is_raw_16_bit_samples_at_the_stated_rate(client, checkpoints) -> None:
    answer = speak(client, response_format="pcm", extra_body={"seed": 4})
    assert answer.headers["content-type"] == "audio/pcm"
    assert answer.headers["x-sample-rate"] == str(RATE)
    samples = np.frombuffer(answer.parse().content, dtype="<i2")
    same(samples, reference(checkpoints["vits"], TEXT, 4))


def test_flac_holds_the_same_samples(client, checkpoints) -> None:
    answer = speak(client, response_format="flac", extra_body={"seed": 5})
    assert answer.headers["content-type"] == "audio/flac"
    data = answer.parse().content
    assert soundfile.info(io.BytesIO(data)).format == "FLAC"
    samples, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    assert rate == RATE
    same(samples, reference(checkpoints["vits"], TEXT, 5))


def test_default_format_is_wav_and_stream_format_audio_is_served(server) -> None:
    with httpx.Client(base_url=server.base, timeout=120) as http:  # as a curl user sends it
        body = {"model": "tiny-vits", "input": TEXT, "stream_format": "audio"}
        answer = http.post("/v1/audio/speech", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "audio/wav"
    _, rate = soundfile.read(io.BytesIO(answer.content))
    assert rate == RATE


def test_speed_is_the_speaking_rate(client, checkpoints) -> None:
    fast = speak(client, response_format="pcm", speed=2.0, extra_body={"seed": 3})
    samples = np.frombuffer(fast.parse().content, dtype="<i2")
    expected = reference(checkpoints["vits"], TEXT, 3, speaking_rate=2.0)
    same(samples, expected)
    assert expected.size < reference(checkpoints["vits"], TEXT, 3).size  # faster is shorter
    slow = speak(client, response_format="pcm", speed=0.5, extra_body={"seed": 3})
    samples = np.frombuffer(slow.parse().content, dtype="<i2")
    same(samples, reference(checkpoints["vits"], TEXT, 3, speaking_rate=0.5))
    for bad in (0.2, 4.5):
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            speak(client, speed=bad)
        assert refused.value.body["param"] == "speed"


def test_a_speaker_index_voice_selects_the_speaker(client, checkpoints) -> None:
    path = checkpoints["speakers"]
    got = {}
    for voice in ("0", "2", "alloy", {"id": "voice_1234"}):
        answer = speak(
            client,
            model="tiny-vits-speakers",
            voice=voice,
            response_format="pcm",
            extra_body={"seed": 3},
        )
        got[str(voice)] = np.frombuffer(answer.parse().content, dtype="<i2")
    same(got["0"], reference(path, TEXT, 3, speaker_id=0))
    same(got["2"], reference(path, TEXT, 3, speaker_id=2))
    assert not np.array_equal(got["0"], got["2"])
    unconditioned = reference(path, TEXT, 3)  # a voice name: the model's own voice
    same(got["alloy"], unconditioned)
    same(got[str({"id": "voice_1234"})], unconditioned)
    with pytest.raises(openai.BadRequestError) as refused:
        speak(client, model="tiny-vits-speakers", voice="3")
    assert refused.value.body["param"] == "voice"
    assert "from 0 to 2" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError) as refused:  # one speaker: no index to choose
        speak(client, voice="1")
    assert refused.value.body["param"] == "voice"
    assert "one speaker" in refused.value.body["message"]


def test_bad_input_names_the_field(client) -> None:
    for text in ("", "   ", "x" * 4097):
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            speak(client, input=text)
        assert refused.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as refused:  # no character the vocabulary has
        speak(client, input="?!¿")
    assert refused.value.body["param"] == "input"
    assert "nothing to speak" in refused.value.body["message"]
    for unserved in ("mp3", "opus", "aac", "ogg"):
        with pytest.raises(openai.BadRequestError) as refused:
            speak(client, response_format=unserved)
        assert refused.value.body["param"] == "response_format"
        assert "['wav', 'pcm', 'flac']" in refused.value.body["message"]
        assert "ffmpeg" in refused.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        speak(client, voice="v" * 65)
    assert refused.value.body["param"] == "voice"
    with pytest.raises(openai.BadRequestError) as refused:
        speak(client, stream_format="sse")
    assert refused.value.body["param"] == "stream_format"


def test_models_that_do_not_speak(client) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        speak(client, model="tiny-llama")
    assert "does not serve text_to_audio" in refused.value.body["message"]
    assert refused.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        speak(client, model="no-such-model")


def test_the_route_is_in_the_openapi_document(server) -> None:
    with httpx.Client(base_url=server.base, timeout=60) as http:
        document = http.get("/openapi.json").json()
    operation = document["paths"]["/v1/audio/speech"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    fields = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]["properties"]
    assert fields["response_format"]["enum"] == ["wav", "pcm", "flac"]
    assert (fields["speed"]["minimum"], fields["speed"]["maximum"]) == (0.25, 4.0)
    assert fields["input"]["maxLength"] == 4096
    answers = operation["responses"]["200"]["content"]
    assert set(answers) == {"audio/wav", "audio/pcm", "audio/flac"}
    assert answers["audio/wav"]["schema"] == {"type": "string", "format": "binary"}
