"""Stable failure codes of the ledger. Integrators match on these strings; never rename one."""

from typing import Final

VALIDATION_ERROR: Final = "validation_error"
NOT_FOUND: Final = "not_found"
INSUFFICIENT_FUNDS: Final = "insufficient_funds"
IDEMPOTENCY_CONFLICT: Final = "idempotency_conflict"
IDEMPOTENCY_IN_PROGRESS: Final = "idempotency_in_progress"
PENDING_ALREADY_RESOLVED: Final = "pending_already_resolved"
PENDING_EXPIRED: Final = "pending_expired"
OVERLOADED: Final = "overloaded"
INTERNAL_ERROR: Final = "internal_error"
