"""Tiny random-weight checkpoints for the test suite: re-exported from the coverage sweep's
hand-tuned recipes (``hfskills.generator.sweep.recipes``), where they now live so that the
installed sweep (``scripts/coverage``) can build them too.

Run ``python tests/checkpoints.py`` to build and smoke-test every architecture.
"""

from __future__ import annotations

from hfskills.generator.sweep.recipes import (
    ARCHITECTURES,
    WORDS,
    ArchitectureSpec,
    build_checkpoint,
    tiny_audio,
    tiny_image,
)

__all__ = [
    "ARCHITECTURES",
    "WORDS",
    "ArchitectureSpec",
    "build_checkpoint",
    "tiny_audio",
    "tiny_image",
]

if __name__ == "__main__":
    from hfskills.generator.sweep.recipes import _main

    _main()
