"""``hfskills``: the command line of the runtime (the server's ``serve`` arrives with the host).

Subcommands: ``hardware`` (what was detected, and why), ``skills`` (the committed skills).
"""

from __future__ import annotations

import argparse
import sys


def _hardware(_: argparse.Namespace) -> int:
    from hfskills.skillset.runtime import hardware

    for info in hardware.detect():
        mark = "yes" if info.available else "no "
        print(f"{info.name:<9} {mark}  {info.reason}")
    return 0


def _skills(_: argparse.Namespace) -> int:
    import importlib
    from pathlib import Path

    import hfskills.skillset as skillset

    for path in sorted(Path(skillset.__file__).parent.glob("hf_*.py")):
        cls = getattr(importlib.import_module(f"hfskills.skillset.{path.stem}"), path.stem)
        print(f"{path.stem:<16} {cls.family:<22} {', '.join(cls.tasks)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hfskills", description="hfskills runtime commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "hardware", help="list the hardware backends detected here, with reasons"
    ).set_defaults(run=_hardware)
    sub.add_parser("skills", help="list the committed skills, their family and tasks").set_defaults(
        run=_skills
    )
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
