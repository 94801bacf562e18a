"""Stripe adapters: webhook verification and mapping, and Connect payouts against a local server.

Webhook bodies are signed with the ``stripe`` package's own test helper
(``stripe.WebhookSignature.generate_signature_header``), and payouts go through the official
client to :class:`stripe_server.StripeServer`, which speaks Stripe's wire protocol.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from stripe_events import OTHER_SECRET, SECRET, event_body, sign
from stripe_server import StripeServer

from giftflow.adapters.providers.stripe_connect import StripeConnectPayouts
from giftflow.adapters.providers.stripe_payments import StripeWebhooks, WebhookRejected
from giftflow.economy.providers import (
    PaymentEvent,
    PaymentEventKind,
    PayoutRequest,
    PayoutState,
    PayoutStatus,
    ProviderFailure,
)


def payment_intent(**changes: Any) -> dict[str, Any]:
    """A succeeded payment intent as giftflow's checkout creates it."""
    intent: dict[str, Any] = {
        "id": "pi_123",
        "object": "payment_intent",
        "amount": 499,
        "amount_received": 499,
        "currency": "usd",
        "status": "succeeded",
        "latest_charge": "ch_123",
        "metadata": {"order_id": "ord_42"},
    }
    intent.update(changes)
    return intent


def charge(**changes: Any) -> dict[str, Any]:
    """A charge of the payment intent above."""
    value: dict[str, Any] = {
        "id": "ch_123",
        "object": "charge",
        "amount": 499,
        "amount_refunded": 0,
        "currency": "usd",
        "payment_intent": "pi_123",
        "refunded": False,
        "metadata": {"order_id": "ord_42"},
        "payment_method_details": {"type": "card", "card": {"fingerprint": "fp_abc"}},
    }
    value.update(changes)
    return value


def dispute(**changes: Any) -> dict[str, Any]:
    """A dispute of the charge above; Stripe gives disputes no metadata of the payment's."""
    value: dict[str, Any] = {
        "id": "dp_123",
        "object": "dispute",
        "amount": 499,
        "charge": "ch_123",
        "currency": "usd",
        "payment_intent": "pi_123",
        "metadata": {},
        "reason": "fraudulent",
        "status": "needs_response",
    }
    value.update(changes)
    return value


@pytest.fixture
def webhooks() -> StripeWebhooks:
    """The adapter under test, with the test secret and the default 300 s tolerance."""
    return StripeWebhooks(SECRET)


def parse_signed(webhooks: StripeWebhooks, body: bytes) -> PaymentEvent | WebhookRejected | None:
    """Parse ``body`` with a fresh, correct signature."""
    return webhooks.parse(body, sign(body))


# Webhooks: verification.


def test_signed_payment_intent_succeeded_is_paid_with_exact_fields(webhooks):
    """A validly signed payment_intent.succeeded becomes a PAID event with every field mapped."""
    body = event_body("payment_intent.succeeded", payment_intent(), event_id="evt_paid")
    assert parse_signed(webhooks, body) == PaymentEvent(
        provider="stripe",
        event_id="evt_paid",
        kind=PaymentEventKind.PAID,
        order_id="ord_42",
        payment_ref="pi_123",
        amount_minor=499,
        currency="USD",
        fingerprint=None,
    )


def test_paid_takes_the_fingerprint_of_an_expanded_latest_charge(webhooks):
    """When the latest charge is expanded in the payload, its card fingerprint is carried."""
    body = event_body("payment_intent.succeeded", payment_intent(latest_charge=charge()))
    event = parse_signed(webhooks, body)
    assert isinstance(event, PaymentEvent) and event.fingerprint == "fp_abc"


def test_paid_takes_the_fingerprint_from_legacy_embedded_charges(webhooks):
    """Older API versions embed charges.data; the latest charge's fingerprint is used."""
    other = charge(id="ch_old", payment_method_details={"card": {"fingerprint": "fp_old"}})
    intent = payment_intent(charges={"object": "list", "data": [other, charge()]})
    event = parse_signed(webhooks, event_body("payment_intent.succeeded", intent))
    assert isinstance(event, PaymentEvent) and event.fingerprint == "fp_abc"


def test_paid_without_order_metadata_has_an_empty_order_id(webhooks):
    """A payment intent without metadata.order_id maps with order_id "" (resolve by payment_ref)."""
    body = event_body("payment_intent.succeeded", payment_intent(metadata={}))
    event = parse_signed(webhooks, body)
    assert isinstance(event, PaymentEvent)
    assert event.order_id == "" and event.payment_ref == "pi_123"


def test_tampered_body_is_a_bad_signature(webhooks):
    """A body changed after signing (amount raised) is rejected as bad_signature."""
    body = event_body("payment_intent.succeeded", payment_intent())
    header = sign(body)
    tampered = body.replace(b'"amount_received": 499', b'"amount_received": 99999')
    assert tampered != body
    result = webhooks.parse(tampered, header)
    assert isinstance(result, WebhookRejected) and result.code == "bad_signature"


def test_wrong_secret_is_a_bad_signature(webhooks):
    """A body signed with another endpoint's secret is rejected as bad_signature."""
    body = event_body("payment_intent.succeeded", payment_intent())
    result = webhooks.parse(body, sign(body, OTHER_SECRET))
    assert isinstance(result, WebhookRejected) and result.code == "bad_signature"


@pytest.mark.parametrize("header", ["", "garbage", "t=123", "t=abc,v1=00"])
def test_missing_or_unreadable_header_is_a_bad_signature(webhooks, header):
    """An empty, unparsable or signature-less Stripe-Signature header is bad_signature."""
    body = event_body("payment_intent.succeeded", payment_intent())
    result = webhooks.parse(body, header)
    assert isinstance(result, WebhookRejected) and result.code == "bad_signature"


def test_stale_timestamp_is_rejected_as_stale(webhooks):
    """A correct signature older than the 300 s tolerance is rejected as stale_timestamp."""
    body = event_body("payment_intent.succeeded", payment_intent())
    result = webhooks.parse(body, sign(body, timestamp=int(time.time()) - 301))
    assert isinstance(result, WebhookRejected) and result.code == "stale_timestamp"


def test_recent_timestamp_within_tolerance_is_accepted(webhooks):
    """A signature 200 s old is inside the tolerance and verifies."""
    body = event_body("payment_intent.succeeded", payment_intent())
    event = webhooks.parse(body, sign(body, timestamp=int(time.time()) - 200))
    assert isinstance(event, PaymentEvent)


def test_stale_and_wrongly_signed_is_a_bad_signature(webhooks):
    """An old header whose signature does not match either is bad_signature, not stale."""
    body = event_body("payment_intent.succeeded", payment_intent())
    header = sign(body, OTHER_SECRET, timestamp=int(time.time()) - 3600)
    result = webhooks.parse(body, header)
    assert isinstance(result, WebhookRejected) and result.code == "bad_signature"


def test_configured_tolerance_is_used():
    """With tolerance_s=60, a 120 s old signature is stale."""
    body = event_body("payment_intent.succeeded", payment_intent())
    result = StripeWebhooks(SECRET, tolerance_s=60).parse(
        body, sign(body, timestamp=int(time.time()) - 120)
    )
    assert isinstance(result, WebhookRejected) and result.code == "stale_timestamp"


def test_zero_tolerance_is_refused_because_it_disables_the_check():
    """tolerance_s=0 would switch off stripe's timestamp check, so the constructor refuses it."""
    with pytest.raises(ValueError, match="tolerance"):
        StripeWebhooks(SECRET, tolerance_s=0)


# Webhooks: malformed bodies (signed correctly, so only the shape is wrong).


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'"text"', b"null", b'{"id": "evt_1", "type": "charge.refunded"}'],
    ids=["bad-json", "array", "string", "null", "no-data"],
)
def test_malformed_json_is_rejected(webhooks, body):
    """A validly signed body that is not a JSON event object is malformed."""
    result = parse_signed(webhooks, body)
    assert isinstance(result, WebhookRejected) and result.code == "malformed"


def test_undecodable_body_is_malformed(webhooks):
    """Bytes that are not UTF-8 are malformed (stripe decodes before it verifies)."""
    result = webhooks.parse(b"\xff\xfe{}", "t=1,v1=00")
    assert isinstance(result, WebhookRejected) and result.code == "malformed"


@pytest.mark.parametrize("amount", [499.0, 4.99, True, "499", None, -1])
def test_non_integer_amounts_are_malformed(webhooks, amount):
    """An amount that is a float, a boolean, a string, missing or negative is malformed."""
    body = event_body("payment_intent.succeeded", payment_intent(amount_received=amount))
    result = parse_signed(webhooks, body)
    assert isinstance(result, WebhookRejected) and result.code == "malformed"


def test_float_refund_amount_is_malformed(webhooks):
    """A charge.refunded whose amount_refunded is a float is malformed."""
    body = event_body("charge.refunded", charge(amount_refunded=100.5))
    result = parse_signed(webhooks, body)
    assert isinstance(result, WebhookRejected) and result.code == "malformed"


@pytest.mark.parametrize(
    "obj",
    [
        payment_intent(object="charge"),
        payment_intent(currency="us"),
        payment_intent(metadata={"order_id": 42}),
        payment_intent(metadata="ord_42"),
        payment_intent(id=""),
    ],
    ids=["wrong-object", "bad-currency", "numeric-order", "metadata-string", "empty-id"],
)
def test_wrong_shapes_are_malformed(webhooks, obj):
    """A known event type whose object has the wrong kind or field types is malformed."""
    result = parse_signed(webhooks, event_body("payment_intent.succeeded", obj))
    assert isinstance(result, WebhookRejected) and result.code == "malformed"


def test_oversized_payload_is_malformed_without_verification():
    """A body over payload_bytes_max is refused before anything else."""
    body = event_body("payment_intent.succeeded", payment_intent())
    result = StripeWebhooks(SECRET, payload_bytes_max=64).parse(body, sign(body))
    assert isinstance(result, WebhookRejected) and result.code == "malformed"


# Webhooks: refunds and disputes.


def test_refund_carries_the_cumulative_amount_refunded(webhooks):
    """Two partial refunds arrive as two charge.refunded events with the cumulative amounts."""
    first = event_body("charge.refunded", charge(amount_refunded=100), event_id="evt_r1")
    second = event_body(
        "charge.refunded", charge(amount_refunded=499, refunded=True), event_id="evt_r2"
    )
    one, two = parse_signed(webhooks, first), parse_signed(webhooks, second)
    assert one == PaymentEvent(
        provider="stripe", event_id="evt_r1", kind=PaymentEventKind.REFUNDED,
        order_id="ord_42", payment_ref="pi_123", amount_minor=100, currency="USD",
        fingerprint="fp_abc",
    )
    assert isinstance(two, PaymentEvent) and two.amount_minor == 499 and two.event_id == "evt_r2"


def test_refund_without_payment_intent_is_malformed(webhooks):
    """A refunded charge with no payment intent cannot be tied to a payment: malformed."""
    result = parse_signed(webhooks, event_body("charge.refunded", charge(payment_intent=None)))
    assert isinstance(result, WebhookRejected) and result.code == "malformed"


def test_dispute_created_is_opened_and_resolved_by_payment_ref(webhooks):
    """charge.dispute.created → DISPUTE_OPENED for the dispute amount, order_id "" when the
    dispute carries no order metadata, payment_ref = the dispute's payment intent.
    """
    body = event_body("charge.dispute.created", dispute(), event_id="evt_d1")
    assert parse_signed(webhooks, body) == PaymentEvent(
        provider="stripe", event_id="evt_d1", kind=PaymentEventKind.DISPUTE_OPENED,
        order_id="", payment_ref="pi_123", amount_minor=499, currency="USD",
    )


def test_dispute_with_order_metadata_carries_the_order(webhooks):
    """A dispute whose metadata has order_id carries it."""
    body = event_body("charge.dispute.created", dispute(metadata={"order_id": "ord_42"}))
    event = parse_signed(webhooks, body)
    assert isinstance(event, PaymentEvent) and event.order_id == "ord_42"


@pytest.mark.parametrize(
    ("status", "kind"),
    [("won", PaymentEventKind.DISPUTE_WON), ("lost", PaymentEventKind.DISPUTE_LOST)],
)
def test_dispute_closed_won_or_lost(webhooks, status, kind):
    """charge.dispute.closed with status won/lost → DISPUTE_WON/DISPUTE_LOST."""
    body = event_body("charge.dispute.closed", dispute(status=status), event_id="evt_dc")
    assert parse_signed(webhooks, body) == PaymentEvent(
        provider="stripe", event_id="evt_dc", kind=kind,
        order_id="", payment_ref="pi_123", amount_minor=499, currency="USD",
    )


def test_dispute_closed_with_other_status_is_ignored(webhooks):
    """A dispute closed as warning_closed (an inquiry) is ignored: None."""
    body = event_body("charge.dispute.closed", dispute(status="warning_closed"))
    assert parse_signed(webhooks, body) is None


@pytest.mark.parametrize(
    "event_type", ["customer.created", "payment_intent.created", "charge.succeeded"]
)
def test_irrelevant_event_types_are_ignored(webhooks, event_type):
    """A verified event of a type giftflow does not act on is None."""
    assert parse_signed(webhooks, event_body(event_type, {"id": "x", "object": "other"})) is None


# Connect payouts.

API_KEY = "sk_test_giftflow_local"


@pytest.fixture
def server() -> Iterator[StripeServer]:
    """A running local Stripe server, stopped after the test."""
    with StripeServer(api_key=API_KEY) as running:
        yield running


@pytest.fixture
def payouts(server) -> StripeConnectPayouts:
    """The adapter pointed at the local server, with a 2 s request timeout."""
    return StripeConnectPayouts(API_KEY, base_url=server.url, timeout_s=2.0)


def payout(**changes: Any) -> PayoutRequest:
    """A 25.00 EUR payout to a connected account."""
    values: dict[str, Any] = {
        "payout_id": "po_1",
        "idempotency_key": "payout-po_1",
        "receiver": "acct_creator_one",
        "amount_minor": 2500,
        "currency": "EUR",
        "note": "giftflow payout",
    }
    values.update(changes)
    return PayoutRequest(**values)


def test_submit_creates_one_transfer_with_the_wire_fields(server, payouts):
    """A submit is a POST /v1/transfers with the amount, lower-case currency, destination,
    transfer_group, metadata and Idempotency-Key; the answer is SUCCESS with the transfer id.
    """
    state = payouts.submit(payout())
    assert isinstance(state, PayoutState) and state.status is PayoutStatus.SUCCESS
    (transfer,) = server.transfers
    assert state.provider_ref == transfer["id"] and transfer["id"].startswith("tr_")
    assert (transfer["amount"], transfer["currency"], transfer["destination"]) == (
        2500, "eur", "acct_creator_one"
    )
    assert transfer["transfer_group"] == "po_1" and transfer["metadata"] == {"payout_id": "po_1"}
    (request,) = server.requests
    assert request.idempotency_key == "payout-po_1"
    assert request.params["metadata"] == {"payout_id": "po_1"}
    assert request.params["amount"] == "2500"


def test_submit_twice_with_the_same_key_pays_once(server, payouts):
    """Submitting again with the same idempotency key replays the first answer: one transfer."""
    first = payouts.submit(payout())
    second = payouts.submit(payout())
    assert isinstance(first, PayoutState) and first == second
    assert len(server.transfers) == 1 and len(server.requests) == 2


def test_same_key_with_other_parameters_is_unavailable_and_pays_nothing_more(server, payouts):
    """Reusing a key with a different amount is Stripe's idempotency_error: unavailable (something
    exists under the key), no second transfer, and status() tells what was paid.
    """
    first = payouts.submit(payout())
    conflict = payouts.submit(payout(amount_minor=9999))
    assert isinstance(conflict, ProviderFailure) and conflict.code == "unavailable"
    assert "IdempotencyError" in conflict.detail
    assert len(server.transfers) == 1
    assert isinstance(first, PayoutState) and payouts.status(payout()) == first


def test_server_error_is_unavailable_and_a_retry_pays_once(server, payouts):
    """A 500 in front of the API is unavailable with nothing paid; the retry pays exactly once."""
    server.fail_next(1)
    failed = payouts.submit(payout())
    assert isinstance(failed, ProviderFailure) and failed.code == "unavailable"
    assert server.transfers == []
    retried = payouts.submit(payout())
    assert isinstance(retried, PayoutState) and retried.status is PayoutStatus.SUCCESS
    assert len(server.transfers) == 1


def test_lost_response_500_is_replayed_but_status_finds_the_transfer(server, payouts):
    """When the transfer was made but a 500 was stored under the key, a resubmit replays the 500
    (still unavailable, no second transfer) and status() finds the transfer by transfer_group.
    """
    server.fail_next(1, after_commit=True)
    assert payouts.submit(payout()) == payouts.submit(payout())
    assert len(server.transfers) == 1
    state = payouts.status(payout())
    assert state == PayoutState(PayoutStatus.SUCCESS, server.transfers[0]["id"])


def test_timeout_then_status_finds_the_transfer_by_group(server):
    """A submit whose answer never arrives in time is unavailable; status() without a
    provider_ref finds the transfer by transfer_group, and a resubmit does not pay again.
    """
    payouts = StripeConnectPayouts(API_KEY, base_url=server.url, timeout_s=0.3)
    server.hang_next(1, seconds=3.0)
    timed_out = payouts.submit(payout())
    assert isinstance(timed_out, ProviderFailure) and timed_out.code == "unavailable"
    (transfer,) = server.transfers
    assert payouts.status(payout()) == PayoutState(PayoutStatus.SUCCESS, transfer["id"])
    again = payouts.submit(payout())
    assert isinstance(again, PayoutState) and again.provider_ref == transfer["id"]
    assert len(server.transfers) == 1


def test_status_by_provider_ref_retrieves_the_transfer(server, payouts):
    """status() with the provider_ref learnt at submit retrieves GET /v1/transfers/{id}."""
    state = payouts.submit(payout())
    assert isinstance(state, PayoutState)
    assert payouts.status(payout(provider_ref=state.provider_ref)) == state
    assert server.requests[-1].path == f"/v1/transfers/{state.provider_ref}"


def test_status_of_a_payout_never_received_is_not_found(payouts):
    """With no transfer in the payout's group, status() is not_found (never received)."""
    missing = payouts.status(payout(payout_id="po_never"))
    assert isinstance(missing, ProviderFailure) and missing.code == "not_found"


def test_status_of_an_unknown_transfer_id_is_not_found(payouts):
    """Retrieving a transfer id Stripe does not know is a 404: not_found."""
    missing = payouts.status(payout(provider_ref="tr_unknown"))
    assert isinstance(missing, ProviderFailure) and missing.code == "not_found"


def test_wrong_api_key_is_unavailable_and_pays_nothing(server):
    """A wrong API key gets Stripe's 401: unavailable (a configuration fault to retry once it is
    fixed, never a reason to void the payout), and no transfer exists.
    """
    payouts = StripeConnectPayouts("sk_test_wrong", base_url=server.url, timeout_s=2.0)
    failure = payouts.submit(payout())
    assert isinstance(failure, ProviderFailure) and failure.code == "unavailable"
    assert "AuthenticationError" in failure.detail
    assert server.transfers == []


def test_unknown_destination_is_rejected(server, payouts):
    """A receiver that is not a connected account is Stripe's invalid_request_error: rejected."""
    failure = payouts.submit(payout(receiver="acct_nobody"))
    assert isinstance(failure, ProviderFailure) and failure.code == "rejected"
    assert server.transfers == []


def test_non_positive_amount_is_rejected_without_a_request(server, payouts):
    """An amount of 0 is refused locally: rejected, and no request reaches Stripe."""
    failure = payouts.submit(payout(amount_minor=0))
    assert isinstance(failure, ProviderFailure) and failure.code == "rejected"
    assert server.requests == []


def test_unreachable_server_is_unavailable():
    """A connection refused is unavailable."""
    with StripeServer(api_key=API_KEY) as stopped:
        url = stopped.url
    failure = StripeConnectPayouts(API_KEY, base_url=url, timeout_s=1.0).submit(payout())
    assert isinstance(failure, ProviderFailure) and failure.code == "unavailable"


def test_reversal_makes_the_payout_reversed(server, payouts):
    """After the full transfer is reversed (POST /v1/transfers/{id}/reversals), status is
    REVERSED; a partial reversal before that keeps SUCCESS with a detail.
    """
    state = payouts.submit(payout())
    assert isinstance(state, PayoutState)
    platform = stripe.StripeClient(API_KEY, base_addresses={"api": server.url})
    platform.v1.transfers.reversals.create(state.provider_ref, {"amount": 500})
    partial = payouts.status(payout(provider_ref=state.provider_ref))
    assert isinstance(partial, PayoutState) and partial.status is PayoutStatus.SUCCESS
    assert partial.detail == "partially reversed: 500 of 2500"
    platform.v1.transfers.reversals.create(state.provider_ref)
    reversed_state = payouts.status(payout(provider_ref=state.provider_ref))
    assert isinstance(reversed_state, PayoutState)
    assert reversed_state.status is PayoutStatus.REVERSED
    assert server.transfer(state.provider_ref)["reversed"] is True
    assert payouts.status(payout()) == reversed_state  # by transfer_group as well


def test_provider_name_defaults_to_bank():
    """The payout method name is "bank" unless configured."""
    assert StripeConnectPayouts(API_KEY).name == "bank"
    assert StripeConnectPayouts(API_KEY, name="stripe").name == "stripe"
