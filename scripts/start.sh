#!/usr/bin/env bash
# Sets up giftflow and runs its main job with embedded defaults (SQLite in ./giftflow-data).
# Until the HTTP service lands, the main job is the worked example followed by `ledger verify`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv
.venv/bin/giftflow example "$@"
.venv/bin/giftflow ledger verify "$@"
