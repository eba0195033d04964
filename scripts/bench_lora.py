"""LoRA adapters' cost: memory and tokens/s of N adapters on one base, against the base alone.

Sides, one after another, each a `hfskills serve` of SmolLM2-135M-Instruct on torch (the GGUF,
dequantized; `hardware = ["cpu"]`):
  base      the model alone
  adapters  the same model with N random LoRA adapters (peft, rank --rank on q/k/v/o_proj)
Memory: the loaded model's bytes (`/admin/models`: parameters and buffers, shared storage once)
and the server's resident set (VmRSS) once loaded; "N copies" is what serving N merged
fine-tunes as models of their own would hold (N + 1 times the base). Throughput: greedy,
non-streamed /v1/completions of --max-tokens tokens (min_tokens too, so every answer has the
same length), --clients at once, on the same prompts:
  base      every request names the base           (both sides)
  one       every request names adapter 1          (adapters side)
  mixed     requests cycle through base and every adapter: rows of different adapters in
            one continuous batch (peft's mixed-batch forward)
Ratios: tokens/s over the base side's. Example: scripts/bench_lora.py --quick
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import bench_common as bc

MODEL = "smollm2-135m-instruct"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
PROMPTS = [
    "Write a short poem about the sea.",
    "Explain what a neural network is.",
    "List three uses of copper.",
    "Describe the city of Paris in two sentences.",
]


def make_adapters(count: int, rank: int, root: Path) -> dict[str, str]:
    """``count`` random LoRA adapters on SmolLM2 (small weights: the answers stay text)."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    gguf = bc.smollm_gguf()
    adapters = {}
    base = None  # the GGUF dequantized once (15 s): each adapter added to it, then unloaded
    for i in range(1, count + 1):
        target = adapters[f"adapter-{i}"] = root / f"adapter-{i}"
        if (target / "adapter_config.json").is_file():
            continue
        if base is None:
            base = transformers.AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
        torch.manual_seed(i)
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGETS, lora_dropout=0.0)
        peft_model = get_peft_model(base, config)
        with torch.no_grad():  # B starts at zero (no effect): give it small random weights
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.01)
        peft_model.save_pretrained(target)
        base = peft_model.unload()  # the base again, without this adapter's layers
    return {name: str(target) for name, target in adapters.items()}


def catalog(adapters: dict[str, str]) -> str:
    gguf = bc.smollm_gguf()
    lines = [
        "embedded_default = false",
        "[[models]]",
        f'name = "{MODEL}"',
        f'checkpoint = "{gguf.parent}"',
        f'gguf_file = "{gguf.name}"',
        'skill = "hf_llama"',
        'tasks = ["text_generation"]',
        'hardware = ["cpu"]',
    ]
    if adapters:
        lines.append("[models.adapters]")
        lines += [f'"{name}" = "{path}"' for name, path in adapters.items()]
    return "\n".join(lines) + "\n"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def level(url: str, models: list[str], n: int, args: Any) -> dict[str, Any]:
    """``n`` clients, ``args.requests`` requests, model names in turn from ``models``."""
    tokens, latencies, errors = 0, [], 0
    queue = list(range(args.requests))

    async def client(http: Any) -> None:
        nonlocal tokens, errors
        while queue:
            i = queue.pop()
            body = {
                "model": models[i % len(models)],
                "prompt": PROMPTS[i % len(PROMPTS)],
                "max_tokens": args.max_tokens,
                "min_tokens": args.max_tokens,
                "temperature": 0,
            }
            start = time.perf_counter()
            got = await http.post(url, json=body)
            latencies.append(time.perf_counter() - start)
            if got.status_code != 200:
                errors += 1
                continue
            tokens += got.json()["usage"]["completion_tokens"]

    async with bc.http_client(n) as http:
        await http.post(url, json={"model": models[0], "prompt": "hi", "max_tokens": 2})  # warm
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(n)))
        elapsed = time.perf_counter() - start
    return {
        "requests": args.requests,
        "tokens": tokens,
        "tok_per_s": round(tokens / elapsed, 1) if elapsed else None,
        "p50_ms": round(bc.percentile(latencies, 50) * 1000, 1) if latencies else None,
        "errors": errors,
    }


def main() -> int:
    p = bc.parser("bench_lora", __doc__, requests=16, duration=600.0)
    p.add_argument("--adapters", type=int, default=4, help="adapters on the base (default 4)")
    p.add_argument("--rank", type=int, default=16, help="each adapter's rank (default 16)")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens per request (default 32)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    args = p.parse_args()
    if args.quick:
        args.requests = min(args.requests, 8)
    root = bc.RESULTS / "lora"
    root.mkdir(parents=True, exist_ok=True)
    adapters = make_adapters(args.adapters, args.rank, root)
    names = list(adapters)
    sides = {"base": {}, "adapters": adapters}
    modes = {"base": [MODEL], "one": names[:1], "mixed": [MODEL, *names]}
    results: dict[str, Any] = {}
    for side, served in sides.items():
        if side in args.skip:
            continue
        config = root / f"{side}.toml"
        config.write_text(catalog(served))
        with bc.section(f"{side}: hfskills serve, /v1/completions", args.wait_quiet) as meter:
            port = bc.free_port()
            cmd = bc.hfskills_command("serve", "--port", str(port), "--config", str(config))
            with bc.Server(f"hfskills-lora-{side}", cmd, port, env=bc.host_env(args.host_src)) as s:
                out: dict[str, Any] = {"hardware": bc.served_hardware(s.base, MODEL)}
                import httpx

                resident = httpx.get(f"{s.base}/admin/models", timeout=30).json()
                out["model_bytes"] = resident["used_bytes"]
                out["rss_bytes"] = rss_bytes(s.process.pid)
                for mode, models in modes.items():
                    if side == "base" and mode != "base":
                        continue
                    out[mode] = asyncio.run(
                        level(s.base + "/v1/completions", models, args.clients, args)
                    )
                results[side] = out
        results[side]["other_cores"] = meter.other_cores

    base = results.get("base", {})
    base_tps = base.get("base", {}).get("tok_per_s")
    rows, ratios = [], {}
    for side, out in results.items():
        for mode in modes:
            if mode not in out:
                continue
            r = out[mode]
            ratio = bc.ratio(r["tok_per_s"], base_tps)
            ratios[f"{side} {mode}/base"] = ratio
            rows.append(
                [side, mode, r["requests"], r["tok_per_s"], ratio, r["p50_ms"], r["errors"]]
            )
    headers = ["side", "requests name", "requests", "tok/s", "x base", "p50 ms", "errors"]
    title = (
        f"SmolLM2-135M on torch, {args.adapters} adapters of rank {args.rank}, "
        f"{args.clients} clients, {args.max_tokens} tokens each"
    )
    table = bc.print_table(headers, rows, title)
    memory_rows = []
    if base and "adapters" in results:
        one = base["model_bytes"]
        shared = results["adapters"]["model_bytes"]
        copies = one * (args.adapters + 1)
        memory_rows = [
            ["base alone", one, base["rss_bytes"]],
            [f"base + {args.adapters} adapters", shared, results["adapters"]["rss_bytes"]],
            [f"{args.adapters + 1} copies (merged fine-tunes)", copies, None],
        ]
        ratios["adapters memory/base"] = bc.ratio(shared, one)
        ratios["adapters memory/copies"] = bc.ratio(shared, copies)
        table += "\n" + bc.print_table(
            ["what is loaded", "model bytes", "server RSS bytes"], memory_rows, "memory"
        )
    bc.write_json(
        args.out,
        {
            "benchmark": "lora",
            "model": MODEL,
            "machine": bc.machine(args.host_src),
            "settings": {
                "adapters": args.adapters,
                "rank": args.rank,
                "requests": args.requests,
                "max_tokens": args.max_tokens,
                "clients": args.clients,
            },
            "results": results,
            "ratios": ratios,
            "table": table,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
