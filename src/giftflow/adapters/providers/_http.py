"""What the HTTP provider adapters share."""

from __future__ import annotations

import json


def parse_json(body: bytes) -> object:
    """The JSON value of ``body``, or ``None`` if it is empty or not JSON."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None
