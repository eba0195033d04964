"""Decoder generation on OpenVINO GenAI: continuous batching on CPUs, no torch in the loop.

`openvino_genai.ContinuousBatchingPipeline` schedules every running request in one paged
KV cache and decodes them together. It reads a GGUF file directly (weights stay quantized, no
dequantization: smollm2-135m loads in about 4 s where transformers needs 28 s), or a stateful
OpenVINO IR export of a transformers checkpoint (openvino_decoder.py, cached like any export).

`GenAIEngine` drives the pipeline from one thread and speaks the engine contract
(engines.py), so the host streams from it exactly as from the torch engine. The prompt is
rendered and tokenized with the checkpoint's own Hugging Face tokenizer and handed to GenAI as
token ids, and generated ids go back through the same `TokenText` as every other engine: chat
templates, stop strings, held-back text, finish reasons and usage counts are identical across
hardware. Sampling runs inside GenAI with each request's own parameters (temperature, top-p,
top-k, repetition penalty, seed, min tokens, ignore-EOS); a request without a seed gets a fresh
random one (GenAI's default seed is a constant, which made every unseeded request alike). A
prompt plus ``max_new_tokens`` past the model's context (the GGUF's context length, or the
checkpoint's ``max_position_embeddings``) is refused when the request starts. A stop string,
the token budget or a consumer that went away cancels the request's handle at the next step.
Logprobs: GenAI reports each generated token's (``GenerationConfig.logprobs``) and, through its
``echo``, the prompt's: the raw distribution's, as torch's and vLLM's default; it reports no
alternatives (GenAI 2026.4: "only single top logprob"), so asking for top-k is refused by name.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import cache, checkpoint, constraints, torch_backend
from . import options as options_mod
from .endpoint import Endpoint
from .engines import DONE, EngineThread, Sequence, prompt_ids
from .errors import HardwareUnavailable, HFSkillsError, InvalidInput, first_line
from .generation import (
    GenerationParams,
    TokenLogprob,
    TokenText,
    checkpoint_generation,
    context_limit,
    stop_ids,
)

log = logging.getLogger("hfskills.runtime")

#: ``precision`` option -> OpenVINO properties. "f32" is exact (the parity tests use it) and
#: batch-invariant: a request's tokens do not depend on the others in its step (the embedded
#: default uses it; docs/hardware.md); "auto" leaves OpenVINO's CPU defaults (bf16/f16 where the
#: CPU has it, u8 KV cache, activations quantized per group), under which they can.
PRECISIONS: dict[str, dict[str, Any]] = {
    "auto": {},
    "f32": {
        "INFERENCE_PRECISION_HINT": "f32",
        "KV_CACHE_PRECISION": "f32",
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0",
    },
}
OPTIONS = frozenset(torch_backend.LOAD_OPTIONS | {"precision"})


class GenAIEngine(EngineThread):
    """Continuous batching over one GenAI pipeline (see the module docstring); GenAI's own
    scheduler decides how many sequences run at once."""

    name = "hfskills-genai"

    def __init__(
        self, pipeline: Any, tokenizer: Any, eos_ids: set[int], limit: int | None = None
    ) -> None:
        self.pipeline, self.tokenizer, self.eos_ids = pipeline, tokenizer, eos_ids
        #: the model's context (prompt + generated tokens; `generation.context_limit`)
        self.limit = limit
        self.running: dict[int, Sequence] = {}
        #: constrained requests added since the last step (GenAI compiles their grammars in it)
        self.fresh: set[int] = set()
        self.ids = itertools.count()
        super().__init__()

    def close(self) -> None:
        super().close()
        self.pipeline = None

    def _busy(self) -> bool:
        # a cancelled request's blocks are freed by the next step, even with no others running
        return bool(self.running) or self.pipeline.has_non_finished_requests()

    def _start(self, sequence: Sequence) -> None:
        import numpy as np
        import openvino

        ids = np.array(
            [prompt_ids(self.tokenizer, sequence.prompt, sequence.params.tools)], dtype=np.int64
        )
        sequence.params = sequence.params.fit(ids.shape[1], self.limit)
        sequence.text = TokenText(self.tokenizer, sequence.params, self.eos_ids, ids.shape[1])
        _check_logprobs(sequence.params)
        if sequence.params.prompt_logprobs is not None:  # GenAI echoes the prompt, logprobs too
            sequence.echo = ids.shape[1]
        request = next(self.ids)
        constraint = sequence.params.constraint
        reason = None if constraint is None else constraints.genai_refusal(constraint)
        if reason is not None:
            raise InvalidInput(
                f"{constraint.field}: cannot be compiled: {reason}", param=constraint.field
            )
        try:
            sequence.handle = self.pipeline.add_request(
                request, openvino.Tensor(ids), self._config(sequence.params)
            )
        except RuntimeError as exc:  # GenAI's own grammar compiler refused the constraint
            if constraint is None:
                raise
            raise _refused(constraint, exc) from None
        self.running[request] = sequence
        if constraint is not None:
            self.fresh.add(request)

    def _step(self) -> None:
        try:
            self.pipeline.step()
        except RuntimeError as exc:
            # GenAI compiles a new request's grammar inside its step (xgrammar): a regex it
            # refuses (``a**``, ``(?P<x>a)``, which llguidance takes) raised here and failed
            # every running request with a 424. `constraints.genai_refusal` keeps the refusals
            # measured out; one it misses fails the new constrained requests with the 4xx naming
            # their field (alone, the pipeline keeps serving; requests running beside it may
            # still fail, GenAI's state after a failed step is its own).
            fresh = [r for r in self.fresh if r in self.running]
            self.fresh.clear()
            if not fresh or "xgrammar" not in str(exc).lower():
                raise
            for request in fresh:
                sequence = self.running.pop(request)
                sequence.handle.cancel()
                sequence.put(_refused(sequence.params.constraint, exc))
                sequence.put(DONE)
            return
        self.fresh.clear()
        self._collect()

    def _config(self, params: GenerationParams) -> Any:
        import openvino_genai

        config = openvino_genai.GenerationConfig()
        config.max_new_tokens = params.max_new_tokens
        config.ignore_eos = params.ignore_eos
        if not params.ignore_eos and self.eos_ids:
            config.stop_token_ids = set(self.eos_ids)
        if params.min_new_tokens:
            config.min_new_tokens = min(params.min_new_tokens, params.max_new_tokens)
        if params.repetition_penalty is not None:
            config.repetition_penalty = params.repetition_penalty
        if params.logprobs is not None or params.prompt_logprobs is not None:
            config.logprobs = 1  # the chosen token's (GenAI reports no alternatives)
            config.echo = params.prompt_logprobs is not None
        config.do_sample = params.sampling
        if params.sampling:
            config.temperature = params.temperature or 1.0
            # GenAI holds top_p as a float32 and refuses 0: a denormal top_p (which keeps only
            # the most likely token anyway) must not round to it
            config.top_p = max(params.top_p or 1.0, 1e-6)
            if params.top_k:
                config.top_k = params.top_k
            # every request its own random stream: GenAI's default rng_seed is a constant, which
            # made unseeded requests (and the n choices of one request) all alike
            config.rng_seed = params.seed if params.seed is not None else secrets.randbits(64)
        if params.constraint is not None:  # GenAI's structured output (xgrammar inside)
            config.structured_output_config = openvino_genai.StructuredOutputConfig(
                **constraints.genai_kwargs(params.constraint)
            )
        return config

    def _collect(self) -> None:
        """Hand each running sequence its new tokens; retire the finished and the abandoned."""
        import openvino_genai

        for request, sequence in list(self.running.items()):
            handle, text = sequence.handle, sequence.text
            if sequence.cancelled.is_set():
                handle.cancel()
                sequence.put(DONE)
                del self.running[request]
                continue
            reason = None
            if handle.can_read():
                for output in handle.read().values():
                    reason = output.finish_reason
                    for token, logprob in _tokens(sequence, output):
                        if text.done:
                            break
                        event = text.add(token, logprob)
                        if event is not None:
                            sequence.put(event)
            status = handle.get_status()
            if text.done or status != openvino_genai.GenerationStatus.RUNNING:
                if not text.done:  # GenAI ended it (EOS it did not report, or its own limit)
                    length = reason == openvino_genai.GenerationFinishReason.LENGTH
                    text.reason = "length" if length else "stop"
                if status == openvino_genai.GenerationStatus.RUNNING:
                    handle.cancel()
                sequence.put(text.final())
                sequence.put(DONE)
                del self.running[request]

    def _fail_all(self, error: HFSkillsError) -> None:
        for sequence in self.running.values():
            if sequence.handle is not None:
                sequence.handle.cancel()
            sequence.put(error)
            sequence.put(DONE)
        self.running = {}


def _refused(constraint: Any, exc: BaseException) -> InvalidInput:
    """GenAI's grammar compiler's refusal as the 4xx naming the constraint's field (its
    message without the C++ source path: ``[time] /path/regex_converter.cc:75: Regex ...``)."""
    line = first_line(exc)
    reason = re.split(r"\.(?:cc|h|cpp):\d+: ", line, maxsplit=1)[-1]
    message = f"{constraint.field}: cannot be compiled: {reason}"
    return InvalidInput(message, param=constraint.field)


def _check_logprobs(params: GenerationParams) -> None:
    """GenAI reports each token's own logprob (the raw distribution's, before sampling
    parameters: as vLLM's default), not the most likely alternatives: asking for those is
    refused by name."""
    for name in ("logprobs", "prompt_logprobs"):
        if getattr(params, name):
            raise InvalidInput(
                f"{name}: OpenVINO GenAI reports the chosen tokens' logprobs only, without "
                "alternatives: ask for 0 alternatives, or serve this model on torch",
                param=name,
            )


def _tokens(sequence: Sequence, output: Any) -> Iterator[tuple[int, TokenLogprob | None]]:
    """One GenAI output's generated ids, with their logprobs when asked. With prompt logprobs
    asked, the prompt comes back first (GenAI's echo): its ids and logprobs go to the
    sequence's prompt logprobs (the first without one: GenAI reports 1.0 there)."""
    params, text = sequence.params, sequence.text
    ids = [int(t) for t in output.generated_ids]
    asked = params.logprobs is not None or params.prompt_logprobs is not None
    logprobs = [float(lp) for lp in output.generated_log_probs] if asked else []
    echoed = min(sequence.echo, len(ids))
    if echoed:
        seen = text.prompt_logprobs or []
        text.prompt_logprobs = seen + [
            TokenLogprob(t, lp if len(seen) + i else None)
            for i, (t, lp) in enumerate(zip(ids[:echoed], logprobs[:echoed], strict=True))
        ]
        sequence.echo -= echoed
    for i in range(echoed, len(ids)):
        logprob = TokenLogprob(ids[i], logprobs[i]) if params.logprobs is not None else None
        yield ids[i], logprob


def _hf_side(ckpt: checkpoint.Checkpoint, options: dict[str, Any]) -> tuple[Any, Any]:
    """The checkpoint's own tokenizer (prompts in, text out) and config."""
    from transformers import AutoConfig

    kwargs = {k: options[k] for k in ("revision", "local_files_only") if k in options}
    tokenizer = torch_backend.load_processor("tokenizer", ckpt, **kwargs)
    return tokenizer, AutoConfig.from_pretrained(ckpt.location, **ckpt.kwargs, **kwargs)


def _ir_dir(ckpt: checkpoint.Checkpoint, precision: str, options: dict[str, Any]) -> Path:
    """The stateful IR export GenAI reads, from the cache or made now."""
    try:
        from . import openvino_decoder
    except ImportError as exc:
        raise HardwareUnavailable(f"no stateful OpenVINO export here: {exc}") from None

    revision = options.get("revision")
    path = cache.entry(ckpt, "text_generation", "openvino-genai", "f32", revision=revision)
    if not cache.ready(path):
        log.info("exporting %s to a stateful OpenVINO IR in %s", ckpt.location, path)
        try:
            openvino_decoder.export(ckpt.location, path, revision=revision)
        except HardwareUnavailable:
            raise
        except Exception as exc:  # any export failure means: serve it on torch instead
            first = first_line(exc)
            raise HardwareUnavailable(f"the OpenVINO export failed: {first}") from exc
        cache.mark_ready(path, {"checkpoint": ckpt.location, "precision": precision})
    return path


def load_endpoint(
    skill: Any, model: str, task: str, device: str = "CPU", **options: Any
) -> Endpoint:
    """A decoder checkpoint on GenAI's continuous-batching pipeline: GGUF read directly, any
    other checkpoint through a cached stateful IR export."""
    try:
        import openvino_genai
    except ImportError as exc:
        raise HardwareUnavailable(
            f"openvino-genai is not installed ({exc}); extra: openvino"
        ) from None
    options_mod.check(options, OPTIONS)
    precision = options.get("precision") or "auto"
    if precision not in PRECISIONS:
        raise InvalidInput(f"precision must be one of {sorted(PRECISIONS)}", param="precision")
    ckpt = checkpoint.resolve(model, options.get("gguf_file"))
    gguf = ckpt.kwargs.get("gguf_file")
    source = Path(ckpt.location) / gguf if gguf else _ir_dir(ckpt, precision, options)
    # the Hugging Face tokenizer and config load (seconds for a GGUF) while GenAI compiles
    with ThreadPoolExecutor(1) as pool:
        hf_side = pool.submit(_hf_side, ckpt, options)
        try:
            pipeline = openvino_genai.ContinuousBatchingPipeline(
                str(source), openvino_genai.SchedulerConfig(), device, PRECISIONS[precision]
            )
        except RuntimeError as exc:
            first = first_line(exc)
            raise HardwareUnavailable(f"OpenVINO GenAI cannot run {model!r}: {first}") from exc
        tokenizer, config = hf_side.result()
    gen = checkpoint_generation(ckpt.location, ckpt.kwargs)
    engine = GenAIEngine(
        pipeline, tokenizer, stop_ids(gen, tokenizer), limit=context_limit(tokenizer, config)
    )
    size = (
        source.stat().st_size
        if source.is_file()
        else sum(p.stat().st_size for p in source.glob("*.bin"))
    )
    endpoint = Endpoint(
        model=pipeline,
        processor=tokenizer,
        task=task,
        hardware="openvino",
        device="cpu",
        dtype="gguf" if gguf else precision,
        model_id=str(model),
        skill=type(skill).__name__,
        batch_size=int(options.get("batch_size", 8)),
        memory_bytes=size,
        config=config,
        allow_local_paths=bool(options.get("allow_local_paths", True)),
        engine=engine,
    )
    endpoint.settings.update(checkpoint=ckpt, openvino_device=device, genai_source=str(source))
    log.info("loaded %s on OpenVINO GenAI from %s", endpoint, source.name)
    return endpoint
