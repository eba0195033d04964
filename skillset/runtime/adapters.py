"""LoRA adapters on a torch model: loaded once onto the base, chosen per request.

`attach` wraps the loaded base in peft's ``PeftModel`` with every adapter under its served
name. The base's weights stay one copy: an adapter adds only its low-rank matrices (measured
in docs/performance.md#lora-adapters). A batch may mix adapters: each row names its own
(`forward_kwargs`), and peft's mixed-batch inference (``adapter_names``) runs each LoRA layer's
delta on the rows that asked for it; a row with no adapter runs the base (peft's
``__base__``). So requests for different adapters share one continuous batch on the torch
`DecodeEngine`, as vLLM's LoRA requests share one.

peft is the maintained implementation of PEFT checkpoints (adapter_config.json and
adapter_model.safetensors, every target-module layout); nothing here reimplements it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import InvalidInput, ModelLoadError, first_line

#: peft's adapter name for "no adapter" in a mixed batch.
BASE = "__base__"


def attach(model: Any, adapters: dict[str, str]) -> Any:
    """``model`` with each adapter (served name -> PEFT adapter directory) loaded onto it, in
    eval mode; a `ModelLoadError` naming the adapter that does not fit the base."""
    try:
        from peft import PeftConfig, PeftModel
    except ImportError:
        raise ModelLoadError("LoRA adapters need peft: pip install 'hfskills[lora]'") from None
    wrapped = None
    for name, path in adapters.items():
        try:
            if wrapped is None:
                # the task decides peft's wrapper, whose generate() honours adapter_names; an
                # adapter saved without one would get the plain wrapper (its generate runs the
                # base model: measured on a t5 adapter)
                config = PeftConfig.from_pretrained(path)
                if config.task_type is None:
                    seq2seq = getattr(model.config, "is_encoder_decoder", False)
                    config.task_type = "SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM"
                wrapped = PeftModel.from_pretrained(model, path, adapter_name=name, config=config)
            else:
                wrapped.load_adapter(path, adapter_name=name)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise ModelLoadError(
                f"could not load the LoRA adapter {name!r} from {path}: {first_line(exc)}"
            ) from exc
    assert wrapped is not None, "attach() needs at least one adapter"
    return wrapped.eval()


def served(model: Any) -> frozenset[str]:
    """The adapter names loaded on ``model`` (none for a plain model)."""
    return frozenset(getattr(model, "peft_config", None) or ())


def forward_kwargs(loaded: frozenset[str], names: Iterable[str | None]) -> dict[str, Any]:
    """The keyword that routes a batch's rows to their adapters (``loaded``: the model's, as
    `served` reads them once at load; ``names``: one per row, None for the base): empty when
    no row asks for one on a model without adapters."""
    rows = list(names)
    if not loaded:
        asked = next((n for n in rows if n is not None), None)
        if asked is not None:
            raise InvalidInput(f"this model has no LoRA adapter {asked!r}", param="model")
        return {}
    unknown = next((n for n in rows if n is not None and n not in loaded), None)
    if unknown is not None:
        raise InvalidInput(
            f"no LoRA adapter {unknown!r} on this model; it has {sorted(loaded)}", param="model"
        )
    return {"adapter_names": [n if n is not None else BASE for n in rows]}
