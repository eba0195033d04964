"""Tokenizing a batch of text (or token-id) inputs the same way for every text task."""

from __future__ import annotations

from typing import Any

from .errors import InvalidInput


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
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs must be a non-empty list", param="inputs")
    if not isinstance(truncate, bool):
        raise InvalidInput("truncate must be a boolean", param="truncate")
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
    elif not offsets and all(
        isinstance(x, list) and x and all(type(t) is int for t in x) for x in inputs
    ):
        vocab = len(tokenizer)
        if any(t < 0 or t >= vocab for ids in inputs for t in ids):
            raise InvalidInput(f"token ids must lie in [0, {vocab})", param="inputs")
        ids = [x[:limit] for x in inputs] if truncate else inputs
        batch = tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    else:
        kinds = "strings" if offsets else "strings or all be lists of token ids"
        raise InvalidInput(f"inputs must all be {kinds}", param="inputs")
    length = batch["input_ids"].shape[1]
    if length > limit:
        raise InvalidInput(
            f"an input has {length} tokens; this model accepts at most {limit} "
            "(set truncate to true to cut it)",
            param="inputs",
        )
    return batch


def mask_positions(tokenizer: Any, input_ids: Any) -> Any:
    """Index of the single mask token in each row; `InvalidInput` unless there is exactly one."""
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise InvalidInput("this tokenizer has no mask token")
    hits = input_ids == mask_id
    counts = hits.sum(dim=1).tolist()
    for row, count in enumerate(counts):
        if count != 1:
            raise InvalidInput(
                f"inputs[{row}] must contain the mask token {tokenizer.mask_token!r} exactly once "
                f"(found {count})",
                param="inputs",
            )
    return hits.int().argmax(dim=1)


def second_sequence_mask(batch: Any) -> Any:
    """Per row, True on the tokens of the second text of a pair (the QA context)."""
    import torch

    rows = [[sid == 1 for sid in batch.sequence_ids(i)] for i in range(batch["input_ids"].shape[0])]
    return torch.tensor(rows, dtype=torch.bool)
