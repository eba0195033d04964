"""Classification comes from transformers' auto mappings; unknown types fail clearly."""

from __future__ import annotations

import pytest
from transformers.models.auto import modeling_auto

from hfskills.generator.taxonomy import FAMILIES, TASKS, classify
from hfskills.skillset.runtime.errors import GeneratorError

EXPECTED_FAMILIES = {
    "bert": "encoder",
    "roberta": "encoder",
    "distilbert": "encoder",
    "xlm-roberta": "encoder",
    "deberta-v2": "encoder",
    "electra": "encoder",
    "albert": "encoder",
    "mpnet": "encoder",
    "gpt2": "decoder",
    "llama": "decoder",
    "mistral": "decoder",
    "qwen2": "decoder",
    "phi3": "decoder",
    "gemma": "decoder",
    "gpt_neox": "decoder",
    "opt": "decoder",
    "t5": "encoder-decoder",
    "bart": "encoder-decoder",
    "marian": "encoder-decoder",
    "vit": "vision",
    "convnext": "vision",
    "resnet": "vision",
    "swin": "vision",
    "detr": "vision",
    "clip": "vision-text",
    "siglip": "vision-text",
    "whisper": "speech",
    "wav2vec2": "speech",
    "blip": "multimodal-generation",
}


@pytest.mark.parametrize(("model_type", "family"), sorted(EXPECTED_FAMILIES.items()))
def test_family(model_type: str, family: str) -> None:
    assert classify(model_type).family == family


def test_task_classes_come_from_the_mappings() -> None:
    for model_type in EXPECTED_FAMILIES:
        result = classify(model_type)
        assert result.tasks, model_type
        for plan in result.tasks:
            names = modeling_auto.__dict__[plan.source]
            assert names[model_type] == plan.model_class or plan.model_class in names[model_type]


def test_known_tasks_per_model() -> None:
    assert [p.name for p in classify("bert").tasks] == [
        "text_embedding",
        "fill_mask",
        "text_classification",
        "token_classification",
        "question_answering",
    ]
    assert [p.name for p in classify("distilbert").tasks][:2] == ["text_embedding", "fill_mask"]
    assert [p.name for p in classify("opt").tasks] == ["text_generation", "text_classification"]
    assert [p.name for p in classify("marian").tasks] == ["text2text_generation"]
    assert [p.name for p in classify("detr").tasks] == ["object_detection", "image_segmentation"]
    whisper = {p.name: p for p in classify("whisper").tasks}
    wav2vec2 = {p.name: p for p in classify("wav2vec2").tasks}
    assert whisper["automatic_speech_recognition"].variant == "speech_seq_2_seq"
    assert wav2vec2["automatic_speech_recognition"].variant == "ctc"
    assert wav2vec2["automatic_speech_recognition"].model_class == "Wav2Vec2ForCTC"


def test_processor_kinds_come_from_the_processor_mappings() -> None:
    assert classify("bert").processor_kinds == ("tokenizer",)
    assert classify("vit").processor_kinds == ("image_processor",)
    assert set(classify("clip").processor_kinds) == {"tokenizer", "image_processor", "processor"}
    assert "feature_extractor" in classify("whisper").processor_kinds


def test_every_family_task_is_a_known_task() -> None:
    for _, markers, served in FAMILIES:
        assert all(hasattr(modeling_auto, m) for m in markers)
        assert all(t in TASKS for t in served)
    for task in TASKS.values():
        assert all(hasattr(modeling_auto, m) for m in task.mappings), task.name


def test_unknown_model_type_is_a_clear_error() -> None:
    with pytest.raises(GeneratorError, match="CONFIG_MAPPING_NAMES"):
        classify("not-a-model")


def test_model_type_without_a_served_task_names_what_was_looked_at() -> None:
    with pytest.raises(GeneratorError) as err:
        classify("time_series_transformer")
    assert "MODEL_FOR_MASKED_LM_MAPPING_NAMES" in err.value.message
    assert "MODEL_MAPPING_NAMES" in err.value.message


def test_dense_vision_open_detection_backbones_and_speech_synthesis() -> None:
    """The tasks widened from transformers' heads: each type gets the heads it has, and only
    vision backbones whose base output is pooled embed images."""
    tasks = {t: [(p.name, p.model_class) for p in classify(t).tasks] for t in ("dpt", "owlvit")}
    assert tasks["dpt"] == [
        ("depth_estimation", "DPTForDepthEstimation"),
        ("image_segmentation", "DPTForSemanticSegmentation"),
    ]
    assert tasks["owlvit"] == [("zero_shot_object_detection", "OwlViTForObjectDetection")]
    assert {p.name: p.model_class for p in classify("vit").tasks}["image_embedding"] == "ViTModel"
    assert "image_embedding" not in {p.name for p in classify("segformer").tasks}  # no pooler
    assert "image_embedding" not in {p.name for p in classify("yolos").tasks}  # a detector
    assert [p.name for p in classify("dinov2").tasks] == ["image_classification", "image_embedding"]
    universal = classify("mask2former")
    assert (universal.family, universal.tasks[0].variant) == ("vision", "universal_segmentation")
    vits = classify("vits")
    assert (vits.family, [p.name for p in vits.tasks]) == ("speech-synthesis", ["text_to_audio"])
    assert classify("seamless_m4t").family == "speech"  # more specific families still win
