"""Single-pass handlers in three stages: prepare -> forward -> finish.

A `Staged` handler is still a plain handler, ``handler(inputs, **params) -> list`` (one
JSON-ready result per input), and that call is exactly ``finish(forward(prepare(inputs)))``.
What the stages add is for a server (hfskills' host), which runs them apart, as infinity's
pre/core/post and LitServe's decode/predict/encode do:

- ``prepare(inputs, **params) -> list[Prepared]``: per input, the model's features (tokenized,
  media decoded; not padded) and its real token count. Errors here are the input's own
  (`InvalidInput`): a server runs prepare per request, so a bad input never joins a batch.
  Token counts give the usage of a request and let a server form batches by real tokens.
- ``forward(batch: list[Prepared], **params) -> output``: collate (pad) one batch and run the
  model; the only stage that touches the model. Items from several requests share it.
- ``finish(batch, output, **params) -> list``: post-processing (pooling, normalising, labels,
  spans, decoding), one result per item of the batch, in order.

Each stage takes only the keyword parameters its own signature names; the handler's signature
(what a server checks requests against) is their union. prepare and finish may use the
processor (tokenizer) and forward the model, so a server that overlaps them needs one lock for
each, not one for both.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: prepare(inputs, **params) -> list[Prepared]
Prepare = Callable[..., list["Prepared"]]
#: forward(batch, **params) -> whatever finish takes
Forward = Callable[..., Any]
#: finish(batch, output, **params) -> one result per item
Finish = Callable[..., list[Any]]


@dataclass(eq=False, slots=True)
class Prepared:
    """One input, ready for the model.

    ``features``: the model inputs of this one input, unpadded (e.g. ``{"input_ids": [...],
    "attention_mask": [...]}``, or a pixel tensor); forward collates a batch of them.
    ``tokens``: real tokens (what usage reports and what batches are cut by; 1 for an image).
    ``state``: whatever finish needs besides the model output (offsets, the text, ...).
    """

    features: Any
    tokens: int = 1
    state: Any = field(default=None)


class Staged:
    """A handler made of stages; calling it runs all three on one batch."""

    def __init__(self, prepare: Prepare, forward: Forward, finish: Finish) -> None:
        self.prepare, self.forward, self.finish = prepare, forward, finish
        self._names = {
            stage: _keywords(fn, skip)
            for stage, fn, skip in (
                ("prepare", prepare, 1),
                ("forward", forward, 1),
                ("finish", finish, 2),
            )
        }
        self.__signature__ = _union_signature(prepare, forward, finish)

    def params_for(self, stage: str, params: dict[str, Any]) -> dict[str, Any]:
        """The keyword parameters ``stage`` takes, out of a request's ``params``."""
        names = self._names[stage]
        return {k: v for k, v in params.items() if k in names}

    def run_prepare(self, inputs: list[Any], params: dict[str, Any]) -> list[Prepared]:
        items = self.prepare(inputs, **self.params_for("prepare", params))
        if len(items) != len(inputs):
            raise RuntimeError(f"prepare returned {len(items)} items for {len(inputs)} inputs")
        return items

    def run_forward(self, batch: list[Prepared], params: dict[str, Any]) -> Any:
        return self.forward(batch, **self.params_for("forward", params))

    def run_finish(self, batch: list[Prepared], output: Any, params: dict[str, Any]) -> list[Any]:
        results = self.finish(batch, output, **self.params_for("finish", params))
        if len(results) != len(batch):
            raise RuntimeError(f"finish returned {len(results)} results for {len(batch)} items")
        return results

    def __call__(self, inputs: list[Any], **params: Any) -> list[Any]:
        unknown = set(params) - set(self.__signature__.parameters)
        if unknown:  # as a plain function would: an unexpected keyword is a TypeError
            raise TypeError(f"unexpected keyword argument(s): {sorted(unknown)}")
        batch = self.run_prepare(inputs, params)
        return self.run_finish(batch, self.run_forward(batch, params), params)

    def __repr__(self) -> str:
        return f"Staged{self.__signature__}"


def concat(batch: list[Prepared]) -> dict[str, Any]:
    """Collate items whose features are tensors with a batch dimension of one each (an image
    processor's output for one image): concatenated per key along that dimension."""
    import torch

    keys = list(batch[0].features.keys())
    return {key: torch.cat([item.features[key] for item in batch]) for key in keys}


def _keywords(fn: Callable[..., Any], positional: int) -> frozenset[str]:
    params = list(inspect.signature(fn).parameters.values())[positional:]
    return frozenset(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _union_signature(*stages: Callable[..., Any]) -> inspect.Signature:
    """``(inputs, *, <every stage's keyword-only parameters>)``; a name two stages share must
    have the same default."""
    seen: dict[str, inspect.Parameter] = {}
    for fn in stages:
        for p in inspect.signature(fn).parameters.values():
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                continue
            if p.name in seen and seen[p.name].default != p.default:
                raise TypeError(f"stages disagree on the default of {p.name!r}")
            seen.setdefault(p.name, p)
    inputs = inspect.Parameter(
        "inputs", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="list[Any]"
    )
    return inspect.Signature([inputs, *seen.values()], return_annotation="list[Any]")
