"""Throughput machinery, over real HTTP: dynamic batching, continuous batching, scheduling,
backpressure and cancellation. Every concurrent load here is bounded in count and time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.conftest import skill_class

from .conftest import entry
from .test_loader import metric

SENTENCES = [
    " ".join(["hello", "world", "the", "capital", "of", "france", "is", "paris"][: 1 + i % 8])
    for i in range(64)
]


async def gather_posts(base: str, requests: list[tuple[str, dict, dict]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        return await asyncio.gather(*(client.post(p, json=b, headers=h) for p, b, h in requests))


@pytest.fixture(scope="module")
def server(serve, task_checkpoint, long_llama):
    models = [
        entry("embed", task_checkpoint("bert", "text_embedding")),
        # the torch engine (hardware cpu; the tiny llama with 8192 positions, so a request can
        # decode for seconds), and GenAI's (openvino, exact f32) when installed
        entry("gen", long_llama, hardware=["cpu"]),
        entry("gen-b", task_checkpoint("gpt2", "text_generation"), hardware=["cpu"]),
        entry(
            "gen-ov",
            task_checkpoint("llama", "text_generation"),
            hardware=["openvino", "cpu"],
            options={"precision": "f32"},
        ),
    ]
    return serve(models=models, embedded_default=False, batch_wait_ms=20, max_batch_size=16)


def test_64_concurrent_embeddings_equal_single_requests(server) -> None:
    with server.client() as http:
        alone = [
            http.post("/v1/embeddings", json={"model": "embed", "input": s}).json()
            for s in SENTENCES
        ]
    before = server.host.loader.cache[("embed", "text_embedding")].worker.batcher.batches
    together = asyncio.run(
        gather_posts(
            server.base, [("/v1/embeddings", {"model": "embed", "input": s}, {}) for s in SENTENCES]
        )
    )
    batcher = server.host.loader.cache[("embed", "text_embedding")].worker.batcher
    assert batcher.batches - before < 64 / 2  # requests shared forward passes
    for single, response in zip(alone, together, strict=True):
        assert response.status_code == 200
        assert response.json()["data"][0]["embedding"] == pytest.approx(
            single["data"][0]["embedding"], abs=1e-5
        )
        assert response.json()["usage"] == single["usage"]


def test_a_large_request_is_split_and_kept_in_order(server) -> None:
    with server.client() as http:
        many = http.post("/v1/embeddings", json={"model": "embed", "input": SENTENCES[:40]}).json()
        single = http.post("/v1/embeddings", json={"model": "embed", "input": SENTENCES[7]}).json()
    assert [d["index"] for d in many["data"]] == list(range(40))
    assert many["data"][7]["embedding"] == pytest.approx(single["data"][0]["embedding"], abs=1e-5)


def test_a_poisoned_input_fails_only_its_request(server) -> None:
    requests = [("/v1/embeddings", {"model": "embed", "input": s}, {}) for s in SENTENCES[:12]]
    requests.insert(5, ("/v1/embeddings", {"model": "embed", "input": [[1, 2, 99999999]]}, {}))
    responses = asyncio.run(gather_posts(server.base, requests))
    assert (
        responses[5].status_code == 400 and "token ids" in responses[5].json()["error"]["message"]
    )
    assert all(r.status_code == 200 for i, r in enumerate(responses) if i != 5)


def token_counts(server, texts: list[str]) -> list[int]:
    """What the served model's own tokenizer makes of each text (special tokens included)."""
    tokenizer = server.host.loader.cache[("embed", "text_embedding")].endpoint.processor
    return [len(ids) for ids in tokenizer(texts)["input_ids"]]


def test_usage_is_the_real_token_count(server) -> None:
    texts = [SENTENCES[3], "paris " * 3000, SENTENCES[60]]  # the long one is truncated
    with server.client() as http:
        batch = http.post("/v1/embeddings", json={"model": "embed", "input": texts}).json()
        ids = http.post("/v1/embeddings", json={"model": "embed", "input": [[5, 6, 7]]}).json()
    counts = token_counts(server, texts)
    tokenizer = server.host.loader.cache[("embed", "text_embedding")].endpoint.processor
    embedded = [min(n, tokenizer.model_max_length) for n in counts]
    assert counts[1] > embedded[1]  # usage is what was embedded, not what was sent
    assert batch["usage"] == {"prompt_tokens": sum(embedded), "total_tokens": sum(embedded)}
    assert ids["usage"]["prompt_tokens"] == 3
    # concurrent requests share forward passes, and each is billed its own tokens only
    responses = asyncio.run(
        gather_posts(
            server.base, [("/v1/embeddings", {"model": "embed", "input": s}, {}) for s in SENTENCES]
        )
    )
    for response, count in zip(responses, token_counts(server, SENTENCES), strict=True):
        assert response.json()["usage"]["prompt_tokens"] == count


def test_batches_are_cut_by_real_token_counts(serve, task_checkpoint) -> None:
    """With a budget of 48 padded tokens (longest input x rows), requests of 20 tokens go at
    most two to a batch, short ones share one, and an input over the budget still runs alone."""
    server = serve(
        models=[entry("embed", task_checkpoint("bert", "text_embedding"))],
        embedded_default=False,
        batch_wait_ms=50,  # requests gather, so the budget is what cuts
        max_batch_size=16,
        max_batch_tokens=48,
    )
    with server.client() as http:  # load it
        assert http.post("/v1/embeddings", json={"model": "embed", "input": "x"}).status_code == 200
    long = " ".join(["paris"] * 18)
    texts = [long] * 6 + ["hello"] * 6 + [" ".join(["france"] * 60)]
    counts = token_counts(server, texts)
    assert counts[0] == 20 and counts[6] == 3 and counts[-1] > 48
    batcher = server.host.loader.cache[("embed", "text_embedding")].worker.batcher
    before = len(batcher.shapes)
    responses = asyncio.run(
        gather_posts(
            server.base, [("/v1/embeddings", {"model": "embed", "input": t}, {}) for t in texts]
        )
    )
    assert [r.json()["usage"]["prompt_tokens"] for r in responses] == counts
    shapes = list(batcher.shapes)[before:]  # (rows, longest input, real tokens) per batch
    assert sum(real for _, _, real in shapes) == sum(counts)  # each input in exactly one batch
    for rows, longest, _ in shapes:
        assert rows == 1 or rows * longest <= 48
    assert sum(1 for _, longest, _ in shapes if longest == 20) >= 3  # 6 long, at most 2 a batch
    assert (1, counts[-1], counts[-1]) in shapes


def test_a_bad_input_fails_before_its_batch_forms(server) -> None:
    """Inputs are checked as each request is prepared: a request over the limit with
    truncation off, or with an out-of-range token id, fails alone while its company (same
    parameters) is served."""
    good = [("/v1/embeddings", {"model": "embed", "input": s}, {}) for s in SENTENCES[:10]]
    bad = [
        ("/v1/embeddings", {"model": "embed", "input": [[1, 2, 10**8]]}, {}),
        ("/models/embed", {"inputs": "paris " * 3000, "parameters": {"truncate": False}}, {}),
    ]
    tei = [
        ("/models/embed", {"inputs": s, "parameters": {"truncate": False}}, {})
        for s in SENTENCES[:6]
    ]
    responses = asyncio.run(gather_posts(server.base, good + bad + tei))
    assert all(r.status_code == 200 for r in responses[:10] + responses[12:])
    assert responses[10].status_code == 400 and "token ids" in responses[10].text
    assert responses[11].status_code == 400 and "at most" in responses[11].text


def test_continuous_batching_equals_each_request_alone(server, task_checkpoint) -> None:
    """Greedy tokens under concurrency, with different prompts and lengths, equal the same
    request run alone through the skill (no batching at all)."""
    prompts = ["hello world", "the capital of france is", "a", "paris paris paris", "b c d e f"]
    for name, model_type in (("gen", "llama"), ("gen-b", "gpt2"), ("gen-ov", "llama")):
        skill = skill_class(model_type)()
        handler = skill.handler(
            skill.init_cpu(str(task_checkpoint(model_type, "text_generation")), "text_generation")
        )
        alone = [
            handler([p], max_new_tokens=6 + i, ignore_eos=True)[0] for i, p in enumerate(prompts)
        ]
        requests = [
            (
                f"/models/{name}",
                {"inputs": p, "parameters": {"max_new_tokens": 6 + i, "details": True}},
                {},
            )
            for i, p in enumerate(prompts)
        ]
        responses = asyncio.run(gather_posts(server.base, requests * 2))
        for i, response in enumerate(responses):
            expected = alone[i % len(prompts)]
            got = response.json()[0]
            ids = [t["id"] for t in got["details"]["tokens"]]
            assert ids == expected["token_ids"][: len(ids)], (name, i)
            assert (
                got["generated_text"] == expected["text"]
                or got["details"]["finish_reason"] == "eos_token"
            )


def test_mixed_sampling_params_share_the_engine(server) -> None:
    seeded = {"model": "gen", "prompt": "hello", "max_tokens": 8, "temperature": 1.2, "seed": 5}
    greedy = {"model": "gen", "prompt": "hello", "max_tokens": 8, "temperature": 0}
    first = asyncio.run(
        gather_posts(
            server.base, [("/v1/completions", seeded, {}), ("/v1/completions", greedy, {})] * 3
        )
    )
    texts = [r.json()["choices"][0]["text"] for r in first]
    assert len({texts[0], texts[2], texts[4]}) == 1  # the same seed gives the same sample
    assert len({texts[1], texts[3], texts[5]}) == 1  # greedy is greedy under any company


def test_overload_answers_429_and_recovers(serve, task_checkpoint) -> None:
    server = serve(
        models=[entry("slow", task_checkpoint("llama", "text_generation"))],
        embedded_default=False,
        max_concurrency_per_model=2,
        max_queue_per_model=4,
    )
    body = {"model": "slow", "prompt": "hello", "max_tokens": 40, "temperature": 0}
    with server.client() as http:  # load it first: the overload is about queueing, not loading
        assert http.post("/v1/completions", json={**body, "max_tokens": 1}).status_code == 200
    responses = asyncio.run(gather_posts(server.base, [("/v1/completions", body, {})] * 32))
    statuses = [r.status_code for r in responses]
    assert 429 in statuses and statuses.count(200) >= 6
    assert set(statuses) <= {200, 429}
    assert all(r.headers.get("retry-after") for r in responses if r.status_code == 429)
    assert responses[statuses.index(429)].json()["error"]["type"] == "rate_limit_error"
    with server.client() as http:
        assert http.get("/health").status_code == 200
        assert http.post("/v1/completions", json=body).status_code == 200
    assert metric(server, "hfskills_queue_depth", priority="normal") == 0


def test_high_priority_is_served_first_and_deadlines_hold(serve, long_llama) -> None:
    """One slot, held by a long generation: a low- then a high-priority request queue behind
    it, and the high one is served first once the slot frees."""
    server = serve(
        models=[entry("one", long_llama)],
        embedded_default=False,
        max_concurrency_per_model=1,
        max_queue_per_model=8,
    )
    hold = {
        "model": "one",
        "prompt": "hello",
        "max_tokens": 1500,
        "temperature": 0,
        "ignore_eos": True,
    }  # seconds of decoding on the tiny model
    short = {"model": "one", "prompt": "hello", "max_tokens": 1, "temperature": 0}

    async def holding(client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/completions", json=hold)
        assert "usage" in response.json(), response.text
        assert response.json()["usage"]["completion_tokens"] == 1500

    async def scenario() -> list[str]:
        finished: list[str] = []
        async with httpx.AsyncClient(base_url=server.base, timeout=120) as client:
            await client.post("/v1/completions", json=short)  # load the model

            async def send(label: str, priority: str, delay: float) -> None:
                await asyncio.sleep(delay)
                response = await client.post(
                    "/v1/completions", json=short, headers={"X-Priority": priority}
                )
                assert response.status_code == 200
                finished.append(label)

            await asyncio.gather(
                holding(client), send("low", "low", 0.2), send("high", "high", 0.4)
            )
        return finished

    assert asyncio.run(scenario()) == ["high", "low"]

    async def deadline() -> httpx.Response:
        async with httpx.AsyncClient(base_url=server.base, timeout=120) as client:
            busy = asyncio.create_task(holding(client))
            await asyncio.sleep(0.2)
            waited = await client.post(
                "/v1/completions", json=short, headers={"X-Request-Timeout": "0.1"}
            )
            await busy
            return waited

    response = asyncio.run(deadline())
    assert response.status_code == 503 and response.headers["retry-after"]
    assert "waited 0.1 s" in response.json()["error"]["message"]
    with server.client() as http:
        bad = http.post("/v1/completions", json=short, headers={"X-Priority": "urgent"})
        assert bad.status_code == 400
        assert (
            http.post(
                "/v1/completions", json=short, headers={"X-Request-Timeout": "-1"}
            ).status_code
            == 400
        )


def test_a_busy_model_does_not_starve_another(serve, task_checkpoint) -> None:
    server = serve(
        models=[
            entry("busy", task_checkpoint("llama", "text_generation")),
            entry("free", task_checkpoint("bert", "text_embedding")),
        ],
        embedded_default=False,
        max_concurrency_per_model=2,
        max_concurrency=3,
    )
    long = {"model": "busy", "prompt": "hello", "max_tokens": 80, "temperature": 0}

    async def scenario() -> float:
        async with httpx.AsyncClient(
            base_url=server.base, timeout=120, limits=httpx.Limits(max_connections=16)
        ) as client:
            await client.post("/v1/embeddings", json={"model": "free", "input": "x"})
            hogs = [
                asyncio.create_task(client.post("/v1/completions", json=long)) for _ in range(6)
            ]
            await asyncio.sleep(0.3)
            start = time.perf_counter()
            quick = await client.post("/v1/embeddings", json={"model": "free", "input": "hello"})
            elapsed = time.perf_counter() - start
            assert quick.status_code == 200
            await asyncio.gather(*hogs)
            return elapsed

    assert asyncio.run(scenario()) < 5.0


GENERATED = "hfskills_model_generated_tokens_total"


def test_a_disconnected_stream_stops_generating(server) -> None:
    before = metric(server, GENERATED, model="gen")
    body = {"model": "gen", "prompt": "hello", "max_tokens": 2000, "temperature": 0, "stream": True}
    with httpx.Client(base_url=server.base, timeout=60) as http:
        with http.stream("POST", "/v1/completions", json=body) as response:
            seen = 0
            for line in response.iter_lines():
                if line.startswith("data:") and '"text"' in line:
                    seen += 1
                if seen == 3:
                    break  # the client goes away after three tokens
    time.sleep(1.5)
    generated = metric(server, GENERATED, model="gen") - before
    time.sleep(1.0)
    assert generated == metric(server, GENERATED, model="gen") - before
    assert 3 <= generated < 100, generated
    engine = server.host.loader.cache[("gen", "text_generation")].worker.engine
    assert engine.running == []


def test_a_same_length_batcher_joins_only_equal_lengths() -> None:
    """The batcher of an ``unpadded`` handler (`Staged.same_length`) splits a request by token
    count and joins requests only of one length, and answers in input order."""
    from hfskills.host.batching import DynamicBatcher, Stages
    from hfskills.skillset.runtime import Prepared

    seen: list[list[int]] = []

    async def prepare(inputs: list[Any], params: dict[str, Any]) -> list[Prepared]:
        return [Prepared(x, len(x)) for x in inputs]

    async def forward(items: list[Prepared], params: dict[str, Any]) -> list[str]:
        seen.append([item.tokens for item in items])
        return [item.features.upper() for item in items]

    async def finish(items: list[Prepared], output: Any, params: dict[str, Any]) -> list[Any]:
        return output

    async def run() -> list[list[str]]:
        batcher = DynamicBatcher(
            Stages(prepare, forward, finish), max_wait_s=0.05, same_length=True
        )
        requests = [["ab", "cde", "f"], ["gh"], ["ijk", "l"]]
        done = await asyncio.gather(*(batcher.submit(r, {}) for r in requests))
        return [[result for result, _ in answer] for answer in done]

    answers = asyncio.run(asyncio.wait_for(run(), 10))
    assert answers == [["AB", "CDE", "F"], ["GH"], ["IJK", "L"]]
    assert all(len(set(batch)) == 1 for batch in seen)
    assert sorted(n for batch in seen for n in batch) == [1, 1, 2, 2, 3, 3]
    assert len(seen) < 6  # equal lengths from different requests shared batches
