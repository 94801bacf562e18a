"""A local PayPal server for tests: OAuth2 and the Payouts batch API, on PayPal's wire protocol.

Endpoints: ``POST /v1/oauth2/token`` (HTTP basic auth with the client id and secret, form
``grant_type=client_credentials``; a wrong pair is 401 ``invalid_client``), ``POST
/v1/payments/payouts`` and ``GET /v1/payments/payouts/{payout_batch_id}``. API calls need
``Authorization: Bearer <token>`` with a token this server issued and that has not expired (401
``AUTHENTICATION_FAILURE`` otherwise).

Batch semantics as PayPal documents them: a ``sender_batch_id`` is taken once; a second create
with it is HTTP 400 ``USER_BUSINESS_ERROR`` whose details carry the issue
``SENDER_BATCH_ID_ALREADY_USED`` and whose ``links`` hold a HATEOAS link to the original batch.
With :attr:`PayPalServer.replay_request_ids` on, a create repeating a ``PayPal-Request-Id``
instead gets the original 201 back (PayPal's general idempotency rule). Validation failures are
400 ``VALIDATION_ERROR`` (amount strings are parsed exactly: at most the currency's decimals, none
for JPY/HUF/TWD). Items start ``PENDING``; tests move them with :meth:`PayPalServer.set_status`.

Test controls: :meth:`~PayPalServer.fail_next` (the next N matching requests answer 503 before
doing anything), :meth:`~PayPalServer.hang_next` (the next N run, then hold their answer past a
client's timeout), :meth:`~PayPalServer.drop_next` (the next N run, then close the connection
without an answer: "did it arrive?"), :meth:`~PayPalServer.reject_next_create`,
:meth:`~PayPalServer.pad_next` (oversize answers), :meth:`~PayPalServer.expire_tokens`. Records:
:attr:`~PayPalServer.payouts` (every payout actually created), :attr:`~PayPalServer.requests`.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, Self
from urllib.parse import parse_qsl, urlsplit

from local_server import LocalServer

CLIENT_ID_DEFAULT = "giftflow-client"
CLIENT_SECRET_DEFAULT = "giftflow-secret"  # noqa: S105 - a test fixture's credential
CURRENCY_DECIMALS = {"USD": 2, "EUR": 2, "GBP": 2, "CAD": 2, "AUD": 2, "JPY": 0, "HUF": 0,
                     "TWD": 0}
SENDER_BATCH_ID_CHARS_MAX = 256
SENDER_ITEM_ID_CHARS_MAX = 63
REQUEST_BYTES_MAX = 65_536
INFORMATION_LINK = "https://developer.paypal.com/docs/api/payments.payouts-batch/#errors"
FINAL_BATCH_ITEM_STATUSES = frozenset(
    {"SUCCESS", "FAILED", "DENIED", "RETURNED", "REVERSED", "REFUNDED", "BLOCKED"})
TRANSITIONS: dict[str, frozenset[str]] = {
    "PENDING": frozenset({"SUCCESS", "FAILED", "DENIED", "UNCLAIMED", "ONHOLD", "BLOCKED"}),
    "ONHOLD": frozenset({"SUCCESS", "FAILED", "DENIED", "BLOCKED"}),
    "UNCLAIMED": frozenset({"SUCCESS", "RETURNED"}),
    "SUCCESS": frozenset({"RETURNED", "REVERSED", "REFUNDED"}),
}
"""Which item ``transaction_status`` may follow which; anything else is a test bug."""

Endpoint = Literal["any", "token", "create", "get"]
_BATCH_PATH = re.compile(r"^/v1/payments/payouts/(?P<id>[^/]+)$")
_ID_ALPHABET = string.ascii_uppercase + string.digits



def _new_id() -> str:
    """A PayPal-looking id: 13 upper-case letters and digits."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(13))


def parse_amount(value: object, currency: str) -> int | None:
    """PayPal's decimal string as integer minor units, or ``None`` if PayPal would refuse it."""
    decimals = CURRENCY_DECIMALS.get(currency)
    if decimals is None or not isinstance(value, str):
        return None
    pattern = r"(0|[1-9][0-9]*)" + (rf"(?:\.([0-9]{{1,{decimals}}}))?" if decimals else "")
    match = re.fullmatch(pattern, value)
    if match is None:
        return None
    fraction = (match.group(2) or "") if decimals else ""
    return int(match.group(1)) * 10**decimals + int(fraction.ljust(decimals, "0") or "0")


@dataclass
class Payout:
    """One payout item this server created: the money it would move."""

    payout_batch_id: str
    sender_batch_id: str
    payout_item_id: str
    sender_item_id: str
    receiver: str
    value: str
    currency: str
    amount_minor: int
    note: str
    email_subject: str
    status: str = "PENDING"
    history: list[str] = field(default_factory=lambda: ["PENDING"])


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it, and what it answered (0: no answer)."""

    method: str
    path: str
    endpoint: Endpoint
    status: int
    paypal_request_id: str | None


@dataclass
class _Fault:
    """A pending injected fault for the next ``count`` requests to ``endpoint``."""

    kind: Literal["fail", "hang", "drop", "pad"]
    endpoint: Endpoint
    count: int
    status: int = 503
    seconds: float = 0.0
    pad_bytes: int = 0


class PayPalServer(LocalServer):
    """The server; use as a context manager, or call :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        *,
        client_id: str = CLIENT_ID_DEFAULT,
        client_secret: str = CLIENT_SECRET_DEFAULT,
        token_ttl_s: int = 32_400,
        replay_request_ids: bool = False,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl_s = token_ttl_s
        self.replay_request_ids = replay_request_ids
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._tokens: dict[str, float] = {}
        self._batches: dict[str, Payout] = {}
        self._by_sender_batch_id: dict[str, str] = {}
        self._replies_by_request_id: dict[str, str] = {}
        self._payouts: list[Payout] = []
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._rejections: list[tuple[int, str, str]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen on a free local port in a background thread."""
        handler = type("_BoundHandler", (_Handler,), {"paypal": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
            name="paypal-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; held answers are released at once."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- test controls -------------------------------------------------------------------------

    def fail_next(self, count: int = 1, *, status: int = 503, endpoint: Endpoint = "any") -> None:
        """The next ``count`` requests to ``endpoint`` answer ``status`` before doing anything."""
        self._add_fault(_Fault("fail", endpoint, count, status=status))

    def hang_next(self, count: int = 1, *, seconds: float, endpoint: Endpoint = "any") -> None:
        """The next ``count`` requests to ``endpoint`` run, then wait ``seconds`` to answer."""
        self._add_fault(_Fault("hang", endpoint, count, seconds=seconds))

    def drop_next(self, count: int = 1, *, endpoint: Endpoint = "any") -> None:
        """The next ``count`` requests run, then the connection closes without an answer."""
        self._add_fault(_Fault("drop", endpoint, count))

    def pad_next(self, count: int = 1, *, pad_bytes: int, endpoint: Endpoint = "any") -> None:
        """The next ``count`` answers get ``pad_bytes`` of trailing whitespace (still JSON)."""
        self._add_fault(_Fault("pad", endpoint, count, pad_bytes=pad_bytes))

    def reject_next_create(
        self, *, http_status: int = 422, name: str = "INSUFFICIENT_FUNDS",
        message: str = "Sender does not have sufficient funds.",
    ) -> None:
        """The next create that passes validation is refused with this error; nothing is paid."""
        with self._lock:
            self._rejections.append((http_status, name, message))

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (the next API call gets 401)."""
        with self._lock:
            self._tokens.clear()

    def set_status(self, sender_batch_id: str, status: str) -> None:
        """Move the batch's item to ``status``, as PayPal's processing would."""
        with self._lock:
            payout = self._batches[self._by_sender_batch_id[sender_batch_id]]
            if status not in TRANSITIONS.get(payout.status, frozenset()):
                raise ValueError(f"PayPal does not move an item from {payout.status} to {status}")
            payout.status = status
            payout.history.append(status)

    # -- records -------------------------------------------------------------------------------

    @property
    def payouts(self) -> list[Payout]:
        """Every payout created, in order (a copy of the list)."""
        with self._lock:
            return list(self._payouts)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order (a copy of the list)."""
        with self._lock:
            return list(self._requests)

    def count(self, endpoint: Endpoint) -> int:
        """How many requests reached ``endpoint``."""
        return sum(1 for request in self.requests if request.endpoint == endpoint)

    def batch_id_of(self, sender_batch_id: str) -> str:
        """The ``payout_batch_id`` created for ``sender_batch_id``."""
        with self._lock:
            return self._by_sender_batch_id[sender_batch_id]

    # -- internals -----------------------------------------------------------------------------

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_faults(self, endpoint: Endpoint) -> list[_Fault]:
        """The faults that apply to this request (one of each kind), consuming one use each."""
        taken: list[_Fault] = []
        with self._lock:
            for fault in self._faults:
                if fault.count > 0 and fault.endpoint in {"any", endpoint} and all(
                        other.kind != fault.kind for other in taken):
                    fault.count -= 1
                    taken.append(fault)
            self._faults = [fault for fault in self._faults if fault.count > 0]
        return taken

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _issue_token(self) -> dict[str, object]:
        token = "A21AA" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_ttl_s
        return {
            "scope": "https://uri.paypal.com/services/payments/payouts",
            "access_token": token,
            "token_type": "Bearer",
            "app_id": "APP-LOCAL",
            "expires_in": self.token_ttl_s,
            "nonce": secrets.token_hex(8),
        }

    def _token_valid(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        with self._lock:
            expires_at = self._tokens.get(authorization.removeprefix("Bearer "))
        return expires_at is not None and time.monotonic() < expires_at

    def _batch_links(self, batch_id: str, base_url: str) -> list[dict[str, str]]:
        return [{"href": f"{base_url}/v1/payments/payouts/{batch_id}", "rel": "self",
                 "method": "GET", "encType": "application/json"}]

    def _batch_status(self, payout: Payout) -> str:
        if payout.status == "DENIED":
            return "DENIED"
        return "SUCCESS" if payout.status in FINAL_BATCH_ITEM_STATUSES else "PENDING"

    def _create(
        self, body: object, request_id: str | None, base_url: str,
    ) -> tuple[int, dict[str, object]]:
        problems = _validate_create(body)
        if problems:
            return 400, _error("VALIDATION_ERROR", "Invalid request - see details", problems)
        assert isinstance(body, dict)
        header, item = body["sender_batch_header"], body["items"][0]
        sender_batch_id = header["sender_batch_id"]
        with self._lock:
            if self.replay_request_ids and request_id in self._replies_by_request_id:
                batch_id = self._replies_by_request_id[request_id]
                return 201, self._created_reply(self._batches[batch_id], base_url)
            if sender_batch_id in self._by_sender_batch_id:
                batch_id = self._by_sender_batch_id[sender_batch_id]
                reply = _error("USER_BUSINESS_ERROR", "User business error.", [{
                    "field": "SENDER_BATCH_ID", "location": "body",
                    "issue": "SENDER_BATCH_ID_ALREADY_USED",
                    "description": "Batch with given sender_batch_id already exists",
                }])
                reply["links"] = self._batch_links(batch_id, base_url)
                return 400, reply
            if self._rejections:
                http_status, name, message = self._rejections.pop(0)
                return http_status, _error(name, message, [])
            currency = item["amount"]["currency"]
            payout = Payout(
                payout_batch_id=_new_id(), sender_batch_id=sender_batch_id,
                payout_item_id=_new_id(), sender_item_id=item["sender_item_id"],
                receiver=item["receiver"], value=item["amount"]["value"], currency=currency,
                amount_minor=parse_amount(item["amount"]["value"], currency) or 0,
                note=item.get("note", ""), email_subject=header.get("email_subject", ""))
            self._batches[payout.payout_batch_id] = payout
            self._by_sender_batch_id[sender_batch_id] = payout.payout_batch_id
            if request_id:
                self._replies_by_request_id[request_id] = payout.payout_batch_id
            self._payouts.append(payout)
            return 201, self._created_reply(payout, base_url)

    def _created_reply(self, payout: Payout, base_url: str) -> dict[str, object]:
        return {
            "batch_header": {
                "sender_batch_header": {"sender_batch_id": payout.sender_batch_id,
                                        "email_subject": payout.email_subject},
                "payout_batch_id": payout.payout_batch_id,
                "batch_status": "PENDING",
            },
            "links": self._batch_links(payout.payout_batch_id, base_url),
        }

    def _show(self, batch_id: str, base_url: str) -> tuple[int, dict[str, object]]:
        with self._lock:
            payout = self._batches.get(batch_id)
            if payout is None:
                return 404, _error("INVALID_RESOURCE_ID", "Requested resource ID was not found.",
                                   [])
            amount = {"currency": payout.currency, "value": payout.value}
            item: dict[str, object] = {
                "payout_item_id": payout.payout_item_id,
                "transaction_status": payout.status,
                "payout_batch_id": payout.payout_batch_id,
                "payout_item": {"recipient_type": "EMAIL", "amount": amount,
                                "note": payout.note, "receiver": payout.receiver,
                                "sender_item_id": payout.sender_item_id},
                "links": [{"href": f"{base_url}/v1/payments/payouts-item/"
                                   f"{payout.payout_item_id}",
                           "rel": "item", "method": "GET", "encType": "application/json"}],
            }
            if payout.status == "UNCLAIMED":
                item["errors"] = {"name": "RECEIVER_UNREGISTERED",
                                  "message": "Receiver is unregistered",
                                  "information_link": INFORMATION_LINK}
            return 200, {
                "batch_header": {
                    "payout_batch_id": payout.payout_batch_id,
                    "batch_status": self._batch_status(payout),
                    "sender_batch_header": {"sender_batch_id": payout.sender_batch_id,
                                            "email_subject": payout.email_subject},
                    "amount": amount,
                    "fees": {"currency": payout.currency, "value": "0"},
                },
                "items": [item],
                "links": self._batch_links(payout.payout_batch_id, base_url),
            }


def _error(name: str, message: str, details: list[dict[str, str]]) -> dict[str, object]:
    return {"name": name, "message": message, "debug_id": secrets.token_hex(6),
            "information_link": INFORMATION_LINK, "details": details, "links": []}


def _validate_create(body: object) -> list[dict[str, str]]:  # noqa: C901, PLR0911
    """PayPal's validation of a create-batch body (one item), as ``details`` entries."""

    def problem(field_name: str, issue: str) -> list[dict[str, str]]:
        return [{"field": field_name, "location": "body", "issue": issue}]

    if not isinstance(body, dict):
        return problem("body", "The request body is not a JSON object.")
    header = body.get("sender_batch_header")
    items = body.get("items")
    if not isinstance(header, dict):
        return problem("sender_batch_header", "Required field is missing.")
    sender_batch_id = header.get("sender_batch_id")
    if not isinstance(sender_batch_id, str) or not (
            0 < len(sender_batch_id) <= SENDER_BATCH_ID_CHARS_MAX):
        return problem("sender_batch_header.sender_batch_id", "Invalid sender_batch_id.")
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
        return problem("items", "This server takes exactly one item per batch.")
    item = items[0]
    recipient_type = item.get("recipient_type", header.get("recipient_type"))
    if recipient_type != "EMAIL":
        return problem("items[0].recipient_type", "Recipient type is invalid.")
    receiver = item.get("receiver")
    if not isinstance(receiver, str) or re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", receiver) is None:
        return problem("items[0].receiver", "Receiver is invalid or does not match with type")
    sender_item_id = item.get("sender_item_id")
    if not isinstance(sender_item_id, str) or len(sender_item_id) > SENDER_ITEM_ID_CHARS_MAX:
        return problem("items[0].sender_item_id", "Invalid sender_item_id.")
    amount = item.get("amount")
    if not isinstance(amount, dict):
        return problem("items[0].amount", "Required field is missing.")
    currency = amount.get("currency")
    if not isinstance(currency, str) or currency not in CURRENCY_DECIMALS:
        return problem("items[0].amount.currency", "Currency is not supported.")
    minor = parse_amount(amount.get("value"), currency)
    if minor is None:
        return problem("items[0].amount.value", "Amount value is not a valid decimal for "
                       f"{currency}.")
    if minor <= 0:
        return problem("items[0].amount.value", "Amount must be positive.")
    return []


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to the :class:`PayPalServer` bound as ``paypal``."""

    paypal: PayPalServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        """Keep test output quiet."""

    def do_GET(self) -> None:
        """Show a batch."""
        self._handle("GET")

    def do_POST(self) -> None:
        """Issue a token or create a batch."""
        self._handle("POST")

    def _base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _handle(self, method: str) -> None:
        path = urlsplit(self.path).path
        endpoint: Endpoint = "any"
        if method == "POST" and path == "/v1/oauth2/token":
            endpoint = "token"
        elif method == "POST" and path == "/v1/payments/payouts":
            endpoint = "create"
        elif method == "GET" and _BATCH_PATH.match(path):
            endpoint = "get"
        length = int(self.headers.get("Content-Length") or 0)
        if length > REQUEST_BYTES_MAX:
            self._answer(method, path, endpoint, 413, {"name": "REQUEST_TOO_LARGE"})
            return
        raw = self.rfile.read(length) if length else b""
        faults = {fault.kind: fault for fault in self.paypal._take_faults(endpoint)}
        if "fail" in faults:
            self._answer(method, path, endpoint, faults["fail"].status,
                         _error("SERVICE_UNAVAILABLE", "Service Unavailable.", []))
            return
        status, reply = self._route(method, path, endpoint, raw)
        if "hang" in faults:
            self.paypal._wait(faults["hang"].seconds)
        if "drop" in faults:
            self.paypal._record(RecordedRequest(
                method, path, endpoint, 0, self.headers.get("PayPal-Request-Id")))
            self.close_connection = True
            return
        pad = faults["pad"].pad_bytes if "pad" in faults else 0
        self._answer(method, path, endpoint, status, reply, pad_bytes=pad)

    def _route(
        self, method: str, path: str, endpoint: Endpoint, raw: bytes,
    ) -> tuple[int, dict[str, object]]:
        paypal = self.paypal
        if endpoint == "token":
            return self._token(raw)
        if endpoint == "any":
            return 404, _error("NOT_FOUND", f"No route for {method} {path}.", [])
        if not paypal._token_valid(self.headers.get("Authorization")):
            return 401, {"name": "AUTHENTICATION_FAILURE",
                         "message": "Authentication failed due to invalid authentication "
                                    "credentials or a missing Authorization header.",
                         "links": [{"href": "https://developer.paypal.com/docs/api/overview/"
                                            "#error", "rel": "information_link"}]}
        if endpoint == "create":
            try:
                body = json.loads(raw)
            except ValueError:
                return 400, _error("MALFORMED_REQUEST", "Request body is not JSON.", [])
            return paypal._create(body, self.headers.get("PayPal-Request-Id"), self._base_url())
        match = _BATCH_PATH.match(path)
        assert match is not None
        return paypal._show(match.group("id"), self._base_url())

    def _token(self, raw: bytes) -> tuple[int, dict[str, object]]:
        expected = base64.b64encode(
            f"{self.paypal.client_id}:{self.paypal.client_secret}".encode()).decode()
        form = dict(parse_qsl(raw.decode("latin-1")))
        if self.headers.get("Authorization") != f"Basic {expected}":
            return 401, {"error": "invalid_client",
                         "error_description": "Client Authentication failed"}
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type",
                         "error_description": "Grant Type is NULL"}
        return 200, self.paypal._issue_token()

    def _answer(
        self, method: str, path: str, endpoint: Endpoint, status: int, reply: dict[str, object],
        *, pad_bytes: int = 0,
    ) -> None:
        self.paypal._record(RecordedRequest(
            method, path, endpoint, status, self.headers.get("PayPal-Request-Id")))
        payload = json.dumps(reply).encode() + b" " * pad_bytes
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Paypal-Debug-Id", secrets.token_hex(6))
        self.end_headers()
        self.wfile.write(payload)
