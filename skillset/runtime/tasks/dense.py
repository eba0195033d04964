"""Dense image tasks, once for every architecture: depth estimation and image segmentation.

Each answer is a map at the input image's size, decoded by the image processor's own
post-processing exactly as transformers' depth-estimation and image-segmentation pipelines do
it; images in the answer (the normalised depth map, each segment's mask) are PNG files,
base64-encoded, where the pipelines return PIL images. Both handlers are `Staged`: prepare
processes each image alone, forward runs the model once per image (processors may resize
images of different shapes to different sizes, so nothing is padded together), finish
post-processes. Segmentation's variant is the subtask its head answers by default
(``panoptic`` for universal heads, ``instance``, ``semantic``), as the pipeline's `subtask`.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import torch

from .. import labels, media, torch_backend
from ..endpoint import Endpoint, Handler
from ..errors import InvalidInput
from ..skill import Task
from ..staged import Prepared, Staged

#: The segmentation subtasks, as transformers' image-segmentation pipeline names them.
SUBTASKS = ("panoptic", "instance", "semantic")


def png_base64(pixels: np.ndarray) -> str:
    """A uint8 greyscale array as a base64 PNG (what a pipeline's PIL image becomes in JSON)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _prepare_each(endpoint: Endpoint) -> Any:
    image_processor = endpoint.processor

    def prepare(inputs: list[Any]) -> list[Prepared]:
        images = media.images(inputs, allow_paths=endpoint.allow_local_paths)
        return [
            Prepared(
                image_processor(images=[image], return_tensors="pt"),
                state=(image.height, image.width),
            )
            for image in images
        ]

    return prepare


def _forward_each(endpoint: Endpoint) -> Any:
    model = endpoint.model

    def forward(batch: list[Prepared]) -> list[Any]:
        outputs = []
        for item in batch:
            features = torch_backend.place(
                torch_backend.accepted_inputs(model, dict(item.features)), endpoint
            )
            with torch.inference_mode():
                outputs.append(model(**features))
        return outputs

    return forward


def depth_estimation(endpoint: Endpoint, task: Task) -> Handler:
    """Estimate depth: per image `{predicted_depth, depth}`. `predicted_depth` is the model's
    map post-processed to the input's size (`post_process_depth_estimation`), as rows of
    floats; `depth` is that map scaled to 0-255 (min to max) as a greyscale PNG, base64.
    """
    image_processor = endpoint.processor

    def finish(batch: list[Prepared], outputs: list[Any]) -> list[dict[str, Any]]:
        results = []
        for item, output in zip(batch, outputs, strict=True):
            # a source size for ZoeDepth, a target size for the others (as the pipeline passes)
            post = image_processor.post_process_depth_estimation(output, [item.state])[0]
            depth = post["predicted_depth"].float().cpu()
            span = float(depth.max() - depth.min())
            scaled = (depth - depth.min()) / span if span > 0 else torch.zeros_like(depth)
            results.append(
                {
                    "predicted_depth": depth.tolist(),
                    "depth": png_base64((scaled.numpy() * 255).astype("uint8")),
                }
            )
        return results

    return Staged(_prepare_each(endpoint), _forward_each(endpoint), finish)


def _subtask(value: Any, default: str) -> str:
    chosen = default if value is None else value
    if chosen not in SUBTASKS:
        raise InvalidInput(f"subtask must be one of {list(SUBTASKS)}", param="subtask")
    return chosen


def _fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{name} must be a number in [0, 1]", param=name)
    return float(value)


def image_segmentation(endpoint: Endpoint, task: Task) -> Handler:
    """Segment images: per image `[{label, score, mask}]`, `mask` a greyscale PNG (base64; 255
    inside the segment) at the input's size. `panoptic`/`instance`: one entry per segment with
    its score; `semantic`: one entry per class present, `score` None. Params: `subtask`
    (default: the declared variant), `threshold` (0.9), `mask_threshold` (0.5),
    `overlap_mask_area_threshold` (0.5), as transformers' image-segmentation pipeline.
    """
    image_processor, config = endpoint.processor, endpoint.config

    def segment(
        item: Prepared,
        output: Any,
        subtask: str,
        thresholds: dict[str, float],
    ) -> list[dict[str, Any]]:
        method = None
        if subtask == "panoptic" and hasattr(image_processor, "post_process_panoptic_segmentation"):
            method = image_processor.post_process_panoptic_segmentation
        elif subtask == "instance" and hasattr(
            image_processor, "post_process_instance_segmentation"
        ):
            method = image_processor.post_process_instance_segmentation
        if method is not None:
            found = method(output, target_sizes=[item.state], **thresholds)[0]
            segmentation = found["segmentation"].cpu()
            return [
                {
                    "score": segment["score"],
                    "label": labels.label_name(config, int(segment["label_id"])),
                    "mask": png_base64(((segmentation == segment["id"]) * 255).numpy()),
                }
                for segment in found["segments_info"]
            ]
        if subtask != "semantic" or not hasattr(
            image_processor, "post_process_semantic_segmentation"
        ):
            raise InvalidInput(f"this model has no {subtask} segmentation", param="subtask")
        segmentation = image_processor.post_process_semantic_segmentation(
            output, target_sizes=[item.state]
        )[0]
        segmentation = segmentation.cpu().numpy()
        return [
            {
                "score": None,
                "label": labels.label_name(config, int(label)),
                "mask": png_base64((segmentation == label) * 255),
            }
            for label in np.unique(segmentation)
        ]

    def finish(
        batch: list[Prepared],
        outputs: list[Any],
        *,
        subtask: str | None = None,
        threshold: float = 0.9,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.5,
    ) -> list[list[dict[str, Any]]]:
        chosen = _subtask(subtask, task.variant)
        thresholds = {
            "threshold": _fraction(threshold, "threshold"),
            "mask_threshold": _fraction(mask_threshold, "mask_threshold"),
            "overlap_mask_area_threshold": _fraction(
                overlap_mask_area_threshold, "overlap_mask_area_threshold"
            ),
        }
        return [
            segment(item, output, chosen, thresholds)
            for item, output in zip(batch, outputs, strict=True)
        ]

    return Staged(_prepare_each(endpoint), _forward_each(endpoint), finish)
