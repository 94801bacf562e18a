"""App Store and Google Play purchases end to end: the store's proof → the adapter → the economy.

Apple: transactions and REFUND notifications are ES256 JWS over a test chain in Apple's shape
(:mod:`apple_signing`), verified by :class:`AppleStorePurchases` trusting only the test root.
Google: purchases live on the local Play API (:class:`google_server.GooglePlayServer`) and go
through :class:`GooglePlayPurchases` (validate, consume, voided purchases). Every verified event
goes to ``EconomyService.handle_payment`` over SQLite and PostgreSQL; assertions read the wallet,
the receipt row, the orders and the ledger accounts, and ``ledger verify`` must pass.

US in-app prices: the 700-coin pack is 999 cents; the store keeps 30 %: proceeds are
floor(999 × 0.7) = 699, so the commission booked to the store's fee account is 300.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from apple_signing import BUNDLE_ID, Chain, make_chain, notification, sign, transaction
from google_server import ACCESS_TOKEN_DEFAULT, GooglePlayServer

from giftflow.adapters.providers.apple import AppleRejected, AppleStorePurchases, app_account_token
from giftflow.adapters.providers.google import (
    GooglePlayPurchases,
    GoogleRejected,
    VoidedPurchases,
)
from giftflow.economy import accounts as acc
from giftflow.economy.providers import PaymentEvent, PaymentEventKind
from giftflow.ledger import Applied, Failure

PRICE_MINOR = 999
"""The US ios-700 and android-700 packs' price (default economy)."""
PRICE_MILLIUNITS = 9990
"""9.99 USD as Apple reports it (price × 1000)."""
COINS = 700
STORE_FEE_MINOR = 300
"""999 − floor(999 × 7000 / 10000) = 999 − 699."""
IOS_PRODUCT = "com.giftflow.coins.700"
TRANSACTION_ID = "2000000555000111"
PACKAGE = "com.giftflow.app"
ANDROID_PRODUCT = "coins_700"
PURCHASE_TOKEN = "opaque-token-econ.AO-J1Oy700"  # noqa: S105 (a purchase token, not a secret)


@pytest.fixture(scope="module")
def chain() -> Chain:
    """The chain "Apple" signs with, shared by the module (key generation is not free)."""
    return make_chain()


@pytest.fixture
def apple(chain) -> AppleStorePurchases:
    """The Apple adapter trusting only the test root, for the sandbox."""
    return AppleStorePurchases([chain.root_der], bundle_id=BUNDLE_ID, environment="Sandbox")


@pytest.fixture
def play() -> Iterator[GooglePlayServer]:
    """A running local Play API, stopped after the test."""
    with GooglePlayServer() as running:
        yield running


@pytest.fixture
def google(play) -> Iterator[GooglePlayPurchases]:
    """The Google adapter for the test package against the local Play API."""
    with GooglePlayPurchases(PACKAGE, ACCESS_TOKEN_DEFAULT, base_url=play.url,
                             timeout_s=2.0) as adapter:
        yield adapter


def order(env, channel: str, user: str = "alice", key: str = "store-order-1") -> str:
    """Register ``user`` and place an in-app order for the channel's 700-coin pack; its id."""
    if env.service.user(user) is None:
        env.viewer(user)
    provider = {"ios": "apple", "android": "google"}[channel]
    placed = env.service.create_order(user, channel, f"{channel}-700", provider, key)
    assert isinstance(placed, Applied), placed
    assert (placed.response["price_minor"], placed.response["currency"]) == (PRICE_MINOR, "USD")
    return str(placed.response["order_id"])



def coins(env, user: str = "alice") -> int:
    """The user's coin balance."""
    return env.service.wallet(user)["coins"]


def order_row(env, order_id: str) -> dict[str, Any]:
    """The order as stored."""
    (row,) = env.store.read("orders", {"id": order_id})
    return dict(row)


# -- Apple ---------------------------------------------------------------------------------------


def apple_claims(order_id: str, **changes: Any) -> dict[str, Any]:
    """The transaction claims of a 9.99 USD consumable purchase of the 700 pack for the order."""
    values: dict[str, Any] = {
        "appAccountToken": app_account_token(order_id), "productId": IOS_PRODUCT,
        "transactionId": TRANSACTION_ID, "originalTransactionId": TRANSACTION_ID,
        "price": PRICE_MILLIUNITS, "currency": "USD"}
    values.update(changes)
    return values


def apple_purchase(chain: Chain, apple: AppleStorePurchases, order_id: str,
                   **changes: Any) -> PaymentEvent:
    """The verified PAID event of a signed transaction for the order (asserted to verify)."""
    event = apple.parse_transaction(sign(chain, transaction(**apple_claims(order_id, **changes))),
                                    order_id=order_id, product_id=IOS_PRODUCT)
    assert isinstance(event, PaymentEvent), event
    return event


def apple_refund(chain: Chain, apple: AppleStorePurchases, order_id: str) -> PaymentEvent:
    """The verified REFUNDED event of a signed REFUND notification for the order's transaction."""
    payload = notification(chain, **apple_claims(order_id))
    event = apple.parse_notification(sign(chain, payload))
    assert isinstance(event, PaymentEvent), event
    return event


def test_apple_transaction_credits_coins_receipt_and_store_commission(env, chain, apple):
    """A signed App Store transaction for an iOS order (appAccountToken derived from the order,
    9990 milliunits = 999 cents) credits 700 coins, writes an ios/apple receipt for the original
    transaction id, books cash and Apple's 300-cent commission, and the ledger verifies.
    """
    order_id = order(env, "ios")
    event = apple_purchase(chain, apple, order_id)
    assert (event.order_id, event.payment_ref, event.amount_minor, event.currency) == (
        order_id, TRANSACTION_ID, PRICE_MINOR, "USD")
    result = env.service.handle_payment(event)
    assert isinstance(result, Applied) and not result.replayed
    assert result.response["coins"] == COINS
    assert coins(env) == COINS
    (receipt,) = env.store.read("receipts", {"order_id": order_id})
    assert (receipt["channel"], receipt["provider"], receipt["payment_ref"], receipt["coins"],
            receipt["price_minor"], receipt["currency"]) == (
        "ios", "apple", TRANSACTION_ID, COINS, PRICE_MINOR, "USD")
    assert env.balance(acc.store_fees("USD", "apple")) == STORE_FEE_MINOR
    assert env.balance(acc.provider_clearing("USD", "apple")) == -PRICE_MINOR
    assert env.balance(acc.cash("USD")) == PRICE_MINOR - STORE_FEE_MINOR
    row = order_row(env, order_id)
    assert (row["status"], row["payment_ref"]) == ("paid", TRANSACTION_ID)
    env.verify_ok()


def test_apple_replayed_transaction_credits_nothing_more(env, chain, apple):
    """The same signed transaction posted again verifies again and replays the first answer: no
    more coins, one receipt, the commission booked once.
    """
    order_id = order(env, "ios")
    signed = sign(chain, transaction(**apple_claims(order_id)))
    first = env.service.handle_payment(
        apple.parse_transaction(signed, order_id=order_id, product_id=IOS_PRODUCT))
    again = env.service.handle_payment(
        apple.parse_transaction(signed, order_id=order_id, product_id=IOS_PRODUCT))
    assert isinstance(first, Applied) and isinstance(again, Applied)
    assert again.replayed and again.response == first.response
    assert coins(env) == COINS
    assert len(env.store.read("receipts", {"order_id": order_id})) == 1
    assert env.balance(acc.store_fees("USD", "apple")) == STORE_FEE_MINOR
    env.verify_ok()


def test_apple_tampered_transaction_credits_nothing(env, chain, apple):
    """A transaction whose payload was changed after signing (a cheaper price) is bad_signature
    and never reaches the economy: no coins, the order stays open.
    """
    order_id = order(env, "ios")
    header, _, signature = sign(chain, transaction(**apple_claims(order_id))).split(".")
    forged = base64.urlsafe_b64encode(json.dumps(
        transaction(**apple_claims(order_id, price=990))).encode()).rstrip(b"=").decode()
    result = apple.parse_transaction(f"{header}.{forged}.{signature}", order_id=order_id,
                                     product_id=IOS_PRODUCT)
    assert isinstance(result, AppleRejected) and result.code == "bad_signature"
    assert coins(env) == 0
    assert order_row(env, order_id)["status"] == "open"
    assert env.store.read("receipts", {"order_id": order_id}) == []


def test_apple_transaction_for_another_order_credits_nothing(env, chain, apple):
    """A genuine transaction bought for one order, posted with another order's id, is wrong_order
    (its appAccountToken is the first order's): nothing is credited to the second order.
    """
    first = order(env, "ios", key="store-order-1")
    second = order(env, "ios", key="store-order-2")
    signed = sign(chain, transaction(**apple_claims(first)))
    result = apple.parse_transaction(signed, order_id=second, product_id=IOS_PRODUCT)
    assert isinstance(result, AppleRejected) and result.code == "wrong_order"
    assert coins(env) == 0


def test_apple_refund_notification_reverses_the_purchase(env, chain, apple):
    """A signed REFUND notification arrives without giftflow's order id (order_id ""); the economy
    finds the order by (apple, originalTransactionId), takes the 700 unspent coins back, returns
    the cash and the store commission pro rata (all of it), and the ledger verifies.
    """
    order_id = order(env, "ios")
    assert isinstance(env.service.handle_payment(apple_purchase(chain, apple, order_id)), Applied)
    refund = apple_refund(chain, apple, order_id)
    assert (refund.kind, refund.order_id, refund.payment_ref, refund.amount_minor) == (
        PaymentEventKind.REFUNDED, "", TRANSACTION_ID, PRICE_MINOR)
    result = env.service.handle_payment(refund)
    assert isinstance(result, Applied) and not result.replayed, result
    assert result.response["order_id"] == order_id
    assert result.response["coins"] == COINS
    assert coins(env) == 0
    assert order_row(env, order_id)["refunded_minor"] == PRICE_MINOR
    assert env.balance(acc.store_fees("USD", "apple")) == 0
    assert env.balance(acc.provider_clearing("USD", "apple")) == 0
    assert env.balance(acc.cash("USD")) == 0
    again = env.service.handle_payment(refund)
    assert isinstance(again, Applied) and again.replayed
    assert coins(env) == 0
    env.verify_ok()


def test_apple_refund_before_the_purchase_waits_and_applies_when_it_lands(env, chain, apple):
    """A REFUND notification that arrives before the app posted the transaction finds no paid
    order: it waits (waiting_for_purchase); when the purchase is credited the waiting refund runs
    and takes the coins back.
    """
    order_id = order(env, "ios")
    early = env.service.handle_payment(apple_refund(chain, apple, order_id))
    assert isinstance(early, Failure) and early.code == "waiting_for_purchase"
    (waiting,) = env.store.read("payment_events", {"provider": "apple", "kind": "refunded"})
    assert (waiting["status"], waiting["payment_ref"]) == ("waiting", TRANSACTION_ID)
    paid = env.service.handle_payment(apple_purchase(chain, apple, order_id))
    assert isinstance(paid, Applied) and paid.response["coins"] == COINS
    assert coins(env) == 0
    (done,) = env.store.read("payment_events", {"provider": "apple", "kind": "refunded"})
    assert done["status"] == "done"
    assert order_row(env, order_id)["refunded_minor"] == PRICE_MINOR
    assert len(env.store.read("reversals", {"order_id": order_id})) == 1
    assert env.balance(acc.store_fees("USD", "apple")) == 0
    env.verify_ok()


# -- Google --------------------------------------------------------------------------------------


def google_confirm(google: GooglePlayPurchases, order_id: str, token: str = PURCHASE_TOKEN):
    """Confirm ``token`` for the order at its 9.99 USD snapshot (what the API handler does)."""
    return google.confirm(token, product_id=ANDROID_PRODUCT, order_id=order_id,
                          price_minor=PRICE_MINOR, currency="USD")


def google_buy(play: GooglePlayServer, order_id: str, **fields: Any) -> None:
    """Store the order's Play purchase (obfuscatedExternalAccountId = the order id)."""
    play.add_purchase(PURCHASE_TOKEN, package=PACKAGE, product_id=ANDROID_PRODUCT,
                      account_id=order_id, **fields)


def price_of(env):
    """The voided-purchases lookup: a Google token's paid order snapshot, or None."""
    def lookup(token: str) -> tuple[int, str] | None:
        rows = env.store.read("orders", {"provider": "google", "payment_ref": token})
        if not rows or rows[0]["status"] != "paid":
            return None
        return int(rows[0]["price_minor"]), str(rows[0]["currency"])
    return lookup


def test_google_purchase_credits_coins_books_fees_and_is_consumed_once(env, play, google):
    """A Play purchase for an Android order is validated, consumed at Google and credited: 700
    coins, an android/google receipt for the token, Google's 300-cent commission. A second
    confirm (the app retrying) replays in the economy and consumes nothing more.
    """
    order_id = order(env, "android")
    google_buy(play, order_id)
    event = google_confirm(google, order_id)
    assert isinstance(event, PaymentEvent), event
    result = env.service.handle_payment(event)
    assert isinstance(result, Applied) and not result.replayed
    assert coins(env) == COINS
    (receipt,) = env.store.read("receipts", {"order_id": order_id})
    assert (receipt["channel"], receipt["provider"], receipt["payment_ref"]) == (
        "android", "google", PURCHASE_TOKEN)
    assert env.balance(acc.store_fees("USD", "google")) == STORE_FEE_MINOR
    assert env.balance(acc.provider_clearing("USD", "google")) == -PRICE_MINOR
    assert play.consumptions == [PURCHASE_TOKEN]
    assert play.purchase(PURCHASE_TOKEN).consumption_state == 1
    retry = google_confirm(google, order_id)
    assert retry == event
    again = env.service.handle_payment(retry)
    assert isinstance(again, Applied) and again.replayed
    assert coins(env) == COINS
    assert play.consumptions == [PURCHASE_TOKEN]
    env.verify_ok()


def test_google_voided_purchase_reverses_the_coins(env, play, google):
    """A credited purchase that Google then voids (a refund) comes back from voided_purchases as
    REFUNDED for the order's price, found by the token; the economy takes the 700 coins back and
    returns the cash and the commission.
    """
    order_id = order(env, "android")
    google_buy(play, order_id)
    assert isinstance(env.service.handle_payment(google_confirm(google, order_id)), Applied)
    play.void(PURCHASE_TOKEN, 1_767_300_000_000)
    page = google.voided_purchases(1_767_200_000_000, price_of(env))
    assert isinstance(page, VoidedPurchases) and page.unknown_tokens == ()
    (refund,) = page.events
    assert (refund.kind, refund.order_id, refund.payment_ref, refund.amount_minor) == (
        PaymentEventKind.REFUNDED, "", PURCHASE_TOKEN, PRICE_MINOR)
    result = env.service.handle_payment(refund)
    assert isinstance(result, Applied) and result.response["order_id"] == order_id, result
    assert coins(env) == 0
    assert env.balance(acc.store_fees("USD", "google")) == 0
    assert env.balance(acc.provider_clearing("USD", "google")) == 0
    env.verify_ok()


def test_google_pending_purchase_credits_nothing_until_it_completes(env, play, google):
    """A pending Play purchase (purchaseState 2) is rejected as pending: nothing consumed, no coins,
    the order stays open. Once Google completes it, the confirm credits it.
    """
    order_id = order(env, "android")
    google_buy(play, order_id, purchase_state=2)
    pending = google_confirm(google, order_id)
    assert isinstance(pending, GoogleRejected) and pending.code == "pending"
    assert coins(env) == 0
    assert order_row(env, order_id)["status"] == "open"
    assert play.consumptions == []
    play.set_state(PURCHASE_TOKEN, 0)
    event = google_confirm(google, order_id)
    assert isinstance(event, PaymentEvent)
    assert isinstance(env.service.handle_payment(event), Applied)
    assert coins(env) == COINS
    assert play.consumptions == [PURCHASE_TOKEN]
    env.verify_ok()
