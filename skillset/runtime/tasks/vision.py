"""Image tasks, once for every architecture: classification, embeddings (vision-text towers'
projection, or a vision backbone's pooled output), object detection, and zero-shot
classification and detection against caller-given labels.

Images arrive as PIL images, bytes, base64 strings or (when the endpoint allows) paths, decoded
by `media.images`. Architectures differ only by declared `Task.variant`: zero-shot scores use
``softmax`` over the labels (CLIP-like) or a per-pair ``sigmoid`` with texts padded to
max_length (SigLIP), as transformers' zero-shot pipeline does and as each was trained; image
embeddings are the joint model's ``get_image_features`` (``default``) or a backbone's
``pooler_output`` (``pooled``: what the image-feature-extraction pipeline returns with
``pool=True``).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import labels, media, pooling, staged, torch_backend
from ..endpoint import Endpoint, Handler
from ..skill import Task
from ..staged import Prepared, Staged

#: Zero-shot variants: (score activation, text padding) per architecture kind.
ZERO_SHOT = {"softmax": ("softmax", "longest"), "sigmoid": ("sigmoid", "max_length")}


def _prepare_images(endpoint: Endpoint) -> Any:
    image_processor = endpoint.processor

    def prepare(inputs: list[Any]) -> list[Prepared]:
        images = media.images(inputs, allow_paths=endpoint.allow_local_paths)
        return [Prepared(image_processor(images=[image], return_tensors="pt")) for image in images]

    return prepare


def image_classification(endpoint: Endpoint, task: Task) -> Handler:
    """Classify images (PIL images, bytes, base64 or paths): `[{label, score}, ...]` per
    input, highest score first. Params: `top_k` (default: all), `function_to_apply`.
    """
    model = endpoint.model

    def forward(batch: list[Prepared]) -> Any:
        features = torch_backend.place(staged.concat(batch), endpoint)
        with torch.inference_mode():
            return model(**features).logits

    return Staged(_prepare_images(endpoint), forward, labels.finish_ranked(endpoint.config))


def image_embedding(endpoint: Endpoint, task: Task) -> Handler:
    """Embed images: one `list[float]` per image, in the shared image-text space (``default``,
    vision-text models) or a vision backbone's pooled output (``pooled``, flattened: ResNet's
    pooler is `[C, 1, 1]`). Params: `normalize` (bool, default false: the raw vector).
    """
    model = endpoint.model

    def forward(batch: list[Prepared]) -> Any:
        features = torch_backend.place(staged.concat(batch), endpoint)
        with torch.inference_mode():
            if task.variant == "pooled":
                return model(**features).pooler_output.flatten(1)
            return pooling.features(model.get_image_features(**features))

    return Staged(_prepare_images(endpoint), forward, pooling.finish_vectors)


def object_detection(endpoint: Endpoint, task: Task) -> Handler:
    """Detect objects: per image a list of `{label, score, box: {xmin, ymin, xmax, ymax}}`
    with boxes in the input image's pixels, decoded by the image processor's own
    `post_process_object_detection`. Params: `threshold` (default 0.5).
    """
    model, image_processor = endpoint.model, endpoint.processor

    def handler(inputs: list[Any], *, threshold: float = 0.5) -> list[list[dict[str, Any]]]:
        threshold = labels.threshold_param(threshold)
        images = media.images(inputs, allow_paths=endpoint.allow_local_paths)
        batch = torch_backend.place(image_processor(images=images, return_tensors="pt"), endpoint)
        with torch.inference_mode():
            outputs = model(**batch)
        sizes = [(image.height, image.width) for image in images]
        detections = image_processor.post_process_object_detection(
            outputs, threshold=threshold, target_sizes=sizes
        )
        return [labels.boxes(found, endpoint.config) for found in detections]

    return handler


def zero_shot_padding(variant: str) -> str:
    """How the zero-shot variant pads its label texts (what the export's examples use too)."""
    return ZERO_SHOT[variant][1]


def zero_shot_image_classification(endpoint: Endpoint, task: Task) -> Handler:
    """Score images against caller-given labels: `[{label, score}, ...]` per image, highest
    first. Params: `candidate_labels` (required), `hypothesis_template` (default
    "This is a photo of {}."). Scores use the declared variant's activation (see `ZERO_SHOT`).
    """
    model, processor = endpoint.model, endpoint.processor
    activation, padding = ZERO_SHOT[task.variant]

    def handler(
        inputs: list[Any],
        *,
        candidate_labels: list[str],
        hypothesis_template: str = "This is a photo of {}.",
    ) -> list[list[dict[str, Any]]]:
        names = labels.candidate_labels(candidate_labels)
        prompts = labels.hypotheses(hypothesis_template, names)
        images = media.images(inputs, allow_paths=endpoint.allow_local_paths)
        batch = processor(text=prompts, images=images, padding=padding, return_tensors="pt")
        batch = torch_backend.place(torch_backend.accepted_inputs(model, batch), endpoint)
        with torch.inference_mode():
            logits = model(**batch).logits_per_image
        scores = labels.apply(logits, activation)
        return [
            sorted(
                ({"label": name, "score": float(s)} for name, s in zip(names, row, strict=True)),
                key=lambda r: -r["score"],
            )
            for row in scores.tolist()
        ]

    return handler


def zero_shot_object_detection(endpoint: Endpoint, task: Task) -> Handler:
    """Detect caller-named objects: per image a list of `{label, score, box: {xmin, ymin, xmax,
    ymax}}` in the input image's pixels, highest score first. As transformers'
    zero-shot-object-detection pipeline: one forward pass per (image, label), each decoded by
    the image processor's `post_process_object_detection`, so a box may appear once per label.
    Params: `candidate_labels` (required), `threshold` (default 0.1), `top_k` (default: all).
    """
    model, processor = endpoint.model, endpoint.processor
    tokenizer, image_processor = processor.tokenizer, processor.image_processor

    def handler(
        inputs: list[Any],
        *,
        candidate_labels: list[str],
        threshold: float = 0.1,
        top_k: int | None = None,
    ) -> list[list[dict[str, Any]]]:
        names = labels.candidate_labels(candidate_labels)
        threshold = labels.threshold_param(threshold)
        if top_k is not None:
            top_k = labels.top_k_param(top_k, 1 << 30)
        images = media.images(inputs, allow_paths=endpoint.allow_local_paths)
        results = []
        for image in images:
            pixels = image_processor(image, return_tensors="pt")
            size = torch.tensor([[image.height, image.width]], dtype=torch.int32)
            size = size.to(endpoint.device)
            found = []
            for name in names:
                batch = {**tokenizer(name, return_tensors="pt"), **pixels}
                batch = torch_backend.place(torch_backend.accepted_inputs(model, batch), endpoint)
                with torch.inference_mode():
                    outputs = model(**batch)
                decoded = image_processor.post_process_object_detection(
                    outputs=outputs, threshold=threshold, target_sizes=size
                )[0]
                for index in decoded["scores"].nonzero():
                    x0, y0, x1, y1 = decoded["boxes"][index][0].int().tolist()
                    found.append(
                        {
                            "score": decoded["scores"][index].item(),
                            "label": name,
                            "box": {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1},
                        }
                    )
            found.sort(key=lambda r: r["score"], reverse=True)
            results.append(found[:top_k] if top_k else found)
        return results

    return handler
