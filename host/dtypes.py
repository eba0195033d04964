"""What TGI's ``/info`` calls ``model_dtype``: the type a loaded model really computes in.

TGI writes torch's own string (``"torch.float16"``); so does this, for every torch module. A
GGUF file that a runtime reads as is (OpenVINO GenAI) reports its quantization from the file's
header (``general.file_type``: ``"Q4_1"``, ``"Q8_0"``, ``"F16"``), else from its name. Any other
runtime reports its precision as loaded (``"torch.float16"`` for a torch dtype name, else as is,
e.g. OpenVINO's ``"f32"`` or ``"auto"``).
"""

from __future__ import annotations

import functools
import re
import struct
from pathlib import Path
from typing import Any, BinaryIO

TORCH_DTYPES = frozenset({"float32", "float16", "bfloat16", "float64", "int8", "uint8"})
#: A GGUF file name's quantization: ``SmolLM2-135M-Instruct.Q4_1.gguf`` -> ``Q4_1``.
GGUF_NAME = re.compile(r"[.-]((?:I?Q\d[A-Z0-9_]*)|F16|F32|BF16)\.gguf$", re.IGNORECASE)
#: GGUF value types: fixed sizes in bytes (8 is a string, 9 an array).
GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def model_dtype(endpoint: Any, location: str = "") -> str:
    dtype = getattr(endpoint.model, "dtype", None)
    if dtype is not None and str(dtype).startswith("torch."):
        return str(dtype)
    source = str((endpoint.settings or {}).get("genai_source") or location)
    if source.lower().endswith(".gguf"):
        return gguf_type(source) or "gguf"
    name = str(endpoint.dtype)
    return f"torch.{name}" if name in TORCH_DTYPES else name


@functools.lru_cache(maxsize=32)
def gguf_type(path: str) -> str | None:
    """``"Q4_1"`` for a GGUF file: its header's ``general.file_type``, else its file name."""
    try:
        with open(path, "rb") as f:
            value = _file_type(f)
    except (OSError, struct.error, ValueError):
        value = None
    if value is not None:
        try:
            from gguf import LlamaFileType

            return LlamaFileType(value).name.removeprefix("MOSTLY_")
        except (ImportError, ValueError):
            pass
    match = GGUF_NAME.search(Path(path).name)
    return match.group(1).upper() if match else None


def _file_type(f: BinaryIO) -> int | None:
    """Walk the header's key-value pairs until ``general.file_type`` (an early key)."""
    if f.read(4) != b"GGUF":
        return None
    (version,) = struct.unpack("<I", f.read(4))
    if version < 2:
        return None
    _tensors, pairs = struct.unpack("<QQ", f.read(16))
    for _ in range(min(pairs, 4096)):
        key = _string(f)
        (kind,) = struct.unpack("<I", f.read(4))
        if key == "general.file_type" and kind in (4, 5):
            return struct.unpack("<I" if kind == 4 else "<i", f.read(4))[0]
        _skip(f, kind)
    return None


def _string(f: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", f.read(8))
    return f.read(length).decode("utf-8", "replace")


def _skip(f: BinaryIO, kind: int) -> None:
    if kind in GGUF_SIZES:
        f.seek(GGUF_SIZES[kind], 1)
    elif kind == 8:
        (length,) = struct.unpack("<Q", f.read(8))
        f.seek(length, 1)
    elif kind == 9:
        item, count = struct.unpack("<IQ", f.read(12))
        if item in GGUF_SIZES:
            f.seek(GGUF_SIZES[item] * count, 1)
        else:
            for _ in range(count):
                _skip(f, item)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")
