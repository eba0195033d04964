"""Logprobs in each API's shape, from the engines' `TokenLogprob`s (ids and numbers).

What the numbers are is the engines' (skillset/runtime/generation.py, `TokenLogprob`): the raw
distribution, log-softmax of the model's logits before sampling parameters, as vLLM's default
``logprobs_mode``. Here they get text, as vLLM renders them: a token's text is
``tokenizer.decode([id])`` (special tokens included), its ``bytes`` the UTF-8 of that text,
except a token that holds part of a character (byte-level BPE, byte fallback), whose bytes are
its own, so a client can join them into the character. A logprob below -9999 (or not a number)
is -9999.0, OpenAI's floor (JSON has no -inf). One entry per token of the answer's
``token_ids``: the EOS that ended a sequence is not among them (OpenAI shows none either).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import AsyncIterator, Iterable
from typing import Any

from hfskills.skillset.runtime.generation import Event, FinalEvent, TokenLogprob

from ..protocol import openai as oa

FLOOR = -9999.0
_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # a byte-fallback token (SentencePiece, llama)
#: Per tokenizer: token id -> (text, bytes), filled as tokens are rendered.
_TEXTS: weakref.WeakKeyDictionary[Any, dict[int, tuple[str, list[int]]]] = (
    weakref.WeakKeyDictionary()
)


def _byte_level() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte (byte-level BPE vocabularies)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


_BYTE_LEVEL = _byte_level()


def floor(logprob: float) -> float:
    return logprob if logprob > FLOOR else FLOOR  # NaN compares false: the floor too


def token(tokenizer: Any, token_id: int) -> tuple[str, list[int]]:
    """A token's text and bytes (see the module docstring)."""
    try:
        cache = _TEXTS.setdefault(tokenizer, {})
    except TypeError:  # not weakly referenceable: no cache
        cache = {}
    found = cache.get(token_id)
    if found is not None:
        return found
    text = tokenizer.decode([token_id])
    data = list(text.encode("utf-8", errors="replace"))
    if "\ufffd" in text:  # part of a character: the token's own bytes, where they can be read
        piece = tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(piece, str) and (byte := _BYTE.match(piece)):
            data = [int(byte.group(1), 16)]
        elif isinstance(piece, str) and piece and all(c in _BYTE_LEVEL for c in piece):
            data = [_BYTE_LEVEL[c] for c in piece]
    cache[token_id] = (text, data)
    return text, data


def of(items: Iterable[dict[str, Any] | TokenLogprob] | None) -> list[TokenLogprob]:
    """A result's logprobs (JSON-ready dicts: a batch result, or the response cache's) typed."""
    return [i if isinstance(i, TokenLogprob) else TokenLogprob.of(i) for i in items or ()]


# -- OpenAI ------------------------------------------------------------------------------------


def openai_chat(
    items: Iterable[dict[str, Any] | TokenLogprob] | None, tokenizer: Any
) -> oa.ChatLogprobs:
    """OpenAI chat's ``logprobs``: per token its text, logprob, bytes and ``top_logprobs``."""
    content = []
    for item in of(items):
        text, data = token(tokenizer, item.token_id)
        top = []
        for token_id, logprob in item.top:
            alt, alt_bytes = token(tokenizer, token_id)
            top.append(oa.TopLogprob(token=alt, logprob=floor(logprob), bytes=alt_bytes))
        content.append(
            oa.ChatTokenLogprob(
                token=text, logprob=floor(item.logprob or 0.0), bytes=data, top_logprobs=top
            )
        )
    return oa.ChatLogprobs(content=content)


def openai_completion(
    items: Iterable[dict[str, Any] | TokenLogprob] | None, tokenizer: Any, offset: int = 0
) -> oa.CompletionLogprobs:
    """OpenAI's legacy completions ``logprobs``: ``top_logprobs[i]`` holds the sampled token
    and the most likely ones (up to ``logprobs`` + 1 entries, as OpenAI and vLLM); a prompt's
    first token has neither logprob nor alternatives. ``text_offset`` starts at ``offset``
    (what the choice's stream has sent before) and adds each token's text length (vLLM's)."""
    out = oa.CompletionLogprobs()
    for item in of(items):
        text, _ = token(tokenizer, item.token_id)
        out.text_offset.append(offset)
        offset += len(text)
        out.tokens.append(text)
        if item.logprob is None:
            out.token_logprobs.append(None)
            out.top_logprobs.append(None)
            continue
        out.token_logprobs.append(floor(item.logprob))
        top: dict[str, float] = {}
        for token_id, logprob in item.top:
            top.setdefault(token(tokenizer, token_id)[0], floor(logprob))
        top.setdefault(text, floor(item.logprob))
        out.top_logprobs.append(top)
    return out


class Pending:
    """A stream's logprobs between chunks: `watch` records each event's as the stream's
    consumer takes it; `take` gives those not yet sent, for the next chunk (None: none, or not
    asked). A token whose text is held back sends its logprob with the next chunk."""

    def __init__(self, asked: bool, tokenizer: Any) -> None:
        self.asked, self.tokenizer = asked, tokenizer
        self.items: list[TokenLogprob] = []
        self.prompt: list[TokenLogprob] | None = None
        self.sent_text = 0  # characters of the choice's text sent (completions' text_offset)

    def watch(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        """``events``, recorded as they pass when logprobs were asked (else as they are)."""
        return self._watched(events) if self.asked else events

    async def _watched(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        try:
            async for event in events:
                self._record(event)
                yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    def _record(self, event: Event) -> None:
        if isinstance(event, FinalEvent):
            if self.prompt is None and event.prompt_logprobs is not None:
                self.prompt = event.prompt_logprobs  # no token came: the final event has it
            return
        if event.prompt_logprobs is not None:
            self.prompt = event.prompt_logprobs
        if event.logprob is not None:
            self.items.append(event.logprob)

    async def first(self, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        """``events`` with its first one taken now (its prompt logprobs with it, for an echo
        chunk), then given again."""
        if not self.asked:
            return events
        first = await anext(events)

        async def chained() -> AsyncIterator[Event]:
            yield first
            async for event in events:
                yield event

        return chained()

    def echo(self, text: str) -> oa.CompletionLogprobs | None:
        """The logprobs of an echo chunk whose text is the prompt's, ``text``."""
        self.sent_text = len(text)
        if not self.asked:
            return None
        return openai_completion(self.prompt, self.tokenizer)

    def _take(self) -> list[TokenLogprob] | None:
        if not self.asked or not self.items:
            return None
        items, self.items = self.items, []
        return items

    def chat(self) -> oa.ChatLogprobs | None:
        items = self._take()
        return None if items is None else openai_chat(items, self.tokenizer)

    def completion(self, text: str) -> oa.CompletionLogprobs | None:
        """The logprobs of a chunk whose text is ``text``."""
        items = self._take()
        start, self.sent_text = self.sent_text, self.sent_text + len(text)
        return None if items is None else openai_completion(items, self.tokenizer, start)


# -- TGI ---------------------------------------------------------------------------------------


def tgi_token(tokenizer: Any, token_id: int, logprob: float | None, text: str | None = None) -> Any:
    """TGI's ``Token``: id, text (``text``: the stream's own, else the token's), logprob, and
    whether it is a special token."""
    from ..protocol import hf

    special = token_id in set(getattr(tokenizer, "all_special_ids", ()) or ())
    return hf.Token(
        id=token_id,
        text=token(tokenizer, token_id)[0] if text is None else text,
        logprob=None if logprob is None else floor(logprob),
        special=special,
    )


def tgi_top(tokenizer: Any, item: TokenLogprob) -> list[Any]:
    """One position's ``top_tokens`` (the most likely first)."""
    return [tgi_token(tokenizer, token_id, logprob) for token_id, logprob in item.top]


def tgi_details(
    result: dict[str, Any], tokenizer: Any, top_n_tokens: int | None
) -> tuple[list[Any], list[Any], list[list[Any]] | None]:
    """TGI's ``details.tokens``, ``details.prefill`` and ``details.top_tokens`` for a result:
    each generated token with its logprob (when computed), the prompt's tokens (when asked),
    and the alternatives (when ``top_n_tokens`` asked for some)."""
    from ..protocol import hf

    items = {i: lp for i, lp in enumerate(of(result.get("logprobs")))}
    tokens = [
        tgi_token(tokenizer, t, items[i].logprob if i in items else None)
        for i, t in enumerate(result["token_ids"])
    ]
    prefill = [
        hf.PrefillToken(
            id=p.token_id,
            text=token(tokenizer, p.token_id)[0],
            logprob=None if p.logprob is None else floor(p.logprob),
        )
        for p in of(result.get("prompt_logprobs"))
    ]
    top = [tgi_top(tokenizer, items[i]) for i in sorted(items)] if top_n_tokens else None
    return tokens, prefill, top
