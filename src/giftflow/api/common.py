"""What every HTTP handler shares: the services, the caller, ownership checks, failures.

Route modules import from here, never from ``app``, which imports them.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any, Final

from litestar import Request
from litestar.di import NamedDependency

from giftflow.access import AccessService, Principal
from giftflow.api.events import EventHub
from giftflow.api.problems import Problem, problem
from giftflow.api.webhooks import WebhookDispatcher
from giftflow.economy import codes
from giftflow.economy.payouts import Payouts
from giftflow.economy.service import EconomyService, GiftRequest
from giftflow.ledger import Applied, Failure, Result
from giftflow.ledger.group_commit import GroupCommitter
from giftflow.live import Streams

IDEMPOTENCY_KEY_CHARS_MAX: Final = 200


class ApiError(Exception):
    """An expected failure, answered as a problem response."""

    def __init__(self, found: Problem) -> None:
        super().__init__(found.body.get("detail", ""))
        self.problem = found


def refuse(code: str, detail: str) -> ApiError:
    """The problem for ``code``, to raise."""
    return ApiError(problem(code, detail))


@dataclass(frozen=True, slots=True)
class Services:
    """What the handlers use, wired once by ``bootstrap``."""

    economy: EconomyService
    payouts: Payouts
    streams: Streams
    access: AccessService
    gifts: GroupCommitter[GiftRequest]
    webhooks: WebhookDispatcher
    demo: bool
    hub: EventHub
    stripe_webhook_secret: str = ""
    """The Stripe webhook endpoint's signing secret ("" when not configured)."""
    rate_requests_per_s: float = 50.0
    """Requests per second each key may sustain (see ``protection``)."""
    rate_burst_requests: int = 100
    gifts_in_flight: set[tuple[str, str]] = field(default_factory=set)
    """(sender, Idempotency-Key) of gifts submitted and not answered yet, in this process: a
    duplicate meanwhile is ``idempotency_in_progress``."""


Svc = NamedDependency[Services]
"""The services, injected into a handler."""
Who = NamedDependency[Principal]
"""The authenticated principal, injected into a handler (401 before the handler otherwise)."""




def authenticate(request: Request[Any, Any, Any]) -> Principal:
    """The caller of a request, from its bearer API key; 401 otherwise."""
    services: Services = request.app.state.services
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise refuse("unauthorized", "send an API key as 'Authorization: Bearer <key>'")
    principal = services.access.authenticate(token.strip())
    if principal is None or principal.role == "overlay":
        raise refuse("unauthorized", "the API key is unknown or revoked")
    return principal


def user_of(services: Services, user_id: str) -> dict[str, Any]:
    """A user's row, or 404."""
    found = services.economy.user(user_id)
    if found is None:
        raise refuse(codes.NOT_FOUND, f"no user {user_id}")
    return found


def act_for(services: Services, principal: Principal, user_id: str) -> dict[str, Any]:
    """The user, if ``principal`` may act for them; otherwise 404 or 403.

    Admins act for everyone, a service key for the users of its platform, every other key for
    its own owner only. A user the key may not see is 403, not 404, only when it exists.
    """
    user = user_of(services, user_id)
    allowed = (principal.role == "admin"
               or (principal.role == "service" and user["platform"] == principal.owner)
               or (principal.role in ("viewer", "creator", "moderator")
                   and principal.owner == user_id))
    if not allowed:
        raise refuse("forbidden", f"this key may not act for {user_id}")
    return user


_AUTO_KEYS: Final = itertools.count()
_PROCESS_NONCE: Final = secrets.token_hex(8)


def idempotency_key(request: Request[Any, Any, Any]) -> str:
    """The request's ``Idempotency-Key`` (a fresh one when it has none).

    A fresh key is this process's random nonce and a counter: unique without a system call per
    request (``urandom`` measured about 12 µs a call here, on the gift hot path).
    """
    key = request.headers.get("idempotency-key")
    if key is None:
        return f"auto-{_PROCESS_NONCE}-{next(_AUTO_KEYS)}"
    if not 0 < len(key) <= IDEMPOTENCY_KEY_CHARS_MAX:
        raise refuse(codes.VALIDATION_ERROR,
                     f"Idempotency-Key is 1..{IDEMPOTENCY_KEY_CHARS_MAX} characters")
    return key


def ok(result: Result, *, group_two_factor: str | None = None) -> Applied:
    """The success of a domain call, or its failure raised as a problem response.

    With ``group_two_factor``, a two-factor refusal is reported under that contract code.
    """
    if isinstance(result, Failure):
        group = group_two_factor if result.code.startswith("two_factor") else None
        raise ApiError(problem(result.code, result.detail, group=group))
    return result


