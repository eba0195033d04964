"""``/tokenize`` and ``/detokenize`` as vLLM has them, TEI's ``/tokenize`` body on the same
path and TEI's ``/decode``, against the checkpoint's own tokenizer (transformers'
`AutoTokenizer`), on a tiny llama (with a chat template) and a tiny bert."""

from __future__ import annotations

import pytest
import transformers

from .conftest import entry

PROMPT = "hello world, the capital of france is paris"
MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def checkpoints(task_checkpoint):
    return {
        "tiny-llama": task_checkpoint("llama", "text_generation"),
        "tiny-bert-embed": task_checkpoint("bert", "text_embedding"),
    }


@pytest.fixture(scope="module")
def client(serve, checkpoints):
    models = [entry(name, path) for name, path in checkpoints.items()]
    with serve(models=models, embedded_default=False).client() as c:
        yield c


@pytest.fixture(scope="module")
def tokenizers(checkpoints):
    return {n: transformers.AutoTokenizer.from_pretrained(p) for n, p in checkpoints.items()}


def test_tokenize_a_prompt_and_detokenize_round_trip(client, tokenizers) -> None:
    tokenizer = tokenizers["tiny-llama"]
    expected = tokenizer(PROMPT)["input_ids"]
    answer = client.post("/tokenize", json={"model": "tiny-llama", "prompt": PROMPT})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["tokens"] == expected and body["count"] == len(expected)
    config = transformers.AutoConfig.from_pretrained(tokenizer.name_or_path)
    assert body["max_model_len"] == min(config.max_position_embeddings, tokenizer.model_max_length)
    plain = client.post(
        "/tokenize",
        json={"prompt": PROMPT, "add_special_tokens": False, "return_token_strs": True},
    ).json()  # no model: the default text_generation model
    assert plain["tokens"] == tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    assert plain["token_strs"] == tokenizer.convert_ids_to_tokens(plain["tokens"])
    back = client.post("/detokenize", json={"model": "tiny-llama", "tokens": plain["tokens"]})
    assert back.status_code == 200, back.text
    assert back.json() == {"prompt": tokenizer.decode(plain["tokens"])}
    assert back.json()["prompt"].strip() == PROMPT


def test_tokenize_chat_messages_through_the_template(client, tokenizers) -> None:
    tokenizer = tokenizers["tiny-llama"]
    for generation_prompt in (True, False):
        text = tokenizer.apply_chat_template(
            MESSAGES, tokenize=False, add_generation_prompt=generation_prompt
        )
        expected = tokenizer(text, add_special_tokens=False)["input_ids"]
        answer = client.post(
            "/tokenize",
            json={
                "model": "tiny-llama",
                "messages": MESSAGES,
                "add_generation_prompt": generation_prompt,
            },
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["tokens"] == expected


def test_tei_tokenize_and_decode(client, tokenizers) -> None:
    tokenizer = tokenizers["tiny-bert-embed"]
    answer = client.post("/tokenize", json={"inputs": ["hello world", "paris"]})
    assert answer.status_code == 200, answer.text
    first = answer.json()[0]
    ids = tokenizer("hello world")["input_ids"]
    assert [t["id"] for t in first] == ids
    assert first[0] == {"id": ids[0], "text": "[CLS]", "special": True, "start": None, "stop": None}
    words = [t for t in first if not t["special"]]
    assert all("hello world"[t["start"] : t["stop"]] == t["text"] for t in words)
    decoded = client.post("/decode", json={"ids": [ids, ids[1:-1]]})
    assert decoded.status_code == 200, decoded.text
    assert decoded.json() == [tokenizer.decode(ids, skip_special_tokens=True)] * 2
    single = client.post("/decode", json={"ids": ids, "skip_special_tokens": False})
    assert single.json() == [tokenizer.decode(ids)]


def test_bad_input_names_the_field(client) -> None:
    both = client.post(
        "/tokenize",
        json={
            "model": "tiny-llama",
            "messages": MESSAGES,
            "continue_final_message": True,
            "add_generation_prompt": True,
        },
    )
    assert both.status_code == 422 and "continue_final_message" in both.json()["error"]["message"]
    outside = client.post("/detokenize", json={"model": "tiny-llama", "tokens": [10**7]})
    assert outside.status_code == 400 and outside.json()["error"]["param"] == "tokens"
    negative = client.post("/detokenize", json={"model": "tiny-llama", "tokens": [-1]})
    assert negative.status_code == 422 and negative.json()["error"]["param"] == "tokens[0]"
    unknown = client.post("/tokenize", json={"model": "nope", "prompt": "x"})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"
    no_template = client.post("/tokenize", json={"model": "tiny-bert-embed", "messages": MESSAGES})
    assert no_template.status_code == 400 and no_template.json()["error"]["param"] == "messages"
    tei = client.post("/decode", json={"ids": [10**7]})
    assert tei.status_code == 400 and set(tei.json()) == {"error", "error_type"}
