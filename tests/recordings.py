"""The recorded TikTok LIVE events in the shared folder beside the repository, for tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

RECORDING = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tiktok-live" / \
    "events.jsonl"
"""``shared/data/tiktok-live/events.jsonl``: normalized events, one JSON object a line."""


def recorded_events() -> list[dict[str, Any]]:
    """Every recorded event, in recording order; a missing recording fails the test."""
    if not RECORDING.is_file():
        pytest.fail(f"the shared recording is missing: expected {RECORDING} "
                    "(the shared folder lies beside the repository)")
    with RECORDING.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]
