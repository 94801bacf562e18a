"""Apple adapter: App Store signed data verified by ``app-store-server-library`` with a test root.

The tests sign with :mod:`apple_signing`: Apple's chain shape built with ``cryptography`` (a
self-signed root, an intermediate carrying the WWDR extension OID 1.2.840.113635.100.6.2.1 and a
leaf carrying the receipt-signing extension OID 1.2.840.113635.100.6.11.1), and transactions and
notifications as ES256 JWS with the three certificates in the ``x5c`` header, signed with the
leaf's key through PyJWT (the library's own dependency). The adapter trusts only the test root,
and the library checks everything else.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import jwt
import pytest
from apple_signing import (
    BUNDLE_ID,
    ORDER_ID,
    PRODUCT_ID,
    Chain,
    make_chain,
    notification,
    now_ms,
    sign,
    transaction,
)
from cryptography.hazmat.primitives.asymmetric import ec

from giftflow.adapters.providers.apple import (
    AppleRejected,
    AppleStorePurchases,
    app_account_token,
    milliunits_to_minor,
)
from giftflow.economy.providers import PaymentEvent, PaymentEventKind


@pytest.fixture(scope="module")
def chain() -> Chain:
    """The chain Apple would sign with, shared by the module (key generation is not free)."""
    return make_chain()


@pytest.fixture
def apple(chain) -> AppleStorePurchases:
    """The adapter trusting only the test root, for the sandbox."""
    return AppleStorePurchases([chain.root_der], bundle_id=BUNDLE_ID, environment="Sandbox")


def rejected(result: object, code: str) -> bool:
    """Whether ``result`` is an AppleRejected with ``code``."""
    return isinstance(result, AppleRejected) and result.code == code


# Transactions.


def test_valid_signed_transaction_is_paid_with_exact_fields(chain, apple):
    """A verified consumable transaction for the order becomes PAID: 9990 milliunits → 999 cents,
    payment_ref the original transaction id, event id from the transaction id.
    """
    result = apple.parse_transaction(sign(chain, transaction()), order_id=ORDER_ID,
                                     product_id=PRODUCT_ID)
    assert result == PaymentEvent(
        provider="apple", event_id="transaction:2000000123456789", kind=PaymentEventKind.PAID,
        order_id=ORDER_ID, payment_ref="2000000123456789", amount_minor=999, currency="USD",
    )


def test_tampered_payload_is_a_bad_signature(chain, apple):
    """A payload changed after signing (price raised) fails the ES256 check: bad_signature."""
    header, _, signature = sign(chain, transaction()).split(".")
    forged = base64.urlsafe_b64encode(
        json.dumps(transaction(price=99990)).encode()).rstrip(b"=").decode()
    result = apple.parse_transaction(f"{header}.{forged}.{signature}", order_id=ORDER_ID)
    assert rejected(result, "bad_signature")


def test_signature_by_a_key_outside_the_chain_is_a_bad_signature(chain, apple):
    """A JWS carrying the genuine x5c chain but signed by another key is bad_signature."""
    other = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(transaction(), other, algorithm="ES256", headers={"x5c": chain.x5c})
    assert rejected(apple.parse_transaction(token, order_id=ORDER_ID), "bad_signature")


def test_wrong_root_is_a_bad_signature(chain):
    """A chain that does not end in a trusted root is bad_signature (the adapter trusts another)."""
    stranger = make_chain()
    adapter = AppleStorePurchases([stranger.root_der], bundle_id=BUNDLE_ID,
                                  environment="Sandbox")
    result = adapter.parse_transaction(sign(chain, transaction()), order_id=ORDER_ID)
    assert rejected(result, "bad_signature")


@pytest.mark.parametrize("missing", ["leaf", "intermediate"])
def test_chain_without_apple_oids_is_a_bad_signature(missing):
    """A chain to the trusted root whose leaf lacks 1.2.840.113635.100.6.11.1, or whose
    intermediate lacks 1.2.840.113635.100.6.2.1, is bad_signature.
    """
    odd = make_chain(leaf_oid=missing != "leaf", intermediate_oid=missing != "intermediate")
    adapter = AppleStorePurchases([odd.root_der], bundle_id=BUNDLE_ID, environment="Sandbox")
    assert rejected(adapter.parse_transaction(sign(odd, transaction()), order_id=ORDER_ID),
                    "bad_signature")


def test_leaf_expired_at_the_signing_date_is_a_bad_signature():
    """A leaf certificate that had expired when the transaction was signed is bad_signature."""
    expired = make_chain(leaf_not_after=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    adapter = AppleStorePurchases([expired.root_der], bundle_id=BUNDLE_ID,
                                  environment="Sandbox")
    assert rejected(adapter.parse_transaction(sign(expired, transaction()), order_id=ORDER_ID),
                    "bad_signature")


def test_short_chain_is_a_bad_signature(chain, apple):
    """An x5c header without the intermediate (two certificates) is bad_signature."""
    token = jwt.encode(transaction(), chain.leaf_key, algorithm="ES256",
                       headers={"x5c": [chain.x5c[0], chain.x5c[2]]})
    assert rejected(apple.parse_transaction(token, order_id=ORDER_ID), "bad_signature")


def test_not_a_jws_is_a_bad_signature(apple):
    """A string that is not a JWS at all does not verify: bad_signature."""
    assert rejected(apple.parse_transaction("not.a.jws", order_id=ORDER_ID), "bad_signature")


def test_wrong_bundle_id_is_wrong_app(chain, apple):
    """A genuine transaction of another app (bundle id) is wrong_app."""
    token = sign(chain, transaction(bundleId="com.example.other"))
    assert rejected(apple.parse_transaction(token, order_id=ORDER_ID), "wrong_app")


def test_production_transaction_on_a_sandbox_verifier_is_wrong_environment(chain, apple):
    """A production transaction checked by the sandbox verifier is wrong_environment."""
    token = sign(chain, transaction(environment="Production"))
    assert rejected(apple.parse_transaction(token, order_id=ORDER_ID), "wrong_environment")


def test_transaction_for_another_order_is_wrong_order(chain, apple):
    """A transaction whose appAccountToken belongs to another order is wrong_order, and one
    without an appAccountToken is wrong_order too.
    """
    other = sign(chain, transaction(appAccountToken=app_account_token("ord_other")))
    assert rejected(apple.parse_transaction(other, order_id=ORDER_ID), "wrong_order")
    none = sign(chain, transaction(appAccountToken=None))
    assert rejected(apple.parse_transaction(none, order_id=ORDER_ID), "wrong_order")
    assert rejected(apple.parse_transaction(sign(chain, transaction()), order_id=""),
                    "wrong_order")


def test_app_account_token_is_a_stable_uuid_per_order():
    """The token is a UUID derived from the order id: stable per order, different across orders."""
    token = app_account_token(ORDER_ID)
    assert token == app_account_token(ORDER_ID) != app_account_token("ord_other")
    assert len(token) == 36 and token == token.lower()


def test_other_product_is_wrong_product(chain, apple):
    """A transaction for another product than the order's pack is wrong_product."""
    token = sign(chain, transaction(productId="com.giftflow.coins.17500"))
    assert rejected(apple.parse_transaction(token, order_id=ORDER_ID, product_id=PRODUCT_ID),
                    "wrong_product")


@pytest.mark.parametrize("changes", [{"type": "Non-Consumable"},
                                     {"type": "Auto-Renewable Subscription"}, {"quantity": 2}])
def test_non_consumable_or_multiple_quantity_is_refused(chain, apple, changes):
    """Coin packs are single consumables: other types or a quantity of 2 are not_consumable."""
    token = sign(chain, transaction(**changes))
    assert rejected(apple.parse_transaction(token, order_id=ORDER_ID), "not_consumable")


def test_revoked_transaction_is_not_paid(chain, apple):
    """A transaction that carries a revocationDate was refunded already: revoked."""
    token = sign(chain, transaction(revocationDate=now_ms(), revocationReason=0))
    assert rejected(apple.parse_transaction(token, order_id=ORDER_ID), "revoked")


@pytest.mark.parametrize(
    ("price", "currency", "minor"),
    [(9990, "USD", 999), (160_000, "JPY", 160), (1250, "KWD", 1250), (990, "EUR", 99),
     (0, "USD", 0)],
)
def test_price_in_milliunits_becomes_exact_minor_units(chain, apple, price, currency, minor):
    """Apple's milliunit price converts exactly by the currency's exponent (2, 0 or 3)."""
    token = sign(chain, transaction(price=price, currency=currency))
    event = apple.parse_transaction(token, order_id=ORDER_ID)
    assert isinstance(event, PaymentEvent)
    assert (event.amount_minor, event.currency) == (minor, currency)


@pytest.mark.parametrize(
    "changes",
    [{"price": 9995}, {"price": 160_500, "currency": "JPY"}, {"price": 9990.0},
     {"price": 9990.5}, {"price": "9990"}, {"price": -10}, {"price": None},
     {"currency": "usd"}, {"currency": "US"}, {"currency": None},
     {"originalTransactionId": None}, {"transactionId": None}, {"quantity": "abc"},
     {"price": [1]}],
    ids=["inexact-usd", "inexact-jpy", "float", "fraction", "string", "negative", "no-price",
         "lower-currency", "short-currency", "no-currency", "no-original", "no-id",
         "text-quantity", "list-price"],
)
def test_unreadable_or_inexact_prices_are_malformed(chain, apple, changes):
    """A price that is not whole minor units, not a JSON integer, missing or negative, a bad
    currency code, or a missing transaction id is malformed (nothing is paid).
    """
    result = apple.parse_transaction(sign(chain, transaction(**changes)), order_id=ORDER_ID)
    assert rejected(result, "malformed"), result


@pytest.mark.parametrize(
    ("milliunits", "currency", "minor"),
    [(9990, "USD", 999), (9995, "USD", None), (160_000, "JPY", 160), (160_001, "JPY", None),
     (1250, "BHD", 1250), (1, "CLF", 10), (0, "EUR", 0)],
)
def test_milliunits_to_minor_is_exact_or_none(milliunits, currency, minor):
    """Conversion by ISO 4217 exponent with integer arithmetic; inexact amounts give None."""
    assert milliunits_to_minor(milliunits, currency) == minor


def test_oversized_signed_data_is_malformed(chain):
    """Signed data over signed_data_chars_max is refused before verification."""
    adapter = AppleStorePurchases([chain.root_der], bundle_id=BUNDLE_ID, environment="Sandbox",
                                  signed_data_chars_max=100)
    assert rejected(adapter.parse_transaction(sign(chain, transaction()), order_id=ORDER_ID),
                    "malformed")


@pytest.mark.parametrize("environment", ["Xcode", "LocalTesting"])
def test_unverified_environments_are_refused(chain, environment):
    """Xcode and LocalTesting data are not signed by Apple, so the adapter refuses them."""
    with pytest.raises(ValueError, match="not verified"):
        AppleStorePurchases([chain.root_der], bundle_id=BUNDLE_ID, environment=environment)


def test_production_needs_the_app_apple_id(chain):
    """A production verifier needs the app's Apple id (the library's rule)."""
    with pytest.raises(ValueError, match="appAppleId"):
        AppleStorePurchases([chain.root_der], bundle_id=BUNDLE_ID, environment="Production")


# Notifications.


def test_refund_notification_is_refunded_for_the_full_price(chain, apple):
    """A verified REFUND notification → REFUNDED for the whole price (cumulative), resolved by
    the original transaction id (order_id ""), with the notification's UUID as event id.
    """
    result = apple.parse_notification(sign(chain, notification(chain)))
    assert result == PaymentEvent(
        provider="apple", event_id="3b8b4d6e-2f1c-4c0e-9d7e-1a2b3c4d5e6f",
        kind=PaymentEventKind.REFUNDED, order_id="", payment_ref="2000000123456789",
        amount_minor=999, currency="USD",
    )


def test_prorated_refund_is_the_share_rounded_down(chain, apple):
    """REFUND_PRORATED at 33.333 % (33333 milliunits) of 999 is floor(999 × 33333 / 100000)."""
    payload = notification(chain, revocationType="REFUND_PRORATED",
                           revocationPercentage=33_333)
    event = apple.parse_notification(sign(chain, payload))
    assert isinstance(event, PaymentEvent) and event.amount_minor == 999 * 33_333 // 100_000 == 332


@pytest.mark.parametrize("kind", ["REFUND_DECLINED", "REFUND_REVERSED", "CONSUMPTION_REQUEST",
                                  "TEST"])
def test_other_notification_types_are_ignored(chain, apple, kind):
    """Verified notifications other than REFUND are None."""
    assert apple.parse_notification(sign(chain, notification(chain, kind))) is None


def test_notification_with_unreadable_fields_is_malformed(chain, apple):
    """A verified notification whose fields have the wrong JSON types is malformed, not raised."""
    payload = notification(chain)
    payload["data"]["appAppleId"] = "not a number"
    assert rejected(apple.parse_notification(sign(chain, payload)), "malformed")


def test_notification_for_another_app_is_wrong_app(chain, apple):
    """A notification whose data names another bundle id is wrong_app."""
    payload = notification(chain, bundle_id="com.example.other")
    assert rejected(apple.parse_notification(sign(chain, payload)), "wrong_app")


def test_notification_from_an_untrusted_chain_is_a_bad_signature(apple):
    """A notification signed by a chain to another root is bad_signature."""
    stranger = make_chain()
    assert rejected(apple.parse_notification(sign(stranger, notification(stranger))),
                    "bad_signature")


def test_notification_whose_inner_transaction_is_forged_is_a_bad_signature(chain, apple):
    """A genuine notification wrapping a transaction signed by an untrusted chain is rejected:
    the inner signedTransactionInfo is verified on its own.
    """
    stranger = make_chain()
    payload = notification(chain)
    payload["data"]["signedTransactionInfo"] = sign(
        stranger, transaction(revocationDate=now_ms()))
    assert rejected(apple.parse_notification(sign(chain, payload)), "bad_signature")


def test_tampered_notification_is_a_bad_signature(chain, apple):
    """A notification payload changed after signing is bad_signature."""
    header, _, signature = sign(chain, notification(chain)).split(".")
    forged = notification(chain)
    forged["notificationUUID"] = "00000000-0000-0000-0000-000000000000"
    body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    assert rejected(apple.parse_notification(f"{header}.{body}.{signature}"), "bad_signature")
