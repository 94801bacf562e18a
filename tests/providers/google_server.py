"""A local Google Play Android Developer API (v3) server for tests, on Google's wire protocol.

Endpoints: ``GET /androidpublisher/v3/applications/{packageName}/purchases/products/{productId}/
tokens/{token}`` (a ``ProductPurchase``), ``POST …/tokens/{token}:acknowledge`` (an empty 200;
the purchase's ``acknowledgementState`` becomes 1), ``POST …/tokens/{token}:consume`` (an empty
200; ``consumptionState`` and ``acknowledgementState`` become 1) and
``GET /androidpublisher/v3/applications/{packageName}/purchases/voidedpurchases``
(``startTime``, ``maxResults``, ``token`` pagination).
Every call needs ``Authorization: Bearer <access_token>`` (401 otherwise).

Errors use Google's envelope ``{"error": {"code", "message", "status", "errors": [{"message",
"domain", "reason", "location", "locationType"}]}}`` with the reasons seen from the real API:
a token of another package is 400 ``purchaseTokenDoesNotMatchPackageName``, of another product
400 ``purchaseTokenDoesNotMatchProductId``, an unknown token 404 ``purchaseTokenNotFound``.
Consuming a purchase that is consumed already, or that is not purchased (pending or canceled),
is 400 ``productNotOwnedByUser`` as Google answers: the buyer no longer owns (or never owned) it.
int64 fields (``purchaseTimeMillis``, ``voidedTimeMillis``) are JSON strings, as Google sends them.

Test controls: :meth:`GooglePlayServer.add_purchase`, :meth:`~GooglePlayServer.set_state`,
:meth:`~GooglePlayServer.void`, :meth:`~GooglePlayServer.fail_next` (the next N requests answer a
5xx before doing anything). Records: :attr:`~GooglePlayServer.acknowledgements` (tokens in the
order they were acknowledged, each time the endpoint accepted one),
:attr:`~GooglePlayServer.consumptions` (likewise for consumptions) and
:attr:`~GooglePlayServer.requests`.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

from local_server import LocalServer

ACCESS_TOKEN_DEFAULT = "ya29.giftflow-test-token"  # noqa: S105 - a test fixture's credential
_PURCHASE_PATH = re.compile(
    r"^/androidpublisher/v3/applications/(?P<package>[^/]+)/purchases/products/"
    r"(?P<product>[^/]+)/tokens/(?P<token>[^/:]+)(?::(?P<action>acknowledge|consume))?$")
_VOIDED_PATH = re.compile(
    r"^/androidpublisher/v3/applications/(?P<package>[^/]+)/purchases/voidedpurchases$")


@dataclass
class Purchase:
    """One one-time product purchase as Google stores it."""

    token: str
    package: str
    product_id: str
    order_id: str
    account_id: str
    purchase_state: int = 0
    acknowledgement_state: int = 0
    consumption_state: int = 0
    purchase_time_ms: int = 1_767_225_600_000
    region_code: str = "US"
    quantity: int | None = None
    purchase_type: int | None = None

    def as_json(self) -> dict[str, object]:
        """The ``ProductPurchase`` resource."""
        body: dict[str, object] = {
            "kind": "androidpublisher#productPurchase",
            "purchaseTimeMillis": str(self.purchase_time_ms),
            "purchaseState": self.purchase_state,
            "consumptionState": self.consumption_state,
            "developerPayload": "",
            "orderId": self.order_id,
            "acknowledgementState": self.acknowledgement_state,
            "productId": self.product_id,
            "regionCode": self.region_code,
            "obfuscatedExternalAccountId": self.account_id,
        }
        if self.quantity is not None:
            body["quantity"] = self.quantity
        if self.purchase_type is not None:
            body["purchaseType"] = self.purchase_type
        return body


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None


@dataclass
class _State:
    purchases: dict[str, Purchase] = field(default_factory=dict)
    voided: list[dict[str, object]] = field(default_factory=list)
    acknowledgements: list[str] = field(default_factory=list)
    consumptions: list[str] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)


class GooglePlayServer(LocalServer):
    """The server, run in a thread on 127.0.0.1; use it as a context manager."""

    def __init__(self, access_token: str = ACCESS_TOKEN_DEFAULT) -> None:
        self.access_token = access_token
        self._state = _State()
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._http.daemon_threads = True
        self._http.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,),
                                        daemon=True)

    def start(self) -> Self:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._http.shutdown()
        self._http.server_close()

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:<port>``)."""
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- test controls ----------------------------------------------------------------------------

    def add_purchase(self, token: str, *, package: str, product_id: str, account_id: str,
                     order_id: str | None = None, **fields: int | str | None) -> Purchase:
        """Store a purchase (purchased, unacknowledged unless ``fields`` say otherwise)."""
        with self._lock:
            number = len(self._state.purchases) + 1
            purchase = Purchase(token, package, product_id,
                                order_id or f"GPA.3372-4101-{number:04d}-00000", account_id)
            for name, value in fields.items():
                setattr(purchase, name, value)
            self._state.purchases[token] = purchase
        return purchase

    def set_state(self, token: str, purchase_state: int) -> None:
        """Move a purchase to 0 (purchased), 1 (canceled) or 2 (pending)."""
        with self._lock:
            self._state.purchases[token].purchase_state = purchase_state

    def void(self, token: str, voided_time_ms: int, *, reason: int = 1, source: int = 0) -> None:
        """Void a purchase (a refund by default): it appears in the voided purchases list."""
        with self._lock:
            purchase = self._state.purchases[token]
            purchase.purchase_state = 1
            self._state.voided.append({
                "kind": "androidpublisher#voidedPurchase",
                "purchaseToken": token,
                "purchaseTimeMillis": str(purchase.purchase_time_ms),
                "voidedTimeMillis": str(voided_time_ms),
                "orderId": purchase.order_id,
                "voidedSource": source,
                "voidedReason": reason,
            })

    def fail_next(self, count: int = 1, *, status: int = 503, path_suffix: str = "") -> None:
        """The next ``count`` requests (whose path ends with ``path_suffix``, when given, such as
        ``":consume"``) answer ``status`` without doing anything.
        """
        with self._lock:
            self._state.failures.extend([(status, path_suffix)] * count)

    def purchase(self, token: str) -> Purchase:
        """A stored purchase."""
        with self._lock:
            return self._state.purchases[token]

    @property
    def acknowledgements(self) -> list[str]:
        """Tokens acknowledged, in order."""
        with self._lock:
            return list(self._state.acknowledgements)

    @property
    def consumptions(self) -> list[str]:
        """Tokens consumed, in order."""
        with self._lock:
            return list(self._state.consumptions)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order."""
        with self._lock:
            return list(self._state.requests)

    # -- the API ----------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str,
               authorization: str | None) -> tuple[int, dict[str, object] | None]:
        """Answer one request: status and JSON body."""
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query)
        with self._lock:
            self._state.requests.append(RecordedRequest(method, parts.path, query,
                                                        authorization))
            failure = next((f for f in self._state.failures if parts.path.endswith(f[1])), None)
            if failure is not None:
                self._state.failures.remove(failure)
                return failure[0], _error(failure[0], "backendError", "Backend Error")
            if authorization != f"Bearer {self.access_token}":
                return 401, _error(401, "authError", "Invalid Credentials", "UNAUTHENTICATED")
            purchase_match = _PURCHASE_PATH.match(parts.path)
            if purchase_match:
                return self._purchase(method, purchase_match)
            voided_match = _VOIDED_PATH.match(parts.path)
            if voided_match and method == "GET":
                return self._voided(unquote(voided_match["package"]), query)
        return 404, _error(404, "notFound", "Not Found", "NOT_FOUND")

    def _purchase(self, method: str,
                  match: re.Match[str]) -> tuple[int, dict[str, object] | None]:
        package, product = unquote(match["package"]), unquote(match["product"])
        token, action = unquote(match["token"]), match["action"]
        if (method == "POST") != bool(action):
            return 404, _error(404, "notFound", "Not Found", "NOT_FOUND")
        purchase = self._state.purchases.get(token)
        if purchase is None:
            return 404, _error(404, "purchaseTokenNotFound", "The purchase token was not found.",
                               "NOT_FOUND")
        if purchase.package != package:
            return 400, _error(400, "purchaseTokenDoesNotMatchPackageName",
                               "The purchase token does not match the package name.")
        if purchase.product_id != product:
            return 400, _error(400, "purchaseTokenDoesNotMatchProductId",
                               "The purchase token does not match the product ID.")
        if action is None:
            return 200, purchase.as_json()
        return self._act(purchase, action)

    def _act(self, purchase: Purchase, action: str) -> tuple[int, dict[str, object] | None]:
        """``:acknowledge`` or ``:consume`` a purchase of the right package and product."""
        if action == "consume":
            if purchase.consumption_state == 1 or purchase.purchase_state != 0:
                return 400, _error(400, "productNotOwnedByUser",
                                   "The product purchase is not owned by the user.")
            purchase.consumption_state = 1
            purchase.acknowledgement_state = 1
            self._state.consumptions.append(purchase.token)
            return 200, None
        purchase.acknowledgement_state = 1
        self._state.acknowledgements.append(purchase.token)
        return 200, None

    def _voided(self, package: str,
                query: dict[str, list[str]]) -> tuple[int, dict[str, object] | None]:
        start = int(query.get("startTime", ["0"])[0])
        size = int(query.get("maxResults", ["1000"])[0])
        offset = int(query.get("token", ["0"])[0])
        matching = [v for v in self._state.voided
                    if self._state.purchases[str(v["purchaseToken"])].package == package
                    and int(str(v["voidedTimeMillis"])) >= start]
        page = matching[offset:offset + size]
        body: dict[str, object] = {}
        if page:
            body["voidedPurchases"] = page
            body["pageInfo"] = {"totalResults": len(matching), "resultPerPage": size,
                                "startIndex": offset}
        if offset + size < len(matching):
            body["tokenPagination"] = {"nextPageToken": str(offset + size)}
        return 200, body


def _error(code: int, reason: str, message: str,
           status: str = "INVALID_ARGUMENT") -> dict[str, object]:
    return {"error": {"code": code, "message": message, "status": status, "errors": [
        {"message": message, "domain": "androidpublisher", "reason": reason,
         "location": "token", "locationType": "parameter"}]}}


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the owning :class:`GooglePlayServer`."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        """Stay quiet."""

    def do_GET(self) -> None:
        """Serve a GET."""
        self._serve("GET")

    def do_POST(self) -> None:
        """Serve a POST (its body is read and ignored)."""
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._serve("POST")

    def _serve(self, method: str) -> None:
        owner: GooglePlayServer = self.server.owner  # type: ignore[attr-defined]
        status, body = owner.handle(method, self.path, self.headers.get("Authorization"))
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
