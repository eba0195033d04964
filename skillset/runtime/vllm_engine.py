"""Decoder generation on vLLM: its in-process async engine behind the engine contract.

`VLLMEngine` runs vLLM's ``AsyncLLM`` (``vllm.v1.engine.async_llm``; the model itself runs in
vLLM's engine-core process with paged attention, continuous batching and CUDA graphs) on an
asyncio loop of its own, in a background thread. Each `submit` becomes one task on that loop:
the prompt is rendered with the checkpoint's Hugging Face tokenizer (chat messages through its
chat template, `generation.prompt_texts`) and tokenized exactly as the torch engine does, handed
to vLLM as token ids (a token ``EngineInput``), and vLLM's delta outputs become the
contract's events: one `TokenEvent` per token, the `FinalEvent` as `TokenText.final` makes
it, then `DONE`. A consumer that went away
(``sequence.cancelled``) aborts the request within ~50 ms, even while it is still queued.

Text and stop strings, two ways (the ``text_handling`` load option):

- ``"hfskills"`` (default): vLLM only samples (``detokenize=False``); every generated id goes
  through the same `TokenText` as the torch and OpenVINO GenAI engines, so text, held-back
  partial stop strings, cut points, token ids, finish reasons and usage are identical across
  hardware. EOS ids come from the checkpoint's generation config and are passed to vLLM as
  ``stop_token_ids``; when `TokenText` sees a stop string the vLLM request is aborted (vLLM may
  have sampled a token or two more, which are dropped). Cost: `TokenText` decodes the whole
  sequence so far at each token (~30 µs per token on a CPU core).
- ``"vllm"``: vLLM's incremental detokenizer (tokenizers' ``DecodeStream``) and stop strings
  (``stop=``, stop string excluded from the text, held back while it could still match).
  Cheaper per token; the differences from the torch path are vLLM's (checked against vLLM
  0.26.0's source): the first token is rendered after the prompt (a leading space may differ
  from decoding the generated ids alone), held-back text is released per its own rule (the
  longest stop string's length minus one), and stop strings are not looked for within the first
  ``min_tokens``. The EOS id that ends a sequence (vLLM reports it, without its text) is
  dropped from ``token_ids``, as the torch path never reports it.

Logprobs: ``logprobs`` and ``prompt_logprobs`` pass to ``SamplingParams`` as they are (the
same meaning: alternatives beyond the token's own), and vLLM's answers (per position, the
token's ``Logprob`` and the top ranked) become the contract's `TokenLogprob`s. They are what
vLLM's ``logprobs_mode`` reports; its default, ``raw_logprobs`` (vLLM 0.10 and later, still the
default), is the log-softmax of the model's logits before temperature, penalties and top-k/p:
the same distribution the torch and GenAI engines report. A host that sets another mode for
its vLLM reports that mode's numbers. Requests may ask for at most vLLM's ``max_logprobs``
(default 20, `generation.MAX_LOGPROBS`).

Sampling maps `GenerationParams` to ``SamplingParams``: ``max_tokens``, temperature 0 for
greedy, ``top_p``, ``top_k``, ``repetition_penalty`` (else the checkpoint's default, as the
torch engine applies it), ``seed``, ``ignore_eos``, ``min_tokens`` (``max_new_tokens`` with
``ignore_eos``, as the torch engine does) and ``output_kind=DELTA``. Greedy output equals the
torch path's token for token where the arithmetic is the same (``dtype="float32"``); sampled
output follows vLLM's own random streams.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import importlib.util
import itertools
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import checkpoint, constraints, cuda, generation, hardware, torch_backend
from . import options as options_mod
from .endpoint import Endpoint
from .engines import DONE, Sequence, prompt_ids
from .errors import (
    HardwareUnavailable,
    HFSkillsError,
    InferenceError,
    InvalidInput,
    ModelLoadError,
    first_line,
)
from .generation import FinalEvent, GenerationParams, TokenEvent, TokenLogprob, TokenText

log = logging.getLogger("hfskills.runtime")

TEXT_HANDLING = ("hfskills", "vllm")
#: Options only vLLM reads.
VLLM_OPTIONS = frozenset(
    {
        "gpu_memory_utilization",
        "max_model_len",
        "dtype",
        "enforce_eager",
        "max_num_seqs",
        "seed",
        "text_handling",
    }
)
#: Every option `load_endpoint` accepts: vLLM's plus the torch path's it can honour
#: (``attn_implementation`` and ``local_files_only`` are accepted and left to vLLM's defaults).
OPTIONS = frozenset(torch_backend.LOAD_OPTIONS | VLLM_OPTIONS)
#: vLLM reserves this share of the GPU for weights and KV cache unless told otherwise (vLLM's
#: own default is 0.9; a little is left for other models the host may load on the same GPU).
DEFAULT_GPU_MEMORY_UTILIZATION = 0.8
CANCEL_POLL_S = 0.05


class VLLMEngine:
    """The engine contract (engines.py) over vLLM's ``AsyncLLM`` (see the module docstring).

    ``make_llm`` builds the async engine; it is called on the engine's own event loop (vLLM
    starts its output handler on the running loop). Anything with ``AsyncLLM``'s ``generate``
    (an async generator of delta ``RequestOutput``) and ``shutdown`` will do.
    ``make_sampling`` turns `sampling_kwargs` into vLLM's ``SamplingParams``.
    """

    def __init__(
        self,
        make_llm: Callable[[], Any],
        tokenizer: Any,
        eos_ids: set[int],
        *,
        text_handling: str = "hfskills",
        default_repetition_penalty: float | None = None,
        make_sampling: Callable[[dict[str, Any]], Any] | None = None,
        limit: int | None = None,
        adapters: dict[str, str] | None = None,
    ) -> None:
        if text_handling not in TEXT_HANDLING:
            raise InvalidInput(
                f"text_handling must be one of {list(TEXT_HANDLING)}", param="text_handling"
            )
        self.tokenizer, self.eos_ids = tokenizer, set(eos_ids)
        self.text_handling = text_handling
        self.default_repetition_penalty = default_repetition_penalty
        self.make_sampling = make_sampling or vllm_sampling_params
        #: LoRA adapters by served name -> (vLLM's integer id, path): a request's adapter is
        #: a ``LoRARequest`` (vLLM loads it on first use and batches adapters together)
        self.adapters = {n: (i, p) for i, (n, p) in enumerate((adapters or {}).items(), 1)}
        self.live: dict[str, Sequence] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._closed = False
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="hfskills-vllm", daemon=True)
        self._thread.start()
        try:
            self.llm = asyncio.run_coroutine_threadsafe(self._make(make_llm), self.loop).result()
        except BaseException:
            self._stop_loop()
            raise
        self._watcher = asyncio.run_coroutine_threadsafe(self._watch(), self.loop)
        #: the context (prompt + generated tokens): vLLM's own ``max_model_len`` when it says
        #: it (the ``max_model_len`` option, else what vLLM derived from the config), else
        #: ``limit``
        model_config = getattr(self.llm, "model_config", None)
        self.limit = getattr(model_config, "max_model_len", None) or limit

    # -- the engine contract -----------------------------------------------------------------
    def submit(self, prompt: Any, params: GenerationParams, sink: Any = None) -> Sequence:
        """Queue one prompt (a string or chat messages); events go to ``sink`` when given
        (called from the engine's thread), else to the sequence's queue."""
        if self._closed:
            raise InferenceError("the generation engine is stopped")
        sequence = Sequence(prompt, params, sink=sink)
        request_id = f"hfskills-{next(self._ids)}"
        sequence.handle = request_id
        with self._lock:
            self.live[request_id] = sequence
        self.loop.call_soon_threadsafe(self._start, request_id, sequence)
        return sequence

    def close(self, timeout: float = 60.0) -> None:
        """Fail what is still running, shut vLLM down (its engine process frees the GPU)."""
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(timeout)
        except Exception:  # a broken engine must still let the host unload it
            log.exception("vLLM engine shutdown failed")
        self._stop_loop()

    @property
    def load(self) -> int:
        with self._lock:
            return len(self.live)

    # -- the loop ------------------------------------------------------------------------------
    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _stop_loop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        with self._lock:  # submitted too late to start: their consumers must not wait forever
            left, self.live = list(self.live.values()), {}
        for sequence in left:
            sequence.put(InferenceError("the generation engine stopped"))
            sequence.put(DONE)
        if not self._thread.is_alive():
            self.loop.close()

    async def _make(self, make_llm: Callable[[], Any]) -> Any:
        return make_llm()

    def _start(self, request_id: str, sequence: Sequence) -> None:
        self.tasks[request_id] = self.loop.create_task(self._serve(request_id, sequence))

    async def _watch(self) -> None:
        """Cancel the task of every sequence whose consumer went away (vLLM aborts it)."""
        while True:
            await asyncio.sleep(CANCEL_POLL_S)
            with self._lock:
                gone = [rid for rid, s in self.live.items() if s.cancelled.is_set()]
            for request_id in gone:
                task = self.tasks.get(request_id)
                if task is not None and not task.done():
                    task.cancel()

    async def _shutdown(self) -> None:
        self._watcher.cancel()
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        shutdown = getattr(self.llm, "shutdown", None)
        if shutdown is not None:
            shutdown()

    async def _serve(self, request_id: str, sequence: Sequence) -> None:
        """One request from prompt to `DONE`."""
        stream = None
        try:
            if sequence.cancelled.is_set():
                return
            ids = self._encode(sequence.prompt, sequence.params.tools)
            params = sequence.params = sequence.params.fit(len(ids), self.limit)
            sampling = self.make_sampling(
                sampling_kwargs(
                    params,
                    self.eos_ids,
                    text_handling=self.text_handling,
                    default_repetition_penalty=self.default_repetition_penalty,
                )
            )
            state: _Events = (
                _TokenTextEvents(sequence, self.tokenizer, self.eos_ids, len(ids))
                if self.text_handling == "hfskills"
                else _VLLMTextEvents(sequence, self.eos_ids, len(ids))
            )
            # a rendered token input: vLLM takes the ids as they are (no tokenization of its own)
            prompt = {"type": "token", "prompt_token_ids": ids}
            lora = self._lora(params.adapter)
            stream = self.llm.generate(prompt, sampling, request_id, lora_request=lora)
            async for output in stream:
                if sequence.cancelled.is_set():
                    break
                if state.update(output) and not output.finished:
                    break  # a stop string: the request still runs in vLLM, and is aborted
        except asyncio.CancelledError:
            if self._closed:
                sequence.put(InferenceError("the generation engine stopped"))
        except HFSkillsError as exc:
            sequence.put(exc)
        except Exception as exc:  # vLLM's errors: a bad request, or a failed engine
            sequence.put(_error(exc))
        finally:
            if stream is not None:
                await _close(stream)  # aborts the request in vLLM if it still runs
            sequence.put(DONE)
            with self._lock:
                self.live.pop(request_id, None)
            self.tasks.pop(request_id, None)

    def _lora(self, name: str | None) -> Any:
        """vLLM's ``LoRARequest`` for a served adapter name (None: the base model)."""
        if name is None:
            return None
        if name not in self.adapters:
            raise InvalidInput(
                f"no LoRA adapter {name!r} on this model; it has {sorted(self.adapters)}",
                param="model",
            )
        from vllm.lora.request import LoRARequest

        number, path = self.adapters[name]
        return LoRARequest(name, number, path)

    def _encode(self, prompt: Any, tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Render and tokenize like the torch engine (continuous.py), so prompts match."""
        return prompt_ids(self.tokenizer, prompt, tools)


class _Events:
    """Turns one request's delta outputs into contract events; `update` says when it is over."""

    def update(self, output: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


class _TokenTextEvents(_Events):
    """Every generated id through `TokenText` (text, stop strings, EOS, finish reason)."""

    def __init__(self, sequence: Sequence, tokenizer: Any, eos_ids: set[int], prompt: int) -> None:
        self.sequence, self.tokenizer, self.eos_ids, self.prompt = (
            sequence,
            tokenizer,
            eos_ids,
            prompt,
        )
        self.text: TokenText | None = None

    def update(self, output: Any) -> bool:
        sequence = self.sequence
        if self.text is None:
            prompt = _prompt_tokens(output, self.prompt)
            self.text = TokenText(self.tokenizer, sequence.params, self.eos_ids, prompt)
            self.text.prompt_logprobs = prompt_logprobs(output, sequence.params)
            sequence.text = self.text
        text, completion = self.text, output.outputs[0]
        found = generated_logprobs(completion, sequence.params)
        for token, logprob in zip(completion.token_ids, found, strict=True):
            event = text.add(int(token), logprob)
            if event is not None:
                sequence.put(event)
            if text.done:
                break
        finished = bool(output.finished)
        if not text.done and finished:  # vLLM ended it (its own length limit, or a stop id)
            if completion.finish_reason == "abort":
                raise InferenceError("vLLM aborted the request")
            text.reason = "length" if completion.finish_reason == "length" else "stop"
        if text.done:
            sequence.put(text.final())
            return True
        return finished


class _VLLMTextEvents(_Events):
    """vLLM's own text and stop strings, mapped onto the contract's events."""

    def __init__(self, sequence: Sequence, eos_ids: set[int], prompt: int) -> None:
        self.sequence, self.eos_ids, self.prompt = sequence, eos_ids, prompt
        self.prompt_tokens: int | None = None
        self.ids: list[int] = []
        self.parts: list[str] = []
        self.logprobs: list[TokenLogprob | None] = []
        self.prompt_logprobs: list[TokenLogprob] | None = None

    def update(self, output: Any) -> bool:
        sequence, completion = self.sequence, output.outputs[0]
        if self.prompt_tokens is None:
            self.prompt_tokens = _prompt_tokens(output, self.prompt)
            self.prompt_logprobs = prompt_logprobs(output, sequence.params)
        new = [int(t) for t in completion.token_ids]
        found = generated_logprobs(completion, sequence.params)
        reason, stop = completion.finish_reason, completion.stop_reason
        if (
            reason == "stop"
            and not isinstance(stop, str)
            and not sequence.params.ignore_eos
            and new
            and new[-1] in self.eos_ids
        ):
            new.pop()  # the EOS that ended it: no event, not in token_ids (as on torch)
        text = completion.text or ""
        first = not self.ids
        self.ids.extend(new)
        self.parts.append(text)
        for i, token in enumerate(new):
            last = i == len(new) - 1
            prompt = self.prompt_logprobs if first and i == 0 else None
            self.logprobs.append(found[i])
            event = TokenEvent(
                token, text if last else "", logprob=found[i], prompt_logprobs=prompt
            )
            sequence.put(event)
        if not output.finished:
            return False
        if reason == "abort":
            raise InferenceError("vLLM aborted the request")
        whole = "".join(self.parts)
        sequence.put(
            FinalEvent(
                text="" if new else text,  # text with no token of its own (held back)
                generated_text=whole,
                token_ids=list(self.ids),
                finish_reason="length" if reason == "length" else "stop",
                prompt_tokens=self.prompt_tokens,
                stop_sequence=stop if isinstance(stop, str) else None,
                logprobs=None if sequence.params.logprobs is None else self._logprobs(),
                prompt_logprobs=self.prompt_logprobs,
            )
        )
        return True

    def _logprobs(self) -> list[TokenLogprob]:
        return [lp for lp in self.logprobs if lp is not None]


def _prompt_tokens(output: Any, sent: int) -> int:
    ids = getattr(output, "prompt_token_ids", None)
    return len(ids) if ids is not None else sent


async def _close(stream: Any) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:  # already failed or finished: nothing left to abort
        log.debug("closing a vLLM stream failed", exc_info=True)


def _error(exc: BaseException) -> HFSkillsError:
    """vLLM's validation errors (a prompt longer than max_model_len...) are the client's; any
    other failure is the engine's."""
    message = first_line(exc)
    cause = exc.__cause__ or exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, ValueError | TypeError) or names & {
        "VLLMValidationError",
        "VLLMClientError",
    }:
        return InvalidInput(f"vLLM refused the request: {message}")
    return InferenceError(f"generation failed: {message} ({type(cause).__name__})")


def sampling_kwargs(
    params: GenerationParams,
    eos_ids: set[int],
    *,
    text_handling: str = "hfskills",
    default_repetition_penalty: float | None = None,
) -> dict[str, Any]:
    """``SamplingParams`` keyword arguments for ``params`` (``output_kind`` aside: see
    `vllm_sampling_params`)."""
    kwargs: dict[str, Any] = {
        "max_tokens": params.max_new_tokens,
        "ignore_eos": params.ignore_eos,
        "detokenize": text_handling == "vllm",
    }
    if params.sampling:
        kwargs.update(
            temperature=params.temperature or 1.0,
            top_p=params.top_p or 1.0,
            top_k=params.top_k or 0,  # 0: every token
        )
        if params.seed is not None:
            kwargs["seed"] = params.seed  # else vLLM's own generator: fresh per request
    else:
        kwargs["temperature"] = 0.0  # greedy (GenerationParams.sampling: below 1e-5 too)
    penalty = params.repetition_penalty or default_repetition_penalty
    if penalty and penalty != 1.0:
        kwargs["repetition_penalty"] = float(penalty)
    minimum = params.max_new_tokens if params.ignore_eos else params.min_new_tokens
    if minimum:
        kwargs["min_tokens"] = min(minimum, params.max_new_tokens)
    if not params.ignore_eos and eos_ids:
        kwargs["stop_token_ids"] = sorted(eos_ids)
    if text_handling == "vllm" and params.stop:
        kwargs["stop"] = list(params.stop)
    if params.constraint is not None:  # vLLM's own guided decoding (`vllm_sampling_params`)
        kwargs["structured_outputs"] = constraints.vllm_kwargs(params.constraint)
    if params.logprobs is not None:  # vLLM's default logprobs_mode: raw, as every engine's
        kwargs["logprobs"] = params.logprobs
    if params.prompt_logprobs is not None:
        kwargs["prompt_logprobs"] = params.prompt_logprobs
    return kwargs


def token_logprob(token: int, found: Any, top: int) -> TokenLogprob:
    """vLLM's logprobs at one position (token id -> ``Logprob`` with ``logprob`` and ``rank``:
    the sampled token and the ``top`` most likely) as the contract's `TokenLogprob`."""
    best = sorted(
        (lp.rank, t, float(lp.logprob))
        for t, lp in found.items()
        if lp.rank is not None and lp.rank <= top
    )
    return TokenLogprob(token, float(found[token].logprob), tuple((t, v) for _, t, v in best))


def generated_logprobs(completion: Any, params: GenerationParams) -> list[TokenLogprob | None]:
    """A delta output's logprobs, one per new token (None each when not asked)."""
    ids = [int(t) for t in completion.token_ids]
    if params.logprobs is None or completion.logprobs is None:
        return [None] * len(ids)
    return [
        token_logprob(t, found, params.logprobs)
        for t, found in zip(ids, completion.logprobs, strict=True)
    ]


def prompt_logprobs(output: Any, params: GenerationParams) -> list[TokenLogprob] | None:
    """The prompt's logprobs from vLLM's first output (its first position is None)."""
    found, ids = getattr(output, "prompt_logprobs", None), output.prompt_token_ids
    if params.prompt_logprobs is None or found is None or ids is None:
        return None
    return [
        TokenLogprob(int(t), None)
        if lps is None
        else token_logprob(int(t), lps, params.prompt_logprobs)
        for t, lps in zip(ids, found, strict=True)
    ]


def vllm_sampling_params(kwargs: dict[str, Any]) -> Any:
    """vLLM's ``SamplingParams`` streaming deltas; a constraint becomes its
    ``StructuredOutputsParams`` (``GuidedDecodingParams`` in vLLM releases before it)."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    kwargs = dict(kwargs)
    structured = kwargs.pop("structured_outputs", None)
    if structured is not None:
        try:
            from vllm.sampling_params import StructuredOutputsParams
        except ImportError:  # vLLM before 0.11
            from vllm.sampling_params import GuidedDecodingParams

            kwargs["guided_decoding"] = GuidedDecodingParams(**structured)
        else:
            kwargs["structured_outputs"] = StructuredOutputsParams(**structured)
    return SamplingParams(**kwargs, output_kind=RequestOutputKind.DELTA)


# -- loading ---------------------------------------------------------------------------------------


def engine_args(
    ckpt: checkpoint.Checkpoint, dtype: str, options: dict[str, Any], fields: set[str] | None
) -> dict[str, Any]:
    """``AsyncEngineArgs`` keyword arguments; only those the installed vLLM has (``fields``)."""
    gguf = ckpt.kwargs.get("gguf_file")
    args: dict[str, Any] = {
        "model": str(Path(ckpt.location) / gguf) if gguf else ckpt.location,
        "dtype": dtype,
        "gpu_memory_utilization": float(
            options.get("gpu_memory_utilization") or DEFAULT_GPU_MEMORY_UTILIZATION
        ),
        "seed": int(options.get("seed") or 0),
        "disable_log_stats": True,
        "enable_log_requests": False,
    }
    if gguf:  # older vLLMs read GGUF weights; the tokenizer from the directory when it has one
        base = Path(ckpt.location)
        if (base / "tokenizer.json").is_file() or (base / "tokenizer_config.json").is_file():
            args["tokenizer"] = str(base)
    for key in ("max_model_len", "enforce_eager", "max_num_seqs"):
        if options.get(key) is not None:
            args[key] = options[key]
    if options.get("revision"):
        args.update(revision=options["revision"], tokenizer_revision=options["revision"])
    if options.get("adapters"):  # every adapter may run in one batch, at the largest rank
        adapters = options["adapters"]
        args.update(
            enable_lora=True, max_loras=len(adapters), max_lora_rank=lora_rank(adapters.values())
        )
    if fields is not None:
        dropped = sorted(set(args) - fields)
        if dropped:
            log.debug("this vLLM has no engine argument(s) %s", dropped)
        args = {k: v for k, v in args.items() if k in fields}
    return args


#: The ranks vLLM's ``max_lora_rank`` accepts (0.26).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank(paths: Any) -> int:
    """The smallest rank vLLM accepts that holds every adapter's ``r``."""
    wanted = max(
        int(json.loads((Path(p) / "adapter_config.json").read_text()).get("r") or 8) for p in paths
    )
    return next((r for r in VLLM_LORA_RANKS if r >= wanted), wanted)


def _reads_gguf() -> bool:
    """Whether the installed vLLM has its GGUF weight loader (older releases; not 0.26)."""
    try:
        return importlib.util.find_spec("vllm.model_executor.model_loader.gguf_loader") is not None
    except ModuleNotFoundError:
        return False


def _import_vllm() -> Any:
    # vLLM reports anonymous usage statistics unless told not to; a host does not phone home
    # on its users' behalf (set VLLM_NO_USAGE_STATS=0 to allow it)
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    try:
        return importlib.import_module("vllm.v1.engine.async_llm")
    except Exception as exc:  # not installed, or a build that does not match this torch/CUDA
        raise HardwareUnavailable(
            f"vLLM is not usable here ({type(exc).__name__}: {exc}); extra: cuda"
        ) from None


def load_endpoint(
    skill: Any, model: str, task: str, device: str = "cuda:0", **options: Any
) -> Endpoint:
    """``model`` for decoder text generation on vLLM, as an `Endpoint` whose ``engine`` is a
    `VLLMEngine`; `HardwareUnavailable` (so the caller falls back to torch) when vLLM is not
    installed, there is no CUDA device, or vLLM cannot run this checkpoint (an architecture it
    lacks, a GGUF file on a vLLM without a GGUF loader).

    Options: ``gpu_memory_utilization`` (default 0.8), ``max_model_len``, ``dtype`` (default:
    `cuda.torch_dtype_for` of the skill's), ``enforce_eager`` (no CUDA graphs: faster start),
    ``max_num_seqs``, ``seed``, ``text_handling`` ("hfskills" or "vllm", see the module
    docstring), and of the torch path's: ``revision``, ``gguf_file``, ``batch_size``,
    ``allow_local_paths``; ``attn_implementation`` and ``local_files_only`` are accepted and
    left to vLLM. The engine starts with the defaults ``vllm serve`` uses."""
    async_llm = _import_vllm()
    hardware.require("cuda")
    skill.check_task(task)
    if task != "text_generation" or skill.family != "decoder":
        raise HardwareUnavailable(f"vLLM serves decoder text generation, not {task}")
    if device not in ("cuda", "cuda:0"):
        raise HardwareUnavailable(f"vLLM runs on cuda:0 here (CUDA_VISIBLE_DEVICES), not {device}")
    options_mod.check(options, OPTIONS)
    text_handling = options.get("text_handling") or "hfskills"
    if text_handling not in TEXT_HANDLING:
        raise InvalidInput(
            f"text_handling must be one of {list(TEXT_HANDLING)}", param="text_handling"
        )
    ckpt = checkpoint.resolve(model, options.get("gguf_file"))
    if ckpt.kwargs.get("gguf_file") and not _reads_gguf():
        raise HardwareUnavailable(
            "this vLLM has no GGUF loader (removed by 0.26); torch dequantizes GGUF checkpoints"
        )
    hub = {k: options[k] for k in ("revision", "local_files_only") if options.get(k) is not None}
    try:
        from transformers import AutoConfig

        tokenizer = torch_backend.load_processor("tokenizer", ckpt, **hub)
        config = AutoConfig.from_pretrained(ckpt.location, **ckpt.kwargs, **hub)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"could not load {model!r}'s tokenizer or config: {exc}") from exc
    gen = generation.checkpoint_generation(ckpt.location, ckpt.kwargs)
    eos_ids = generation.stop_ids(gen, tokenizer)
    penalty = getattr(gen, "repetition_penalty", None)
    dtype = cuda.torch_dtype_for("cuda", options.get("dtype") or skill.dtypes.get("cuda"))
    from vllm.engine.arg_utils import AsyncEngineArgs

    fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    args = engine_args(ckpt, dtype, options, fields)

    def make_llm() -> Any:
        # the defaults `vllm serve` runs with (batched-token budget, sequences per step)
        from vllm.usage.usage_lib import UsageContext

        return async_llm.AsyncLLM.from_engine_args(
            AsyncEngineArgs(**args), usage_context=UsageContext.OPENAI_API_SERVER
        )

    try:
        engine = VLLMEngine(
            make_llm,
            tokenizer,
            eos_ids,
            text_handling=text_handling,
            default_repetition_penalty=penalty,
            limit=int(options["max_model_len"])
            if options.get("max_model_len")
            else generation.context_limit(tokenizer, config),
            adapters=options.get("adapters"),
        )
    except Exception as exc:  # an architecture or shape vLLM cannot run: torch can
        first = first_line(exc)
        raise HardwareUnavailable(f"vLLM cannot run {model!r}: {first}") from exc
    import torch

    total = torch.cuda.mem_get_info()[1]
    endpoint = Endpoint(
        model=None,
        processor=tokenizer,
        task=task,
        hardware="cuda",
        device="cuda:0",
        dtype=dtype,
        model_id=str(model),
        skill=type(skill).__name__,
        batch_size=int(options.get("batch_size", 8)),
        # what vLLM holds on the GPU: weights plus the KV cache it reserved
        memory_bytes=int(
            args.get("gpu_memory_utilization", DEFAULT_GPU_MEMORY_UTILIZATION) * total
        ),
        config=config,
        allow_local_paths=bool(options.get("allow_local_paths", True)),
        engine=engine,
    )
    endpoint.settings.update(
        checkpoint=ckpt, engine="vllm", vllm_args=args, text_handling=text_handling
    )
    log.info("loaded %s on vLLM (%s)", endpoint, ", ".join(f"{k}={v}" for k, v in args.items()))
    return endpoint
