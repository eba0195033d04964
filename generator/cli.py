"""``generate-skill``: render ``hf_<model_type>.py`` for a model.

Errors are one line on stderr and a non-zero exit (2 for usage, 1 for everything else);
``--check`` exits 1 when the file on disk differs from what would be generated. Without
``--output``, a SOURCE or ``--model-type`` is written to ``./skills`` (`USER_SKILLS`), never into
the installed skillset; ``--all-committed`` and ``--check`` read the committed skillset.
"""

from __future__ import annotations

import argparse
import ast
import shlex
import sys
from pathlib import Path

import hfskills.skillset as _skillset
from hfskills.skillset.runtime.errors import HFSkillsError

from . import metadata as metadata_mod

#: Where the committed skills live: the checkout's skillset/ in an editable install.
SKILLSET = Path(_skillset.__file__).resolve().parent
#: Where a SOURCE or --model-type is written without --output (relative to the current folder).
USER_SKILLS = Path("skills")

EPILOG = """\
examples:
  generate-skill ./my-bert-checkpoint                       a local directory -> ./skills/
  generate-skill ./my-bert-checkpoint --output my-skills/   ... into a folder of your choice
  generate-skill bert-base-uncased                          a hub id (offline: the HF cache)
  generate-skill bert-base-uncased --from-cache             the local HF cache only
  generate-skill --model-type llama --output /tmp/skills    from transformers' default config
  generate-skill --model-type bert --check                  is skillset/hf_bert.py current?
  generate-skill --all-committed --check                    is every committed skill current?

then serve the checkpoint with the written skill:
  hfskills serve ./my-bert-checkpoint --skills-dir skills
(`hfskills serve ./my-bert-checkpoint` alone also works: with no skill for its model_type, the
host generates one on the fly into its cache.)

hub ids: the local HF cache is read first; with HF_HUB_OFFLINE=1 it is all that is read, and
otherwise the hub gets one short probe (5 s), so an id that is neither cached nor reachable
fails at once with one line.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="generate-skill",
        description="Generate a readable hfskills skill module (hf_<model_type>.py) for a "
        "Hugging Face model: the architecture and its tasks are classified from transformers' "
        "own auto mappings and rendered from hfskills' Jinja2 templates.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "source",
        nargs="?",
        metavar="SOURCE",
        help="a hub id (e.g. bert-base-uncased) or a local checkpoint directory "
        "(config.json, or a single .gguf file)",
    )
    p.add_argument(
        "--model-type",
        metavar="TYPE",
        help="generate from a bare transformers model_type (e.g. bert, llama) instead "
        "of a checkpoint, using AutoConfig.for_model",
    )
    p.add_argument(
        "--output",
        "-o",
        metavar="DIR",
        type=Path,
        default=None,
        help="directory to write hf_<model_type>.py into (default: ./skills under the "
        "current folder for a SOURCE or --model-type, never the installed skillset; with "
        f"--all-committed or --check: the committed skillset, {SKILLSET})",
    )
    p.add_argument(
        "--from-cache",
        action="store_true",
        help="read a hub id from the local Hugging Face cache only (no network)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing file that differs from the generated one",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the file on disk differs from what would be "
        "generated (for CI)",
    )
    p.add_argument(
        "--all-committed",
        action="store_true",
        help="regenerate every skill in the output directory from its model_type, "
        "with a progress bar (with --check: verify them all)",
    )
    return p


def committed_model_types(directory: Path) -> list[str]:
    """The model_type of every hf_*.py in ``directory``, read with ast (never imported)."""
    found = []
    for path in sorted(directory.glob("hf_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "model_type" for t in node.targets)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                found.append(node.value.value)
                break
    return found


def regenerate_command(args: argparse.Namespace, output: Path) -> str:
    """The command line that writes this skill again into ``output`` (the header names it)."""
    what = f"--model-type {args.model_type}" if args.model_type else shlex.quote(args.source)
    return f"generate-skill {what} --output {shlex.quote(str(output.resolve()))} --force"


def default_output(args: argparse.Namespace) -> Path:
    """Without --output: the committed skillset for --all-committed and --check (CI), else
    ./skills; never the installed package for a write."""
    if args.all_committed or args.check:
        return SKILLSET
    output = USER_SKILLS
    here = output.resolve()
    if here == SKILLSET or SKILLSET in here.parents:
        raise HFSkillsError(
            f"{here} is inside the installed skillset ({SKILLSET}); run from another folder "
            "or give --output DIR"
        )
    return output


def _one(
    meta: metadata_mod.ModelMetadata,
    output: Path,
    *,
    force: bool,
    check: bool,
    regenerate: str | None = None,
) -> str:
    from .render import render, write

    skill = render(meta, regenerate=regenerate)  # the header's "Regenerate with" line
    target = output / skill.filename
    if check:
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current != skill.text:
            state = "missing" if current is None else "differs from what would be generated"
            raise HFSkillsError(f"{target} {state}; run generate-skill with --force to update it")
        return f"{target}: up to date"
    path, state = write(skill, output, force=force)
    return f"{path}: {state} ({meta.model_type}, from {meta.source_kind} {meta.source})"


def run(args: argparse.Namespace) -> int:
    output = args.output if args.output is not None else default_output(args)
    if args.all_committed:
        if args.source or args.model_type:
            raise HFSkillsError("--all-committed takes no SOURCE or --model-type")
        from tqdm import tqdm

        types = committed_model_types(output)
        if not types:
            raise HFSkillsError(f"no hf_*.py skills in {output}")
        for model_type in tqdm(types, desc="skills", unit="skill", file=sys.stderr):
            message = _one(
                metadata_mod.from_model_type(model_type), output, force=True, check=args.check
            )
            tqdm.write(message, file=sys.stderr)
        print(f"{len(types)} skills {'checked' if args.check else 'regenerated'} in {output}")
        return 0
    meta = metadata_mod.read(
        args.source, model_type=args.model_type, from_cache_only=args.from_cache
    )
    from .sweep import explain  # the coverage sweep's verdict on a type that failed it

    if (why := explain(meta.model_type)) is not None:
        print(f"generate-skill: warning: {why}", file=sys.stderr)
    # the header names the folder written to; the committed skillset keeps its own command
    regenerate = None if output.resolve() == SKILLSET else regenerate_command(args, output)
    print(_one(meta, output, force=args.force, check=args.check, regenerate=regenerate))
    if not args.check:
        model = shlex.quote(args.source) if args.source else f"<{meta.model_type} checkpoint>"
        print(f"next: hfskills serve {model} --skills-dir {shlex.quote(str(output))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.source and not args.model_type and not args.all_committed:
        parser().error("give a SOURCE, --model-type TYPE or --all-committed")
    try:
        return run(args)
    except HFSkillsError as exc:
        print(f"generate-skill: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("generate-skill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
