"""Text generation on transformers' ``generate``: parameters, stop strings, streaming.

Shared by every decoder, encoder-decoder and image-to-text skill. A batch call returns one
``{"text", "token_ids", "finish_reason", "prompt_tokens"}`` per input (with ``logprobs`` and
``prompt_logprobs`` when asked: `TokenLogprob`, the raw distribution's, as every engine
reports them); `stream` yields one event per generated token and stops generating as soon as
its consumer goes away.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import adapters, tool_prompt
from .constraints import Constraint
from .errors import ContextLengthError, InferenceError, InvalidInput

#: The most tokens one request may ask for, on any model: a bound on the number itself. The
#: real bound is the model's context, checked when a sequence starts (`GenerationParams.fit`).
MAX_NEW_TOKENS = 1_000_000
#: Sampling at a lower temperature is greedy: dividing logits by less would overflow them (the
#: threshold is vLLM's ``_SAMPLING_EPS``, below which vLLM samples greedily too).
GREEDY_BELOW = 1e-5
MAX_TEMPERATURE = 100.0
#: Beyond these a repetition penalty multiplies or divides logits into overflow (inf, then NaN
#: probabilities); 1.0 is no penalty. vLLM and TGI only ask for a positive number.
MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY = 0.01, 100.0
MAX_TOP_K = 2**31 - 1
MAX_SEED = 2**64 - 1  # a u64, as TGI's; GenAI's rng_seed and torch generators take it whole
#: The most alternatives a request may ask for per token: OpenAI's ``top_logprobs`` bound and
#: vLLM's default ``max_logprobs``.
MAX_LOGPROBS = 20


class GenerationParams(BaseModel):
    """The parameters a generation handler accepts; anything else is an `InvalidInput`.

    NaN and infinities are refused everywhere. Ranges: ``max_new_tokens`` 1..1,000,000 (and
    what the model's context has room for, checked when the sequence starts), ``temperature``
    0..100 (below 1e-5 sampling is greedy), ``top_p`` (0, 1], ``top_k`` 0 (every token) and
    up, ``repetition_penalty`` 0.01..100, ``seed`` 0..2**64-1; a ``min_new_tokens`` above
    ``max_new_tokens`` counts as ``max_new_tokens``.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    max_new_tokens: int = Field(default=64, ge=1, le=MAX_NEW_TOKENS)
    min_new_tokens: int | None = Field(default=None, ge=0, le=MAX_NEW_TOKENS)
    do_sample: bool = False
    temperature: float | None = Field(default=None, ge=0.0, le=MAX_TEMPERATURE)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, le=MAX_TOP_K)
    repetition_penalty: float | None = Field(
        default=None, ge=MIN_REPETITION_PENALTY, le=MAX_REPETITION_PENALTY
    )
    stop: list[str] = Field(default_factory=list, max_length=16)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    ignore_eos: bool = False
    #: Each generated token's log-probability, with this many most likely alternatives (0: the
    #: token's alone); None: none. As vLLM's ``SamplingParams.logprobs`` (see `TokenLogprob`).
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    #: The same for the prompt's tokens (the first has none), as vLLM's ``prompt_logprobs``.
    prompt_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    #: ``max_new_tokens`` is a server default, not the client's number: when the context has
    #: less room, generate what fits instead of refusing (as vLLM and TGI do).
    fit_context: bool = False
    #: Grammar-constrained decoding (constraints.py): a JSON schema, any JSON object, a regex.
    constraint: Constraint | None = None
    #: Tools (OpenAI's ``tools``, function definitions) that the chat template renders into
    #: a chat prompt: ``apply_chat_template(tools=...)``.
    tools: list[dict[str, Any]] | None = None
    #: The LoRA adapter this request runs with (adapters.py; None: the base model). The host
    #: sets it from the model name a client asked for (an adapter's served name).
    adapter: str | None = Field(default=None, min_length=1, max_length=128)

    @classmethod
    def parse(cls, params: dict[str, Any]) -> GenerationParams:
        params = dict(params)
        if isinstance(params.get("stop"), str):
            params["stop"] = [params["stop"]]
        if isinstance(params.get("temperature"), int) and not isinstance(
            params["temperature"], bool
        ):
            params["temperature"] = float(params["temperature"])
        try:
            parsed = cls(**params)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "params"
            raise InvalidInput(f"{where}: {err['msg']}", param=where) from None
        if any(not s for s in parsed.stop):
            raise InvalidInput("stop strings must not be empty", param="stop")
        return parsed

    @property
    def sampling(self) -> bool:
        """Whether tokens are sampled (else greedy): ``do_sample`` at a temperature that is
        unset (1.0) or at least `GREEDY_BELOW`."""
        return self.do_sample and (self.temperature is None or self.temperature >= GREEDY_BELOW)

    def fit(self, prompt_tokens: int, limit: int | None) -> GenerationParams:
        """These params for a prompt of ``prompt_tokens`` on a model whose context holds
        ``limit`` tokens (None: no known limit). A prompt that fills the context, or a
        ``max_new_tokens`` the context has no room for, is a `ContextLengthError`; with
        `fit_context` (a server default) the budget is cut to the room left instead."""
        if limit is None:
            return self
        if prompt_tokens >= limit:
            raise ContextLengthError(prompt_tokens, self.max_new_tokens, limit)
        room = limit - prompt_tokens
        if self.max_new_tokens <= room:
            return self
        if not self.fit_context:
            raise ContextLengthError(prompt_tokens, self.max_new_tokens, limit)
        update: dict[str, Any] = {"max_new_tokens": room}
        if self.min_new_tokens is not None and self.min_new_tokens > room:
            update["min_new_tokens"] = room
        return self.model_copy(update=update)


def context_limit(tokenizer: Any, config: Any) -> int:
    """How many tokens, prompt and generated together, a decoder's context holds: the model's
    own limit (``max_position_embeddings``/``n_positions``, a GGUF file's context length as
    transformers reads it, or the tokenizer's ``model_max_length``; else 512), the same number
    TGI's ``/info`` reports."""
    from .text import max_length

    return max_length(tokenizer, config)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run transformers' ``generate`` with torch's global generator seeded by ``seed``, then
    reseed it from fresh entropy, so requests after a seeded one do not repeat each other
    (``generate`` takes no generator of its own)."""
    import torch

    if seed is None:
        yield
        return
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.seed()


def stop_ids(generation_config: Any, tokenizer: Any) -> set[int]:
    """The ids that end a sequence: the generation config's EOS (one id or a list), else the
    tokenizer's; every engine and `TextGenerator` read them this way."""
    eos = getattr(generation_config, "eos_token_id", None)
    eos = eos if eos is not None else getattr(tokenizer, "eos_token_id", None)
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def checkpoint_generation(location: str, kwargs: dict[str, Any]) -> Any:
    """A checkpoint's ``generation_config.json`` (None when it has none, e.g. a GGUF file):
    for engines that load no transformers model to read it from."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(location, **kwargs)
    except (OSError, ValueError):
        return None


#: The tasks whose handlers generate token by token (`TextGenerator`, the engines): the one
#: statement of the set (exports skip them; CUDA graphs and TensorRT never take them).
GENERATION_TASKS = frozenset({"text_generation", "text2text_generation", "image_to_text"})


def token_ids(prompt: Any) -> bool:
    """Whether a prompt is given as token ids (a non-empty list of ints, as OpenAI allows)."""
    return isinstance(prompt, list) and bool(prompt) and all(type(t) is int for t in prompt)


def checked_ids(tokenizer: Any, ids: list[int]) -> list[int]:
    """Token ids of a prompt, each inside the tokenizer's vocabulary (else `InvalidInput`)."""
    vocab = len(tokenizer)
    if any(t < 0 or t >= vocab for t in ids):
        raise InvalidInput(f"token ids must lie in [0, {vocab})", param="inputs")
    return list(ids)


def prompt_texts(
    tokenizer: Any, inputs: list[Any], tools: list[dict[str, Any]] | None = None
) -> list[str]:
    """Plain strings pass through; a list of chat messages goes through the chat template
    (with ``tools`` rendered, when given)."""
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs must be a non-empty list of prompts", param="inputs")
    texts = []
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list) and all(isinstance(m, dict) and "role" in m for m in item):
            if not getattr(tokenizer, "chat_template", None):
                raise InvalidInput("this model has no chat template; send a plain prompt")
            extra: dict[str, Any] = {"tools": tools} if tools else {}
            if tool_prompt.uses_tools(item, tools) and not tool_prompt.knows_tools(
                tokenizer.chat_template
            ):
                item, extra = tool_prompt.plain(item, tools), {}
            texts.append(
                tokenizer.apply_chat_template(
                    item, tokenize=False, add_generation_prompt=True, **extra
                )
            )
        else:
            raise InvalidInput(
                f"inputs[{i}] must be a string or a list of chat messages", param="inputs"
            )
    return texts


class _Cancel:
    """A stopping criterion that ends generation once its event is set (consumer gone)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class _Logprobs:
    """Each generated token's logprob in ``generate`` calls (the path without an engine): a
    forward hook keeps, per thread, the next-token logits of the model's latest forward pass
    (raw: before ``generate``'s processors and warpers), and `take`, called by the streamer in
    the same thread right after the step's tokens were chosen, reads each row's."""

    def __init__(self, model: Any, top: int, rows: int) -> None:
        self.top = top
        self.rows: list[list[TokenLogprob]] = [[] for _ in range(rows)]
        self.local = threading.local()
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, module: Any, args: Any, output: Any) -> None:
        logits = getattr(output, "logits", None)
        if logits is not None:
            self.local.logits = logits[:, -1]

    def take(self, tokens: list[int]) -> list[TokenLogprob]:
        found = logprobs_of(self.local.logits, tokens, self.top)
        for row, item in zip(self.rows, found, strict=True):
            row.append(item)
        return found

    def close(self) -> None:
        self.handle.remove()


class _QueueStreamer:
    """transformers streamer protocol (``put``/``end``) feeding new token ids, each with its
    logprob when ``logprobs`` records them (else None), into a queue."""

    def __init__(self, skip_first: bool, logprobs: _Logprobs | None = None) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()
        self.skip_first = skip_first
        self.logprobs = logprobs

    def put(self, value: Any) -> None:
        if self.skip_first:  # decoder-only models echo the prompt (and seq2seq the start token)
            self.skip_first = False
            return
        tokens = [int(t) for t in value.reshape(-1).tolist()]
        found = self.logprobs.take(tokens) if self.logprobs is not None else [None] * len(tokens)
        for token, logprob in zip(tokens, found, strict=True):
            self.queue.put((token, logprob))

    def end(self) -> None:
        self.queue.put(None)


class TextGenerator:
    """Batch and streaming generation for one loaded endpoint.

    ``decoder_only`` models get left padding and their prompt cut from the output; seq2seq and
    image-to-text models (``encode`` builds their inputs) start from the decoder start token.
    """

    def __init__(self, model: Any, tokenizer: Any, device: str, *, decoder_only: bool) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.decoder_only = decoder_only
        self.adapters = adapters.served(model)  # LoRA adapters on it (adapters.py)
        self.eos_ids = stop_ids(getattr(model, "generation_config", None), tokenizer)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0)
        if decoder_only and hasattr(tokenizer, "padding_side"):
            tokenizer.padding_side = "left"

    # -- inputs ------------------------------------------------------------------------------
    def encode_prompts(
        self, inputs: list[Any], tools: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        if isinstance(inputs, list) and inputs and all(token_ids(x) for x in inputs):
            ids = [checked_ids(self.tokenizer, x) for x in inputs]  # prompts given as token ids
            batch = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
            return {key: value.to(self.device) for key, value in batch.items()}
        texts = prompt_texts(self.tokenizer, inputs, tools)
        batch = self.tokenizer(texts, padding=True, return_tensors="pt")
        if batch["input_ids"].shape[1] == 0:
            raise InvalidInput("a prompt must not be empty", param="inputs")
        return {key: value.to(self.device) for key, value in batch.items()}

    def generate_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        """transformers' ``generate`` arguments (the seed is applied by `seeded`)."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": params.sampling,
        }
        if self.decoder_only:  # left-padded prompts: generate must know the pad id
            kwargs["pad_token_id"] = self.pad_id
        if params.sampling:
            kwargs.update(
                temperature=params.temperature or 1.0,
                top_p=params.top_p or 1.0,
                top_k=params.top_k if params.top_k is not None else 0,
            )
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.repetition_penalty is not None:
            kwargs["repetition_penalty"] = params.repetition_penalty
        if params.ignore_eos:
            kwargs["min_new_tokens"] = params.max_new_tokens
        elif params.min_new_tokens is not None:
            kwargs["min_new_tokens"] = min(params.min_new_tokens, params.max_new_tokens)
        if params.stop:
            kwargs.update(stop_strings=params.stop, tokenizer=self.tokenizer)
        return kwargs

    def guided(
        self, kwargs: dict[str, Any], batch: dict[str, Any], params: GenerationParams
    ) -> None:
        """Add a `constraints.GuidedLogits` to ``generate``'s arguments, one guide per row,
        when ``params`` has a constraint."""
        if params.constraint is None:
            return
        from transformers import LogitsProcessorList

        from . import constraints

        config = self.model.config
        vocab = getattr(config.get_text_config(decoder=True), "vocab_size", None) or len(
            self.tokenizer
        )
        rows = len(next(iter(batch.values())))
        guides = [
            constraints.guide(params.constraint, self.tokenizer, vocab, self.eos_ids)
            for _ in range(rows)
        ]
        start = batch["input_ids"].shape[1] if self.decoder_only else 1
        kwargs["logits_processor"] = LogitsProcessorList([constraints.GuidedLogits(guides, start)])

    # -- outputs -----------------------------------------------------------------------------
    def finish(
        self, ids: list[int], params: GenerationParams, prompt_tokens: int
    ) -> dict[str, Any]:
        """One result: cut at EOS, then at the first stop string; say why it ended."""
        reason = "length"
        for i, token in enumerate(ids):
            if token in self.eos_ids and not params.ignore_eos:
                ids, reason = ids[:i], "stop"
                break
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        stop = _find_stop(text, params.stop)
        if stop is not None:
            text, reason = text[: stop[0]], "stop"
            ids = self._tokens_until(ids, params.stop)
        return {
            "text": text,
            "token_ids": ids,
            "stop_sequence": stop[1] if stop else None,
            "finish_reason": reason,
            "prompt_tokens": prompt_tokens,
        }

    def _tokens_until(self, ids: list[int], stops: list[str]) -> list[int]:
        """The shortest prefix of ``ids`` whose text holds a stop string (pads after it dropped)."""
        for end in range(1, len(ids) + 1):
            if (
                _find_stop(self.tokenizer.decode(ids[:end], skip_special_tokens=True), stops)
                is not None
            ):
                return ids[:end]
        return ids

    # -- logprobs ----------------------------------------------------------------------------
    def _logprobs(self, batch: dict[str, Any], params: GenerationParams) -> _Logprobs | None:
        """The recorder of this call's logprobs (None when not asked)."""
        if params.logprobs is None:
            return None
        return _Logprobs(self.model, params.logprobs, len(next(iter(batch.values()))))

    def _prompt_logprobs(
        self, batch: dict[str, Any], params: GenerationParams
    ) -> list[list[TokenLogprob] | None]:
        """Each prompt's logprobs when asked: one forward pass per prompt, without padding."""
        rows = len(next(iter(batch.values())))
        if params.prompt_logprobs is None:
            return [None] * rows
        if not self.decoder_only:
            raise InvalidInput(
                "prompt_logprobs: an encoder-decoder model does not predict its input",
                param="prompt_logprobs",
            )
        import torch

        found: list[list[TokenLogprob] | None] = []
        mask = batch.get("attention_mask")
        with torch.inference_mode():
            for row, ids in enumerate(batch["input_ids"]):
                ids = ids[mask[row].bool()] if mask is not None else ids
                logits = self.model(
                    input_ids=ids.unsqueeze(0), **self._adapter({"ids": [0]}, params)
                ).logits[0]
                found.append(prompt_logprobs(logits, ids.tolist(), params.prompt_logprobs))
        return found

    def _adapter(self, batch: dict[str, Any], params: GenerationParams) -> dict[str, Any]:
        """Every row of a batch runs ``params.adapter`` (a batch shares its params)."""
        rows = len(next(iter(batch.values())))
        return adapters.forward_kwargs(self.adapters, [params.adapter] * rows)

    # -- batch -------------------------------------------------------------------------------
    def generate(self, batch: dict[str, Any], params: GenerationParams) -> list[dict[str, Any]]:
        """Run one batch; ``batch`` holds the model inputs (prompts or pixel values)."""
        kwargs = self.generate_kwargs(params) | self._adapter(batch, params)
        self.guided(kwargs, batch, params)
        prompts = self._prompt_logprobs(batch, params)
        recorder = self._logprobs(batch, params)
        if recorder is not None:  # the streamer is where each step's tokens are known
            kwargs["streamer"] = _QueueStreamer(skip_first=True, logprobs=recorder)
        try:
            with seeded(params.seed):
                out = self.model.generate(**batch, **kwargs)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise InferenceError(f"generation failed: {exc}") from exc
        finally:
            if recorder is not None:
                recorder.close()
        prompt_len = batch["input_ids"].shape[1] if self.decoder_only else 0
        start = prompt_len if self.decoder_only else 1  # seq2seq: skip the decoder start token
        mask = batch.get("attention_mask")
        results = []
        for row, sequence in enumerate(out.tolist()):
            prompt_tokens = int(mask[row].sum()) if mask is not None else prompt_len
            result = self.finish(sequence[start:], params, prompt_tokens)
            if recorder is not None:  # one per token kept (EOS and what follows it cut)
                kept = recorder.rows[row][: len(result["token_ids"])]
                result["logprobs"] = [lp.as_dict() for lp in kept]
            if prompts[row] is not None:
                result["prompt_logprobs"] = [lp.as_dict() for lp in prompts[row] or ()]
            results.append(result)
        return results

    # -- stream ------------------------------------------------------------------------------
    def stream(self, batch: dict[str, Any], params: GenerationParams) -> Iterator[dict[str, Any]]:
        """Yield ``{"token_id", "text", "finish_reason"}`` per token; the last event also has
        ``generated_text``, ``token_ids`` and ``prompt_tokens``. Closing the iterator early
        (a client that went away) stops generation at the next token."""
        from transformers import StoppingCriteriaList

        cancel = _Cancel()
        prompts = self._prompt_logprobs(batch, params)  # before generate runs beside it
        recorder = self._logprobs(batch, params)
        streamer = _QueueStreamer(skip_first=True, logprobs=recorder)
        kwargs = self.generate_kwargs(params) | self._adapter(batch, params)
        kwargs.pop("stop_strings", None), kwargs.pop("tokenizer", None)  # handled below
        self.guided(kwargs, batch, params)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with seeded(params.seed):
                    self.model.generate(
                        **batch,
                        **kwargs,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([cancel]),
                    )
            except BaseException as exc:  # surfaced to the consumer below
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, name="hfskills-generate", daemon=True)
        thread.start()
        prompt_tokens = int(batch["attention_mask"][0].sum()) if "attention_mask" in batch else 0
        text = TokenText(self.tokenizer, params, self.eos_ids, prompt_tokens)
        text.prompt_logprobs = prompts[0]
        try:
            while not text.done and (item := streamer.queue.get()) is not None:
                event = text.add(*item)
                if event is not None:
                    yield event.as_dict()
            if errors:
                raise InferenceError(f"generation failed: {errors[0]}")
            yield text.final().as_dict()
        finally:
            cancel.event.set()
            thread.join(timeout=60)
            if recorder is not None:
                recorder.close()


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One token's log-probability, and the most likely tokens at its position when asked
    (``top``: ``(token id, logprob)``, most likely first; empty when not asked).

    Every engine reports the model's raw distribution: the log-softmax of its logits before
    any sampling parameter (temperature, top-k/top-p, repetition penalty, a grammar's mask)
    touched them, as vLLM's default ``logprobs_mode`` ("raw_logprobs") and OpenVINO GenAI do.
    ``logprob`` is None for a prompt's first token, which nothing predicts."""

    token_id: int
    logprob: float | None
    top: tuple[tuple[int, float], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "logprob": self.logprob,
            "top": [list(t) for t in self.top],
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> TokenLogprob:
        top = tuple((int(i), float(lp)) for i, lp in data.get("top") or ())
        logprob = data.get("logprob")
        return cls(int(data["token_id"]), None if logprob is None else float(logprob), top)


def logprobs_of(logits: Any, tokens: list[int], top: int = 0) -> list[TokenLogprob]:
    """``tokens[i]``'s log-probability under row ``i`` of ``logits`` (``[len(tokens), vocab]``,
    the model's raw scores), with the ``top`` most likely tokens of each row (none when 0:
    the top-k costs a sort of the vocabulary, so it is computed only when asked)."""
    import torch

    rows = torch.log_softmax(logits.float(), dim=-1)
    index = torch.tensor(tokens, dtype=torch.long, device=rows.device).unsqueeze(-1)
    chosen = rows.gather(-1, index).squeeze(-1).tolist()
    if not top:
        return [TokenLogprob(t, lp) for t, lp in zip(tokens, chosen, strict=True)]
    values, ids = rows.topk(min(top, rows.shape[-1]), dim=-1)
    return [
        TokenLogprob(t, lp, tuple(zip(i, v, strict=True)))
        for t, lp, i, v in zip(tokens, chosen, ids.tolist(), values.tolist(), strict=True)
    ]


def prompt_logprobs(logits: Any, prompt: list[int], top: int) -> list[TokenLogprob]:
    """A prompt's logprobs from its prefill's ``logits`` (``[len(prompt), vocab]``): each token
    under the position before it; the first, which nothing predicts, without one."""
    return [TokenLogprob(prompt[0], None), *logprobs_of(logits[:-1], prompt[1:], top)]


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """One generated token: its id and the text it adds (empty while text is held back); its
    `TokenLogprob` when the request asked (``GenerationParams.logprobs``), and on a sequence's
    first token the prompt's (``prompt_logprobs``, first entry without a logprob)."""

    token_id: int
    text: str
    finish_reason: None = None
    logprob: TokenLogprob | None = None
    prompt_logprobs: list[TokenLogprob] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready event a skill's ``handler.stream`` yields."""
        event: dict[str, Any] = {
            "token_id": self.token_id,
            "text": self.text,
            "finish_reason": None,
        }
        if self.logprob is not None:
            event["logprob"] = self.logprob.as_dict()
        if self.prompt_logprobs is not None:
            event["prompt_logprobs"] = [p.as_dict() for p in self.prompt_logprobs]
        return event


@dataclass(frozen=True, slots=True)
class FinalEvent:
    """A sequence's end: the text not yet sent, the whole text, its token ids, why it ended
    (``stop`` or ``length``), the prompt's tokens and the stop string that cut it."""

    text: str
    generated_text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    stop_sequence: str | None = None
    token_id: None = None
    #: Generated tokens when there are no ids to count (a remote model's usage); see
    #: `generated_tokens`.
    completion_tokens: int | None = None
    #: One `TokenLogprob` per token of ``token_ids`` when the request asked for logprobs, and
    #: the prompt's when it asked for ``prompt_logprobs`` (the first without a logprob).
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob] | None = None

    @property
    def generated_tokens(self) -> int:
        """How many tokens the sequence generated."""
        return len(self.token_ids) if self.completion_tokens is None else self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready event a skill's ``handler.stream`` yields last."""
        return {
            "token_id": None,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "generated_text": self.generated_text,
            "token_ids": self.token_ids,
            "prompt_tokens": self.prompt_tokens,
            "stop_sequence": self.stop_sequence,
            **self._logprobs(),
        }

    def _logprobs(self) -> dict[str, Any]:
        """The logprobs as JSON-ready lists (keys only for what was asked)."""
        out: dict[str, Any] = {}
        if self.logprobs is not None:
            out["logprobs"] = [lp.as_dict() for lp in self.logprobs]
        if self.prompt_logprobs is not None:
            out["prompt_logprobs"] = [lp.as_dict() for lp in self.prompt_logprobs]
        return out

    def result(self) -> dict[str, Any]:
        """The batch handler's result for this sequence."""
        result = {
            "text": self.generated_text,
            "token_ids": self.token_ids,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "stop_sequence": self.stop_sequence,
        }
        if self.completion_tokens is not None:
            result["completion_tokens"] = self.completion_tokens
        result.update(self._logprobs())
        return result


def generated_tokens(result: dict[str, Any]) -> int:
    """How many tokens a generation result generated: its token ids, or the
    ``completion_tokens`` a result without ids reports (a remote model's,
    host/control/remote.py)."""
    count = result.get("completion_tokens")
    return len(result["token_ids"]) if count is None else int(count)


#: What engines report per sequence: a `TokenEvent` per token, then one `FinalEvent`.
Event = TokenEvent | FinalEvent


def event_of(data: dict[str, Any]) -> Event:
    """A skill stream's JSON event as a typed one."""
    prompt = data.get("prompt_logprobs")
    prompt_logprobs = None if prompt is None else [TokenLogprob.of(p) for p in prompt]
    if data.get("finish_reason") is None:
        logprob = data.get("logprob")
        return TokenEvent(
            int(data["token_id"]),
            str(data["text"]),
            logprob=None if logprob is None else TokenLogprob.of(logprob),
            prompt_logprobs=prompt_logprobs,
        )
    logprobs = data.get("logprobs")
    return FinalEvent(
        text=data["text"],
        generated_text=data["generated_text"],
        token_ids=list(data["token_ids"]),
        finish_reason=data["finish_reason"],
        prompt_tokens=int(data.get("prompt_tokens", 0)),
        stop_sequence=data.get("stop_sequence"),
        logprobs=None if logprobs is None else [TokenLogprob.of(p) for p in logprobs],
        prompt_logprobs=prompt_logprobs,
    )


class TokenText:
    """Generated token ids -> streamed text, for one sequence.

    EOS (unless ``ignore_eos``), a stop string or ``max_new_tokens`` ends it. Text that could
    still grow into a stop string is held back, and an incomplete UTF-8 sequence waits for the
    next token. `add` returns the token's event (None for the EOS that ended it); `final`
    returns the last event, with the whole text, the token ids and why it ended. An engine
    that reports logprobs hands each token's to `add` and the prompt's to ``prompt_logprobs``
    before the first token: the first event carries the prompt's, `final` both.
    """

    def __init__(
        self, tokenizer: Any, params: GenerationParams, eos_ids: set[int], prompt_tokens: int
    ) -> None:
        self.tokenizer, self.params, self.eos_ids = tokenizer, params, eos_ids
        self.prompt_tokens = prompt_tokens
        self.ids: list[int] = []
        self.logprobs: list[TokenLogprob] | None = [] if params.logprobs is not None else None
        self.prompt_logprobs: list[TokenLogprob] | None = None
        self.sent = ""  # text already yielded
        self.reason: str | None = None  # why it ended; None while it runs

    @property
    def done(self) -> bool:
        return self.reason is not None

    def add(self, token: int, logprob: TokenLogprob | None = None) -> TokenEvent | None:
        if token in self.eos_ids and not self.params.ignore_eos:
            self.reason = "stop"
            return None
        self.ids.append(token)
        if self.logprobs is not None and logprob is not None:
            self.logprobs.append(logprob)
        event = self._event(token)
        prompt = self.prompt_logprobs if len(self.ids) == 1 else None
        if logprob is None and prompt is None:
            return event
        return TokenEvent(token, event.text, logprob=logprob, prompt_logprobs=prompt)

    def _event(self, token: int) -> TokenEvent:
        if len(self.ids) >= self.params.max_new_tokens:
            self.reason = "length"
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        stop = _find_stop(text, self.params.stop)
        if stop is not None:
            delta, self.sent, self.reason = text[len(self.sent) : stop[0]], text[: stop[0]], "stop"
            return TokenEvent(token, delta)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for more
            return TokenEvent(token, "")
        safe = len(text) - _partial_stop(text, self.params.stop)
        delta = text[len(self.sent) : max(safe, len(self.sent))]
        self.sent += delta
        return TokenEvent(token, delta)

    def final(self) -> FinalEvent:
        full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        stop = _find_stop(full, self.params.stop)
        final = full if stop is None else full[: stop[0]]
        return FinalEvent(
            text=final[len(self.sent) :],
            generated_text=final,
            token_ids=self.ids,
            finish_reason=self.reason or "length",
            prompt_tokens=self.prompt_tokens,
            stop_sequence=stop[1] if stop else None,
            logprobs=self.logprobs,
            prompt_logprobs=self.prompt_logprobs,
        )


def _partial_stop(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that could still grow into a stop string."""
    tails = (n for s in stops for n in range(min(len(s) - 1, len(text)), 0, -1))
    return max((n for n in tails if any(text.endswith(s[:n]) for s in stops)), default=0)


def _find_stop(text: str, stops: list[str]) -> tuple[int, str] | None:
    """Where the earliest stop string starts in ``text``, and which one it is; or None."""
    hits = [(i, s) for s, i in ((s, text.find(s)) for s in stops) if i >= 0]
    return min(hits) if hits else None
