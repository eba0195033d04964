"""Tokenizer API models: vLLM's ``/tokenize`` (a prompt, or chat messages through the chat
template) and ``/detokenize``; TEI's ``/tokenize`` (``inputs``: token objects with their
character spans) and ``/decode``. ``/tokenize`` takes both bodies: one with ``inputs`` is TEI's,
any other vLLM's."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from .openai import ChatMessage, Request

TokenId = Annotated[int, Field(ge=0)]
ModelName = Annotated[str, Field(min_length=1)]
#: Token ids per request (detokenize and decode): far above any model's context.
MAX_IDS = 1_000_000


class TokenizeCompletionRequest(Request):
    """vLLM: tokenize a prompt."""

    model: ModelName | None = Field(
        None, description="a model, route or auto; default: the default text_generation model"
    )
    prompt: str
    add_special_tokens: bool = Field(True, description="the tokenizer's special tokens (BOS...)")
    return_token_strs: bool = Field(False, description="also each token's string")


class TokenizeChatRequest(Request):
    """vLLM: tokenize chat messages rendered by the model's chat template."""

    model: ModelName | None = None
    messages: list[ChatMessage] = Field(..., min_length=1)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = Field(
        False, description="special tokens on top of the template's own (vLLM's default: off)"
    )
    return_token_strs: bool = False
    chat_template_kwargs: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_ending(self) -> TokenizeChatRequest:
        if self.continue_final_message and self.add_generation_prompt:
            raise ValueError(
                "Cannot set both continue_final_message and add_generation_prompt to true"
            )
        return self

    def chat(self) -> list[dict[str, str]]:
        role = {"developer": "system"}
        return [{"role": role.get(m.role, m.role), "content": m.text()} for m in self.messages]


class TEITokenizeRequest(BaseModel):
    """TEI: tokenize one text or a list of texts."""

    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str] = Field(..., min_length=1)
    add_special_tokens: bool = True
    prompt_name: None = Field(None, description="not supported")
    model: ModelName | None = Field(
        None, description="hfskills: a model instead of the default text_embedding model"
    )

    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


class TokenizeRequest(
    RootModel[TokenizeCompletionRequest | TokenizeChatRequest | TEITokenizeRequest]
):
    """``POST /tokenize``: vLLM's body (``prompt`` or ``messages``) or TEI's (``inputs``)."""


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class SimpleToken(BaseModel):
    """TEI's token: its id, its text (the input's characters; a special token's own string),
    whether it is special, and its character span (none for a special token)."""

    id: int
    text: str
    special: bool
    start: int | None = None
    stop: int | None = None


class DetokenizeRequest(Request):
    model: ModelName | None = None
    tokens: list[TokenId] = Field(..., max_length=MAX_IDS)


class DetokenizeResponse(BaseModel):
    prompt: str


class DecodeRequest(BaseModel):
    """TEI: token ids back to text (one list, or a list of lists)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[TokenId] | list[list[TokenId]] = Field(..., max_length=MAX_IDS)
    skip_special_tokens: bool = True
    model: ModelName | None = None

    def batches(self) -> list[list[int]]:
        if all(isinstance(i, int) for i in self.ids):
            return [list(self.ids)]  # type: ignore[arg-type]
        return [list(ids) for ids in self.ids]  # type: ignore[union-attr]
