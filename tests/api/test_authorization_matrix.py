"""Who may call what: every endpoint × every kind of caller, with the exact status of each cell.

The world: platform ``p1`` (a service key owned by ``p1``) and platform ``p2``; a creator ``star``
on ``p1`` with a live stream and a rival creator; a viewer ``fan`` on ``p1`` with coins and a
viewer ``other`` on ``p2``; a moderator ``mod`` appointed by ``star`` and ``mod2`` appointed by
no one; an admin key held by an admin user enrolled in two-factor; an overlay token of ``star``;
and no key at all.

Each request is shaped so that only authorization can fail (a valid body, existing ids, fresh
state where a call changes it), so an allowed cell answers its success status and a refused one
401 (no key, an overlay token) or 403. The table must name every route of the application.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Final

import httpx
import pyotp
import pytest
from litestar.exceptions import WebSocketDisconnect
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute, WebSocketRoute
from litestar.testing import TestClient
from stripe_events import SECRET, event_body, sign
from test_event_stream import real_server

from giftflow.api.app import Services, create_app
from giftflow.economy import admin as admin_ops

ROSE: Final = 5655
"""The cheapest catalog gift (1 coin)."""
PAYOUT_DIAMONDS: Final = 20_000_000
"""2,000 diamonds in DIAMOND minor units: $10, the US payout minimum."""
PRINCIPALS: Final = (
    "admin", "service_owner", "service_other", "creator_owner", "creator_other",
    "viewer_owner", "viewer_other", "moderator_appointed", "moderator_other", "overlay",
    "no_key")
"""The callers of every cell. ``*_owner``: the key's owner owns the request's subject."""
UNLISTED_PATHS: Final = ("/healthz", "/readyz", "/metrics", "/openapi.json")
EVENTS_ROUTE: Final = "/v1/streams/{stream_id:str}/events"
"""The event stream: a WebSocket route (close codes, not statuses) and a Server-Sent Events
route (a response that never ends), each checked by its own test below."""

Expected = tuple[int, str | None]
"""A cell's status and its problem ``code`` (``None`` for a success)."""


@dataclass
class World:
    """The fixture world: a client, the services, and a key (or none) per principal."""

    client: TestClient  # type: ignore[type-arg]
    services: Services
    headers: dict[str, dict[str, str]]
    overlay_token: str
    live_stream: str
    payout_id: str
    receipts: dict[str, str]
    admin_seed: str
    endpoint_id: int
    delivery_id: int
    counter: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    def fresh(self) -> int:
        """A number no other cell of this world uses (for ids and Idempotency-Keys)."""
        return next(self.counter)


@dataclass(frozen=True)
class Call:
    """One request of a cell."""

    path: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


Build = Callable[[World, str], Call]


@dataclass(frozen=True)
class Row:
    """An endpoint: how to call it for a principal, and what each principal gets."""

    method: str
    template: str
    build: Build
    expected: dict[str, Expected]


# -- who may ----------------------------------------------------------------------------------

KEYED: Final = tuple(p for p in PRINCIPALS if p not in ("overlay", "no_key"))
ADMIN: Final = ("admin",)
PLATFORMS: Final = ("admin", "service_owner", "service_other")
USER_OWNERS: Final = ("admin", "service_owner", "creator_owner", "viewer_owner")
CREATOR_OWNERS: Final = ("admin", "service_owner", "creator_owner")
PLATFORM_OF_FAN: Final = ("admin", "service_owner")


def allow(status: int, allowed: tuple[str, ...],
          business: dict[str, Expected] | None = None) -> dict[str, Expected]:
    """``status`` for the allowed principals, 403 for the other keys, 401 without an API key."""
    expected: dict[str, Expected] = {}
    for principal in PRINCIPALS:
        if principal in ("overlay", "no_key"):
            expected[principal] = (401, "unauthorized")
        elif principal in allowed:
            expected[principal] = (status, None)
        else:
            expected[principal] = (403, "forbidden")
    expected.update(business or {})
    return expected


def subject(principal: str) -> str:
    """The user a user-scoped call is about: creator-side keys ask about ``star``, the rest
    about ``fan`` (so ``*_owner`` keys ask about their own user, ``*_other`` about someone else).
    """
    if principal.startswith(("creator", "moderator", "overlay")):
        return "star"
    return "fan"


# -- requests ---------------------------------------------------------------------------------


def _key_id(plaintext: str) -> str:
    return plaintext.split("_")[1]


def _now_s(world: World) -> int:
    return world.services.economy.clock_ms() // 1000


def _enrolled(world: World, user: str) -> pyotp.TOTP:
    """``user`` freshly enrolled and confirmed (a code one step back), so that the current
    step's code is accepted once.
    """
    economy = world.services.economy
    enrolled = economy.enroll_two_factor(user)
    assert isinstance(enrolled, tuple)
    totp = pyotp.TOTP(enrolled[1])
    assert economy.confirm_two_factor(user, totp.at(_now_s(world) - 30)) is None
    return totp


def _idem(world: World) -> dict[str, str]:
    return {"Idempotency-Key": f"matrix-{world.fresh()}"}


def _scheduled(world: World) -> str:
    stream = f"st-matrix-{world.fresh()}"
    created = world.services.streams.create(stream, "star", "Matrix")
    assert not hasattr(created, "code"), created
    return stream


def _live(world: World) -> str:
    stream = _scheduled(world)
    started = world.services.streams.start(stream)
    assert not hasattr(started, "code"), started
    return stream


def _proposed(world: World) -> str:
    proposed = admin_ops.propose_adjustment(
        world.services.economy, "another-admin", "DIAMOND", "user:star", "diamonds:available",
        1, "matrix adjustment")
    assert isinstance(proposed, str), proposed
    return proposed


def _hold(world: World) -> str:
    economy = world.services.economy

    def work(tx: Any) -> None:
        economy.hold(tx, "kid", "matrix", "a hold to review")
        tx.commit()

    economy.run(work)
    holds = economy.store.read("risk_holds", {"user_id": "kid", "status": "open"})
    return str(holds[-1]["id"])


def _overlay(world: World) -> str:
    return _key_id(world.services.access.create_key("overlay", "star", "overlay"))


def _enroll_call(world: World, principal: str) -> Call:
    user = subject(principal)
    world.services.economy.enroll_two_factor(user)  # started, not confirmed: enrolling is open
    return Call(f"/v1/users/{user}/two-factor")


def _confirm_call(world: World, principal: str) -> Call:
    user = subject(principal)
    enrolled = world.services.economy.enroll_two_factor(user)
    assert isinstance(enrolled, tuple)
    code = pyotp.TOTP(enrolled[1]).at(_now_s(world))
    return Call(f"/v1/users/{user}/two-factor/confirm", {"code": code})


def _payout_call(world: World, _: str) -> Call:
    code = _enrolled(world, "star").at(_now_s(world))
    return Call("/v1/payouts", {"creator_id": "star", "diamonds": PAYOUT_DIAMONDS,
                                "method": "simulator", "totp": code}, _idem(world))


def _new_key_call(world: World, _: str) -> Call:
    code = pyotp.TOTP(world.admin_seed).at(_now_s(world))
    return Call("/v1/keys", {"role": "viewer", "owner": "fan", "totp": code})


def _webhook_call(world: World, _: str) -> Call:
    body = event_body("customer.created", {"id": "cus_1", "object": "customer"},
                      f"evt_matrix_{world.fresh()}")
    return Call("/v1/providers/stripe/webhook", raw=body,
                headers={"Stripe-Signature": sign(body), "Content-Type": "application/json"})


def _gift_call(world: World, principal: str) -> Call:
    return Call(f"/v1/streams/{world.live_stream}/gifts",
                {"sender_id": subject(principal), "gift_id": ROSE, "count": 1}, _idem(world))


ROWS: Final = (
    Row("GET", "/v1/ledgers", lambda _w, _p: Call("/v1/ledgers"), allow(200, KEYED)),
    Row("POST", "/v1/users",
        lambda w, _p: Call("/v1/users", {"handle": f"new{w.fresh()}", "region": "US",
                                        "birth_date": "1990-01-01"}, _idem(w)),
        allow(201, PLATFORMS)),
    Row("GET", "/v1/users/{user_id:str}/wallet",
        lambda _w, p: Call(f"/v1/users/{subject(p)}/wallet"), allow(200, USER_OWNERS)),
    Row("GET", "/v1/catalog/gifts", lambda _w, _p: Call("/v1/catalog/gifts"), allow(200, KEYED)),
    Row("GET", "/v1/catalog/coin-packs",
        lambda _w, _p: Call("/v1/catalog/coin-packs?region=US&channel=web"), allow(200, KEYED)),
    Row("POST", "/v1/purchases",
        lambda w, p: Call("/v1/purchases", {"user_id": subject(p), "pack_id": "web-700",
                                            "channel": "web"}, _idem(w)),
        allow(201, USER_OWNERS)),
    Row("POST", "/v1/streams",
        lambda w, _p: Call("/v1/streams", {"creator_id": "star", "title": "Matrix"}, _idem(w)),
        allow(201, CREATOR_OWNERS)),
    Row("POST", "/v1/streams/{stream_id:str}/start",
        lambda w, _p: Call(f"/v1/streams/{_scheduled(w)}/start"), allow(200, CREATOR_OWNERS)),
    Row("POST", "/v1/streams/{stream_id:str}/end",
        lambda w, _p: Call(f"/v1/streams/{_live(w)}/end"), allow(200, CREATOR_OWNERS)),
    Row("POST", "/v1/streams/{stream_id:str}/gifts", _gift_call,
        allow(201, USER_OWNERS, {"creator_owner": (422, "self_gift")})),
    Row("POST", "/v1/payouts", _payout_call, allow(201, CREATOR_OWNERS)),
    Row("GET", "/v1/payouts/{payout_id:str}",
        lambda w, _p: Call(f"/v1/payouts/{w.payout_id}"), allow(200, CREATOR_OWNERS)),
    Row("POST", "/v1/users/{user_id:str}/two-factor", _enroll_call, allow(201, USER_OWNERS)),
    Row("POST", "/v1/users/{user_id:str}/two-factor/confirm", _confirm_call,
        allow(200, USER_OWNERS)),
    Row("PUT", "/v1/users/{user_id:str}/kyc",
        lambda _w, _p: Call("/v1/users/fan/kyc", {"status": "verified"}), allow(200, ADMIN)),
    Row("GET", "/v1/users/{user_id:str}/receipts",
        lambda _w, p: Call(f"/v1/users/{subject(p)}/receipts"), allow(200, USER_OWNERS)),
    Row("GET", "/v1/receipts/{number:str}",
        lambda w, p: Call(f"/v1/receipts/{w.receipts[subject(p)]}"), allow(200, USER_OWNERS)),
    # Authenticated by the Stripe signature, not by an API key: every caller is the same.
    Row("POST", "/v1/providers/stripe/webhook", _webhook_call,
        dict.fromkeys(PRINCIPALS, (200, None))),
    Row("GET", "/v1/users/{user_id:str}/payouts",
        lambda _w, _p: Call("/v1/users/star/payouts"), allow(200, CREATOR_OWNERS)),
    Row("GET", "/v1/payouts/review", lambda _w, _p: Call("/v1/payouts/review"),
        allow(200, ADMIN)),
    Row("POST", "/v1/payouts/review/{hold_id:str}",
        lambda w, _p: Call(f"/v1/payouts/review/{_hold(w)}", {"release": True}),
        allow(200, ADMIN)),
    Row("GET", "/v1/users/{user_id:str}/limits",
        lambda _w, p: Call(f"/v1/users/{subject(p)}/limits"), allow(200, USER_OWNERS)),
    Row("PUT", "/v1/users/{user_id:str}/limits/{metric:str}",
        lambda w, p: Call(f"/v1/users/{subject(p)}/limits/gifted_monthly",
                          {"coins": 1_000_000_000 - w.fresh()}),
        allow(200, USER_OWNERS)),
    Row("POST", "/v1/teams",
        lambda w, p: Call("/v1/teams", {"id": f"team-{w.fresh()}", "name": "Matrix",
                                        "owner_id": subject(p)}),
        allow(201, USER_OWNERS)),
    Row("PUT", "/v1/teams/{team_id:str}/members/{user_id:str}",
        lambda _w, p: Call(f"/v1/teams/team-of-{subject(p)}/members/kid",
                          {"budget_daily_coins": 100}),
        allow(200, USER_OWNERS)),
    Row("POST", "/v1/admin/freezes",
        lambda _w, _p: Call("/v1/admin/freezes", {"user_id": "victim", "frozen": True,
                                                "reason": "matrix"}),
        allow(200, ADMIN)),
    Row("POST", "/v1/admin/adjustments",
        lambda w, _p: Call("/v1/admin/adjustments", {
            "ledger": "DIAMOND", "owner": "user:star", "kind": "diamonds:available",
            "amount": 1, "reason": "matrix"}, _idem(w)),
        allow(201, ADMIN)),
    Row("POST", "/v1/admin/adjustments/{adjustment_id:str}/approve",
        lambda w, _p: Call(f"/v1/admin/adjustments/{_proposed(w)}/approve"), allow(200, ADMIN)),
    Row("POST", "/v1/admin/adjustments/{adjustment_id:str}/reject",
        lambda w, _p: Call(f"/v1/admin/adjustments/{_proposed(w)}/reject",
                          {"reason": "matrix"}),
        allow(200, ADMIN)),
    Row("GET", "/v1/creators/{creator_id:str}/statements/{year:int}/{month:int}",
        lambda _w, _p: Call("/v1/creators/star/statements/2024/1"), allow(200, CREATOR_OWNERS)),
    Row("GET", "/v1/reports/liability", lambda _w, _p: Call("/v1/reports/liability"),
        allow(200, ADMIN)),
    Row("POST", "/v1/reports/reconciliation/{provider:str}",
        lambda _w, _p: Call("/v1/reports/reconciliation/stripe", {"rows": []}),
        allow(200, ADMIN)),
    Row("POST", "/v1/keys", _new_key_call, allow(201, ADMIN)),
    Row("DELETE", "/v1/keys/{key_id:str}",
        lambda w, _p: Call(f"/v1/keys/{_key_id(w.services.access.create_key('viewer', 'fan'))}"),
        allow(200, ADMIN)),
    Row("POST", "/v1/creators/{creator_id:str}/overlay-tokens",
        lambda _w, _p: Call("/v1/creators/star/overlay-tokens"), allow(201, CREATOR_OWNERS)),
    Row("DELETE", "/v1/creators/{creator_id:str}/overlay-tokens/{key_id:str}",
        lambda w, _p: Call(f"/v1/creators/star/overlay-tokens/{_overlay(w)}"),
        allow(200, CREATOR_OWNERS)),
    Row("POST", "/v1/creators/{creator_id:str}/overlay-tokens/{key_id:str}/rotate",
        lambda w, _p: Call(f"/v1/creators/star/overlay-tokens/{_overlay(w)}/rotate"),
        allow(201, CREATOR_OWNERS)),
    Row("PUT", "/v1/creators/{creator_id:str}/moderators/{user_id:str}",
        lambda _w, _p: Call("/v1/creators/star/moderators/helper"), allow(200, CREATOR_OWNERS)),
    Row("DELETE", "/v1/creators/{creator_id:str}/moderators/{user_id:str}",
        lambda w, _p: Call(_appointed_helper(w)), allow(200, CREATOR_OWNERS)),
    # Webhooks belong to platforms: a service key registers and lists its own (whatever it
    # names), an admin key those of the platform it names.
    Row("POST", "/v1/webhooks",
        lambda _w, p: Call("/v1/webhooks", {"url": "http://127.0.0.1:9/hooks",
                                           "topics": ["purchase_completed"],
                                           **({"platform": "p1"} if p == "admin" else {})}),
        allow(201, PLATFORMS)),
    Row("GET", "/v1/webhooks", lambda _w, _p: Call("/v1/webhooks?platform=p1"),
        allow(200, PLATFORMS)),
    Row("POST", "/v1/webhooks/{endpoint_id:int}/disable",
        lambda w, _p: Call(f"/v1/webhooks/{w.endpoint_id}/disable"), allow(200, PLATFORM_OF_FAN)),
    Row("POST", "/v1/webhooks/{endpoint_id:int}/enable",
        lambda w, _p: Call(f"/v1/webhooks/{w.endpoint_id}/enable"), allow(200, PLATFORM_OF_FAN)),
    Row("GET", "/v1/webhooks/{endpoint_id:int}/deliveries",
        lambda w, _p: Call(f"/v1/webhooks/{w.endpoint_id}/deliveries"),
        allow(200, PLATFORM_OF_FAN)),
    Row("GET", "/v1/webhook-deliveries/{delivery_id:int}/attempts",
        lambda w, _p: Call(f"/v1/webhook-deliveries/{w.delivery_id}/attempts"),
        allow(200, PLATFORM_OF_FAN)),
    Row("POST", "/v1/webhook-deliveries/{delivery_id:int}/redeliver",
        lambda w, _p: Call(f"/v1/webhook-deliveries/{w.delivery_id}/redeliver"),
        allow(202, PLATFORM_OF_FAN)),
)
"""One row per endpoint, in an order where no cell spoils a later one."""

def _appointed_helper(world: World) -> str:
    economy = world.services.economy
    key = {"creator_id": "star", "user_id": "helper"}

    def work(tx: Any) -> None:
        if not tx.rows("moderators", key):
            tx.insert("moderators", {**key, "created_at_ms": economy.clock_ms()})
            tx.commit()

    economy.run(work)
    return "/v1/creators/star/moderators/helper"


# -- the world --------------------------------------------------------------------------------


def _user(services: Services, user_id: str, platform: str, *, creator: bool = False) -> None:
    registered = services.economy.register_user(
        user_id, region="US", time_zone="UTC", birth_date=date(1990, 1, 1), is_creator=creator,
        handle=user_id, platform=platform)
    assert registered.ok, registered


def _buy(services: Services, user_id: str) -> str:
    order = services.economy.create_order(user_id, "web", "web-700", "simulator",
                                          f"setup-{user_id}")
    assert order.ok, order
    paid = services.economy.simulate_payment(order.response["order_id"])  # type: ignore[union-attr]
    assert paid.ok, paid
    return str(paid.response["receipt"])  # type: ignore[union-attr]


@dataclass(frozen=True)
class Setup:
    """What the cells need from the world's setup."""

    headers: dict[str, dict[str, str]]
    overlay_token: str
    live_stream: str
    payout_id: str
    receipts: dict[str, str]
    admin_seed: str
    endpoint_id: int
    delivery_id: int


def _setup(services: Services) -> Setup:
    """Users, keys, a live stream, coins, diamonds and a payout; returns what cells need."""
    economy, access = services.economy, services.access
    for user_id, platform, creator in (
            ("star", "p1", True), ("rival", "p1", True), ("fan", "p1", False),
            ("other", "p2", False), ("mod", "p1", False), ("mod2", "p1", False),
            ("kid", "p1", False), ("victim", "p1", False), ("helper", "p1", False),
            ("ops", "", False)):
        _user(services, user_id, platform, creator=creator)
    endpoint = services.webhooks.register("p1", "http://127.0.0.1:9/hooks", "s" * 32,
                                          ["purchase_completed"])
    assert isinstance(endpoint, int), endpoint
    receipts = {"fan": _buy(services, "fan"), "star": _buy(services, "star")}
    for team, owner in (("team-of-fan", "fan"), ("team-of-star", "star")):
        assert economy.create_team(team, owner, "Team") is None
    assert economy.set_user_fields("star", {"kyc_status": "verified"})
    proposed = admin_ops.propose_adjustment(economy, "setup-a", "DIAMOND", "user:star",
                                            "diamonds:available", 100 * PAYOUT_DIAMONDS, "setup")
    assert isinstance(proposed, str), proposed
    assert admin_ops.approve_adjustment(economy, proposed, "setup-b").ok

    def appoint(tx: Any) -> None:
        tx.insert("moderators", {"creator_id": "star", "user_id": "mod",
                                 "created_at_ms": economy.clock_ms()})
        tx.commit()

    economy.run(appoint)
    assert not hasattr(services.streams.create("st-live", "star", "Live"), "code")
    assert not hasattr(services.streams.start("st-live"), "code")
    overlay = access.create_key("overlay", "star", "overlay")
    owners = {"admin": ("admin", "ops"), "service_owner": ("service", "p1"),
              "service_other": ("service", "p2"), "creator_owner": ("creator", "star"),
              "creator_other": ("creator", "rival"), "viewer_owner": ("viewer", "fan"),
              "viewer_other": ("viewer", "other"), "moderator_appointed": ("moderator", "mod"),
              "moderator_other": ("moderator", "mod2")}
    headers = {name: {"Authorization": f"Bearer {access.create_key(role, owner)}"}  # type: ignore[arg-type]
               for name, (role, owner) in owners.items()}
    headers["overlay"] = {"Authorization": f"Bearer {overlay}"}
    headers["no_key"] = {}
    enrolled = economy.enroll_two_factor("ops")
    assert isinstance(enrolled, tuple)
    admin_seed = enrolled[1]
    now_s = economy.clock_ms() // 1000
    assert economy.confirm_two_factor("ops", pyotp.TOTP(admin_seed).at(now_s - 30)) is None
    star = economy.enroll_two_factor("star")
    assert isinstance(star, tuple)
    assert economy.confirm_two_factor("star", pyotp.TOTP(star[1]).at(now_s - 30)) is None
    payout = services.payouts.request("star", PAYOUT_DIAMONDS, "simulator",
                                      pyotp.TOTP(star[1]).at(now_s), "setup-payout")
    assert payout.ok, payout
    assert services.webhooks.fan_out().deliveries >= 1
    [delivery] = services.webhooks.deliveries(endpoint, 1)
    return Setup(headers, overlay, "st-live", str(payout.response["payout"]),  # type: ignore[union-attr]
                 receipts, admin_seed, endpoint, delivery.id)


@pytest.fixture
def world(services: Services) -> Iterator[World]:
    """The fixture world over the test's store, behind a client without rate limits."""
    open_services = replace(services, stripe_webhook_secret=SECRET,
                            rate_requests_per_s=1e9, rate_burst_requests=10**9)
    made = _setup(open_services)
    with TestClient(app=create_app(open_services)) as client:
        yield World(client, open_services, made.headers, made.overlay_token, made.live_stream,
                    made.payout_id, made.receipts, made.admin_seed, made.endpoint_id,
                    made.delivery_id)


# -- running a cell ---------------------------------------------------------------------------


def _send(world: World, row: Row, principal: str) -> Any:
    call = row.build(world, principal)
    headers = {**world.headers[principal], **call.headers}
    if call.raw is not None:
        return world.client.request(row.method, call.path, content=call.raw, headers=headers)
    if call.body is None:
        return world.client.request(row.method, call.path, headers=headers)
    return world.client.request(row.method, call.path, json=call.body, headers=headers)


def _outcome(answer: Any) -> Expected:
    if answer.status_code < 400:
        return answer.status_code, None
    if not answer.headers.get("content-type", "").startswith("application/problem+json"):
        return answer.status_code, f"not a problem: {answer.text[:80]}"
    return answer.status_code, answer.json().get("code")


# -- tests ------------------------------------------------------------------------------------


def test_every_route_has_a_row_of_the_matrix(services: Services) -> None:
    """Every HTTP route of the application (but health, metrics and the OpenAPI documents) has
    exactly one row with an expectation for every principal, and every row names a real route;
    the event stream (WebSocket, and Server-Sent Events on GET) is checked by its own tests.
    """
    app = create_app(services)
    routes: set[tuple[str, str]] = set()
    sockets: set[str] = set()
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            sockets.add(route.path)
            continue
        assert isinstance(route, HTTPRoute)
        if route.path in UNLISTED_PATHS or route.path.startswith("/docs"):
            continue
        for handler in route.route_handlers:
            assert isinstance(handler, HTTPRouteHandler)
            routes.update((method, route.path) for method in handler.http_methods
                          if method not in ("OPTIONS", "HEAD"))
    assert ("GET", EVENTS_ROUTE) in routes
    routes.discard(("GET", EVENTS_ROUTE))
    rows = [(row.method, row.template) for row in ROWS]
    assert len(rows) == len(set(rows)), "a route has two rows"
    assert sorted(routes - set(rows)) == [], "routes without a row in the matrix"
    assert sorted(set(rows) - routes) == [], "rows naming no route"
    assert sockets == {EVENTS_ROUTE}
    for row in ROWS:
        assert set(row.expected) == set(PRINCIPALS), row.template


def test_each_principal_gets_the_exact_status_on_every_endpoint(world: World) -> None:
    """Every cell of the matrix (endpoint × admin, service of the subject's platform or not,
    owning or other creator, owning or other viewer, appointed or other moderator, overlay token,
    no key) answers its exact status: the success status (or, where only a business rule can
    refuse, its 422 code) when the role and owner allow, 403 ``forbidden`` when they do not,
    401 ``unauthorized`` without an API key.
    """
    wrong: list[str] = []
    cells = 0
    for row in ROWS:
        for principal in PRINCIPALS:
            cells += 1
            answer = _send(world, row, principal)
            got, want = _outcome(answer), row.expected[principal]
            if got != want:
                wrong.append(f"{row.method} {row.template} as {principal}: expected {want}, "
                             f"got {got}: {answer.text[:160]}")
    assert cells == len(ROWS) * len(PRINCIPALS)
    assert wrong == [], "\n".join(wrong)


SOCKET_CLOSES: Final[dict[str, int | None]] = {
    "admin": None, "service_owner": None, "service_other": None, "creator_owner": None,
    "creator_other": 4403, "viewer_owner": None, "viewer_other": None,
    "moderator_appointed": None, "moderator_other": 4403, "overlay": None, "no_key": 4401}
"""Who may watch ``star``'s live stream: ``None`` connects, a number is the close code.

The events are public to API keys, except that a creator key sees only its own creator's
streams, a moderator only those of the creators who appointed them, and an overlay token only
its creator's.
"""


def test_the_event_stream_over_sse_refuses_with_401_and_403(world: World) -> None:
    """Over Server-Sent Events (served by uvicorn, as the response never ends) each principal
    watching the creator's live stream either gets 200 and the snapshot message first, or the
    exact refusal: 401 without a key or with an unknown one, 403 for a creator key of another
    creator, a moderator the creator did not appoint, and another creator's overlay token; the
    creator's own overlay token connects through ``?token=``.
    """
    path = f"/v1/streams/{world.live_stream}/events"
    rival_overlay = world.services.access.create_key("overlay", "rival", "overlay")
    cases: list[tuple[str, str, dict[str, str], int]] = [
        (principal, path, world.headers[principal], 200 if close is None else close - 4000)
        for principal, close in SOCKET_CLOSES.items()]
    cases += [("overlay token in the query", f"{path}?token={world.overlay_token}", {}, 200),
              ("another creator's overlay", f"{path}?token={rival_overlay}", {}, 403),
              ("an unknown key", path, {"Authorization": "Bearer gf_nope"}, 401)]
    wrong: list[str] = []
    with real_server(create_app(world.services)) as port:
        for name, url, headers, status in cases:
            with httpx.stream("GET", f"http://127.0.0.1:{port}{url}", headers=headers,
                              timeout=10) as answer:
                got: int | str = answer.status_code
                if got == 200:
                    data = next(line for line in answer.iter_lines() if line.startswith("data:"))
                    if json.loads(data[5:])[0]["type"] != "snapshot":
                        got = data
            if got != status:
                wrong.append(f"{name}: expected {status}, got {got}")
    assert wrong == [], "\n".join(wrong)


def test_the_event_stream_refuses_with_4401_and_4403(world: World) -> None:
    """Each principal watching the creator's live stream either gets the snapshot frame or is
    closed with the exact code: 4401 without a key or with an unknown one, 4403 for a creator
    key of another creator, a moderator the creator did not appoint, and another creator's
    overlay token (in ``?token=``); the creator's own overlay token connects through ``?token=``.
    """
    path = f"/v1/streams/{world.live_stream}/events"
    rival_overlay = world.services.access.create_key("overlay", "rival", "overlay")
    cases: list[tuple[str, str, dict[str, str], int | None]] = [
        (principal, path, world.headers[principal], close)
        for principal, close in SOCKET_CLOSES.items()]
    cases += [("overlay token in the query", f"{path}?token={world.overlay_token}", {}, None),
              ("another creator's overlay", f"{path}?token={rival_overlay}", {}, 4403),
              ("an unknown key", path, {"Authorization": "Bearer gf_nope"}, 4401)]
    wrong: list[str] = []
    for name, url, headers, close in cases:
        try:
            with world.client.websocket_connect(url, headers=headers) as socket:
                frame = json.loads(socket.receive_text())
                got: int | str | None = None if frame[0]["type"] == "snapshot" else str(frame)
        except WebSocketDisconnect as refused:
            got = refused.code
        if got != close:
            wrong.append(f"{name}: expected {close}, got {got}")
    assert wrong == [], "\n".join(wrong)
