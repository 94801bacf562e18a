"""What protects the service and tells how it is doing.

Request ids, rate limits, structured logs, metrics and health.

``MIDDLEWARE`` and ``ROUTES`` are added to the application by ``create_app``. The middleware are
plain ASGI callables: Litestar builds one instance of each per route, after routing, so
``scope["path_template"]`` names the route and a request to no route (404) passes none of them.
Rate-limit buckets are kept per application (in ``app.state``), shared by every route.

Request bodies are bounded by ``create_app`` itself (``request_max_body_size``, 413
``body_too_large``).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import math
import os
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import orjson
from litestar import Request, Response, get
from litestar.middleware import DefineMiddleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from giftflow.api.problems import PROBLEM_TYPE_BASE, problem

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger(__name__)
ACCESS_LOG: Final = logging.getLogger("giftflow.access")
"""One line per HTTP request, at INFO (DEBUG for the operational paths)."""

# -- settings ----------------------------------------------------------------------------------

RATE_REQUESTS_PER_S: Final = 50.0
"""Sustained requests per second of one API key (or one client address without a key)."""
RATE_BURST_REQUESTS: Final = 100
"""Requests one key may make at once, after a quiet spell (the bucket's size)."""
RATE_BUCKETS_MAX: Final = 65_536
"""Buckets kept at most; the least recently used is dropped (about 250 bytes each)."""
OPERATIONAL_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probe and scrape paths: never rate limited, and logged at DEBUG only."""
REQUEST_ID_CHARS_MAX: Final = 128
"""The longest ``X-Request-Id`` taken from a client; a longer or stranger one is replaced."""
READY_TIMEOUT_S: Final = 2.0
"""How long ``/readyz`` waits for the store."""

_REQUEST_ID_HEADER: Final = b"x-request-id"
_REQUEST_ID_OK: Final = re.compile(rb"[A-Za-z0-9._:\-]{1,%d}" % REQUEST_ID_CHARS_MAX)
_BEARER: Final = b"bearer "
_KEY_PREFIX: Final = b"gf_"
_KEY_ID_END: Final = 15
"""``gf_`` and the twelve characters of the key id."""
_BUCKETS_STATE: Final = "giftflow_rate_buckets"
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# -- request ids -------------------------------------------------------------------------------

REQUEST_ID: Final[contextvars.ContextVar[str]] = contextvars.ContextVar(
    "giftflow_request_id", default="")
"""The current request's id (empty outside a request); logs carry it."""


class _RequestIds:
    """Request ids: a random prefix per process and a counter (no system call per request)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new prefix (also in a forked child, which would otherwise repeat ids)."""
        self.prefix = os.urandom(6).hex() + "-"
        self.counter = itertools.count(1)

    def next(self) -> str:
        """A new request id."""
        return f"{self.prefix}{next(self.counter):x}"


_IDS: Final = _RequestIds()
os.register_at_fork(after_in_child=_IDS.reset)


def current_request_id() -> str:
    """The id of the request being served, or ``""``."""
    return REQUEST_ID.get()


class RequestIdMiddleware:
    """Takes the client's ``X-Request-Id`` (1..128 of ``A-Za-z0-9._:-``) or makes one.

    The id is answered in ``X-Request-Id``, kept in ``scope["state"]["request_id"]``
    (``request.state.request_id``) and in the :data:`REQUEST_ID` context variable.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request with its id."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = _header(scope, _REQUEST_ID_HEADER)
        if raw is not None and _REQUEST_ID_OK.fullmatch(raw):
            encoded = raw
            request_id = raw.decode("ascii")
        else:
            request_id = _IDS.next()
            encoded = request_id.encode("ascii")
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                if isinstance(headers, list):
                    headers.append((_REQUEST_ID_HEADER, encoded))
                else:
                    message["headers"] = [*headers, (_REQUEST_ID_HEADER, encoded)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def key_id_of(scope: Scope) -> bytes | None:
    """The key id of a ``Bearer gf_<id>_<secret>`` header, unchecked; None without one.

    Only the twelve id characters are read; the secret is never copied. This does not
    authenticate: a wrong key still fails later, in the handler.
    """
    value = _header(scope, b"authorization")
    if value is None or value[:7].lower() != _BEARER:
        return None
    token = value[7:].lstrip()
    if not token.startswith(_KEY_PREFIX) or token[_KEY_ID_END:_KEY_ID_END + 1] != b"_":
        return None
    key_id = token[3:_KEY_ID_END]
    return key_id if key_id.isalnum() else None


# -- rate limits -------------------------------------------------------------------------------


class TokenBuckets:
    """Token buckets by caller, at most ``buckets_max`` of them (least recently used dropped).

    Callers are API key ids (``bytes``) or client addresses (``str``): the two types never
    compare equal, so a forged key id cannot drain an address's bucket. Used from the event loop
    only, so it takes no lock.
    """

    def __init__(self, rate_requests_per_s: float = RATE_REQUESTS_PER_S,
                 burst_requests: int = RATE_BURST_REQUESTS,
                 buckets_max: int = RATE_BUCKETS_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_requests_per_s <= 0 or burst_requests < 1 or buckets_max < 1:
            raise ValueError("rate, burst and bucket count must be positive")
        self.rate_requests_per_s = rate_requests_per_s
        self.burst_requests = float(burst_requests)
        self.buckets_max = buckets_max
        self.clock = clock
        self._buckets: OrderedDict[bytes | str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, caller: bytes | str) -> float:
        """Take a token: 0.0 when the request may go, else the seconds until it may."""
        now = self.clock()
        buckets = self._buckets
        bucket = buckets.get(caller)
        if bucket is None:
            if len(buckets) >= self.buckets_max:
                buckets.popitem(last=False)
            buckets[caller] = [self.burst_requests - 1.0, now]
            return 0.0
        buckets.move_to_end(caller)
        tokens = min(self.burst_requests,
                     bucket[0] + (now - bucket[1]) * self.rate_requests_per_s)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate_requests_per_s


_RATE_LIMITED_BODY: Final = orjson.dumps(problem(
    "rate_limited", "too many requests for this key or address; retry after Retry-After "
    "seconds").body)


class RateLimitMiddleware:
    """Per-key token buckets (per client address without a key); 429 ``rate_limited`` over.

    The keyword arguments are the :class:`TokenBuckets` settings; use Litestar's
    ``DefineMiddleware`` to pass them.
    """

    def __init__(self, app: ASGIApp, *, rate_requests_per_s: float = RATE_REQUESTS_PER_S,
                 burst_requests: int = RATE_BURST_REQUESTS,
                 buckets_max: int = RATE_BUCKETS_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self._settings = (rate_requests_per_s, burst_requests, buckets_max, clock)
        self._buckets: TokenBuckets | None = None

    def _buckets_of(self, scope: Scope) -> TokenBuckets:
        """The application's buckets, shared by the per-route instances (made on first use)."""
        state = scope["app"].state
        buckets: TokenBuckets | None = state.get(_BUCKETS_STATE)
        if buckets is None:
            buckets = state[_BUCKETS_STATE] = TokenBuckets(*self._settings)
        self._buckets = buckets
        return buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, or refuse it when its caller's bucket is empty."""
        if scope["type"] != "http" or scope["path"] in OPERATIONAL_PATHS:
            await self.app(scope, receive, send)
            return
        buckets = self._buckets or self._buckets_of(scope)
        caller: bytes | str | None = key_id_of(scope)
        if caller is None:
            client = scope.get("client")
            caller = client[0] if client else "unknown"
        wait_s = buckets.take(caller)
        if not wait_s:
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(_RATE_LIMITED_BODY)).encode()),
            (b"retry-after", str(max(1, math.ceil(wait_s))).encode())]})
        await send({"type": "http.response.body", "body": _RATE_LIMITED_BODY})


# -- metrics -----------------------------------------------------------------------------------

REGISTRY: Final = CollectorRegistry()
"""The metrics served at ``/metrics``."""
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)
REQUESTS: Final = Counter("giftflow_http_requests", "HTTP requests answered.",
                          ("method", "route", "status"), registry=REGISTRY)
LATENCY: Final = Histogram(
    "giftflow_http_request_duration_seconds", "Time to answer an HTTP request.",
    ("method", "route"), registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
GIFT_QUEUE_DEPTH: Final = Gauge("giftflow_gift_queue_depth",
                                "Gift operations waiting for the group committer.",
                                registry=REGISTRY)


def watch_gift_queue(depth: Callable[[], float]) -> None:
    """Report ``depth()`` as the gift queue depth, read at each scrape."""
    GIFT_QUEUE_DEPTH.set_function(depth)


_Children = tuple[Any, Any]
_CHILDREN: dict[tuple[str, str, int], _Children] = {}
"""Labelled metric children by (method, route, status); bounded by the routes."""


def _children(method: str, route: str, status: int) -> _Children:
    found = _CHILDREN.get((method, route, status))
    if found is None:
        found = _CHILDREN[method, route, status] = (
            REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route))
    return found


# -- structured logs ---------------------------------------------------------------------------

_SENSITIVE: Final = frozenset({"authorization", "password", "secret", "token", "totp", "key",
                               "api_key", "cookie"})
_SECRETS: Final = re.compile(
    r"(gf_[A-Za-z0-9]{12}_)[A-Za-z0-9_\-]+|((?i:bearer)\s+)[^\s\"',;]+")
_RESERVED: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _redact(match: re.Match[str]) -> str:
    return (match.group(1) or match.group(2)) + "[redacted]"


class JsonFormatter(logging.Formatter):
    """A record as one JSON line: time, level, logger, message, request id and extra fields.

    Extra fields named like a secret (``authorization``, ``totp``, ``secret``…) are replaced by
    ``[redacted]``, and anything that looks like an API key's secret or a bearer token, in any
    field or traceback, is cut out of the line.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record's JSON line."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        request_id = REQUEST_ID.get()
        if request_id:
            line["request_id"] = request_id
        for name, value in vars(record).items():
            if name not in _RESERVED and name not in line:
                line[name] = "[redacted]" if name.lower() in _SENSITIVE else value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        text = orjson.dumps(line, default=str).decode()
        if "gf_" in text or "earer" in text or "EARER" in text:
            text = _SECRETS.sub(_redact, text)
        return text


def configure_logging(level: int | str = "INFO", stream: TextIO | None = None) -> None:
    """Send every log record, as JSON lines, to ``stream`` (standard output by default).

    Replaces the root logger's handlers; ``giftflow serve`` calls it once at start.
    """
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


# -- observing requests ------------------------------------------------------------------------


class ObserveMiddleware:
    """Counts, times and logs each HTTP request (one JSON line; never a header's value)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request and record how it went."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            elapsed_s = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            route = scope.get("path_template") or "unmatched"
            counter, histogram = _children(method, route, status)
            counter.inc()
            histogram.observe(elapsed_s)
            level = logging.DEBUG if scope["path"] in OPERATIONAL_PATHS else logging.INFO
            if ACCESS_LOG.isEnabledFor(level):
                key_id = key_id_of(scope)
                ACCESS_LOG.log(level, "request", extra={
                    "method": method, "route": route, "status": status,
                    "duration_ms": round(elapsed_s * 1000.0, 3),
                    "key_id": None if key_id is None else key_id.decode("ascii")})


MIDDLEWARE: list[Any] = [RequestIdMiddleware, ObserveMiddleware, RateLimitMiddleware]


def middleware(*, rate_requests_per_s: float = RATE_REQUESTS_PER_S,
               burst_requests: int = RATE_BURST_REQUESTS) -> list[Any]:
    """:data:`MIDDLEWARE` with the rate limit of the deployment's settings."""
    return [RequestIdMiddleware, ObserveMiddleware,
            DefineMiddleware(RateLimitMiddleware,  # type: ignore[arg-type]
                             rate_requests_per_s=rate_requests_per_s,
                             burst_requests=burst_requests)]
"""ASGI middleware, outermost first."""


# -- routes ------------------------------------------------------------------------------------


@get("/metrics", sync_to_thread=False, include_in_schema=False)
def metrics() -> Response[bytes]:
    """The Prometheus metrics, in the text exposition format."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@get("/readyz", include_in_schema=False)
async def readyz(request: Request[Any, Any, Any]) -> Response[Any]:
    """Readiness: 200 when the store answers a trivial query, else 503 ``not_ready``."""
    store = request.app.state.services.economy.ledger.store
    try:
        await asyncio.wait_for(asyncio.to_thread(store.ledgers), timeout=READY_TIMEOUT_S)
    except Exception:
        logger.exception("readiness check failed")
        body = {"type": PROBLEM_TYPE_BASE + "not_ready", "title": "Not ready", "status": 503,
                "code": "not_ready", "detail": "the store does not answer"}
        return Response(body, status_code=503, media_type="application/problem+json")
    return Response({"status": "ready"})


ROUTES: list[Any] = [metrics, readyz]
"""Route handlers (metrics, readiness)."""
