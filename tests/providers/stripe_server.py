"""A local Stripe API server for tests: the transfer endpoints, on Stripe's own wire protocol.

The official ``stripe`` package talks to it unchanged (``base_addresses={"api": server.url}``):
form-encoded POST bodies with bracketed keys (``metadata[payout_id]=…``), ``Authorization:
Bearer <key>`` (401 ``invalid_request_error`` on a wrong key), JSON bodies and Stripe's error
shape ``{"error": {"type", "message", "code", "param"}}``.

Idempotency follows Stripe's documented rules for POST requests: the first request under an
``Idempotency-Key`` that reaches the endpoint stores its status and body, and a later request with
the same key and the same parameters gets that stored answer back (header ``Idempotent-Replayed:
true``), even when it was a 500; the same key with different parameters is a 400
``idempotency_error``. Requests refused before the endpoint runs (authentication, validation,
injected front-end failures) store nothing.

Endpoints: ``POST /v1/transfers``, ``GET /v1/transfers/{id}``, ``GET /v1/transfers`` (filters
``transfer_group``, ``destination``; ``limit``), ``POST /v1/transfers/{id}/reversals``.

Test controls: :meth:`StripeServer.fail_next` (the next N requests answer 500, either in front of
the API, or after the endpoint ran, as a lost response would look), :meth:`StripeServer.hang_next`
(the next N requests run, then hold their answer longer than a client's timeout), and the records
:attr:`StripeServer.transfers` and :attr:`StripeServer.requests`.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from local_server import LocalServer

API_KEY_DEFAULT = "sk_test_giftflow_local"
CURRENCIES = frozenset({"usd", "eur", "gbp", "cad", "aud", "jpy", "chf", "sek", "nok", "dkk"})
TRANSFER_FIELDS = frozenset(
    {"amount", "currency", "destination", "transfer_group", "metadata", "description", "expand"}
)
REVERSAL_FIELDS = frozenset(
    {"amount", "metadata", "description", "expand", "refund_application_fee"}
)
LIST_LIMIT_MAX = 100
_TRANSFER_PATH = re.compile(r"^/v1/transfers/(?P<id>[^/]+)$")
_REVERSALS_PATH = re.compile(r"^/v1/transfers/(?P<id>[^/]+)/reversals$")

Params = dict[str, Any]



@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    params: Params
    idempotency_key: str | None


@dataclass
class _Answer:
    status: int
    body: Params
    replayed: bool = False


class StripeApiError(Exception):
    """An error answer in Stripe's shape (raised inside the server only)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.answer = _Answer(status, _error_body(message, error_type, code, param))


@dataclass
class _Controls:
    fail_count: int = 0
    fail_status: int = 500
    fail_after_commit: bool = False
    hang_count: int = 0
    hang_seconds: float = 0.0


@dataclass
class _State:
    transfers: dict[str, Params] = field(default_factory=dict)
    idempotent: dict[str, tuple[str, str, Params, _Answer]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    controls: _Controls = field(default_factory=_Controls)


def _error_body(message: str, error_type: str, code: str | None, param: str | None) -> Params:
    error: Params = {"type": error_type, "message": message}
    if code is not None:
        error["code"] = code
    if param is not None:
        error["param"] = param
    return {"error": error}


def decode_form(pairs: list[tuple[str, str]]) -> Params:
    """Stripe's form encoding: ``a[b]=v`` nests a dict, ``a[]=v`` and ``a[0]=v`` build lists."""
    decoded: Params = {}
    for key, value in pairs:
        match = re.fullmatch(r"(?P<name>[^\[\]]+)(?:\[(?P<sub>[^\[\]]*)\])?", key)
        if match is None:
            raise StripeApiError(400, f"Invalid parameter name: {key}", param=key)
        name, sub = match["name"], match["sub"]
        if sub is None:
            decoded[name] = value
        elif sub == "" or sub.isdigit():
            decoded.setdefault(name, []).append(value)
        else:
            decoded.setdefault(name, {})[sub] = value
    return decoded


def _positive_int(params: Params, name: str) -> int:
    raw = params.get(name)
    if not isinstance(raw, str) or not raw.isdigit():
        raise StripeApiError(400, f"Invalid integer: {raw}", param=name)
    value = int(raw)
    if value <= 0:
        raise StripeApiError(400, "This value must be greater than or equal to 1.", param=name)
    return value


def _unknown(params: Params, allowed: frozenset[str]) -> None:
    for name in params:
        if name not in allowed:
            raise StripeApiError(400, f"Received unknown parameter: {name}", param=name)


def _metadata(params: Params) -> dict[str, str]:
    metadata = params.get("metadata", {})
    if metadata == "":
        return {}
    if not isinstance(metadata, dict):
        raise StripeApiError(400, "Invalid object", param="metadata")
    return dict(metadata)


class StripeServer(LocalServer):
    """The server; start it with ``with StripeServer() as server:`` (or :meth:`start`).

    ``accounts`` are the connected accounts (``acct_…``) that transfers may go to.
    """

    def __init__(
        self,
        api_key: str = API_KEY_DEFAULT,
        accounts: tuple[str, ...] = ("acct_creator_one", "acct_creator_two"),
    ) -> None:
        self.api_key = api_key
        self.accounts = set(accounts)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._state = _State()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._http.daemon_threads = True
        self._http.block_on_close = False
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """The base address to give the ``stripe`` client (``http://127.0.0.1:<port>``)."""
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release any request held by :meth:`hang_next`."""
        self._stopping.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)


    # Test controls and records.

    def fail_next(self, count: int, status: int = 500, *, after_commit: bool = False) -> None:
        """Answer the next ``count`` requests with ``status`` (an ``api_error``).

        ``after_commit=False``: the failure is in front of the API, so nothing runs or is stored.
        ``after_commit=True``: the endpoint runs (a transfer is created) and the failure is what
        gets stored under the idempotency key, as Stripe stores 500s.
        """
        with self._lock:
            self._state.controls.fail_count = count
            self._state.controls.fail_status = status
            self._state.controls.fail_after_commit = after_commit

    def hang_next(self, count: int, seconds: float) -> None:
        """Let the next ``count`` requests run, then hold each answer for ``seconds``."""
        with self._lock:
            self._state.controls.hang_count = count
            self._state.controls.hang_seconds = seconds

    @property
    def transfers(self) -> list[Params]:
        """Every transfer created, oldest first (copies)."""
        with self._lock:
            return copy.deepcopy(list(self._state.transfers.values()))

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order."""
        with self._lock:
            return list(self._state.requests)

    def transfer(self, transfer_id: str) -> Params:
        """One transfer as stored (a copy)."""
        with self._lock:
            return copy.deepcopy(self._state.transfers[transfer_id])

    # Request handling (called from the handler threads).

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[_Answer, float]:
        """Answer one request; also returns how long to hold the answer, in seconds."""
        split = urlsplit(target)
        pairs = parse_qsl(split.query if method == "GET" else body.decode(), keep_blank_values=True)
        key = headers.get("idempotency-key") if method == "POST" else None
        with self._lock:
            try:
                params = decode_form(pairs)
            except StripeApiError as error:
                return error.answer, 0.0
            self._state.requests.append(RecordedRequest(method, split.path, params, key))
            controls = self._state.controls
            hold_s = 0.0
            if controls.hang_count > 0:
                controls.hang_count -= 1
                hold_s = controls.hang_seconds
            fail = controls.fail_count > 0
            if fail:
                controls.fail_count -= 1
                if not controls.fail_after_commit:
                    return self._injected_failure(), hold_s
            return self._answer(method, split.path, params, headers, key, fail=fail), hold_s

    def _injected_failure(self) -> _Answer:
        controls = self._state.controls
        return _Answer(
            controls.fail_status,
            _error_body("An unknown error occurred (injected).", "api_error", None, None),
        )

    def _answer(
        self,
        method: str,
        path: str,
        params: Params,
        headers: dict[str, str],
        key: str | None,
        *,
        fail: bool,
    ) -> _Answer:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            given = headers.get("authorization", "").removeprefix("Bearer ")
            return _Answer(
                401,
                _error_body(
                    f"Invalid API Key provided: {given[:8]}****", "invalid_request_error",
                    None, None,
                ),
            )
        if key is not None and key in self._state.idempotent:
            first_method, first_path, first_params, answer = self._state.idempotent[key]
            if (first_method, first_path, first_params) != (method, path, params):
                return _Answer(
                    400,
                    _error_body(
                        "Keys for idempotent requests can only be used with the same parameters "
                        f"they were first used with. Try using a key other than '{key}' if you "
                        "meant to execute a different request.",
                        "idempotency_error", None, None,
                    ),
                )
            return _Answer(answer.status, answer.body, replayed=True)
        try:
            answer = self._route(method, path, params)
        except StripeApiError as error:
            return error.answer  # refused before the endpoint ran: nothing stored
        if fail:
            answer = self._injected_failure()
        if key is not None:
            self._state.idempotent[key] = (method, path, params, answer)
        return answer

    def _route(self, method: str, path: str, params: Params) -> _Answer:
        if method == "POST" and path == "/v1/transfers":
            return _Answer(200, self._create_transfer(params))
        if method == "GET" and path == "/v1/transfers":
            return _Answer(200, self._list_transfers(params))
        if method == "GET" and (match := _TRANSFER_PATH.match(path)):
            return _Answer(200, copy.deepcopy(self._find(match["id"])))
        if method == "POST" and (match := _REVERSALS_PATH.match(path)):
            return _Answer(200, self._reverse(match["id"], params))
        raise StripeApiError(
            404, f"Unrecognized request URL ({method}: {path}).", code="resource_missing"
        )

    def _find(self, transfer_id: str) -> Params:
        transfer = self._state.transfers.get(transfer_id)
        if transfer is None:
            raise StripeApiError(
                404, f"No such transfer: '{transfer_id}'", code="resource_missing", param="id"
            )
        return transfer

    def _create_transfer(self, params: Params) -> Params:
        _unknown(params, TRANSFER_FIELDS)
        amount = _positive_int(params, "amount")
        currency = str(params.get("currency", "")).lower()
        if currency not in CURRENCIES:
            raise StripeApiError(400, f"Invalid currency: {currency}", param="currency")
        destination = params.get("destination")
        if not isinstance(destination, str) or destination not in self.accounts:
            raise StripeApiError(
                400, f"No such destination: '{destination}'", code="resource_missing",
                param="destination",
            )
        transfer_id = f"tr_{uuid.uuid4().hex[:24]}"
        transfer: Params = {
            "id": transfer_id,
            "object": "transfer",
            "amount": amount,
            "amount_reversed": 0,
            "balance_transaction": f"txn_{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "currency": currency,
            "description": params.get("description"),
            "destination": destination,
            "destination_payment": f"py_{uuid.uuid4().hex[:24]}",
            "livemode": False,
            "metadata": _metadata(params),
            "reversals": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/transfers/{transfer_id}/reversals",
            },
            "reversed": False,
            "source_transaction": None,
            "source_type": "card",
            "transfer_group": params.get("transfer_group"),
        }
        self._state.transfers[transfer_id] = transfer
        return copy.deepcopy(transfer)

    def _list_transfers(self, params: Params) -> Params:
        _unknown(params, frozenset({"transfer_group", "destination", "limit", "expand"}))
        limit = _positive_int(params, "limit") if "limit" in params else 10
        if limit > LIST_LIMIT_MAX:
            raise StripeApiError(
                400, "This value must be less than or equal to 100.", param="limit"
            )
        found = [
            transfer
            for transfer in reversed(self._state.transfers.values())  # newest first
            if all(
                transfer[name] == params[name]
                for name in ("transfer_group", "destination")
                if name in params
            )
        ]
        return {
            "object": "list",
            "data": copy.deepcopy(found[:limit]),
            "has_more": len(found) > limit,
            "url": "/v1/transfers",
        }

    def _reverse(self, transfer_id: str, params: Params) -> Params:
        _unknown(params, REVERSAL_FIELDS)
        transfer = self._find(transfer_id)
        remaining = transfer["amount"] - transfer["amount_reversed"]
        amount = _positive_int(params, "amount") if "amount" in params else remaining
        if amount > remaining or remaining == 0:
            raise StripeApiError(
                400,
                f"Transfer {transfer_id} has only {remaining} left to reverse.",
                param="amount",
            )
        reversal: Params = {
            "id": f"trr_{uuid.uuid4().hex[:24]}",
            "object": "transfer_reversal",
            "amount": amount,
            "balance_transaction": f"txn_{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "currency": transfer["currency"],
            "destination_payment_refund": f"pyr_{uuid.uuid4().hex[:24]}",
            "metadata": _metadata(params),
            "source_refund": None,
            "transfer": transfer_id,
        }
        transfer["amount_reversed"] += amount
        transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
        transfer["reversals"]["data"].insert(0, reversal)
        transfer["reversals"]["total_count"] += 1
        return copy.deepcopy(reversal)

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early when the server stops."""
        self._stopping.wait(seconds)


def _handler_for(server: StripeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """Hands each request to the :class:`StripeServer` and writes its answer."""

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            answer, hold_s = server.handle(method, self.path, headers, body)
            if hold_s > 0:
                server.wait(hold_s)
            payload = json.dumps(answer.body).encode()
            try:
                self.send_response(answer.status, HTTPStatus(answer.status).phrase)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Request-Id", f"req_{uuid.uuid4().hex[:14]}")
                if headers.get("idempotency-key"):
                    self.send_header("Idempotency-Key", headers["idempotency-key"])
                if answer.replayed:
                    self.send_header("Idempotent-Replayed", "true")
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a timeout test)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base signature)
            """Keep test output quiet."""

    return Handler
