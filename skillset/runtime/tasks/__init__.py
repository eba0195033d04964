"""Every task's one implementation, chosen by a table: task name -> handler factory.

A factory takes the loaded `Endpoint` and the skill's `Task` declaration (its variant picks
between implementations where architectures really differ) and returns the handler:
``handler(inputs: list, **params) -> list`` with one result per input, often a `Staged`
(prepare -> forward -> finish). Modules, one per task family: `text` (encoders), `generate`
(decoders, encoder-decoders, captioning), `vision_chat` (captions and vision-language chat),
`vision`, `dense` (depth, segmentation), `audio`,
`speech_out` (text to audio).

`unsupported_on` says which (hardware, task) pairs cannot work and why; the generator writes
its answers into each skill's ``unsupported`` table, so the host never tries them.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import export, generation
from ..endpoint import Endpoint, Handler
from ..skill import Task
from . import audio, dense, generate, speech_out, text, vision, vision_chat

Factory = Callable[[Endpoint, Task], Handler]

#: task name -> (factory, the variants it implements)
FACTORIES: dict[str, tuple[Factory, tuple[str, ...]]] = {
    "text_embedding": (text.text_embedding, ("default", "joint", "joint_padded", "unpadded")),
    "fill_mask": (text.fill_mask, ("default", "unpadded")),
    "text_classification": (text.text_classification, ("default", "unpadded")),
    "token_classification": (text.token_classification, ("default", "unpadded")),
    "question_answering": (text.question_answering, ("default", "unpadded")),
    "text_generation": (generate.text_generation, ("default",)),
    "text2text_generation": (generate.text2text_generation, ("default",)),
    "image_to_text": (vision_chat.image_to_text, ("default",)),  # captions, and VLM chat
    "image_classification": (vision.image_classification, ("default",)),
    "image_embedding": (vision.image_embedding, ("default", "pooled")),
    "object_detection": (vision.object_detection, ("default",)),
    "zero_shot_object_detection": (vision.zero_shot_object_detection, ("default",)),
    "depth_estimation": (dense.depth_estimation, ("default",)),
    "image_segmentation": (dense.image_segmentation, dense.SUBTASKS),
    "zero_shot_image_classification": (
        vision.zero_shot_image_classification,
        tuple(vision.ZERO_SHOT),
    ),
    "automatic_speech_recognition": (audio.automatic_speech_recognition, ("ctc", "seq2seq")),
    "audio_classification": (audio.audio_classification, ("default",)),
    "text_to_audio": (speech_out.text_to_audio, ("default",)),
}

#: Tasks a graph export (OpenVINO IR, ONNX) covers: one forward pass whose outputs it keeps, or
#: a features method (what export.py defines, so the two cannot drift apart).
EXPORTABLE = frozenset(export.TASK_OUTPUTS) | frozenset(export.FEATURE_METHODS)
#: Variants of exportable tasks that the export does not cover (it exports `get_image_features`).
NOT_EXPORTED = {("image_embedding", "pooled")}


def build(endpoint: Endpoint, task: Task) -> Handler:
    """The handler for ``endpoint`` (loaded for ``endpoint.task``) as ``task`` declares it."""
    factory, variants = FACTORIES[endpoint.task]
    if task.variant not in variants:
        raise ValueError(f"{endpoint.task} has no variant {task.variant!r}; it has {variants}")
    return factory(endpoint, task)


def generates(name: str, task: Task) -> bool:
    """Whether the task's handler calls ``model.generate``."""
    return name in generation.GENERATION_TASKS or task.variant == "seq2seq"


def unsupported_on(hardware: str, name: str, task: Task, family: str) -> str | None:
    """Why ``name`` cannot run on ``hardware`` for a skill of ``family`` (None: it can)."""
    if hardware not in ("openvino", "qnn"):
        return None  # torch runs every task
    if hardware == "openvino" and name == "text_generation" and family == "decoder":
        return None  # OpenVINO GenAI's continuous batching
    return graph_export_gap(name, task)


def graph_export_gap(name: str, task: Task) -> str | None:
    """Why no graph export (OpenVINO IR, ONNX) covers ``name`` as ``task`` declares it."""
    if generates(name, task):
        return "generation has no graph export"  # exports cover one forward pass; use torch
    if name not in EXPORTABLE or (name, task.variant) in NOT_EXPORTED:
        return "this task has no graph export"
    return None
