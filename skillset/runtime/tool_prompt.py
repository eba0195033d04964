"""Tools in chat prompts for templates that do not render them.

A chat template that knows tools (it reads ``tools`` and messages' ``tool_calls``) gets them as
transformers passes them (``apply_chat_template(tools=...)``). One that does not (SmolLM2's
GGUF template prints each message's role and content only) gets the Hermes layout in plain
messages instead: the function signatures in the system message inside ``<tools>``, the
format to answer in (``<tool_call>{"name": ..., "arguments": ...}</tool_call>``), an
assistant's calls as that text, and tool results as ``<tool_response>`` user turns.
"""

from __future__ import annotations

import json
from typing import Any

INSTRUCTIONS = (
    "You are a function calling AI model. You are provided with function signatures within "
    "<tools></tools> XML tags. You may call one or more functions to assist with the user "
    "query. Here are the available tools: <tools>\n{tools}\n</tools>\nFor each function call, "
    "return a json object with function name and arguments within <tool_call></tool_call> XML "
    'tags:\n<tool_call>\n{{"name": <function-name>, "arguments": <args-dict>}}\n</tool_call>'
)


def knows_tools(template: str | None) -> bool:
    """Whether a chat template renders tools and calls itself."""
    return bool(template) and "tools" in template and "tool_calls" in template


def plain(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """``messages`` with ``tools`` and tool calls written as text (the Hermes layout)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if message.get("tool_calls"):
            calls = [
                "<tool_call>\n"
                + json.dumps(
                    {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                )
                + "\n</tool_call>"
                for c in message["tool_calls"]
            ]
            content = "\n".join([content, *calls]) if content else "\n".join(calls)
        if role == "tool":
            role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
        out.append({"role": role, "content": content})
    if tools:
        listed = "\n".join(json.dumps(t) for t in tools)
        system = INSTRUCTIONS.format(tools=listed)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + system}
        else:
            out.insert(0, {"role": "system", "content": system})
    return out


def uses_tools(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> bool:
    return bool(tools) or any(
        m.get("tool_calls") or m.get("role") == "tool" for m in messages if isinstance(m, dict)
    )
