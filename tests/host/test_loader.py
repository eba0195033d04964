"""The model cache: LRU eviction under a memory budget, pinning, single-flight loading."""

from __future__ import annotations

import gc
import re
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import skill_class

from .conftest import entry

TEXTS = ["hello world", "the capital of france is paris"]


@pytest.fixture(scope="module")
def classifier(task_checkpoint):
    path = task_checkpoint("bert", "text_classification")
    skill = skill_class("bert")()
    endpoint = skill.init_cpu(str(path), "text_classification")
    return path, endpoint.memory_bytes, skill.handler(endpoint)(TEXTS)


def metric(server, name: str, **labels: str) -> float:
    text = server.host.metrics.render().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    raise AssertionError(f"no sample {name} {labels} in /metrics")


def resident(client: httpx.Client) -> list[str]:
    return [m["model"] for m in client.get("/admin/models").json()["resident"]]


def test_lru_evicts_the_least_recently_used(serve, classifier) -> None:
    path, size, expected = classifier
    models = [entry(name, path) for name in ("a", "b", "c")]
    server = serve(models=models, embedded_default=False, memory_budget_bytes=int(size * 2.5))
    with server.client() as http:
        for name in ("a", "b"):
            assert http.post(f"/models/{name}", json={"inputs": TEXTS}).status_code == 200
        assert sorted(resident(http)) == ["a", "b"]
        third = http.post("/models/c", json={"inputs": TEXTS})
        assert third.status_code == 200
        assert sorted(resident(http)) == ["b", "c"]  # a was the least recently used
        evicted = metric(
            server, "hfskills_model_evictions_total", model="a", reason="memory budget"
        )
        assert evicted == 1
        for _ in range(2):  # every model keeps answering correctly, in turn
            for name in ("a", "b", "c"):
                got = http.post(f"/models/{name}", json={"inputs": TEXTS}).json()
                assert [[r["label"] for r in row] for row in got] == [
                    [r["label"] for r in row] for row in expected
                ]
                assert got[0][0]["score"] == pytest.approx(expected[0][0]["score"], abs=1e-5)
                assert len(resident(http)) == 2 and resident(http)[0] == name
        assert metric(server, "hfskills_model_loads_total", model="a", status="ok") == 3
        used = http.get("/admin/models").json()["used_bytes"]
        assert used <= size * 2.5
        assert metric(server, "hfskills_hardware_memory_used_bytes", hardware="cpu") == used
        # cycling three models through room for two misses every time; a repeat hits
        assert metric(server, "hfskills_cache_hit_ratio") == 0
        assert http.post("/models/c", json={"inputs": TEXTS}).status_code == 200
    assert 0 < metric(server, "hfskills_cache_hit_ratio") < 1


def test_pinned_models_are_never_evicted(serve, classifier) -> None:
    path, size, _ = classifier
    models = [entry("pinned", path, pinned=True), entry("x", path), entry("y", path)]
    server = serve(models=models, embedded_default=False, memory_budget_bytes=int(size * 2.5))
    with server.client() as http:
        for name in ("pinned", "x", "y", "x", "y"):
            assert http.post(f"/models/{name}", json={"inputs": TEXTS}).status_code == 200
            assert "pinned" in resident(http)
        assert http.post("/admin/models/pinned/unload").json() == {"unloaded": 1}  # admin may
        assert "pinned" not in resident(http)
        loaded = http.post("/admin/models/pinned/load").json()
        assert loaded["loaded"] == "pinned/text_classification" and loaded["hardware"] == "cpu"
        assert http.post("/admin/models/nope/unload").status_code == 404


def test_concurrent_first_requests_share_one_load(serve, classifier) -> None:
    path, _, expected = classifier
    server = serve(models=[entry("solo", path)], embedded_default=False)

    def ask(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.base, timeout=120) as client:
            return client.post("/models/solo", json={"inputs": TEXTS})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(ask, range(16)))
    assert [r.status_code for r in responses] == [200] * 16
    assert all(r.json()[0][0]["label"] == expected[0][0]["label"] for r in responses)
    assert metric(server, "hfskills_model_loads_total", model="solo", status="ok") == 1


def test_an_evicted_model_is_freed(serve, classifier) -> None:
    """What the loader loads is frozen out of the collector's sight (`freeze_heap`); an
    evicted model must still be collected, not kept alive in reference cycles among the
    frozen objects (its weights would stay in memory while the budget counts them gone)."""
    path, size, _ = classifier
    models = [entry(name, path) for name in ("a", "b")]
    server = serve(models=models, embedded_default=False, memory_budget_bytes=int(size * 1.5))
    with server.client() as http:
        assert http.post("/models/a", json={"inputs": TEXTS}).status_code == 200
        (loaded,) = server.host.loader.cache.values()
        model = weakref.ref(loaded.endpoint.model)
        del loaded
        gc.freeze()  # as the host does after every load (and at start)
        assert http.post("/models/b", json={"inputs": TEXTS}).status_code == 200
        assert resident(http) == ["b"]
        deadline = time.monotonic() + 10  # the collection runs shortly after the close
        while model() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert model() is None, "the evicted model's weights are still alive"
