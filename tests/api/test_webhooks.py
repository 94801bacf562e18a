"""Outbound webhooks: signatures, fan-out, retries with backoff, the delivery log, redelivery.

Each test runs on SQLite and PostgreSQL, against a local HTTP receiver, with a clock the test
moves (so backoff never sleeps).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from economy_env import EconomyEnv, build_env

from giftflow.adapters.sql.store import SqlStore
from giftflow.api.webhooks import (
    DELIVERY_ID_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TOPIC_HEADER,
    SecretCipher,
    WebhookDispatcher,
    WebhookOptions,
    generate_secret,
    sign,
    verify_signature,
)
from giftflow.ledger import Failure

SECRET = "whsec_test_secret_0123456789"  # noqa: S105 -- a test secret


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A local HTTP server that records every POST and fails the next ``failures`` with 500."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """The receiver's base URL."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail_next(self, count: int) -> None:
        """Answer the next ``count`` requests with 500."""
        with self.lock:
            self.failures = count


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A running receiver on a free port."""
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            found = state["receiver"]
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with found.lock:
                found.requests.append(Received(self.path, dict(self.headers.items()), body))
                failing = found.failures > 0
                found.failures -= int(failing)
            self.send_response(500 if failing else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["receiver"] = found = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def env(store: SqlStore) -> EconomyEnv:
    """An economy in demo mode over the test's store, on a clock the test moves."""
    return build_env(store)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """An HTTP client that ignores proxy settings of the environment."""
    with httpx.Client(trust_env=False) as client:
        yield client


def dispatcher_of(env: EconomyEnv, http: httpx.Client, **options: Any) -> WebhookDispatcher:
    """A dispatcher over the economy's store and clock."""
    return WebhookDispatcher(env.store, http, env.clock, WebhookOptions(**options),
                             cipher=SecretCipher(SecretCipher.generate_key()))


def register(dispatcher: WebhookDispatcher, url: str, *topics: str,
             platform: str = "acme") -> int:
    """Register an endpoint and return its id."""
    endpoint_id = dispatcher.register(platform, url, SECRET, topics)
    assert isinstance(endpoint_id, int), endpoint_id
    return endpoint_id


def emit(env: EconomyEnv, topic: str, subject: str = "user:1", **payload: Any) -> None:
    """Write one outbox row through the economy's row gateway."""
    with env.store.economy_tx() as tx:
        env.service.emit(tx, topic, subject, payload)
        tx.commit()


def purchase(env: EconomyEnv, user_id: str = "viewer-1") -> None:
    """A viewer buys a pack through the simulator (which emits ``purchase_completed``)."""
    env.viewer(user_id)
    assert env.buy(user_id).ok


def settle(env: EconomyEnv, dispatcher: WebhookDispatcher, rounds: int = 20) -> None:
    """Deliver until nothing is pending, moving the clock past each backoff."""
    for _ in range(rounds):
        dispatcher.deliver_due()
        env.clock.advance(ms=3_600_000)


# -- signatures -----------------------------------------------------------------------------------


def test_signature_verifies_only_with_the_right_secret_and_a_fresh_timestamp() -> None:
    """A signature verifies with its secret within the tolerance, and fails with another secret,
    a stale or future timestamp, an altered body, or a malformed header.
    """
    body = b'{"id":"evt_1"}'
    header = sign(SECRET, body, 1_000_000)
    assert header.startswith("t=1000000,v1=")
    assert verify_signature(SECRET, header, body, 300, 1_000_000)
    assert verify_signature(SECRET, header, body, 300, 1_000_300)
    assert not verify_signature("whsec_another_secret_012345", header, body, 300, 1_000_000)
    assert not verify_signature(SECRET, header, body, 300, 1_000_301)
    assert not verify_signature(SECRET, header, body, 300, 999_699)
    assert not verify_signature(SECRET, header, b'{"id":"evt_2"}', 300, 1_000_000)
    for bad in ("", "v1=abc", "t=abc," + header.split(",")[1], "t=1000000", "x" * 2000):
        assert not verify_signature(SECRET, bad, body, 300, 1_000_000)
    rotated = f"{header},v1={'0' * 64}"
    assert verify_signature(SECRET, rotated, body, 300, 1_000_000)


def test_a_purchase_is_delivered_signed(env: EconomyEnv, receiver: Receiver,
                                        http: httpx.Client) -> None:
    """A completed purchase reaches the subscribed endpoint as one signed POST whose signature
    verifies with the endpoint's secret, carrying the event id, topic and delivery id.
    """
    dispatcher = dispatcher_of(env, http)
    endpoint_id = register(dispatcher, receiver.url + "/hooks", "purchase_completed")
    purchase(env)
    assert dispatcher.fan_out().deliveries == 1
    run = dispatcher.deliver_due()
    assert (run.delivered, run.retrying, run.failed) == (1, 0, 0)
    [request] = receiver.requests
    assert request.path == "/hooks"
    now_s = env.clock() // 1000
    assert verify_signature(SECRET, request.headers[SIGNATURE_HEADER], request.body, 300, now_s)
    assert not verify_signature(generate_secret(), request.headers[SIGNATURE_HEADER],
                                request.body, 300, now_s)
    body = orjson.loads(request.body)
    assert body["topic"] == "purchase_completed"
    assert request.headers[TOPIC_HEADER] == "purchase_completed"
    assert request.headers[EVENT_ID_HEADER] == body["id"]
    [delivery] = dispatcher.deliveries(endpoint_id)
    assert request.headers[DELIVERY_ID_HEADER] == str(delivery.id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 204)
    assert delivery.delivered_at_ms == env.clock()


def test_secrets_are_stored_encrypted(env: EconomyEnv, receiver: Receiver,
                                      http: httpx.Client) -> None:
    """The endpoint's secret is not stored in clear, and the endpoint view never shows it."""
    dispatcher = dispatcher_of(env, http)
    endpoint_id = register(dispatcher, receiver.url, "purchase_completed")
    [row] = env.store.read("webhook_endpoints", {"id": endpoint_id})
    assert SECRET.encode() not in bytes(row["secret_encrypted"])
    endpoint = dispatcher.endpoint(endpoint_id)
    assert endpoint is not None and SECRET not in repr(endpoint)
    assert dispatcher.endpoints("acme") == [endpoint]
    assert dispatcher.endpoints("other") == []


def test_register_refuses_bad_endpoints(env: EconomyEnv, http: httpx.Client) -> None:
    """Registration refuses a bad URL, a short secret or bad topics as validation errors, and
    ``https_only`` refuses plain HTTP.
    """
    dispatcher = dispatcher_of(env, http)
    for url, secret, topics in (("ftp://x.example/h", SECRET, ["purchase_completed"]),
                                ("not a url", SECRET, ["purchase_completed"]),
                                ("https://x.example/h", "short", ["purchase_completed"]),
                                ("https://x.example/h", SECRET, []),
                                ("https://x.example/h", SECRET, ["Bad Topic"])):
        refused = dispatcher.register("acme", url, secret, topics)
        assert isinstance(refused, Failure) and refused.code == "validation_error", url
    strict = dispatcher_of(env, http, https_only=True)
    refused = strict.register("acme", "http://x.example/h", SECRET, ["purchase_completed"])
    assert isinstance(refused, Failure)
    assert isinstance(strict.register("acme", "https://x.example/h", SECRET,
                                      ["purchase_completed"]), int)


# -- retries --------------------------------------------------------------------------------------


def test_a_failing_receiver_gets_the_event_on_the_fourth_try(
        env: EconomyEnv, receiver: Receiver, http: httpx.Client) -> None:
    """After three 500s the delivery waits about 1 s, 2 s, then 4 s (±10 %), is not sent before
    it is due, and is delivered on the fourth attempt; its attempts are logged.
    """
    dispatcher = dispatcher_of(env, http)
    endpoint_id = register(dispatcher, receiver.url, "payout_paid")
    emit(env, "payout_paid", payout="p-1")
    dispatcher.fan_out()
    receiver.fail_next(3)
    for failures in (1, 2, 3):
        assert dispatcher.deliver_due().retrying == 1
        [delivery] = dispatcher.deliveries(endpoint_id)
        wait_ms = delivery.next_attempt_at_ms - env.clock()
        base_ms = 1000 * 2 ** (failures - 1)
        assert base_ms * 0.9 <= wait_ms <= base_ms * 1.1, (failures, wait_ms)
        assert (delivery.status, delivery.attempts) == ("pending", failures)
        assert (delivery.last_status_code, delivery.last_error) == (500, "HTTP 500")
        env.clock.advance(ms=wait_ms - 1)
        assert dispatcher.deliver_due().delivered == 0
        assert len(receiver.requests) == failures
        env.clock.advance(ms=1)
    assert dispatcher.deliver_due().delivered == 1
    assert len(receiver.requests) == 4
    assert len({r.headers[EVENT_ID_HEADER] for r in receiver.requests}) == 1
    [delivery] = dispatcher.deliveries(endpoint_id)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("delivered", 4, "")
    attempts = dispatcher.attempts(delivery.id)
    assert [(a.number, a.status_code) for a in attempts] == [
        (4, 204), (3, 500), (2, 500), (1, 500)]


def test_after_attempts_max_failures_the_delivery_is_failed(
        env: EconomyEnv, receiver: Receiver, http: httpx.Client) -> None:
    """A receiver that keeps failing gets ``attempts_max`` attempts, then the delivery is
    ``failed`` and is not sent again.
    """
    dispatcher = dispatcher_of(env, http, attempts_max=3)
    endpoint_id = register(dispatcher, receiver.url, "payout_failed")
    emit(env, "payout_failed", payout="p-1")
    dispatcher.fan_out()
    receiver.fail_next(100)
    settle(env, dispatcher)
    assert len(receiver.requests) == 3
    [delivery] = dispatcher.deliveries(endpoint_id)
    assert (delivery.status, delivery.attempts) == ("failed", 3)


def test_an_unreachable_endpoint_counts_as_a_failed_attempt(env: EconomyEnv,
                                                            http: httpx.Client) -> None:
    """A connection error is recorded as a failed attempt with the error named, then retried."""
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    dispatcher = dispatcher_of(env, http, timeout_s=2.0)
    endpoint_id = register(dispatcher, f"http://127.0.0.1:{port}/h", "account_frozen")
    emit(env, "account_frozen", user="user:1")
    dispatcher.fan_out()
    assert dispatcher.deliver_due().retrying == 1
    [delivery] = dispatcher.deliveries(endpoint_id)
    assert delivery.status == "pending" and delivery.last_status_code is None
    assert "ConnectError" in delivery.last_error


# -- redelivery and the log -----------------------------------------------------------------------


def test_redelivery_sends_delivered_and_failed_deliveries_again(
        env: EconomyEnv, receiver: Receiver, http: httpx.Client) -> None:
    """Redelivering a delivered or a failed delivery sends the same event again now, with a
    fresh retry budget; an unknown delivery is ``not_found``.
    """
    dispatcher = dispatcher_of(env, http, attempts_max=2)
    endpoint_id = register(dispatcher, receiver.url, "gift_reversed", "payout_paid")
    emit(env, "gift_reversed", gift=1)
    dispatcher.fan_out()
    receiver.fail_next(2)
    settle(env, dispatcher)
    emit(env, "payout_paid", payout="p-1")
    dispatcher.fan_out()
    settle(env, dispatcher)
    statuses = {d.topic: d for d in dispatcher.deliveries(endpoint_id)}
    assert statuses["gift_reversed"].status == "failed"
    assert statuses["payout_paid"].status == "delivered"
    assert len(receiver.requests) == 3
    for delivery in statuses.values():
        again = dispatcher.redeliver(delivery.id)
        assert not isinstance(again, Failure) and again.status == "pending"
    assert dispatcher.deliver_due().delivered == 2
    assert len(receiver.requests) == 5
    sent = [r.headers[EVENT_ID_HEADER] for r in receiver.requests[3:]]
    assert sorted(sent) == sorted(d.event_id for d in statuses.values())
    after = {d.topic: d for d in dispatcher.deliveries(endpoint_id)}
    assert after["gift_reversed"].attempts == 3
    assert after["payout_paid"].attempts == 2
    assert all(d.status == "delivered" for d in after.values())
    missing = dispatcher.redeliver(123)
    assert isinstance(missing, Failure) and missing.code == "not_found"


def test_the_delivery_log_pages_newest_first(env: EconomyEnv, receiver: Receiver,
                                             http: httpx.Client) -> None:
    """The delivery log lists an endpoint's deliveries newest first, in bounded pages."""
    dispatcher = dispatcher_of(env, http, log_page_max=2)
    endpoint_id = register(dispatcher, receiver.url, "payout_paid")
    for n in range(5):
        emit(env, "payout_paid", payout=f"p-{n}")
    assert dispatcher.fan_out().deliveries == 5
    first = dispatcher.deliveries(endpoint_id, limit=50)
    assert len(first) == 2
    pages = [first]
    while pages[-1]:
        pages.append(dispatcher.deliveries(endpoint_id, before_id=pages[-1][-1].id))
    ids = [d.id for page in pages for d in page]
    assert len(ids) == 5 and ids == sorted(ids, reverse=True)
    payouts = [orjson.loads(d.body)["data"]["payout"] for page in pages for d in page]
    assert payouts == ["p-4", "p-3", "p-2", "p-1", "p-0"]


# -- fan-out --------------------------------------------------------------------------------------


def test_fan_out_takes_each_outbox_row_once_and_only_to_its_topics(
        env: EconomyEnv, receiver: Receiver, http: httpx.Client) -> None:
    """Fan-out creates one delivery per subscribed endpoint for each new outbox row; running it
    again creates none; later rows are picked up; an endpoint gets only its topics and only
    events written since it was registered.
    """
    dispatcher = dispatcher_of(env, http)
    emit(env, "purchase_completed", order="before-any-endpoint")
    env.clock.advance(ms=1)
    buyers = register(dispatcher, receiver.url + "/buyers", "purchase_completed")
    payouts = register(dispatcher, receiver.url + "/payouts", "payout_paid", "gift_reversed")
    purchase(env)
    emit(env, "payout_paid", payout="p-1")
    emit(env, "account_frozen", user="user:1")
    done = dispatcher.fan_out()
    assert done.deliveries == 2 and done.events >= 4
    again = dispatcher.fan_out()
    assert (again.events, again.deliveries) == (0, 0)
    assert [d.topic for d in dispatcher.deliveries(buyers)] == ["purchase_completed"]
    assert [d.topic for d in dispatcher.deliveries(payouts)] == ["payout_paid"]
    emit(env, "gift_reversed", gift=7)
    assert dispatcher.fan_out().deliveries == 1
    assert dispatcher.fan_out().deliveries == 0
    assert [d.topic for d in dispatcher.deliveries(payouts)] == ["gift_reversed", "payout_paid"]
    env.clock.advance(ms=1)
    late = register(dispatcher, receiver.url + "/late", "purchase_completed")
    assert dispatcher.deliveries(late) == []
    assert dispatcher.deliver_due().delivered == 3
    assert sorted(r.path for r in receiver.requests) == ["/buyers", "/payouts", "/payouts"]


def test_fan_out_is_bounded_per_call(env: EconomyEnv, receiver: Receiver,
                                     http: httpx.Client) -> None:
    """Fan-out takes at most its page of outbox rows per call, and the rest on later calls."""
    dispatcher = dispatcher_of(env, http, fan_out_page_max=3)
    endpoint_id = register(dispatcher, receiver.url, "payout_paid")
    for n in range(7):
        emit(env, "payout_paid", payout=f"p-{n}")
    assert [dispatcher.fan_out(limit=10).deliveries for _ in range(4)] == [3, 3, 1, 0]
    assert len(dispatcher.deliveries(endpoint_id)) == 7


def test_a_disabled_endpoint_gets_no_new_deliveries(env: EconomyEnv, receiver: Receiver,
                                                    http: httpx.Client) -> None:
    """A disabled endpoint is skipped by fan-out; disabling an unknown one is ``not_found``."""
    dispatcher = dispatcher_of(env, http)
    endpoint_id = register(dispatcher, receiver.url, "payout_paid")
    assert dispatcher.set_disabled(endpoint_id, True) is None
    emit(env, "payout_paid", payout="p-1")
    assert dispatcher.fan_out().deliveries == 0
    missing = dispatcher.set_disabled(999, True)
    assert isinstance(missing, Failure) and missing.code == "not_found"
