"""The built-in ``simulator`` payout provider, for demo mode: every payout succeeds at once.

It keeps what it was sent, by idempotency key, so a second submit of the same payout returns the
first answer and nothing is paid twice, as with a real provider.
"""

from __future__ import annotations

import threading

from giftflow.economy.providers import (
    PayoutRequest,
    PayoutState,
    PayoutStatus,
    ProviderFailure,
)


class SimulatorPayouts:
    """A payout provider that pays at once (``SUCCESS``).

    :meth:`set_status` changes a payout later, as a provider would (for demos of failures and
    returns).
    """

    def __init__(self, name: str = "simulator") -> None:
        self._name = name
        self._payouts: dict[str, tuple[PayoutRequest, PayoutState]] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The method name creators choose."""
        return self._name

    def submit(self, request: PayoutRequest) -> PayoutState | ProviderFailure:
        """Pay at once; the same idempotency key returns the first answer."""
        with self._lock:
            known = self._payouts.get(request.idempotency_key)
            if known is None:
                state = PayoutState(PayoutStatus.SUCCESS, f"sim-{request.idempotency_key}")
                known = (request, state)
                self._payouts[request.idempotency_key] = known
            return known[1]

    def status(self, request: PayoutRequest) -> PayoutState | ProviderFailure:
        """The payout's state, or ``not_found`` when it was never submitted."""
        with self._lock:
            known = self._payouts.get(request.idempotency_key)
        if known is None:
            return ProviderFailure("not_found", f"no payout {request.idempotency_key}")
        return known[1]

    def set_status(self, idempotency_key: str, status: PayoutStatus) -> None:
        """Change a payout's status, as the provider would later (RETURNED, REVERSED…)."""
        with self._lock:
            request, state = self._payouts[idempotency_key]
            self._payouts[idempotency_key] = (request, PayoutState(status, state.provider_ref))

    def paid_count(self) -> int:
        """How many distinct payouts were made."""
        with self._lock:
            return len(self._payouts)
