"""Rerank and TEI's predict over HTTP, against transformers: ``/v1/rerank`` (vLLM, Cohere,
Jina), TEI's ``/rerank`` and ``/predict``, on a tiny bert cross-encoder (a sequence
classification head of one label) and a tiny 3-label classifier.

Expected scores are `AutoModelForSequenceClassification` on the tokenizer's pair encoding
(``tokenizer(queries, documents, truncation=True)``, as sentence-transformers' CrossEncoder
encodes), sigmoid of the one logit (softmax for the classifier).
"""

from __future__ import annotations

import httpx
import pytest
import torch
import transformers

from .conftest import entry

QUERY = "what is the capital of france"
DOCUMENTS = [
    "paris is the capital of france",
    "the cat sat on the mat",
    "berlin is a city",
    "hello world",
    "france has a capital",
]


@pytest.fixture(scope="module")
def checkpoints(task_checkpoint):
    return {
        "tiny-rerank": task_checkpoint("bert", "text_classification", num_labels=1),
        "tiny-bert-cls": task_checkpoint("bert", "text_classification"),
        "tiny-llama": task_checkpoint("llama", "text_generation"),
    }


@pytest.fixture(scope="module")
def server(serve, checkpoints):
    models = [entry(name, path) for name, path in checkpoints.items()]
    return serve(models=models, embedded_default=False)


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


def reference(path, firsts, seconds=None):
    """transformers' logits for texts (or text pairs) and the token counts of each."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    batch = tokenizer(firsts, seconds, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**batch).logits
    return logits, batch["attention_mask"].sum(dim=1).tolist()


def test_v1_rerank_matches_transformers_sorted_with_usage(client, checkpoints) -> None:
    logits, lengths = reference(checkpoints["tiny-rerank"], [QUERY] * len(DOCUMENTS), DOCUMENTS)
    expected = torch.sigmoid(logits[:, 0]).tolist()
    answer = client.post(
        "/v1/rerank", json={"model": "tiny-rerank", "query": QUERY, "documents": DOCUMENTS}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"].startswith("rerank-") and body["model"] == "tiny-rerank"
    assert body["usage"] == {"prompt_tokens": sum(lengths), "total_tokens": sum(lengths)}
    results = body["results"]
    assert [r["index"] for r in results] == sorted(range(5), key=lambda i: -expected[i])
    for r in results:
        assert r["relevance_score"] == pytest.approx(expected[r["index"]], abs=1e-5)
        assert r["document"] == {"text": DOCUMENTS[r["index"]]}
    # top_n, return_documents off, vLLM's use_activation off (the logit), Cohere's objects
    answer = client.post(
        "/v1/rerank",
        json={
            "model": "tiny-rerank",
            "query": QUERY,
            "documents": [{"text": d} for d in DOCUMENTS],
            "top_n": 2,
            "return_documents": False,
            "use_activation": False,
        },
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == 2 and all("document" not in r or r["document"] is None for r in results)
    assert results[0]["relevance_score"] == pytest.approx(
        logits[results[0]["index"], 0].item(), abs=1e-5
    )
    # without a model: the first served cross-encoder
    default = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS[:2]})
    assert default.status_code == 200 and default.json()["model"] == "tiny-rerank"


def test_all_pairs_of_a_request_are_one_batcher_call(server, client) -> None:
    client.post("/v1/rerank", json={"model": "tiny-rerank", "query": QUERY, "documents": ["a"]})
    loaded = server.host.loader.cache[("tiny-rerank", "text_classification")]
    batcher = loaded.worker.batcher
    calls: list[int] = []
    submit = batcher.submit

    async def counted(inputs, params):
        calls.append(len(inputs))
        return await submit(inputs, params)

    batcher.submit = counted
    try:
        answer = client.post(
            "/v1/rerank", json={"model": "tiny-rerank", "query": QUERY, "documents": DOCUMENTS}
        )
    finally:
        batcher.submit = submit
    assert answer.status_code == 200, answer.text
    assert calls == [len(DOCUMENTS)]


def test_tei_rerank_raw_scores_and_text(client, checkpoints) -> None:
    logits, _ = reference(checkpoints["tiny-rerank"], [QUERY] * 3, DOCUMENTS[:3])
    answer = client.post(
        "/rerank",
        json={"query": QUERY, "texts": DOCUMENTS[:3], "raw_scores": True, "return_text": True},
    )
    assert answer.status_code == 200, answer.text
    ranks = answer.json()
    assert [r["index"] for r in ranks] == sorted(range(3), key=lambda i: -logits[i, 0].item())
    for r in ranks:
        assert r["score"] == pytest.approx(logits[r["index"], 0].item(), abs=1e-5)
        assert r["text"] == DOCUMENTS[r["index"]]
    plain = client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS[:3]}).json()
    assert set(plain[0]) == {"index", "score"} and 0 < plain[0]["score"] < 1


def test_tei_predict_single_pair_and_batch(client, checkpoints) -> None:
    path = checkpoints["tiny-bert-cls"]
    single, _ = reference(path, ["hello world"])
    pair, _ = reference(path, ["hello"], ["world"])
    labels = transformers.AutoConfig.from_pretrained(path).id2label

    def expected(logits):
        probs = torch.softmax(logits[0], dim=-1).tolist()
        ranked = sorted(range(len(probs)), key=lambda i: -probs[i])
        return [(labels[i], pytest.approx(probs[i], abs=1e-5)) for i in ranked]

    def got(answer):
        return [(p["label"], p["score"]) for p in answer]

    body = {"model": "tiny-bert-cls"}
    one = client.post("/predict", json={**body, "inputs": "hello world"})
    assert one.status_code == 200, one.text
    assert got(one.json()) == expected(single)
    two = client.post("/predict", json={**body, "inputs": ["hello", "world"]})  # TEI: a pair
    assert got(two.json()) == expected(pair)
    batch = client.post("/predict", json={**body, "inputs": [["hello world"], ["hello", "world"]]})
    assert [got(b) for b in batch.json()] == [expected(single), expected(pair)]
    raw = client.post("/predict", json={**body, "inputs": "hello world", "raw_scores": True})
    assert sorted(p["score"] for p in raw.json()) == pytest.approx(
        sorted(single[0].tolist()), abs=1e-5
    )


def test_text_classification_takes_text_pairs_on_the_inference_api(client, checkpoints) -> None:
    pair, _ = reference(checkpoints["tiny-rerank"], ["hello"], ["world"])
    answer = client.post(
        "/models/tiny-rerank", json={"inputs": {"text": "hello", "text_pair": "world"}}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()[0][0]["score"] == pytest.approx(torch.sigmoid(pair[0, 0]).item(), abs=1e-5)


def openai_error(answer: httpx.Response, status: int, param: str | None) -> dict:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["message"] and error["code"], error
    return error


def test_bad_input_names_the_field(client) -> None:
    wrong_task = client.post(
        "/v1/rerank", json={"model": "tiny-llama", "query": QUERY, "documents": ["a"]}
    )
    assert "cross-encoder" in openai_error(wrong_task, 400, "model")["message"]
    classifier = client.post(
        "/v1/rerank", json={"model": "tiny-bert-cls", "query": QUERY, "documents": ["a"]}
    )
    assert openai_error(classifier, 400, "model")["code"] == "not_a_reranker"
    empty = client.post(
        "/v1/rerank", json={"model": "tiny-rerank", "query": QUERY, "documents": []}
    )
    openai_error(empty, 422, "documents")
    no_query = client.post("/v1/rerank", json={"model": "tiny-rerank", "documents": ["a"]})
    openai_error(no_query, 422, "query")
    many = client.post(
        "/v1/rerank", json={"model": "tiny-rerank", "query": QUERY, "documents": ["a"] * 257}
    )
    openai_error(many, 413, "documents")  # over max_batch_inputs (256)
    unknown = client.post("/v1/rerank", json={"model": "nope", "query": "q", "documents": ["a"]})
    openai_error(unknown, 404, "model")
    # TEI's routes answer TEI's error shape
    for path, body in (
        ("/rerank", {"query": QUERY, "texts": []}),
        ("/predict", {"model": "tiny-bert-cls", "inputs": [["a", "b", "c"]]}),
        ("/predict", {"model": "tiny-llama", "inputs": "hello"}),
    ):
        answer = client.post(path, json=body)
        assert 400 <= answer.status_code < 500, answer.text
        assert set(answer.json()) == {"error", "error_type"}, answer.text
    too_long = client.post(
        "/rerank", json={"query": "word " * 2000, "texts": ["a"], "truncate": False}
    )
    assert too_long.status_code in (400, 413, 422) and "tokens" in too_long.json()["error"]
    cut = client.post("/rerank", json={"query": "word " * 2000, "texts": ["a"], "truncate": True})
    assert cut.status_code == 200, cut.text


def test_the_skill_scores_pairs_and_singles_in_one_batch_as_transformers(checkpoints) -> None:
    """The text_classification handler itself (no server): pairs and single texts mixed in one
    batch keep their order, each as transformers scores it alone."""
    from tests.conftest import skill_class

    path = checkpoints["tiny-rerank"]
    skill = skill_class("bert")()
    handler = skill.handler(skill.init_cpu(str(path), "text_classification"))
    inputs = [
        {"text": QUERY, "text_pair": DOCUMENTS[0]},
        "hello world",
        {"text": "a", "text_pair": "b"},
    ]
    got = [r[0]["score"] for r in handler(inputs)]
    pairs, _ = reference(path, [QUERY, "a"], [DOCUMENTS[0], "b"])
    single, _ = reference(path, ["hello world"])
    expected = torch.sigmoid(torch.stack([pairs[0, 0], single[0, 0], pairs[1, 0]])).tolist()
    assert got == pytest.approx(expected, abs=1e-5)
