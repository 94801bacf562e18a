"""Failures as RFC 9457 problem responses with the stable codes of SPEC.md §8.

The domains speak precise codes (``gift_limit_daily``, ``payout_below_minimum``…). The HTTP
contract groups some of them: limits are ``limit_exceeded``, ages ``age_restricted``, payout rules
``payout_rule_failed``; the precise code travels in ``rule``, so a client can say which limit or
which rule. Every other code is sent as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from giftflow.economy import codes

PROBLEM_TYPE_BASE: Final = "https://giftflow.dev/problems/"
"""Each code's ``type`` URI: this base and the code."""

_GROUPS: Final = {
    codes.PURCHASE_LIMIT_DAILY: "limit_exceeded",
    codes.PURCHASE_LIMIT_MONTHLY: "limit_exceeded",
    codes.GIFT_LIMIT_DAILY: "limit_exceeded",
    codes.GIFT_LIMIT_MONTHLY: "limit_exceeded",
    codes.TEAM_BUDGET_DAILY: "limit_exceeded",
    codes.TEAM_BUDGET_MONTHLY: "limit_exceeded",
    codes.UNDERAGE: "age_restricted",
    codes.PAYOUT_BELOW_MINIMUM: "payout_rule_failed",
    codes.PAYOUT_DAILY_MAX: "payout_rule_failed",
    codes.PAYOUT_UNDERAGE: "payout_rule_failed",
    codes.KYC_REQUIRED: "payout_rule_failed",
    codes.PAYOUTS_NOT_ALLOWED: "payout_rule_failed",
    codes.RISK_HOLD: "payout_rule_failed",
    codes.INSUFFICIENT_DIAMONDS: "payout_rule_failed",
}
"""Domain codes that the HTTP contract groups, by group."""

_STATUS: Final = {
    codes.VALIDATION_ERROR: 400,
    "unauthorized": 401,
    "forbidden": 403,
    codes.NOT_FOUND: 404,
    "method_not_allowed": 405,
    codes.IDEMPOTENCY_CONFLICT: 409,
    codes.IDEMPOTENCY_IN_PROGRESS: 409,
    "invalid_state": 409,
    codes.HANDLE_TAKEN: 409,
    codes.ORDER_ALREADY_PAID: 409,
    "body_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    codes.OVERLOADED: 503,
    codes.DEMO_MODE_REQUIRED: 403,
    codes.UNKNOWN_PAYOUT_METHOD: 400,
    "internal_error": 500,
    "bad_signature": 400,
    "stale_timestamp": 400,
    "malformed": 400,
    "provider_unconfigured": 404,
    "not_ready": 503,
}
"""HTTP status by code; every other code is a business refusal, 422."""

TITLES: Final = {
    400: "Bad request", 401: "Unauthenticated", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 413: "Body too large",
    415: "Unsupported media type", 422: "Refused", 429: "Too many requests",
    500: "Internal error", 503: "Overloaded",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem response: its status and its ``application/problem+json`` body."""

    status: int
    body: dict[str, Any]


def problem(code: str, detail: str, *, group: str | None = None,
            **extra: Any) -> Problem:  # noqa: ANN401 -- JSON members
    """The problem response for a failure ``code`` (a domain's or the HTTP layer's own).

    ``group`` puts the code under a contract code of the caller's choosing (a payout's
    two-factor refusal is a ``payout_rule_failed`` whose rule is ``two_factor_invalid``).
    """
    group = group or _GROUPS.get(code)
    public = group or code
    status = _STATUS.get(public, 422)
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + public, "title": TITLES[status],
                            "status": status, "code": public, "detail": detail}
    if group is not None:
        body["rule"] = code
    body.update(extra)
    return Problem(status, body)
