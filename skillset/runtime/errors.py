"""The one exception hierarchy shared by skills, the generator and the host.

Each error carries a stable ``code`` and the HTTP ``status`` the host answers with, so the host
maps any of them to an API error body without a lookup table of its own.
"""

from __future__ import annotations

from typing import Any


class HFSkillsError(Exception):
    """Base class: a clear, user-facing message; never a traceback for the client."""

    code = "hfskills_error"
    status = 500

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its class, message and attributes, whatever its ``__init__`` takes
        (`ContextLengthError`'s numbers): an error crosses processes whole (a model's own
        Ray Serve deployment, host/ray_models.py; Ray could not rebuild it before)."""
        return (rebuild, (type(self), self.args, self.__dict__))


def rebuild(cls: type[Exception], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    """An exception from its class, args and attributes, without its ``__init__``."""
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


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


class ContextLengthError(InvalidInput):
    """The prompt, or the prompt plus the tokens asked for, does not fit the model's context.

    Carries the numbers (``prompt_tokens``, ``max_new_tokens``, ``limit``). ``param`` is
    ``"max_new_tokens"`` when the token budget is what does not fit, and ``"inputs"`` (the
    core's name for prompts, as every other prompt error) when the prompt alone fills the
    context. The message names the core's fields; `message_for` words it with the client's
    name for ``param`` (OpenAI's ``max_tokens``, ``prompt`` or ``messages``).
    """

    code = "context_length_exceeded"

    def __init__(self, prompt_tokens: int, max_new_tokens: int, limit: int) -> None:
        self.prompt_tokens, self.max_new_tokens, self.limit = prompt_tokens, max_new_tokens, limit
        param = "inputs" if prompt_tokens >= limit else "max_new_tokens"
        super().__init__(self.message_for(param), param=param)

    def message_for(self, field: str) -> str:
        """The message, naming ``field`` (the client's name for ``param``)."""
        if self.prompt_tokens >= self.limit:
            return (
                f"{field}: the prompt has {self.prompt_tokens} tokens, but this model's context "
                f"holds {self.limit} tokens, prompt and generated text together"
            )
        room = self.limit - self.prompt_tokens
        return (
            f"{field} is {self.max_new_tokens}, but this model's context holds {self.limit} "
            f"tokens and the prompt takes {self.prompt_tokens}: {field} can be at most {room}"
        )


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
