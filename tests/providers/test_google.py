"""Google Play adapter against :class:`google_server.GooglePlayServer` (the API's wire protocol).

The adapter validates a purchase token (state, package, product, order), consumes it once (coin
packs are consumable, and consuming also acknowledges), and maps voided purchases to refunds;
failures are values.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google_server import ACCESS_TOKEN_DEFAULT, GooglePlayServer

from giftflow.adapters.providers.google import (
    GooglePlayPurchases,
    GoogleRejected,
    ValidatedPurchase,
    VoidedPurchases,
)
from giftflow.economy.providers import PaymentEvent, PaymentEventKind, ProviderFailure

PACKAGE = "com.giftflow.app"
PRODUCT = "coins_700"
ORDER = "ord_0123456789abcdef01234567"
TOKEN = "opaque-token-abc.AO-J1Oy123"  # noqa: S105 (a purchase token, not a secret)
PRICE_MINOR = 999


@pytest.fixture
def server() -> Iterator[GooglePlayServer]:
    """A running local Play API, stopped after the test."""
    with GooglePlayServer() as running:
        yield running


@pytest.fixture
def google(server) -> Iterator[GooglePlayPurchases]:
    """The adapter for the test package against the local server, 2 s timeout."""
    with GooglePlayPurchases(PACKAGE, ACCESS_TOKEN_DEFAULT, base_url=server.url,
                             timeout_s=2.0) as adapter:
        yield adapter


def buy(server: GooglePlayServer, token: str = TOKEN, **fields) -> None:
    """Store a purchased, unacknowledged, unconsumed purchase of the test product for the test
    order.
    """
    values = {"package": PACKAGE, "product_id": PRODUCT, "account_id": ORDER}
    values.update(fields)
    server.add_purchase(token, **values)


def confirm(google: GooglePlayPurchases, token: str = TOKEN, **changes):
    """Confirm ``token`` for the test order at its 9.99 USD snapshot."""
    values = {"product_id": PRODUCT, "order_id": ORDER, "price_minor": PRICE_MINOR,
              "currency": "USD"}
    values.update(changes)
    return google.confirm(token, **values)


def rejected(result: object, code: str) -> bool:
    """Whether ``result`` is a GoogleRejected with ``code``."""
    return isinstance(result, GoogleRejected) and result.code == code


def test_valid_purchase_is_paid_and_consumed(server, google):
    """A purchased token for the package, product and order → PAID at the order's snapshot price,
    payment_ref the token, event id from Google's order id; then it is consumed over the wire
    (POST …:consume, which acknowledges it too), with no separate acknowledgement call.
    """
    buy(server, order_id="GPA.1234-5678-9012-34567")
    result = confirm(google)
    assert result == PaymentEvent(
        provider="google", event_id="order:GPA.1234-5678-9012-34567",
        kind=PaymentEventKind.PAID, order_id=ORDER, payment_ref=TOKEN,
        amount_minor=PRICE_MINOR, currency="USD",
    )
    assert server.consumptions == [TOKEN]
    assert server.acknowledgements == []
    purchase = server.purchase(TOKEN)
    assert (purchase.consumption_state, purchase.acknowledgement_state) == (1, 1)
    get, consume = server.requests
    assert get.method == "GET" and get.path == (
        f"/androidpublisher/v3/applications/{PACKAGE}/purchases/products/{PRODUCT}"
        f"/tokens/{TOKEN}")
    assert consume.method == "POST" and consume.path == get.path + ":consume"
    assert get.authorization == consume.authorization == f"Bearer {ACCESS_TOKEN_DEFAULT}"


def test_confirming_twice_consumes_exactly_once(server, google):
    """A second confirm of the same token validates again (same event) and does not consume
    again: the purchase already says consumptionState 1.
    """
    buy(server)
    first, second = confirm(google), confirm(google)
    assert isinstance(first, PaymentEvent) and first == second
    assert server.consumptions == [TOKEN]
    assert [r.method for r in server.requests] == ["GET", "POST", "GET"]


def test_validate_alone_neither_consumes_nor_acknowledges(server, google):
    """validate() returns the event with Google's acknowledgement and consumption flags and sends
    nothing but the GET.
    """
    buy(server)
    validated = google.validate(TOKEN, product_id=PRODUCT, order_id=ORDER,
                                price_minor=PRICE_MINOR, currency="USD")
    assert isinstance(validated, ValidatedPurchase)
    assert (validated.acknowledged, validated.consumed) == (False, False)
    assert validated.event.payment_ref == TOKEN
    assert server.consumptions == server.acknowledgements == []
    assert [r.method for r in server.requests] == ["GET"]


def test_consuming_twice_is_refused_like_google(server, google):
    """consume() of a fresh purchase succeeds; a second consume of the same token gets Google's
    400 productNotOwnedByUser, which is a rejected ProviderFailure (not retried as unavailable).
    """
    buy(server)
    assert google.consume(TOKEN, product_id=PRODUCT) is None
    again = google.consume(TOKEN, product_id=PRODUCT)
    assert isinstance(again, ProviderFailure) and again.code == "rejected"
    assert "productNotOwnedByUser" in again.detail
    assert server.consumptions == [TOKEN]


def test_pending_purchase_cannot_be_consumed(server, google):
    """The local server, like Google, refuses to consume a pending purchase (400)."""
    buy(server, purchase_state=2)
    failure = google.consume(TOKEN, product_id=PRODUCT)
    assert isinstance(failure, ProviderFailure) and failure.code == "rejected"
    assert server.purchase(TOKEN).consumption_state == 0


def test_purchase_consumed_before_is_paid_without_consuming_again(server, google):
    """A purchase already consumed (a confirm whose crediting was lost) still validates: confirm
    returns the same PAID event and sends no second consumption.
    """
    buy(server, consumption_state=1, acknowledgement_state=1)
    assert isinstance(confirm(google), PaymentEvent)
    assert server.consumptions == []
    assert [r.method for r in server.requests] == ["GET"]


def test_acknowledged_but_unconsumed_purchase_is_consumed(server, google):
    """acknowledge() alone acknowledges without consuming; a confirm afterwards still consumes
    (acknowledgement does not let the buyer buy the pack again, consumption does).
    """
    buy(server)
    assert google.acknowledge(TOKEN, product_id=PRODUCT) is None
    assert server.acknowledgements == [TOKEN]
    assert server.purchase(TOKEN).consumption_state == 0
    assert isinstance(confirm(google), PaymentEvent)
    assert server.consumptions == [TOKEN]


@pytest.mark.parametrize(("state", "code"), [(2, "pending"), (1, "canceled")])
def test_pending_or_canceled_purchase_is_rejected_and_not_consumed(server, google, state,
                                                                   code):
    """A purchaseState of 2 (pending) or 1 (canceled) is rejected and nothing is consumed."""
    buy(server, purchase_state=state)
    assert rejected(confirm(google), code)
    assert server.consumptions == server.acknowledgements == []


def test_pending_purchase_is_accepted_once_it_completes(server, google):
    """A pending purchase is rejected as pending; after it completes, confirm pays it."""
    buy(server, purchase_state=2)
    assert rejected(confirm(google), "pending")
    server.set_state(TOKEN, 0)
    assert isinstance(confirm(google), PaymentEvent)
    assert server.consumptions == [TOKEN]


def test_token_of_another_package_is_wrong_package(server, google):
    """A token bought in another app gets Google's purchaseTokenDoesNotMatchPackageName:
    wrong_package.
    """
    buy(server, package="com.example.other")
    result = confirm(google)
    assert rejected(result, "wrong_package")
    assert "purchaseTokenDoesNotMatchPackageName" in result.detail
    assert server.consumptions == []


def test_token_of_another_product_is_wrong_product(server, google):
    """A token for another product than the order's pack is wrong_product (Google's 400)."""
    buy(server, product_id="coins_17500")
    assert rejected(confirm(google), "wrong_product")
    assert server.consumptions == []


def test_unknown_token_is_invalid(google):
    """A token Google does not know (404 purchaseTokenNotFound) is invalid_token."""
    assert rejected(confirm(google, "never-bought"), "invalid_token")


def test_purchase_for_another_order_is_wrong_order(server, google):
    """A purchase whose obfuscatedExternalAccountId is another order is wrong_order."""
    buy(server, account_id="ord_someone_else")
    assert rejected(confirm(google), "wrong_order")
    assert server.consumptions == []


def test_test_purchases_need_to_be_allowed(server):
    """A license tester's purchase (purchaseType 0) is test_purchase unless allowed."""
    buy(server, purchase_type=0)
    with GooglePlayPurchases(PACKAGE, ACCESS_TOKEN_DEFAULT, base_url=server.url) as strict:
        assert rejected(confirm(strict), "test_purchase")
    with GooglePlayPurchases(PACKAGE, ACCESS_TOKEN_DEFAULT, base_url=server.url,
                             allow_test_purchases=True) as lenient:
        assert isinstance(confirm(lenient), PaymentEvent)


@pytest.mark.parametrize("fields", [{"purchase_type": 1}, {"purchase_type": 2}, {"quantity": 2}])
def test_promo_rewarded_or_multiple_quantity_is_not_paid(server, google, fields):
    """Promo (1) and rewarded (2) purchases, or a quantity of 2, are not_paid."""
    buy(server, **fields)
    assert rejected(confirm(google), "not_paid")


def test_server_error_is_unavailable_and_a_retry_succeeds(server, google):
    """A 503 on the purchase GET is unavailable with nothing consumed; the retry pays."""
    buy(server)
    server.fail_next(1)
    failure = confirm(google)
    assert isinstance(failure, ProviderFailure) and failure.code == "unavailable"
    assert server.consumptions == []
    assert isinstance(confirm(google), PaymentEvent)
    assert server.consumptions == [TOKEN]


def test_failed_consumption_is_unavailable_and_retried(server, google):
    """When the consumption gets a 500 the confirm returns it as unavailable (nothing to credit
    yet) and the purchase stays unacknowledged (no acknowledgement was sent first); the retry
    validates again and consumes once.
    """
    buy(server)
    server.fail_next(1, status=500, path_suffix=":consume")
    failure = confirm(google)
    assert isinstance(failure, ProviderFailure) and failure.code == "unavailable"
    assert server.purchase(TOKEN).acknowledgement_state == 0
    assert server.consumptions == server.acknowledgements == []
    assert isinstance(confirm(google), PaymentEvent)
    assert server.consumptions == [TOKEN]
    assert [r.method for r in server.requests] == ["GET", "POST", "GET", "POST"]


def test_failed_acknowledgement_is_unavailable(server, google):
    """acknowledge() answered 500 is unavailable; acknowledged afterwards, it is recorded once."""
    buy(server)
    server.fail_next(1, status=500)
    failure = google.acknowledge(TOKEN, product_id=PRODUCT)
    assert isinstance(failure, ProviderFailure) and failure.code == "unavailable"
    assert google.acknowledge(TOKEN, product_id=PRODUCT) is None
    assert server.acknowledgements == [TOKEN]


def test_wrong_access_token_is_unavailable(server):
    """Google's 401 for bad credentials is unavailable (giftflow's configuration, retried)."""
    buy(server)
    with GooglePlayPurchases(PACKAGE, "ya29.wrong", base_url=server.url) as adapter:
        failure = confirm(adapter)
    assert isinstance(failure, ProviderFailure) and failure.code == "unavailable"
    assert server.consumptions == []


def test_access_token_callable_is_asked_per_call(server):
    """A callable access token is called for each request, the GET and the consumption (so a
    refreshed token is used).
    """
    buy(server)
    calls: list[int] = []

    def token() -> str:
        calls.append(1)
        return ACCESS_TOKEN_DEFAULT

    with GooglePlayPurchases(PACKAGE, token, base_url=server.url) as adapter:
        assert isinstance(confirm(adapter), PaymentEvent)
    assert len(calls) == 2


def test_unreachable_server_is_unavailable():
    """A connection refused is unavailable."""
    with GooglePlayServer() as stopped:
        url = stopped.url
    with GooglePlayPurchases(PACKAGE, ACCESS_TOKEN_DEFAULT, base_url=url,
                             timeout_s=1.0) as adapter:
        failure = confirm(adapter)
    assert isinstance(failure, ProviderFailure) and failure.code == "unavailable"


@pytest.mark.parametrize("token", ["", "x" * 5000, "tok\nen", "tökén"])
def test_unusable_tokens_are_malformed_without_a_request(server, google, token):
    """Empty, oversize, non-printable or non-ASCII tokens are malformed before any call."""
    assert rejected(confirm(google, token), "malformed")
    assert server.requests == []


def test_token_is_escaped_in_the_path(server, google):
    """A token with URL-reserved characters is percent-encoded as one path segment."""
    buy(server, "a/b?c#d")
    assert isinstance(confirm(google, "a/b?c#d"), PaymentEvent)
    assert server.consumptions == ["a/b?c#d"]


# Voided purchases.


def test_voided_purchases_become_full_refunds(server, google):
    """Each voided purchase of the package → REFUNDED for the order's whole price, resolved by
    the token (order_id ""); tokens the lookup does not know are listed apart.
    """
    buy(server, "tok-1")
    buy(server, "tok-2")
    server.add_purchase("tok-other-app", package="com.example.other", product_id=PRODUCT,
                        account_id="x")
    buy(server, "tok-unknown")
    server.void("tok-1", 1_767_300_000_000)
    server.void("tok-unknown", 1_767_300_000_500)
    server.void("tok-other-app", 1_767_300_000_600)
    prices = {"tok-1": (PRICE_MINOR, "USD"), "tok-2": (PRICE_MINOR, "USD")}
    page = google.voided_purchases(1_767_200_000_000, prices.get)
    assert page == VoidedPurchases(
        events=(PaymentEvent(
            provider="google", event_id="voided:tok-1:1767300000000",
            kind=PaymentEventKind.REFUNDED, order_id="", payment_ref="tok-1",
            amount_minor=PRICE_MINOR, currency="USD"),),
        unknown_tokens=("tok-unknown",),
        next_page_token=None,
    )
    (request,) = server.requests
    assert request.path == f"/androidpublisher/v3/applications/{PACKAGE}/purchases/voidedpurchases"
    assert request.query["startTime"] == ["1767200000000"]


def test_voided_purchases_page_through_tokens(server, google):
    """With maxResults 1, the first page names a next page token that fetches the second."""
    for token in ("tok-1", "tok-2"):
        buy(server, token)
        server.void(token, 1_767_300_000_000)
    prices = dict.fromkeys(("tok-1", "tok-2"), (PRICE_MINOR, "USD"))
    first = google.voided_purchases(0, prices.get, results_max=1)
    assert isinstance(first, VoidedPurchases) and first.next_page_token
    second = google.voided_purchases(0, prices.get, results_max=1,
                                     page_token=first.next_page_token)
    assert isinstance(second, VoidedPurchases) and second.next_page_token is None
    assert [e.payment_ref for e in first.events + second.events] == ["tok-1", "tok-2"]


def test_no_voided_purchases_is_an_empty_page(google):
    """Google answers {} when nothing was voided: an empty page."""
    assert google.voided_purchases(0, {}.get) == VoidedPurchases((), (), None)


def test_voided_purchases_server_error_is_unavailable(server, google):
    """A 503 on the voided purchases list is unavailable."""
    server.fail_next(1)
    failure = google.voided_purchases(0, {}.get)
    assert isinstance(failure, ProviderFailure) and failure.code == "unavailable"
