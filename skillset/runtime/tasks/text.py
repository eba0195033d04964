"""Text encoder tasks, once for every architecture: embeddings, fill-mask, sequence and token
classification, extractive question answering.

Each handler is `Staged`: prepare (tokenize, off the event loop) -> forward (one padded batch,
a checked TorchScript trace on the CPU) -> finish (pooling, labels, spans). Architectures differ
only by declared `Task.variant`: ``joint`` text embeddings come from a vision-text model's
``get_text_features`` (CLIP; ``joint_padded``: SigLIP, padded to max_length) instead of pooling
hidden states; ``unpadded`` batches
hold inputs of one length only (`Staged.same_length`), for architectures whose every position
mixes with the padded ones (the generator's `UNPADDED` table says which and why).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import labels, media, pooling, spans, staged, text, torch_backend
from ..endpoint import Endpoint, Handler
from ..errors import InvalidInput
from ..skill import Task
from ..staged import Prepared, Staged


def _prepare_texts(endpoint: Endpoint, config: Any = None, extra: int | None = None) -> Any:
    tokenizer = endpoint.processor
    limit = text.max_length(tokenizer, config or endpoint.config, extra)

    def prepare(inputs: list[Any], *, truncate: bool = True) -> list[Prepared]:
        return text.prepare(tokenizer, inputs, limit=limit, truncate=truncate)

    return prepare


def _features(endpoint: Endpoint, batch: list[Prepared]) -> dict[str, Any]:
    """The padded batch, reduced to what the model's forward takes, on the endpoint's device."""
    features = text.collate(endpoint.processor, batch)
    return torch_backend.place(torch_backend.accepted_inputs(endpoint.model, features), endpoint)


def text_embedding(endpoint: Endpoint, task: Task) -> Handler:
    """Embed texts (strings or token-id lists): one `list[float]` per input.

    Pooling and normalisation follow the checkpoint's sentence-transformers files when it
    has them (all-MiniLM-L6-v2: mean pooling, L2-normalised), else mean pooling, normalised.
    Params: `normalize` (bool), `dimensions` (keep the first N values), `truncate` (bool).
    Variant ``joint``: the text tower of a vision-text model (`get_text_features`), the raw
    projection unless `normalize`.
    """
    if task.variant in ("joint", "joint_padded"):
        return _joint_text_embedding(endpoint, padded=task.variant == "joint_padded")
    pool = pooling.from_checkpoint(endpoint.settings["checkpoint"])
    prepare = _prepare_texts(endpoint, extra=pool.max_seq_length)
    hidden_states = staged.traced_on_cpu(endpoint, lambda output: output.last_hidden_state)

    def forward(batch: list[Prepared]) -> Any:
        features = _features(endpoint, batch)
        with torch.inference_mode():
            return hidden_states(features), features["attention_mask"]

    def finish(
        batch: list[Prepared],
        output: Any,
        *,
        normalize: bool | None = None,
        dimensions: int | None = None,
    ) -> list[list[float]]:
        hidden, mask = output
        with torch.inference_mode():
            vectors = pool.pool(hidden, mask, normalize=normalize, dimensions=dimensions)
        return vectors.float().cpu().tolist()

    return _staged(task, prepare, forward, finish)


def _staged(task: Task, prepare: Any, forward: Any, finish: Any) -> Staged:
    return Staged(prepare, forward, finish, same_length=task.variant == "unpadded")


def _joint_text_embedding(endpoint: Endpoint, *, padded: bool) -> Handler:
    """``joint_padded``: texts padded to the model's length, as SigLIP was trained and as its
    pooling (the last position) needs; so a text's vector never depends on its batch."""
    model, tokenizer = endpoint.model, endpoint.processor
    config = endpoint.config.text_config
    prepare = _prepare_texts(endpoint, config)
    length = text.max_length(tokenizer, config) if padded else None

    def forward(batch: list[Prepared]) -> Any:
        features = text.collate(tokenizer, batch, length)
        features = torch_backend.accepted_inputs(model, features, "get_text_features")
        with torch.inference_mode():
            return pooling.features(model.get_text_features(**features))

    return Staged(prepare, forward, pooling.finish_vectors)


def fill_mask(endpoint: Endpoint, task: Task) -> Handler:
    """Predict the masked token: the `top_k` (default 5) candidates per input, each as
    `{score, token, token_str, sequence}`. Every input holds the tokenizer's mask token
    (`endpoint.processor.mask_token`) exactly once.
    """
    tokenizer = endpoint.processor
    limit = text.max_length(tokenizer, endpoint.config)

    def prepare(inputs: list[Any], *, truncate: bool = True) -> list[Prepared]:
        items = text.prepare(tokenizer, media.texts(inputs), limit=limit, truncate=truncate)
        for row, item in enumerate(items):
            item.state["mask"] = text.mask_position(tokenizer, item.features["input_ids"], row)
        return items

    logits_of = staged.traced_on_cpu(endpoint, lambda output: output.logits)

    def forward(batch: list[Prepared]) -> Any:
        positions = torch.tensor([item.state["mask"] for item in batch])
        features = _features(endpoint, batch)
        if tokenizer.padding_side == "left":
            width = features["input_ids"].shape[1]
            positions += width - torch.tensor([item.tokens for item in batch])
        with torch.inference_mode():
            logits = logits_of(features)
        rows = torch.arange(len(batch), device=logits.device)
        return logits[rows, positions.to(logits.device)].float().softmax(dim=-1)

    def finish(batch: list[Prepared], probs: Any, *, top_k: int = 5) -> list[list[dict[str, Any]]]:
        scores, token_ids = probs.topk(labels.top_k_param(top_k, probs.shape[-1]), dim=-1)
        results = []
        for row, item in enumerate(batch):
            candidates = []
            for score, token in zip(scores[row].tolist(), token_ids[row].tolist(), strict=True):
                filled = list(item.features["input_ids"])
                filled[item.state["mask"]] = token
                candidates.append(
                    {
                        "score": score,
                        "token": token,
                        "token_str": tokenizer.decode([token]).strip(),
                        "sequence": tokenizer.decode(filled, skip_special_tokens=True),
                    }
                )
            results.append(candidates)
        return results

    return _staged(task, prepare, forward, finish)


def text_classification(endpoint: Endpoint, task: Task) -> Handler:
    """Classify texts, or text pairs: `[{label, score}, ...]` per input, highest score first,
    labels from the checkpoint's `id2label`. An input is a string, a token-id list, or
    ``{"text", "text_pair"}`` (transformers' pipeline: the tokenizer's pair encoding, as a
    cross-encoder scores a query and a document; a pair too long loses tokens from its longer
    text first, as sentence-transformers' CrossEncoder truncates). Params: `top_k` (default:
    all labels), `function_to_apply` (softmax | sigmoid | none; default from the checkpoint:
    sigmoid for one label), `truncate`.
    """
    logits_of = staged.traced_on_cpu(endpoint, lambda output: output.logits)

    def forward(batch: list[Prepared]) -> Any:
        features = _features(endpoint, batch)
        with torch.inference_mode():
            return logits_of(features)

    return _staged(task, _prepare_pairs(endpoint), forward, labels.finish_ranked(endpoint.config))


def _prepare_pairs(endpoint: Endpoint) -> Any:
    """`_prepare_texts`, where an input may also be ``{"text", "text_pair"}``: singles and
    pairs are tokenized apart (one tokenizer call each) and kept in input order."""
    tokenizer = endpoint.processor
    limit = text.max_length(tokenizer, endpoint.config)

    def prepare(inputs: list[Any], *, truncate: bool = True) -> list[Prepared]:
        if not isinstance(inputs, list) or not any(isinstance(x, dict) for x in inputs):
            return text.prepare(tokenizer, inputs, limit=limit, truncate=truncate)
        singles: list[tuple[int, Any]] = []
        pairs: list[tuple[int, str, str]] = []
        for row, item in enumerate(inputs):
            if not isinstance(item, dict):
                singles.append((row, item))
                continue
            first, second = text_pair(item, row)
            if second is None:
                singles.append((row, first))
            else:
                pairs.append((row, first, second))
        items: list[Any] = [None] * len(inputs)
        if singles:
            done = text.prepare(tokenizer, [x for _, x in singles], limit=limit, truncate=truncate)
            for (row, _), item in zip(singles, done, strict=True):
                items[row] = item
        if pairs:
            done = text.prepare(
                tokenizer,
                [a for _, a, _ in pairs],
                limit=limit,
                truncate=truncate,
                pairs=[b for _, _, b in pairs],
                pair_truncation="longest_first",
            )
            for (row, _, _), item in zip(pairs, done, strict=True):
                items[row] = item
        return items

    return prepare


def text_pair(item: dict[str, Any], row: int) -> tuple[str, str | None]:
    """``{"text": str, "text_pair": str}`` (``text_pair`` optional) as (text, pair)."""
    unknown = set(item) - {"text", "text_pair"}
    first, second = item.get("text"), item.get("text_pair")
    if (
        unknown
        or not isinstance(first, str)
        or not first
        or not (second is None or (isinstance(second, str) and second))
    ):
        raise InvalidInput(
            f"inputs[{row}] must be a string, or {{text: str, text_pair: str}} with non-empty "
            "texts",
            param="inputs",
        )
    return first, second


def token_classification(endpoint: Endpoint, task: Task) -> Handler:
    """Label tokens (named entities...): per input a list of
    `{entity, score, index, word, start, end}` with character offsets into the input, or with
    `aggregation_strategy="simple"` merged spans `{entity_group, score, word, start, end}`.
    Labels in `ignore_labels` (default `["O"]`) are left out.
    """
    tokenizer = endpoint.processor
    limit = text.max_length(tokenizer, endpoint.config)

    def prepare(inputs: list[Any], *, truncate: bool = True) -> list[Prepared]:
        texts = media.texts(inputs)
        items = text.prepare(tokenizer, texts, limit=limit, truncate=truncate, offsets=True)
        for item, said in zip(items, texts, strict=True):
            ids = item.features["input_ids"]
            special = tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
            item.state.update(text=said, special=special)
        return items

    logits_of = staged.traced_on_cpu(endpoint, lambda output: output.logits)

    def forward(batch: list[Prepared]) -> Any:
        features = _features(endpoint, batch)
        with torch.inference_mode():
            return logits_of(features).float().softmax(dim=-1).cpu()

    def finish(
        batch: list[Prepared],
        probs: Any,
        *,
        aggregation_strategy: str = "none",
        ignore_labels: list[str] | None = None,
    ) -> list[list[dict[str, Any]]]:
        ignore = tuple(ignore_labels) if ignore_labels is not None else ("O",)
        left = tokenizer.padding_side == "left"
        results = []
        for row, item in enumerate(batch):
            state, n = item.state, item.tokens
            tokens = probs[row, probs.shape[1] - n :] if left else probs[row, :n]
            special = torch.tensor(state["special"], dtype=torch.bool)
            offsets = torch.tensor(state["offsets"], dtype=torch.long).reshape(n, 2)
            results.append(
                spans.entities(
                    state["text"],
                    tokens,
                    offsets,
                    special,
                    endpoint.config,
                    aggregation_strategy,
                    ignore,
                )
            )
        return results

    return _staged(task, prepare, forward, finish)


def question_answering(endpoint: Endpoint, task: Task) -> Handler:
    """Extract answers: each input is `{question, context}`, each result
    `{answer, score, start, end}`, a span of the context (character offsets).
    Params: `max_answer_len` (tokens, default 15), `truncate` (cuts the context).
    """
    tokenizer = endpoint.processor
    limit = text.max_length(tokenizer, endpoint.config)

    def prepare(inputs: list[Any], *, truncate: bool = True) -> list[Prepared]:
        questions, contexts = spans.qa_pairs(inputs)
        items = text.prepare(
            tokenizer, questions, limit=limit, truncate=truncate, pairs=contexts, offsets=True
        )
        for item, context in zip(items, contexts, strict=True):
            item.state["context"] = context
        return items

    # start and end logits stacked: one tensor, as a trace returns
    logits_of = staged.traced_on_cpu(
        endpoint, lambda output: torch.stack((output.start_logits, output.end_logits))
    )

    def forward(batch: list[Prepared]) -> Any:
        features = _features(endpoint, batch)
        with torch.inference_mode():
            starts, ends = logits_of(features).cpu()
        return starts, ends

    def finish(
        batch: list[Prepared], logits: Any, *, max_answer_len: int = 15
    ) -> list[dict[str, Any]]:
        starts, ends = logits
        left = tokenizer.padding_side == "left"
        results = []
        for row, item in enumerate(batch):
            n, state = item.tokens, item.state
            span = slice(starts.shape[1] - n, None) if left else slice(0, n)
            in_context = torch.tensor([sid == 1 for sid in state["sequence_ids"]], dtype=torch.bool)
            offsets = torch.tensor(state["offsets"], dtype=torch.long).reshape(n, 2)
            results.append(
                spans.best_answer(
                    starts[row, span],
                    ends[row, span],
                    offsets,
                    in_context,
                    state["context"],
                    max_answer_len,
                )
            )
        return results

    return _staged(task, prepare, forward, finish)
