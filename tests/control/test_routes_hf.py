"""Routes and ``auto`` on the Hugging Face APIs, over real HTTP (huggingface_hub's
InferenceClient and httpx): the Inference API (``/models/{route}``, its pipelines, its chat
route and ``/info``), TGI's ``/generate`` and ``/generate_stream`` and TEI's ``/embed`` (their
optional ``model`` field, and ``default_models`` naming a route), each answer carrying
``X-HFSkills-Model`` and ``X-HFSkills-Route``; SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import httpx
import huggingface_hub
import pytest
from huggingface_hub import InferenceClient

from hfskills.host.config import load_settings
from tests.host.conftest import Server, start

from .conftest import BACKENDS

TOML = """
default_models = {{text_embedding = "embed-one"}}

[[models]]
name = "a"
checkpoint = "{embedder}"

[[models]]
name = "b"
checkpoint = "{embedder}"
version = "2"

[[models]]
name = "gen"
checkpoint = "{generator}"

[[routes]]
name = "embed"
targets = [{{model = "a", weight = 1}}, {{model = "b", weight = 1}}]

[[routes]]
name = "embed-one"
targets = [{{model = "a", weight = 1}}]

[[routes]]
name = "chat"
targets = [{{model = "gen", weight = 1}}]
"""

EMBEDDERS = {"a@1", "b@2"}
GEN = {"max_new_tokens": 2}


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, fresh_database, task_checkpoint, tmp_path_factory) -> Any:
    config = tmp_path_factory.mktemp("routes-hf") / "hfskills.toml"
    config.write_text(
        TOML.format(
            embedder=task_checkpoint("bert", "text_embedding"),
            generator=task_checkpoint("llama", "text_generation"),
        )
    )
    settings = load_settings(
        config, embedded_default=False, database_url=fresh_database(request.param)
    )
    server = start(settings)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(server: Server) -> Any:
    with server.client() as client:
        yield client


@pytest.fixture
def online(monkeypatch) -> None:
    """huggingface_hub 2.4 refuses every request, even to 127.0.0.1, while HF_HUB_OFFLINE is
    set (the suite sets it for transformers): lifted for this test's client calls."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def routed(response: httpx.Response, route: str, models: set[str]) -> httpx.Response:
    """The answer is a 200 that ``route`` chose, from one of ``models``."""
    assert response.status_code == 200, response.text
    assert response.headers["x-hfskills-route"] == route
    assert response.headers["x-hfskills-model"] in models
    return response


def vectors(response: httpx.Response, n: int = 1) -> list[list[float]]:
    body = response.json()
    assert len(body) == n and all(isinstance(x, float) for x in body[0]), body
    return body


def test_inference_api_models_route(server, http, online) -> None:
    for route, models in (("embed", EMBEDDERS), ("embed-one", {"a@1"})):
        vectors(routed(http.post(f"/models/{route}", json={"inputs": "hi"}), route, models))
        vectors(
            routed(
                http.post(f"/models/{route}/pipeline/feature-extraction", json={"inputs": ["x"]}),
                route,
                models,
            )
        )
    # sticky per user there too
    seen = {
        http.post("/models/embed", json={"inputs": "hi"}, headers={"X-User-Id": "ann"}).headers[
            "x-hfskills-model"
        ]
        for _ in range(8)
    }
    assert len(seen) == 1
    # the same vectors as the model named directly (a and b are one checkpoint)
    direct = http.post("/models/a", json={"inputs": "hi"})
    assert direct.headers["x-hfskills-model"] == "a@1" and "x-hfskills-route" not in direct.headers
    assert direct.json()[0] == pytest.approx(
        http.post("/models/embed-one", json={"inputs": "hi"}).json()[0]
    )

    client = InferenceClient(model=f"{server.base}/models/embed")
    assert client.feature_extraction("hello").shape[-1] == len(direct.json()[0])
    auto = InferenceClient(model=f"{server.base}/models/auto/pipeline/feature-extraction")
    assert auto.feature_extraction("hello").shape[-1] == len(direct.json()[0])


def test_inference_api_auto(http) -> None:
    vectors(
        routed(
            http.post("/models/auto/pipeline/feature-extraction", json={"inputs": "hi"}),
            "auto",
            EMBEDDERS,
        )
    )
    answer = http.post(
        "/models/auto/pipeline/text-generation", json={"inputs": "hi", "parameters": GEN}
    )
    assert routed(answer, "auto", {"gen@1"}).json()[0]["generated_text"] is not None
    # /models/auto alone names no task: a clear 400
    missing = http.post("/models/auto", json={"inputs": "hi"})
    assert missing.status_code == 400, missing.text
    assert "pipeline" in missing.json()["error"]


def test_inference_api_generation_through_a_route(server, http, online) -> None:
    answer = routed(
        http.post("/models/chat", json={"inputs": "hi", "parameters": GEN}), "chat", {"gen@1"}
    )
    assert isinstance(answer.json()[0]["generated_text"], str)
    with http.stream(
        "POST", "/models/chat", json={"inputs": "hi", "parameters": GEN, "stream": True}
    ) as stream:
        routed(stream, "chat", {"gen@1"})
        events = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
    assert events and events[-1]["generated_text"] is not None

    client = InferenceClient(model=f"{server.base}/models/chat")
    assert isinstance(client.text_generation("hi", max_new_tokens=2), str)
    tokens = list(client.text_generation("hi", max_new_tokens=2, stream=True))
    assert len(tokens) == 2
    chat = client.chat_completion([{"role": "user", "content": "hi"}], max_tokens=2)
    assert chat.model == "gen"  # the model that answered

    info = http.get("/models/chat/info")
    assert info.status_code == 200, info.text
    assert info.json()["model_id"] == "gen"


def test_tgi_generate_with_a_route_or_auto(http) -> None:
    for model in ("chat", "auto"):
        body = {"inputs": "hi", "parameters": GEN, "model": model}
        answer = routed(http.post("/generate", json=body), model, {"gen@1"})
        assert isinstance(answer.json()["generated_text"], str)
        with http.stream("POST", "/generate_stream", json=body) as stream:
            routed(stream, model, {"gen@1"})
            lines = [line for line in stream.iter_lines() if line.startswith("data:")]
        assert json.loads(lines[-1][5:])["details"]["generated_tokens"] == 2
    # a model named directly, and no model: the default (no route header)
    plain = http.post("/generate", json={"inputs": "hi", "parameters": GEN, "model": "gen"})
    assert plain.headers["x-hfskills-model"] == "gen@1" and "x-hfskills-route" not in plain.headers
    assert http.post("/generate", json={"inputs": "hi", "parameters": GEN}).status_code == 200


def test_tei_embed_with_a_route_or_auto(http) -> None:
    vectors(
        routed(
            http.post("/embed", json={"inputs": ["x", "y"], "model": "embed"}), "embed", EMBEDDERS
        ),
        2,
    )
    vectors(routed(http.post("/embed", json={"inputs": "x", "model": "auto"}), "auto", EMBEDDERS))
    # default_models.text_embedding names the route embed-one
    vectors(routed(http.post("/embed", json={"inputs": "x"}), "embed-one", {"a@1"}))
    direct = http.post("/embed", json={"inputs": "x", "model": "b"})
    assert direct.headers["x-hfskills-model"] == "b@2" and "x-hfskills-route" not in direct.headers


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/models/nope", {"inputs": "hi"}, 404),
        ("POST", "/models/nope/pipeline/feature-extraction", {"inputs": "hi"}, 404),
        ("POST", "/embed", {"inputs": "x", "model": "nope"}, 404),
        ("POST", "/generate", {"inputs": "x", "model": "nope"}, 404),
        ("POST", "/embed", {"inputs": "x", "model": "chat"}, 400),  # chat's target embeds not
    ],
)
def test_unknown_names_get_a_clear_4xx(http, method, path, body, status) -> None:
    response = http.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]
