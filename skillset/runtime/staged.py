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
(what a server checks requests against) is their union. A handler made with ``same_length``
must never see padding: its architecture mixes every position, padded ones too (FNet's Fourier
transform, Nystromformer's landmarks), so a batch holds inputs of one token count only;
calling it groups them so, and a server must form its batches so. prepare and finish may use the
processor (tokenizer) and forward the model, so a server that overlaps them needs one lock for
each, not one for both.
"""

from __future__ import annotations

import inspect
import threading
import warnings
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

    def __init__(
        self, prepare: Prepare, forward: Forward, finish: Finish, *, same_length: bool = False
    ) -> None:
        self.prepare, self.forward, self.finish = prepare, forward, finish
        self.same_length = same_length
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
        if not self.same_length:
            return self.run_finish(batch, self.run_forward(batch, params), params)
        results: list[Any] = [None] * len(batch)
        for rows in by_tokens(batch):
            group = [batch[row] for row in rows]
            done = self.run_finish(group, self.run_forward(group, params), params)
            for row, result in zip(rows, done, strict=True):
                results[row] = result
        return results

    def __repr__(self) -> str:
        return f"Staged{self.__signature__}"


def by_tokens(batch: list[Prepared]) -> list[list[int]]:
    """The rows of ``batch`` grouped by token count, each group in order (for ``same_length``)."""
    groups: dict[int, list[int]] = {}
    for row, item in enumerate(batch):
        groups.setdefault(item.tokens, []).append(row)
    return list(groups.values())


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


class Traced:
    """A torch model's forward, ``pick(model(**features))`` (one tensor), run as a TorchScript
    trace where that gives the same answer.

    A traced call runs in C++ from start to end without Python's GIL, where the eager call
    takes the GIL back between every operation: with forward passes in threads next to a
    busy event loop, eager ones wait for the GIL (measured in docs/performance.md), traced
    ones do not. One trace per set of feature names, made at its first batch and checked
    against the eager call on that batch and on two probes of other shapes, with and without
    padding (a trace fixes Python's branches and any shape the model reads as a number): the
    eager call stays in use if tracing fails or any output differs by more than ``tolerance``.
    Traces run without TorchScript's optimisations (no fusion), so their arithmetic is the
    eager one's.
    """

    def __init__(self, model: Any, pick: Callable[[Any], Any], tolerance: float = 1e-5) -> None:
        self.model, self.pick, self.tolerance = model, pick, tolerance
        self.traces: dict[tuple[str, ...], Any] = {}  # None: checked, and eager it stays
        self.lock = threading.Lock()

    def __call__(self, features: dict[str, Any]) -> Any:
        import torch

        keys = tuple(sorted(features))
        trace = self.traces.get(keys, False)
        if trace is False:
            with self.lock:
                trace = self.traces.get(keys, False)
                if trace is False:
                    trace = self.traces[keys] = self._trace(keys, features)
        if trace is None:
            return self.pick(self.model(**features))
        with torch.jit.optimized_execution(False):
            return trace(*(features[key] for key in keys))

    def _trace(self, keys: tuple[str, ...], features: dict[str, Any]) -> Any:
        import torch

        module = _picked(self.model, keys, self.pick)
        example = tuple(features[key] for key in keys)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trace = torch.jit.trace(module, example, strict=False, check_trace=False)
            for probe in (example, *_probes(keys, example)):
                with torch.jit.optimized_execution(False):
                    got = trace(*probe)
                if not torch.allclose(got, module(*probe), rtol=0, atol=self.tolerance):
                    return None
        except Exception:  # an untraceable model runs eagerly
            return None
        return trace


def _picked(model: Any, keys: tuple[str, ...], pick: Callable[[Any], Any]) -> Any:
    """``model(**dict(zip(keys, tensors)))``, one output picked, as a module: what `Traced`
    traces (the model's parameters stay the model's, not copies)."""
    import torch

    class Picked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return pick(self.model(**dict(zip(keys, tensors, strict=True))))

    return Picked()


def traced_on_cpu(endpoint: Any, pick: Callable[[Any], Any]) -> Callable[[dict[str, Any]], Any]:
    """``features -> pick(model(**features))``: a `Traced` forward for a torch model on the CPU
    (where the host runs forward passes in threads of their own), the eager call elsewhere."""
    import torch

    model = endpoint.model
    if endpoint.hardware == "cpu" and isinstance(model, torch.nn.Module):
        return Traced(model, pick)
    return lambda features: pick(model(**features))


def _probes(keys: tuple[str, ...], example: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Two batches of other shapes than ``example`` (more rows, longer, with padding; one row,
    shorter, none), from its own token ids."""
    import torch

    ids = example[keys.index("input_ids")].flatten()
    rows, width = example[0].shape[:2]
    probes = []
    for shape, padded in (((rows + 2, width + 3), True), ((1, max(2, width - 1)), False)):
        tensors = []
        for key, value in zip(keys, example, strict=True):
            if key == "input_ids":
                tensors.append(
                    ids.repeat(shape[0] * shape[1] // len(ids) + 1)[: shape[0] * shape[1]].reshape(
                        shape
                    )
                )
            elif key == "attention_mask":
                mask = torch.ones(shape, dtype=value.dtype)
                if padded:  # row r loses its last r tokens (keeping at least one)
                    for row in range(1, shape[0]):
                        mask[row, max(1, shape[1] - row) :] = 0
                tensors.append(mask)
            else:
                tensors.append(torch.zeros(shape, dtype=value.dtype))
        probes.append(tuple(tensors))
    return probes
