"""scripts/demo: serve the embedded default and show working curl and openai examples.

Starts `hfskills serve --preload`, waits until both default models are loaded (GET /ready
answers 200 once the preload is done), then prints each example and runs it, so what you see
is what the server answered.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

PORT = int(os.environ.get("PORT", "8000"))
BASE = f"http://127.0.0.1:{PORT}"

CURL_EXAMPLES = [
    ["curl", "-s", f"{BASE}/v1/models"],
    [
        "curl",
        "-s",
        f"{BASE}/v1/embeddings",
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"model": "all-minilm-l6-v2", "input": ["The capital of France is Paris."]}',
    ],
    [
        "curl",
        "-s",
        f"{BASE}/v1/chat/completions",
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 32, '
        '"messages": [{"role": "user", "content": "What is the capital of France?"}]}',
    ],
    [
        "curl",
        "-s",
        f"{BASE}/generate",
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"inputs": "The capital of France is", "parameters": {"max_new_tokens": 8}}',
    ],
]

OPENAI_EXAMPLE = textwrap.dedent(f"""\
    from openai import OpenAI

    client = OpenAI(base_url="{BASE}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{{"role": "user", "content": "What is the capital of France?"}}],
        temperature=0,
        max_tokens=32,
    )
    print(reply.choices[0].message.content)
    vectors = client.embeddings.create(model="all-minilm-l6-v2", input=["hello", "world"])
    print(len(vectors.data), "embeddings of", len(vectors.data[0].embedding), "dimensions")
""")


def ready() -> bool:
    """GET /ready answered 200 (the standard library: the demo extra needs no HTTP client)."""
    try:
        with urllib.request.urlopen(f"{BASE}/ready", timeout=300) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False  # not listening yet, or 503 while not ready


def wait_ready(server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"hfskills serve exited with {server.returncode}")
        if ready():
            return
        time.sleep(0.5)
    sys.exit("the server did not become ready within 300 s")


def show(title: str, command: list[str]) -> bool:
    """Print an example, run it, print what it answered; False when it failed."""
    print(f"\n$ {shlex.join(command) if command[0] == 'curl' else title}")
    run = [command[0], "--fail-with-body", *command[1:]] if command[0] == "curl" else command
    done = subprocess.run(run, capture_output=True, text=True, timeout=300)
    output = (done.stdout or done.stderr).strip()
    print(output[:600] + (" ..." if len(output) > 600 else ""))
    if done.returncode != 0:
        print(f"(this example failed: exit status {done.returncode})")
    return done.returncode == 0


def main() -> int:
    once = "--once" in sys.argv[1:]
    print(
        f"starting hfskills serve on {BASE} (embedded default: all-minilm-l6-v2, "
        "smollm2-135m-instruct; the chat model takes ~20-30 s to load)",
        flush=True,
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "hfskills.host.cli", "serve", "--port", str(PORT), "--preload"]
    )
    try:
        wait_ready(server)
        print("\n== ready. curl examples ==")
        curl = shutil.which("curl")
        failed = 0
        for command in CURL_EXAMPLES:
            if curl:
                failed += not show("", command)
            else:
                print(f"\n$ {shlex.join(command)}   (curl is not installed; not run)")
        print("\n== openai Python SDK ==\n" + OPENAI_EXAMPLE)
        failed += not show("python (the example above)", [sys.executable, "-c", OPENAI_EXAMPLE])
        print(
            f"\nAPI reference: docs/api.md. Metrics: {BASE}/metrics. Hardware: {BASE}/v1/hardware"
        )
        if failed:
            print(f"\n{failed} example(s) failed; see above and the server log.", file=sys.stderr)
        if once:
            return 1 if failed else 0
        print(f"\nServing on {BASE}; press Ctrl-C to stop.", flush=True)
        server.wait()
        return server.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
