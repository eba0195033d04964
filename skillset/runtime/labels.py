"""Turning logits into labelled scores with the checkpoint's own ``id2label``."""

from __future__ import annotations

from typing import Any

from .errors import InvalidInput

ACTIVATIONS = ("softmax", "sigmoid", "none")


def activation_for(config: Any, requested: str | None = None) -> str:
    """The score function: as requested, else sigmoid for multi-label checkpoints, else softmax."""
    if requested is not None:
        if requested not in ACTIVATIONS:
            raise InvalidInput(
                f"function_to_apply must be one of {ACTIVATIONS}", param="function_to_apply"
            )
        return requested
    if getattr(config, "problem_type", None) == "multi_label_classification":
        return "sigmoid"
    if getattr(config, "num_labels", 2) == 1:
        return "sigmoid"
    return "softmax"


def apply(logits: Any, activation: str) -> Any:
    import torch

    logits = logits.float()
    if activation == "softmax":
        return torch.softmax(logits, dim=-1)
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    return logits


def label_name(config: Any, index: int) -> str:
    id2label = getattr(config, "id2label", None) or {}
    return str(id2label.get(index, id2label.get(str(index), f"LABEL_{index}")))


def top_k_param(value: Any, available: int) -> int:
    if value is None:
        return available
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInput("top_k must be a positive integer", param="top_k")
    return min(value, available)


def ranked(scores: Any, config: Any, top_k: int | None = None) -> list[list[dict[str, Any]]]:
    """Per row, ``[{"label", "score"}, ...]`` sorted by score, highest first."""
    k = top_k_param(top_k, scores.shape[-1])
    values, indices = scores.topk(k, dim=-1)
    return [
        [
            {"label": label_name(config, int(i)), "score": float(v)}
            for v, i in zip(vs, ix, strict=True)
        ]
        for vs, ix in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def threshold_param(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InvalidInput("threshold must be a number in [0, 1]", param="threshold")
    return float(value)


def boxes(found: dict[str, Any], config: Any) -> list[dict[str, Any]]:
    """One image's ``post_process_object_detection`` result as labelled pixel boxes."""
    rows = zip(
        found["scores"].tolist(), found["labels"].tolist(), found["boxes"].tolist(), strict=True
    )
    detections = [
        {
            "label": label_name(config, int(label)),
            "score": float(score),
            "box": {"xmin": int(x0), "ymin": int(y0), "xmax": int(x1), "ymax": int(y1)},
        }
        for score, label, (x0, y0, x1, y1) in rows
    ]
    return sorted(detections, key=lambda d: -d["score"])


def candidate_labels(value: Any) -> list[str]:
    """Zero-shot labels: a list of strings (or one comma-separated string, as HF accepts)."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v.strip() for v in value)
    ):
        raise InvalidInput(
            "candidate_labels must be a non-empty list of strings", param="candidate_labels"
        )
    return value


def hypotheses(template: Any, names: list[str]) -> list[str]:
    """Fill ``{}`` in the template with each label (plain replacement: never ``str.format``)."""
    if not isinstance(template, str) or "{}" not in template:
        raise InvalidInput(
            "hypothesis_template must be a string containing {}", param="hypothesis_template"
        )
    return [template.replace("{}", name) for name in names]


def finish_ranked(config: Any) -> Any:
    """The finish stage every classification task shares: scores from logits by the
    checkpoint's activation (or `function_to_apply`), ranked, `top_k` kept."""

    def finish(
        batch: list[Any],
        logits: Any,
        *,
        top_k: int | None = None,
        function_to_apply: str | None = None,
    ) -> list[list[dict[str, Any]]]:
        return ranked(apply(logits, activation_for(config, function_to_apply)), config, top_k)

    return finish
