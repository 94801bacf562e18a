"""What the HTTP provider adapters share."""

from __future__ import annotations

import json
import time
from typing import Any

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


DETAIL_CHARS_MAX = 500
"""The longest failure detail an adapter returns."""


def clip(text: str) -> str:
    """``text`` cut to :data:`DETAIL_CHARS_MAX` characters."""
    return text if len(text) <= DETAIL_CHARS_MAX else text[: DETAIL_CHARS_MAX - 1] + "…"


def exchange(client: httpx.Client, method: str, url: str, *, bytes_max: int, timeout_s: float,
             deadline: float | None = None, **request: Any,  # noqa: ANN401 -- httpx's options
             ) -> tuple[int, bytes] | ProviderFailure:
    """One HTTP exchange: the status and the body, read within ``bytes_max`` and the deadline.

    A timeout, a connection error or a body too large is ``unavailable``: the provider may or
    may not have acted on the request, so the caller asks again later.
    """
    try:
        with client.stream(method, url, **request) as response:
            body = read_bounded(response, bytes_max, timeout_s, deadline)
            if isinstance(body, ProviderFailure):
                return body
            return response.status_code, body
    except httpx.TimeoutException:
        return ProviderFailure("unavailable", f"no answer: timed out after {timeout_s} s")
    except httpx.RequestError as error:
        return ProviderFailure("unavailable", clip(f"no answer: {type(error).__name__}"))
