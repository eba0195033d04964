"""Logging for ``hfskills serve``: one JSON object per line on stderr, libraries kept quiet.

Every record is written as ``{"ts", "level", "logger", "message"}`` (``ts``: ISO 8601 in UTC,
to the millisecond), plus ``exc`` (the traceback) when one is attached. A message that is
itself a JSON object, such as the request line ``{"event": "request", ...}``, is merged into
the record instead of being nested as a string: ``{"ts", "level", "logger", "event", "model",
...}``; its keys never replace ``ts``, ``level`` or ``logger``. While a traced request's span
is active (host/tracing.py), ``trace_id`` and ``span_id`` (hex, as OTLP backends show them)
follow, so a log line leads to its trace.

Levels (`setup`): hfskills' own loggers and uvicorn's follow ``log_level``. Libraries
(transformers, huggingface_hub, torch, Python ``warnings``) log at ``WARNING`` when it is
``debug`` or ``info``, else only at ``ERROR`` and above. Progress bars (tqdm, as transformers,
huggingface_hub and OpenVINO's tooling draw them) are drawn only at ``debug``, so that from
``info`` up stderr holds nothing but JSON lines.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from . import tracing

#: Loggers of libraries that would otherwise write their own lines (some with a handler of
#: their own): routed through the JSON handler at the library level.
LIBRARIES = (
    "transformers",
    "huggingface_hub",
    "torch",
    "py.warnings",
    "openvino",
    "urllib3",
    "httpx",
    "filelock",
    "PIL",
)
RESERVED = ("ts", "level", "logger")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message"}`` per record; a JSON-object message is merged."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        merged = _json_object(message)
        if merged is None:
            entry["message"] = message
        else:
            for key, value in merged.items():
                entry.setdefault(key, value)
        ids = tracing.current_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _json_object(message: str) -> dict[str, Any] | None:
    if not (message.startswith("{") and message.endswith("}")):
        return None
    try:
        value = json.loads(message)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def library_level(level: int) -> int:
    """Where libraries log: warnings at debug/info, only errors (or worse) from warning up."""
    return logging.WARNING if level < logging.WARNING else max(level, logging.ERROR)


def setup(log_level: str) -> None:
    """Send every log record (hfskills, uvicorn, libraries) to stderr as JSON lines."""
    level = logging.getLevelNamesMapping()[log_level.upper()]
    no_bars = level > logging.DEBUG
    if no_bars:  # read when tqdm and huggingface_hub are first imported
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger
    # transformers and huggingface_hub attach a stderr handler of their own on import (and
    # transformers stops propagation): import them now, so theirs can be taken off
    import huggingface_hub.utils
    import transformers.utils.logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()
    if no_bars:
        transformers_logging.disable_progress_bar()
        huggingface_hub.utils.disable_progress_bars()
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(library_level(level))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(level)
