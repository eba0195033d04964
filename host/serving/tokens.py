"""Tokenizer serving: vLLM's ``/tokenize`` and ``/detokenize``, TEI's ``/tokenize`` and
``/decode``, with the served model's own tokenizer (the one its handlers encode with, so a
count here is the count a request is billed and limited by).

The model is held loaded while its tokenizer runs, and the tokenizer is a copy of the
endpoint's (made once per loaded model): a fast tokenizer is not thread-safe, and the
model's workers use theirs under their own lock. The copy runs in a worker thread under a
lock of its own.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from typing import Any

from hfskills.skillset.runtime import generation
from hfskills.skillset.runtime.errors import InvalidInput
from hfskills.skillset.runtime.text import max_length

from ..errors import APIError
from ..loader import Loaded, ModelLoader
from ..protocol import tokens as tk
from .common import client_words

_COPYING = threading.Lock()
_ATTR = "_hfskills_tokenizer"


def _tokenizer(loaded: Loaded) -> tuple[Any, threading.Lock]:
    """The loaded model's own tokenizer copy and its lock (made on first use)."""
    with _COPYING:
        held = loaded.__dict__.get(_ATTR)
        if held is None:
            processor = loaded.endpoint.processor
            tokenizer = getattr(processor, "tokenizer", processor)
            if tokenizer is None or not callable(getattr(tokenizer, "decode", None)):
                raise APIError(
                    400,
                    f"model {loaded.model.name!r} has no tokenizer",
                    code="no_tokenizer",
                    param="model",
                )
            held = (copy.deepcopy(tokenizer), threading.Lock())
            loaded.__dict__[_ATTR] = held
        return held


async def _with_tokenizer(loader: ModelLoader, name: str, work: Any) -> Any:
    """``work(tokenizer, loaded)`` in a worker thread, the model held loaded meanwhile."""
    async with loader.use(name) as loaded:
        if loaded.model.remote is not None:
            raise APIError(
                400,
                f"model {name!r} is served by a remote server: its tokenizer is not here",
                code="no_tokenizer",
                param="model",
            )

        def locked() -> Any:
            tokenizer, lock = _tokenizer(loaded)
            with lock:
                return work(tokenizer, loaded)

        return await asyncio.to_thread(locked)


def _strs(tokenizer: Any, ids: list[int]) -> list[str]:
    return [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]


async def tokenize(
    loader: ModelLoader, name: str, body: tk.TokenizeCompletionRequest | tk.TokenizeChatRequest
) -> tk.TokenizeResponse:
    """vLLM's ``/tokenize``: a prompt, or messages through the chat template."""

    def work(tokenizer: Any, loaded: Loaded) -> tk.TokenizeResponse:
        if isinstance(body, tk.TokenizeChatRequest):
            if not getattr(tokenizer, "chat_template", None):
                raise InvalidInput(
                    f"model {loaded.model.name!r} has no chat template; send a prompt",
                    param="messages",
                )
            try:
                text = tokenizer.apply_chat_template(
                    body.chat(),
                    tokenize=False,
                    add_generation_prompt=body.add_generation_prompt,
                    continue_final_message=body.continue_final_message,
                    **(body.chat_template_kwargs or {}),
                )
            except Exception as exc:  # a template's own raise_exception, a bad kwarg
                raise InvalidInput(
                    f"the chat template refused the messages: {exc}", param="messages"
                ) from None
        else:
            text = body.prompt
        ids = tokenizer(text, add_special_tokens=body.add_special_tokens)["input_ids"]
        return tk.TokenizeResponse(
            count=len(ids),
            max_model_len=max_length(tokenizer, loaded.endpoint.config),
            tokens=list(ids),
            token_strs=_strs(tokenizer, ids) if body.return_token_strs else None,
        )

    return await _with_tokenizer(loader, name, work)


async def detokenize(
    loader: ModelLoader, name: str, body: tk.DetokenizeRequest
) -> tk.DetokenizeResponse:
    """vLLM's ``/detokenize``: token ids back to the text (special tokens kept)."""

    def work(tokenizer: Any, loaded: Loaded) -> tk.DetokenizeResponse:
        with client_words({"inputs": "tokens"}):
            ids = generation.checked_ids(tokenizer, body.tokens)
        return tk.DetokenizeResponse(prompt=tokenizer.decode(ids))

    return await _with_tokenizer(loader, name, work)


async def tei_tokenize(
    loader: ModelLoader, name: str, body: tk.TEITokenizeRequest
) -> list[list[dict[str, Any]]]:
    """TEI's ``/tokenize``: per text, its tokens with their character spans."""

    def work(tokenizer: Any, loaded: Loaded) -> list[list[dict[str, Any]]]:
        fast = bool(getattr(tokenizer, "is_fast", False))
        answers = []
        for text in body.texts():
            encoded = tokenizer(
                text,
                add_special_tokens=body.add_special_tokens,
                return_offsets_mapping=fast,
                return_special_tokens_mask=True,
            )
            ids = encoded["input_ids"]
            special = encoded.get("special_tokens_mask") or [0] * len(ids)
            spans = encoded.get("offset_mapping") or [None] * len(ids)
            names = _strs(tokenizer, ids)
            tokens = []
            for token_id, is_special, span, token in zip(ids, special, spans, names, strict=True):
                if is_special or span is None:
                    tokens.append(tk.SimpleToken(id=token_id, text=token, special=bool(is_special)))
                else:
                    start, stop = span
                    tokens.append(
                        tk.SimpleToken(
                            id=token_id,
                            text=text[start:stop],
                            special=False,
                            start=start,
                            stop=stop,
                        )
                    )
            answers.append([t.model_dump() for t in tokens])
        return answers

    return await _with_tokenizer(loader, name, work)


async def decode(loader: ModelLoader, name: str, body: tk.DecodeRequest) -> list[str]:
    """TEI's ``/decode``: one text per id list."""

    def work(tokenizer: Any, loaded: Loaded) -> list[str]:
        texts = []
        for ids in body.batches():
            with client_words({"inputs": "ids"}):
                checked = generation.checked_ids(tokenizer, ids) if ids else []
            texts.append(tokenizer.decode(checked, skip_special_tokens=body.skip_special_tokens))
        return texts

    return await _with_tokenizer(loader, name, work)
