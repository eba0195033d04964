# Sourced by scripts/test and scripts/demo: create .venv if missing and install hfskills with the
# given extras. torch is pinned first (the local CPU build; a plain `torch` would pull CUDA).
# Re-installs only when pyproject.toml or the extras change (stamp file inside .venv).
ensure_venv() {
    local extras="$1"
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    local venv="$root/.venv"
    if [ ! -x "$venv/bin/python" ]; then
        echo "==> creating $venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --upgrade pip
    fi
    local stamp="$venv/.hfskills-$extras"
    local want
    want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "==> installing torch==2.13.0 (CPU) and hfskills[$extras] into $venv"
        # (this machine's pip config names absent local indexes: drop only those warnings)
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "torch==2.13.0" \
            2> >(grep -v "^WARNING: Location" >&2)
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[$extras]" \
            2> >(grep -v "^WARNING: Location" >&2)
        "$venv/bin/python" -c "import hfskills.skillset.runtime" # fail loudly if the install did not work
        echo "$want" > "$stamp"
    fi
    export PATH="$venv/bin:$PATH"
}
