"""Export a decoder checkpoint to the stateful OpenVINO IR that OpenVINO GenAI runs.

`export(location, dest)` writes the directory layout optimum-intel produces, which
``openvino_genai.LLMPipeline`` and ``ContinuousBatchingPipeline`` load as is:

- ``openvino_model.xml/.bin``: the model, *stateful*: inputs ``input_ids``, ``attention_mask``,
  ``position_ids`` (i64, ``[batch, seq]``) and ``beam_idx`` (i32, ``[batch]``), output ``logits``.
  The KV cache lives in ReadValue/Assign state variables (one per past key/value, each read
  through a ``Gather`` on ``beam_idx``), zero-initialised to ``[batch, heads, 0, head_dim]``.
  On CPU, GenAI's continuous batching rewrites this graph to PagedAttention
  (SDPAToPagedAttention), which needs the ``ScaledDotProductAttention`` ops that torch's SDPA
  converts to; hence the checkpoint is traced with ``attn_implementation="sdpa"``.
- ``openvino_tokenizer.xml/.bin`` and ``openvino_detokenizer.xml/.bin`` (openvino_tokenizers;
  the chat template travels in the tokenizer's rt_info).
- ``config.json``, ``generation_config.json`` and the Hugging Face tokenizer files.

Why not optimum-intel: it pins transformers < 5.6. The export is the same recipe done by hand:
`openvino.convert_model` traces a wrapper taking flat past tensors (transformers 5 models want a
`DynamicCache`), then `fuse_cache_reorder` + `make_stateful` as in optimum's ``stateful.py``.
Only plain full-attention caches are handled (see `unsupported_reason`).
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from .errors import HardwareUnavailable, InvalidInput

MODEL_FILE = "openvino_model.xml"
PRECISIONS = ("f32", "f16")


def unsupported_reason(config: Any) -> str | None:
    """Why the export cannot handle a checkpoint with this ``config``, or None if it can."""
    from transformers.cache_utils import get_layer_types_and_kwargs
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(config, "model_type", None)
    if getattr(config, "is_encoder_decoder", False):
        return f"{model_type} is an encoder-decoder; only decoder-only LLMs are exported"
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return f"{model_type} has no causal-LM class in transformers"
    if config.get_text_config(decoder=True) is not config:
        return f"{model_type} is multimodal; only text decoders are exported"
    kinds = set(get_layer_types_and_kwargs(config)[0])
    if kinds != {"full_attention"}:
        return f"{model_type} uses {sorted(kinds)} cache layers; only full attention is exported"
    return None


def supported(config: Any) -> bool:
    return unsupported_reason(config) is None


def require_supported(config: Any) -> None:
    """Raise `HardwareUnavailable` (so the host falls back) for checkpoints we cannot export."""
    if (reason := unsupported_reason(config)) is not None:
        raise HardwareUnavailable(f"OpenVINO GenAI export: {reason}")


def export(
    location: str,
    dest: Path,
    *,
    precision: str = "f32",
    gguf_file: str | None = None,
    revision: str | None = None,
) -> Path:
    """Export ``location`` (hub id or directory; a GGUF file with ``gguf_file``) into ``dest``.

    The files are written to a temporary sibling of ``dest`` and renamed into place, so a
    crash never leaves half an export; an existing ``dest`` is replaced.
    """
    import openvino as ov
    import torch
    import transformers
    from openvino_tokenizers import convert_tokenizer

    if precision not in PRECISIONS:
        raise InvalidInput(f"precision must be one of {PRECISIONS}, got {precision!r}")
    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    if revision:
        kwargs["revision"] = revision
    config = transformers.AutoConfig.from_pretrained(location, **kwargs)
    require_supported(config)
    load = transformers.AutoModelForCausalLM.from_pretrained
    options = {**kwargs, "config": config, "dtype": torch.float32}
    try:  # SDPA converts straight to ScaledDotProductAttention; OpenVINO fuses eager into it too
        model = load(location, attn_implementation="sdpa", **options)
    except ValueError:  # the architecture has no SDPA path in transformers
        model = load(location, attn_implementation="eager", **options)
    model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(location, **kwargs)
    tokenizer.padding_side = tokenizer.truncation_side = "left"

    ov_model = _convert(model)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        ov.save_model(ov_model, tmp / MODEL_FILE, compress_to_fp16=precision == "f16")
        ov_tokenizer, ov_detokenizer = convert_tokenizer(tokenizer, with_detokenizer=True)
        ov.save_model(ov_tokenizer, tmp / "openvino_tokenizer.xml")
        ov.save_model(ov_detokenizer, tmp / "openvino_detokenizer.xml")
        model.config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _convert(model: Any) -> Any:
    """Trace ``model`` with flat past tensors, convert it, and make the KV cache stateful."""
    import openvino as ov
    import torch
    import transformers

    class Flat(torch.nn.Module):
        """``forward(ids, mask, positions, *past) -> (logits, *present)`` over a DynamicCache."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = transformers.DynamicCache(config=self.model.config)
            for layer, keys, values in zip(cache.layers, past[::2], past[1::2], strict=True):
                layer.lazy_initialization(keys, values)  # assign, not update: no empty-cat op
                layer.keys, layer.values = keys, values
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
            return (out.logits, *_flat(out.past_key_values))

    # Real past tensors (batch 2, 3 tokens) give the KV shapes; 4 new tokens keep q_length > 1.
    batch, past_len, new = 2, 3, 4
    ids = torch.arange(batch * (past_len + new)).reshape(batch, -1) % model.config.vocab_size
    with torch.no_grad():
        cache = model(input_ids=ids[:, :past_len], use_cache=True).past_key_values
    past = _flat(cache)
    n = len(past) // 2
    example = (
        ids[:, past_len:],
        torch.ones_like(ids),
        torch.arange(past_len, past_len + new).expand(batch, -1).contiguous(),
        *past,
    )
    specs = [(ov.PartialShape([-1, -1]), ov.Type.i64)] * 3
    specs += [(ov.PartialShape([-1, t.shape[1], -1, t.shape[3]]), ov.Type.f32) for t in past]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ov_model = ov.convert_model(Flat(), example_input=example, input=specs)

    kv_in = [f"past_key_values.{i}.{kind}" for i in range(n) for kind in ("key", "value")]
    kv_out = [f"present.{i}.{kind}" for i in range(n) for kind in ("key", "value")]
    names = ["input_ids", "attention_mask", "position_ids", *kv_in]
    for port, name in zip(ov_model.inputs, names, strict=True):
        port.get_tensor().set_names({name})
    for port, name in zip(ov_model.outputs, ["logits", *kv_out], strict=True):
        port.get_tensor().set_names({name})
    _make_stateful(ov_model, dict(zip(kv_in, kv_out, strict=True)))
    return ov_model


def _flat(cache: Any) -> list[Any]:
    """[key0, value0, key1, value1, ...] of a DynamicCache."""
    return [t for layer in cache.layers for t in (layer.keys, layer.values)]


def _make_stateful(ov_model: Any, kv_names: dict[str, str]) -> None:
    """optimum-intel's ``fuse_cache_reorder`` + ``make_stateful`` + ``build_state_initializer``."""
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops
    from openvino._offline_transformations import apply_make_stateful_transformation

    beam_idx = ops.parameter([-1], ov.Type.i32, name="beam_idx")
    beam_idx.output(0).get_tensor().add_names({"beam_idx"})
    ov_model.add_parameters([beam_idx])
    for name in kv_names:  # reorder each past along batch by beam_idx before it is used
        port = ov_model.input(name)
        consumers = port.get_target_inputs()
        gather = ops.gather(port, beam_idx, ops.constant(0))
        for consumer in consumers:
            consumer.replace_source_output(gather.output(0))
    ov_model.validate_nodes_and_infer_types()
    apply_make_stateful_transformation(ov_model, kv_names)

    # Initialise every state to zeros of [batch(input_ids), heads, 0, head_dim].
    shape = ops.shape_of(ov_model.input("input_ids"), output_type="i64")
    batch = ops.gather(shape, ops.constant([0]), ops.constant(0))
    for op in ov_model.get_ops():
        if op.get_type_name() == "ReadValue":
            dims: list[Any] = [dim.min_length for dim in op.get_output_partial_shape(0)]
            dims[0] = batch
            dims = [ops.constant([d], np.int64) if isinstance(d, int) else d for d in dims]
            zero = ops.constant(0.0, dtype=op.get_output_element_type(0))
            op.set_arguments([ops.broadcast(zero, ops.concat(dims, axis=0))])
    ov_model.validate_nodes_and_infer_types()
