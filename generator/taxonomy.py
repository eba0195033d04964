"""Family and tasks of an architecture, read from transformers' own auto mappings.

Nothing here lists model types by hand. Each task names the transformers mapping whose keys
are the model types that have a head for it (``MODEL_FOR_MASKED_LM_MAPPING_NAMES`` ...); a
family is decided by which of those mappings a model type appears in. The two tables below
are the only hand-written policy: which tasks hfskills serves, and in which order families are
tried (most specific first: a speech model also has a causal-LM head, a vision-text model an
image-classification head).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass

from transformers.models.auto import (
    configuration_auto,
    feature_extraction_auto,
    image_processing_auto,
    modeling_auto,
    processing_auto,
    tokenization_auto,
)

from hfskills.skillset.runtime.errors import GeneratorError


@dataclass(frozen=True)
class Task:
    """A task hfskills serves: which mapping holds its heads and which processor it needs."""

    name: str
    mappings: tuple[str, ...]  # the first one holding the model type gives its class
    processor: str  # tokenizer | image_processor | feature_extractor | processor
    summary: str


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "text_embedding",
            ("MODEL_MAPPING_NAMES",),
            "tokenizer",
            "one vector per text (sentence-transformers pooling when configured)",
        ),
        Task(
            "fill_mask",
            ("MODEL_FOR_MASKED_LM_MAPPING_NAMES",),
            "tokenizer",
            "top-k tokens for the mask: [{score, token, token_str, sequence}]",
        ),
        Task(
            "text_classification",
            ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",),
            "tokenizer",
            "[{label, score}] sorted by score, labels from the checkpoint's id2label",
        ),
        Task(
            "token_classification",
            ("MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",),
            "tokenizer",
            "entities with character offsets: [{entity, score, word, start, end}]",
        ),
        Task(
            "question_answering",
            ("MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",),
            "tokenizer",
            "extractive answer span: {answer, score, start, end}",
        ),
        Task(
            "text_generation",
            ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",),
            "tokenizer",
            "{text, token_ids, finish_reason}; greedy or sampled, stop strings, streaming",
        ),
        Task(
            "text2text_generation",
            ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",),
            "tokenizer",
            "{text, token_ids, finish_reason} from an encoder-decoder",
        ),
        Task(
            "image_classification",
            ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",),
            "image_processor",
            "[{label, score}] sorted by score",
        ),
        Task(
            "object_detection",
            ("MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",),
            "image_processor",
            "[{label, score, box: {xmin, ymin, xmax, ymax}}] with boxes in pixels",
        ),
        Task(
            "zero_shot_image_classification",
            ("MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",),
            "processor",
            "[{label, score}] over caller-given candidate labels",
        ),
        Task(
            "image_embedding",
            (
                "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",
                "MODEL_FOR_IMAGE_MAPPING_NAMES",
            ),
            "image_processor",
            "one vector per image: the image-text projection, or a vision backbone's pooled output",
        ),
        Task(
            "zero_shot_object_detection",
            ("MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES",),
            "processor",
            "[{label, score, box: {xmin, ymin, xmax, ymax}}] for caller-given candidate labels",
        ),
        Task(
            "depth_estimation",
            ("MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES",),
            "image_processor",
            "{predicted_depth: [[float]] at the input's size, depth: PNG (base64)}",
        ),
        Task(
            "image_segmentation",
            (
                "MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES",
                "MODEL_FOR_INSTANCE_SEGMENTATION_MAPPING_NAMES",
                "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES",
            ),
            "image_processor",
            "[{label, score, mask: PNG (base64)}]: panoptic, instance or semantic segments",
        ),
        Task(
            "automatic_speech_recognition",
            ("MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES", "MODEL_FOR_CTC_MAPPING_NAMES"),
            "processor",
            "{text} transcribed by generation (seq2seq) or CTC decoding",
        ),
        Task(
            "audio_classification",
            ("MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",),
            "feature_extractor",
            "[{label, score}] sorted by score",
        ),
        Task(
            "image_to_text",
            ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",),
            "processor",
            "{text, token_ids, finish_reason}: a caption generated for the image",
        ),
        Task(
            "text_to_audio",
            ("MODEL_FOR_TEXT_TO_WAVEFORM_MAPPING_NAMES",),
            "tokenizer",
            "{audio: WAV (base64, float32), sampling_rate}: speech or music generated from text",
        ),
    )
}

#: Families, most specific first: (family, the mappings that identify it, tasks it serves).
FAMILIES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "speech",
        ("MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES", "MODEL_FOR_CTC_MAPPING_NAMES"),
        ("automatic_speech_recognition", "audio_classification"),
    ),
    ("audio", ("MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",), ("audio_classification",)),
    ("multimodal-generation", ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",), ("image_to_text",)),
    (
        "vision-text",
        ("MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",),
        ("zero_shot_image_classification", "image_embedding", "text_embedding"),
    ),
    (
        "vision",
        (
            "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
            "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",
            "MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES",
            "MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES",
            "MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES",
            "MODEL_FOR_INSTANCE_SEGMENTATION_MAPPING_NAMES",
            "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES",
            "MODEL_FOR_IMAGE_MAPPING_NAMES",  # plain vision backbones (embeddings)
        ),
        (
            "image_classification",
            "object_detection",
            "zero_shot_object_detection",
            "depth_estimation",
            "image_segmentation",
            "image_embedding",
        ),
    ),
    (
        "speech-synthesis",
        ("MODEL_FOR_TEXT_TO_WAVEFORM_MAPPING_NAMES",),
        ("text_to_audio",),
    ),
    (
        "encoder-decoder",
        ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",),
        ("text2text_generation", "text_classification"),
    ),
    (
        "encoder",
        ("MODEL_FOR_MASKED_LM_MAPPING_NAMES",),
        (
            "text_embedding",
            "fill_mask",
            "text_classification",
            "token_classification",
            "question_answering",
        ),
    ),
    ("decoder", ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",), ("text_generation", "text_classification")),
)

#: Processor kinds and the mapping that says a model type has one (for the classification report).
PROCESSOR_MAPPINGS = {
    "tokenizer": tokenization_auto.TOKENIZER_MAPPING_NAMES,
    "image_processor": image_processing_auto.IMAGE_PROCESSOR_MAPPING_NAMES,
    "feature_extractor": feature_extraction_auto.FEATURE_EXTRACTOR_MAPPING_NAMES,
    "processor": processing_auto.PROCESSOR_MAPPING_NAMES,
}


@dataclass(frozen=True)
class TaskPlan:
    """One task of a skill: the transformers class that loads it and its processor kind."""

    task: Task
    model_class: str
    source: str  # the mapping the class came from

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def variant(self) -> str:
        """Short name of the source mapping: "ctc", "speech_seq_2_seq", "model", ..."""
        return self.source.removeprefix("MODEL_FOR_").removesuffix("_MAPPING_NAMES").lower()


@dataclass(frozen=True)
class Classification:
    model_type: str
    family: str
    tasks: tuple[TaskPlan, ...]
    evidence: tuple[str, ...]  # the model mappings the model type was found in
    processor_kinds: tuple[str, ...]  # processor mappings that name it (tokenizer, ...)


def mapping(name: str) -> dict[str, str]:
    return getattr(modeling_auto, name)


def known_model_types() -> frozenset[str]:
    return frozenset(configuration_auto.CONFIG_MAPPING_NAMES)


def _class_name(value: str | tuple[str, ...]) -> str:
    return value if isinstance(value, str) else value[0]


#: Heads whose base model is no image embedder: detection queries and video clips always, dense
#: heads (depth, segmentation, open-vocabulary detection) unless the type also classifies images.
NOT_EMBEDDERS = (
    "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",
    "MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES",
)
DENSE_HEADS = (
    "MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES",
    "MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES",
    "MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES",
    "MODEL_FOR_INSTANCE_SEGMENTATION_MAPPING_NAMES",
    "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES",
)


def declares_pooler(class_name: str) -> bool:
    """Whether the transformers class's ``forward`` returns an output with ``pooler_output``
    (what the image-feature-extraction pipeline's ``pool=True`` returns) and the class builds
    its pooler by default (IJEPA's and data2vec-vision's ``add_pooling_layer`` is False)."""
    import transformers
    from transformers.utils import ModelOutput

    cls = getattr(transformers, class_name, None)
    if cls is None:
        return False
    pooling = inspect.signature(cls.__init__).parameters.get("add_pooling_layer")
    if pooling is not None and pooling.default is False:  # built without its pooler by default
        return False
    try:
        returned = typing.get_type_hints(cls.forward).get("return")
    except Exception:  # unresolvable annotations: read the raw one
        returned = inspect.signature(cls.forward).return_annotation
    pending, seen = [returned], []
    while pending:
        hint = pending.pop()
        if isinstance(hint, type) and issubclass(hint, ModelOutput):
            seen.append(hint)
        pending.extend(typing.get_args(hint))
    return any("pooler_output" in {f.name for f in dataclasses.fields(o)} for o in seen)


def embeds_images(found: tuple[str, ...], class_name: str) -> bool:
    """A vision backbone whose pooled output is a sensible image embedding (see NOT_EMBEDDERS)."""
    if any(m in found for m in NOT_EMBEDDERS):
        return False
    if "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES" not in found and any(
        m in found for m in DENSE_HEADS
    ):
        return False
    return declares_pooler(class_name)


def classify(model_type: str) -> Classification:
    """Family and served tasks of ``model_type``, or `GeneratorError` saying what was looked at."""
    if model_type not in known_model_types():
        raise GeneratorError(
            f"unknown model_type {model_type!r}: not in transformers' CONFIG_MAPPING_NAMES"
        )
    found = tuple(
        name
        for name in dir(modeling_auto)
        if name.endswith("_MAPPING_NAMES")
        and name.startswith("MODEL")
        and model_type in mapping(name)
    )
    for family, markers, served in FAMILIES:
        if not any(marker in found for marker in markers):
            continue
        plans = []
        for task_name in served:
            task = TASKS[task_name]
            source = next((m for m in task.mappings if model_type in mapping(m)), None)
            if source is None:
                continue
            if family == "vision-text":  # one joint model: get_text/image_features, logits
                source = "MODEL_MAPPING_NAMES"
            elif task_name == "image_embedding" and not embeds_images(
                found, _class_name(mapping(source)[model_type])
            ):
                continue
            plans.append(TaskPlan(task, _class_name(mapping(source)[model_type]), source))
        if plans:
            kinds = tuple(k for k, names in PROCESSOR_MAPPINGS.items() if model_type in names)
            return Classification(model_type, family, tuple(plans), found, kinds)
    looked_at = sorted({m for _, markers, _ in FAMILIES for m in markers})
    raise GeneratorError(
        f"model_type {model_type!r} maps to no task hfskills serves: it is in "
        f"{list(found) or 'none'} of transformers' auto mappings; looked at {looked_at}"
    )
