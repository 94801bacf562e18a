"""Outbound webhooks over HTTP (SPEC.md §8).

A platform registers endpoints, reads their delivery log and asks for redelivery. Service keys
act on their own platform's endpoints; admin keys on any (naming the platform when registering).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from litestar import get, post
from litestar.params import JSONBody, Parameter

from giftflow.access import Principal
from giftflow.api.common import Services, Svc, Who, refuse
from giftflow.api.webhooks import Attempt, Delivery, Endpoint, generate_secret
from giftflow.economy import codes
from giftflow.invariants import INT64_MAX
from giftflow.ledger import Failure

RowId = Annotated[int, Parameter(ge=1, le=INT64_MAX)]
"""An id in a path: a positive 64-bit integer (larger ones are 400, not a lookup)."""
BeforeId = Annotated[int | None, Parameter(ge=1, le=INT64_MAX)]

Topic = Literal["purchase_completed", "purchase_refunded", "gift_reversed", "gift_restored",
                "payout_paid", "payout_failed", "payout_returned"]
"""The events a platform can subscribe to (the outbox topics they come from)."""


class EndpointIn(msgspec.Struct, forbid_unknown_fields=True):
    """An endpoint to register: its URL and topics (and the platform, for admin keys)."""

    url: Annotated[str, msgspec.Meta(min_length=8, max_length=2048)]
    topics: Annotated[list[Topic], msgspec.Meta(min_length=1, max_length=32)]
    platform: Annotated[str, msgspec.Meta(max_length=128)] = ""


class EndpointOut(msgspec.Struct):
    """An endpoint; ``secret`` (to verify signatures) is only in the answer to registration."""

    id: int
    platform: str
    url: str
    topics: list[str]
    disabled: bool
    secret: str | None = None


class DeliveryOut(msgspec.Struct):
    """One event for one endpoint, in the delivery log."""

    id: int
    event_id: str
    topic: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str
    created_at_ms: int
    delivered_at_ms: int | None


class AttemptOut(msgspec.Struct):
    """One try of a delivery."""

    number: int
    attempted_at_ms: int
    status_code: int | None
    error: str
    duration_ms: int


def _endpoint_out(endpoint: Endpoint, secret: str | None = None) -> EndpointOut:
    return EndpointOut(endpoint.id, endpoint.platform, endpoint.url, list(endpoint.topics),
                       endpoint.disabled, secret)


def _delivery_out(delivery: Delivery) -> DeliveryOut:
    return DeliveryOut(delivery.id, delivery.event_id, delivery.topic, delivery.status,
                       delivery.attempts, delivery.last_status_code, delivery.last_error,
                       delivery.created_at_ms, delivery.delivered_at_ms)


def _platform(principal: Principal, named: str = "") -> str:
    if principal.role == "service":
        return principal.owner
    if principal.role == "admin" and named:
        return named
    if principal.role == "admin":
        raise refuse(codes.VALIDATION_ERROR, "an admin key names the platform")
    raise refuse("forbidden", "webhooks belong to platforms: use a service key")


def _own_endpoint(services: Services, principal: Principal, endpoint_id: int) -> Endpoint:
    if principal.role not in ("admin", "service"):
        raise refuse("forbidden", "webhooks belong to platforms: use a service key")
    endpoint = services.webhooks.endpoint(endpoint_id)
    if endpoint is None:
        raise refuse(codes.NOT_FOUND, f"no webhook endpoint {endpoint_id}")
    if principal.role == "service" and endpoint.platform != principal.owner:
        raise refuse("forbidden", f"webhook endpoint {endpoint_id} is another platform's")
    return endpoint


def _own_delivery(services: Services, principal: Principal, delivery_id: int) -> Delivery:
    delivery = services.webhooks.delivery(delivery_id)
    if delivery is None:
        raise refuse(codes.NOT_FOUND, f"no webhook delivery {delivery_id}")
    _own_endpoint(services, principal, delivery.endpoint_id)
    return delivery


@post("/v1/webhooks", sync_to_thread=True, status_code=201)
def register_endpoint(services: Svc, principal: Who, data: JSONBody[EndpointIn]) -> EndpointOut:
    """Register an endpoint; the signing secret is in this answer only."""
    platform = _platform(principal, data.platform)
    secret = generate_secret()
    made = services.webhooks.register(platform, data.url, secret, data.topics)
    if isinstance(made, Failure):
        raise refuse(made.code, made.detail)
    endpoint = services.webhooks.endpoint(made)
    if endpoint is None:
        raise refuse(codes.NOT_FOUND, "the endpoint vanished")
    return _endpoint_out(endpoint, secret)


@get("/v1/webhooks", sync_to_thread=True)
def list_endpoints(services: Svc, principal: Who,
                   platform: Annotated[str, Parameter(max_length=128)] = "") -> list[EndpointOut]:
    """The platform's endpoints."""
    return [_endpoint_out(e) for e in services.webhooks.endpoints(_platform(principal, platform))]


@post("/v1/webhooks/{endpoint_id:int}/disable", sync_to_thread=True, status_code=200)
def disable_endpoint(services: Svc, principal: Who, endpoint_id: RowId) -> EndpointOut:
    """Stop sending to an endpoint (deliveries wait until it is enabled again)."""
    return _switch(services, principal, endpoint_id, disabled=True)


@post("/v1/webhooks/{endpoint_id:int}/enable", sync_to_thread=True, status_code=200)
def enable_endpoint(services: Svc, principal: Who, endpoint_id: RowId) -> EndpointOut:
    """Send to an endpoint again."""
    return _switch(services, principal, endpoint_id, disabled=False)


def _switch(services: Services, principal: Principal, endpoint_id: int, *,
            disabled: bool) -> EndpointOut:
    _own_endpoint(services, principal, endpoint_id)
    refused = services.webhooks.set_disabled(endpoint_id, disabled)
    if refused is not None:
        raise refuse(refused.code, refused.detail)
    endpoint = services.webhooks.endpoint(endpoint_id)
    if endpoint is None:
        raise refuse(codes.NOT_FOUND, f"no webhook endpoint {endpoint_id}")
    return _endpoint_out(endpoint)


@get("/v1/webhooks/{endpoint_id:int}/deliveries", sync_to_thread=True)
def list_deliveries(services: Svc, principal: Who, endpoint_id: RowId,
                    before_id: BeforeId = None,
                    limit: Annotated[int, Parameter(ge=1, le=100)] = 50) -> list[DeliveryOut]:
    """An endpoint's delivery log, newest first; ``before_id`` pages."""
    _own_endpoint(services, principal, endpoint_id)
    return [_delivery_out(d) for d in services.webhooks.deliveries(endpoint_id, limit,
                                                                   before_id)]


@get("/v1/webhook-deliveries/{delivery_id:int}/attempts", sync_to_thread=True)
def list_attempts(services: Svc, principal: Who,
                  delivery_id: RowId) -> list[AttemptOut]:
    """A delivery's attempts, newest first."""
    _own_delivery(services, principal, delivery_id)
    return [_attempt_out(a) for a in services.webhooks.attempts(delivery_id)]


def _attempt_out(attempt: Attempt) -> AttemptOut:
    return AttemptOut(attempt.number, attempt.attempted_at_ms, attempt.status_code,
                      attempt.error, attempt.duration_ms)


@post("/v1/webhook-deliveries/{delivery_id:int}/redeliver", sync_to_thread=True,
      status_code=202)
def redeliver(services: Svc, principal: Who, delivery_id: RowId) -> DeliveryOut:
    """Send a delivery again now, with a fresh retry budget."""
    _own_delivery(services, principal, delivery_id)
    again = services.webhooks.redeliver(delivery_id)
    if isinstance(again, Failure):
        raise refuse(again.code, again.detail)
    return _delivery_out(again)


ROUTES: Final = [register_endpoint, list_endpoints, disable_endpoint, enable_endpoint,
                 list_deliveries, list_attempts, redeliver]
"""The handlers of this module."""
