"""Character spans from token predictions: extractive QA answers and token-level entities."""

from __future__ import annotations

from typing import Any

from . import labels
from .errors import InvalidInput


def qa_pairs(inputs: list[Any]) -> tuple[list[str], list[str]]:
    """Split ``[{"question", "context"}, ...]`` into questions and contexts."""
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs must be a non-empty list of {question, context}", param="inputs")
    questions, contexts = [], []
    for i, item in enumerate(inputs):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("question"), str)
            and isinstance(item.get("context"), str)
        ):
            raise InvalidInput(
                f"inputs[{i}] must be {{question: str, context: str}}", param="inputs"
            )
        if not item["question"].strip() or not item["context"].strip():
            raise InvalidInput(f"inputs[{i}] has an empty question or context", param="inputs")
        questions.append(item["question"])
        contexts.append(item["context"])
    return questions, contexts


def best_answer(
    start_logits: Any,
    end_logits: Any,
    offsets: Any,
    context_mask: Any,
    context: str,
    max_answer_len: int = 15,
) -> dict[str, Any]:
    """The most probable span with start <= end < start + max_answer_len inside the context."""
    import torch

    start = torch.softmax(start_logits.float().masked_fill(~context_mask, -1e4), dim=-1)
    end = torch.softmax(end_logits.float().masked_fill(~context_mask, -1e4), dim=-1)
    scores = torch.triu(torch.outer(start, end))
    scores = torch.tril(scores, diagonal=max_answer_len - 1)
    flat = int(scores.argmax())
    s, e = divmod(flat, scores.shape[1])
    char_start, char_end = int(offsets[s][0]), int(offsets[e][1])
    return {
        "answer": context[char_start:char_end],
        "score": float(scores[s, e]),
        "start": char_start,
        "end": char_end,
    }


def entities(
    text: str,
    probs: Any,
    offsets: Any,
    special: Any,
    config: Any,
    aggregation: str = "none",
    ignore: tuple[str, ...] = ("O",),
) -> list[dict[str, Any]]:
    """Token-level predictions with character offsets; ``simple`` merges neighbours whose labels
    match (B-/I- prefixes ignored) into ``entity_group`` spans."""
    if aggregation not in ("none", "simple"):
        raise InvalidInput(
            "aggregation_strategy must be 'none' or 'simple'", param="aggregation_strategy"
        )
    tokens = []
    for index, (row, (start, end), is_special) in enumerate(
        zip(probs.tolist(), offsets.tolist(), special.tolist(), strict=True)
    ):
        if is_special or start == end:
            continue
        best = max(range(len(row)), key=row.__getitem__)
        label = labels.label_name(config, best)
        if label in ignore:
            continue
        tokens.append(
            {
                "entity": label,
                "score": row[best],
                "index": index,
                "word": text[start:end],
                "start": start,
                "end": end,
            }
        )
    if aggregation == "none":
        return tokens
    groups: list[dict[str, Any]] = []
    for token in tokens:
        group = token["entity"].split("-", 1)[-1]
        last = groups[-1] if groups else None
        if (
            last
            and last["entity_group"] == group
            and not token["entity"].startswith("B-")
            and token["index"] == last["_last"] + 1
        ):
            last.update(
                end=token["end"], word=text[last["start"] : token["end"]], _last=token["index"]
            )
            last["_scores"].append(token["score"])
        else:
            groups.append(
                {
                    "entity_group": group,
                    "word": token["word"],
                    "start": token["start"],
                    "end": token["end"],
                    "_last": token["index"],
                    "_scores": [token["score"]],
                }
            )
    return [
        {
            "entity_group": g["entity_group"],
            "score": sum(g["_scores"]) / len(g["_scores"]),
            "word": g["word"],
            "start": g["start"],
            "end": g["end"],
        }
        for g in groups
    ]
