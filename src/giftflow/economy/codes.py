"""Stable failure codes of the economy (SPEC.md §2). Integrators match on these; never rename one.

The ledger's own codes (``validation_error``, ``not_found``, ``idempotency_*``, ``overloaded``) are
re-exported so that callers need one module.
"""

from typing import Final

from giftflow.ledger.codes import (
    IDEMPOTENCY_CONFLICT,
    IDEMPOTENCY_IN_PROGRESS,
    NOT_FOUND,
    OVERLOADED,
    VALIDATION_ERROR,
)

__all__ = ["IDEMPOTENCY_CONFLICT", "IDEMPOTENCY_IN_PROGRESS", "NOT_FOUND", "OVERLOADED",
           "VALIDATION_ERROR"]

ACCOUNT_FROZEN: Final = "account_frozen"
DEMO_MODE_REQUIRED: Final = "demo_mode_required"
PAYMENT_MISMATCH: Final = "payment_mismatch"
ORDER_ALREADY_PAID: Final = "order_already_paid"
PURCHASE_LIMIT_DAILY: Final = "purchase_limit_daily"
PURCHASE_LIMIT_MONTHLY: Final = "purchase_limit_monthly"
GIFT_LIMIT_DAILY: Final = "gift_limit_daily"
GIFT_LIMIT_MONTHLY: Final = "gift_limit_monthly"
TEAM_BUDGET_DAILY: Final = "team_budget_daily"
TEAM_BUDGET_MONTHLY: Final = "team_budget_monthly"
NOT_TEAM_MEMBER: Final = "not_team_member"
INSUFFICIENT_COINS: Final = "insufficient_coins"
UNDERAGE: Final = "underage"
SELF_GIFT: Final = "self_gift"
NOT_A_CREATOR: Final = "not_a_creator"
GIFT_DISABLED: Final = "gift_disabled"
GIFT_COUNT_EXCEEDED: Final = "gift_count_exceeded"
"""More gifts in one request than the sender's region allows (a stored business refusal: the
region's maximum is configuration, so a retry gets the same answer)."""
VIDEO_GIFTS_NOT_ALLOWED: Final = "video_gifts_not_allowed"
CREATOR_NOT_ELIGIBLE: Final = "creator_not_eligible"
PAYOUTS_NOT_ALLOWED: Final = "payouts_not_allowed"
PAYOUT_UNDERAGE: Final = "payout_underage"
KYC_REQUIRED: Final = "kyc_required"
RISK_HOLD: Final = "risk_hold"
PAYOUT_BELOW_MINIMUM: Final = "payout_below_minimum"
PAYOUT_DAILY_MAX: Final = "payout_daily_max"
INSUFFICIENT_DIAMONDS: Final = "insufficient_diamonds"
UNKNOWN_PAYOUT_METHOD: Final = "unknown_payout_method"
HANDLE_TAKEN: Final = "handle_taken"
SAME_ADMIN: Final = "second_admin_required"
ADJUSTMENT_NOT_PROPOSED: Final = "adjustment_not_proposed"
REPORT_TOO_LARGE: Final = "report_too_large"
WAITING_FOR_PURCHASE: Final = "waiting_for_purchase"
"""A refund or dispute arrived before its purchase; it runs when the purchase is credited."""
