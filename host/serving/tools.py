"""Tool calling in chat completions: the call schema that ``required`` and named tool choices
hold the output to, and the parsers that read a model's own calls (``auto``).

With ``tool_choice`` ``required`` the output is constrained (constraints.py) to a JSON array of
``{"name", "arguments"}`` objects, one branch per function with its parameters' schema, as
vLLM does; with a named function, to that function's arguments. Either way the calls parse
and their arguments validate, even on a 135M model. With ``auto`` the model writes calls in its
own format, read by its family's parser (`PARSERS`; Hermes-style ``<tool_call>{...}</tool_call>``,
as vLLM's ``hermes`` parser, for the families listed and by default).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from hfskills.skillset.runtime import constraints
from hfskills.skillset.runtime.constraints import JSONSchema

from ..protocol import openai as oa


@dataclass(frozen=True)
class Call:
    """One parsed call: its id, the function's name, its arguments as JSON text."""

    id: str
    name: str
    arguments: str

    def message(self) -> oa.ToolCall:
        return oa.ToolCall(
            id=self.id, function=oa.FunctionCall(name=self.name, arguments=self.arguments)
        )


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _parameters(tool: oa.Tool) -> dict[str, Any]:
    return tool.function.parameters or {"type": "object", "properties": {}}


def call_constraint(tools: list[oa.Tool], mode: str, parallel: bool) -> JSONSchema:
    """The constraint for ``tool_choice`` ``required`` (an array of calls; one only without
    ``parallel_tool_calls``) or a named function (its arguments). Each function's parameters
    are compiled on their own first, so a bad schema is named ``tools[i].function.parameters``
    (`InvalidInput`)."""
    for index, tool in enumerate(tools):
        if mode in ("required", tool.function.name):
            field = f"tools[{index}].function.parameters"
            constraints.grammar(
                JSONSchema(type="json_schema", json_schema=_parameters(tool), field=field)
            )
            if mode == tool.function.name:
                return JSONSchema(type="json_schema", json_schema=_parameters(tool), field=field)
    branches = [
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "const": tool.function.name},
                "arguments": _parameters(tool),
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": branches}}
    if not parallel:
        schema["maxItems"] = 1
    return JSONSchema(type="json_schema", json_schema=schema, field="tools")


def forced_calls(text: str, mode: str) -> list[Call]:
    """The calls in a constrained output (`call_constraint`); none when it was cut short."""
    if mode != "required":
        return [Call(call_id(), mode, text)]
    try:
        items = json.loads(text)
    except ValueError:
        return []
    return [Call(call_id(), item["name"], json.dumps(item["arguments"])) for item in items]


# -- the model's own format (tool_choice auto) --------------------------------------------------


class HermesParser:
    """``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks (Hermes, Qwen,
    SmolLM2's tool format); the text before the first block is the message's content."""

    start, end = "<tool_call>", "</tool_call>"
    _block = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)

    def parse(self, text: str) -> tuple[str | None, list[Call]]:
        if self.start not in text:
            return text, []
        content = text[: text.index(self.start)].strip() or None
        calls = []
        for block in self._block.findall(text):
            try:
                item = json.loads(block)
                name = item["name"]
                arguments = item.get("arguments", item.get("parameters", {}))
            except (ValueError, KeyError, TypeError):
                continue  # not a call: vLLM's parser skips it too
            if not isinstance(name, str):
                continue
            text_args = arguments if isinstance(arguments, str) else json.dumps(arguments)
            calls.append(Call(call_id(), name, text_args))
        return (content, calls) if calls else (text, [])

    def held(self, text: str) -> int:
        """Where streamed content must stop: at a call's start, or at a tail that could
        still grow into one (the rest waits for the end)."""
        if self.start in text:
            return text.index(self.start)
        for n in range(min(len(self.start) - 1, len(text)), 0, -1):
            if text.endswith(self.start[:n]):
                return len(text) - n
        return len(text)


#: The tool-call format of each model family (``config.model_type``); unlisted: Hermes.
PARSERS: dict[str, type[HermesParser]] = {"llama": HermesParser, "qwen2": HermesParser}


def family(endpoint: Any) -> str | None:
    """A served model's family (``config.model_type``), which picks its parser."""
    return getattr(getattr(endpoint, "config", None), "model_type", None)


def parser_for(model_type: str | None) -> HermesParser:
    return PARSERS.get(model_type or "", HermesParser)()


def answer(
    text: str, finish: str, mode: str | None, model_type: str | None
) -> tuple[str | None, list[Call], str]:
    """A generated text as the message's content, its calls and the finish reason
    (``tool_calls`` when it called and was not cut short)."""
    if mode is None:
        return text, [], finish
    if mode == "auto":
        content, calls = parser_for(model_type).parse(text)
    else:
        content, calls = None, forced_calls(text, mode)
        if not calls:
            content = text
    if calls and finish == "stop":
        finish = "tool_calls"
    return content, calls, finish
