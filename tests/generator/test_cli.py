"""`generate-skill` as a user runs it: help, output, --check, --force, --all-committed, errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hfskills.generator.cli import main

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
    for path in tmp_path.glob("hf_*.py"):
        assert path.read_bytes() == (SKILLSET / path.name).read_bytes()


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
