"""Tiny random-weight Hugging Face checkpoints, hand-tuned per architecture, built offline.

``build_checkpoint(model_type, directory)`` writes a directory that loads exactly like a hub
checkpoint: ``config.json`` + ``model.safetensors`` (random weights, ``torch.manual_seed(0)``)
plus the tokenizer / image processor / feature extractor / processor files of that architecture.
Every tokenizer is built in-process from a small English vocabulary (see ``WORDS``), so common
sentences such as "hello world, the capital of france is paris" map to real token ids.

Run ``python -m hfskills.generator.sweep.recipes`` (or ``python tests/checkpoints.py``) to build
and smoke-test every architecture.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import transformers
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerBase

__all__ = [
    "ARCHITECTURES",
    "WORDS",
    "ArchitectureSpec",
    "build_checkpoint",
    "tiny_audio",
    "tiny_image",
]

# --------------------------------------------------------------------------------------------
# Shared vocabulary
# --------------------------------------------------------------------------------------------

#: Lowercase words that every text tokenizer knows as whole tokens.
WORDS: tuple[str, ...] = tuple(
    """
    hello world the capital of france is paris a an and or but not no yes this that these those
    it its was were be been being are am to in on at for with by from as into about over under
    i you he she we they me him her us them my your his our their what who whom where when why
    how which there here good bad great terrible awful amazing excellent nice best worst love hate
    like happy sad angry movie film book story music song food day night morning time year week
    man woman men women people person child city country london berlin germany england spain
    rome italy english french german language model test example sentence word text translate
    summary question answer name john mary cat dog bird fish house car red blue green black white
    big small new old very much many more most some all one two three four five first last next
    can will would should could may might must do does did done have has had go went make made
    see saw say said think know want get take come give use find tell ask work call try need feel
    become leave put mean keep let begin seem help show hear play run move live believe bring
    write sit stand lose pay meet learn change lead understand watch follow stop create speak read
    grow open walk win buy wait serve send build stay fall cut reach remain pass sell decide
    weather today tomorrow sunny rain hot cold water fire earth sky sun moon star tree flower
    table chair computer phone school student teacher doctor friend family mother father
    beautiful fast slow long short high low true false right left up down out off again then now
    only also just so than too well still even back never always often sometimes user assistant
    system please thank thanks sorry okay hi bye
    """.split()
)
LETTERS = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
PUNCTUATION = ".,!?;:'\"-()[]/&%$#@*+=<>_|"
CHARACTERS = LETTERS + DIGITS + PUNCTUATION

#: A plain-text chat template shared by all decoder tokenizers (role names are real words).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
)
MAX_POSITIONS = 128  # max_position_embeddings of text models, and their tokenizers' max length
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]  # sentencepiece-style byte fallback pieces

Tok = PreTrainedTokenizerBase


# --------------------------------------------------------------------------------------------
# Public helpers for inputs
# --------------------------------------------------------------------------------------------


def tiny_image(size: int = 48, seed: int = 0) -> Image.Image:
    """A deterministic RGB image: a colour gradient with a little seeded noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.stack(
        [np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), 128.0)],
        axis=-1,
    )
    pixels += rng.normal(0, 20, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))  # HxWx3 uint8 => RGB


def tiny_audio(seconds: float = 1.0, sampling_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Deterministic float32 mono audio: a 440 Hz tone plus seeded noise, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate), dtype=np.float32) / sampling_rate
    wave = 0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * rng.standard_normal(t.shape)
    return wave.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------


def _train_bpe(
    corpus: Iterable[str],
    *,
    specials: list[str],
    alphabet: Iterable[str],
    pre_tokenizer: Any,
    end_of_word_suffix: str | None = None,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a BPE model until every corpus word is a single token; return (vocab, merges).

    The trainer is deterministic for a fixed corpus, so the ids are stable across runs.
    """
    suffix = {"end_of_word_suffix": end_of_word_suffix} if end_of_word_suffix else {}
    tokenizer = Tokenizer(models.BPE(**suffix))
    tokenizer.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=100_000,  # never reached: training stops once all words are merged
        min_frequency=1,
        special_tokens=specials,
        initial_alphabet=sorted(set(alphabet)),
        show_progress=False,
        **suffix,
    )
    tokenizer.train_from_iterator(list(corpus), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    return model["vocab"], [tuple(merge) for merge in model["merges"]]


def _byte_level_bpe(specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2 style byte-level BPE: each word as "word" and "Ġword"."""
    return _train_bpe(
        [*WORDS, *(f" {word}" for word in WORDS)],
        specials=specials,
        alphabet=pre_tokenizers.ByteLevel.alphabet(),
        pre_tokenizer=pre_tokenizers.ByteLevel(add_prefix_space=False),
    )


def _metaspace_bpe(specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Llama/Gemma style BPE over "▁word" pieces, with 256 byte-fallback tokens after specials."""
    return _train_bpe(
        [*WORDS, *(f"▁{word}" for word in WORDS), *CHARACTERS],
        specials=specials + BYTE_TOKENS,
        alphabet=CHARACTERS + "▁",
        pre_tokenizer=pre_tokenizers.WhitespaceSplit(),
    )


def _unigram_pieces(specials: list[str]) -> list[tuple[str, float]]:
    """Sentencepiece-unigram pieces: specials, "▁", "▁word" pieces and single characters."""
    pieces = [(token, 0.0) for token in specials] + [("▁", -3.0)]
    pieces += [(f"▁{word}", -5.0 - 0.01 * i) for i, word in enumerate(WORDS)]
    pieces += [(char, -10.0) for char in CHARACTERS]
    return pieces


def _wordpiece_vocab(specials: list[str]) -> dict[str, int]:
    """BERT style WordPiece vocabulary: specials, whole words, characters and ##characters."""
    tokens = [*specials, *WORDS, *CHARACTERS, *(f"##{char}" for char in LETTERS + DIGITS)]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}


def _write_sentencepiece(
    path: Path, pieces: list[tuple[str, float]], specials: dict[str, str]
) -> Path:
    """Write a sentencepiece unigram ``.model`` file for ``pieces`` (no training involved).

    ``specials`` maps "unk"/"bos"/"eos"/"pad" to piece strings (bos/pad may be missing).
    """
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    proto = sp_pb2.ModelProto()
    index = {piece: i for i, (piece, _) in enumerate(pieces)}
    for piece, score in pieces:
        entry = proto.pieces.add(piece=piece, score=score)
        if piece == specials["unk"]:
            entry.type = sp_pb2.ModelProto.SentencePiece.UNKNOWN
        elif piece in specials.values():
            entry.type = sp_pb2.ModelProto.SentencePiece.CONTROL
    spec = proto.trainer_spec
    spec.model_type = sp_pb2.TrainerSpec.UNIGRAM
    spec.vocab_size = len(pieces)
    for kind in ("unk", "bos", "eos", "pad"):
        setattr(spec, f"{kind}_id", index[specials[kind]] if kind in specials else -1)
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = True
    proto.normalizer_spec.escape_whitespaces = True
    path.write_bytes(proto.SerializeToString())
    return path


# --------------------------------------------------------------------------------------------
# Tokenizer builders: each takes a scratch directory and returns a ready tokenizer
# --------------------------------------------------------------------------------------------


def _wordpiece_tokenizer(scratch: Path, cls: str = "BertTokenizer", **special: str) -> Tok:
    """BertTokenizer / MPNetTokenizer; ``special`` overrides the class's default special tokens."""
    tokenizer_cls = getattr(transformers, cls)
    defaults = {
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    }
    tokens = defaults | special
    extra = [token for key, token in tokens.items() if key not in defaults]
    vocab = _wordpiece_vocab([*tokens.values()])
    tokenizer = tokenizer_cls(vocab=vocab, model_max_length=MAX_POSITIONS, **tokens)
    if extra:  # e.g. BLIP's "[DEC]" bos token must be known as a special token
        tokenizer.add_special_tokens({"additional_special_tokens": extra})
    return tokenizer


def _byte_bpe_tokenizer(scratch: Path, cls: str, specials: list[str], **kwargs: Any) -> Tok:
    """GPT2/Roberta/GPTNeoX/Qwen2 tokenizers on a byte-level BPE vocabulary."""
    vocab, merges = _byte_level_bpe(specials)
    tokenizer_cls = getattr(transformers, cls)
    return tokenizer_cls(vocab=vocab, merges=merges, model_max_length=MAX_POSITIONS, **kwargs)


def _metaspace_bpe_tokenizer(scratch: Path, cls: str, specials: list[str], **kwargs: Any) -> Tok:
    """LlamaTokenizer / GemmaTokenizer on a "▁word" BPE vocabulary with byte fallback."""
    vocab, merges = _metaspace_bpe(specials)
    tokenizer_cls = getattr(transformers, cls)
    return tokenizer_cls(vocab=vocab, merges=merges, model_max_length=MAX_POSITIONS, **kwargs)


def _unigram_tokenizer(scratch: Path, cls: str, specials: list[str], **kwargs: Any) -> Tok:
    """T5/XLMRoberta/Albert/DebertaV2 tokenizers on a unigram vocabulary."""
    tokenizer_cls = getattr(transformers, cls)
    pieces = _unigram_pieces(specials)
    return tokenizer_cls(vocab=pieces, model_max_length=MAX_POSITIONS, **kwargs)


def _clip_tokenizer(scratch: Path) -> Tok:
    """CLIPTokenizer: lowercase byte-level BPE with "</w>" end-of-word suffixes."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    # The "x</w>" symbols are passed as specials only to give them fixed ids: the trainer would
    # otherwise number them in hash-map order, making the vocabulary nondeterministic.
    specials = ["<|startoftext|>", "<|endoftext|>", *(f"{char}</w>" for char in alphabet)]
    vocab, merges = _train_bpe(
        [*WORDS, *CHARACTERS],
        specials=specials,
        alphabet=alphabet,
        pre_tokenizer=pre_tokenizers.ByteLevel(add_prefix_space=False),
        end_of_word_suffix="</w>",
    )
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=64)


def _siglip_tokenizer(scratch: Path) -> Tok:
    """SiglipTokenizer (sentencepiece): pad == eos == "</s>" as in the released checkpoints."""
    pieces = _unigram_pieces(["<pad>", "</s>", "<unk>"])
    specials = {"unk": "<unk>", "eos": "</s>"}
    model_file = _write_sentencepiece(scratch / "spiece.model", pieces, specials)
    return transformers.SiglipTokenizer(vocab_file=str(model_file), model_max_length=64)


def _marian_tokenizer(scratch: Path) -> Tok:
    """MarianTokenizer: shared source/target sentencepiece model; "<pad>" is the last id."""
    pieces = [*_unigram_pieces(["</s>", "<unk>"]), ("<pad>", 0.0)]
    specials = {"unk": "<unk>", "eos": "</s>", "pad": "<pad>"}
    spm = _write_sentencepiece(scratch / "source.spm", pieces, specials)
    vocab_file = scratch / "vocab.json"
    vocab_file.write_text(json.dumps({piece: i for i, (piece, _) in enumerate(pieces)}))
    return transformers.MarianTokenizer(
        source_spm=str(spm),
        target_spm=str(spm),
        vocab=str(vocab_file),
        model_max_length=MAX_POSITIONS,
    )


WHISPER_LANGUAGES = ("en", "fr", "de")


def _whisper_tokenizer(scratch: Path) -> Tok:
    """WhisperTokenizer laid out as the hub's: byte-level BPE, then <|endoftext|>, Whisper's
    special tokens, and the timestamp tokens <|0.00|>..<|1.00|> last, as plain added tokens (the
    feature extractor's chunk is 1 s). The tokenizer's own code relies on this order: a prompt's
    ids must lie below every special id (``get_prompt_ids``), and timestamps start right after
    the last special id (``decode(output_offsets=True)``, the pipeline's ``return_timestamps``).
    """
    from tokenizers import AddedToken

    vocab, merges = _byte_level_bpe([])
    end = "<|endoftext|>"
    tokenizer = transformers.WhisperTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=end,
        bos_token=end,
        eos_token=end,
        pad_token=end,
        model_max_length=64,
    )
    specials = [
        "<|startoftranscript|>",
        *(f"<|{language}|>" for language in WHISPER_LANGUAGES),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
    ]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(51)]
    tokenizer.add_tokens([AddedToken(s, special=False, normalized=False) for s in stamps])
    return tokenizer


def _ctc_tokenizer(scratch: Path) -> Tok:
    """Wav2Vec2CTCTokenizer over upper-case characters; "|" is the word delimiter."""
    tokens = ["<pad>", "<s>", "</s>", "<unk>", "|", *LETTERS.upper(), "'"]
    vocab_file = scratch / "ctc_vocab.json"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    return transformers.Wav2Vec2CTCTokenizer(vocab_file=str(vocab_file))


# --------------------------------------------------------------------------------------------
# Image processors / feature extractors (PIL backends: torchvision is not required)
# --------------------------------------------------------------------------------------------

_SQUARE = {"height": 32, "width": 32}


def _image_processor(cls: str, **kwargs: Any) -> Callable[[], Any]:
    """Factory for ``transformers.<cls>Pil(**kwargs)`` (saved under the hub class name)."""

    return lambda: getattr(transformers, f"{cls}Pil")(**kwargs)


def _whisper_feature_extractor() -> Any:
    """80 mel bins, 1 s chunks => 100 frames => max_source_positions 50."""
    return transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=1)


def _wav2vec2_feature_extractor() -> Any:
    return transformers.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=False,
    )


# --------------------------------------------------------------------------------------------
# Architecture table
# --------------------------------------------------------------------------------------------


#: encoder/decoder/seq2seq: text models loaded with AutoTokenizer (decoders get a chat template);
#: vision: AutoImageProcessor; multimodal: AutoProcessor.
Kind = Literal["encoder", "decoder", "seq2seq", "vision", "multimodal"]


@dataclass(frozen=True)
class ArchitectureSpec:
    """How to build one tiny checkpoint.

    ``config`` holds small-size overrides for ``AutoConfig.for_model``; ``token_ids`` maps config
    keys (e.g. "pad_token_id") to token strings looked up in the tokenizer; both go into
    ``config[text_config]`` when ``text_config`` is set (composite models such as CLIP).
    """

    kind: Kind
    architecture: str  # model class whose weights are saved; becomes config.architectures[0]
    config: dict[str, Any]
    tokenizer: Callable[[Path], Tok] | None = None
    token_ids: dict[str, str] = field(default_factory=dict)
    text_config: str | None = None
    image_processor: Callable[[], Any] | None = None
    feature_extractor: Callable[[], Any] | None = None
    processor: str | None = None  # composite processor class saved on top, e.g. "CLIPProcessor"
    #: the composite processor's own arguments (a VLM's patch size, chat template...)
    processor_options: dict[str, Any] = field(default_factory=dict)


_BERT_LIKE = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "max_position_embeddings": MAX_POSITIONS,
}
_DECODER = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 37,
    "max_position_embeddings": MAX_POSITIONS,
    "head_dim": 8,
}
_SEQ2SEQ = {
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 37,
    "decoder_ffn_dim": 37,
    "max_position_embeddings": MAX_POSITIONS,
}
_VIT = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
}
_RESNET = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"}
_ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
_ROBERTA_IDS = {"bos_token_id": "<s>", "pad_token_id": "<pad>", "eos_token_id": "</s>"}
_LLAMA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
_LLAMA_IDS = {"bos_token_id": "<s>", "eos_token_id": "</s>", "pad_token_id": "<pad>"}
_llama_tokenizer = partial(
    _metaspace_bpe_tokenizer,
    cls="LlamaTokenizer",
    specials=_LLAMA_SPECIALS,
    pad_token="<pad>",
    add_bos_token=True,
)

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    # ---- encoders ------------------------------------------------------------------------
    "bert": ArchitectureSpec(
        "encoder", "BertForMaskedLM", _BERT_LIKE, _wordpiece_tokenizer, {"pad_token_id": "[PAD]"}
    ),
    "roberta": ArchitectureSpec(
        "encoder",
        "RobertaForMaskedLM",
        _BERT_LIKE | {"max_position_embeddings": MAX_POSITIONS + 2},  # positions start at pad+1
        partial(_byte_bpe_tokenizer, cls="RobertaTokenizer", specials=_ROBERTA_SPECIALS),
        _ROBERTA_IDS,
    ),
    "distilbert": ArchitectureSpec(
        "encoder",
        "DistilBertForMaskedLM",
        {
            "dim": 32,
            "n_layers": 2,
            "n_heads": 4,
            "hidden_dim": 37,
            "max_position_embeddings": MAX_POSITIONS,
        },
        _wordpiece_tokenizer,
        {"pad_token_id": "[PAD]"},
    ),
    "xlm-roberta": ArchitectureSpec(
        "encoder",
        "XLMRobertaForMaskedLM",
        _BERT_LIKE | {"max_position_embeddings": MAX_POSITIONS + 2},
        partial(
            _unigram_tokenizer,
            cls="XLMRobertaTokenizer",
            specials=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        ),
        _ROBERTA_IDS,
    ),
    "deberta-v2": ArchitectureSpec(
        "encoder",
        "DebertaV2ForMaskedLM",
        _BERT_LIKE
        | {"relative_attention": True, "position_buckets": 16, "pos_att_type": ["p2c", "c2p"]},
        partial(
            _unigram_tokenizer,
            cls="DebertaV2Tokenizer",
            specials=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        ),
        {"pad_token_id": "[PAD]"},
    ),
    "electra": ArchitectureSpec(
        "encoder",
        "ElectraForMaskedLM",
        _BERT_LIKE | {"embedding_size": 32},
        _wordpiece_tokenizer,
        {"pad_token_id": "[PAD]"},
    ),
    "albert": ArchitectureSpec(
        "encoder",
        "AlbertForMaskedLM",
        _BERT_LIKE | {"embedding_size": 16},
        partial(
            _unigram_tokenizer,
            cls="AlbertTokenizer",
            specials=["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"],
        ),
        {"pad_token_id": "<pad>", "bos_token_id": "[CLS]", "eos_token_id": "[SEP]"},
    ),
    "mpnet": ArchitectureSpec(
        "encoder",
        "MPNetForMaskedLM",
        _BERT_LIKE | {"max_position_embeddings": MAX_POSITIONS + 2},
        partial(
            _wordpiece_tokenizer,
            cls="MPNetTokenizer",
            bos_token="<s>",
            eos_token="</s>",
            sep_token="</s>",
            cls_token="<s>",
            unk_token="[UNK]",
            pad_token="<pad>",
            mask_token="<mask>",
        ),
        _ROBERTA_IDS,
    ),
    # ---- decoders ------------------------------------------------------------------------
    "gpt2": ArchitectureSpec(
        "decoder",
        "GPT2LMHeadModel",
        {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 37, "n_positions": MAX_POSITIONS},
        partial(
            _byte_bpe_tokenizer,
            cls="GPT2Tokenizer",
            specials=["<|endoftext|>"],
            pad_token="<|endoftext|>",
        ),
        {
            "bos_token_id": "<|endoftext|>",
            "eos_token_id": "<|endoftext|>",
            "pad_token_id": "<|endoftext|>",
        },
    ),
    "llama": ArchitectureSpec(
        "decoder", "LlamaForCausalLM", _DECODER, _llama_tokenizer, _LLAMA_IDS
    ),
    "mistral": ArchitectureSpec(
        "decoder",
        "MistralForCausalLM",
        _DECODER | {"sliding_window": None},
        _llama_tokenizer,
        _LLAMA_IDS,
    ),
    "qwen2": ArchitectureSpec(
        "decoder",
        "Qwen2ForCausalLM",
        _DECODER,
        partial(_byte_bpe_tokenizer, cls="Qwen2Tokenizer", specials=["<|endoftext|>"]),
        {
            "bos_token_id": "<|endoftext|>",
            "eos_token_id": "<|endoftext|>",
            "pad_token_id": "<|endoftext|>",
        },
    ),
    "phi3": ArchitectureSpec(
        "decoder",
        "Phi3ForCausalLM",
        _DECODER | {"original_max_position_embeddings": MAX_POSITIONS},
        _llama_tokenizer,
        _LLAMA_IDS,
    ),
    "gemma": ArchitectureSpec(
        "decoder",
        "GemmaForCausalLM",
        _DECODER,
        partial(
            _metaspace_bpe_tokenizer,
            cls="GemmaTokenizer",
            specials=["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"],
            add_bos_token=True,
        ),
        {"pad_token_id": "<pad>", "eos_token_id": "<eos>", "bos_token_id": "<bos>"},
    ),
    "gpt_neox": ArchitectureSpec(
        "decoder",
        "GPTNeoXForCausalLM",
        _DECODER | {"rotary_pct": 0.5},
        partial(
            _byte_bpe_tokenizer,
            cls="GPTNeoXTokenizer",
            specials=["<|endoftext|>", "<|padding|>"],
        ),
        {
            "bos_token_id": "<|endoftext|>",
            "eos_token_id": "<|endoftext|>",
            "pad_token_id": "<|padding|>",
        },
    ),
    "opt": ArchitectureSpec(
        "decoder",
        "OPTForCausalLM",
        {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "ffn_dim": 37,
            "word_embed_proj_dim": 32,
            "max_position_embeddings": MAX_POSITIONS,
        },
        partial(
            _byte_bpe_tokenizer,
            cls="GPT2Tokenizer",
            specials=["<s>", "<pad>", "</s>", "<unk>"],
            bos_token="</s>",
            eos_token="</s>",
            unk_token="<unk>",
            pad_token="<pad>",
            add_bos_token=True,  # OPT prepends "</s>"
        ),
        {"bos_token_id": "</s>", "eos_token_id": "</s>", "pad_token_id": "<pad>"},
    ),
    # ---- encoder-decoders ----------------------------------------------------------------
    "t5": ArchitectureSpec(
        "seq2seq",
        "T5ForConditionalGeneration",
        {
            "d_model": 32,
            "d_kv": 8,
            "d_ff": 37,
            "num_layers": 2,
            "num_decoder_layers": 2,
            "num_heads": 4,
            "relative_attention_num_buckets": 8,
        },
        partial(
            _unigram_tokenizer, cls="T5Tokenizer", specials=["<pad>", "</s>", "<unk>"], extra_ids=10
        ),
        {"pad_token_id": "<pad>", "eos_token_id": "</s>", "decoder_start_token_id": "<pad>"},
    ),
    "bart": ArchitectureSpec(
        "seq2seq",
        "BartForConditionalGeneration",
        # Untied LM head: with tied embeddings a random BART echoes decoder_start (= eos) and
        # generate() stops at once with an empty output.
        _SEQ2SEQ | {"tie_word_embeddings": False},
        partial(_byte_bpe_tokenizer, cls="RobertaTokenizer", specials=_ROBERTA_SPECIALS),
        _ROBERTA_IDS | {"decoder_start_token_id": "</s>", "forced_eos_token_id": "</s>"},
    ),
    "marian": ArchitectureSpec(
        "seq2seq",
        "MarianMTModel",
        _SEQ2SEQ,
        _marian_tokenizer,
        {
            "pad_token_id": "<pad>",
            "eos_token_id": "</s>",
            "decoder_start_token_id": "<pad>",
            "forced_eos_token_id": "</s>",
        },
    ),
    # ---- vision --------------------------------------------------------------------------
    "vit": ArchitectureSpec(
        "vision",
        "ViTForImageClassification",
        _VIT,
        image_processor=_image_processor("ViTImageProcessor", size=_SQUARE),
    ),
    "convnext": ArchitectureSpec(
        "vision",
        "ConvNextForImageClassification",
        {"image_size": 32, "num_stages": 2, "hidden_sizes": [16, 32], "depths": [1, 1]},
        image_processor=_image_processor("ConvNextImageProcessor", size={"shortest_edge": 32}),
    ),
    "resnet": ArchitectureSpec(
        "vision",
        "ResNetForImageClassification",
        _RESNET,
        image_processor=_image_processor("ConvNextImageProcessor", size={"shortest_edge": 32}),
    ),
    "swin": ArchitectureSpec(
        "vision",
        "SwinForImageClassification",
        {
            "image_size": 32,
            "patch_size": 4,
            "embed_dim": 16,
            "depths": [1, 1],
            "num_heads": [2, 4],
            "window_size": 4,
            "mlp_ratio": 2.0,
        },
        image_processor=_image_processor("ViTImageProcessor", size=_SQUARE),
    ),
    "detr": ArchitectureSpec(
        "vision",
        "DetrForObjectDetection",
        {
            "d_model": 32,
            "encoder_layers": 2,
            "decoder_layers": 2,
            # 8 heads and four backbone stages: DetrForSegmentation's mask head needs
            # d_model + heads divisible by 8 and three feature maps below the last
            "encoder_attention_heads": 8,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 37,
            "decoder_ffn_dim": 37,
            "num_queries": 10,
            "use_timm_backbone": False,
            "use_pretrained_backbone": False,
            "backbone_config": {
                "model_type": "resnet",
                **_RESNET,
                "hidden_sizes": [8, 8, 16, 16],
                "depths": [1, 1, 1, 1],
                "out_features": ["stage1", "stage2", "stage3", "stage4"],
            },
        },
        image_processor=_image_processor(
            "DetrImageProcessor", size={"shortest_edge": 32, "longest_edge": 64}
        ),
    ),
    # ---- vision-text ---------------------------------------------------------------------
    "clip": ArchitectureSpec(
        "multimodal",
        "CLIPModel",
        {
            "projection_dim": 32,  # repeated in the sub-configs for CLIP*ModelWithProjection
            "text_config": _BERT_LIKE | {"max_position_embeddings": 64, "projection_dim": 32},
            "vision_config": _VIT | {"projection_dim": 32},
        },
        _clip_tokenizer,
        {
            "bos_token_id": "<|startoftext|>",
            "eos_token_id": "<|endoftext|>",
            "pad_token_id": "<|endoftext|>",
        },
        text_config="text_config",
        image_processor=_image_processor(
            "CLIPImageProcessor", size={"shortest_edge": 32}, crop_size=_SQUARE
        ),
        processor="CLIPProcessor",
    ),
    "siglip": ArchitectureSpec(
        "multimodal",
        "SiglipModel",
        {"text_config": _BERT_LIKE | {"max_position_embeddings": 64}, "vision_config": _VIT},
        _siglip_tokenizer,
        {"pad_token_id": "</s>", "eos_token_id": "</s>"},
        text_config="text_config",
        image_processor=_image_processor("SiglipImageProcessor", size=_SQUARE),
        processor="SiglipProcessor",
    ),
    # ---- speech --------------------------------------------------------------------------
    "whisper": ArchitectureSpec(
        "multimodal",
        "WhisperForConditionalGeneration",
        {
            "d_model": 32,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 37,
            "decoder_ffn_dim": 37,
            "num_mel_bins": 80,
            "max_source_positions": 50,
            "max_target_positions": 64,  # = tokenizer.model_max_length
            "suppress_tokens": [],
            "begin_suppress_tokens": [],
        },
        _whisper_tokenizer,
        {
            "pad_token_id": "<|endoftext|>",
            "bos_token_id": "<|endoftext|>",
            "eos_token_id": "<|endoftext|>",
            "decoder_start_token_id": "<|startoftranscript|>",
        },
        feature_extractor=_whisper_feature_extractor,
        processor="WhisperProcessor",
    ),
    "wav2vec2": ArchitectureSpec(
        "multimodal",
        "Wav2Vec2ForCTC",
        {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 37,
            "conv_dim": [16, 16, 16],
            "conv_stride": [5, 4, 4],
            "conv_kernel": [10, 8, 8],
            "num_conv_pos_embeddings": 16,
            "num_conv_pos_embedding_groups": 2,
            "ctc_loss_reduction": "mean",
            "mask_time_length": 2,
        },
        _ctc_tokenizer,
        {"pad_token_id": "<pad>", "bos_token_id": "<s>", "eos_token_id": "</s>"},
        feature_extractor=_wav2vec2_feature_extractor,
        processor="Wav2Vec2Processor",
    ),
    # ---- image-to-text -------------------------------------------------------------------
    "blip": ArchitectureSpec(
        "multimodal",
        "BlipForConditionalGeneration",
        {
            "projection_dim": 32,
            "image_text_hidden_size": 32,
            "text_config": _BERT_LIKE,
            "vision_config": _VIT,
        },
        partial(_wordpiece_tokenizer, bos_token="[DEC]"),
        {
            "pad_token_id": "[PAD]",
            "bos_token_id": "[DEC]",
            "eos_token_id": "[SEP]",
            "sep_token_id": "[SEP]",
        },
        text_config="text_config",
        image_processor=_image_processor("BlipImageProcessor", size=_SQUARE),
        processor="BlipProcessor",
    ),
}


def _owlvit_tokenizer(scratch: Path) -> Tok:
    """CLIPTokenizer whose "<|startoftext|>" is not id 0: OWL-ViT reads a query whose first id is
    0 as padding (``query_mask = input_ids[..., 0] > 0``) and masks its logits."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = ["<|unused|>", "<|startoftext|>", "<|endoftext|>"]
    specials += [f"{char}</w>" for char in alphabet]  # fixed ids, as in _clip_tokenizer
    vocab, merges = _train_bpe(
        [*WORDS, *CHARACTERS],
        specials=specials,
        alphabet=alphabet,
        pre_tokenizer=pre_tokenizers.ByteLevel(add_prefix_space=False),
        end_of_word_suffix="</w>",
    )
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)


def _vits_tokenizer(scratch: Path) -> Tok:
    """VitsTokenizer over characters (no phonemizer), blanks between them as MMS-TTS has."""
    tokens = ["<pad>", "<unk>", " ", *LETTERS, *DIGITS, ",", ".", "'"]
    vocab_file = scratch / "vits_vocab.json"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    return transformers.VitsTokenizer(vocab_file=str(vocab_file), phonemize=False, add_blank=True)


# ---- dense vision and open-vocabulary detection (depth, segmentation, zero-shot boxes) ----
_DPT = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "backbone_out_indices": [0, 1, 2, 3],
    "neck_hidden_sizes": [8, 16, 32, 32],
    "fusion_hidden_size": 16,
    "head_in_index": -1,
    "auxiliary_loss_weight": 0.4,
}
ARCHITECTURES.update(
    {
        "dpt": ArchitectureSpec(
            "vision",
            "DPTModel",  # the base: its depth and segmentation heads share key names
            _DPT,
            image_processor=_image_processor(
                "DPTImageProcessor", size=_SQUARE, keep_aspect_ratio=False, ensure_multiple_of=1
            ),
        ),
        "owlvit": ArchitectureSpec(
            "multimodal",
            "OwlViTForObjectDetection",
            {
                "projection_dim": 32,
                "text_config": _BERT_LIKE | {"max_position_embeddings": 16},
                "vision_config": _VIT,
            },
            _owlvit_tokenizer,
            {
                "bos_token_id": "<|startoftext|>",
                "eos_token_id": "<|endoftext|>",
                "pad_token_id": "<|endoftext|>",
            },
            text_config="text_config",
            image_processor=_image_processor(
                "OwlViTImageProcessor", size=_SQUARE, crop_size=_SQUARE
            ),
            processor="OwlViTProcessor",
        ),
        # ---- text to speech ----------------------------------------------------------------
        "vits": ArchitectureSpec(
            "encoder",
            "VitsModel",
            {
                "hidden_size": 16,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "ffn_dim": 32,
                "window_size": 4,
                "flow_size": 16,
                "spectrogram_bins": 8,
                "posterior_encoder_num_wavenet_layers": 2,
                "depth_separable_num_layers": 2,
                "duration_predictor_num_flows": 2,
                "duration_predictor_filter_channels": 16,
                "prior_encoder_num_flows": 2,
                "upsample_initial_channel": 16,
                "upsample_rates": [8, 2],
                "upsample_kernel_sizes": [16, 4],
                "resblock_kernel_sizes": [3, 7],
                "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
                "sampling_rate": 16000,
            },
            _vits_tokenizer,
            {"pad_token_id": "<pad>"},
        ),
    }
)


def _llava_tokenizer(scratch: Path) -> Tok:
    """The llama tokenizer with ``<image>`` as a special token (never split: the processor
    repeats it once per image patch)."""
    from tokenizers import AddedToken

    tokenizer = _llama_tokenizer(scratch)
    tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False)])
    return tokenizer


#: A chat template for vision-language chat: content is a list of parts, an image part stands
#: where the image's tokens go (role names are real words, as in `CHAT_TEMPLATE`).
VLM_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
)
ARCHITECTURES.update(
    {
        # ---- vision-language chat (image-text-to-text) -------------------------------------
        "llava": ArchitectureSpec(
            "multimodal",
            "LlavaForConditionalGeneration",
            {
                "text_config": {"model_type": "llama", **_DECODER},
                "vision_config": {"model_type": "clip_vision_model", **_VIT},
                "image_seq_length": 16,  # (32 / 8) ** 2 patches, CLS dropped ("default")
                "vision_feature_layer": -1,
            },
            _llava_tokenizer,
            {**_LLAMA_IDS, "image_token_index": "<image>"},
            text_config="text_config",
            image_processor=_image_processor(
                "CLIPImageProcessor", size={"shortest_edge": 32}, crop_size=_SQUARE
            ),
            processor="LlavaProcessor",
            processor_options={
                "patch_size": 8,
                "vision_feature_select_strategy": "default",
                "num_additional_image_tokens": 1,  # CLIP's CLS token, dropped by "default"
                "chat_template": VLM_CHAT_TEMPLATE,
            },
        ),
    }
)


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------


def _labels(num_labels: int) -> dict[int, str]:
    """id2label with letter names (LABEL_A, LABEL_B, ...) so label mapping is visible in tests."""
    return {i: f"LABEL_{chr(ord('A') + i)}" for i in range(num_labels)}


def _whisper_generation_config(tokenizer: Tok, config: Any) -> GenerationConfig:
    """What ``WhisperForConditionalGeneration.generate`` reads from generation_config.json."""
    ids = tokenizer.convert_tokens_to_ids
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        is_multilingual=True,
        lang_to_id={f"<|{lang}|>": ids(f"<|{lang}|>") for lang in WHISPER_LANGUAGES},
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        suppress_tokens=[],
        begin_suppress_tokens=[config.eos_token_id],
        return_timestamps=False,
    )


def build_checkpoint(model_type: str, directory: str | Path, *, num_labels: int = 3) -> Path:
    """Write a tiny random checkpoint of ``model_type`` into ``directory`` and return it."""
    spec = ARCHITECTURES[model_type]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = spec.tokenizer(Path(scratch)) if spec.tokenizer else None
    if spec.kind == "decoder" and tokenizer is not None:
        tokenizer.chat_template = CHAT_TEMPLATE

    # Config: small sizes + labels + vocab size / special ids taken from the tokenizer.
    overrides: dict[str, Any] = json.loads(json.dumps(spec.config))  # deep copy
    text_overrides = overrides.setdefault(spec.text_config, {}) if spec.text_config else overrides
    if tokenizer is not None:
        text_overrides["vocab_size"] = len(tokenizer)
        for key, token in spec.token_ids.items():
            if spec.text_config and key.startswith("image_token"):  # the VLM's, not its LM's
                overrides[key] = tokenizer.convert_tokens_to_ids(token)
                continue
            text_overrides[key] = tokenizer.convert_tokens_to_ids(token)
            if spec.text_config and key in ("pad_token_id", "bos_token_id", "eos_token_id"):
                overrides[key] = text_overrides[key]
    if model_type == "marian":  # shared source/target vocabulary
        overrides["decoder_vocab_size"] = overrides["vocab_size"]
    id2label = _labels(num_labels)
    config = transformers.AutoConfig.for_model(
        model_type,
        architectures=[spec.architecture],
        id2label=id2label,
        label2id={label: i for i, label in id2label.items()},
        **overrides,
    )

    # Weights: deterministic, without touching the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = getattr(transformers, spec.architecture)(config)
    model.save_pretrained(directory)
    if model_type == "whisper":  # generate() needs language/task/timestamp token ids
        _whisper_generation_config(tokenizer, config).save_pretrained(directory)

    # Preprocessing files.
    image_processor = spec.image_processor() if spec.image_processor else None
    feature_extractor = spec.feature_extractor() if spec.feature_extractor else None
    if spec.processor:
        sub = image_processor if image_processor is not None else feature_extractor
        processor_cls = getattr(transformers, spec.processor)
        processor_cls(sub, tokenizer, **spec.processor_options).save_pretrained(directory)
    else:
        for part in (tokenizer, image_processor, feature_extractor):
            if part is not None:
                part.save_pretrained(directory)
    return directory


# --------------------------------------------------------------------------------------------
# Self-check: python -m hfskills.generator.sweep.recipes
# --------------------------------------------------------------------------------------------


def _smoke_test(model_type: str, directory: Path) -> str:
    """Load everything back through the Auto classes and run the model once."""
    spec = ARCHITECTURES[model_type]
    config = transformers.AutoConfig.from_pretrained(directory)
    model = getattr(transformers, config.architectures[0]).from_pretrained(directory).eval()
    sentence = "hello world, the capital of france is paris"
    with torch.no_grad():
        if spec.kind in ("encoder", "decoder", "seq2seq"):
            tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
            inputs = tokenizer([sentence, "hello"], return_tensors="pt", padding=True)
            if model.can_generate():
                inputs.pop("token_type_ids", None)
                out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
                return f"{type(tokenizer).__name__} generate{tuple(out.shape)}"
            return f"{type(tokenizer).__name__} logits{tuple(model(**inputs).logits.shape)}"
        if spec.kind == "vision":
            processor = transformers.AutoImageProcessor.from_pretrained(directory)
            inputs = processor(tiny_image(), return_tensors="pt")
            out = model(**inputs)
            if model_type == "detr":
                processor.post_process_object_detection(out, threshold=0.0, target_sizes=[(48, 48)])
                return f"{type(processor).__name__} boxes{tuple(out.pred_boxes.shape)}"
            return f"{type(processor).__name__} logits{tuple(out.logits.shape)}"
        processor = transformers.AutoProcessor.from_pretrained(directory)
        name = f"{type(processor).__name__}+{type(processor.tokenizer).__name__}"
        if model_type in ("clip", "siglip"):
            inputs = processor(
                text=[sentence, "a cat"], images=tiny_image(), return_tensors="pt", padding=True
            )
            return f"{name} logits{tuple(model(**inputs).logits_per_image.shape)}"
        if model_type == "blip":
            inputs = processor(images=tiny_image(), return_tensors="pt")
            out = model.generate(pixel_values=inputs.pixel_values, max_new_tokens=5)
            return f"{name} generate{tuple(out.shape)} {processor.batch_decode(out)[0]!r}"
        if model_type == "llava":
            parts = [{"type": "image"}, {"type": "text", "text": "hi"}]
            chat = [{"role": "user", "content": parts}]
            text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
            inputs = processor(images=[tiny_image()], text=[text], return_tensors="pt")
            out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
            return f"{name} generate{tuple(out.shape)}"
        inputs = processor(tiny_audio(), sampling_rate=16000, return_tensors="pt")
        if model_type == "whisper":
            out = model.generate(input_features=inputs.input_features, max_new_tokens=5)
            text = processor.batch_decode(out, skip_special_tokens=True)
            return f"{name} generate{tuple(out.shape)} {text[0]!r}"
        logits = model(**inputs).logits
        text = processor.batch_decode(logits.argmax(-1))
        return f"{name} logits{tuple(logits.shape)} {text[0][:20]!r}"


def _main() -> None:
    import time
    import traceback

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    failures = 0
    with tempfile.TemporaryDirectory() as root:
        for model_type in ARCHITECTURES:
            directory = Path(root) / model_type
            start = time.perf_counter()
            try:
                build_checkpoint(model_type, directory)
                seconds = time.perf_counter() - start
                size = sum(f.stat().st_size for f in directory.iterdir()) / 1024
                detail = _smoke_test(model_type, directory)
                print(f"OK   {model_type:12s} {seconds:5.2f}s {size:7.0f} KiB  {detail}")
            except Exception:  # report every architecture, then fail at the end
                failures += 1
                print(f"FAIL {model_type:12s}\n{traceback.format_exc()}")
    if failures:
        raise SystemExit(f"{failures} architecture(s) failed")


if __name__ == "__main__":
    _main()
