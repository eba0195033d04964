"""The one exception hierarchy shared by skills, the generator and the host.

Each error carries a stable ``code`` and the HTTP ``status`` the host answers with, so the host
maps any of them to an API error body without a lookup table of its own.
"""

from __future__ import annotations


class HFSkillsError(Exception):
    """Base class: a clear, user-facing message; never a traceback for the client."""

    code = "hfskills_error"
    status = 500

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class HardwareUnavailable(HFSkillsError):
    """The requested hardware (or its runtime library) is not present on this machine."""

    code = "hardware_unavailable"
    status = 503


class UnsupportedTask(HFSkillsError):
    """The skill or checkpoint does not offer the requested task."""

    code = "unsupported_task"
    status = 400


class InvalidInput(HFSkillsError):
    """An input or parameter is malformed (wrong type, undecodable image, missing mask...)."""

    code = "invalid_input"
    status = 422


class ModelLoadError(HFSkillsError):
    """The checkpoint could not be found or loaded."""

    code = "model_load_failed"
    status = 503


class InferenceError(HFSkillsError):
    """The forward pass or generation failed for a valid input."""

    code = "inference_failed"
    status = 424


class GeneratorError(HFSkillsError):
    """The generator refused a source or a metadata value (nothing was written)."""

    code = "generator_error"
    status = 400


def first_line(exc: BaseException) -> str:
    """An exception's first line of text (its type name when it has none): what an error
    message quotes from a library's exception, without its traceback or multi-line dump."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
