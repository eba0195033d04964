"""Tokenizing text (or token-id) inputs the same way for every text task.

Two ways: `encode` tokenizes one batch into padded tensors (a handler that does everything in
one call); `prepare` tokenizes each input on its own, unpadded, with its real token count (a
`Staged` handler's prepare stage), and `collate` pads a batch of prepared inputs into the
tensors `encode` would have made for the same inputs.
"""

from __future__ import annotations

from typing import Any

from .errors import InferenceError, InvalidInput
from .staged import Prepared


def max_length(tokenizer: Any, config: Any, cap: int | None = None) -> int:
    """The longest input the model accepts: the smallest of the tokenizer's and config's limits."""
    limits = [cap] if cap else []
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000:
        limits.append(model_max)
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            # roberta-style position ids start after the padding index
            offset = (
                (getattr(config, "pad_token_id", 0) or 0) + 1
                if "roberta" in str(getattr(config, "model_type", ""))
                else 0
            )
            limits.append(value - offset)
            break
    return min(limits) if limits else 512


def encode(
    tokenizer: Any,
    inputs: list[Any],
    *,
    limit: int,
    truncate: bool = True,
    pairs: list[str] | None = None,
    offsets: bool = False,
) -> Any:
    """Tokenize strings (or pre-tokenized id lists) into one padded batch of CPU tensors.

    Inputs longer than ``limit`` tokens are truncated when ``truncate`` is true and refused
    with `InvalidInput` otherwise, so the model never sees positions it has no embedding for.
    ``pairs`` gives a second text per input (question answering); only it is truncated.
    ``offsets`` adds ``offset_mapping`` (character spans per token; strings only).
    """
    _check(inputs, truncate)
    if all(isinstance(x, str) for x in inputs):
        truncation: bool | str = ("only_second" if pairs else True) if truncate else False
        batch = tokenizer(
            inputs,
            pairs,
            padding=True,
            truncation=truncation,
            max_length=limit if truncate else None,
            return_tensors="pt",
            return_offsets_mapping=offsets,
        )
    elif not offsets and _token_ids(inputs):
        ids = _checked_ids(tokenizer, inputs, limit, truncate)
        batch = tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    else:
        kinds = "strings" if offsets else "strings or all be lists of token ids"
        raise InvalidInput(f"inputs must all be {kinds}", param="inputs")
    _check_length(batch["input_ids"].shape[1], limit)
    return batch


def prepare(
    tokenizer: Any,
    inputs: list[Any],
    *,
    limit: int,
    truncate: bool = True,
    pairs: list[str] | None = None,
    offsets: bool = False,
    pair_truncation: str = "only_second",
) -> list[Prepared]:
    """Tokenize each input without padding: one `Prepared` per input, whose ``features`` are
    its model inputs (lists of ints) and ``tokens`` its real token count. The same inputs,
    truncation and limits as `encode` (`collate` of the result equals `encode`'s tensors).
    ``state`` holds ``offsets`` (character spans per token) when asked for, and
    ``sequence_ids`` (per token: 0, 1 or None) with ``pairs``. ``pair_truncation``: how a
    pair too long is cut (``only_second``: the context, as question answering;
    ``longest_first``: the longer text first, as cross-encoders are scored).
    """
    _check(inputs, truncate)
    if all(isinstance(x, str) for x in inputs):
        truncation: bool | str = (pair_truncation if pairs else True) if truncate else False
        encoded = tokenizer(
            inputs,
            pairs,
            truncation=truncation,
            max_length=limit if truncate else None,
            return_offsets_mapping=offsets,
        )
        spans = encoded.pop("offset_mapping", None)
        keys = list(encoded.keys())
        items = []
        for row in range(len(inputs)):
            features = {key: encoded[key][row] for key in keys}
            state: dict[str, Any] = {}
            if spans is not None:
                state["offsets"] = spans[row]
            if pairs is not None:
                state["sequence_ids"] = encoded.sequence_ids(row)
            items.append(Prepared(features, len(features["input_ids"]), state))
    elif not offsets and _token_ids(inputs):
        ids = _checked_ids(tokenizer, inputs, limit, truncate)
        items = [
            Prepared({"input_ids": x, "attention_mask": [1] * len(x)}, len(x), {}) for x in ids
        ]
    else:
        kinds = "strings" if offsets else "strings or all be lists of token ids"
        raise InvalidInput(f"inputs must all be {kinds}", param="inputs")
    _check_length(max(item.tokens for item in items), limit)
    return items


def collate(tokenizer: Any, batch: list[Prepared], length: int | None = None) -> dict[str, Any]:
    """Pad prepared text inputs into one batch of tensors, as the tokenizer pads (its pad id and
    padding side), to the longest input or to ``length``. An input without ``token_type_ids``
    (given as token ids) gets zeros, as the model would use without them."""
    import torch

    length = max([len(item.features["input_ids"]) for item in batch] + [length or 0])
    keys = list(dict.fromkeys(key for item in batch for key in item.features))
    left = getattr(tokenizer, "padding_side", "right") == "left"
    pads = {
        "input_ids": tokenizer.pad_token_id,
        "attention_mask": 0,
        "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
    }
    tensors = {}
    for key in keys:
        pad = pads.get(key, 0)
        rows = []
        for item in batch:
            values = item.features.get(key)
            if values is None:  # only token_type_ids can be absent (token-id inputs)
                values = [0] * len(item.features["input_ids"])
            missing = length - len(values)
            if missing and pad is None:
                raise InferenceError("this tokenizer has no padding token to pad a batch with")
            rows.append(([pad] * missing + values) if left else (values + [pad] * missing))
        tensors[key] = torch.tensor(rows, dtype=torch.long)
    return tensors


def _check(inputs: Any, truncate: Any) -> None:
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs must be a non-empty list", param="inputs")
    if not isinstance(truncate, bool):
        raise InvalidInput("truncate must be a boolean", param="truncate")


def _token_ids(inputs: list[Any]) -> bool:
    return all(isinstance(x, list) and x and all(type(t) is int for t in x) for x in inputs)


def _checked_ids(
    tokenizer: Any, inputs: list[list[int]], limit: int, truncate: bool
) -> list[list[int]]:
    vocab = len(tokenizer)
    if any(t < 0 or t >= vocab for ids in inputs for t in ids):
        raise InvalidInput(f"token ids must lie in [0, {vocab})", param="inputs")
    return [x[:limit] for x in inputs] if truncate else inputs


def _check_length(length: int, limit: int) -> None:
    if length > limit:
        raise InvalidInput(
            f"an input has {length} tokens; this model accepts at most {limit} "
            "(set truncate to true to cut it)",
            param="inputs",
        )


def mask_position(tokenizer: Any, input_ids: list[int], row: int = 0) -> int:
    """Index of the single mask token in one input's ids; `InvalidInput` (naming
    ``inputs[row]``) unless there is exactly one."""
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise InvalidInput("this tokenizer has no mask token")
    count = input_ids.count(mask_id)
    if count != 1:
        raise InvalidInput(
            f"inputs[{row}] must contain the mask token {tokenizer.mask_token!r} exactly once "
            f"(found {count})",
            param="inputs",
        )
    return input_ids.index(mask_id)
