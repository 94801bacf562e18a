# Sourced by the other scripts: makes .venv with Python 3.11+ and installs giftflow into it.
# Usage: ensure_venv [extras]   e.g. ensure_venv dev
ensure_venv() {
    local python=${PYTHON:-python3}
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "giftflow needs Python 3.11 or newer as '$python' (set PYTHON=/path/to/python3.11)" >&2
        exit 2
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "setting up .venv with $("$python" --version)…" >&2
        "$python" -m venv .venv
    fi
    local target="."
    [ -n "${1:-}" ] && target=".[$1]"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target"
}
