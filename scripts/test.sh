#!/usr/bin/env bash
# Sets up giftflow with its development tools and runs every check: ruff, mypy --strict on src/,
# and the whole pytest suite (SQLite and the real PostgreSQL at 127.0.0.1:5432, database test).
# Under CI=true a missing PostgreSQL fails the run. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv dev
.venv/bin/ruff check src tests
.venv/bin/mypy --strict src
# pytest exits 5 when it collected no test; that is a failure here like any other non-zero code.
.venv/bin/python -m pytest "$@"
