"""``POST /`` (TGI's compat route, TEI's root route): `huggingface_hub.InferenceClient(
base_url=...)` posts every non-chat task there, with no word of the task, so the route runs
the server's root model. And the design's routes: ``/v1/infer/{model}``, ``/v1/generate``,
``/v1/embed``, ``/v1/classify``, ``/v1/detect``.

Expected values come from the same skill in-process (its parity with transformers is tested in
tests/skillset; the rerank parity in test_rerank.py).
"""

from __future__ import annotations

import base64
import io

import huggingface_hub
import huggingface_hub.constants
import numpy as np
import pytest

from tests.checkpoints import tiny_image
from tests.conftest import skill_class

from .conftest import entry

SPECS = {
    "tiny-llama": ("llama", "text_generation"),
    "tiny-bert-embed": ("bert", "text_embedding"),
    "tiny-bert-cls": ("bert", "text_classification"),
    "tiny-detr": ("detr", "object_detection"),
}


@pytest.fixture(scope="module")
def paths(task_checkpoint):
    return {name: task_checkpoint(*spec) for name, spec in SPECS.items()}


@pytest.fixture(scope="module")
def local(paths):
    cache = {}

    def handler(name: str):
        if name not in cache:
            model_type, task = SPECS[name]
            skill = skill_class(model_type)()
            cache[name] = skill.handler(skill.init_cpu(str(paths[name]), task))
        return cache[name]

    return handler


@pytest.fixture(scope="module")
def servers(serve, paths):
    """One server per root model: a single embedder, a single classifier, and several models
    with a decoder (the root: the default text generation model, as TGI's ``/``)."""
    return {
        "embed": serve(models=[entry("tiny-bert-embed", paths["tiny-bert-embed"])]),
        "cls": serve(models=[entry("tiny-bert-cls", paths["tiny-bert-cls"])]),
        "many": serve(models=[entry(n, p) for n, p in paths.items()], embedded_default=False),
    }


def client(server) -> huggingface_hub.InferenceClient:
    # the suite sets HF_HUB_OFFLINE for transformers; the client lifts it for its own calls
    huggingface_hub.constants.HF_HUB_OFFLINE = False
    return huggingface_hub.InferenceClient(base_url=server.base, timeout=120)


def test_inference_client_feature_extraction_on_the_root(servers, local) -> None:
    got = client(servers["embed"]).feature_extraction("hello world")
    assert got.shape == (1, 32)
    assert np.allclose(got[0], local("tiny-bert-embed")(["hello world"])[0], atol=1e-5)


def test_inference_client_text_classification_on_the_root(servers, local) -> None:
    got = client(servers["cls"]).text_classification("hello world", top_k=3)
    expected = local("tiny-bert-cls")(["hello world"])[0]
    assert [(g.label, round(g.score, 5)) for g in got] == [
        (e["label"], round(e["score"], 5)) for e in expected
    ]


def test_inference_client_text_generation_on_a_server_of_several(servers, local) -> None:
    expected = local("tiny-llama")(["hello world"], max_new_tokens=6)[0]
    hf = client(servers["many"])
    assert hf.text_generation("hello world", max_new_tokens=6) == expected["text"]
    streamed = list(hf.text_generation("hello world", max_new_tokens=6, stream=True))
    assert "".join(streamed) == expected["text"]
    # the body's model picks another model of the server
    with servers["many"].client() as http:
        answer = http.post("/", json={"model": "tiny-bert-cls", "inputs": "hello world"})
    assert answer.status_code == 200, answer.text
    assert answer.json()[0][0]["label"] == local("tiny-bert-cls")(["hello world"])[0][0]["label"]


def test_root_of_several_models_without_a_decoder_asks_for_one(serve, paths) -> None:
    server = serve(
        models=[entry(n, paths[n]) for n in ("tiny-bert-embed", "tiny-bert-cls")],
        embedded_default=False,
    )
    with server.client() as http:
        refused = http.post("/", json={"inputs": "hello"})
        assert refused.status_code == 400 and set(refused.json()) == {"error", "error_type"}
        assert "default_models.root" in refused.json()["error"]
    configured = serve(
        models=[entry(n, paths[n]) for n in ("tiny-bert-embed", "tiny-bert-cls")],
        embedded_default=False,
        default_models={"root": "tiny-bert-cls"},
    )
    with configured.client() as http:
        answer = http.post("/", json={"inputs": "hello"})
    assert answer.status_code == 200 and answer.json()[0][0]["label"].startswith("LABEL_")


def png() -> bytes:
    buffer = io.BytesIO()
    tiny_image(48).save(buffer, format="PNG")
    return buffer.getvalue()


def test_design_routes(servers, local) -> None:
    with servers["many"].client() as http:
        infer = http.post("/v1/infer/tiny-bert-cls", json={"inputs": "hello world"})
        assert infer.status_code == 200, infer.text
        assert infer.json() == [local("tiny-bert-cls")(["hello world"])[0]]
        classify = http.post(
            "/v1/classify",
            json={
                "model": "tiny-bert-cls",
                "inputs": [{"text": "hello", "text_pair": "world"}, "hello world"],
                "parameters": {"top_k": 1},
            },
        )
        assert classify.status_code == 200, classify.text
        expected = local("tiny-bert-cls")(
            [{"text": "hello", "text_pair": "world"}, "hello world"], top_k=1
        )
        assert classify.json() == expected
        embed = http.post("/v1/embed", json={"inputs": ["hello world"]})  # the default model
        assert np.allclose(embed.json()[0], local("tiny-bert-embed")(["hello world"])[0], atol=1e-5)
        generate = http.post(
            "/v1/generate",
            json={"model": "tiny-llama", "inputs": "hello", "parameters": {"max_new_tokens": 4}},
        )
        assert generate.status_code == 200, generate.text
        text = local("tiny-llama")(["hello"], max_new_tokens=4)[0]["text"]
        assert generate.json() == [{"generated_text": text}]
        image = "data:image/png;base64," + base64.b64encode(png()).decode()
        detect = http.post(
            "/v1/detect",
            json={"model": "tiny-detr", "inputs": image, "parameters": {"threshold": 0.0}},
        )
        assert detect.status_code == 200, detect.text
        boxes = local("tiny-detr")([tiny_image(48)], threshold=0.0)[0]
        assert [d["label"] for d in detect.json()] == [b["label"] for b in boxes]
        # the wrong model for the route, an unknown one, a bad field: OpenAI's error shape
        wrong = http.post("/v1/detect", json={"model": "tiny-bert-cls", "inputs": "hello"})
        assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "model"
        assert "object_detection" in wrong.json()["error"]["message"]
        unknown = http.post("/v1/infer/nope", json={"inputs": "x"})
        assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"
        bad = http.post("/v1/classify", json={"model": "tiny-bert-cls", "inputs": [{"x": 1}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "inputs"
