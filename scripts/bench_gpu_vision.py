"""GPU image classification throughput: hfskills over HTTP vs torch eager in-process.

Sides, one after another on the same checkpoint and JPEG images (each warmed up first, untimed):
  host      `hfskills serve --config <toml>` serving the checkpoint with hardware ["cuda"],
            POST /models/<name> {"inputs": <base64 JPEG>, "parameters": {"top_k": 5}}, one image
            per request, --clients concurrent clients (the host batches them on the GPU)
  eager     transformers in this process, torch eager (no compile), batches of --batch: decode
            the JPEGs, preprocess, forward, softmax and top-5 to the CPU; in float32 (what
            `from_pretrained` gives) and again in --host-dtype (the host's dtype on this GPU)

Default checkpoint: a random-weight ViT-Base/16 (224x224, 1000 labels), built once into
--model-dir; --size tiny builds a 4-layer 192-wide one for a smoke test; --model takes any
image-classification checkpoint directory.

Target: host images/s >= 2x eager float32. Exits 0 with a SKIP line without CUDA.
Example (GPU machine): scripts/bench_gpu_vision.py --host-src . --compile
"""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import json
import time
from pathlib import Path
from typing import Any

import bench_common as bc

NAME = "bench-vit"
TARGET = 2.0
SIZES = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12},
    "tiny": {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 3},
}


def missing() -> str | None:
    """Why this benchmark cannot run here, or None."""
    return bc.no_cuda()


def build_model(directory: Path, size: str) -> Path:
    """A random-weight ViT for image classification, with its image processor."""
    if (directory / "config.json").is_file():
        return directory
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    dims = SIZES[size]
    config = ViTConfig(
        **dims,
        intermediate_size=4 * dims["hidden_size"],
        image_size=224,
        patch_size=16,
        num_labels=1000,
        id2label={i: f"class_{i}" for i in range(1000)},
        label2id={f"class_{i}": i for i in range(1000)},
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = ViTForImageClassification(config)
    tmp = directory.with_name(directory.name + ".partial")
    model.save_pretrained(tmp)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(tmp)
    tmp.replace(directory)
    print(f"   built a {size} ViT in {directory}")
    return directory


def make_images(n: int, size: int = 256, seed: int = 0) -> list[bytes]:
    """``n`` distinct JPEGs: colour gradients with seeded noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    out = []
    for i in range(n):
        base = np.stack(
            [np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), i)],
            axis=-1,
        )
        pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def summarize(latencies: list[float], errors: list[str], elapsed: float) -> dict[str, Any]:
    return {
        "images": len(latencies),
        "seconds": elapsed,
        "images_per_s": len(latencies) / elapsed if elapsed else None,
        "latency_p50_ms": bc.percentile(latencies, 50) * 1000,
        "latency_p99_ms": bc.percentile(latencies, 99) * 1000,
        "errors": len(errors),
        "first_errors": errors[:3],
    }


# -- host ----------------------------------------------------------------------------------------


def host_config(path: Path, model: Path, options: dict[str, Any], args: Any) -> Path:
    lines = [
        f"max_concurrency = {max(256, 2 * args.clients)}",
        f"max_concurrency_per_model = {max(64, args.clients)}",
        f"max_queue_per_model = {max(1024, 4 * args.clients)}",
        "request_timeout_s = 300",
        f"max_batch_size = {args.batch}",
        f"workers = {args.workers}",
        "preload = true",
        "",
        "[[models]]",
        f'name = "{NAME}"',
        f"checkpoint = {json.dumps(str(model))}",
        'tasks = ["image_classification"]',
        'hardware = ["cuda"]',
        "pinned = true",
        "options = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in options.items()) + " }",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


async def http_load(port: int, bodies: list[bytes], args: Any) -> dict[str, Any]:
    path = f"/models/{NAME}"
    async with bc.RawPool(port, args.clients) as pool:
        for body in bodies[:4]:  # warm-up (and, with compile, the first CUDA graphs)
            status, payload = await pool.post(path, body)
            if status != 200:
                raise RuntimeError(f"warm-up: HTTP {status}: {payload[:300]!r}")
        latencies: list[float] = []

        async def one(i: int) -> None:
            start = time.perf_counter()
            status, payload = await pool.post(path, bodies[i % len(bodies)])
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")
            latencies.append(time.perf_counter() - start)

        load = await bc.closed_loop(args.clients, args.requests, args.duration, one)
    result = summarize(latencies, load.errors, load.elapsed)
    result["stopped_by"] = load.stopped_by
    print(f"   {result['images_per_s']:.0f} images/s, p50 {result['latency_p50_ms']:.1f} ms")
    return result


def host_side(model: Path, images: list[bytes], args: Any) -> dict[str, Any]:
    import httpx

    options = bc.parse_options(args.host_option)
    if args.compile:
        options["compile"] = True
    config = host_config(bc.RESULTS / "bench_gpu_vision.toml", model, options, args)
    bodies = [
        json.dumps(
            {"inputs": base64.b64encode(image).decode(), "parameters": {"top_k": 5}}
        ).encode()
        for image in images
    ]
    port = bc.free_port()
    env = bc.host_env(args.host_src)
    cmd = bc.hfskills_command("serve", "--config", str(config), "--port", str(port))
    with bc.Server("hfskills-gpu-vision", cmd, port, env=env, ready_timeout=600) as server:
        ready = httpx.get(server.base + "/ready", timeout=600, trust_env=False)
        if ready.status_code != 200:
            raise RuntimeError(f"the host could not load the model: {ready.text[:300]}")
        resident = httpx.get(server.base + "/admin/models", trust_env=False).json()["resident"]
        where = {k: resident[0][k] for k in ("hardware", "device", "dtype")}
        print(f"   loaded on {where}")
        if where["hardware"] != "cuda":
            raise RuntimeError(f"the host loaded the model on {where['hardware']}, not cuda")
        result = asyncio.run(http_load(port, bodies, args))
    result.update(loaded=where, options=options)
    return result


# -- eager in-process ----------------------------------------------------------------------------


def eager_side(model_dir: Path, images: list[bytes], args: Any, dtype: str) -> dict[str, Any]:
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    processor = AutoImageProcessor.from_pretrained(model_dir)
    model = AutoModelForImageClassification.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    model = model.cuda().eval()

    def run(chunk: list[bytes]) -> list[Any]:
        pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in chunk]
        batch = processor(images=pil, return_tensors="pt")["pixel_values"]
        batch = batch.to("cuda", dtype=getattr(torch, dtype), non_blocking=True)
        probs = model(pixel_values=batch).logits.float().softmax(-1)
        top = probs.topk(5, dim=-1)
        return list(zip(top.values.cpu().tolist(), top.indices.cpu().tolist(), strict=True))

    n = args.requests
    with torch.inference_mode():
        run(images[: args.batch])  # warm-up
        torch.cuda.synchronize()
        start, done = time.perf_counter(), 0
        while done < n and time.perf_counter() - start < args.duration:
            chunk = [images[(done + j) % len(images)] for j in range(min(args.batch, n - done))]
            run(chunk)
            done += len(chunk)
        elapsed = time.perf_counter() - start
    model = None  # free the GPU before the next side
    gc.collect()
    torch.cuda.empty_cache()
    result = {"images": done, "seconds": elapsed, "images_per_s": done / elapsed, "dtype": dtype}
    print(f"   {result['images_per_s']:.0f} images/s ({dtype}, batches of {args.batch})")
    return result


# -- main ----------------------------------------------------------------------------------------


def main() -> int:
    p = bc.parser("bench_gpu_vision", __doc__, requests=2048, duration=300.0)
    bc.gpu_arguments(p, SIZES, "base")
    p.add_argument("--batch", type=int, default=32, help="eager batch and host max batch (32)")
    p.add_argument("--workers", type=int, default=4, help="host inference threads (default 4)")
    p.add_argument("--images", type=int, default=256, help="distinct JPEGs (default 256)")
    p.add_argument("--compile", action="store_true", help="host option compile=true (CUDA graphs)")
    p.add_argument(
        "--host-dtype",
        default=None,
        help="dtype of the second eager run (default: the host's rule, bfloat16 or float16)",
    )
    args = p.parse_args()
    if args.quick:
        args.requests, args.clients = min(args.requests, 256), min(args.clients, 16)
    reason = missing()
    if reason:
        print(f"SKIP bench_gpu_vision: {reason}")
        return 0
    import torch

    if args.host_dtype is None:
        args.host_dtype = "bfloat16" if torch.cuda.is_bf16_supported(False) else "float16"
    if args.model is None:
        args.model = build_model(args.model_dir / f"vit-{args.size}", args.size)
    images = make_images(args.images)
    results: dict[str, Any] = {}
    sides = {
        "host": (
            "host: hfskills serve, POST /models/<name>",
            lambda: host_side(args.model, images, args),
        ),
        "eager": (
            f"in-process: torch eager float32, batch {args.batch}",
            lambda: eager_side(args.model, images, args, "float32"),
        ),
        "eager_host_dtype": (
            f"in-process: torch eager {args.host_dtype}, batch {args.batch}",
            lambda: eager_side(args.model, images, args, args.host_dtype),
        ),
    }
    for side, (title, run) in sides.items():
        if side in args.skip:
            continue
        with bc.section(title, args.wait_quiet):
            try:
                results[side] = run()
            except Exception as exc:
                print(f"   FAILED: {type(exc).__name__}: {exc}")
                results[side] = {"error": f"{type(exc).__name__}: {exc}"[:500]}

    def rate(side: str) -> float | None:
        return results.get(side, {}).get("images_per_s")

    labels = {
        "host": f"hfskills serve (HTTP, {args.clients} clients)",
        "eager": f"torch eager float32, batch {args.batch}",
        "eager_host_dtype": f"torch eager {args.host_dtype}, batch {args.batch}",
    }
    rows = [
        [
            labels[side],
            r.get("images"),
            r.get("seconds"),
            r.get("images_per_s"),
            r.get("latency_p50_ms"),
            r.get("latency_p99_ms"),
            bc.ratio(r.get("images_per_s"), rate("eager")),
            r.get("errors", r.get("error")),
        ]
        for side, r in results.items()
    ]
    headers = ["side", "images", "s", "images/s", "p50 ms", "p99 ms", "x eager fp32", "errors"]
    gpu = torch.cuda.get_device_name(0)
    bc.print_table(headers, rows, f"{args.model.name} on {gpu}, one JPEG per request")
    targets = [
        bc.check(
            "host images/s vs torch eager float32", bc.ratio(rate("host"), rate("eager")), TARGET
        )
    ]
    bc.write_json(
        args.out,
        {
            "benchmark": "gpu_vision",
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
                "host/eager": bc.ratio(rate("host"), rate("eager")),
                "host/eager_host_dtype": bc.ratio(rate("host"), rate("eager_host_dtype")),
            },
            "targets": targets,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
