"""PayPal Payouts (REST ``/v1/payments/payouts``) as a :class:`PayoutProvider`.

Wire protocol
    OAuth2 client credentials (``POST /v1/oauth2/token``, HTTP basic auth, form
    ``grant_type=client_credentials``). The token is cached until ``token_refresh_margin_s`` before
    its ``expires_in``; an API answer of 401 drops it and the call is retried once with a new one.
    One payout is one batch with one item: ``sender_batch_id`` is the request's
    ``idempotency_key`` (also sent as ``PayPal-Request-Id``), ``sender_item_id`` its ``payout_id``.
    Amounts are decimal strings made from the integer minor units by integer arithmetic
    (:func:`format_amount`; JPY, HUF and TWD have no decimals).

Never paying twice
    PayPal refuses a ``sender_batch_id`` used in the last 30 days: HTTP 400, ``name``
    ``USER_BUSINESS_ERROR``, a ``details`` entry with ``issue`` ``SENDER_BATCH_ID_ALREADY_USED``
    (older answers: ``field`` ``SENDER_BATCH_ID``, ``issue`` "Duplicate batch request"), and,
    as PayPal's reference for ``sender_batch_id`` states, "a HATEOAS link to the original payout".
    The adapter takes that answer as "already received", reads the ``payout_batch_id`` from the
    link's path (never following the link's host) and answers with the batch's current status.
    If PayPal instead replays the original 201 for the repeated ``PayPal-Request-Id``, that reply
    names the batch too. Either way a resubmission never pays twice and an accepted payout never
    comes back as a failure. The exact error body could not be confirmed from PayPal's published
    schema (the docs name the behaviour, not the JSON), so every shape above is recognised, and a
    duplicate answer without a usable link is ``unavailable``, never ``rejected``.

Finding a batch in :meth:`PayPalPayouts.status`
    The v1 API has no lookup by ``sender_batch_id``; the only key is PayPal's ``payout_batch_id``.
    With ``request.provider_ref`` (the ``provider_ref`` of an earlier :class:`PayoutState`) the
    adapter GETs ``/v1/payments/payouts/{provider_ref}``; 404 there is ``not_found``. Without it,
    the lookup IS a resubmission with the same ``sender_batch_id``: the duplicate answer links the
    batch, and a 201 means PayPal had never received the payout and now has (``PENDING``). So
    ``status`` without a ref may create the payout; it is only asked about payouts giftflow
    submitted, and creating one it meant to pay is the only way to learn it was never received.

Status mapping (an item's ``transaction_status``)
    ``SUCCESS``, ``FAILED``, ``DENIED``, ``RETURNED`` and ``REVERSED`` map to themselves.
    ``REFUNDED`` (the receiver sent the money back) maps to ``REVERSED``: paid, then credited back.
    ``PENDING``, ``UNCLAIMED`` (waiting for the receiver to claim; ends as ``SUCCESS`` or
    ``RETURNED``), ``ONHOLD`` (under review), ``BLOCKED`` (held by PayPal; whether the money moves
    is decided later, so it needs a person, not a guess) and any unknown value map to ``PENDING``,
    with PayPal's value in ``detail``. A batch ``DENIED`` with no item for the payout is ``DENIED``.

Failures
    Timeouts, connection errors, 5xx, 408/409/425/429, 3xx, an oversize (``response_bytes_max``)
    or unreadable body, and ``DUPLICATE_REQUEST_ID`` (a concurrent twin may still succeed):
    ``unavailable``. Refused client credentials (token endpoint 400/401/403) and 401/403 from the
    API are ``unavailable`` too: a configuration fault of giftflow's account, not of the payout,
    to be retried once fixed, never voided. Other 4xx on create (``VALIDATION_ERROR``,
    ``INSUFFICIENT_FUNDS``, ...) are ``rejected``; this relies on PayPal checking the
    ``sender_batch_id`` before funds and validity, as its "safely retry with the same
    ``sender_batch_id``" promise implies. An unsupported currency or a non-positive amount is
    ``rejected`` before any call. A batch whose item is not this payout (an idempotency key reused
    for another payout) is ``unavailable`` with the reason: nothing is assumed and an operator
    sees it. Expected failures are values; only bugs raise (a malformed ``provider_ref``).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, Self
from urllib.parse import quote, urlsplit

import httpx

from giftflow.adapters.providers._http import clip as _clip
from giftflow.adapters.providers._http import exchange, parse_json
from giftflow.economy.providers import (
    PayoutRequest,
    PayoutState,
    PayoutStatus,
    ProviderFailure,
)

CURRENCY_DECIMALS: Final[Mapping[str, int]] = {
    "AUD": 2, "BRL": 2, "CAD": 2, "CHF": 2, "CNY": 2, "CZK": 2, "DKK": 2, "EUR": 2, "GBP": 2,
    "HKD": 2, "HUF": 0, "ILS": 2, "JPY": 0, "MXN": 2, "MYR": 2, "NOK": 2, "NZD": 2, "PHP": 2,
    "PLN": 2, "SEK": 2, "SGD": 2, "THB": 2, "TWD": 0, "USD": 2,
}
"""PayPal's payout currencies and the decimals PayPal accepts in each (HUF, JPY, TWD: none)."""

ITEM_STATUS_MAP: Final[Mapping[str, PayoutStatus]] = {
    "PENDING": PayoutStatus.PENDING,
    "UNCLAIMED": PayoutStatus.PENDING,
    "ONHOLD": PayoutStatus.PENDING,
    "BLOCKED": PayoutStatus.PENDING,
    "SUCCESS": PayoutStatus.SUCCESS,
    "FAILED": PayoutStatus.FAILED,
    "DENIED": PayoutStatus.DENIED,
    "RETURNED": PayoutStatus.RETURNED,
    "REVERSED": PayoutStatus.REVERSED,
    "REFUNDED": PayoutStatus.REVERSED,
}
"""PayPal's item ``transaction_status`` to giftflow's status; anything else is ``PENDING``."""

_BATCH_PATH: Final = "/v1/payments/payouts"
_TOKEN_PATH: Final = "/v1/oauth2/token"  # noqa: S105 - a URL path, not a password
_REF_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LINKED_BATCH_PATTERN: Final = re.compile(r"/v1/payments/payouts/([^/]+)/?")
_DUPLICATE_ISSUES: Final = frozenset({"SENDER_BATCH_ID_ALREADY_USED", "DUPLICATE BATCH REQUEST"})
_RETRYABLE_CLIENT_ERRORS: Final = frozenset({401, 403, 404, 405, 408, 409, 425, 429})
_UNDECIDED_ERROR_NAMES: Final = frozenset({
    "DUPLICATE_REQUEST_ID",  # a concurrent twin under the same PayPal-Request-Id may succeed
    "INTERNAL_SERVER_ERROR", "INTERNAL_ERROR", "SERVICE_UNAVAILABLE", "REQUEST_TIMEOUT_EXCEEDED",
    "RATE_LIMIT_REACHED", "RATE_LIMIT_VALIDATION_FAILURES",
})
_CREDENTIALS_REFUSED: Final = frozenset({400, 401, 403})
_HTTP_OK: Final = 200
_HTTP_CREATED: Final = 201
_HTTP_UNAUTHORIZED: Final = 401
_HTTP_NOT_FOUND: Final = 404
_HTTP_CLIENT_ERROR_MIN: Final = 400
_HTTP_SERVER_ERROR_MIN: Final = 500


def format_amount(amount_minor: int, currency: str) -> str:
    """Write ``amount_minor`` as PayPal's decimal string, exactly (integer arithmetic only).

    >>> format_amount(123456, "USD"), format_amount(5, "EUR"), format_amount(1234, "JPY")
    ('1234.56', '0.05', '1234')

    Raises:
        ValueError: the currency is not a PayPal payout currency or the amount is negative.
    """
    decimals = CURRENCY_DECIMALS.get(currency)
    if decimals is None:
        raise ValueError(f"PayPal pays out no {currency!r}")
    if amount_minor < 0:
        raise ValueError("a payout amount cannot be negative")
    if decimals == 0:
        return str(amount_minor)
    whole, fraction = divmod(amount_minor, 10**decimals)
    return f"{whole}.{fraction:0{decimals}d}"


@dataclass(frozen=True, slots=True)
class _Reply:
    """An HTTP answer: its status code and its JSON body (``None`` if empty or not JSON)."""

    status_code: int
    body: object


def _field(value: object, *keys: str) -> object:
    """The value at ``keys`` inside nested JSON objects, or ``None``."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _text(value: object, *keys: str) -> str | None:
    """The string at ``keys`` inside nested JSON objects, or ``None``."""
    found = _field(value, *keys)
    return found if isinstance(found, str) else None


def _objects(value: object, *keys: str) -> list[object]:
    """The JSON objects of the array at ``keys`` (an empty list if there is none)."""
    found = _field(value, *keys)
    if not isinstance(found, list):
        return []
    return [entry for entry in found if isinstance(entry, dict)]


def _describe_error(reply: _Reply) -> str:
    """PayPal's error name, message, issues and debug id, in one bounded line."""
    parts = [f"HTTP {reply.status_code}"]
    for key in ("name", "error", "message", "error_description"):
        text = _text(reply.body, key)
        if text:
            parts.append(text)
    parts.extend(
        f"{_text(entry, 'field') or '?'}: {_text(entry, 'issue') or '?'}"
        for entry in _objects(reply.body, "details")
    )
    debug_id = _text(reply.body, "debug_id")
    if debug_id:
        parts.append(f"debug_id {debug_id}")
    return _clip("; ".join(parts))


def _is_duplicate_batch(reply: _Reply) -> bool:
    """Whether a 4xx says the ``sender_batch_id`` was used already (every known shape)."""
    if not _HTTP_CLIENT_ERROR_MIN <= reply.status_code < _HTTP_SERVER_ERROR_MIN:
        return False
    name = _text(reply.body, "name")
    if name == "SENDER_BATCH_ID_ALREADY_USED":
        return True
    if name != "USER_BUSINESS_ERROR":
        return False
    for entry in _objects(reply.body, "details"):
        issue = (_text(entry, "issue") or "").upper()
        if issue in _DUPLICATE_ISSUES or _text(entry, "field") == "SENDER_BATCH_ID":
            return True
    return False


def _linked_batch_id(body: object) -> str | None:
    """The ``payout_batch_id`` in a HATEOAS link to ``/v1/payments/payouts/{id}``, if any."""
    for link in _objects(body, "links"):
        href = _text(link, "href")
        if href is None:
            continue
        match = _LINKED_BATCH_PATTERN.fullmatch(urlsplit(href).path)
        if match and _REF_PATTERN.fullmatch(match.group(1)):
            return match.group(1)
    return None


class PayPalPayouts:
    """PayPal Payouts over HTTPS with ``httpx``; see the module docstring for the design.

    ``base_url`` is ``https://api-m.paypal.com`` (live) or ``https://api-m.sandbox.paypal.com``.
    ``timeout_s`` bounds each call as a whole (connect, send and reading the answer);
    ``response_bytes_max`` bounds the answer read. Pass ``client`` to share an ``httpx.Client``
    (the adapter does not close it), or ``transport`` to build its own client on it. ``clock``
    (seconds, monotonic) decides when the cached token is due; tests may replace it.
    """

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        client_secret: str,
        timeout_s: float = 10.0,
        response_bytes_max: int = 1_048_576,
        token_refresh_margin_s: float = 60.0,
        email_subject: str = "You have a payout",
        name: str = "paypal",
        client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_s <= 0 or response_bytes_max <= 0 or token_refresh_margin_s < 0:
            raise ValueError("timeout_s and response_bytes_max must be positive, "
                             "token_refresh_margin_s not negative")
        self._base_url = base_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._timeout_s = timeout_s
        self._timeout = httpx.Timeout(timeout_s)
        self._response_bytes_max = response_bytes_max
        self._token_refresh_margin_s = token_refresh_margin_s
        self._email_subject = email_subject
        self._name = name
        self._owns_client = client is None
        self._client = (
            client if client is not None
            else httpx.Client(transport=transport, timeout=self._timeout))
        self._clock = clock
        self._token_lock = threading.Lock()
        self._token: str | None = None
        self._token_due = 0.0

    @property
    def name(self) -> str:
        """The payout method's name (``paypal``)."""
        return self._name

    def close(self) -> None:
        """Close the HTTP client if the adapter made it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PayPalPayouts(base_url={self._base_url!r}, name={self._name!r})"

    # -- the protocol --------------------------------------------------------------------------

    def submit(self, request: PayoutRequest) -> PayoutState | ProviderFailure:
        """Create the payout's batch; a repeat finds the batch the first call created."""
        body = self._create_body(request)
        if isinstance(body, ProviderFailure):
            return body
        reply = self._api(
            "POST", _BATCH_PATH, json_body=body,
            extra_headers={"PayPal-Request-Id": request.idempotency_key})
        if isinstance(reply, ProviderFailure):
            return reply
        if reply.status_code in {_HTTP_OK, _HTTP_CREATED}:
            return self._created_state(request, reply)
        if _is_duplicate_batch(reply):
            batch_id = _linked_batch_id(reply.body)
            if batch_id is None:
                return ProviderFailure(
                    "unavailable",
                    "PayPal already has this sender_batch_id but did not link its batch: "
                    + _describe_error(reply))
            return self._accepted_state(request, batch_id)
        return _create_failure(reply)

    def status(self, request: PayoutRequest) -> PayoutState | ProviderFailure:
        """The payout's status: by ``provider_ref`` if known, else by resubmitting (deduped)."""
        if not request.provider_ref:
            return self.submit(request)
        if not _REF_PATTERN.fullmatch(request.provider_ref):
            raise ValueError(f"not a PayPal payout_batch_id: {request.provider_ref!r}")
        reply = self._read_batch(request.provider_ref)
        if isinstance(reply, ProviderFailure):
            return reply
        return _batch_state(request, request.provider_ref, reply.body)

    # -- payouts -------------------------------------------------------------------------------

    def _create_body(self, request: PayoutRequest) -> dict[str, object] | ProviderFailure:
        """The create-batch JSON for ``request``, or why PayPal cannot take it."""
        if request.currency not in CURRENCY_DECIMALS:
            return ProviderFailure("rejected", f"PayPal pays out no {request.currency!r}")
        if request.amount_minor <= 0:
            return ProviderFailure("rejected", "a payout amount must be positive")
        item: dict[str, object] = {
            "recipient_type": "EMAIL",
            "amount": {
                "value": format_amount(request.amount_minor, request.currency),
                "currency": request.currency,
            },
            "receiver": request.receiver,
            "sender_item_id": request.payout_id,
        }
        if request.note:
            item["note"] = request.note
        return {
            "sender_batch_header": {
                "sender_batch_id": request.idempotency_key,
                "email_subject": self._email_subject,
                "recipient_type": "EMAIL",
            },
            "items": [item],
        }

    def _created_state(
        self, request: PayoutRequest, reply: _Reply,
    ) -> PayoutState | ProviderFailure:
        """The state after PayPal answered a create with 200/201 (new, or replayed)."""
        batch_id = _text(reply.body, "batch_header", "payout_batch_id")
        if batch_id is None or not _REF_PATTERN.fullmatch(batch_id):
            return ProviderFailure(
                "unavailable",
                "PayPal accepted the payout without a usable payout_batch_id; "
                "asking again with the same sender_batch_id finds the batch")
        batch_status = _text(reply.body, "batch_header", "batch_status")
        if batch_status in {"PENDING", "PROCESSING"}:
            return PayoutState(PayoutStatus.PENDING, batch_id, f"batch {batch_status}")
        return self._accepted_state(request, batch_id)

    def _accepted_state(
        self, request: PayoutRequest, batch_id: str,
    ) -> PayoutState | ProviderFailure:
        """The state of a batch PayPal has accepted: ``PENDING`` if it cannot be read now."""
        reply = self._read_batch(batch_id)
        if isinstance(reply, _Reply):
            return _batch_state(request, batch_id, reply.body)
        if reply.code == "not_found":
            return ProviderFailure(
                "unavailable", f"PayPal named batch {batch_id} but does not show it")
        return PayoutState(
            PayoutStatus.PENDING, batch_id, _clip(f"accepted; status not read: {reply.detail}"))

    def _read_batch(self, batch_id: str) -> _Reply | ProviderFailure:
        """GET the batch: its 200 answer, ``not_found`` for 404, else ``unavailable``."""
        reply = self._api("GET", f"{_BATCH_PATH}/{quote(batch_id, safe='')}")
        if isinstance(reply, ProviderFailure) or reply.status_code == _HTTP_OK:
            return reply
        if reply.status_code == _HTTP_NOT_FOUND:
            return ProviderFailure("not_found", f"PayPal has no batch {batch_id}")
        return ProviderFailure("unavailable", "no answer: " + _describe_error(reply))

    # -- HTTP ----------------------------------------------------------------------------------

    def _api(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        json_body: object = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> _Reply | ProviderFailure:
        """Call the API with a bearer token; on 401, once more with a fresh token."""
        content = None if json_body is None else json.dumps(json_body).encode()
        headers = {"Accept": "application/json", **(extra_headers or {})}
        if content is not None:
            headers["Content-Type"] = "application/json"
        token = self._access_token()
        if isinstance(token, ProviderFailure):
            return token
        reply = self._send(
            method, path, headers={**headers, "Authorization": f"Bearer {token}"},
            content=content)
        if isinstance(reply, ProviderFailure) or reply.status_code != _HTTP_UNAUTHORIZED:
            return reply
        self._forget_token(token)
        token = self._access_token()
        if isinstance(token, ProviderFailure):
            return token
        return self._send(
            method, path, headers={**headers, "Authorization": f"Bearer {token}"},
            content=content)

    def _access_token(self) -> str | ProviderFailure:
        """The cached token, or a new one if it is due."""
        with self._token_lock:
            if self._token is not None and self._clock() < self._token_due:
                return self._token
            asked_at = self._clock()
            reply = self._send(
                "POST", _TOKEN_PATH, headers={"Accept": "application/json"},
                form={"grant_type": "client_credentials"},
                auth=(self._client_id, self._client_secret))
            if isinstance(reply, ProviderFailure):
                return reply
            if reply.status_code != _HTTP_OK:
                if reply.status_code in _CREDENTIALS_REFUSED:
                    return ProviderFailure(
                        "unavailable",
                        "PayPal refused giftflow's client credentials: " + _describe_error(reply))
                return ProviderFailure(
                    "unavailable", "no answer: token endpoint " + _describe_error(reply))
            token = _text(reply.body, "access_token")
            token_type = _text(reply.body, "token_type") or "Bearer"
            expires_in = _field(reply.body, "expires_in")
            if not token or token_type.lower() != "bearer":
                return ProviderFailure("unavailable", "no answer: the token endpoint gave no token")
            lifetime_s = expires_in if isinstance(expires_in, int) and expires_in > 0 else 0
            margin_s = min(self._token_refresh_margin_s, lifetime_s / 2)
            self._token = token
            self._token_due = asked_at + lifetime_s - margin_s
            return token

    def _forget_token(self, token: str) -> None:
        """Drop ``token`` (if it is still the cached one) after PayPal refused it."""
        with self._token_lock:
            if self._token == token:
                self._token = None

    def _send(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        headers: Mapping[str, str],
        content: bytes | None = None,
        form: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> _Reply | ProviderFailure:
        """One HTTP exchange within ``timeout_s`` and ``response_bytes_max``."""
        deadline = time.monotonic() + self._timeout_s
        answer = exchange(self._client, method, self._base_url + path,
                          bytes_max=self._response_bytes_max, timeout_s=self._timeout_s,
                          deadline=deadline,
                          headers={**headers, "Accept-Encoding": "identity"}, content=content,
                          data=form, auth=auth, timeout=self._timeout)
        if isinstance(answer, ProviderFailure):
            return answer
        status_code, body = answer
        return _Reply(status_code, parse_json(body))



def _item_state(item: object, batch_id: str) -> PayoutState:
    """Map one batch item to a :class:`PayoutState` (see the module docstring)."""
    raw = _text(item, "transaction_status") or "PENDING"
    status = ITEM_STATUS_MAP.get(raw, PayoutStatus.PENDING)
    detail = f"PayPal transaction_status {raw}"
    error_name = _text(item, "errors", "name")
    if error_name:
        detail += f" ({error_name})"
    return PayoutState(status, batch_id, _clip(detail))


def _create_failure(reply: _Reply) -> ProviderFailure:
    """Classify a create answer that neither accepted nor deduplicated the payout."""
    code = reply.status_code
    if _HTTP_CLIENT_ERROR_MIN <= code < _HTTP_SERVER_ERROR_MIN and (
            code not in _RETRYABLE_CLIENT_ERRORS
            and _text(reply.body, "name") not in _UNDECIDED_ERROR_NAMES):
        return ProviderFailure("rejected", _describe_error(reply))
    return ProviderFailure("unavailable", "no answer: " + _describe_error(reply))


def _batch_state(
    request: PayoutRequest, batch_id: str, body: object,
) -> PayoutState | ProviderFailure:
    """Map a batch's answer to this payout's state (``unavailable`` if it is another payout's)."""
    sender_batch_id = _text(body, "batch_header", "sender_batch_header", "sender_batch_id")
    if sender_batch_id is not None and sender_batch_id != request.idempotency_key:
        return ProviderFailure(
            "unavailable",
            _clip(f"batch {batch_id} belongs to sender_batch_id {sender_batch_id!r}, "
                  f"not {request.idempotency_key!r}"))
    items = _objects(body, "items")
    for item in items:
        if _text(item, "payout_item", "sender_item_id") == request.payout_id:
            return _item_state(item, batch_id)
    if items:
        return ProviderFailure(
            "unavailable",
            _clip(f"batch {batch_id} holds no item for payout {request.payout_id!r}: "
                  "its sender_batch_id was used for another payout"))
    batch_status = _text(body, "batch_header", "batch_status") or "?"
    if batch_status == "DENIED":
        return PayoutState(PayoutStatus.DENIED, batch_id, "batch DENIED")
    return PayoutState(PayoutStatus.PENDING, batch_id, _clip(f"batch {batch_status}, no item yet"))
