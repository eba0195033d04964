"""Scoring API models: rerank (vLLM's, Cohere's and Jina's ``/v1/rerank`` and ``/v2/rerank``;
TEI's ``/rerank``), vLLM's ``/score`` (text pairs -> scores, in pair order) and TEI's
``/predict`` (sequence classification of texts or text pairs).

A rerank or score rates each (query, document) pair with a cross-encoder: a
``text_classification`` model with one label, whose logit's sigmoid is the relevance (TEI,
sentence-transformers' CrossEncoder and vLLM all default to it); ``raw_scores`` (TEI) or
``use_activation: false`` (vLLM) give the logit itself. An embedding model (a bi-encoder)
rates a pair by the cosine similarity of its two texts' embeddings, as vLLM and Infinity do;
the activation switches do not apply to it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .openai import NonEmptyStr, Request, Usage

#: At most this many documents (or texts) per rerank request: each is one pair through the
#: model, in one call to its batcher.
MAX_DOCUMENTS = 1000


class DocumentText(BaseModel):
    """Cohere's document object (``{"text": ...}``); other keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    text: NonEmptyStr


Document = Annotated[str, Field(min_length=1)] | DocumentText


#: What a scoring request's ``model`` may name.
SCORER = (
    "a cross-encoder (a text_classification model with one label) or an embedding model "
    "(cosine similarity), a route or auto; default: default_models.rerank, else the first "
    "served cross-encoder"
)


class RerankRequest(Request):
    """``POST /v1/rerank`` and ``/v2/rerank`` (vLLM, Cohere v1/v2, Jina): score ``documents``
    against ``query``."""

    model: str | None = Field(None, min_length=1, description=SCORER)
    query: NonEmptyStr
    documents: list[Document] = Field(..., min_length=1, max_length=MAX_DOCUMENTS)
    top_n: int | None = Field(
        None, ge=0, description="keep the N best results (0 or absent: all, as vLLM)"
    )
    return_documents: bool = Field(True, description="each result carries its document")
    use_activation: bool | None = Field(
        None, description="vLLM: false gives the raw logit instead of its sigmoid"
    )
    user: str | None = None

    @field_validator("documents", mode="before")
    @classmethod
    def _documents(cls, value: Any) -> Any:
        # each document read here, to its text: as a union, a refused document would be
        # named by its branch (``documents[0].constrained-str``) with the first branch's
        # complaint ("a valid string") even when it was an object whose text was empty
        if not isinstance(value, list):
            return value  # the list's own type error
        texts = []
        for i, document in enumerate(value):
            text = document.get("text") if isinstance(document, dict) else document
            if not isinstance(text, str) or not text:
                raise ValueError(
                    f"documents[{i}] must be a non-empty string or an object with a non-empty "
                    '"text"'
                )
            texts.append(text)
        return texts

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    usage: RerankUsage
    results: list[RerankResult]


# -- vLLM's score -------------------------------------------------------------------------------


class ScoreRequest(Request):
    """vLLM's ``POST /score`` and ``/v1/score``: one score per (``text_1``, ``text_2``) pair.
    Either is a string or a list; one ``text_1`` pairs with each ``text_2`` (1:N), else the
    lists pair up in order (N:N), as vLLM pairs them."""

    model: str | None = Field(None, min_length=1, description=SCORER)
    text_1: str | list[str] = Field(..., description="the queries: one, or one per text_2")
    text_2: str | list[str] = Field(..., description="the texts scored against text_1")
    use_activation: bool | None = Field(
        None, description="false gives a cross-encoder's raw logit instead of its sigmoid"
    )
    user: str | None = None

    @field_validator("text_1", "text_2")
    @classmethod
    def _texts(cls, value: str | list[str]) -> str | list[str]:
        # checked here, not by constrained types in the union: a union's error names its
        # branch (``text_2.constrained-str``) and only the first branch's complaint
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("give a text or a non-empty list of texts")
        if len(texts) > MAX_DOCUMENTS:
            raise ValueError(f"at most {MAX_DOCUMENTS} texts")
        if not all(texts):
            raise ValueError("a text must not be empty")
        return value

    def pairs(self) -> tuple[list[str], list[str]]:
        """The pairs' first and second texts, in order; ValueError unless 1:1, 1:N or N:N."""
        firsts = [self.text_1] if isinstance(self.text_1, str) else list(self.text_1)
        seconds = [self.text_2] if isinstance(self.text_2, str) else list(self.text_2)
        if len(firsts) == 1:
            return firsts * len(seconds), seconds
        if len(firsts) != len(seconds):
            raise ValueError(
                f"text_1 has {len(firsts)} texts and text_2 {len(seconds)}: give one text_1 "
                "(scored against every text_2) or as many as text_2 (paired in order)"
            )
        return firsts, seconds


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: Usage


# -- TEI ---------------------------------------------------------------------------------------


class TEIRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    raw_scores: bool = Field(False, description="the logits, without sigmoid or softmax")
    truncate: bool = Field(False, description="cut inputs longer than the model takes (else 4xx)")
    truncation_direction: Annotated[str, Field(pattern="^(Right|right)$")] | None = None
    model: str | None = Field(
        None,
        min_length=1,
        description="hfskills: a model, route or auto instead of the default model",
    )


class TEIRerankRequest(TEIRequest):
    """TEI's ``POST /rerank``."""

    query: NonEmptyStr
    texts: list[NonEmptyStr] = Field(..., min_length=1, max_length=MAX_DOCUMENTS)
    return_text: bool = False


class Rank(BaseModel):
    index: int
    score: float
    text: str | None = None


class PredictRequest(TEIRequest):
    """TEI's ``POST /predict``: ``inputs`` is one sequence, or a list of them (a batch). A
    sequence is a string, ``[text]``, or a pair ``[text, text_pair]``; a top-level list of
    two strings is one pair, as TEI reads it."""

    inputs: str | list[Any]

    @field_validator("inputs")
    @classmethod
    def _sequences(cls, value: str | list[Any]) -> str | list[Any]:
        for sequence in _sequences(value)[0]:
            if not isinstance(sequence, str) and not (
                isinstance(sequence, list)
                and len(sequence) in (1, 2)
                and all(isinstance(t, str) for t in sequence)
            ):
                raise ValueError(
                    "a sequence is a string, [text] or [text, text_pair]; inputs is one "
                    "sequence or a list of them"
                )
        if not _sequences(value)[0]:
            raise ValueError("inputs must not be empty")
        return value

    def sequences(self) -> tuple[list[Any], bool]:
        """The model's inputs (a string, or ``{"text", "text_pair"}``) and whether the
        request was one sequence (answered unnested)."""
        sequences, single = _sequences(self.inputs)
        return [_as_input(s) for s in sequences], single


def _sequences(value: str | list[Any]) -> tuple[list[Any], bool]:
    if isinstance(value, str):
        return [value], True
    if len(value) == 2 and all(isinstance(t, str) for t in value):
        return [value], True  # TEI: one pair
    return list(value), False


def _as_input(sequence: str | list[str]) -> Any:
    if isinstance(sequence, str):
        return sequence
    if len(sequence) == 1:
        return sequence[0]
    return {"text": sequence[0], "text_pair": sequence[1]}


class Prediction(BaseModel):
    label: str
    score: float
