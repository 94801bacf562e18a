"""Google Play purchases: validate a purchase token, consume it, and read voided purchases.

Wire protocol (Google Play Android Developer API v3, JSON over HTTPS with ``httpx``)
    ``GET /androidpublisher/v3/applications/{packageName}/purchases/products/{productId}/tokens/
    {token}`` answers a ``ProductPurchase``; ``POST .../tokens/{token}:consume`` (empty request
    and answer bodies) consumes it; ``POST .../tokens/{token}:acknowledge`` acknowledges it
    without consuming; ``GET /androidpublisher/v3/applications/{packageName}/purchases/
    voidedpurchases`` pages through voided purchases (``startTime`` in ms, ``maxResults``,
    ``token`` for the next page).
    Every call sends ``Authorization: Bearer <access token>``. Getting that token (the OAuth 2.0
    service-account flow with the ``androidpublisher`` scope) is out of scope here: the adapter
    takes the access token string, or a callable that returns a current one.

Validation (:meth:`GooglePlayPurchases.confirm`)
    The app posts the purchase token with giftflow's order id; the caller passes the order's
    Play product id and its price snapshot. A purchase is accepted when the API returns it for the
    configured package and that product (Google answers 400 ``purchaseTokenDoesNotMatchPackageName``
    / ``purchaseTokenDoesNotMatchProductId`` otherwise: ``wrong_package`` / ``wrong_product``),
    ``purchaseState`` is 0 (purchased; 1 canceled and 2 pending are refused),
    ``obfuscatedExternalAccountId`` is the order id (set by the app through
    ``BillingFlowParams.setObfuscatedAccountId``), the quantity is 1, and it is not a license-test,
    promo or rewarded purchase (``purchaseType`` absent) unless ``allow_test_purchases``.
    Then, unless ``consumptionState`` is already 1, the purchase is consumed.

Consumption (coin packs are consumable products)
    Google lets a buyer hold one unconsumed purchase of a product: until it is consumed, buying the
    same pack again fails with "item already owned". :meth:`GooglePlayPurchases.confirm` therefore
    consumes every purchase it validates. Consuming also acknowledges it, so ``confirm`` does NOT
    acknowledge first: that would be one more call per purchase and would only matter when the
    consumption then fails, and in that case ``confirm`` returns the failure and nothing is
    credited, so the purchase is better left unacknowledged (Google refunds a purchase neither
    acknowledged nor consumed within three days, instead of keeping the buyer's money for coins
    giftflow never credited). A failed consumption is a :class:`ProviderFailure`; a retry
    validates again and consumes (or, if the consumption did reach Google, sees
    ``consumptionState`` 1 and returns the event without consuming twice, which Google refuses).
    The purchase is consumed BEFORE the economy credits it: a consumed purchase still validates,
    so a caller whose crediting failed confirms and credits again, and the economy's payment key
    (the purchase token) makes that idempotent. :meth:`~GooglePlayPurchases.acknowledge` stays
    for products that are not consumed.

Amounts
    A ``ProductPurchase`` carries NO price. Google's validation checks state, package, product
    and order; the ``PAID`` event then carries the order's own price snapshot (``price_minor`` and
    ``currency`` given by the caller), which the economy credits. The economy's amount check is
    therefore a tautology for Google: the product id is what ties the payment to the price.

Events
    ``PAID``: ``event_id`` ``order:<orderId>`` (Google's ``GPA.…`` id; the token when absent),
    ``payment_ref`` the purchase token. Voided purchases (refunds, chargebacks, revocations) are
    ``REFUNDED`` for the whole price (cumulative) with ``order_id == ""`` (the economy resolves by
    ``payment_ref``) and ``event_id`` ``voided:<token>:<voidedTimeMillis>``; the price comes from a
    lookup the caller provides (``price_of(token)``), and tokens it does not know are listed apart.

Failures (values, never exceptions)
    :class:`GoogleRejected` when the purchase itself must not be credited. :class:`ProviderFailure`
    for the call: timeouts, connection errors, 5xx, 408/429, an oversize or unreadable answer, and
    401/403 (giftflow's credentials or permissions: a configuration fault, retried once fixed) are
    ``unavailable``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, Self
from urllib.parse import quote

import httpx

from giftflow.adapters.providers._http import clip as _clip
from giftflow.adapters.providers._http import exchange, parse_json
from giftflow.economy.providers import PaymentEvent, PaymentEventKind, ProviderFailure

PROVIDER: Final = "google"
"""The ``provider`` of every event this adapter makes."""

BASE_URL_DEFAULT: Final = "https://androidpublisher.googleapis.com"

PURCHASE_TOKEN_CHARS_MAX: Final = 4096
"""Longest purchase token accepted (Google's are a few hundred characters)."""

VOIDED_PAGE_RESULTS_MAX: Final = 1000
"""Google's largest ``maxResults`` for voided purchases."""


_PURCHASED, _CANCELED, _PENDING = 0, 1, 2
_ACKNOWLEDGED = 1
_CONSUMED = 1
_HTTP_OK = 200
_UNAVAILABLE_STATUSES: Final = frozenset({401, 403, 408, 425, 429})
_HTTP_SERVER_ERROR_MIN = 500
GoogleRejectedCode = Literal[
    "wrong_package", "wrong_product", "invalid_token", "wrong_order", "pending", "canceled",
    "not_paid", "test_purchase", "malformed",
]


@dataclass(frozen=True, slots=True)
class GoogleRejected:
    """A purchase token that must not be credited.

    ``wrong_package`` / ``wrong_product``: the token belongs to another app or product.
    ``invalid_token``: Google does not know the token (404, 410 no longer valid, 400 invalid).
    ``wrong_order``: the purchase names another giftflow order (``obfuscatedExternalAccountId``).
    ``pending``: not paid yet (ask again once Google's RTDN says it completed). ``canceled``:
    canceled. ``not_paid``: a promo or rewarded purchase, or a quantity other than 1.
    ``test_purchase``: a license tester's free purchase while test purchases are not allowed.
    ``malformed``: the answer is not a ``ProductPurchase`` giftflow can read, or the token is not.
    """

    code: GoogleRejectedCode
    detail: str
    ok: Literal[False] = False


_WRONG_REASONS: Final[dict[str, GoogleRejectedCode]] = {
    "purchaseTokenDoesNotMatchPackageName": "wrong_package",
    "purchaseTokenDoesNotMatchProductId": "wrong_product",
}


@dataclass(frozen=True, slots=True)
class VoidedPurchases:
    """One page of voided purchases as events.

    ``unknown_tokens`` are voided purchases ``price_of`` did not know (not giftflow's, or not
    credited); ``next_page_token`` asks for the next page (``None`` on the last one).
    """

    events: tuple[PaymentEvent, ...]
    unknown_tokens: tuple[str, ...]
    next_page_token: str | None


@dataclass(frozen=True, slots=True)
class ValidatedPurchase:
    """A purchase that may be credited: its ``PAID`` event and Google's flags for it."""

    event: PaymentEvent
    acknowledged: bool
    """``acknowledgementState`` is 1 (consuming sets it too)."""
    consumed: bool
    """``consumptionState`` is 1."""


@dataclass(frozen=True, slots=True)
class _Reply:
    status_code: int
    body: object


class GooglePlayPurchases:
    """Google Play one-time product purchases over the Android Publisher API v3.

    ``access_token`` is an OAuth 2.0 access token, or a callable returning the current one.
    ``timeout_s`` bounds each call; ``response_bytes_max`` the answer read. Pass ``transport`` to
    run the client on another transport (tests), or ``client`` to share one (not closed here).
    """

    def __init__(
        self,
        package_name: str,
        access_token: str | Callable[[], str],
        *,
        base_url: str = BASE_URL_DEFAULT,
        allow_test_purchases: bool = False,
        timeout_s: float = 10.0,
        response_bytes_max: int = 1_048_576,
        client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not package_name:
            raise ValueError("the package name must not be empty")
        if timeout_s <= 0 or response_bytes_max <= 0:
            raise ValueError("timeout_s and response_bytes_max must be positive")
        self._package = package_name
        self._token_source = access_token
        self._base_url = base_url.rstrip("/")
        self._allow_test_purchases = allow_test_purchases
        self._timeout_s = timeout_s
        self._response_bytes_max = response_bytes_max
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(
            transport=transport, timeout=httpx.Timeout(timeout_s))

    def close(self) -> None:
        """Close the HTTP client if the adapter made it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GooglePlayPurchases(package_name={self._package!r}, base_url={self._base_url!r})"

    # -- purchases --------------------------------------------------------------------------------

    def confirm(
        self, purchase_token: str, *, product_id: str, order_id: str, price_minor: int,
        currency: str,
    ) -> PaymentEvent | GoogleRejected | ProviderFailure:
        """Validate the purchase for the order, consume it if needed, and return ``PAID``.

        ``price_minor`` and ``currency`` are the order's snapshot (the purchase has no price).
        Calling it again for a consumed purchase validates again and consumes nothing. A failed
        consumption is returned as the failure (nothing to credit yet; see the module).
        """
        validated = self.validate(purchase_token, product_id=product_id, order_id=order_id,
                                  price_minor=price_minor, currency=currency)
        if not isinstance(validated, ValidatedPurchase):
            return validated
        if not validated.consumed:
            failure = self.consume(purchase_token, product_id=product_id)
            if failure is not None:
                return failure
        return validated.event

    def validate(
        self, purchase_token: str, *, product_id: str, order_id: str, price_minor: int,
        currency: str,
    ) -> ValidatedPurchase | GoogleRejected | ProviderFailure:
        """Validate without consuming or acknowledging: the ``PAID`` event and Google's flags."""
        if type(price_minor) is not int or price_minor < 0:
            raise ValueError("price_minor must be a non-negative integer")
        problem = _token_problem(purchase_token) or _token_problem(product_id)
        if problem:
            return GoogleRejected("malformed", problem)
        reply = self._call("GET", self._token_path(product_id, purchase_token))
        if isinstance(reply, ProviderFailure):
            return reply
        if reply.status_code != _HTTP_OK:
            return _purchase_failure(reply)
        return self._read_purchase(reply.body, purchase_token, product_id, order_id,
                                   price_minor, currency)

    def acknowledge(self, purchase_token: str, *, product_id: str) -> ProviderFailure | None:
        """``POST …:acknowledge``; ``None`` when Google accepted it."""
        return self._post_action(purchase_token, product_id, "acknowledge", {})

    def consume(self, purchase_token: str, *, product_id: str) -> ProviderFailure | None:
        """``POST …:consume`` (empty body); ``None`` when Google accepted it.

        Consuming also acknowledges the purchase and lets the buyer buy the product again.
        Google refuses to consume a purchase twice (400): that is ``rejected``, as is any other
        4xx except the ``unavailable`` ones (401, 403, 408, 425, 429); 5xx is ``unavailable``.
        """
        return self._post_action(purchase_token, product_id, "consume", None)

    def _post_action(self, purchase_token: str, product_id: str, action: str,
                     json_body: object) -> ProviderFailure | None:
        problem = _token_problem(purchase_token) or _token_problem(product_id)
        if problem:
            return ProviderFailure("rejected", problem)
        reply = self._call("POST", f"{self._token_path(product_id, purchase_token)}:{action}",
                           json_body=json_body)
        if isinstance(reply, ProviderFailure):
            return reply
        if reply.status_code in {_HTTP_OK, 204}:
            return None
        code: Literal["unavailable", "rejected"] = (
            "unavailable" if _unavailable_status(reply.status_code) else "rejected")
        return ProviderFailure(code, f"{action}: {_describe(reply)}")

    def _read_purchase(  # noqa: PLR0911 (a return per refusal reason)
        self, body: object, token: str, product_id: str, order_id: str, price_minor: int,
        currency: str,
    ) -> ValidatedPurchase | GoogleRejected:
        if not isinstance(body, dict) or body.get("kind", "androidpublisher#productPurchase") \
                != "androidpublisher#productPurchase":
            return GoogleRejected("malformed", "the answer is not a ProductPurchase")
        state = body.get("purchaseState")
        if state == _PENDING:
            return GoogleRejected("pending", "the purchase is pending (not paid yet)")
        if state == _CANCELED:
            return GoogleRejected("canceled", "the purchase was canceled")
        if type(state) is not int or state != _PURCHASED:
            return GoogleRejected("malformed", f"purchaseState {state!r}")
        if body.get("productId", product_id) != product_id:
            return GoogleRejected("wrong_product",
                                  f"product {body.get('productId')!r}, expected {product_id!r}")
        if not order_id or body.get("obfuscatedExternalAccountId") != order_id:
            return GoogleRejected("wrong_order", _clip(
                f"obfuscatedExternalAccountId {body.get('obfuscatedExternalAccountId')!r} is "
                f"not order {order_id!r}"))
        if body.get("quantity", 1) != 1:
            return GoogleRejected("not_paid", f"quantity {body.get('quantity')!r}, not 1")
        purchase_type = body.get("purchaseType")
        if purchase_type == 0 and not self._allow_test_purchases:
            return GoogleRejected("test_purchase", "a license tester's purchase")
        if purchase_type not in {None, 0}:
            return GoogleRejected("not_paid", f"purchaseType {purchase_type!r} (promo/rewarded)")
        google_order = body.get("orderId")
        event_id = (f"order:{google_order}" if isinstance(google_order, str) and google_order
                    else f"token:{token}")
        event = PaymentEvent(provider=PROVIDER, event_id=event_id, kind=PaymentEventKind.PAID,
                             order_id=order_id, payment_ref=token, amount_minor=price_minor,
                             currency=currency)
        return ValidatedPurchase(event, body.get("acknowledgementState") == _ACKNOWLEDGED,
                                 body.get("consumptionState") == _CONSUMED)

    # -- voided purchases -------------------------------------------------------------------------

    def voided_purchases(
        self, start_ms: int, price_of: Callable[[str], tuple[int, str] | None], *,
        page_token: str | None = None, results_max: int = VOIDED_PAGE_RESULTS_MAX,
    ) -> VoidedPurchases | ProviderFailure:
        """One page of purchases voided since ``start_ms``, as ``REFUNDED`` events.

        ``price_of(purchase_token)`` gives the order's ``(price_minor, currency)`` snapshot, or
        ``None`` for a token giftflow never credited.
        """
        if not 1 <= results_max <= VOIDED_PAGE_RESULTS_MAX:
            raise ValueError(f"results_max must be 1..{VOIDED_PAGE_RESULTS_MAX}")
        params = {"startTime": str(start_ms), "maxResults": str(results_max), "type": "0"}
        if page_token:
            params["token"] = page_token
        path = (f"/androidpublisher/v3/applications/{quote(self._package, safe='')}"
                "/purchases/voidedpurchases")
        reply = self._call("GET", path, params=params)
        if isinstance(reply, ProviderFailure):
            return reply
        if reply.status_code != _HTTP_OK:
            code: Literal["unavailable", "rejected"] = (
                "unavailable" if _unavailable_status(reply.status_code) else "rejected")
            return ProviderFailure(code, f"voided purchases: {_describe(reply)}")
        return _voided_page(reply.body, price_of)

    # -- HTTP -------------------------------------------------------------------------------------

    def _token_path(self, product_id: str, token: str) -> str:
        return (f"/androidpublisher/v3/applications/{quote(self._package, safe='')}"
                f"/purchases/products/{quote(product_id, safe='')}/tokens/{quote(token, safe='')}")

    def _access_token(self) -> str:
        source = self._token_source
        return source if isinstance(source, str) else source()

    def _call(self, method: str, path: str, *, params: dict[str, str] | None = None,
              json_body: object = None) -> _Reply | ProviderFailure:
        headers = {"Authorization": f"Bearer {self._access_token()}",
                   "Accept": "application/json", "Accept-Encoding": "identity"}
        content = None
        if json_body is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(json_body).encode()
        answer = exchange(self._client, method, self._base_url + path,
                          bytes_max=self._response_bytes_max, timeout_s=self._timeout_s,
                          params=params, headers=headers, content=content)
        if isinstance(answer, ProviderFailure):
            return answer
        status_code, body = answer
        parsed = parse_json(body)
        if status_code == _HTTP_OK and parsed is None and body.strip():
            return ProviderFailure("unavailable", "no answer: the body is not JSON")
        return _Reply(status_code, parsed)


def _token_problem(value: object) -> str:
    if not isinstance(value, str) or not value:
        return "an empty token or product id"
    if len(value) > PURCHASE_TOKEN_CHARS_MAX:
        return f"a token of {len(value)} characters is over {PURCHASE_TOKEN_CHARS_MAX}"
    if not value.isascii() or not value.isprintable():
        return "a token or product id with non-printable or non-ASCII characters"
    return ""


def _unavailable_status(status_code: int) -> bool:
    return status_code >= _HTTP_SERVER_ERROR_MIN or status_code in _UNAVAILABLE_STATUSES or (
        status_code < _HTTP_OK)


def _purchase_failure(reply: _Reply) -> GoogleRejected | ProviderFailure:
    """Classify a non-200 answer to the purchase GET."""
    if _unavailable_status(reply.status_code) or 300 <= reply.status_code < 400:  # noqa: PLR2004
        return ProviderFailure("unavailable", "no answer: " + _describe(reply))
    reason = _reason(reply.body)
    return GoogleRejected(_WRONG_REASONS.get(reason, "invalid_token"), _describe(reply))


def _error(body: object) -> dict[str, object]:
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _reason(body: object) -> str:
    errors = _error(body).get("errors")
    if isinstance(errors, list):
        for item in errors:
            if isinstance(item, dict) and isinstance(item.get("reason"), str):
                return str(item["reason"])
    return ""


def _describe(reply: _Reply) -> str:
    message = _error(reply.body).get("message")
    reason = _reason(reply.body)
    text = f"HTTP {reply.status_code}"
    if reason:
        text += f" {reason}"
    if isinstance(message, str) and message:
        text += f": {message}"
    return _clip(text)



def _voided_page(
    body: object, price_of: Callable[[str], tuple[int, str] | None]
) -> VoidedPurchases | ProviderFailure:
    """Map a ``voidedpurchases.list`` answer (an empty object when nothing was voided)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        return ProviderFailure("unavailable", "no answer: voided purchases are not an object")
    listed = body.get("voidedPurchases", [])
    if not isinstance(listed, list):
        return ProviderFailure("unavailable", "no answer: voidedPurchases is not a list")
    events: list[PaymentEvent] = []
    unknown: list[str] = []
    for item in listed:
        token = item.get("purchaseToken") if isinstance(item, dict) else None
        voided_at = item.get("voidedTimeMillis") if isinstance(item, dict) else None
        if not isinstance(token, str) or not token or not isinstance(voided_at, str) \
                or not voided_at.isdigit():
            return ProviderFailure("unavailable", "no answer: a voided purchase is unreadable")
        price = price_of(token)
        if price is None:
            unknown.append(token)
            continue
        price_minor, currency = price
        events.append(PaymentEvent(
            provider=PROVIDER, event_id=f"voided:{token}:{voided_at}",
            kind=PaymentEventKind.REFUNDED, order_id="", payment_ref=token,
            amount_minor=price_minor, currency=currency))
    pagination = body.get("tokenPagination")
    next_token = pagination.get("nextPageToken") if isinstance(pagination, dict) else None
    return VoidedPurchases(tuple(events), tuple(unknown),
                           next_token if isinstance(next_token, str) and next_token else None)
