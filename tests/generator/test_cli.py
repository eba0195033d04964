"""`generate-skill` as a user runs it: help, output, --check, --force, --all-committed, errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hfskills.generator.cli import main, parser

from .test_render import COMMITTED, SKILLSET


def test_help_explains_every_option() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hfskills.generator.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0
    for flag in (
        "SOURCE",
        "--model-type",
        "--output",
        "--from-cache",
        "--force",
        "--check",
        "--all-committed",
        "examples:",
    ):
        assert flag in done.stdout


def test_console_script_is_installed() -> None:
    script = shutil.which("generate-skill", path=str(Path(sys.executable).parent))
    assert script is not None
    done = subprocess.run(
        [script, "--model-type", "bert", "--check"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout


def test_model_type_into_a_temp_folder_reproduces_the_committed_file(tmp_path, capsys) -> None:
    for model_type in ("bert", "llama", "whisper", "xlm-roberta"):
        assert main(["--model-type", model_type, "--output", str(tmp_path)]) == 0
    capsys.readouterr()
    here = f"--output {tmp_path.resolve()} --force"  # "Regenerate with" names the folder
    for path in tmp_path.glob("hf_*.py"):
        text = path.read_text()
        assert here in text
        assert text.replace(here, "--output skillset --force") == (SKILLSET / path.name).read_text()


def test_check_detects_drift_and_force_repairs_it(tmp_path, capsys) -> None:
    assert main(["--model-type", "gpt2", "--output", str(tmp_path)]) == 0
    assert main(["--model-type", "gpt2", "--output", str(tmp_path), "--check"]) == 0
    target = tmp_path / "hf_gpt2.py"
    target.write_text(target.read_text() + "# drift\n")
    capsys.readouterr()
    assert main(["--model-type", "gpt2", "--output", str(tmp_path), "--check"]) == 1
    assert "differs" in capsys.readouterr().err
    assert main(["--model-type", "gpt2", "--output", str(tmp_path)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["--model-type", "gpt2", "--output", str(tmp_path), "--force"]) == 0
    assert main(["--model-type", "gpt2", "--output", str(tmp_path), "--check"]) == 0


def test_all_committed_check_passes_on_the_committed_skillset(capsys) -> None:
    assert main(["--all-committed", "--check"]) == 0
    captured = capsys.readouterr()
    assert f"{len(COMMITTED)} skills checked" in captured.out


def test_all_committed_regenerates_a_copied_skillset(tmp_path, capsys) -> None:
    for name in ("hf_bert.py", "hf_t5.py"):
        (tmp_path / name).write_text((SKILLSET / name).read_text() + "# stale\n")
    assert main(["--all-committed", "--output", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "skills: 100%" in err  # the progress bar
    for name in ("hf_bert.py", "hf_t5.py"):
        assert (tmp_path / name).read_bytes() == (SKILLSET / name).read_bytes()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model-type", "nope"], "unknown model_type"),
        (["./no/such/dir"], "no such directory"),
        (["--all-committed", "--model-type", "bert"], "takes no SOURCE"),
    ],
)
def test_errors_are_one_line_without_traceback(argv, message, capsys) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_usage_error_exits_2() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


# -- where a skill is written, and hub ids that cannot be reached ------------------------------


def _skillset_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in SKILLSET.iterdir() if p.is_file()}


def test_without_output_a_skill_goes_to_skills_in_the_current_folder(
    tmp_path, monkeypatch, capsys, config_dir
) -> None:
    """Never into the installed/committed skillset (which would then fail scripts/test)."""
    before = _skillset_files()
    checkpoint = config_dir({"model_type": "bert", "architectures": ["BertModel"]})
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main([str(checkpoint)]) == 0
    out = capsys.readouterr().out
    written = (work / "skills" / "hf_bert.py").read_text()
    assert f"`generate-skill {checkpoint} --output {work / 'skills'} --force`" in written
    assert out.splitlines()[0].startswith("skills/hf_bert.py: written (bert, from directory")
    assert f"next: hfskills serve {checkpoint} --skills-dir skills" in out
    assert main(["--model-type", "ernie"]) == 0
    out = capsys.readouterr().out
    assert (work / "skills" / "hf_ernie.py").is_file()
    assert "next: hfskills serve <ernie checkpoint> --skills-dir skills" in out
    assert _skillset_files() == before
    assert sorted(p.name for p in (work / "skills").iterdir()) == ["hf_bert.py", "hf_ernie.py"]


def test_the_default_folder_is_refused_inside_the_skillset(monkeypatch, capsys) -> None:
    monkeypatch.chdir(SKILLSET)
    assert main(["--model-type", "ernie"]) == 1
    assert "inside the installed skillset" in capsys.readouterr().err
    assert not (SKILLSET / "skills").exists()


def test_help_says_where_skills_are_written() -> None:
    text = " ".join(parser().format_help().split())
    assert "default: ./skills under the current folder" in text
    assert "hfskills serve ./my-bert-checkpoint --skills-dir skills" in text


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        ({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}, "the hub is unreachable"),
    ],
)
def test_an_uncached_hub_id_fails_fast_with_one_line(tmp_path, env, why) -> None:
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path), **env}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "hfskills.generator.cli", "acme/not-cached"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("generate-skill: error: 'acme/not-cached' is not in the local")
    assert why in lines[0] and "generate-skill ./my-model" in lines[0]
    assert elapsed < 15, f"took {elapsed:.1f} s"  # was 26-51 s of retries; ~1-2 s here
    assert not (tmp_path / "skills").exists()
