"""`GraphModel`: an exported graph behind the call interface of the torch model it replaces.

The generated handlers call ``model(**batch)`` (or ``model.get_text_features(**batch)`` /
``model.get_image_features(**batch)`` for vision-text embeddings) and read attributes of the
result: ``.logits``, ``.last_hidden_state``, ``.pred_boxes``... A `GraphModel` answers the same
calls with a `GraphOutput` holding torch tensors, so every handler and every post-processor
(``image_processor.post_process_object_detection(outputs, ...)`` reads ``outputs.logits`` and
``outputs.pred_boxes``) runs unchanged on OpenVINO or ONNX Runtime.

``torch_backend.accepted_inputs(model, batch, method)`` reads the method's signature, so the
method a graph implements carries a signature listing exactly the graph's inputs. Handlers that
pass a processor's whole output unfiltered (images, audio) are served too: a call drops keys the
graph does not take, and fills the inputs a torch model would default when they are absent
(``token_type_ids``: zeros; ``attention_mask``, ``pixel_mask``: ones).

The runtime-specific part is a `Runner` (numpy arrays in, numpy arrays out) that the backend
builds; it must be safe to call from several threads (OpenVINO: one infer request per call;
ONNX Runtime sessions are thread-safe).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from .errors import HFSkillsError, InferenceError, InvalidInput, first_line
from .export import GraphSpec, Runner


class GraphOutput(dict[str, Any]):
    """A model output read like transformers' ``ModelOutput``: ``out.logits``,
    ``out["logits"]`` and ``out[0]`` (the first output) all work."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int | slice):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self.values())


def _signature(names: tuple[str, ...]) -> inspect.Signature:
    return inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in names]
    )


class GraphModel:
    """Calls an exported graph like the torch model (see the module docstring)."""

    def __init__(self, spec: GraphSpec, run: Runner, config: Any, *, runtime: str) -> None:
        import torch

        self.spec, self.config, self.runtime = spec, config, runtime
        self.dtype = torch.float32
        self.device = torch.device("cpu")
        self._run = run

        def method(**inputs: Any) -> Any:
            return self.call(inputs)

        method.__signature__ = _signature(spec.inputs)  # type: ignore[attr-defined]
        method.__name__ = spec.method
        setattr(self, spec.method, method)

    def __call__(self, **inputs: Any) -> Any:
        return self.forward(**inputs)

    def forward(self, **inputs: Any) -> Any:
        """Replaced per instance when the graph is the model's ``forward``."""
        raise InferenceError(
            f"this {self.runtime} graph computes {self.spec.method}, not the model's forward"
        )

    def __repr__(self) -> str:
        return (
            f"GraphModel({self.runtime}, {self.spec.task}: {self.spec.method}"
            f"({', '.join(self.spec.inputs)}) -> {', '.join(self.spec.outputs)})"
        )

    def arrays(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The graph's inputs as numpy arrays of its dtypes, defaults filled in."""
        import numpy as np
        import torch

        given = {k: v for k, v in inputs.items() if v is not None}
        arrays = {}
        for name in self.spec.inputs:
            value = given.get(name)
            if value is None:
                value = _default(name, given)
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
            arrays[name] = np.asarray(value).astype(self.spec.input_dtypes[name], copy=False)
        return arrays

    def call(self, inputs: Mapping[str, Any]) -> Any:
        """Run the graph on torch inputs; torch outputs like the replaced method's."""
        import numpy as np
        import torch

        arrays = self.arrays(inputs)
        try:
            results = self._run(arrays)
        except HFSkillsError:
            raise
        except Exception as exc:
            first = first_line(exc)
            raise InferenceError(f"{self.runtime} inference failed: {first}") from exc
        tensors = [torch.from_numpy(np.require(r, requirements=("C", "W"))) for r in results]
        if self.spec.method != "forward":
            return tensors[0]
        return GraphOutput(zip(self.spec.outputs, tensors, strict=True))


def _default(name: str, given: Mapping[str, Any]) -> Any:
    """What the torch model uses for an input left out (or `InvalidInput` if it needs it)."""
    import torch

    if name in ("token_type_ids", "attention_mask") and "input_ids" in given:
        ids = torch.as_tensor(given["input_ids"])
        return torch.zeros_like(ids) if name == "token_type_ids" else torch.ones_like(ids)
    if name == "pixel_mask" and "pixel_values" in given:
        pixels = torch.as_tensor(given["pixel_values"])
        return torch.ones((pixels.shape[0], *pixels.shape[2:]), dtype=torch.long)
    raise InvalidInput(f"the model needs the input {name!r}")
