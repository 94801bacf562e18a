"""The one `invariant()` helper: checks that stay on in production.

A bare ``assert`` vanishes under ``python -O``; money code must never run unchecked, so every
pre- and postcondition goes through :func:`invariant`, which always raises.
"""

from __future__ import annotations

from collections.abc import Callable

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class InvariantViolation(AssertionError):  # noqa: N818 -- named after what it is, not "Error"
    """A condition that must hold did not: this is a bug, never an expected failure."""


def invariant(condition: bool, message: str | Callable[[], str]) -> None:
    """Raise :class:`InvariantViolation` with ``message`` unless ``condition`` holds.

    On hot paths pass a callable, so that the message is only built when the check fails.
    """
    if not condition:
        raise InvariantViolation(message if isinstance(message, str) else message())


def fits_int64(value: int) -> bool:
    """Whether ``value`` fits in a signed 64-bit integer (the range of every stored amount)."""
    return INT64_MIN <= value <= INT64_MAX
