# Builds a tiny random-weight checkpoint of any model_type, offline: one generic shrinking of
# transformers' default config plus one declarative table of per-type exceptions. Hand-written
# because transformers ships no "tiny config" for a model type (its own tiny test configs live in
# its test suite, which is not installed, and the hub's tiny-random repos need the network).
"""A tiny checkpoint per (model_type, task), saved exactly as the hub's would be.

``build(model_type, classification, root)`` writes ``root/<task>/`` for every served task: a
``config.json`` and ``model.safetensors`` saved by the very transformers class the skill loads
for that task (``torch.manual_seed(0)``), plus the tokenizer / image processor / feature
extractor / processor files, all built in-process. Types with a hand-tuned recipe in
``recipes.ARCHITECTURES`` (the 29 parity-tested architectures) use it; every other type goes
through :func:`tiny_config` and the generic processors below, with :data:`EXCEPTIONS` applied.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers.models.auto import (
    feature_extraction_auto,
    image_processing_auto,
    processing_auto,
    tokenization_auto,
)

from hfskills.generator.taxonomy import Classification

from . import recipes

__all__ = ["EXCEPTIONS", "Quirk", "StageError", "build", "tiny_config"]

NUM_LABELS = 3
QA_LABELS = 2  # start/end logits
MAX_POSITIONS = 512  # position tables of text models (tokenizers stop at recipes.MAX_POSITIONS)
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]  # ids 0..4 of the generic tokenizer
SPECIAL_IDS = {
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "unk_token_id": 3,
    "mask_token_id": 4,
    "decoder_start_token_id": 0,
    "sep_token_id": 2,
    "cls_token_id": 1,
}


class StageError(Exception):
    """A failure attributed to one stage of the sweep (config, processor, model ...)."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


# --------------------------------------------------------------------------------------------
# Generic shrinking
# --------------------------------------------------------------------------------------------

#: Integer config keys and the small value each is lowered to (never raised) wherever a config
#: or sub-config has it. Widths 32 with 4 heads of 8 keep every "hidden = heads x head_dim" rule.
SHRINK: dict[str, int] = {
    # widths
    "hidden_size": 32,
    "d_model": 32,
    "n_embd": 32,
    "dim": 32,
    "model_dim": 32,
    "embedding_size": 32,
    "emb_dim": 32,
    "entity_emb_size": 32,
    "entity_vocab_size": 64,
    "embed_dim": 32,
    "projection_dim": 32,
    "projection_size": 32,
    "reassemble_hidden_size": 32,
    "encoder_hidden_dim": 32,
    "embedding_dim": 32,
    "num_blocks": 2,  # DPT-style necks read the backbone's width
    "fusion_hidden_size": 16,
    "d_latents": 32,
    "num_latents": 16,
    "word_embed_proj_dim": 32,
    "projection_hidden_size": 32,
    "text_hidden_size": 32,
    "vision_hidden_size": 32,
    "audio_hidden_size": 32,
    "image_text_hidden_size": 32,
    "output_hidden_size": 32,
    "classifier_proj_size": 16,
    "hidden_dim": 64,  # distilbert's FFN width; other models' widths (divisible by 4 heads)
    # heads
    "num_attention_heads": 4,
    "n_head": 4,
    "n_heads": 4,
    "num_heads": 4,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_kv_heads": 2,
    "multi_query_group_num": 2,
    "head_dim": 8,
    "d_kv": 8,
    "kv_channels": 8,
    "rotary_dim": 8,
    "attention_head_dim": 8,
    # depth
    "num_hidden_layers": 2,
    "n_layer": 2,
    "n_layers": 2,
    "num_layers": 2,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "num_decoder_layers": 2,
    "num_encoder_layers": 2,
    "encoder_num_layers": 2,
    "decoder_num_layers": 2,
    # feed-forward
    "intermediate_size": 64,
    "ffn_dim": 64,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "d_ff": 64,
    "n_inner": 64,
    "ffn_hidden_size": 64,
    "encoder_ffn_dim_multiplier": 1,
    # mixture of experts
    "num_experts": 4,
    "num_local_experts": 4,
    "n_routed_experts": 4,
    "moe_num_experts": 4,
    "num_experts_per_tok": 2,
    "moe_topk": 2,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32,
    "n_shared_experts": 1,
    "n_group": 1,
    "topk_group": 1,
    "first_k_dense_replace": 1,
    "moe_k": 2,
    "moe_top_k": 2,
    "num_experts_per_token": 2,
    "num_expert_group": 1,
    "num_shared_experts": 1,
    "moe_num_shared_experts": 1,
    "shared_intermediate_size": 32,
    "expert_ffn_hidden_size": 32,
    "zero_expert_num": 4,
    # linear attention and state-space layers
    "linear_head_dim": 8,
    "linear_num_heads": 4,
    "linear_key_head_dim": 8,
    "linear_value_head_dim": 8,
    "linear_num_key_heads": 4,
    "linear_num_value_heads": 4,
    "mamba_n_heads": 8,
    "mamba_d_head": 8,
    "mamba_d_state": 16,
    "mamba_dt_rank": 8,
    "state_size": 16,
    "time_step_rank": 8,
    "lru_width": 32,
    "swa_num_attention_heads": 4,
    "swa_head_dim": 8,
    "swa_num_key_value_heads": 2,
    # per-layer and hashed embeddings
    "vocab_size_per_layer_input": 1024,
    "hidden_size_per_layer_input": 8,
    "encoder_hash_byte_group_vocab": 1024,
    # multi-head latent attention (DeepSeek style)
    "kv_lora_rank": 16,
    "q_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 8,
    "qk_head_dim": 16,
    "index_head_dim": 16,
    "index_n_heads": 4,
    # positions
    "max_position_embeddings": MAX_POSITIONS,
    "n_positions": MAX_POSITIONS,
    "n_ctx": MAX_POSITIONS,
    "max_seq_len": MAX_POSITIONS,
    # speech encoders (wav2vec2 style)
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    "codevector_dim": 16,
    "proj_codevector_dim": 16,
    "num_codevectors_per_group": 8,
    "xvector_output_dim": 16,
    "adapter_attn_dim": 16,
    "output_dim": 32,
}

#: List-valued keys: each element lowered to the value for its position (hierarchical vision
#: models keep their number of stages; only widths and depths shrink).
SHRINK_LISTS: dict[str, Callable[[int, int], int]] = {
    "depths": lambda i, v: 1,
    "hidden_sizes": lambda i, v: 16 * 2**i,
    "embed_dims": lambda i, v: 16 * 2**i,
    "num_heads": lambda i, v: 2**i if i < 4 else 8,
    "num_attention_heads": lambda i, v: 2**i if i < 4 else 8,
    "conv_dim": lambda i, v: 16,
    "tdnn_dim": lambda i, v: 16,
    "decoder_in_channels": lambda i, v: 32,  # = encoder_hidden_dim (DETR-style decoders)
    "neck_hidden_sizes": lambda i, v: 16 * 2**i,
}

#: Keys never touched: shapes fixed by the processors' defaults or the data format.
KEEP = frozenset(
    {"image_size", "patch_size", "num_channels", "num_mel_bins", "max_source_positions"}
)

#: Size keys whose None default means "derive from the other sizes" in a way that breaks once
#: they are shrunk (head_dim = hidden // heads is then recomputed by some configs, not others).
DERIVED_WHEN_NONE = frozenset({"head_dim", "num_key_value_heads"})

#: Keys that count layers: per-layer lists of the original length are cut to the new length.
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def _original_layers(values: dict[str, Any]) -> int | None:
    for key in LAYER_KEYS:
        if isinstance(values.get(key), int) and not isinstance(values.get(key), bool):
            return values[key]
    return None


def _cut_layers(value: list[Any], after: int) -> list[Any]:
    """The first ``after`` entries of a per-layer list, but keeping one layer of every kind
    (a hybrid's first layers may all be linear attention: keep a full-attention one too)."""
    cut = list(value[:after])
    if all(isinstance(v, str) for v in value):
        missing = [v for v in dict.fromkeys(value) if v not in cut]
        for slot, kind in zip(range(after - 1, 0, -1), missing, strict=False):
            cut[slot] = kind
    return cut


def shrink(
    values: dict[str, Any], keep: frozenset[str] = frozenset(), layers: int | None = None
) -> dict[str, Any]:
    """Overrides that make one (sub-)config tiny: ``values`` is its ``to_dict()``; ``layers``
    replaces the generic layer count (an exception that needs more layers)."""
    out: dict[str, Any] = {}
    hierarchical = isinstance(values.get("depths"), list)
    for key, value in values.items():
        if key in KEEP or key in keep or isinstance(value, bool):
            continue
        if hierarchical and key in ("num_layers", "hidden_size", "num_heads"):
            continue  # derived from the per-stage lists (Swin: num_layers = len(depths))
        if key in SHRINK and isinstance(value, int) and value > SHRINK[key]:
            out[key] = SHRINK[key]
        elif key in SHRINK and value is None and key in DERIVED_WHEN_NONE:
            out[key] = SHRINK[key]  # "derive from hidden_size" would derive from the old ratio
        elif key in SHRINK_LISTS and isinstance(value, list) and value:
            if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                out[key] = [min(v, SHRINK_LISTS[key](i, v)) for i, v in enumerate(value)]
    if hierarchical and isinstance(values.get("num_heads"), list) and "num_heads" not in keep:
        out["num_heads"] = [
            SHRINK_LISTS["num_heads"](i, 0) for i in range(len(values["num_heads"]))
        ]
    before = _original_layers(values)
    if layers is not None:
        out.update({key: layers for key in LAYER_KEYS if key in out})
    after = _original_layers(values | out)
    indices = values.get("out_indices")
    if before and after and isinstance(indices, list) and indices and max(indices) > after:
        after = min(before, max(i for i in indices if isinstance(i, int)))
        for key in LAYER_KEYS:  # a backbone keeps the layers its out_indices name
            if key in out:
                out[key] = after
    if before and after and before >= 4 and after < before:
        for key, value in values.items():
            if key not in out and isinstance(value, list) and len(value) == before:
                out[key] = _cut_layers(value, after)  # layer_types, per-layer windows, ...
            elif key not in out and isinstance(value, dict) and value and key.startswith("per_"):
                out[key] = {k: v for k, v in value.items() if str(k).isdigit() and int(k) < after}
    kv = values.get("num_key_value_heads", 0)
    if "num_key_value_heads" in values and (kv is None or isinstance(kv, int)):
        heads = out.get("num_attention_heads", values.get("num_attention_heads"))
        if isinstance(heads, int):
            if kv == values.get("num_attention_heads") or heads % out.get("num_key_value_heads", 1):
                out["num_key_value_heads"] = heads  # multi-head (or MLA) attention stays so
    return out


@dataclass(frozen=True)
class Quirk:
    """A per-type exception to the generic recipe; ``reason`` says why it is needed."""

    reason: str
    config: dict[str, Any] = field(default_factory=dict)  # merged last into the overrides
    sub_configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # per sub-config key
    tokenizer: str | None = None  # a tokenizer class in TOKENIZER_BUILDERS
    image_processor: str | None = None  # a transformers image processor class (PIL backend)
    feature_extractor: str | None = None  # a transformers feature extractor class
    processor: str | None = None  # a transformers processor class
    keep: tuple[str, ...] = ()  # size keys left at their default
    unsupported: str | None = None  # a known limit: the type fails at once with this reason


#: HGNetV2 (and the DETRs built on it): each stage's input is the previous stage's output.
HGNET = {
    "stem_channels": [3, 16, 16],
    "stage_in_channels": [16, 16, 32, 64],
    "stage_mid_channels": [8, 16, 16, 32],
    "stage_out_channels": [16, 32, 64, 128],
    "hidden_sizes": [16, 32, 64, 128],
    "embedding_size": 16,
}
MUSICGEN_DECODER = {"vocab_size": 2048, "pad_token_id": 2048, "bos_token_id": 2048}
BEIT_LIKE = {
    "num_hidden_layers": 4,
    "out_indices": [1, 2, 3, 4],
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}

#: Per-type exceptions to the generic shrinking, one line of reason each.
EXCEPTIONS: dict[str, Quirk] = {
    "mamba2": Quirk(
        "heads x head_dim must equal expand x hidden_size (2 x 32)", config={"num_heads": 8}
    ),
    "jamba": Quirk(
        "attention every 8th layer from the 4th: none in 2 layers; one in 2",
        config={"attn_layer_period": 2, "attn_layer_offset": 1},
    ),
    "recurrent_gemma": Quirk(
        "block_types cycles recurrent, recurrent, attention: no attention in 2 layers",
        config={"block_types": ["recurrent", "attention"]},
    ),
    "lfm2_moe": Quirk(
        "layer_types has no default; one conv and one attention layer, the first dense",
        config={"layer_types": ["conv", "full_attention"], "num_dense_layers": 1},
    ),
    "dots1": Quirk(
        "the MoE sizes default to None",
        config={"n_routed_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": 1},
    ),
    "efficientnet": Quirk(
        "hidden_dim must equal the last conv's width, round_filters(1280 x width_coefficient)",
        config={"width_coefficient": 0.25, "hidden_dim": 320, "depth_coefficient": 0.5},
    ),
    "bit": Quirk(
        "group norm over 32 groups needs widths divisible by 32: 8 groups",
        config={"num_groups": 8},
    ),
    "deepseek_v2": Quirk(
        "num_experts_per_tok defaults to None while experts are routed",
        config={"num_experts_per_tok": 2},
    ),
    "neomme": Quirk(
        "a partial rotary factor of 0.25 must rotate a multiple of 4 dims", config={"head_dim": 16}
    ),
    "bamba": Quirk(
        "attn_layer_indices defaults to None: every layer is Mamba, no attention layer",
        config={"attn_layer_indices": [1]},
    ),
    "granitemoehybrid": Quirk(
        "every default layer is Mamba (linear attention); one attention layer of 2",
        config={"layer_types": ["mamba", "attention"]},
    ),
    "align": Quirk(
        "its EfficientNet vision tower: hidden_dim must equal the scaled last conv width",
        sub_configs={"vision_config": {"width_coefficient": 0.25, "hidden_dim": 320}},
    ),
    "gemma4_assistant": Quirk(
        "transformers bug",
        unsupported="transformers' default config fails its own validation "
        "(hidden_size_per_layer_input must be 0, got 256)",
    ),
    "dots3_note_text": Quirk(
        "the sliding-window head_dim must equal qk_nope_head_dim + qk_rope_head_dim (8 + 8)",
        config={"head_dim": 16},
    ),
    "wav2vec2-bert": Quirk(
        "no feature extractor in transformers' mapping; hub checkpoints use SeamlessM4T's",
        feature_extractor="SeamlessM4TFeatureExtractor",
    ),
    "beit": Quirk(
        "its segmentation head reads 4 backbone layers (out_indices) and needs 4 layers",
        config=BEIT_LIKE,
    ),
    "data2vec-vision": Quirk(
        "its segmentation head reads 4 backbone layers (out_indices) and needs 4 layers",
        config=BEIT_LIKE,
    ),
    "d_fine": Quirk(
        "no image processor in transformers' mapping (hub checkpoints use RT-DETR's); the "
        "HGNetV2 backbone's stage widths chain, and the encoder reads the last three",
        image_processor="RTDetrImageProcessor",
        sub_configs={"backbone_config": HGNET},
        config={"encoder_in_channels": [32, 64, 128]},
    ),
    "deimv2": Quirk(
        "the HGNetV2 backbone's stage widths chain, and the encoder reads the last three",
        sub_configs={"backbone_config": HGNET},
        config={"encoder_in_channels": [32, 64, 128]},
    ),
    "hgnet_v2": Quirk("each stage's input width is the previous stage's output", config=HGNET),
    "gemma3n_text": Quirk(
        "15 of 35 layers share another's KV cache; none of 2 can",
        config={"num_kv_shared_layers": 0},
    ),
    "dbrx": Quirk(
        "the attention sub-config's rope_theta is not serialised by to_dict",
        sub_configs={"attn_config": {"rope_theta": 10000.0, "clip_qkv": 8.0}},
    ),
    "vision-encoder-decoder": Quirk(
        "transformers maps no processor: hub captioners (TrOCR) pair ViT's with a tokenizer",
        image_processor="ViTImageProcessor",
        processor="TrOCRProcessor",
    ),
    "fun_asr_nano": Quirk(
        "the adaptor's width must be a quarter of the text model's hidden size (32 // 4)",
        sub_configs={"adaptor_config": {"intermediate_size": 8}},
    ),
    "qwen4_exp_text": Quirk(
        "the sparse-attention indexer's sizes default to None",
        config={
            "indexer_n_heads": 4,
            "indexer_kv_heads": 1,
            "indexer_head_dim": 8,
            "indexer_budget": 64,
            "indexer_compress_ratio": 4,
        },
    ),
    "cohere_compass_text": Quirk(
        "rope_parameters defaults to {} but is read per layer type",
        config={"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e4}}},
    ),
    "musicgen": Quirk(
        "its decoder predicts EnCodec codes (2048, pad = bos = 2048), not the text tokenizer's ids",
        sub_configs={
            "decoder": MUSICGEN_DECODER,
            "audio_encoder": {"codebook_size": 2048, "codebook_dim": 32},
        },
    ),
    "musicgen_melody": Quirk(
        "its decoder predicts EnCodec codes (2048, pad = bos = 2048), not the text tokenizer's ids",
        sub_configs={
            "decoder": MUSICGEN_DECODER,
            "audio_encoder": {"codebook_size": 2048, "codebook_dim": 32},
        },
    ),
    "gemma4_unified_assistant": Quirk(
        "a draft model",
        unsupported="a draft (assistant) model: every layer reads the target model's KV cache "
        "(num_kv_shared_layers = num_hidden_layers), so it cannot generate alone",
    ),
    "textnet": Quirk(
        "kernel sizes are listed per block of each stage, and the stem feeds the first stage",
        keep=("depths",),
        config={"hidden_sizes": [16, 16, 32, 64, 128], "stem_out_channels": 16},
    ),
    "reformer": Quirk(
        "axial position embeddings: dims sum to hidden_size, the shape multiplies to positions",
        config={
            "axial_pos_embds_dim": [16, 16],
            "axial_pos_shape": [16, 32],
            "attention_head_size": 8,
            "feed_forward_size": 64,
            "attn_layers": ["local", "lsh"],
        },
    ),
    "xmod": Quirk(
        "an X-MOD forward needs a language adapter: the default language is the first one",
        config={"default_language": "en_XX"},
    ),
    "rt_detr_v2": Quirk(
        "no image processor in transformers' mapping; hub checkpoints use RT-DETR's",
        image_processor="RTDetrImageProcessor",
    ),
}


def _sub_config_keys(config: Any) -> list[str]:
    keys = list(getattr(config, "sub_configs", {}) or {})
    return [k for k in keys if isinstance(getattr(config, k, None), transformers.PretrainedConfig)]


def _text_keys(config: Any) -> list[str]:
    return [
        k
        for k in _sub_config_keys(config)
        if "text" in k or k in ("decoder", "decoder_config", "llm_config")
    ]


def _image_size(processor: Any) -> int | None:
    """The square side the image processor outputs, if it has one."""
    if processor is None:
        return None
    crop = (
        getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", 0) else None
    )
    size = crop or getattr(processor, "size", None)
    if size is not None and not isinstance(size, dict):  # transformers' SizeDict
        names = ("height", "width", "shortest_edge", "longest_edge")
        size = {k: getattr(size, k) for k in names if getattr(size, k, None)}
    if not isinstance(size, dict):
        return None
    if size.get("height") and size.get("height") == size.get("width"):
        return int(size["height"])
    return int(size["shortest_edge"]) if size.get("shortest_edge") and len(size) == 1 else None


def tiny_config(
    model_type: str,
    *,
    num_labels: int = NUM_LABELS,
    vocab_size: int | None = None,
    image_size: int | None = None,
    token_ids: dict[str, int] | None = None,
    extra: dict[str, Any] | None = None,
) -> Any:
    """``AutoConfig.for_model(model_type)`` made tiny: generic shrinking + exceptions."""
    quirk = EXCEPTIONS.get(model_type, Quirk(""))
    try:
        default = transformers.AutoConfig.for_model(model_type)
    except Exception:  # a default that its own validation refuses: the exception fixes it
        if not quirk.config:
            raise
        default = transformers.AutoConfig.for_model(model_type, **quirk.config)
    values = {k: v for k, v in default.to_dict().items() if k not in _sub_config_keys(default)}
    keep = frozenset(quirk.keep)
    overrides = shrink(values, keep, quirk.config.get("num_hidden_layers"))
    for key in _sub_config_keys(default):
        sub = getattr(default, key)
        sub_values = sub.to_dict()
        if sub_values.get("model_type") == "timm_backbone":  # timm is not a dependency
            sub_values = _resnet_backbone(sub_values.get("out_indices") or [4])
        sub_values.update(shrink(sub_values, keep))
        _shrink_nested(sub_values, keep)
        if vocab_size is not None and key in _text_keys(default) and "vocab_size" in sub_values:
            sub_values["vocab_size"] = vocab_size
            for alias in VOCAB_ALIASES:
                if alias in sub_values:
                    sub_values[alias] = vocab_size
            sub_values.update(_special_ids(sub_values))
        sub_values.update({k: v for k, v in (token_ids or {}).items() if k in sub_values})
        if image_size and isinstance(sub_values.get("image_size"), int):
            sub_values["image_size"] = image_size  # as the image processor resizes
        sub_values.update(quirk.sub_configs.get(key, {}))
        overrides[key] = sub_values
    if vocab_size is not None and ("vocab_size" in values or not _text_keys(default)):
        overrides["vocab_size"] = vocab_size
        for key in VOCAB_ALIASES:
            if key in values:
                overrides[key] = vocab_size
        overrides.update(_special_ids(values))
    if image_size and isinstance(values.get("image_size"), int):
        overrides["image_size"] = image_size
    overrides.update({k: v for k, v in (token_ids or {}).items() if k in values})
    if getattr(default, "use_timm_backbone", False):
        overrides.update(use_timm_backbone=False, use_pretrained_backbone=False)
    overrides.update(copy.deepcopy(quirk.config))
    overrides.update(extra or {})
    id2label = {i: f"LABEL_{chr(ord('A') + i)}" for i in range(num_labels)}
    if "num_labels" in values:  # a config that stores num_labels apart from id2label (PVT)
        overrides["num_labels"] = num_labels
    overrides["id2label"] = id2label
    overrides["label2id"] = {label: i for i, label in id2label.items()}
    return transformers.AutoConfig.for_model(model_type, **overrides)


def _shrink_nested(values: dict[str, Any], keep: frozenset[str]) -> None:
    """Shrink the sub-configs of a sub-config in place (an audio tower's encoder, a VQ model)."""
    for key, value in list(values.items()):
        if isinstance(value, dict) and isinstance(value.get("model_type"), str):
            if value["model_type"] == "timm_backbone":
                values[key] = value = _resnet_backbone(value.get("out_indices") or [4])
            value.update(shrink(value, keep))
            _shrink_nested(value, keep)


#: Keys that must follow vocab_size: per-layer embeddings read the same ids, and a padded
#: vocabulary's real size.
VOCAB_ALIASES = ("vocab_size_per_layer_input", "unpadded_vocab_size")


def _resnet_backbone(out_indices: list[int]) -> dict[str, Any]:
    """A tiny transformers ResNet in place of a timm backbone, giving the same feature levels."""
    return {
        "model_type": "resnet",
        "embedding_size": 8,
        "hidden_sizes": [8, 16, 32, 64],
        "depths": [1, 1, 1, 1],
        "layer_type": "basic",
        "out_features": [f"stage{i}" for i in out_indices],
    }


def _special_ids(values: dict[str, Any]) -> dict[str, Any]:
    """The generic tokenizer's special ids for the id keys this config has."""
    out = {k: v for k, v in SPECIAL_IDS.items() if k in values}
    out.setdefault("pad_token_id", 0)
    return out


# --------------------------------------------------------------------------------------------
# Processors
# --------------------------------------------------------------------------------------------


#: Media placeholder tokens that multimodal processors read from their tokenizer (attribute ->
#: token), and the config keys that hold each one's id.
MEDIA_TOKENS = {
    "image_token": "<image>",
    "boi_token": "<boi>",
    "eoi_token": "<eoi>",
    "video_token": "<video>",
    "audio_token": "<audio>",
    "start_image_token": "<start_of_image>",
    "end_image_token": "<end_of_image>",
}
MEDIA_ID_KEYS = {
    f"{name.removesuffix('_token')}_token_{suffix}": name
    for name in MEDIA_TOKENS
    for suffix in ("id", "index")
}
MEDIA_FAMILIES = ("multimodal-generation", "speech")


def media_ids(tokenizer: Any) -> dict[str, int]:
    """Config key -> id for every media token the tokenizer has (empty for plain text)."""
    out = {}
    for key, name in MEDIA_ID_KEYS.items():
        token = getattr(tokenizer, name, None) if tokenizer is not None else None
        if isinstance(token, str) and token in MEDIA_TOKENS.values():
            out[key] = tokenizer.convert_tokens_to_ids(token)
    return out


def generic_tokenizer(family: str) -> Any:
    """A byte-level BPE fast tokenizer over recipes.WORDS, saved as PreTrainedTokenizerFast.

    Encoders add "<s> A </s>" (pairs "<s> A </s></s> B </s>"), decoders "<s> A", seq2seq
    "A </s>"; decoders get the recipes' plain chat template.
    """
    vocab, merges = recipes._byte_level_bpe(SPECIALS)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    if family in ("encoder", "vision-text"):
        template = processors.TemplateProcessing(
            single="<s> $A </s>",
            pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", 1), ("</s>", 2)],
        )
    elif family == "encoder-decoder":
        template = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 2)]
        )
    else:
        template = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)]
        )
    backend.post_processor = template
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
        model_max_length=recipes.MAX_POSITIONS,
        **({"extra_special_tokens": MEDIA_TOKENS} if family in MEDIA_FAMILIES else {}),
    )
    if family == "decoder":
        tokenizer.chat_template = recipes.CHAT_TEMPLATE
    return tokenizer


#: Tokenizer classes the generic BPE cannot stand in for, and the recipe that builds them.
TOKENIZER_BUILDERS: dict[str, Callable[[Path], Any]] = {
    "Wav2Vec2CTCTokenizer": recipes._ctc_tokenizer,
    "WhisperTokenizer": recipes._whisper_tokenizer,
}


def _mapped(names: dict[str, Any], model_type: str) -> Any:
    return names.get(model_type)


def build_tokenizer(model_type: str, family: str, scratch: Path) -> Any:
    quirk = EXCEPTIONS.get(model_type, Quirk(""))
    name = _mapped(tokenization_auto.TOKENIZER_MAPPING_NAMES, model_type)
    name = name if isinstance(name, str) else (name[0] if name else None)
    builder = TOKENIZER_BUILDERS.get(quirk.tokenizer or name or "")
    return builder(scratch) if builder else generic_tokenizer(family)


#: The image processor of a vision type that transformers maps to none (its hub checkpoints
#: name one in preprocessor_config.json): ViT's resize + normalise for classification, DETR's
#: for detection (it also post-processes boxes).
FALLBACK_IMAGE_PROCESSOR = {False: "ViTImageProcessor", True: "DetrImageProcessor"}


def build_image_processor(model_type: str, family: str, detection: bool = False) -> Any:
    quirk = EXCEPTIONS.get(model_type, Quirk(""))
    entry = quirk.image_processor or _mapped(
        image_processing_auto.IMAGE_PROCESSOR_MAPPING_NAMES, model_type
    )
    if entry is None and family == "vision":
        entry = FALLBACK_IMAGE_PROCESSOR[detection]
    if entry is None:
        return None
    if isinstance(entry, dict):
        name = entry.get("pil") or entry.get("torchvision")
    else:
        name = entry if isinstance(entry, str) else next(n for n in entry if n)
    if not name.endswith("Pil") and hasattr(transformers, f"{name}Pil"):
        name = f"{name}Pil"  # the PIL backend: torchvision is not a dependency
    try:
        return getattr(transformers, name)()
    except ImportError as exc:
        raise StageError("processor", f"{name}: {first_line(exc)}") from None


#: The feature extractor of an audio type that transformers maps to none (raw 16 kHz waveforms).
FALLBACK_FEATURE_EXTRACTOR = "Wav2Vec2FeatureExtractor"
#: The processor of a speech type that transformers maps to none: feature extractor + tokenizer.
FALLBACK_SPEECH_PROCESSOR = "Wav2Vec2Processor"


def _mel_bins(config: Any) -> int | None:
    """num_mel_bins of the config or its audio sub-config, if it has one."""
    for part in (config, *(getattr(config, k) for k in _sub_config_keys(config))):
        if isinstance(getattr(part, "num_mel_bins", None), int):
            return part.num_mel_bins
    return None


def build_feature_extractor(model_type: str) -> Any:
    quirk = EXCEPTIONS.get(model_type, Quirk(""))
    name = quirk.feature_extractor or _mapped(
        feature_extraction_auto.FEATURE_EXTRACTOR_MAPPING_NAMES, model_type
    )
    extractor = getattr(transformers, name or FALLBACK_FEATURE_EXTRACTOR)()
    bins = _mel_bins(transformers.AutoConfig.for_model(model_type))
    size = getattr(extractor, "feature_size", None)
    if bins and isinstance(size, int) and size > 1 and size != bins:
        try:  # the model's mel bins, as its hub checkpoints' extractor is configured
            extractor = type(extractor)(feature_size=bins)
        except TypeError:
            pass
    return extractor


def first_line(exc: BaseException) -> str:
    """``Type: message`` on one line: the message's first line, and the next one when the
    first only introduces it (ends with ':'), at most 300 characters."""
    missing = re.search(r"requires the (\S+) library", str(exc)) or re.search(
        r"requires (\S+) library", str(exc)
    )
    if isinstance(exc, ImportError) and missing:
        return f"needs {missing.group(1)}, which is not installed (not a dependency of hfskills)"
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def build_processors(
    model_type: str, classification: Classification, directory: Path, scratch: Path
) -> tuple[int | None, int | None, dict[str, int]]:
    """Save the processing files into ``directory``; return the tokenizer's length, the image
    processor's output side (None where there is none) and the media tokens' config ids."""
    kinds = {plan.task.processor for plan in classification.tasks}
    family = classification.family
    text = family in ("encoder", "decoder", "encoder-decoder", "vision-text", "speech")
    text = text or "processor" in kinds or "tokenizer" in kinds
    tokenizer = build_tokenizer(model_type, family, scratch) if text else None
    detection = "object_detection" in {plan.name for plan in classification.tasks}
    image = None
    if family not in ("speech", "audio"):
        image = build_image_processor(model_type, family, detection)
    audio = build_feature_extractor(model_type) if family in ("speech", "audio") else None
    if family in ("vision-text", "multimodal-generation", "speech") or "processor" in kinds:
        quirk = EXCEPTIONS.get(model_type, Quirk(""))
        name = quirk.processor or _mapped(processing_auto.PROCESSOR_MAPPING_NAMES, model_type)
        if name is None and family == "speech" and audio is not None and tokenizer is not None:
            name = FALLBACK_SPEECH_PROCESSOR
        if name:
            cls = getattr(transformers, name)
            parts = {"tokenizer": tokenizer, "image_processor": image, "feature_extractor": audio}
            kwargs = {a: parts.get(a) for a in cls.get_attributes()}
            missing = [a for a, v in kwargs.items() if v is None]
            if missing:
                raise StageError("processor", f"{name} needs {missing}, not built generically")
            cls(**kwargs).save_pretrained(directory)
            return (len(tokenizer) if tokenizer else None), _image_size(image), media_ids(tokenizer)
    for part in (tokenizer, image, audio):
        if part is not None:
            part.save_pretrained(directory)
    return (len(tokenizer) if tokenizer else None), _image_size(image), media_ids(tokenizer)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


#: A tiny model has well under this many parameters; more means a size key was not shrunk.
MAX_PARAMETERS = 50_000_000


def _save_model(cls_name: str, config: Any, directory: Path) -> None:
    cls = getattr(transformers, cls_name)
    config = copy.deepcopy(config)
    config.architectures = [cls_name]
    with torch.device("meta"):  # count first: never allocate a full-size model by mistake
        count = sum(p.numel() for p in cls(config).parameters())
    if count > MAX_PARAMETERS:
        raise StageError(
            "model", f"{count / 1e6:.0f}M parameters after shrinking (limit {MAX_PARAMETERS:,})"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = cls(config)
    model.save_pretrained(directory)


def _copy_processing(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors") and path.name != "config.json":
            shutil.copy2(path, target / path.name)


def _labels_for(task: str) -> int:
    return QA_LABELS if task == "question_answering" else NUM_LABELS


def build(
    model_type: str,
    classification: Classification,
    root: Path,
    stage: Callable[[str], None] = lambda name: None,
) -> dict[str, Path]:
    """Write one checkpoint directory per served task under ``root``; return task -> path.

    ``stage(name)`` is called as each stage starts (config, processor, model), so a caller that
    is killed mid-way (a timeout) knows where.
    """
    quirk = EXCEPTIONS.get(model_type)
    if quirk is not None and quirk.unsupported:
        raise StageError("config", quirk.unsupported)
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if model_type in recipes.ARCHITECTURES:  # the hand-tuned parity-test recipe
        stage("model")
        bases: dict[int, Path] = {}
        for plan in classification.tasks:
            labels = _labels_for(plan.name)
            if labels not in bases:
                bases[labels] = recipes.build_checkpoint(
                    model_type, root / f"base-{labels}", num_labels=labels
                )
            target = root / plan.name
            _copy_processing(bases[labels], target)
            cls = getattr(transformers, plan.model_class)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                cls.from_pretrained(bases[labels]).save_pretrained(target)
            paths[plan.name] = target
        return paths

    stage("config")
    try:
        tiny_config(model_type)
    except Exception as exc:
        raise StageError("config", first_line(exc)) from None
    stage("processor")
    base = root / "processing"
    base.mkdir(parents=True, exist_ok=True)
    scratch = root / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        vocab, side, ids = build_processors(model_type, classification, base, scratch)
    except StageError:
        raise
    except Exception as exc:
        raise StageError("processor", first_line(exc)) from None
    stage("model")
    for plan in classification.tasks:
        try:
            config = tiny_config(
                model_type,
                num_labels=_labels_for(plan.name),
                vocab_size=vocab,
                image_size=side,
                token_ids=ids,
            )
            target = root / plan.name
            _copy_processing(base, target)
            _save_model(plan.model_class, config, target)
        except StageError:
            raise
        except Exception as exc:
            raise StageError("model", f"{plan.model_class}: {first_line(exc)}") from None
        paths[plan.name] = target
    return paths


def describe(path: Path) -> dict[str, Any]:
    """The saved config's size keys, for debugging a failure."""
    config = json.loads((path / "config.json").read_text())
    return {k: v for k, v in config.items() if k in SHRINK}
