"""What the economy needs from payment and payout providers, as plain values and protocols.

Adapters (``giftflow.adapters.providers``) turn a provider's wire format into these values: a
verified :class:`PaymentEvent` for purchases, refunds and disputes, and :class:`PayoutState` for
payouts. The economy never sees a provider's SDK, and a provider's failure is a value with a
stable code (:class:`ProviderFailure`), never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol


class PaymentEventKind(StrEnum):
    """What a verified payment notification says happened to an order's payment."""

    PAID = "paid"
    """The order was paid: ``amount_minor`` in ``currency``."""
    REFUNDED = "refunded"
    """Money went back to the buyer: ``amount_minor`` is the CUMULATIVE amount refunded."""
    DISPUTE_OPENED = "dispute_opened"
    """A chargeback was opened for ``amount_minor``; the money is taken at once."""
    DISPUTE_WON = "dispute_won"
    """The platform won the dispute: what it took is restored."""
    DISPUTE_LOST = "dispute_lost"
    """The platform lost the dispute: the reversal stands."""


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """A provider notification whose authenticity the adapter has verified.

    ``event_id`` is the provider's id for this notification; the economy keys its processing by
    ``(provider, event_id)`` in a namespace that client idempotency keys cannot reach, so a
    replayed notification changes nothing. ``order_id`` is giftflow's order (carried in the
    payment's metadata), ``payment_ref`` the provider's id of the payment (Stripe's payment
    intent, Apple's original transaction id, Google's purchase token).
    """

    provider: str
    event_id: str
    kind: PaymentEventKind
    order_id: str
    payment_ref: str
    amount_minor: int
    currency: str
    fingerprint: str | None = None
    """The payment method's fingerprint, for linked-account risk rules."""
    store_proceeds_minor: int | None = None
    """The app store's reported proceeds, which override the computed ones."""


class PayoutStatus(StrEnum):
    """A payout's state at the provider (PayPal's item statuses, which Stripe's map onto)."""

    PENDING = "PENDING"
    """Accepted and not final yet."""
    SUCCESS = "SUCCESS"
    """Paid: the reservation is posted."""
    FAILED = "FAILED"
    """Final failure: the reservation is voided and the diamonds return to the creator."""
    DENIED = "DENIED"
    """Refused by the provider (final): voided like ``FAILED``."""
    RETURNED = "RETURNED"
    """Paid, then returned unclaimed: credited back by a new operation."""
    REVERSED = "REVERSED"
    """Paid, then reversed: credited back by a new operation."""

    @property
    def final(self) -> bool:
        """Whether the provider will not change this status on its own any more."""
        return self is not PayoutStatus.PENDING


@dataclass(frozen=True, slots=True)
class PayoutRequest:
    """One payout as submitted to a provider.

    ``idempotency_key`` is stable for the payout (PayPal's ``sender_batch_id``, Stripe's
    ``Idempotency-Key``): submitting it twice never pays twice.
    """

    payout_id: str
    idempotency_key: str
    receiver: str
    amount_minor: int
    currency: str
    note: str = ""
    provider_ref: str = ""
    """The provider's own id for the payout, once a submit has told it (empty before)."""


@dataclass(frozen=True, slots=True)
class PayoutState:
    """What the provider says of a payout, and its own reference for it."""

    status: PayoutStatus
    provider_ref: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ProviderFailure:
    """A provider call that did not give an answer.

    ``unavailable``: a timeout, a connection error or a server error; the payout may or may not
    have been received, so giftflow asks again later and never assumes either. ``rejected``: the
    provider refused the request itself (bad receiver, bad currency); nothing was paid.
    ``not_found``: the provider has no payout under this key, so it was never received.
    """

    code: Literal["unavailable", "rejected", "not_found"]
    detail: str
    ok: Literal[False] = False


class PayoutProvider(Protocol):
    """A payout provider (PayPal Payouts, Stripe Connect, the simulator)."""

    @property
    def name(self) -> str:
        """The method name creators choose (``paypal``, ``bank``, ``simulator``)."""
        ...

    def submit(self, request: PayoutRequest) -> PayoutState | ProviderFailure:
        """Send the payout; safe to call again with the same ``idempotency_key``."""
        ...

    def status(self, request: PayoutRequest) -> PayoutState | ProviderFailure:
        """Ask the provider for the payout's current status."""
        ...
