"""GPU generation throughput: hfskills (vLLM engine) over HTTP vs `vllm serve` vs transformers.

Sides, one after another on the same checkpoint and prompts (greedy, every request generates
exactly --output-tokens tokens: `ignore_eos` + `min_tokens`):
  host      `hfskills serve --config <toml>` serving the checkpoint with hardware ["cuda"] (vLLM
            when installed, else torch), POST /v1/chat/completions with stream=true,
            --clients concurrent clients, --requests requests
  vllm      `vllm serve` (python -m vllm.entrypoints.openai.api_server) on the same checkpoint,
            the same dtype and GPU memory share, the same load
  hf        transformers `generate` in this process, static batches of --hf-batch, sdpa

Default checkpoint: the random-weight 0.85B Llama of ../shared/gpu/llm_baseline.py (hidden 2048,
16 layers, GQA 32/8, 32k WordLevel vocabulary: every prompt word is one token), built once into
--model-dir; no hub access needed. --size tiny builds a 4-layer 256-wide one for a smoke test.
Prompts are --prompt-tokens random vocabulary words as one chat message.

Target: host tok/s >= 0.9x vllm serve. Exits 0 with a SKIP line without CUDA or vLLM.
Example (GPU machine): scripts/bench_gpu_llm.py --host-src . ; scripts/bench_gpu_llm.py --quick
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import bench_common as bc

NAME = "bench-llm"
TARGET = 0.9
SIZES = {
    "baseline": {
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
    },
    "tiny": {
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
}


def missing() -> str | None:
    """Why this benchmark cannot run here, or None."""
    if reason := bc.no_cuda():
        return reason
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not importable (pip install 'hfskills[cuda]', or stage it: shared/gpu)"
    return None


# -- the checkpoint ------------------------------------------------------------------------------


def build_model(directory: Path, size: str) -> Path:
    """A random-weight Llama with a 32k WordLevel tokenizer (llm_baseline.py's recipe)."""
    if (directory / "config.json").is_file():
        return directory
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    start = time.perf_counter()
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {s: i for i, s in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), 32000)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    config = LlamaConfig(
        **SIZES[size],
        vocab_size=32000,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    tmp = directory.with_name(directory.name + ".partial")
    model.save_pretrained(tmp)
    fast.save_pretrained(tmp)
    tmp.replace(directory)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    print(f"   built a {size} Llama in {directory} ({time.perf_counter() - start:.1f} s)")
    return directory


def make_prompts(model: Path, n: int, length: int, seed: int = 0) -> list[str]:
    """``n`` prompts of ``length`` random vocabulary tokens, as text (re-tokenized to about
    ``length`` tokens; one word each with the default WordLevel vocabulary)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    special = set(tok.all_special_ids)
    ids = [i for i in range(min(len(tok), 32000)) if i not in special]
    rng = random.Random(seed)
    return [
        tok.decode([rng.choice(ids) for _ in range(length)], skip_special_tokens=True)
        for _ in range(n)
    ]


# -- HTTP sides ----------------------------------------------------------------------------------


async def stream_chat(client: Any, url: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    body = {
        "model": NAME,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "min_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return await bc.stream_chat(client, url, body)


summarize = bc.summarize_streams


async def http_side(base: str, prompts: list[str], args: Any) -> dict[str, Any]:
    url = bc.local_only(base + "/v1/chat/completions")
    async with bc.http_client(args.clients, timeout=900.0) as client:
        await stream_chat(client, url, prompts[0], 8)  # warm-up, untimed
        load = await bc.closed_loop(
            args.clients,
            args.requests,
            args.duration,
            lambda i: stream_chat(client, url, prompts[i % len(prompts)], args.output_tokens),
        )
    result = summarize(load.samples, load.elapsed)
    result.update(errors=len(load.errors), first_errors=load.errors[:3], stopped_by=load.stopped_by)
    print(
        f"   {result['tok_per_s']:.0f} tok/s, TTFT p50 {result['ttft_p50_ms']:.0f} ms, "
        f"{result['tokens_per_request']:.1f} tok/request, {len(load.errors)} errors"
    )
    return result


def wait_loaded(base: str, timeout: float) -> None:
    """GET /ready until the default model is loaded; a load that failed stops the side."""
    import httpx

    deadline = time.perf_counter() + timeout
    with httpx.Client(timeout=timeout, trust_env=False) as client:
        while time.perf_counter() < deadline:
            r = client.get(base + "/ready")
            if r.status_code == 200:
                return
            failures = r.json().get("failures")
            if failures:
                raise RuntimeError(f"the host could not load the model: {failures}")
            time.sleep(1)
    raise RuntimeError(f"the model was not loaded in {timeout:.0f} s")


def host_config(path: Path, model: Path, options: dict[str, Any], clients: int) -> Path:
    lines = [
        f"max_concurrency = {max(256, 2 * clients)}",
        f"max_concurrency_per_model = {max(128, 2 * clients)}",
        f"max_queue_per_model = {max(1024, 4 * clients)}",
        "request_timeout_s = 900",
        f"max_batch_sequences = {clients}",
        "preload = true",
        "",
        "[default_models]",
        f'text_generation = "{NAME}"',
        "",
        "[[models]]",
        f'name = "{NAME}"',
        f"checkpoint = {json.dumps(str(model))}",
        'tasks = ["text_generation"]',
        'hardware = ["cuda"]',
        "pinned = true",
        "options = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in options.items()) + " }",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def host_side(model: Path, prompts: list[str], args: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"dtype": args.dtype, **bc.parse_options(args.host_option)}
    config = host_config(bc.RESULTS / "bench_gpu_llm.toml", model, options, args.clients)
    port = bc.free_port()
    env = bc.host_env(args.host_src)
    cmd = bc.hfskills_command("serve", "--config", str(config), "--port", str(port))
    with bc.Server("hfskills-gpu-llm", cmd, port, env=env, ready_timeout=600) as server:
        start = time.perf_counter()
        wait_loaded(server.base, args.load_timeout)
        load_s = time.perf_counter() - start
        import httpx

        resident = httpx.get(server.base + "/admin/models", trust_env=False).json()["resident"]
        log = server.log_path.read_text(errors="replace") if server.log_path else ""
        engine = "vllm" if "on vLLM" in log else "torch"
        print(f"   loaded in {load_s:.1f} s on {resident[0]['hardware']} ({engine})")
        if resident[0]["hardware"] != "cuda":
            raise RuntimeError(f"the host loaded the model on {resident[0]['hardware']}, not cuda")
        result = asyncio.run(http_side(server.base, prompts, args))
    result.update(load_s=load_s, engine=engine, options=options)
    return result


def vllm_side(model: Path, prompts: list[str], args: Any) -> dict[str, Any]:
    port = bc.free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
    cmd += ["--served-model-name", NAME, "--host", bc.LOCAL, "--port", str(port)]
    cmd += ["--dtype", args.dtype, "--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    cmd += ["--seed", "0", "--disable-log-stats", *args.vllm_arg]
    with bc.Server("vllm-serve", cmd, port, ready_timeout=args.load_timeout) as server:
        result = asyncio.run(http_side(server.base, prompts, args))
    result["load_s"] = server.started_in
    return result


# -- in-process transformers ---------------------------------------------------------------------


def hf_side(model_dir: Path, prompts: list[str], args: Any) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=getattr(torch, args.dtype), attn_implementation="sdpa"
    )
    model = model.cuda().eval()
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]
    greedy = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    n = min(args.requests, len(texts))
    with torch.inference_mode():
        batch = tok(texts[:8], return_tensors="pt", padding=True).to("cuda")
        model.generate(**batch, max_new_tokens=8, pad_token_id=pad, **greedy)  # warm-up
        torch.cuda.synchronize()
        start, tokens = time.perf_counter(), 0
        for s in range(0, n, args.hf_batch):
            batch = tok(texts[s : s + args.hf_batch], return_tensors="pt", padding=True)
            batch = batch.to("cuda")
            out = model.generate(
                **batch,
                max_new_tokens=args.output_tokens,
                min_new_tokens=args.output_tokens,
                pad_token_id=pad,
                **greedy,
            )
            tokens += (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    del model
    gc.collect()
    torch.cuda.empty_cache()
    result = {
        "requests": n,
        "tokens": tokens,
        "tokens_per_request": tokens / n,
        "seconds": elapsed,
        "tok_per_s": tokens / elapsed,
        "batch": args.hf_batch,
    }
    print(f"   {result['tok_per_s']:.0f} tok/s (static batches of {args.hf_batch})")
    return result


# -- main ----------------------------------------------------------------------------------------


def main() -> int:
    p = bc.parser("bench_gpu_llm", __doc__, requests=256, duration=600.0)
    bc.gpu_arguments(p, SIZES, "baseline")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt length (default 128)")
    p.add_argument("--output-tokens", type=int, default=128, help="tokens generated (default 128)")
    p.add_argument("--hf-batch", type=int, default=64, help="transformers batch (default 64)")
    p.add_argument("--dtype", default="bfloat16", help="all sides (default bfloat16)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.8, help="vllm serve's share")
    p.add_argument("--load-timeout", type=float, default=900.0, help="seconds to load a side")
    p.add_argument(
        "--vllm-arg", action="append", default=[], metavar="ARG", help="extra vllm serve argument"
    )
    args = p.parse_args()
    if args.quick:
        args.requests, args.clients = min(args.requests, 64), min(args.clients, 16)
    reason = missing()
    if reason:
        print(f"SKIP bench_gpu_llm: {reason}")
        return 0
    if args.model is None:
        args.model = build_model(args.model_dir / f"llama-{args.size}", args.size)
    prompts = make_prompts(args.model, max(args.requests, 8), args.prompt_tokens)
    results: dict[str, Any] = {}
    sides = {
        "host": ("host: hfskills serve, /v1/chat/completions stream", host_side),
        "vllm": ("vllm serve, /v1/chat/completions stream", vllm_side),
        "hf": (f"in-process: transformers generate, batch {args.hf_batch}", hf_side),
    }
    for side, (title, run) in sides.items():
        if side in args.skip:
            continue
        with bc.section(title, args.wait_quiet):
            try:
                results[side] = run(args.model, prompts, args)
            except Exception as exc:  # one side failing still reports the others
                print(f"   FAILED: {type(exc).__name__}: {exc}")
                results[side] = {"error": f"{type(exc).__name__}: {exc}"[:500]}

    def rate(side: str) -> float | None:
        return results.get(side, {}).get("tok_per_s")

    labels = {
        "host": "hfskills serve (HTTP)",
        "vllm": "vllm serve (HTTP)",
        "hf": f"transformers generate, batch {args.hf_batch}",
    }
    rows = [
        [
            labels[side],
            r.get("requests"),
            r.get("prompt_tokens_per_request"),
            r.get("tokens_per_request"),
            r.get("seconds"),
            r.get("tok_per_s"),
            r.get("ttft_p50_ms"),
            r.get("ttft_p99_ms"),
            r.get("itl_p50_ms"),
            bc.ratio(r.get("tok_per_s"), rate("vllm")),
            r.get("errors", r.get("error")),
        ]
        for side, r in results.items()
    ]
    headers = [
        "side", "requests", "prompt tok", "tok/req", "s", "tok/s", "TTFT p50 ms",
        "TTFT p99 ms", "ITL p50 ms", "x vllm serve", "errors",
    ]  # fmt: skip
    import torch

    gpu = torch.cuda.get_device_name(0)
    title = (
        f"{args.model.name} on {gpu}, {args.clients} clients, {args.prompt_tokens} prompt + "
        f"{args.output_tokens} output tokens, {args.dtype}"
    )
    bc.print_table(headers, rows, title)
    target = bc.check("host tok/s vs vllm serve", bc.ratio(rate("host"), rate("vllm")), TARGET)
    bc.write_json(
        args.out,
        {
            "benchmark": "gpu_llm",
            "model": str(args.model),
            "gpu": gpu,
            "machine": bc.machine(args.host_src),
            "settings": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in vars(args).items()
                if k not in ("out", "host_src")
            },
            "results": results,
            "ratios": {
                "host/vllm": bc.ratio(rate("host"), rate("vllm")),
                "host/hf": bc.ratio(rate("host"), rate("hf")),
                "vllm/hf": bc.ratio(rate("vllm"), rate("hf")),
            },
            "targets": [target],
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
