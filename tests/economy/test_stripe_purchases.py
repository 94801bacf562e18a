"""Stripe purchases end to end: signed webhook → :class:`StripeWebhooks` → the economy.

Every payload is signed with the ``stripe`` package's own helper
(``stripe.WebhookSignature.generate_signature_header``) and verified by the adapter through
``stripe.Webhook.construct_event``; the verified event goes to ``EconomyService.handle_payment``
over SQLite and PostgreSQL. Assertions read the wallet, the receipt row and the ledger accounts.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from stripe_events import OTHER_SECRET, SECRET, event_body, sign

from giftflow.adapters.providers.stripe_payments import StripeWebhooks, WebhookRejected
from giftflow.economy import accounts as acc
from giftflow.economy.providers import PaymentEvent, PaymentEventKind
from giftflow.ledger import Applied, Failure

PRICE_MINOR = 749
"""The US web-700 pack's price (default economy)."""
COINS = 700
CARD_FEE_MINOR = 30 + 22
"""US card fee: 30 fixed + ceil(749 × 2.9 %) = 30 + 22."""


def succeeded(order_id: str, intent_id: str, event_id: str, **changes: Any) -> bytes:
    """A ``payment_intent.succeeded`` body for giftflow's order, paid in full in USD."""
    intent: dict[str, Any] = {
        "id": intent_id,
        "object": "payment_intent",
        "amount": PRICE_MINOR,
        "amount_received": PRICE_MINOR,
        "currency": "usd",
        "status": "succeeded",
        "latest_charge": {
            "id": f"ch_{intent_id}",
            "object": "charge",
            "payment_method_details": {"type": "card", "card": {"fingerprint": "fp_buyer"}},
        },
        "metadata": {"order_id": order_id},
    }
    intent.update(changes)
    return event_body("payment_intent.succeeded", intent, event_id)


def refunded(intent_id: str, event_id: str, amount_refunded: int) -> bytes:
    """A ``charge.refunded`` body for the payment intent's charge (cumulative amount)."""
    charge = {
        "id": f"ch_{intent_id}",
        "object": "charge",
        "amount": PRICE_MINOR,
        "amount_refunded": amount_refunded,
        "currency": "usd",
        "payment_intent": intent_id,
        "refunded": amount_refunded == PRICE_MINOR,
        "metadata": {},
    }
    return event_body("charge.refunded", charge, event_id)


@pytest.fixture
def webhooks() -> StripeWebhooks:
    """The adapter with the endpoint's secret and the default 300 s tolerance."""
    return StripeWebhooks(SECRET)


def order(env, user: str = "alice", key: str = "checkout-1") -> str:
    """Register ``user`` and place a Stripe web order for web-700; its id."""
    if env.service.user(user) is None:
        env.viewer(user)
    placed = env.service.create_order(user, "web", "web-700", "stripe", key)
    assert isinstance(placed, Applied), placed
    assert placed.response["price_minor"] == PRICE_MINOR
    assert placed.response["currency"] == "USD"
    return str(placed.response["order_id"])


def deliver(env, webhooks: StripeWebhooks, body: bytes, header: str | None = None):
    """Verify one delivery; an event goes on to the economy. The parse or the economy's result."""
    parsed = webhooks.parse(body, sign(body) if header is None else header)
    if not isinstance(parsed, PaymentEvent):
        return parsed
    return env.service.handle_payment(parsed)



def coins(env, user: str = "alice") -> int:
    """The user's coin balance."""
    return env.service.wallet(user)["coins"]


def test_valid_signed_payment_credits_coins_receipt_and_ledger_once(env, webhooks):
    """A validly signed payment_intent.succeeded for the order's price credits the pack's coins,
    writes one receipt for the payment intent, and books cash, the card fee and provider clearing.
    """
    order_id = order(env)
    result = deliver(env, webhooks, succeeded(order_id, "pi_one", "evt_one"))
    assert isinstance(result, Applied) and not result.replayed
    assert result.response["coins"] == COINS
    assert coins(env) == COINS
    (receipt,) = env.store.read("receipts", {"order_id": order_id})
    assert (receipt["buyer_id"], receipt["coins"], receipt["price_minor"], receipt["currency"],
            receipt["provider"], receipt["payment_ref"], receipt["channel"]) == (
        "alice", COINS, PRICE_MINOR, "USD", "stripe", "pi_one", "web")
    assert env.balance(acc.provider_clearing("USD", "stripe")) == -PRICE_MINOR
    assert env.balance(acc.card_fees("USD", "stripe")) == CARD_FEE_MINOR
    assert env.balance(acc.cash("USD")) == PRICE_MINOR - CARD_FEE_MINOR
    (paid,) = env.store.read("orders", {"id": order_id})
    assert paid["status"] == "paid" and paid["payment_ref"] == "pi_one"
    env.verify_ok()


def test_replayed_event_credits_nothing_more(env, webhooks):
    """The same signed event delivered again is a replay: no more coins, one receipt."""
    order_id = order(env)
    body = succeeded(order_id, "pi_one", "evt_one")
    first = deliver(env, webhooks, body)
    again = deliver(env, webhooks, body)
    assert isinstance(first, Applied) and isinstance(again, Applied)
    assert again.replayed and again.response == first.response
    assert coins(env) == COINS
    assert len(env.store.read("receipts", {"order_id": order_id})) == 1
    assert env.balance(acc.provider_clearing("USD", "stripe")) == -PRICE_MINOR
    env.verify_ok()


def test_new_event_id_for_the_same_payment_intent_credits_nothing_more(env, webhooks):
    """A second delivery of the same payment under a new event id (same payment intent) is keyed
    by the payment intent, so it replays the first answer and credits nothing.
    """
    order_id = order(env)
    first = deliver(env, webhooks, succeeded(order_id, "pi_one", "evt_one"))
    second = deliver(env, webhooks, succeeded(order_id, "pi_one", "evt_two"))
    assert isinstance(first, Applied) and isinstance(second, Applied) and second.replayed
    assert coins(env) == COINS
    assert len(env.store.read("receipts", {"order_id": order_id})) == 1
    env.verify_ok()


def test_bad_signature_credits_nothing(env, webhooks):
    """A body changed after signing (amount raised) fails stripe's verification: bad_signature,
    and the order stays open with no coins.
    """
    order_id = order(env)
    body = succeeded(order_id, "pi_one", "evt_one")
    header = sign(body)
    tampered = body.replace(b'"amount_received": 749', b'"amount_received": 74900')
    assert tampered != body
    result = deliver(env, webhooks, tampered, header)
    assert isinstance(result, WebhookRejected) and result.code == "bad_signature"
    assert coins(env) == 0
    assert env.store.read("orders", {"id": order_id})[0]["status"] == "open"
    assert env.store.read("receipts", {"order_id": order_id}) == []


def test_stale_timestamp_credits_nothing(env, webhooks):
    """A correctly signed delivery older than the 300 s tolerance is stale_timestamp; no coins."""
    order_id = order(env)
    body = succeeded(order_id, "pi_one", "evt_one")
    result = deliver(env, webhooks, body, sign(body, timestamp=int(time.time()) - 301))
    assert isinstance(result, WebhookRejected) and result.code == "stale_timestamp"
    assert coins(env) == 0
    assert env.store.read("receipts", {"order_id": order_id}) == []


def test_wrong_secret_credits_nothing(env, webhooks):
    """A delivery signed with another endpoint's secret is bad_signature; no coins."""
    order_id = order(env)
    body = succeeded(order_id, "pi_one", "evt_one")
    result = deliver(env, webhooks, body, sign(body, OTHER_SECRET))
    assert isinstance(result, WebhookRejected) and result.code == "bad_signature"
    assert coins(env) == 0
    assert env.store.read("receipts", {"order_id": order_id}) == []


@pytest.mark.parametrize(
    "changes",
    [{"amount_received": PRICE_MINOR - 1}, {"amount_received": PRICE_MINOR + 100},
     {"currency": "eur"}],
    ids=["short", "over", "currency"],
)
def test_wrong_amount_or_currency_is_a_stored_payment_mismatch(env, webhooks, changes):
    """An authentic payment whose amount or currency differs from the order's snapshot is the
    stored failure payment_mismatch (a redelivery gets the same answer); nothing is credited.
    """
    order_id = order(env)
    body = succeeded(order_id, "pi_odd", "evt_odd", **changes)
    result = deliver(env, webhooks, body)
    assert isinstance(result, Failure) and result.code == "payment_mismatch" and result.stored
    again = deliver(env, webhooks, body)
    assert isinstance(again, Failure) and again.code == "payment_mismatch" and again.replayed
    assert coins(env) == 0
    assert env.store.read("receipts", {"order_id": order_id}) == []
    assert env.store.read("orders", {"id": order_id})[0]["status"] == "open"
    assert env.balance(acc.provider_clearing("USD", "stripe")) == 0
    env.verify_ok()


def test_refund_before_payment_waits_and_applies_when_the_payment_arrives(env, webhooks):
    """A charge.refunded that arrives before its payment_intent.succeeded waits
    (waiting_for_purchase) and is applied when the payment is credited: a refund of 300 of 749
    reverses floor(700 × 300 / 749) = 280 coins.
    """
    order_id = order(env)
    early = deliver(env, webhooks, refunded("pi_one", "evt_refund", 300))
    assert isinstance(early, Failure) and early.code == "waiting_for_purchase"
    assert coins(env) == 0
    (waiting,) = env.store.read("payment_events", {"provider": "stripe",
                                                   "event_id": "evt_refund"})
    assert waiting["status"] == "waiting"
    paid = deliver(env, webhooks, succeeded(order_id, "pi_one", "evt_paid"))
    assert isinstance(paid, Applied)
    assert coins(env) == COINS - COINS * 300 // PRICE_MINOR == 420
    (done,) = env.store.read("payment_events", {"provider": "stripe", "event_id": "evt_refund"})
    assert done["status"] == "done"
    assert env.store.read("orders", {"id": order_id})[0]["refunded_minor"] == 300
    assert env.balance(acc.provider_clearing("USD", "stripe")) == -PRICE_MINOR + 300
    env.verify_ok()


def test_refund_after_payment_is_pro_rata_and_replay_safe(env, webhooks):
    """Two cumulative refunds (300, then 749) reverse 280 and then the remaining 420 coins;
    redelivering the first refund changes nothing.
    """
    order_id = order(env)
    assert isinstance(deliver(env, webhooks, succeeded(order_id, "pi_one", "evt_paid")), Applied)
    first = deliver(env, webhooks, refunded("pi_one", "evt_r1", 300))
    assert isinstance(first, Applied) and coins(env) == 420
    replay = deliver(env, webhooks, refunded("pi_one", "evt_r1", 300))
    assert isinstance(replay, Applied) and replay.replayed and coins(env) == 420
    full = deliver(env, webhooks, refunded("pi_one", "evt_r2", PRICE_MINOR))
    assert isinstance(full, Applied) and coins(env) == 0
    assert env.balance(acc.provider_clearing("USD", "stripe")) == 0
    env.verify_ok()


def test_event_from_parse_matches_what_the_economy_records(env, webhooks):
    """The verified event's fields are what the economy stores for the notification."""
    order_id = order(env)
    body = succeeded(order_id, "pi_one", "evt_one")
    event = webhooks.parse(body, sign(body))
    assert event == PaymentEvent("stripe", "evt_one", PaymentEventKind.PAID, order_id, "pi_one",
                                 PRICE_MINOR, "USD", fingerprint="fp_buyer")
    env.service.handle_payment(event)
    (row,) = env.store.read("payment_events", {"provider": "stripe", "event_id": "evt_one"})
    assert (row["kind"], row["payment_ref"], row["amount_minor"], row["status"]) == (
        "paid", "pi_one", PRICE_MINOR, "done")
