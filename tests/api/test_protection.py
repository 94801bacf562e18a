"""Request ids, rate limits, JSON logs, metrics and readiness, over HTTP and as bare ASGI."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from litestar import Litestar, Request, get
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from giftflow.api import protection
from giftflow.api.app import Services, create_app
from giftflow.api.protection import (
    ObserveMiddleware,
    RateLimitMiddleware,
    RequestIdMiddleware,
    TokenBuckets,
    configure_logging,
    current_request_id,
    key_id_of,
)

BENCH_REQUESTS = 10_000


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Every log record as a JSON line in a buffer, at DEBUG; the root logger restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging(logging.DEBUG, buffer)
    try:
        yield buffer
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


# -- request ids -------------------------------------------------------------------------------


def test_a_request_id_is_echoed_or_made(client: TestClient) -> None:  # type: ignore[type-arg]
    """A well-formed ``X-Request-Id`` comes back as sent; without one, or with one too long or
    with unsafe characters, the answer carries a fresh id, different for each request.
    """
    assert client.get("/healthz", headers={"X-Request-Id": "abc-123.Z:9"}).headers[
        "x-request-id"] == "abc-123.Z:9"
    made = {client.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3
    assert all(made)
    for bad in (b"x" * 129, b"a b", b"<script>", "é".encode()):
        answer = client.get("/healthz", headers={"X-Request-Id": bad})
        assert answer.headers["x-request-id"].encode() not in (bad, b"")
    refused = client.get("/v1/ledgers", headers={"X-Request-Id": "on-a-401"})
    assert refused.status_code == 401
    assert refused.headers["x-request-id"] == "on-a-401"


def test_handlers_see_the_request_id() -> None:
    """A handler reads the id from ``request.state`` and from the context variable, and a
    handler run in a thread sees it too.
    """

    @get("/in-loop", sync_to_thread=False)
    def in_loop(request: Request[Any, Any, Any]) -> dict[str, str]:
        return {"state": request.state.request_id, "context": current_request_id()}

    @get("/in-thread", sync_to_thread=True)
    def in_thread() -> dict[str, str]:
        return {"context": current_request_id()}

    app = Litestar([in_loop, in_thread], middleware=[RequestIdMiddleware])
    with TestClient(app) as client:
        assert client.get("/in-loop", headers={"X-Request-Id": "r1"}).json() == {
            "state": "r1", "context": "r1"}
        assert client.get("/in-thread", headers={"X-Request-Id": "r2"}).json() == {
            "context": "r2"}
    assert current_request_id() == ""


# -- rate limits -------------------------------------------------------------------------------


def test_key_ids_are_read_without_the_secret() -> None:
    """The key id is the twelve characters after ``gf_``; anything else is no key."""

    def scope(value: bytes) -> dict[str, Any]:
        return {"headers": [(b"host", b"x"), (b"authorization", value)]}

    secret = b"A" * 43
    assert key_id_of(scope(b"Bearer gf_abcdef012345_" + secret)) == b"abcdef012345"
    assert key_id_of(scope(b"bearer  gf_abcdef012345_" + secret)) == b"abcdef012345"
    assert key_id_of(scope(b"Basic gf_abcdef012345_" + secret)) is None
    assert key_id_of(scope(b"Bearer gf_abc_" + secret)) is None
    assert key_id_of(scope(b"Bearer gf_10.0.0.1:80_" + secret)) is None
    assert key_id_of({"headers": []}) is None


def test_an_over_limit_key_is_refused_while_another_key_is_not(services: Services) -> None:
    """With a burst of three, a key's fourth request at once is 429 ``rate_limited`` with
    ``Retry-After`` and a request id; another key, and the probes, still get through.
    """
    services = replace(services, rate_requests_per_s=0.01, rate_burst_requests=3)
    noisy = {"Authorization": f"Bearer {services.access.create_key('admin')}"}
    quiet = {"Authorization": f"Bearer {services.access.create_key('admin')}"}
    with TestClient(app=create_app(services)) as client:
        assert [client.get("/v1/ledgers", headers=noisy).status_code
                for _ in range(3)] == [200, 200, 200]
        refused = client.get("/v1/ledgers", headers=noisy)
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "rate_limited"
        assert refused.json()["status"] == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 100
        assert refused.headers["x-request-id"]
        assert client.post("/v1/users", headers=noisy, json={}).status_code == 429
        assert client.get("/v1/ledgers", headers=quiet).status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


def test_requests_without_a_key_are_limited_by_address(services: Services) -> None:
    """Without a key the client address has the bucket: its third request is 429, and a
    request with a key from the same address is not.
    """
    services = replace(services, rate_requests_per_s=0.01, rate_burst_requests=2)
    key = {"Authorization": f"Bearer {services.access.create_key('admin')}"}
    with TestClient(app=create_app(services)) as client:
        assert [client.get("/v1/ledgers").status_code for _ in range(3)] == [401, 401, 429]
        assert client.get("/v1/ledgers", headers=key).status_code == 200


def test_buckets_refill_and_stay_bounded() -> None:
    """A bucket refills at the rate up to the burst, says how long to wait when empty, and
    the least recently used bucket goes when there are too many.
    """
    now = [0.0]
    buckets = TokenBuckets(rate_requests_per_s=2.0, burst_requests=2, buckets_max=3,
                           clock=lambda: now[0])
    assert [buckets.take(b"a") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take(b"a") == pytest.approx(0.5)
    now[0] = 0.5
    assert buckets.take(b"a") == 0.0
    assert buckets.take(b"a") > 0.0
    now[0] = 100.0
    assert [buckets.take(b"a") for _ in range(3)][2] > 0.0
    for caller in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        buckets.take(caller)
    assert len(buckets) == 3
    assert buckets.take(b"a") == 0.0
    with pytest.raises(ValueError, match="positive"):
        TokenBuckets(rate_requests_per_s=0.0)


# -- logs --------------------------------------------------------------------------------------


def test_logs_are_json_lines_without_secrets(
        client: TestClient, services: Services,  # type: ignore[type-arg]
        json_logs: io.StringIO) -> None:
    """Each request logs one JSON line with method, route, status, duration, request id and
    key id; neither a key nor its secret, nor a TOTP code, ever appears, even when a caller
    logs a key by mistake or sends a wrong secret.
    """
    key = services.access.create_key("admin")
    key_id = key[3:15]
    secret = key[16:]  # "gf_" + 12-character id + "_" + secret (which may itself hold "_")
    headers = {"Authorization": f"Bearer {key}", "X-Request-Id": "log-1"}
    assert client.get("/v1/ledgers", headers=headers).status_code == 200
    client.get("/v1/users/nobody/wallet", headers=headers)
    client.post("/v1/payouts", headers=headers,
                json={"creator_id": "nobody", "diamonds": 5, "method": "bank",
                      "totp": "987654"})
    wrong = f"gf_{key_id}_{'B' * 43}"
    assert client.get("/v1/ledgers",
                      headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    logging.getLogger("giftflow.test").warning("oops %s", headers["Authorization"])
    logging.getLogger("giftflow.test").warning("oops", extra={"totp": "987654", "key": key})
    text = json_logs.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines
    for forbidden in (key, secret, wrong, "B" * 43, "987654"):
        assert forbidden not in text
    access = [line for line in lines if line["logger"] == "giftflow.access"]
    first = next(line for line in access if line["route"] == "/v1/ledgers")
    assert first["method"] == "GET"
    assert first["status"] == 200
    assert first["request_id"] == "log-1"
    assert first["key_id"] == key_id
    assert first["duration_ms"] >= 0
    assert {line["status"] for line in access} >= {200, 401, 404}


# -- metrics and health ------------------------------------------------------------------------


def _count(client: TestClient, route: str, status: str) -> float:  # type: ignore[type-arg]
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if (sample.name == "giftflow_http_requests_total"
                    and sample.labels == {"method": "GET", "route": route, "status": status}):
                return sample.value
    return 0.0


def test_metrics_count_requests(client: TestClient,  # type: ignore[type-arg]
                                admin: dict[str, str]) -> None:
    """``/metrics`` counts requests by method, route and status, times them, and shows the
    gift queue depth from the hook; ``/metrics`` and ``/readyz`` stay out of the OpenAPI.
    """
    before = _count(client, "/v1/ledgers", "200")
    for _ in range(2):
        client.get("/v1/ledgers", headers=admin)
    client.get("/v1/ledgers")
    assert _count(client, "/v1/ledgers", "200") == before + 2
    assert _count(client, "/v1/ledgers", "401") >= 1
    protection.watch_gift_queue(lambda: 7.0)
    try:
        text = client.get("/metrics").text
    finally:
        protection.watch_gift_queue(lambda: 0.0)
    assert "giftflow_gift_queue_depth 7.0" in text
    assert 'giftflow_http_request_duration_seconds_count{method="GET",route="/v1/ledgers"}' in text
    paths = client.get("/openapi.json").json()["paths"]
    assert "/metrics" not in paths
    assert "/readyz" not in paths


def test_readiness_follows_the_store(client: TestClient, services: Services,  # type: ignore[type-arg]
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``/readyz`` is 200 while the store answers and 503 ``not_ready`` when it fails."""
    assert client.get("/readyz").status_code == 200
    assert client.get("/readyz").json() == {"status": "ready"}

    def broken() -> None:
        raise ConnectionError("the database is gone")

    monkeypatch.setattr(services.economy.ledger.store, "ledgers", broken)
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == "not_ready"


# -- overhead ----------------------------------------------------------------------------------


async def _trivial(scope: Any, receive: Any, send: Any) -> None:
    del scope, receive
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _per_request_us(app: Any) -> float:
    scope: dict[str, Any] = {
        "type": "http", "method": "GET", "path": "/v1/ledgers", "path_template": "/v1/ledgers",
        "client": ("10.0.0.1", 5000), "app": SimpleNamespace(state={}),
        "headers": [(b"host", b"api"), (b"user-agent", b"bench"), (b"accept", b"*/*"),
                    (b"authorization", b"Bearer gf_abcdef012345_" + b"A" * 43)]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        del message

    async def run() -> float:
        for _ in range(500):
            await app(dict(scope), receive, send)
        started = time.perf_counter()
        for _ in range(BENCH_REQUESTS):
            await app(dict(scope), receive, send)
        return (time.perf_counter() - started) / BENCH_REQUESTS * 1e6

    return min(asyncio.run(run()) for _ in range(3))


def _stack(app: Any) -> Any:
    limited = RateLimitMiddleware(app, rate_requests_per_s=1e9, burst_requests=10**9)
    return RequestIdMiddleware(ObserveMiddleware(limited))


def test_the_middleware_costs_little(capsys: pytest.CaptureFixture[str]) -> None:
    """10,000 requests through a trivial ASGI app, bare and under the three middleware (with
    the access log off, then on as JSON): the middleware add well under 100 µs a request.
    """
    access = logging.getLogger("giftflow.access")
    bare = _per_request_us(_trivial)
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(protection.JsonFormatter())
    access.addHandler(handler)
    access.propagate = False
    try:
        access.setLevel(logging.WARNING)
        quiet = _per_request_us(_stack(_trivial))
        access.setLevel(logging.INFO)
        logged = _per_request_us(_stack(_trivial))
    finally:
        access.removeHandler(handler)
        access.setLevel(logging.NOTSET)
        access.propagate = True
    with capsys.disabled():
        print(f"\nper request: bare {bare:.2f} µs, middleware {quiet:.2f} µs "  # noqa: T201
              f"(+{quiet - bare:.2f}), with JSON access log {logged:.2f} µs "
              f"(+{logged - bare:.2f})")
    assert quiet - bare < 100.0
    assert logged - bare < 200.0
