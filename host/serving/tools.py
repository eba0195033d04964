"""Tool calling in chat completions: the call schema that ``required`` and named tool choices
hold the output to, and the parsers that read a model's own calls (``auto``).

With ``tool_choice`` ``required`` the output is constrained (constraints.py) to a JSON array of
``{"name", "arguments"}`` objects, one branch per function with its parameters' schema, as
vLLM does; with a named function, to that function's arguments. Either way the calls parse
and their arguments validate, even on a 135M model. With ``auto`` the model writes calls in its
own format, read by its family's parser (`PARSERS`; Hermes-style ``<tool_call>{...}</tool_call>``,
as vLLM's ``hermes`` parser, for the families listed and by default).

Calls are read as they are generated (`CallScanner`, `HermesReader`): a stream (`ToolStream`)
sends each call as soon as its name is read and its arguments' text as it grows, and the whole
answer (`answer`) reads the same text with the same scanner, so a call's streamed pieces join to
exactly the ``arguments`` the answer gives: the model's own text of them.
"""

from __future__ import annotations

import json
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
    """The calls in a constrained output (`call_constraint`); none when it was cut short. Each
    call's arguments are the model's own text of them (`CallScanner`), as a stream sends them."""
    if mode != "required":
        return [Call(call_id(), mode, text)]
    try:
        json.loads(text)
    except ValueError:
        return []
    scanner = CallScanner(level=1)
    scanner.feed(text)
    return [Call(call_id(), c.name, c.arguments) for c in scanner.calls if c.named and c.complete]


# -- calls read as they are generated -----------------------------------------------------------
#
# Hand-written rather than partial-json-parser (vLLM's choice) or jiter's partial mode: both
# return the *values* of a JSON prefix, not where the arguments' text lies in it, so a stream
# built on them re-serialises each prefix and sends the difference (vLLM's parsers), and that
# text shifts under a number or an escape still being written (``1`` -> ``1e5`` dumps as
# ``100000.0``; ``"\u00`` parses to nothing yet), so the pieces need not add up to the final
# arguments. Tracking string/escape state and bracket depth gives the model's own argument text,
# which the stream sends as it comes and the whole answer returns: the same text either way.


@dataclass
class PartialCall:
    """A call as far as it has been read: its name once its string closed, its arguments'
    text so far (an object's text grows as it is written; a string or scalar value arrives
    whole, a string decoded, as Hermes models sometimes write arguments), and whether its
    object closed."""

    name: str | None = None
    arguments: str = ""
    complete: bool = False
    source: str = ""  # the call object's text, once it closed

    @property
    def named(self) -> bool:
        return self.name is not None


_SPACE = frozenset(" \t\r\n")
_ARGUMENTS = ("arguments", "parameters")  # Hermes models write either (vLLM reads both)


class CallScanner:
    """Call objects ``{"name": ..., "arguments": {...}}`` in JSON text fed piece by piece: a
    lone object (``level`` 0, a Hermes block) or an array of them (``level`` 1, the
    ``required`` constraint). ``calls`` grows as objects open; reading stops where the outer
    value closes (`end`) or at text that is not this layout (`failed`). Pieces may split the
    text anywhere: the calls read are the same."""

    def __init__(self, level: int) -> None:
        self.level, self.text = level, ""
        self.calls: list[PartialCall] = []
        self.end: int | None = None  # the offset just past the outer value
        self.failed = False
        self._depth = 0
        self._string: int | None = None  # the open string's start
        self._escape = False
        self._slot = "key"  # in a call object: key, colon, value, scalar or after
        self._key: str | None = None
        self._value: int | None = None  # the arguments object's start (its text streams)
        self._value_start = 0  # the current value's start
        self._scalar: int | None = None  # a scalar value's start
        self._read = 0  # the text read so far
        self._call_start = 0

    @property
    def done(self) -> bool:
        return self.end is not None or self.failed

    @property
    def read(self) -> int:
        """How much of the text was read (all of it, unless it stopped early)."""
        return self._read

    def feed(self, piece: str) -> None:
        begin = len(self.text)
        self.text += piece
        for i in range(begin, len(self.text)):
            if self.done:
                break
            self._char(i, self.text[i])
            if not self.failed:  # a character that is not this layout is left unread
                self._read = i + 1
        call = self.calls[-1] if self.calls else None
        if call is not None and self._value is not None and self.text[self._value] == "{":
            call.arguments = self.text[self._value : self._read]  # an object streams as it grows

    def _char(self, i: int, ch: str) -> None:
        inner = self.level + 1  # the depth inside a call object
        if self._string is not None:
            if self._escape:
                self._escape = False
            elif ch == "\\":
                self._escape = True
            elif ch == '"':
                start, self._string = self._string, None
                if self._depth == inner:
                    self._string_ends(start, i)
            return
        if self._scalar is not None:
            if ch not in _SPACE and ch not in ",}":
                return
            self._value_ends(self._scalar, i)
        if ch in _SPACE:
            return
        if self._depth > inner:  # inside a value: strings and brackets only
            if ch == '"':
                self._string = i
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == inner:
                    self._value_ends(self._value_start, i + 1)
            return
        if self._depth < inner:
            self._outside(i, ch)
            return
        self._in_call(i, ch)

    def _outside(self, i: int, ch: str) -> None:
        """Between calls: the array's brackets and commas (level 1), a call's opening."""
        if self.level == 1 and self._depth == 0:
            if ch == "[":
                self._depth = 1
            else:
                self.failed = True
        elif ch == "{":
            self._depth += 1
            self.calls.append(PartialCall())
            self._slot, self._key, self._call_start = "key", None, i
        elif self.level == 1 and ch == "," and self.calls:
            pass
        elif self.level == 1 and ch == "]":
            self._depth, self.end = 0, i + 1
        else:
            self.failed = True

    def _in_call(self, i: int, ch: str) -> None:
        slot = self._slot
        if slot == "key" and ch == '"':
            self._string = i
        elif slot == "colon" and ch == ":":
            self._slot = "value"
        elif slot == "value":
            self._value_start = i
            if ch == '"':
                self._string = i
            elif ch in "{[":
                self._depth += 1
                if self._key in _ARGUMENTS and not self._has_arguments():
                    self._value = i
            else:
                self._scalar = i
        elif slot in ("key", "after") and ch == "}":
            self._close_call(i)
        elif slot == "after" and ch == ",":
            self._slot = "key"
        else:
            self.failed = True

    def _has_arguments(self) -> bool:
        return self._value is not None or bool(self.calls[-1].arguments)

    def _string_ends(self, start: int, i: int) -> None:
        if self._slot == "key":
            self._key, self._slot = json.loads(self.text[start : i + 1]), "colon"
        else:
            self._value_ends(start, i + 1)

    def _value_ends(self, start: int, stop: int) -> None:
        """A value directly in the call object ended at ``stop``: a name or the arguments."""
        self._scalar, self._slot = None, "after"
        call, text = self.calls[-1], self.text[start:stop]
        if self._key == "name" and text.startswith('"'):
            call.name = json.loads(text)
        elif self._key in _ARGUMENTS and (self._value == start or not self._has_arguments()):
            if text.startswith('"'):  # arguments written as a JSON string: its text
                call.arguments = json.loads(text)
            else:
                call.arguments = text
            self._value = None

    def _close_call(self, i: int) -> None:
        call = self.calls[-1]
        call.complete, call.source = True, self.text[self._call_start : i + 1]
        if not call.arguments:
            call.arguments = "{}"  # no arguments given: none needed
        self._depth -= 1
        if self._depth == 0:
            self.end = i + 1


# -- the model's own format (tool_choice auto) --------------------------------------------------


class HermesParser:
    """``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks (Hermes, Qwen,
    SmolLM2's tool format); the text before the first block is the message's content."""

    start, end = "<tool_call>", "</tool_call>"

    def reader(self) -> HermesReader:
        return HermesReader(self.start)

    def parse(self, text: str) -> tuple[str | None, list[Call]]:
        """The content and the calls of a whole answer: the calls a stream reads
        (`HermesReader`), those whose object is JSON with a string name (vLLM's parser skips
        the rest too)."""
        reader = self.reader()
        reader.feed(text)
        calls = []
        for call in reader.calls:
            if not (call.complete and call.named):
                continue
            try:
                json.loads(call.source)
            except ValueError:
                continue
            calls.append(Call(call_id(), call.name or "", call.arguments))
        if not calls:
            return text, []
        return text[: reader.content_end].strip() or None, calls

    def held(self, text: str) -> int:
        """Where streamed content must stop: at a call's start, or at a tail that could
        still grow into one (the rest waits for the end)."""
        if self.start in text:
            return text.index(self.start)
        for n in range(min(len(self.start) - 1, len(text)), 0, -1):
            if text.endswith(self.start[:n]):
                return len(text) - n
        return len(text)


class HermesReader:
    """A Hermes answer read as it is generated: the content up to the first block's tag, then
    each block's call (`CallScanner` on the text after the tag, up to where its object
    closes; what follows up to the next tag is not read)."""

    def __init__(self, tag: str) -> None:
        self.tag, self.text = tag, ""
        self.content_end: int | None = None  # where the first block's tag starts
        self.calls: list[PartialCall] = []
        self._block: CallScanner | None = None
        self._at = 0  # where the block's text starts, or where to look for the next tag
        self._fed = 0

    def feed(self, piece: str) -> None:
        self.text += piece
        while True:
            if self._block is None:
                found = self.text.find(self.tag, self._at)
                if found < 0:  # next time, look from where a tag could still start
                    self._at = max(self._at, len(self.text) - len(self.tag) + 1)
                    return
                if self.content_end is None:
                    self.content_end = found
                self._at = self._fed = found + len(self.tag)
                self._block = CallScanner(level=0)
            block = self._block
            block.feed(self.text[self._fed :])
            self._fed = len(self.text)
            if block.calls and not (self.calls and self.calls[-1] is block.calls[0]):
                self.calls.append(block.calls[0])
            if not block.done:
                return
            # the next tag: after this block's object, or where it stopped being a call
            self._at += block.end if block.end is not None else block.read
            self._block = None


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


class ToolStream:
    """A chat stream's deltas with tools, in OpenAI's and vLLM's shape: content as it comes
    (``auto`` holds back what could be a call's tag); each call's first delta (its index, id,
    type and name, ``arguments: ""``) as soon as its name is read, then its arguments' text in
    pieces as it is generated, then the next call with the next index. A call's pieces add up
    to the arguments the whole answer gives (`answer`): both read the model's own text."""

    def __init__(self, mode: str | None, family: str | None = None) -> None:
        self.mode, self.family, self.text, self.sent = mode, family, "", 0
        self.parser = parser_for(family)
        self.reader: CallScanner | HermesReader | None = None
        if mode == "required":
            self.reader = CallScanner(level=1)
        elif mode == "auto":
            self.reader = self.parser.reader()
        self.call_id = call_id()  # a named function's call
        self.opened: dict[int, list[int]] = {}  # call read -> [its index, argument text sent]

    def add(self, text: str) -> list[oa.Delta]:
        if not text:
            return []
        self.text += text
        if self.mode is None:
            return [oa.Delta(content=text)]
        if self.reader is None:  # a named function: the whole output is its arguments
            deltas = [] if self.opened else [self._first(0, self.call_id, self.mode)]
            self.opened[0] = [0, 0]
            return [*deltas, self._arguments(0, text)]
        deltas = []
        if self.mode == "auto":
            held = self.parser.held(self.text)
            if held > self.sent:
                deltas.append(oa.Delta(content=self.text[self.sent : held]))
                self.sent = held
        self.reader.feed(text)
        for k, call in enumerate(self.reader.calls):
            state = self.opened.get(k)
            if state is None:
                if not call.named:
                    continue  # its name is still to come (or never came: not a call)
                state = self.opened[k] = [len(self.opened), 0]
                deltas.append(self._first(state[0], call_id(), call.name or ""))
            if len(call.arguments) > state[1]:
                deltas.append(self._arguments(state[0], call.arguments[state[1] :]))
                state[1] = len(call.arguments)
        return deltas

    def end(self, text: str, finish: str) -> tuple[list[oa.Delta], str]:
        """The deltas left when the answer ends, and its finish reason: with no call sent, the
        content not sent yet (text held back as a possible call, or a ``required`` output cut
        short); ``tool_calls`` when a call was sent and the answer was not cut short."""
        content, _, finish = answer(text, finish, self.mode, self.family)
        if self.reader is None:
            return [], finish  # a named function's arguments went out as they came
        deltas = []
        if not self.opened and content and len(content) > self.sent:
            deltas.append(oa.Delta(content=content[self.sent :]))
        if self.opened and finish == "stop":
            finish = "tool_calls"
        return deltas, finish

    @staticmethod
    def _first(index: int, id_: str, name: str) -> oa.Delta:
        function = oa.FunctionDelta(name=name, arguments="")
        return oa.Delta(
            tool_calls=[oa.ToolCallDelta(index=index, id=id_, type="function", function=function)]
        )

    @staticmethod
    def _arguments(index: int, text: str) -> oa.Delta:
        function = oa.FunctionDelta(arguments=text)
        return oa.Delta(tool_calls=[oa.ToolCallDelta(index=index, function=function)])
