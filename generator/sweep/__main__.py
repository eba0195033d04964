# Entry point of `python -m hfskills.generator.sweep` (scripts/coverage runs it).
import sys

from .run import main

sys.exit(main())
