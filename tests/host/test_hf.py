"""Hugging Face clients unchanged: `InferenceClient(model=f"{base}/models/{name}")` for every
task, TGI's /generate, /generate_stream, /info and TEI's /embed, against tiny checkpoints.

Expected values come from the same skill run in-process (whose parity with transformers is
tested in tests/skillset); here the point is the HTTP path and the response shapes.
"""

from __future__ import annotations

import base64
import io
import json

import huggingface_hub
import numpy as np
import pytest
import soundfile
from PIL import Image

from tests.checkpoints import tiny_audio, tiny_image
from tests.conftest import skill_class

from .conftest import entry

CATALOG = {  # served name -> (model_type, task)
    "tiny-llama": ("llama", "text_generation"),
    "tiny-t5": ("t5", "text2text_generation"),
    "tiny-bert-embed": ("bert", "text_embedding"),
    "tiny-bert-cls": ("bert", "text_classification"),
    "tiny-bert-ner": ("bert", "token_classification"),
    "tiny-bert-mlm": ("bert", "fill_mask"),
    "tiny-bert-qa": ("bert", "question_answering"),
    "tiny-vit": ("vit", "image_classification"),
    "tiny-detr": ("detr", "object_detection"),
    "tiny-clip": ("clip", "zero_shot_image_classification"),
    "tiny-whisper": ("whisper", "automatic_speech_recognition"),
    "tiny-wav2vec2": ("wav2vec2", "audio_classification"),
    "tiny-blip": ("blip", "image_to_text"),
}


@pytest.fixture(scope="module")
def server(serve, task_checkpoint):
    models = [entry(name, task_checkpoint(*spec)) for name, spec in CATALOG.items()]
    return serve(models=models, embedded_default=False)


@pytest.fixture(scope="module")
def local(task_checkpoint):
    """The same skill in-process, for expected values."""
    cache = {}

    def handler(name: str):
        if name not in cache:
            model_type, task = CATALOG[name]
            skill = skill_class(model_type)()
            cache[name] = skill.handler(
                skill.init_cpu(str(task_checkpoint(model_type, task)), task)
            )
        return cache[name]

    return handler


@pytest.fixture(scope="module")
def hf(server):
    # huggingface_hub 2.4 refuses every request, even to 127.0.0.1, while HF_HUB_OFFLINE is
    # set; the suite sets it for transformers, so the client process lifts it for its own calls.
    huggingface_hub.constants.HF_HUB_OFFLINE = False

    def client(name: str) -> huggingface_hub.InferenceClient:
        return huggingface_hub.InferenceClient(model=f"{server.base}/models/{name}", timeout=120)

    return client


def png() -> bytes:
    buffer = io.BytesIO()
    tiny_image(48).save(buffer, format="PNG")
    return buffer.getvalue()


def wav(seconds: float = 1.0) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, tiny_audio(seconds), 16000, format="WAV")
    return buffer.getvalue()


def test_every_model_took_its_checkpoints_own_task(server) -> None:
    catalog = server.host.catalog
    for name, (_, task) in CATALOG.items():
        assert catalog.get(name).tasks == (task,), name


def test_text_generation_plain_details_and_stream(hf, local) -> None:
    client = hf("tiny-llama")
    expected = local("tiny-llama")(["hello world"], max_new_tokens=8)[0]
    text = client.text_generation("hello world", max_new_tokens=8)
    assert text == expected["text"]
    detailed = client.text_generation("hello world", max_new_tokens=8, details=True)
    assert [t.id for t in detailed.details.tokens] == expected["token_ids"]
    assert detailed.details.finish_reason in ("length", "eos_token")
    tokens = list(client.text_generation("hello world", max_new_tokens=8, stream=True))
    assert "".join(tokens) == expected["text"]
    events = list(
        client.text_generation("hello world", max_new_tokens=8, stream=True, details=True)
    )
    assert [e.token.id for e in events] == expected["token_ids"]
    assert (
        events[-1].generated_text == expected["text"] and events[-1].details.generated_tokens == 8
    )


def test_chat_completion(hf, local) -> None:
    messages = [{"role": "user", "content": "hello"}]
    client = hf("tiny-llama")  # keep it: a stream reads from the client's open connection
    reply = client.chat_completion(messages, max_tokens=6, temperature=0)
    expected = local("tiny-llama")([messages], max_new_tokens=6)[0]
    assert reply.choices[0].message.content == expected["text"]
    streamed = client.chat_completion(messages, max_tokens=6, temperature=0, stream=True)
    assert (
        "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected["text"]
    )


def test_feature_extraction(hf, local) -> None:
    got = hf("tiny-bert-embed").feature_extraction("hello world")
    assert got.shape == (1, 32)
    assert np.allclose(got[0], local("tiny-bert-embed")(["hello world"])[0], atol=1e-5)
    unnormalized = hf("tiny-bert-embed").feature_extraction("hello world", normalize=False)
    assert not np.isclose(np.linalg.norm(unnormalized[0]), 1.0)


def test_text_classification(hf, local) -> None:
    got = hf("tiny-bert-cls").text_classification("hello world", top_k=3)
    expected = local("tiny-bert-cls")(["hello world"])[0]
    assert [(g.label, round(g.score, 5)) for g in got] == [
        (e["label"], round(e["score"], 5)) for e in expected
    ]


def test_token_classification(hf, local) -> None:
    got = hf("tiny-bert-ner").token_classification("hello world paris", ignore_labels=[])
    expected = local("tiny-bert-ner")(["hello world paris"], ignore_labels=[])[0]
    assert [(g.entity, g.start, g.end, g.word) for g in got] == [
        (e["entity"], e["start"], e["end"], e["word"]) for e in expected
    ]


def test_fill_mask(hf, local) -> None:
    got = hf("tiny-bert-mlm").fill_mask("the capital of france is [MASK]", top_k=3)
    expected = local("tiny-bert-mlm")(["the capital of france is [MASK]"], top_k=3)[0]
    assert [(g.token, g.sequence) for g in got] == [(e["token"], e["sequence"]) for e in expected]


def test_question_answering(hf, local) -> None:
    got = hf("tiny-bert-qa").question_answering(
        question="what is the capital", context="the capital is paris"
    )
    expected = local("tiny-bert-qa")(
        [{"question": "what is the capital", "context": "the capital is paris"}]
    )[0]
    assert (got.answer, got.start, got.end) == (
        expected["answer"],
        expected["start"],
        expected["end"],
    )


def test_image_classification_raw_bytes_and_json(hf, local) -> None:
    expected = local("tiny-vit")([tiny_image(48)])[0]
    raw = hf("tiny-vit").image_classification(png())  # raw bytes, no content type
    assert [(g.label, round(g.score, 5)) for g in raw] == [
        (e["label"], round(e["score"], 5)) for e in expected
    ]
    top = hf("tiny-vit").image_classification(png(), top_k=1)  # JSON with base64
    assert [g.label for g in top] == [expected[0]["label"]]


def test_object_detection(hf, local) -> None:
    got = hf("tiny-detr").object_detection(png(), threshold=0.0)
    expected = local("tiny-detr")([tiny_image(48)], threshold=0.0)[0]
    assert len(got) == len(expected) > 0
    assert [(g.label, g.box.xmin, g.box.ymax) for g in got] == [
        (e["label"], e["box"]["xmin"], e["box"]["ymax"]) for e in expected
    ]


def test_zero_shot_image_classification(hf, local) -> None:
    labels = ["hello", "world", "paris"]
    got = hf("tiny-clip").zero_shot_image_classification(png(), candidate_labels=labels)
    expected = local("tiny-clip")([tiny_image(48)], candidate_labels=labels)[0]
    assert [g.label for g in got] == [e["label"] for e in expected]


def test_speech_recognition_and_audio_classification(hf, local) -> None:
    text = hf("tiny-whisper").automatic_speech_recognition(wav()).text
    assert text == local("tiny-whisper")([wav()])[0]["text"]
    assert text.strip()  # the tiny model emits tokens; an empty transcript would hide a bug
    got = hf("tiny-wav2vec2").audio_classification(wav(0.5))
    expected = local("tiny-wav2vec2")([wav(0.5)])[0]
    assert [g.label for g in got] == [e["label"] for e in expected]


def test_image_to_text(hf, local) -> None:
    got = hf("tiny-blip").image_to_text(png())
    assert got.generated_text == local("tiny-blip")([tiny_image(48)], max_new_tokens=100)[0]["text"]


def test_pipeline_route_and_text2text(server, local) -> None:
    with server.client() as http:
        done = http.post(
            "/models/tiny-t5/pipeline/text2text-generation",
            json={"inputs": "hello world", "parameters": {"max_new_tokens": 5}},
        )
        assert done.status_code == 200
        expected = local("tiny-t5")(["hello world"], max_new_tokens=5)[0]["text"]
        assert done.json() == [{"generated_text": expected}]
        summary = http.post(
            "/models/tiny-t5/pipeline/summarization",
            json={"inputs": "hello world", "parameters": {"max_new_tokens": 5}},
        )
        assert summary.json() == [{"summary_text": expected}]
        batch = http.post("/models/tiny-bert-cls", json={"inputs": ["hello", "world"]})
        assert len(batch.json()) == 2 and all(len(row) == 3 for row in batch.json())
        wrong = http.post("/models/tiny-bert-cls/pipeline/fill-mask", json={"inputs": "x [MASK]"})
        assert wrong.status_code == 400 and wrong.json()["error_type"] == "validation"


def test_tgi_and_tei_root_routes(server, local) -> None:
    expected = local("tiny-llama")(["hello world"], max_new_tokens=5)[0]
    with server.client() as http:
        done = http.post(
            "/generate",
            json={"inputs": "hello world", "parameters": {"max_new_tokens": 5, "details": True}},
        ).json()
        assert done["generated_text"] == expected["text"]
        assert [t["id"] for t in done["details"]["tokens"]] == expected["token_ids"]
        with http.stream(
            "POST",
            "/generate_stream",
            json={"inputs": "hello world", "parameters": {"max_new_tokens": 5}},
        ) as stream:
            events = [
                json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")
            ]
        assert events[-1]["generated_text"] == expected["text"]
        assert [e["token"]["id"] for e in events] == expected["token_ids"]
        info = http.get("/info").json()
        assert info["model_id"] == "tiny-llama" and info["max_input_tokens"] > 0
        vectors = http.post("/embed", json={"inputs": ["hello", "world"]}).json()
        assert np.array(vectors).shape == (2, 32)
        assert http.get("/v1/hardware").json()["hardware"][-1]["name"] == "cpu"


def test_get_endpoint_info_through_the_client(server) -> None:
    client = huggingface_hub.InferenceClient(
        model=f"{server.base}/models/tiny-llama", provider="hf-inference"
    )
    assert client.get_endpoint_info()["model_id"] == "tiny-llama"


# -- dense vision, open-vocabulary detection, backbone embeddings ------------------------------

DENSE = {  # served name -> (model_type, task)
    "tiny-owlvit": ("owlvit", "zero_shot_object_detection"),
    "tiny-dpt-depth": ("dpt", "depth_estimation"),
    "tiny-dpt-seg": ("dpt", "image_segmentation"),
    "tiny-detr-seg": ("detr", "image_segmentation"),
    "tiny-vit-embed": ("vit", "image_embedding"),
    "tiny-vits": ("vits", "text_to_audio"),
}


@pytest.fixture(scope="module")
def dense(serve, task_checkpoint):
    """A server for the dense tasks, and the same skills in-process for expected values."""
    models = [entry(name, task_checkpoint(*spec)) for name, spec in DENSE.items()]
    server = serve(models=models, embedded_default=False)
    handlers = {}
    for name, (model_type, task) in DENSE.items():
        skill = skill_class(model_type)()
        handlers[name] = skill.handler(skill.init_cpu(str(task_checkpoint(model_type, task)), task))
    return server, handlers


def test_zero_shot_object_detection_route(dense) -> None:
    server, local = dense
    labels = ["cat", "dog"]
    expected = local["tiny-owlvit"]([tiny_image(48)], candidate_labels=labels, threshold=0.0)[0]
    body = {
        "inputs": base64.b64encode(png()).decode(),
        "parameters": {"candidate_labels": labels, "threshold": 0.0},
    }
    with server.client() as http:
        done = http.post("/models/tiny-owlvit", json=body)
        assert done.status_code == 200, done.text
        assert done.json() == expected and len(expected) > 0
        named = http.post("/models/tiny-owlvit/pipeline/zero-shot-object-detection", json=body)
        assert named.json() == expected
        missing = http.post("/models/tiny-owlvit", json={"inputs": body["inputs"]})
        assert missing.status_code in (400, 422)


def test_depth_estimation_route(dense) -> None:
    server, local = dense
    expected = local["tiny-dpt-depth"]([tiny_image(48)])[0]
    with server.client() as http:
        done = http.post("/models/tiny-dpt-depth", content=png())  # raw bytes
        assert done.status_code == 200, done.text
        got = done.json()
    assert set(got) == {"predicted_depth", "depth"}
    assert np.allclose(got["predicted_depth"], expected["predicted_depth"], atol=1e-5)
    assert np.asarray(got["predicted_depth"]).shape == (48, 48)
    picture = Image.open(io.BytesIO(base64.b64decode(got["depth"])))
    assert (picture.mode, picture.size) == ("L", (48, 48))


def test_image_segmentation_through_the_client(dense, hf) -> None:
    server, local = dense
    semantic = huggingface_hub.InferenceClient(model=f"{server.base}/models/tiny-dpt-seg")
    got = semantic.image_segmentation(png())
    expected = local["tiny-dpt-seg"]([tiny_image(48)])[0]
    assert len(got) == len(expected) > 0
    assert [(g.label, g.score) for g in got] == [(e["label"], e["score"]) for e in expected]
    for g, e in zip(got, expected, strict=True):
        reference = Image.open(io.BytesIO(base64.b64decode(e["mask"])))
        assert g.mask.size == (48, 48)
        assert np.array_equal(np.asarray(g.mask), np.asarray(reference))
    # panoptic segments of random weights at thresholds 0 sit on ties that another process's
    # summation order may break differently: the shape is what this test checks
    panoptic = huggingface_hub.InferenceClient(model=f"{server.base}/models/tiny-detr-seg")
    zero = {"threshold": 0.0, "mask_threshold": 0.0, "overlap_mask_area_threshold": 0.0}
    segments = panoptic.image_segmentation(png(), **zero)
    assert segments and all(s.mask.size == (48, 48) and 0 <= s.score <= 1 for s in segments)
    assert {s.label for s in segments} <= {"LABEL_A", "LABEL_B", "LABEL_C"}


def test_backbone_image_embedding_route(dense) -> None:
    server, local = dense
    expected = local["tiny-vit-embed"]([tiny_image(48)])
    with server.client() as http:
        done = http.post("/models/tiny-vit-embed/pipeline/image-feature-extraction", content=png())
        assert done.status_code == 200, done.text
    assert np.allclose(done.json(), expected, atol=1e-5)


def test_text_to_speech_answers_wav_bytes(dense) -> None:
    server, local = dense
    expected = local["tiny-vits"](["hello world"], seed=3)[0]
    body = {"inputs": "hello world", "parameters": {"seed": 3}}
    with server.client() as http:
        done = http.post("/models/tiny-vits", json=body)
        assert done.status_code == 200, done.text
        assert done.headers["content-type"] == "audio/wav"
        assert done.content == base64.b64decode(expected["audio"])
        named = http.post("/models/tiny-vits/pipeline/text-to-speech", json=body)
        assert named.content == done.content
        batch = http.post("/models/tiny-vits", json={"inputs": ["hello", "world"]}).json()
        assert [item["sampling_rate"] for item in batch] == [16000, 16000]
    client = huggingface_hub.InferenceClient(model=f"{server.base}/models/tiny-vits", timeout=120)
    audio, rate = soundfile.read(io.BytesIO(client.text_to_speech("hello world")))
    assert rate == 16000 and audio.ndim == 1 and audio.size > 0


def test_dense_parameters_are_checked(dense) -> None:
    server, _ = dense
    image = base64.b64encode(png()).decode()
    with server.client() as http:
        wrong = http.post(
            "/models/tiny-dpt-seg", json={"inputs": image, "parameters": {"subtask": "bogus"}}
        )
        assert wrong.status_code == 400 and wrong.json()["error"]
        panoptic = http.post(  # DPT's processor has no panoptic post-processing
            "/models/tiny-dpt-seg", json={"inputs": image, "parameters": {"subtask": "panoptic"}}
        )
        assert panoptic.status_code == 400
        seed = http.post("/models/tiny-vits", json={"inputs": "hi", "parameters": {"seed": -1}})
        assert seed.status_code == 400
