"""Exporting a skill's torch model to a graph (OpenVINO IR, ONNX): the part both share.

A graph export replaces the one call a task's handler makes on ``model`` and nothing else, so
the generated handlers run unchanged on the exported graph (see graph_model.py):

- ``forward`` for every forward-only task, keeping just the outputs the handler reads
  (``TASK_OUTPUTS``: ``.logits``, ``.last_hidden_state``, ``.start_logits``/``.end_logits``,
  ``.logits_per_image``, ``.pred_boxes``...);
- ``get_text_features`` / ``get_image_features`` for the text_embedding / image_embedding tasks
  of vision-text skills (CLIP, SigLIP), returning the projected features.

Tasks whose handler calls ``model.generate`` (text and text2text generation, image captioning,
sequence-to-sequence speech recognition such as Whisper) are not exported: they raise
`HardwareUnavailable`, so the host falls back to torch. CTC speech recognition is one forward
pass and is exported.

`build` loads the checkpoint with torch on the CPU in float32 (``skill.load_torch``), makes two
example batches with the task's own processor from synthetic inputs (text, a gradient image, a
sine wave) of different batch sizes and lengths, and compares their shapes: an axis whose size
differs between the two (batch, sequence, audio time, the image sides of DETR) is dynamic, the
others (ViT's 224x224, Whisper's 3000 frames) stay static. `prepare` runs the shared cache
protocol: on a miss it builds, lets the backend write its files, runs the written graph on the
*second* example and compares it with torch (so a trace that baked a shape in is caught before
the export is served), writes ``graph.json`` and marks the entry ready; on a hit it loads only
the processor and config, never the torch weights.
"""

from __future__ import annotations

import inspect
import json
import logging
import shutil
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import cache, pooling, text, torch_backend
from . import options as options_mod
from .checkpoint import Checkpoint, resolve
from .endpoint import Endpoint
from .errors import HardwareUnavailable, HFSkillsError, ModelLoadError, first_line

log = logging.getLogger("hfskills.runtime")

#: What a forward-only task's handler reads from ``model(**batch)``.
TASK_OUTPUTS: dict[str, tuple[str, ...]] = {
    "text_embedding": ("last_hidden_state",),
    "fill_mask": ("logits",),
    "text_classification": ("logits",),
    "token_classification": ("logits",),
    "question_answering": ("start_logits", "end_logits"),
    "image_classification": ("logits",),
    "audio_classification": ("logits",),
    "automatic_speech_recognition": ("logits",),
    "object_detection": ("logits", "pred_boxes"),
    "zero_shot_image_classification": ("logits_per_image",),
}
#: The method a vision-text skill's embedding handlers call instead of ``forward``.
FEATURE_METHODS = {"text_embedding": "get_text_features", "image_embedding": "get_image_features"}
#: Where a graph's call description lives in its cache entry.
SPEC_FILE = "graph.json"
#: Part of every cache key: bump it when what `build` produces changes.
RECIPE = 1

#: Synthetic example inputs: (first batch, second batch); the second is larger and longer.
_TEXTS = (
    ["hello world", "a b"],
    ["a", "the weather today is sunny and the capital of germany is berlin", "hello"],
)
_QUESTIONS = (
    (["what is the capital", "who"], ["paris is", "a b c"]),
    (["where", "what", "why is it"], ["in london", "hello world and a b c d e f g h", "yes"]),
)
_PROMPTS = (
    ["a cat", "a dog", "hello"],
    ["a bird", "the weather today is sunny and the capital of germany is berlin"],
)
_IMAGE_SIZES = (((64, 48), (48, 64)), ((40, 72),))  # (width, height): different aspect ratios
_AUDIO_SECONDS = ((0.5, 0.5), (0.8,))  # the handlers batch clips of one length together
#: Axes that are dynamic whatever the examples show (token sequences, audio samples).
_ALWAYS_DYNAMIC = {
    "input_ids": 1,
    "attention_mask": 1,
    "token_type_ids": 1,
    "position_ids": 1,
    "input_values": 1,
}


#: One lock per cache entry: two threads loading the same model export it once.
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class Mismatch(HardwareUnavailable):
    """An exported graph does not reproduce torch on the check batch."""


Runner = Callable[[dict[str, Any]], list[Any]]
"""Runs a written graph: numpy arrays by input name -> numpy arrays in output order."""


@dataclass(frozen=True)
class GraphSpec:
    """How to call an exported graph; saved as ``graph.json`` next to it.

    ``method`` is the model method the graph replaces; ``inputs``/``outputs`` are in graph
    order; ``dynamic_*`` map a tensor name to ``{axis: dim name}``; ``input_dtypes`` are numpy
    dtype names the inputs are cast to before a call.
    """

    task: str
    method: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    input_dtypes: dict[str, str]
    dynamic_inputs: dict[str, dict[int, str]]
    dynamic_outputs: dict[str, dict[int, str]]

    def save(self, directory: Path) -> None:
        (directory / SPEC_FILE).write_text(json.dumps(asdict(self), indent=1, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> GraphSpec:
        facts = json.loads((directory / SPEC_FILE).read_text())

        def axes(table: dict[str, dict[str, str]]) -> dict[str, dict[int, str]]:
            return {name: {int(k): v for k, v in dims.items()} for name, dims in table.items()}

        return cls(
            task=facts["task"],
            method=facts["method"],
            inputs=tuple(facts["inputs"]),
            outputs=tuple(facts["outputs"]),
            input_dtypes=dict(facts["input_dtypes"]),
            dynamic_inputs=axes(facts["dynamic_inputs"]),
            dynamic_outputs=axes(facts["dynamic_outputs"]),
        )

    def shape(self, name: str, example: Any) -> list[int]:
        """An input's shape for a converter: -1 on dynamic axes, the example's size elsewhere."""
        dynamic = self.dynamic_inputs.get(name, {})
        return [-1 if axis in dynamic else int(size) for axis, size in enumerate(example.shape)]


@dataclass
class Export:
    """What a backend needs to write a graph: the module to trace and its example inputs."""

    spec: GraphSpec
    #: ``forward(*inputs)`` in ``spec.inputs`` order -> a tuple in ``spec.outputs`` order.
    module: Any
    #: The first example batch (trace with it), in ``spec.inputs`` order.
    example: tuple[Any, ...]
    #: The second batch (other batch size and lengths) and torch's outputs on it.
    check: tuple[Any, ...]
    expected: tuple[Any, ...]
    #: The torch endpoint the module came from (processor, config, checkpoint).
    source: Endpoint


#: A backend's writer: put the graph files for an `Export` in a directory and return a
#: `Runner` over the written files on the CPU in float32 (used to verify the export).
Writer = Callable[[Export, Path], Runner]


@dataclass
class Prepared:
    """A ready cache entry plus what the endpoint needs besides the graph."""

    path: Path
    spec: GraphSpec
    processor: Any
    config: Any
    checkpoint: Checkpoint
    #: True when this call exported (a cache miss); False when the entry was reused.
    exported: bool
    #: The entry's ``.done`` facts (checkpoint, precision, max |graph - torch| when exported).
    facts: dict[str, Any] = field(default_factory=dict)


def traceable(model: Any, method: str, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> Any:
    """A torch module a converter can trace: ``forward(*tensors)`` calls ``model.<method>`` with
    the tensors as ``inputs`` by name and returns the ``outputs`` as a tuple (the features
    tensor for the ``get_*_features`` methods). Decoders run without a KV cache."""
    import torch

    params = inspect.signature(getattr(model, method)).parameters
    extra = {"use_cache": False} if "use_cache" in params else {}

    class Call(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> tuple[Any, ...]:
            named = dict(zip(inputs, tensors, strict=True))
            out = getattr(self.model, method)(**named, **extra)
            if method != "forward":
                return (pooling.features(out),)
            return tuple(out[name] for name in outputs)

    return Call().eval()


def needs_generation(skill: Any, task: str) -> bool:
    """Whether ``task``'s handler calls ``model.generate`` (so no graph export covers it)."""
    from . import tasks

    return tasks.generates(task, skill.tasks[task])


def require_exportable(skill: Any, task: str) -> None:
    """`HardwareUnavailable` for what no graph export covers (`tasks.graph_export_gap`; skills
    declare those pairs unsupported, so this only guards hand-made calls)."""
    from . import tasks

    skill.check_task(task)
    reason = tasks.graph_export_gap(task, skill.tasks[task])
    if reason is not None:
        raise HardwareUnavailable(f"{task} for {skill.model_type}: {reason}")


def method_for(skill: Any, task: str) -> str:
    """The model method the task's handler calls (see the module docstring)."""
    if task in FEATURE_METHODS and (task == "image_embedding" or skill.family == "vision-text"):
        return FEATURE_METHODS[task]
    return "forward"


def check_options(options: Mapping[str, Any], extra: frozenset[str]) -> None:
    """`InvalidInput` for an option neither torch loading nor the backend (``extra``) takes."""
    options_mod.check(options, torch_backend.LOAD_OPTIONS | extra)


def _synthetic_image(width: int, height: int, seed: int) -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    pixels = np.stack([x, y, np.full_like(x, 128.0)], axis=-1) + rng.normal(
        0, 20, (height, width, 3)
    )
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _synthetic_wave(seconds: float, rate: int, seed: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    return (0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * rng.standard_normal(t.shape)).astype(
        np.float32
    )


def example_batch(skill: Any, task: str, processor: Any, config: Any, which: int) -> dict[str, Any]:
    """The task's processor output for synthetic inputs: ``which`` 0 or 1 picks one of two
    batches that differ in batch size and in every length the processor lets vary."""
    if task in ("text_embedding", "fill_mask", "text_classification", "token_classification"):
        if task == "text_embedding" and skill.family == "vision-text":
            config = config.text_config
        limit = text.max_length(processor, config)
        return dict(text.encode(processor, list(_TEXTS[which]), limit=limit))
    if task == "question_answering":
        questions, contexts = _QUESTIONS[which]
        limit = text.max_length(processor, config)
        return dict(text.encode(processor, questions, limit=limit, pairs=contexts))
    if task in ("image_classification", "image_embedding", "object_detection"):
        images = [_synthetic_image(w, h, seed) for seed, (w, h) in enumerate(_IMAGE_SIZES[which])]
        return dict(processor(images=images, return_tensors="pt"))
    if task == "zero_shot_image_classification":
        images = [_synthetic_image(w, h, seed) for seed, (w, h) in enumerate(_IMAGE_SIZES[which])]
        from .tasks import vision

        padding = vision.zero_shot_padding(skill.tasks[task].variant)
        return dict(
            processor(text=_PROMPTS[which], images=images, padding=padding, return_tensors="pt")
        )
    if task in ("automatic_speech_recognition", "audio_classification"):
        extractor = getattr(processor, "feature_extractor", processor)
        rate = extractor.sampling_rate
        waves = [_synthetic_wave(s, rate, seed) for seed, s in enumerate(_AUDIO_SECONDS[which])]
        return dict(extractor(waves, sampling_rate=rate, return_tensors="pt"))
    raise HardwareUnavailable(f"no graph export is defined for {task}; it runs on torch")


def _dynamic_axes(
    names: tuple[str, ...], first: tuple[Any, ...], second: tuple[Any, ...], batch: bool
) -> dict[str, dict[int, str]]:
    """Axes whose size differs between the two examples; for inputs (``batch``) also axis 0
    and the sequence axis of token and audio inputs."""
    table: dict[str, dict[int, str]] = {}
    for name, a, b in zip(names, first, second, strict=True):
        if a.dim() != b.dim():
            raise HardwareUnavailable(f"{name} changes rank with the input; it cannot be exported")
        forced = {0, _ALWAYS_DYNAMIC.get(name)} if batch else set()
        axes = {
            axis: f"{name}_{axis}"
            for axis in range(a.dim())
            if a.shape[axis] != b.shape[axis] or axis in forced
        }
        if axes:
            table[name] = axes
    return table


def build(skill: Any, model: str, task: str, **torch_options: Any) -> Export:
    """Load ``model`` with torch (CPU, float32) and describe the graph for ``task``."""
    import torch

    require_exportable(skill, task)
    source = skill.load_torch(
        model, task, hardware="cpu", device="cpu", dtype="float32", **torch_options
    )
    net, method = source.model, method_for(skill, task)
    batches = [
        example_batch(skill, task, source.processor, source.config, which) for which in (0, 1)
    ]
    tensors = [
        {
            k: v.float() if v.is_floating_point() else v
            for k, v in torch_backend.accepted_inputs(net, batch, method).items()
            if isinstance(v, torch.Tensor)
        }
        for batch in batches
    ]
    inputs = tuple(tensors[0])
    if not inputs or set(tensors[1]) != set(inputs):
        raise HardwareUnavailable(f"the {task} processor gives no stable set of model inputs")
    outputs = ("features",) if method != "forward" else TASK_OUTPUTS[task]
    module = traceable(net, method, inputs, outputs)
    example = tuple(tensors[0][name] for name in inputs)
    check = tuple(tensors[1][name] for name in inputs)
    try:
        with torch.inference_mode():
            first, expected = module(*example), module(*check)
    except KeyError as exc:
        raise HardwareUnavailable(
            f"{skill.model_type} {task} gives no output {exc}; it cannot be exported"
        ) from exc
    spec = GraphSpec(
        task=task,
        method=method,
        inputs=inputs,
        outputs=outputs,
        input_dtypes={name: str(t.numpy().dtype) for name, t in zip(inputs, example, strict=True)},
        dynamic_inputs=_dynamic_axes(inputs, example, check, batch=True),
        dynamic_outputs=_dynamic_axes(outputs, first, expected, batch=False),
    )
    return Export(spec, module, example, check, tuple(t.clone() for t in expected), source)


def verify(export: Export, run: Runner, tolerance: float) -> float:
    """Run the written graph on the check batch; `Mismatch` unless it matches torch
    (same shapes, max |diff| within ``tolerance`` x the output's scale). Returns max |diff|."""
    import numpy as np

    arrays = {name: t.numpy() for name, t in zip(export.spec.inputs, export.check, strict=True)}
    got = run(arrays)
    worst = 0.0
    for name, want, have in zip(export.spec.outputs, export.expected, got, strict=True):
        want_np = want.numpy()
        if tuple(have.shape) != tuple(want_np.shape):
            raise Mismatch(
                f"the exported graph gives {name} of shape {tuple(have.shape)} where torch gives "
                f"{tuple(want_np.shape)}: the trace did not generalise to other input sizes"
            )
        diff = float(np.abs(have.astype(np.float64) - want_np).max()) if want_np.size else 0.0
        scale = max(1.0, float(np.abs(want_np).max()) if want_np.size else 1.0)
        if not diff <= tolerance * scale:
            raise Mismatch(
                f"the exported graph differs from torch on {name} by {diff:.3g} "
                f"(allowed {tolerance * scale:.3g}); it runs on torch"
            )
        worst = max(worst, diff)
    return worst


def load_assets(
    skill: Any, ckpt: Checkpoint, task: str, options: Mapping[str, Any]
) -> tuple[Any, Any]:
    """The processor and config of a checkpoint, without its weights (the cache-hit path)."""
    from transformers import AutoConfig

    where = {k: options[k] for k in ("revision", "local_files_only") if options.get(k) is not None}
    try:
        processor = torch_backend.load_processor(skill.processors[task], ckpt, **where)
        config = AutoConfig.from_pretrained(ckpt.location, **ckpt.kwargs, **where)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        first = first_line(exc)
        raise ModelLoadError(f"could not load the processor of {ckpt.location!r}: {first}") from exc
    torch_backend._share_padding(processor, SimpleNamespace(config=config))
    return processor, config


def prepare(
    skill: Any,
    model: str,
    task: str,
    *,
    fmt: str,
    precision: str,
    options: Mapping[str, Any],
    write: Writer,
    tolerance: float = 1e-3,
) -> Prepared:
    """The cache entry for ``model``/``task`` in ``fmt``: reused when ready, else exported now
    with ``write``, verified against torch, and marked ready (see the module docstring)."""
    require_exportable(skill, task)
    ckpt = resolve(model, options.get("gguf_file"))
    import transformers

    path = cache.entry(
        ckpt,
        task,
        fmt,
        precision,
        revision=options.get("revision"),
        recipe=RECIPE,
        transformers=transformers.__version__,  # the model code that was traced
    )
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(path, threading.Lock())
    with lock:
        if cache.ready(path):
            processor, config = load_assets(skill, ckpt, task, options)
            facts = json.loads((path / ".done").read_text())
            log.info("reusing the %s export of %s for %s from %s", fmt, model, task, path)
            spec = GraphSpec.load(path)
            return Prepared(path, spec, processor, config, ckpt, False, facts)
        torch_options = {k: v for k, v in options.items() if k in torch_backend.LOAD_OPTIONS}
        attempts = [torch_options]
        if torch_options.get("attn_implementation") is None:
            # SDPA converts to a fused op that gives NaN on fully masked rows (left-padded
            # decoders on OpenVINO); eager attention's additive mask does not
            attempts.append({**torch_options, "attn_implementation": "eager"})
        for attempt, opts in enumerate(attempts, start=1):
            try:
                export, diff = _export_into(path, skill, model, task, fmt, write, tolerance, opts)
                break
            except Mismatch as exc:
                if attempt == len(attempts):
                    raise
                log.info("%s; exporting again with eager attention", exc)
        facts = {
            "checkpoint": ckpt.location,
            "task": task,
            "format": fmt,
            "precision": precision,
            "max_abs_diff": diff,
            "attn_implementation": opts.get("attn_implementation"),
        }
        cache.mark_ready(path, facts)
    source = export.source
    return Prepared(path, export.spec, source.processor, source.config, ckpt, True, facts)


def _export_into(
    path: Path,
    skill: Any,
    model: str,
    task: str,
    fmt: str,
    write: Writer,
    tolerance: float,
    torch_options: dict[str, Any],
) -> tuple[Export, float]:
    """Build, write into ``path`` (emptied first), verify and save the spec; on any failure
    remove ``path`` and raise an `HFSkillsError` (a converter's own error as
    `HardwareUnavailable`, so the host falls back to torch)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings: `verify` checks the result
            export = build(skill, model, task, **torch_options)
            if path.exists():  # a partial export left by an interrupted process
                shutil.rmtree(path)
            path.mkdir(parents=True)
            log.info("exporting %s for %s to %s in %s", model, task, fmt, path)
            run = write(export, path)
        diff = verify(export, run, tolerance)
        export.spec.save(path)
    except HFSkillsError:
        shutil.rmtree(path, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(path, ignore_errors=True)
        first = first_line(exc)
        raise HardwareUnavailable(
            f"{skill.model_type} {task} could not be exported to {fmt}: {first}"
        ) from exc
    return export, diff


def make_endpoint(
    skill: Any,
    model: str,
    task: str,
    prepared: Prepared,
    graph: Any,
    *,
    hardware: str,
    memory_bytes: int,
    options: Mapping[str, Any],
) -> Endpoint:
    """The `Endpoint` of a graph: torch-side device "cpu" and float32 (what ``place`` moves
    inputs to), and the settings the torch path sets, plus where the export lives."""
    endpoint = Endpoint(
        model=graph,
        processor=prepared.processor,
        task=task,
        hardware=hardware,
        device="cpu",
        dtype="float32",
        model_id=str(model),
        skill=type(skill).__name__,
        batch_size=int(options.get("batch_size") or 8),
        memory_bytes=memory_bytes,
        config=prepared.config,
        allow_local_paths=bool(options.get("allow_local_paths", True)),
    )
    endpoint.settings.update(
        checkpoint=prepared.checkpoint,
        export_dir=str(prepared.path),
        exported=prepared.exported,
        export_max_abs_diff=prepared.facts.get("max_abs_diff"),
    )
    return endpoint


def files_size(directory: Path, suffixes: tuple[str, ...]) -> int:
    """Bytes of the files in ``directory`` whose name ends with one of ``suffixes``."""
    return sum(
        p.stat().st_size for p in directory.iterdir() if p.is_file() and p.name.endswith(suffixes)
    )
