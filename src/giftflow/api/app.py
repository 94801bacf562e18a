"""The ASGI application: the core endpoints of SPEC.md §8.1 over the domains (Litestar, msgspec).

Handlers are thin: they authenticate, check ownership, call a domain and turn its answer into
JSON or a problem response. Calls that touch the database run in Litestar's thread pool; a gift
goes through the gift committer, so that concurrent gift requests share commits, and its handler
awaits the result without holding a thread.
"""

from __future__ import annotations

import asyncio
import logging
import zoneinfo
from datetime import date
from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import Litestar, Request, Response, WebSocket, get, post, websocket
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from litestar.response import ServerSentEvent

from giftflow.access import Principal
from giftflow.api import protection, routes, routes_access, routes_webhooks
from giftflow.api.common import (
    ApiError,
    Services,
    Svc,
    Who,
    act_for,
    authenticate,
    idempotency_key,
    ok,
    refuse,
)
from giftflow.api.events import serve_events, sse_messages
from giftflow.api.openapi import operation_id, with_choices, with_links, with_problems
from giftflow.api.problems import Problem, problem
from giftflow.api.ws_frames import writer_of
from giftflow.economy import codes
from giftflow.economy.config import CHANNELS, Channel
from giftflow.economy.service import GiftRequest, stable_id
from giftflow.invariants import INT64_MAX
from giftflow.ledger import Failure, Result
from giftflow.live.streams import Stream

logger = logging.getLogger(__name__)

REQUEST_BODY_BYTES_MAX: Final = 65_536
"""The largest request body accepted (``body_too_large`` above)."""
HANDLE_CHARS_MAX: Final = 64
AFTER_SEQ_DIGITS_MAX: Final = 18

Count = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
Amount = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
Handle = Annotated[str, msgspec.Meta(pattern=f"^[A-Za-z0-9._]{{1,{HANDLE_CHARS_MAX}}}$")]
"""A handle as TikTok writes them: letters, digits, ``.`` and ``_``."""
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


# -- bodies and answers ------------------------------------------------------------------------


class LedgerOut(msgspec.Struct):
    """A ledger and the scale of its minor unit."""

    code: str
    scale: int


class UserIn(msgspec.Struct, forbid_unknown_fields=True):
    """A new user."""

    handle: Handle
    region: Annotated[str, msgspec.Meta(min_length=2, max_length=16)]
    birth_date: date | None = None
    time_zone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"
    is_creator: bool = False


class UserOut(msgspec.Struct):
    """A user as created."""

    id: str
    handle: str
    region: str


class WalletOut(msgspec.Struct):
    """Balances; diamonds in DIAMOND minor units."""

    coins: int
    coin_debt: int
    diamonds: int
    diamonds_withdrawable: int
    diamonds_reserved: int


class GiftOut(msgspec.Struct):
    """A catalog gift."""

    id: int
    name: str
    coin_value: int
    streakable: bool


class PackOut(msgspec.Struct):
    """A coin pack of a region and channel."""

    id: str
    coins: int
    price_minor: int
    currency: str
    channel: str


class PurchaseIn(msgspec.Struct, forbid_unknown_fields=True):
    """A purchase of a coin pack."""

    user_id: Text
    pack_id: Text
    channel: Literal["web", "ios", "android"]
    provider: Literal["stripe", "apple", "google", "simulator"] | None = None


class PurchaseOut(msgspec.Struct):
    """A purchase: ``paid`` once the provider confirmed it (at once with the simulator)."""

    id: str
    status: str
    coins: int
    receipt_id: str | None = None


class StreamIn(msgspec.Struct, forbid_unknown_fields=True):
    """A new stream."""

    creator_id: Text
    title: Text


class StreamOut(msgspec.Struct):
    """A stream and its status."""

    id: str
    status: str


class SendGiftIn(msgspec.Struct, forbid_unknown_fields=True):
    """Gifts to a live stream."""

    sender_id: Text
    gift_id: Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
    count: Count
    streak_id: Annotated[str, msgspec.Meta(max_length=100)] | None = None


class SentGiftOut(msgspec.Struct):
    """What a gift moved."""

    id: int
    coins_spent: int
    diamonds_credited: int
    sender_coins: int


class PayoutIn(msgspec.Struct, forbid_unknown_fields=True):
    """A payout request: diamonds in DIAMOND minor units, and a two-factor code."""

    creator_id: Text
    diamonds: Amount
    method: Text
    totp: Annotated[str, msgspec.Meta(max_length=16)] | None = None


class PayoutOut(msgspec.Struct):
    """A payout and its status."""

    id: str
    status: str
    diamonds: int | None = None
    cash_minor: int | None = None
    currency: str | None = None


# -- authentication and ownership --------------------------------------------------------------


# -- handlers ----------------------------------------------------------------------------------


@get("/v1/ledgers", sync_to_thread=True)
def list_ledgers(services: Svc,
                 principal: Who) -> list[LedgerOut]:
    """The ledgers and the scales of their minor units."""
    del principal
    return [LedgerOut(spec.code, spec.scale) for spec in services.economy.ledger.store.ledgers()]


@post("/v1/users", sync_to_thread=True, status_code=201)
def create_user(services: Svc, principal: Who, data: JSONBody[UserIn],
                request: Request[Any, Any, Any]) -> UserOut:
    """A new user of the caller's platform (admin and service keys)."""
    if principal.role not in ("admin", "service"):
        raise refuse("forbidden", "only admin and service keys create users")
    key = idempotency_key(request)
    user_id = stable_id("u", principal.owner, "POST /v1/users", key)
    result = services.economy.register_user(
        user_id, region=data.region, time_zone=data.time_zone, birth_date=data.birth_date,
        is_creator=data.is_creator, handle=data.handle,
        platform=principal.owner if principal.role == "service" else "")
    ok(result)
    return UserOut(user_id, data.handle, data.region)


@get("/v1/users/{user_id:str}/wallet", sync_to_thread=True)
def get_wallet(services: Svc, principal: Who, user_id: FromPath[str]) -> WalletOut:
    """A user's balances."""
    act_for(services, principal, user_id)
    wallet = services.economy.wallet(user_id)
    return WalletOut(wallet["coins"], wallet["coin_debt"], wallet["diamonds"],
                     wallet["diamonds_withdrawable"], wallet["diamonds_reserved"])


@get("/v1/catalog/gifts", sync_to_thread=False)
def list_gifts(services: Svc, principal: Who) -> list[GiftOut]:
    """The gift catalog."""
    del principal
    return [GiftOut(gift.id, gift.name, gift.coin_value, gift.streakable)
            for gift in services.economy.catalog]


@get("/v1/catalog/coin-packs", sync_to_thread=False)
def list_packs(services: Svc, principal: Who,
               region: Annotated[str, Parameter(max_length=16)],
               channel: FromQuery[Channel]) -> list[PackOut]:
    """The coin packs of a region on a channel."""
    del principal
    if region not in services.economy.economy.regions:
        raise refuse(codes.VALIDATION_ERROR, f"unknown region {region!r}")
    found = services.economy.economy.region(region)
    return [PackOut(pack.id, pack.coins, pack.price_minor, found.currency, channel)
            for pack in found.packs.for_channel(channel)]


@post("/v1/purchases", sync_to_thread=True, status_code=201)
def create_purchase(services: Svc, principal: Who, data: JSONBody[PurchaseIn],
                    request: Request[Any, Any, Any]) -> PurchaseOut:
    """Buy a coin pack; the ``simulator`` provider (demo mode) completes it at once."""
    act_for(services, principal, data.user_id)
    provider = data.provider or ("simulator" if services.demo else None)
    if provider is None:
        raise refuse(codes.VALIDATION_ERROR, "name the provider of the purchase")
    order = ok(services.economy.create_order(data.user_id, data.channel, data.pack_id,
                                              provider, idempotency_key(request)))
    order_id, coins = order.response["order_id"], order.response["coins"]
    if provider != "simulator":
        return PurchaseOut(order_id, "open", coins)
    paid = ok(services.economy.simulate_payment(order_id))
    return PurchaseOut(order_id, "paid", coins, paid.response.get("receipt"))


@post("/v1/streams", sync_to_thread=True, status_code=201)
def create_stream(services: Svc, principal: Who, data: JSONBody[StreamIn],
                  request: Request[Any, Any, Any]) -> StreamOut:
    """A new stream of a creator, ``scheduled``."""
    act_for(services, principal, data.creator_id)
    stream_id = stable_id("st", data.creator_id, "POST /v1/streams", idempotency_key(request))
    existing = services.streams.get(stream_id)
    if existing is not None:
        return StreamOut(existing.id, existing.status)
    created = services.streams.create(stream_id, data.creator_id, data.title)
    if isinstance(created, Failure):
        raise ApiError(problem(created.code, created.detail))
    return StreamOut(created.id, created.status)


def _own_stream(services: Svc, principal: Who, stream_id: FromPath[str]) -> None:
    stream = services.streams.get(stream_id)
    if stream is None:
        raise refuse(codes.NOT_FOUND, f"no stream {stream_id}")
    act_for(services, principal, stream.creator_id)


@post("/v1/streams/{stream_id:str}/start", sync_to_thread=True, status_code=200)
def start_stream(services: Svc, principal: Who, stream_id: FromPath[str]) -> StreamOut:
    """``scheduled → live``."""
    _own_stream(services, principal, stream_id)
    moved = services.streams.start(stream_id)
    if isinstance(moved, Failure):
        raise ApiError(problem(moved.code, moved.detail))
    return StreamOut(moved.id, moved.status)


@post("/v1/streams/{stream_id:str}/end", sync_to_thread=True, status_code=200)
def end_stream(services: Svc, principal: Who, stream_id: FromPath[str]) -> StreamOut:
    """``live → ended``."""
    _own_stream(services, principal, stream_id)
    moved = services.streams.end(stream_id)
    if isinstance(moved, Failure):
        raise ApiError(problem(moved.code, moved.detail))
    return StreamOut(moved.id, moved.status)


@post("/v1/streams/{stream_id:str}/gifts", status_code=201)
async def send_gift(stream_id: FromPath[str], data: JSONBody[SendGiftIn],
                    request: Request[Any, Any, Any]) -> SentGiftOut:
    """Gifts from a viewer to the creator of a live stream, group-committed.

    The hot path: the caller is authenticated here rather than through dependency injection,
    which Litestar resolves with a task group per request.
    """
    services: Services = request.app.state.services
    principal = authenticate(request)
    if not (principal.role == "admin" or (principal.role in ("viewer", "creator", "moderator")
                                          and principal.owner == data.sender_id)):
        if principal.role != "service":
            raise refuse("forbidden", f"this key may not send gifts for {data.sender_id}")
        await asyncio.to_thread(act_for, services, principal, data.sender_id)
    creator_id = services.streams.creator_of(stream_id)
    if creator_id is None:
        raise refuse(codes.NOT_FOUND, f"no stream {stream_id}")
    gift = GiftRequest(data.sender_id, creator_id, data.gift_id, data.count, stream_id,
                       idempotency_key(request), streak_id=data.streak_id or "",
                       request_id=request.headers.get("x-request-id", "")[:100])
    claim = (gift.sender_id, gift.key)
    if claim in services.gifts_in_flight:
        raise refuse(codes.IDEMPOTENCY_IN_PROGRESS,
                     "a gift with this Idempotency-Key is still being applied")
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[Result] = loop.create_future()

    def done(results: list[Result]) -> None:
        loop.call_soon_threadsafe(_settle, answer, results[0])

    services.gifts_in_flight.add(claim)
    try:
        if not services.gifts.submit_many((gift,), done):
            raise refuse(codes.OVERLOADED, "the gift queue is full; retry later")
        result = await answer
    finally:
        services.gifts_in_flight.discard(claim)
    applied = ok(result)
    return SentGiftOut(applied.response["gift"], applied.response["coins"],
                       applied.response["diamonds"], applied.response["sender_coins"])


def _settle(future: asyncio.Future[Result], result: Result) -> None:
    if not future.done():
        future.set_result(result)


@post("/v1/payouts", sync_to_thread=True, status_code=201)
def request_payout(services: Svc, principal: Who, data: JSONBody[PayoutIn],
                   request: Request[Any, Any, Any]) -> PayoutOut:
    """Reserve a creator's diamonds for a payout (needs a two-factor code)."""
    act_for(services, principal, data.creator_id)
    applied = ok(services.payouts.request(data.creator_id, data.diamonds, data.method,
                                          data.totp, idempotency_key(request)),
                 group_two_factor="payout_rule_failed")
    return PayoutOut(applied.response["payout"], "requested", applied.response["diamonds"],
                     applied.response["cash_minor"], applied.response["currency"])


@get("/v1/payouts/{payout_id:str}", sync_to_thread=True)
def get_payout(services: Svc, principal: Who, payout_id: FromPath[str]) -> PayoutOut:
    """A payout and its status."""
    rows = services.economy.store.read("payouts", {"id": payout_id})
    if not rows:
        raise refuse(codes.NOT_FOUND, f"no payout {payout_id}")
    act_for(services, principal, rows[0]["creator_id"])
    row = rows[0]
    return PayoutOut(row["id"], row["status"], row["diamonds"], row["cash_minor"],
                     row["currency"])


@websocket("/v1/streams/{stream_id:str}/events")
async def stream_events(socket: WebSocket[Any, Any, Any], stream_id: FromPath[str]) -> None:
    """The stream's events (SPEC.md §4): ``?after_seq=N`` resumes, otherwise a snapshot first.

    The key comes in the ``Authorization`` header or ``?token=``; a refused connection is closed
    with 4401 (unauthenticated) or 4403 (forbidden).
    """
    services: Services = socket.app.state.services
    refusal, _, after_seq = await _watch(services, socket, stream_id,
                                         socket.query_params.get("after_seq"))
    if refusal is not None:
        code, reason = {"unauthorized": (4401, "unauthenticated"),
                        "forbidden": (4403, "forbidden"),
                        codes.VALIDATION_ERROR: (4400, "after_seq is a whole number")}[refusal]
        await socket.close(code=code, reason=reason)
        return
    await serve_events(socket, services.hub, stream_id, after_seq, writer_of(socket.scope))


@get("/v1/streams/{stream_id:str}/events", media_type="text/event-stream")
async def stream_events_sse(request: Request[Any, Any, Any],
                            stream_id: FromPath[str]) -> ServerSentEvent:
    """The stream's events as Server-Sent Events, one message per frame (``id``: its last seq).

    The same contract as the WebSocket on this path: a ``snapshot`` first, or the events after
    ``?after_seq=N``, or after the ``Last-Event-ID`` header, which a reconnecting
    ``EventSource`` sends (it wins over ``after_seq``). The key comes in the ``Authorization``
    header or ``?token=``. A resync message has an empty id, so that an ``EventSource``
    reconnects without ``Last-Event-ID`` and gets a snapshot. A comment every 15 s keeps
    proxies from closing a quiet stream.
    """
    services: Services = request.app.state.services
    refusal, stream, after_seq = await _watch(
        services, request, stream_id,
        request.headers.get("last-event-id") or request.query_params.get("after_seq"))
    if refusal == "unauthorized":
        raise refuse(refusal, "send an API key ('Authorization: Bearer' or ?token=)")
    if refusal == "forbidden":
        raise refuse(refusal, "this key may not watch this creator's streams")
    if stream is None:
        raise refuse(codes.NOT_FOUND, f"no stream {stream_id}")
    if refusal is not None:
        raise refuse(refusal, "after_seq (or Last-Event-ID) is a whole number")
    joined = services.hub.subscribe(stream_id, stream.last_seq)
    if joined is None:
        raise refuse(codes.OVERLOADED, "too many subscribers of this stream; try later")
    return ServerSentEvent(sse_messages(services.hub, stream, after_seq, joined))


async def _watch(services: Services, connection: ASGIConnection[Any, Any, Any, Any],
                 stream_id: str, raw_after_seq: str | None,
                 ) -> tuple[str | None, Stream | None, int | None]:
    """Who may watch a stream's events (both transports): refusal code, stream, ``after_seq``.

    The refusal is ``None`` when allowed, the stream ``None`` when unknown (left to the
    caller, after the key is checked). The key comes in the ``Authorization`` header or
    ``?token=``.
    """
    header = connection.headers.get("authorization", "")
    token = header.partition(" ")[2].strip() or connection.query_params.get("token", "")
    principal = await asyncio.to_thread(services.access.authenticate, token)
    if principal is None:
        return "unauthorized", None, None
    stream = await asyncio.to_thread(services.streams.get, stream_id)
    if stream is not None and not await asyncio.to_thread(_may_watch, services, principal,
                                                          stream.creator_id):
        return "forbidden", stream, None
    if raw_after_seq is not None and not (raw_after_seq.isdigit()
                                          and len(raw_after_seq) <= AFTER_SEQ_DIGITS_MAX):
        return codes.VALIDATION_ERROR, stream, None
    return None, stream, None if raw_after_seq is None else int(raw_after_seq)


def _may_watch(services: Services, principal: Principal, creator_id: str) -> bool:
    """Whether the principal may watch the creator's streams' events.

    They are public, except that an overlay token or a creator key sees only its own creator's
    streams, and a moderator only those of the creators who appointed them.
    """
    if principal.role in ("overlay", "creator"):
        return principal.owner == creator_id
    if principal.role == "moderator":
        return principal.owner == creator_id or bool(services.economy.store.read(
            "moderators", {"creator_id": creator_id, "user_id": principal.owner}, limit=1))
    return True


@get("/healthz", sync_to_thread=False, include_in_schema=False)
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/openapi.json", sync_to_thread=False, include_in_schema=False)
def openapi_document(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The OpenAPI document of this server: problem responses, links, configured choices."""
    services: Services = request.app.state.services
    economy = services.economy.economy
    packs = {pack.id for region in economy.regions.values() for channel in CHANNELS
             for pack in region.packs.for_channel(channel)}
    choices = {"UserIn.region": economy.regions, "listPacks.region": economy.regions,
               "UserIn.time_zone": zoneinfo.available_timezones(),
               "PurchaseIn.pack_id": packs,
               "AdjustmentIn.ledger": [spec.code for spec in
                                       services.economy.ledger.store.ledgers()]}
    document = with_problems(request.app.openapi_schema.to_schema())
    return with_links(with_choices(document, choices))


# -- errors ------------------------------------------------------------------------------------


def _problem_response(found: Problem) -> Response[Any]:
    return Response(content=found.body, status_code=found.status,
                    media_type="application/problem+json")


def _on_api_error(_: Request[Any, Any, Any], error: ApiError) -> Response[Any]:
    return _problem_response(error.problem)


_HTTP_CODES: Final = {400: codes.VALIDATION_ERROR, 401: "unauthorized", 403: "forbidden",
                      404: codes.NOT_FOUND, 405: "method_not_allowed", 413: "body_too_large",
                      415: "unsupported_media_type", 429: "rate_limited"}


def _on_http_error(_: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    code = _HTTP_CODES.get(error.status_code, "internal_error")
    detail = error.detail if isinstance(error.detail, str) else "the request was refused"
    if error.extra:
        return _problem_response(problem(code, detail, errors=error.extra))
    return _problem_response(problem(code, detail))


def _on_bug(_: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    logger.error("unhandled error", exc_info=error)
    return _problem_response(problem("internal_error", "an internal error; it was logged"))


async def _strict_body(request: Request[Any, Any, Any]) -> None:
    """Decode a JSON body strictly before the handler sees it.

    Litestar converts bodies in msgspec's lax mode, which would take ``"3"`` for ``3``; SPEC.md
    §8 wants wrong types refused. So the body is first decoded here with the handler's own body
    type in strict mode, and a mismatch is a ``validation_error`` problem.
    """
    if any("\x00" in str(value) for value in (*request.path_params.values(),
                                               *request.query_params.values())):
        raise refuse(codes.VALIDATION_ERROR, "a path or query value holds a NUL character")
    parameter = request.route_handler.parsed_fn_signature.parameters.get("data")
    if parameter is None:
        return
    body = await request.body()
    if b"\\u0000" in body:
        # A text can be stored everywhere but a NUL character (PostgreSQL refuses it).
        raise refuse(codes.VALIDATION_ERROR, "a string holds a NUL character")
    try:
        msgspec.json.decode(body, type=parameter.annotation, strict=True)
    except msgspec.ValidationError as error:
        raise refuse(codes.VALIDATION_ERROR, str(error)) from error
    except msgspec.DecodeError as error:
        raise refuse(codes.VALIDATION_ERROR, f"the body is not valid JSON: {error}") from error


def _provide_services(state: State) -> Services:
    services: Services = state.services
    return services


def create_app(services: Services) -> Litestar:
    """The ASGI application over ``services``."""
    app = Litestar(
        route_handlers=[list_ledgers, create_user, get_wallet, list_gifts, list_packs,
                        create_purchase, create_stream, start_stream, end_stream, send_gift,
                        request_payout, get_payout, stream_events, stream_events_sse, healthz,
                        openapi_document, *routes.ROUTES, *routes_access.ROUTES,
                        *routes_webhooks.ROUTES,
                        *protection.ROUTES],
        middleware=protection.middleware(rate_requests_per_s=services.rate_requests_per_s,
                                         burst_requests=services.rate_burst_requests),
        dependencies={"services": Provide(_provide_services, sync_to_thread=False),
                      "principal": Provide(authenticate, sync_to_thread=False)},
        exception_handlers={ApiError: _on_api_error, HTTPException: _on_http_error,
                            Exception: _on_bug},
        openapi_config=OpenAPIConfig(title="giftflow", version="1", path="/docs",
                                     operation_id_creator=operation_id),
        request_max_body_size=REQUEST_BODY_BYTES_MAX,
        logging_config=None,
        before_request=_strict_body,
        on_shutdown=[services.gifts.close],
    )
    app.state.services = services
    protection.watch_gift_queue(lambda: services.gifts.queued)
    return app



__all__ = ["ApiError", "Services", "create_app"]
