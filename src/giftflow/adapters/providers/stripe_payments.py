"""Stripe webhooks: signed notifications verified and turned into :class:`PaymentEvent` values.

Verification is the ``stripe`` package's own (``stripe.Webhook.construct_event``): the
``Stripe-Signature`` header's HMAC-SHA256 over ``"{t}.{payload}"`` with the endpoint's secret,
and a timestamp no older than the tolerance. A notification that fails is a
:class:`WebhookRejected` value, never an exception; a verified notification giftflow does not act
on is ``None``.

Mapped event types (``data.object`` is the object named in brackets):

* ``payment_intent.succeeded`` (payment intent) → ``PAID`` for ``amount_received``; the
  fingerprint is the latest charge's card fingerprint when the payload carries that charge
  expanded (``latest_charge`` as an object, or the legacy ``charges.data`` list), else ``None``.
* ``charge.refunded`` (charge) → ``REFUNDED`` for the CUMULATIVE ``amount_refunded``.
* ``charge.dispute.created`` (dispute) → ``DISPUTE_OPENED`` for the dispute's ``amount``.
* ``charge.dispute.closed`` (dispute) → ``DISPUTE_WON`` / ``DISPUTE_LOST`` by ``status``; any
  other closing status (``warning_closed``…) → ``None``.

``payment_ref`` is always the payment intent's id (``pi_…``), so the four kinds of one payment
share it. ``order_id`` comes from ``metadata.order_id`` of the event's object; giftflow's checkout
sets it on the payment intent, and Stripe does not put it on disputes (nor, depending on how the
charge was made, on charges), so ``order_id == ""`` means "not carried: resolve the order by
``payment_ref``". Currencies are upper-cased (Stripe sends ``usd``). Amounts must be JSON
integers in minor units: a float, a boolean or a negative amount makes the event ``malformed``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, TypeAlias

import stripe

from giftflow.economy.providers import PaymentEvent, PaymentEventKind

PROVIDER = "stripe"
"""The ``provider`` of every event this adapter makes."""

PAYLOAD_BYTES_MAX_DEFAULT = 512 * 1024
"""Largest webhook body accepted; Stripe's event payloads are a few kilobytes."""

_DISPUTE_OUTCOMES = {"won": PaymentEventKind.DISPUTE_WON, "lost": PaymentEventKind.DISPUTE_LOST}

_Json: TypeAlias = dict[str, object]


@dataclass(frozen=True, slots=True)
class WebhookRejected:
    """A webhook that must not be acted on (answer it with HTTP 400).

    ``bad_signature``: no signature matches the payload with the endpoint's secret (or the header
    is missing or unreadable). ``stale_timestamp``: the signature matches but its timestamp is
    older than the tolerance, so it may be a replay. ``malformed``: authentic or not, the body is
    not a Stripe event giftflow can read (too large, not UTF-8 JSON, wrong shapes or non-integer
    amounts).
    """

    code: Literal["bad_signature", "stale_timestamp", "malformed"]
    detail: str
    ok: Literal[False] = False


class _MalformedError(Exception):
    """A verified event's shape is wrong; caught in :meth:`StripeWebhooks.parse`, never escapes."""


class StripeWebhooks:
    """Verifies Stripe webhook deliveries and maps them onto :class:`PaymentEvent`.

    ``secret`` is the endpoint's signing secret (``whsec_…``); ``tolerance_s`` the oldest
    signature timestamp accepted, in seconds (Stripe's default is 300, and 0 would switch the
    check off, so it must be positive); ``payload_bytes_max`` the largest body read.
    """

    def __init__(
        self,
        secret: str,
        tolerance_s: int = 300,
        payload_bytes_max: int = PAYLOAD_BYTES_MAX_DEFAULT,
    ) -> None:
        if not secret.strip():
            raise ValueError("the webhook signing secret must not be empty")
        if tolerance_s <= 0:
            raise ValueError("tolerance_s must be positive (0 would disable the timestamp check)")
        if payload_bytes_max <= 0:
            raise ValueError("payload_bytes_max must be positive")
        self._secret = secret
        self._tolerance_s = tolerance_s
        self._payload_bytes_max = payload_bytes_max

    def parse(
        self, payload: bytes, signature_header: str
    ) -> PaymentEvent | WebhookRejected | None:
        """Verify one delivery (raw body and ``Stripe-Signature`` header) and map it.

        Returns the event, a rejection, or ``None`` for an authentic event giftflow ignores.
        """
        if len(payload) > self._payload_bytes_max:
            return WebhookRejected(
                "malformed", f"payload of {len(payload)} bytes is over {self._payload_bytes_max}"
            )
        try:
            stripe.Webhook.construct_event(
                payload, signature_header, self._secret, tolerance=self._tolerance_s
            )
        except stripe.SignatureVerificationError as error:
            return self._signature_rejection(payload, signature_header, error)
        except ValueError as error:  # not UTF-8, not JSON, or a thin (v2) event notification
            return WebhookRejected("malformed", f"not a Stripe event: {error}")
        except (AttributeError, TypeError):  # JSON whose top level is not an object
            return WebhookRejected("malformed", "the payload is not a JSON object")
        try:
            return _to_event(_load(payload))
        except _MalformedError as error:
            return WebhookRejected("malformed", str(error))

    def _signature_rejection(
        self, payload: bytes, signature_header: str, error: stripe.SignatureVerificationError
    ) -> WebhookRejected:
        """Tell a stale timestamp from a bad signature.

        The ``stripe`` package raises one exception class for both; it checks the signature
        before the timestamp, so a header that verifies without the tolerance check was stale.
        """
        try:
            stripe.WebhookSignature.verify_header(
                payload, signature_header, self._secret, tolerance=None
            )
        except stripe.SignatureVerificationError:
            return WebhookRejected("bad_signature", error.user_message or "signature mismatch")
        return WebhookRejected(
            "stale_timestamp",
            f"signature timestamp older than {self._tolerance_s} s: {error.user_message}",
        )


def _load(payload: bytes) -> _Json:
    """The verified body as plain JSON values (ints stay ints, floats stay floats)."""
    document = json.loads(payload)
    if not isinstance(document, dict):
        raise _MalformedError("the payload is not a JSON object")
    return document


def _to_event(document: _Json) -> PaymentEvent | None:
    """Map a verified event document, or ``None`` for event types giftflow ignores."""
    event_id = _text(document, "id")
    event_type = _text(document, "type")
    data = _object(document, "data")
    if event_type == "payment_intent.succeeded":
        intent = _typed_object(data, "payment_intent")
        return _event(
            event_id, PaymentEventKind.PAID, intent, _text(intent, "id"), "amount_received",
            fingerprint=_latest_charge_fingerprint(intent),
        )
    if event_type == "charge.refunded":
        charge = _typed_object(data, "charge")
        return _event(
            event_id, PaymentEventKind.REFUNDED, charge, _text(charge, "payment_intent"),
            "amount_refunded", fingerprint=_card_fingerprint(charge),
        )
    if event_type == "charge.dispute.created":
        dispute = _typed_object(data, "dispute")
        return _event(
            event_id, PaymentEventKind.DISPUTE_OPENED, dispute,
            _text(dispute, "payment_intent"), "amount",
        )
    if event_type == "charge.dispute.closed":
        dispute = _typed_object(data, "dispute")
        kind = _DISPUTE_OUTCOMES.get(_text(dispute, "status"))
        if kind is None:
            return None
        return _event(event_id, kind, dispute, _text(dispute, "payment_intent"), "amount")
    return None


def _event(
    event_id: str,
    kind: PaymentEventKind,
    source: _Json,
    payment_ref: str,
    amount_field: str,
    *,
    fingerprint: str | None = None,
) -> PaymentEvent:
    """Build the event from the object that carries amount, currency and metadata."""
    return PaymentEvent(
        provider=PROVIDER,
        event_id=event_id,
        kind=kind,
        order_id=_order_id(source),
        payment_ref=payment_ref,
        amount_minor=_amount_minor(source, amount_field),
        currency=_currency(source),
        fingerprint=fingerprint,
    )


def _object(parent: _Json, key: str) -> _Json:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise _MalformedError(f"{key!r} is not an object")
    return value


def _typed_object(data: _Json, expected: str) -> _Json:
    """``data.object``, checked to be the kind of Stripe object the event type promises."""
    found = _object(data, "object")
    if found.get("object") != expected:
        raise _MalformedError(f"data.object is {found.get('object')!r}, expected {expected!r}")
    return found


def _text(parent: _Json, key: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise _MalformedError(f"{key!r} is not a non-empty string")
    return value


def _amount_minor(parent: _Json, key: str) -> int:
    value = parent.get(key)
    # bool is an int subclass; JSON true must not pass as an amount of 1.
    if type(value) is not int:
        raise _MalformedError(f"{key!r} is {value!r}, not an integer amount in minor units")
    if value < 0:
        raise _MalformedError(f"{key!r} is negative")
    return value


def _currency(parent: _Json) -> str:
    value = _text(parent, "currency")
    if len(value) != 3 or not value.isascii() or not value.isalpha():  # noqa: PLR2004 (ISO 4217)
        raise _MalformedError(f"currency {value!r} is not a three-letter code")
    return value.upper()


def _order_id(parent: _Json) -> str:
    """``metadata.order_id``, or ``""`` when the object does not carry it."""
    metadata = parent.get("metadata")
    if metadata is None:
        return ""
    if not isinstance(metadata, dict):
        raise _MalformedError("'metadata' is not an object")
    order_id = metadata.get("order_id", "")
    if not isinstance(order_id, str):
        raise _MalformedError("'metadata.order_id' is not a string")
    return order_id


def _card_fingerprint(charge: _Json) -> str | None:
    """``payment_method_details.card.fingerprint`` of a charge, when present."""
    details = charge.get("payment_method_details")
    card = details.get("card") if isinstance(details, dict) else None
    fingerprint = card.get("fingerprint") if isinstance(card, dict) else None
    return fingerprint if isinstance(fingerprint, str) and fingerprint else None


def _latest_charge_fingerprint(intent: _Json) -> str | None:
    """The card fingerprint of the intent's latest charge, if the payload expands that charge.

    Current API versions send ``latest_charge`` as an id unless expanded; older ones embed
    ``charges.data`` (newest first).
    """
    latest = intent.get("latest_charge")
    if isinstance(latest, dict):
        return _card_fingerprint(latest)
    charges = intent.get("charges")
    listed = charges.get("data") if isinstance(charges, dict) else None
    if not isinstance(listed, list):
        return None
    candidates = [charge for charge in listed if isinstance(charge, dict)]
    if isinstance(latest, str):
        candidates = [charge for charge in candidates if charge.get("id") == latest]
    return _card_fingerprint(candidates[0]) if candidates else None
