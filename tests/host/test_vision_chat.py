"""Vision-language chat: ``image_url`` parts in ``/v1/chat/completions``, sent by the openai SDK
to a real server, answered by a tiny random-weight LLaVA (CLIP vision tower, llama LM, a
LlavaProcessor with a chat template, all built offline: generator/sweep/recipes.py).

The expected answer is transformers' own: ``processor.apply_chat_template`` on the same
conversation, ``processor(images=..., text=...)`` and greedy ``generate``; the token ids must be
equal (so the texts are). The served skill is generated on the fly (llava has no committed
skill: its captioning check sends images alone, docs/coverage.md).
"""

from __future__ import annotations

import base64
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import torch
import transformers

from tests.checkpoints import build_checkpoint, tiny_image

from .conftest import entry

TOKENS = 8
QUESTION = "what is in the picture"


def png(size: int = 48, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    tiny_image(size, seed=seed).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def llava(tmp_path_factory) -> Path:
    return build_checkpoint("llava", tmp_path_factory.mktemp("llava") / "tiny-llava")


@pytest.fixture(scope="module")
def images_site() -> Iterator[str]:
    """A web server on 127.0.0.1 with a PNG (/cat.png) and 64 kB that is too much (/big)."""
    files = {"/cat.png": png(), "/big": b"\x89PNG" + b"\x00" * 64 * 1024}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()


@pytest.fixture(scope="module")
def server(serve, llava, task_checkpoint):
    return serve(
        models=[
            entry("tiny-llava", llava),
            entry("tiny-llama", task_checkpoint("llama", "text_generation")),
        ],
        embedded_default=False,
        allowed_image_url_hosts=["127.0.0.1"],
        max_image_bytes=32 * 1024,
    )


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0)


def reference(path: Path, images: list[bytes], question: str) -> tuple[list[int], int, str]:
    """transformers' greedy answer to one user turn of ``images`` then ``question``: (new
    token ids cut at EOS, prompt tokens, text)."""
    from PIL import Image

    processor = transformers.AutoProcessor.from_pretrained(path)
    model = transformers.AutoModelForImageTextToText.from_pretrained(path).eval()
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    pictures = [Image.open(io.BytesIO(data)).convert("RGB") for data in images]
    batch = processor(images=pictures or None, text=[text], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=TOKENS, do_sample=False)
    ids = out[0, batch["input_ids"].shape[1] :].tolist()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    ids = next((ids[:i] for i, t in enumerate(ids) if t in eos), ids)
    answer = processor.tokenizer.decode(ids, skip_special_tokens=True)
    return ids, int(batch["attention_mask"].sum()), answer


def ask(client: openai.OpenAI, url: str, model: str = "tiny-llava", **extra):
    return client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": QUESTION},
                ],
            }
        ],
        max_tokens=TOKENS,
        temperature=0,
        **extra,
    )


def test_a_data_url_png_answers_as_transformers(client, llava) -> None:
    image = png()
    ids, prompt_tokens, expected = reference(llava, [image], QUESTION)
    reply = ask(client, data_url(image))
    assert reply.choices[0].message.content == expected
    assert reply.usage.prompt_tokens == prompt_tokens  # the image's tokens included
    assert reply.usage.completion_tokens == len(ids)
    assert reply.model == "tiny-llava"
    raw = ask(client, base64.b64encode(image).decode())  # raw base64: the same picture
    assert raw.choices[0].message.content == expected
    other = ask(client, data_url(png(seed=5)))  # another picture: the image is really seen
    assert other.choices[0].message.content == reference(llava, [png(seed=5)], QUESTION)[2]


def test_streamed_and_text_only_turns(client, llava) -> None:
    image = png()
    _, _, expected = reference(llava, [image], QUESTION)
    chunks = ask(client, data_url(image), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    reply = client.chat.completions.create(
        model="tiny-llava",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=TOKENS,
        temperature=0,
    )
    assert reply.choices[0].message.content == reference(llava, [], QUESTION)[2]


def test_remote_urls_only_from_allowed_hosts(client, llava, images_site) -> None:
    _, _, expected = reference(llava, [png()], QUESTION)
    assert ask(client, f"{images_site}/cat.png").choices[0].message.content == expected
    where = "messages[0].content[0].image_url.url"
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, "https://images.example.com/cat.png")
    assert refused.value.body["param"] == where
    assert "allowed_image_url_hosts" in refused.value.body["message"]
    with pytest.raises(openai.APIStatusError) as refused:  # 64 kB over max_image_bytes (32 KiB)
        ask(client, f"{images_site}/big")
    assert refused.value.status_code == 413
    assert refused.value.body["param"] == where
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, f"{images_site}/missing.png")
    assert "answered 404" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, "file:///etc/passwd")
    assert refused.value.body["param"] == where


def test_an_image_that_does_not_decode_names_its_part(client) -> None:
    for bad in (data_url(b"not an image at all"), "data:image/png;base64,%%%"):
        with pytest.raises(openai.BadRequestError) as refused:
            ask(client, bad)
        assert refused.value.body["param"] == "messages[0].content[0].image_url.url"
        assert "image" in refused.value.body["message"]


def test_a_text_model_given_an_image_is_refused(client) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, data_url(png()), model="tiny-llama")
    body = refused.value.body
    assert body["param"] == "messages[0].content[0]"
    assert "takes text only" in body["message"] and "tiny-llama" in body["message"]
    with pytest.raises(openai.UnprocessableEntityError):  # a part type nobody serves
        client.chat.completions.create(
            model="tiny-llava",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "input_audio", "input_audio": {"data": ""}}],
                }
            ],
        )
