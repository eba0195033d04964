"""Decoding request inputs: texts, images (PIL, bytes, base64, paths) and audio (arrays, WAV)."""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInput

_DATA_URL = re.compile(r"^data:[\w/+.-]+;base64,", re.ASCII)


def texts(inputs: list[Any], *, name: str = "inputs") -> list[str]:
    """Check that every input is a string (one batch of texts)."""
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput(f"{name} must be a non-empty list", param=name)
    for i, value in enumerate(inputs):
        if not isinstance(value, str):
            raise InvalidInput(
                f"{name}[{i}] must be a string, got {type(value).__name__}", param=name
            )
    return inputs


def _bytes_from(value: str | bytes, *, allow_paths: bool, kind: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    text = value.strip()
    if _DATA_URL.match(text):
        text = text.split(",", 1)[1]
    elif allow_paths and len(text) < 4096 and Path(text).expanduser().is_file():
        return Path(text).expanduser().read_bytes()
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        hint = ", bytes or a file path" if allow_paths else " or bytes"
        raise InvalidInput(f"{kind} must be base64{hint}; could not decode the string") from None


def image(value: Any, *, allow_paths: bool = True) -> Any:
    """A PIL image in RGB from a PIL image, raw bytes, base64 (or a data URL), or a path."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if not isinstance(value, str | bytes | bytearray):
        raise InvalidInput(
            f"an image must be a PIL image, bytes or a string, got {type(value).__name__}"
        )
    data = _bytes_from(value, allow_paths=allow_paths, kind="an image")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInput(f"could not decode the image: {exc}") from None
    return img.convert("RGB")


def images(inputs: list[Any], *, allow_paths: bool = True) -> list[Any]:
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs must be a non-empty list of images", param="inputs")
    return [image(value, allow_paths=allow_paths) for value in inputs]


def _resample(wave: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Linear-interpolation resampling: enough for speech features (no scipy dependency)."""
    if source_rate == target_rate or wave.size == 0:
        return wave
    duration = wave.shape[0] / source_rate
    target_len = max(1, round(duration * target_rate))
    positions = np.linspace(0, wave.shape[0] - 1, target_len)
    return np.interp(positions, np.arange(wave.shape[0]), wave).astype(np.float32)


def audio(value: Any, sampling_rate: int, *, allow_paths: bool = True) -> np.ndarray:
    """Mono float32 samples at ``sampling_rate`` from an array (assumed at that rate), or from
    WAV/FLAC/OGG bytes, base64 or a path (decoded by soundfile and resampled)."""
    if isinstance(value, np.ndarray | list | tuple):
        wave = np.asarray(value, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise InvalidInput("an audio array must be one non-empty channel of float samples")
        return wave
    if not isinstance(value, str | bytes | bytearray):
        raise InvalidInput(
            f"audio must be a float array, bytes or a string, got {type(value).__name__}"
        )
    import soundfile

    data = _bytes_from(value, allow_paths=allow_paths, kind="audio")
    try:
        wave, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise InvalidInput(f"could not decode the audio: {exc}") from None
    if wave.shape[0] == 0:
        raise InvalidInput("the audio holds no samples")
    return _resample(wave.mean(axis=1), rate, sampling_rate)


def audios(inputs: list[Any], sampling_rate: int, *, allow_paths: bool = True) -> list[np.ndarray]:
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs must be a non-empty list of audio clips", param="inputs")
    return [audio(value, sampling_rate, allow_paths=allow_paths) for value in inputs]


def by_length(waves: list[np.ndarray], run: Any) -> list[Any]:
    """Call ``run(batch)`` once per group of equally long clips and return results in input
    order. Audio encoders without an attention mask (wav2vec2-base and kin) see zero padding,
    so padding clips to a common length would change their outputs; equal lengths need none."""
    groups: dict[int, list[int]] = {}
    for index, wave in enumerate(waves):
        groups.setdefault(len(wave), []).append(index)
    results: list[Any] = [None] * len(waves)
    for indices in groups.values():
        for index, result in zip(indices, run([waves[i] for i in indices]), strict=True):
            results[index] = result
    return results
