#!/usr/bin/env bash
# Sets up giftflow and starts the service in demo mode with embedded defaults (SQLite in
# ./giftflow-data) and demo data, printing its addresses and a demo API key. Ctrl-C stops it.
# Extra arguments go to `giftflow serve` (for example --port 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv
exec .venv/bin/giftflow serve --mode demo "$@"
