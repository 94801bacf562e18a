"""What the HTTP provider adapters share."""

from __future__ import annotations

import json
import time

import httpx

from giftflow.economy.providers import ProviderFailure


def parse_json(body: bytes) -> object:
    """The JSON value of ``body``, or ``None`` if it is empty or not JSON."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def read_bounded(response: httpx.Response, bytes_max: int, timeout_s: float,
                 deadline: float | None = None) -> bytes | ProviderFailure:
    """A streamed response's body, refused once it exceeds ``bytes_max`` or passes ``deadline``.

    ``deadline`` is a ``time.monotonic()`` instant: a provider never makes us read without end.
    """
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > bytes_max:
            return ProviderFailure("unavailable",
                                   f"no answer: the response exceeds {bytes_max} bytes")
        if deadline is not None and time.monotonic() > deadline:
            return ProviderFailure("unavailable", f"no answer: timed out after {timeout_s} s")
    return bytes(body)
