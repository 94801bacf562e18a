"""The OpenAPI document as the server really answers: every failure is a problem response.

Litestar documents the handlers' successes from their types, and its own validation failures as
``application/json``. giftflow answers every failure as ``application/problem+json`` (RFC 9457)
with a stable ``code``, so the served document replaces the failure responses of every operation
with those problem responses.
"""

from __future__ import annotations

import copy
from typing import Any, Final

PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string", "description": "a stable machine code (SPEC.md §8)"},
        "detail": {"type": "string"},
        "rule": {"type": "string", "description": "the precise rule, for grouped codes"},
    },
    "additionalProperties": True,
}
"""The body of every failure."""

_FAILURES: Final = {
    "400": "validation_error: wrong types, values out of range, malformed JSON",
    "401": "unauthorized: no key, or an unknown or revoked key",
    "403": "forbidden: the key's role or owner does not allow it",
    "404": "not_found (or provider_unconfigured: a provider webhook not set up here)",
    "409": "idempotency_conflict, idempotency_in_progress, invalid_state",
    "413": "body_too_large",
    "422": "a business refusal, with its code (and rule)",
    "429": "rate_limited",
    "500": "internal_error",
    "503": "overloaded or not_ready",
}
"""The failures any operation may answer, and what they mean."""

_METHODS: Final = ("get", "put", "post", "delete", "patch")


def with_problems(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the problem responses on every operation (a copy)."""
    served = copy.deepcopy(document)
    components = served.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    reference = {"$ref": "#/components/schemas/Problem"}
    for path in served.get("paths", {}).values():
        for method in _METHODS:
            operation = path.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status, meaning in _FAILURES.items():
                responses[status] = {
                    "description": meaning,
                    "content": {"application/problem+json": {"schema": reference}},
                }
    return served
