"""Outbound webhooks to the platforms: signed, retried with backoff, logged, redeliverable.

SPEC.md §8. The economy writes events to its ``outbox`` in the same transaction as the change
they describe. :meth:`WebhookDispatcher.fan_out` turns each new outbox row into one delivery per
endpoint subscribed to its topic, and flags the row in the same transaction, so a row is fanned
out exactly once. :meth:`WebhookDispatcher.deliver_due` POSTs due deliveries, outside any
database transaction: it first leases them (moves their next attempt ``lease_ms`` ahead), so that
a concurrent dispatcher leaves them alone, then records each answer. Delivery is at least once;
receivers deduplicate on ``Giftflow-Event-Id``.

Each request carries ``Giftflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``, the HMAC of
``f"{t}.{body}"`` under the endpoint's secret (Stripe's scheme); :func:`verify_signature` checks
one. Endpoint secrets are stored encrypted with AES-256-GCM (:class:`SecretCipher`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from giftflow.economy import codes
from giftflow.economy.ports import EconomyStore, EconomyTx, Row
from giftflow.ledger import Failure
from giftflow.ledger.ports import StoreConflict

SIGNATURE_HEADER: Final = "Giftflow-Signature"
EVENT_ID_HEADER: Final = "Giftflow-Event-Id"
TOPIC_HEADER: Final = "Giftflow-Topic"
DELIVERY_ID_HEADER: Final = "Giftflow-Delivery-Id"
SIGNATURE_HEADER_CHARS_MAX: Final = 1024
"""A longer signature header is refused unread."""
SIGNATURE_TOLERANCE_S_DEFAULT: Final = 300
"""How far a signature's timestamp may be from the receiver's clock."""
SECRET_CHARS_MIN: Final = 16
SECRET_CHARS_MAX: Final = 256
COMMIT_TRIES_MAX: Final = 3
"""How often a lost race (``StoreConflict``) is retried before the work is left for next time."""

_KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16
_FORMAT_VERSION: Final = b"\x01"
_TOPIC: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")

Status = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    """Limits and retry policy; the defaults suit production."""

    attempts_max: int = 8
    """Attempts per (re)delivery before it is ``failed``."""
    backoff_base_ms: int = 1_000
    """The wait after the first failed attempt; it doubles after each further one."""
    backoff_cap_ms: int = 3_600_000
    jitter_permille: int = 100
    """Each wait is moved by up to ± this many thousandths, so that retries spread out."""
    timeout_s: float = 10.0
    """Per request: connecting, and each read or write."""
    lease_ms: int = 60_000
    """How long a claimed delivery is left alone by other dispatchers (more than a request)."""
    fan_out_page_max: int = 200
    """Outbox rows per fan-out call."""
    deliver_page_max: int = 100
    """Deliveries per ``deliver_due`` call."""
    log_page_max: int = 100
    """Rows per page of the delivery log."""
    body_bytes_max: int = 65_536
    """A larger event is not sent; its delivery fails at once with ``body_too_large``."""
    endpoints_max: int = 100
    """Endpoints in all; each outbox row is fanned out to at most this many."""
    topics_max: int = 32
    url_chars_max: int = 2_048
    error_chars_max: int = 200
    https_only: bool = False
    """Refuse ``http://`` endpoints (set it in production)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A registered endpoint (its secret is never shown)."""

    id: int
    platform: str
    url: str
    topics: tuple[str, ...]
    disabled: bool
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one endpoint: an entry of the delivery log."""

    id: int
    endpoint_id: int
    event_id: str
    topic: str
    body: str
    status: Status
    attempts: int
    next_attempt_at_ms: int
    last_status_code: int | None
    last_error: str
    created_at_ms: int
    delivered_at_ms: int | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP attempt of a delivery."""

    delivery_id: int
    number: int
    attempted_at_ms: int
    status_code: int | None
    error: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class FanOut:
    """What one :meth:`WebhookDispatcher.fan_out` call did."""

    events: int
    deliveries: int


@dataclass(frozen=True, slots=True)
class DeliveryRun:
    """What one :meth:`WebhookDispatcher.deliver_due` call did."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0


class SecretCipher:
    """Encrypts endpoint secrets with AES-256-GCM, each bound to its endpoint id.

    Stored form: ``version (1 byte) ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)``.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != _KEY_BYTES:
            raise ValueError(f"the webhook secret key must be {_KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretCipher(<key hidden>)"

    @staticmethod
    def generate_key() -> bytes:
        """A new random 256-bit key for the settings."""
        return AESGCM.generate_key(bit_length=_KEY_BYTES * 8)

    def encrypt(self, secret: str, endpoint_id: int) -> bytes:
        """The stored form of ``secret`` for ``endpoint_id``."""
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT_VERSION + nonce + self._aead.encrypt(
            nonce, secret.encode(), _associated_data(endpoint_id))

    def decrypt(self, stored: bytes, endpoint_id: int) -> str | None:
        """The secret in ``stored``; None if it is not ours (other key, endpoint, or altered)."""
        stored = bytes(stored)
        header = len(_FORMAT_VERSION) + _NONCE_BYTES
        if len(stored) <= header + _TAG_BYTES or not stored.startswith(_FORMAT_VERSION):
            return None
        try:
            plain = self._aead.decrypt(stored[1:header], stored[header:],
                                       _associated_data(endpoint_id))
        except InvalidTag:
            return None
        return plain.decode()


def _associated_data(endpoint_id: int) -> bytes:
    return f"giftflow webhook secret:{endpoint_id}".encode()


def generate_secret() -> str:
    """A new endpoint secret (``whsec_`` and 43 URL-safe characters)."""
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes, timestamp_s: int) -> str:
    """The ``Giftflow-Signature`` header value for ``body`` sent at ``timestamp_s``."""
    return f"t={timestamp_s},v1={_digest(secret, body, timestamp_s)}"


def _digest(secret: str, body: bytes, timestamp_s: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp_s}.".encode() + body,
                    hashlib.sha256).hexdigest()


def verify_signature(secret: str, header: str, body: bytes, tolerance_s: int, now_s: int) -> bool:
    """Whether ``header`` signs ``body`` with ``secret``, dated within ``tolerance_s`` of now.

    For receivers. Any ``v1`` entry may match, so that a sender can rotate secrets.
    """
    if len(header) > SIGNATURE_HEADER_CHARS_MAX:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= 12:  # noqa: PLR2004
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now_s - timestamp) > tolerance_s:
        return False
    expected = _digest(secret, body, timestamp)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def _delivery(row: Row) -> Delivery:
    return Delivery(row["id"], row["endpoint_id"], f"evt_{row['outbox_id']}", row["topic"],
                    row["payload"], row["status"], row["attempts"], row["next_attempt_at_ms"],
                    row["last_status_code"], row["last_error"], row["created_at_ms"],
                    row["delivered_at_ms"])


def _endpoint(row: Row) -> Endpoint:
    return Endpoint(row["id"], row["platform"], row["url"], tuple(row["topics"].split(",")),
                    bool(row["disabled"]), row["created_at_ms"])


def _body(event: Row) -> str:
    """The JSON body sent for an outbox row."""
    return orjson.dumps({"id": f"evt_{event['id']}", "topic": event["topic"],
                         "subject": event["subject"], "created_at_ms": event["created_at_ms"],
                         "data": orjson.loads(event["payload"])}).decode()


@dataclass(frozen=True, slots=True)
class _Outcome:
    status_code: int | None
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300  # noqa: PLR2004


class WebhookDispatcher:
    """Registers endpoints, fans outbox events out to them, delivers, logs and redelivers.

    Every call is bounded by :class:`WebhookOptions`; expected failures are returned as
    :class:`~giftflow.ledger.Failure` values. ``deliver_due`` and ``fan_out`` are meant to run
    periodically in a background task; several processes may run them at once.
    """

    def __init__(self, store: EconomyStore, http_client: httpx.Client,
                 clock_ms: Callable[[], int], options: WebhookOptions | None = None, *,
                 cipher: SecretCipher) -> None:
        self.store = store
        self.http = http_client
        self.clock_ms = clock_ms
        self.options = options or WebhookOptions()
        self.cipher = cipher

    # -- endpoints --------------------------------------------------------------------------------

    def register(self, platform: str, url: str, secret: str,
                 topics: Sequence[str]) -> int | Failure:
        """Add an endpoint of ``platform`` that receives ``topics``; returns its id."""
        problem = self._endpoint_problem(platform, url, secret, topics)
        if problem:
            return Failure(codes.VALIDATION_ERROR, problem)
        with self.store.economy_tx() as tx:
            existing = tx.rows("webhook_endpoints", {}, limit=self.options.endpoints_max)
            if len(existing) >= self.options.endpoints_max:
                return Failure(codes.VALIDATION_ERROR,
                               f"at most {self.options.endpoints_max} webhook endpoints")
            endpoint_id = tx.next_ids(1)
            tx.insert("webhook_endpoints", {
                "id": endpoint_id, "platform": platform, "url": url,
                "secret_encrypted": self.cipher.encrypt(secret, endpoint_id),
                "topics": ",".join(dict.fromkeys(topics)), "disabled": 0,
                "created_at_ms": self.clock_ms()})
            tx.commit()
        return endpoint_id

    def _endpoint_problem(self, platform: str, url: str, secret: str,
                          topics: Sequence[str]) -> str:
        options = self.options
        if not 0 < len(platform) <= 100:  # noqa: PLR2004
            return "platform must be 1..100 characters"
        problem = self._url_problem(url)
        if problem:
            return problem
        if not SECRET_CHARS_MIN <= len(secret) <= SECRET_CHARS_MAX or not secret.isascii():
            return f"secret must be {SECRET_CHARS_MIN}..{SECRET_CHARS_MAX} ASCII characters"
        if not 0 < len(topics) <= options.topics_max:
            return f"topics must name 1..{options.topics_max} topics"
        bad = [topic for topic in topics if not _TOPIC.fullmatch(topic)]
        if bad:
            return f"bad topic name {bad[0]!r}"
        return ""

    def _url_problem(self, url: str) -> str:
        if not 0 < len(url) <= self.options.url_chars_max:
            return f"url must be 1..{self.options.url_chars_max} characters"
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            return "url is not a valid URL"
        schemes = {"https"} if self.options.https_only else {"http", "https"}
        if parsed.scheme not in schemes or not parsed.host:
            return f"url must be an absolute {' or '.join(sorted(schemes))} URL"
        return ""

    def endpoint(self, endpoint_id: int) -> Endpoint | None:
        """An endpoint, if it exists (callers check that its platform is the caller's)."""
        rows = self.store.read("webhook_endpoints", {"id": endpoint_id})
        return _endpoint(rows[0]) if rows else None

    def endpoints(self, platform: str) -> list[Endpoint]:
        """The endpoints of ``platform``, oldest first."""
        rows = self.store.read("webhook_endpoints", {"platform": platform}, order_by=("id",),
                               limit=self.options.endpoints_max)
        return [_endpoint(row) for row in rows]

    def set_disabled(self, endpoint_id: int, disabled: bool) -> Failure | None:
        """Stop (or resume) fanning events out to an endpoint; its due deliveries still go."""
        with self.store.economy_tx() as tx:
            if not tx.rows("webhook_endpoints", {"id": endpoint_id}, lock=True):
                return Failure(codes.NOT_FOUND, f"no webhook endpoint {endpoint_id}")
            tx.update("webhook_endpoints", {"id": endpoint_id}, {"disabled": int(disabled)})
            tx.commit()
        return None

    # -- fan-out ----------------------------------------------------------------------------------

    def fan_out(self, limit: int | None = None) -> FanOut:
        """Turn up to ``limit`` new outbox rows into deliveries, each row exactly once.

        An endpoint receives the rows of its topics written since it was registered.
        """
        page = min(limit or self.options.fan_out_page_max, self.options.fan_out_page_max)
        for _ in range(COMMIT_TRIES_MAX):
            try:
                with self.store.economy_tx() as tx:
                    done = self._fan_out(tx, page)
                    tx.commit()
            except StoreConflict:
                continue
            return done
        return FanOut(0, 0)

    def _fan_out(self, tx: EconomyTx, page: int) -> FanOut:
        events = tx.rows("outbox", {"fanned_out": 0}, order_by=("id",), limit=page, lock=True)
        if not events:
            return FanOut(0, 0)
        endpoints = tx.rows("webhook_endpoints", {"disabled": 0}, order_by=("id",),
                            limit=self.options.endpoints_max)
        subscribers: dict[str, list[Row]] = {}
        for endpoint in endpoints:
            for topic in endpoint["topics"].split(","):
                subscribers.setdefault(topic, []).append(endpoint)
        now = self.clock_ms()
        rows: list[tuple[Any, ...]] = []
        for event in events:
            targets = [e for e in subscribers.get(event["topic"], ())
                       if e["created_at_ms"] <= event["created_at_ms"]]
            if not targets:
                continue
            body = _body(event)
            too_large = len(body.encode()) > self.options.body_bytes_max
            first = tx.next_ids(len(targets))
            rows.extend(
                (first + n, endpoint["id"], event["id"], event["topic"],
                 "" if too_large else body, "failed" if too_large else "pending", now,
                 "body_too_large" if too_large else "", now)
                for n, endpoint in enumerate(targets))
        tx.insert_many("webhook_deliveries",
                       ("id", "endpoint_id", "outbox_id", "topic", "payload", "status",
                        "next_attempt_at_ms", "last_error", "created_at_ms"), rows)
        tx.update("outbox", {"id in": [event["id"] for event in events]}, {"fanned_out": 1})
        return FanOut(len(events), len(rows))

    # -- delivery ---------------------------------------------------------------------------------

    def deliver_due(self, limit: int | None = None) -> DeliveryRun:
        """POST up to ``limit`` due deliveries and record each answer."""
        page = min(limit or self.options.deliver_page_max, self.options.deliver_page_max)
        claimed = self._claim(page)
        delivered = retrying = failed = 0
        for delivery, endpoint in claimed:
            status = self._attempt(delivery, endpoint)
            if status == "delivered":
                delivered += 1
            elif status == "failed":
                failed += 1
            else:
                retrying += 1
        return DeliveryRun(delivered, retrying, failed)

    def _claim(self, page: int) -> list[tuple[Row, Row | None]]:
        """Due deliveries with their endpoints, leased to this call."""
        for _ in range(COMMIT_TRIES_MAX):
            try:
                with self.store.economy_tx() as tx:
                    now = self.clock_ms()
                    due = tx.rows("webhook_deliveries",
                                  {"status": "pending", "next_attempt_at_ms <=": now},
                                  order_by=("next_attempt_at_ms", "id"), limit=page, lock=True)
                    if not due:
                        return []
                    endpoints = {row["id"]: row for row in tx.rows_in(
                        "webhook_endpoints", "id", sorted({d["endpoint_id"] for d in due}))}
                    tx.update("webhook_deliveries", {"id in": [d["id"] for d in due]},
                              {"next_attempt_at_ms": now + self.options.lease_ms})
                    tx.commit()
            except StoreConflict:
                continue
            return [(row, endpoints.get(row["endpoint_id"])) for row in due]
        return []

    def _attempt(self, delivery: Row, endpoint: Row | None) -> Status:
        secret = (None if endpoint is None
                  else self.cipher.decrypt(endpoint["secret_encrypted"], endpoint["id"]))
        if endpoint is None or secret is None:
            outcome = _Outcome(None, "the endpoint's secret cannot be read", 0)
        else:
            outcome = self._post(endpoint["url"], secret, delivery)
        return self._record(delivery, outcome)

    def _post(self, url: str, secret: str, delivery: Row) -> _Outcome:
        body = delivery["payload"].encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body, self.clock_ms() // 1000),
            EVENT_ID_HEADER: f"evt_{delivery['outbox_id']}",
            TOPIC_HEADER: delivery["topic"],
            DELIVERY_ID_HEADER: str(delivery["id"]),
        }
        started = time.monotonic()
        try:
            with self.http.stream("POST", url, content=body, headers=headers,
                                  timeout=self.options.timeout_s,
                                  follow_redirects=False) as response:
                status_code = response.status_code
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            message = f"{type(error).__name__}: {error}"[:self.options.error_chars_max]
            return _Outcome(None, message, _elapsed_ms(started))
        refusal = "" if 200 <= status_code < 300 else f"HTTP {status_code}"  # noqa: PLR2004
        return _Outcome(status_code, refusal, _elapsed_ms(started))

    def _record(self, delivery: Row, outcome: _Outcome) -> Status:
        """Store an attempt's answer: delivered, a retry after backoff, or failed."""
        number = delivery["attempts"] + 1
        now = self.clock_ms()
        changes: dict[str, Any] = {"attempts": number, "last_status_code": outcome.status_code,
                                   "last_error": outcome.error}
        status: Status
        if outcome.ok:
            status = "delivered"
            changes.update(status=status, delivered_at_ms=now, next_attempt_at_ms=now)
        elif number - delivery["attempts_base"] >= self.options.attempts_max:
            status = "failed"
            changes.update(status=status, next_attempt_at_ms=now)
        else:
            status = "pending"
            changes.update(next_attempt_at_ms=now + self.backoff_ms(
                number - delivery["attempts_base"]))
        for _ in range(COMMIT_TRIES_MAX):
            try:
                with self.store.economy_tx() as tx:
                    tx.insert("webhook_attempts", {
                        "delivery_id": delivery["id"], "number": number, "attempted_at_ms": now,
                        "status_code": outcome.status_code, "error": outcome.error,
                        "duration_ms": outcome.duration_ms})
                    # Unless a redelivery or another dispatcher got there first.
                    tx.update("webhook_deliveries",
                              {"id": delivery["id"], "attempts": delivery["attempts"],
                               "attempts_base": delivery["attempts_base"]}, changes)
                    tx.commit()
            except StoreConflict:
                continue
            break
        return status

    def backoff_ms(self, failures: int) -> int:
        """The wait after the ``failures``-th failed attempt in a row, jittered."""
        options = self.options
        wait = min(options.backoff_base_ms << min(failures - 1, 40), options.backoff_cap_ms)
        spread = options.jitter_permille
        return wait * (1000 - spread + secrets.randbelow(2 * spread + 1)) // 1000

    # -- log and redelivery -----------------------------------------------------------------------

    def deliveries(self, endpoint_id: int, limit: int | None = None,
                   before_id: int | None = None) -> list[Delivery]:
        """An endpoint's deliveries, newest first; pass the last id as ``before_id`` to page."""
        page = min(limit or self.options.log_page_max, self.options.log_page_max)
        where: dict[str, Any] = {"endpoint_id": endpoint_id}
        if before_id is not None:
            where["id <"] = before_id
        rows = self.store.read("webhook_deliveries", where, order_by=("id DESC",), limit=page)
        return [_delivery(row) for row in rows]

    def delivery(self, delivery_id: int) -> Delivery | None:
        """One delivery, if it exists."""
        rows = self.store.read("webhook_deliveries", {"id": delivery_id})
        return _delivery(rows[0]) if rows else None

    def attempts(self, delivery_id: int, limit: int | None = None) -> list[Attempt]:
        """A delivery's attempts, newest first."""
        page = min(limit or self.options.log_page_max, self.options.log_page_max)
        rows = self.store.read("webhook_attempts", {"delivery_id": delivery_id},
                               order_by=("number DESC",), limit=page)
        return [Attempt(r["delivery_id"], r["number"], r["attempted_at_ms"], r["status_code"],
                        r["error"], r["duration_ms"]) for r in rows]

    def redeliver(self, delivery_id: int) -> Delivery | Failure:
        """Send a delivery again now, with a fresh retry budget, whatever its status."""
        with self.store.economy_tx() as tx:
            rows = tx.rows("webhook_deliveries", {"id": delivery_id}, lock=True)
            if not rows:
                return Failure(codes.NOT_FOUND, f"no webhook delivery {delivery_id}")
            row = rows[0]
            if not row["payload"]:
                return Failure(codes.VALIDATION_ERROR, "the event is too large to send")
            changes = {"status": "pending", "next_attempt_at_ms": self.clock_ms(),
                       "attempts_base": row["attempts"]}
            tx.update("webhook_deliveries", {"id": delivery_id}, changes)
            tx.commit()
        return _delivery({**row, **changes})


def _elapsed_ms(started: float) -> int:
    return max(0, round((time.monotonic() - started) * 1000))
