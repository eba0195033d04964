"""Input decoding: images as PIL/bytes/base64/data URL/path, audio as arrays or WAV bytes."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile

from hfskills.skillset.runtime import checkpoint, media
from hfskills.skillset.runtime.errors import InvalidInput, ModelLoadError
from tests.checkpoints import tiny_audio, tiny_image


def _png() -> bytes:
    buffer = io.BytesIO()
    tiny_image(16).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_image_form_decodes_to_the_same_pixels(tmp_path) -> None:
    data = _png()
    path = tmp_path / "x.png"
    path.write_bytes(data)
    b64 = base64.b64encode(data).decode()
    forms = [tiny_image(16), data, b64, f"data:image/png;base64,{b64}", str(path)]
    arrays = [np.asarray(media.image(f)) for f in forms]
    assert all(a.shape == (16, 16, 3) and (a == arrays[1]).all() for a in arrays[1:])


def test_paths_can_be_refused(tmp_path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(_png())
    with pytest.raises(InvalidInput, match="base64"):
        media.image(str(path), allow_paths=False)


@pytest.mark.parametrize("value", [b"not an image", "%%%not base64%%%", 42, None])
def test_bad_images_are_invalid_input(value) -> None:
    with pytest.raises(InvalidInput):
        media.image(value)


def test_wav_bytes_decode_and_resample() -> None:
    wave = tiny_audio(0.5, sampling_rate=8000)
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, 8000, format="WAV")
    decoded = media.audio(buffer.getvalue(), 16000)
    assert decoded.dtype == np.float32 and abs(len(decoded) - 8000) <= 1
    assert np.array_equal(media.audio(wave.tolist(), 8000), wave)


@pytest.mark.parametrize("value", [b"RIFF garbage", [], np.zeros((2, 2)), {"a": 1}])
def test_bad_audio_is_invalid_input(value) -> None:
    with pytest.raises(InvalidInput):
        media.audio(value, 16000)


def test_by_length_keeps_order_and_groups_equal_lengths() -> None:
    waves = [np.zeros(3), np.zeros(5), np.zeros(3)]
    calls = []

    def run(batch):
        calls.append(len(batch))
        return [len(w) for w in batch]

    assert media.by_length(waves, run) == [3, 5, 3]
    assert sorted(calls) == [1, 2]


def test_checkpoint_resolution(tmp_path) -> None:
    (tmp_path / "model.Q4.gguf").write_bytes(b"GGUF")
    assert checkpoint.resolve(tmp_path).kwargs == {"gguf_file": "model.Q4.gguf"}
    assert checkpoint.resolve(tmp_path / "model.Q4.gguf").kwargs == {"gguf_file": "model.Q4.gguf"}
    assert checkpoint.resolve("org/name").location == "org/name"
    (tmp_path / "second.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="several GGUF"):
        checkpoint.resolve(tmp_path)
    with pytest.raises(ModelLoadError, match="not a checkpoint"):
        checkpoint.resolve(tmp_path / "..")
