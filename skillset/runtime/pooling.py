"""Sentence-embedding pooling, configured the way the checkpoint's sentence-transformers
files say (``modules.json``, ``1_Pooling/config.json``, ``sentence_bert_config.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .checkpoint import Checkpoint
from .errors import InvalidInput

MODES = ("mean", "cls", "max", "lasttoken", "mean_sqrt_len")


@dataclass(frozen=True)
class Pooling:
    mode: str = "mean"
    normalize: bool = True
    max_seq_length: int | None = None
    source: str = "default (mean pooling, L2-normalised)"

    def pool(
        self,
        hidden: Any,
        mask: Any,
        *,
        normalize: bool | None = None,
        dimensions: int | None = None,
    ) -> Any:
        """Pool token states ``[batch, seq, dim]`` to ``[batch, dim]`` (padding excluded)."""
        import torch

        weights = mask.unsqueeze(-1).to(hidden.dtype)
        if self.mode == "cls":
            vectors = hidden[:, 0]
        elif self.mode == "max":
            vectors = hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
        elif self.mode == "lasttoken":
            last = mask.sum(dim=1) - 1  # right padding: the last real token of each row
            vectors = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        else:
            summed = (hidden * weights).sum(dim=1)
            counts = weights.sum(dim=1).clamp(min=1e-9)
            vectors = summed / (counts.sqrt() if self.mode == "mean_sqrt_len" else counts)
        if dimensions is not None:
            if not isinstance(dimensions, int) or not 0 < dimensions <= vectors.shape[-1]:
                raise InvalidInput(
                    f"dimensions must be an integer in [1, {vectors.shape[-1]}]", param="dimensions"
                )
            vectors = vectors[:, :dimensions]
        if self.normalize if normalize is None else normalize:
            vectors = torch.nn.functional.normalize(vectors.float(), p=2, dim=-1)
        return vectors


def _read_json(ckpt: Checkpoint, name: str) -> dict[str, Any] | list[Any] | None:
    path = ckpt.file(name)
    return json.loads(path.read_text()) if path else None


def from_checkpoint(ckpt: Checkpoint) -> Pooling:
    """Read the sentence-transformers pooling of a checkpoint, or the default."""
    modules = _read_json(ckpt, "modules.json")
    if not isinstance(modules, list):
        return Pooling()
    types = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules if isinstance(m, dict)}
    mode, normalize = "mean", "Normalize" in types
    if "Pooling" in types:
        cfg = _read_json(ckpt, f"{types['Pooling'].get('path', '1_Pooling')}/config.json") or {}
        flags = {
            "cls": "pooling_mode_cls_token",
            "max": "pooling_mode_max_tokens",
            "lasttoken": "pooling_mode_lasttoken",
            "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
            "mean": "pooling_mode_mean_tokens",
        }
        mode = next((m for m, flag in flags.items() if cfg.get(flag)), "mean")
    bert_cfg = _read_json(ckpt, "sentence_bert_config.json") or {}
    max_len = bert_cfg.get("max_seq_length") if isinstance(bert_cfg, dict) else None
    return Pooling(
        mode=mode,
        normalize=normalize,
        max_seq_length=max_len,
        source="sentence-transformers modules.json",
    )


def features(output: Any) -> Any:
    """``get_text_features``/``get_image_features`` return a tensor, or in newer transformers an
    output whose ``pooler_output`` holds the projected features."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


def finish_vectors(batch: list[Any], vectors: Any, *, normalize: bool = False) -> list[list[float]]:
    """The finish stage of projected embeddings (vision-text towers): the raw projection, or
    L2-normalised with `normalize`."""
    import torch

    if normalize:
        vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
    return vectors.float().cpu().tolist()
