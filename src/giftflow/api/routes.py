"""The economy's endpoints beyond the core contract of SPEC.md §8.1.

Users, two-factor, KYC, receipts, refunds, payouts review, limits, teams, admin, reports and
provider webhooks.

``ROUTES`` lists the handlers; ``create_app`` registers them with the core ones.

Every handler authenticates (401) and checks ownership or role (403) before any business rule;
domain failures become problem responses through ``ok`` or ``refuse``. Amounts are integers in
the minor unit of their ledger. Refunds and disputes have no endpoint of their own: they come
from the payment providers, through their webhooks.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import Request, Response, get, post, put
from litestar.params import FromPath, JSONBody, Parameter

from giftflow.access import Principal
from giftflow.adapters.providers.stripe_payments import StripeWebhooks, WebhookRejected
from giftflow.api.common import (
    ApiError,
    Services,
    Svc,
    Who,
    act_for,
    idempotency_key,
    ok,
    refuse,
    user_of,
)
from giftflow.api.problems import TITLES, Problem, problem
from giftflow.economy import admin, codes, reports
from giftflow.economy.service import KYC_STATUSES, LIMIT_METRICS
from giftflow.invariants import INT64_MAX
from giftflow.ledger import Applied, Failure

PAGE_MAX: Final = 100
"""The most rows one listing returns."""
SETTLEMENT_ROWS_MAX: Final = 5000
"""The most settlement lines one reconciliation request carries."""

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
TeamId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=admin.REASON_CHARS_MAX)]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
Coins = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
SignedAmount = Annotated[int, msgspec.Meta(ge=-INT64_MAX, le=INT64_MAX)]
Minor = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]

BeforeMs = Annotated[int | None, Parameter(ge=0, le=INT64_MAX)]
PageLimit = Annotated[int, Parameter(ge=1, le=PAGE_MAX)]


# -- bodies and answers ------------------------------------------------------------------------


class TwoFactorOut(msgspec.Struct):
    """A new TOTP enrolment: shown once; it takes effect when a first code confirms it."""

    provisioning_uri: str
    seed: str


class TwoFactorCodeIn(msgspec.Struct, forbid_unknown_fields=True):
    """A code from the user's authenticator app."""

    code: Code


class TwoFactorConfirmedOut(msgspec.Struct):
    """The enrolment's state."""

    confirmed: bool


class KycIn(msgspec.Struct, forbid_unknown_fields=True):
    """A user's new identity-verification status."""

    status: Literal["none", "pending", "verified", "rejected"]


class KycOut(msgspec.Struct):
    """A user's identity-verification status."""

    user_id: str
    status: str


class ReceiptOut(msgspec.Struct):
    """A receipt of a purchase; amounts in the currency's minor unit, tax included in price."""

    number: str
    order_id: str
    issued_at_ms: int
    pack_id: str
    coins: int
    price_minor: int
    tax_minor: int
    currency: str
    channel: str
    provider: str
    payment_ref: str


class ReceiptPageOut(msgspec.Struct):
    """A page of receipts, newest first; ``next_before_ms`` asks for the next page."""

    receipts: list[ReceiptOut]
    next_before_ms: int | None


class WebhookOut(msgspec.Struct):
    """What a provider notification did: ``processed``, ``ignored`` or ``waiting``."""

    status: str
    replayed: bool = False


class PayoutItemOut(msgspec.Struct):
    """A payout: diamonds in DIAMOND minor units, cash in the currency's minor unit."""

    id: str
    status: str
    method: str
    diamonds: int
    cash_minor: int
    currency: str
    requested_at_ms: int
    hold_reason: str


class PayoutPageOut(msgspec.Struct):
    """A page of payouts, newest first; ``next_before_ms`` asks for the next page."""

    payouts: list[PayoutItemOut]
    next_before_ms: int | None


class HoldOut(msgspec.Struct):
    """An open risk hold and the payouts it holds."""

    id: str
    user_id: str
    rule: str
    reason: str
    created_at_ms: int
    payouts: list[PayoutItemOut]


class ReviewIn(msgspec.Struct, forbid_unknown_fields=True):
    """A reviewer's decision: release the held payouts, or reject them (their diamonds return)."""

    release: bool


class ReviewOut(msgspec.Struct):
    """A reviewed hold."""

    id: str
    status: str


class LimitOut(msgspec.Struct):
    """A spending limit in coins (``None``: no limit), and an increase waiting to apply."""

    metric: str
    coins: int | None
    pending_coins: int | None = None
    pending_effective_at_ms: int | None = None


class LimitIn(msgspec.Struct, forbid_unknown_fields=True):
    """A new limit in coins (``null`` removes it); an increase needs a two-factor code."""

    coins: Coins | None
    totp: Code | None = None


class TeamIn(msgspec.Struct, forbid_unknown_fields=True):
    """A new team account (agency, family, brand)."""

    id: TeamId
    name: Text
    owner_id: Id


class TeamOut(msgspec.Struct):
    """A team account."""

    id: str
    name: str
    owner_id: str


class MemberIn(msgspec.Struct, forbid_unknown_fields=True):
    """A member's budgets in coins (``null``: no budget of that period)."""

    budget_daily_coins: Coins | None = None
    budget_monthly_coins: Coins | None = None


class MemberOut(msgspec.Struct):
    """A team member and their budgets in coins."""

    team_id: str
    user_id: str
    budget_daily_coins: int | None
    budget_monthly_coins: int | None


class FreezeIn(msgspec.Struct, forbid_unknown_fields=True):
    """Freeze or unfreeze a user, with a reason."""

    user_id: Id
    frozen: bool
    reason: Reason


class FreezeOut(msgspec.Struct):
    """A user's frozen state."""

    user_id: str
    frozen: bool


class AdjustmentIn(msgspec.Struct, forbid_unknown_fields=True):
    """A proposed adjustment: signed minor units into account ``(ledger, owner, kind)``."""

    ledger: Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
    owner: Annotated[str, msgspec.Meta(min_length=1, max_length=200,
                                       pattern=admin.OWNER_PATTERN)]
    kind: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    amount: SignedAmount
    reason: Reason


class AdjustmentOut(msgspec.Struct):
    """An adjustment and its status (``proposed``, ``applied``, ``rejected``)."""

    id: str
    status: str


class RejectIn(msgspec.Struct, forbid_unknown_fields=True):
    """Why an adjustment is rejected."""

    reason: Reason


class LiabilityOut(msgspec.Struct):
    """What the platform owes in one currency (minor units) and the cash it holds against it."""

    currency: str
    unspent_coins: int
    unspent_coins_minor: int
    unpaid_diamonds: int
    unpaid_diamonds_minor: int
    cash_held_minor: int
    total_minor: int
    covered: bool


class SettlementIn(msgspec.Struct, forbid_unknown_fields=True):
    """One line of a provider's settlement report."""

    payment_ref: Text
    kind: Literal["payment", "refund", "payout"]
    amount_minor: Minor
    currency: Annotated[str, msgspec.Meta(min_length=3, max_length=8)]


class ReconciliationIn(msgspec.Struct, forbid_unknown_fields=True):
    """A settlement report, and the period ``[since_ms, until_ms)`` it covers."""

    rows: Annotated[list[SettlementIn], msgspec.Meta(max_length=SETTLEMENT_ROWS_MAX)]
    since_ms: Millis | None = None
    until_ms: Millis | None = None


class DifferenceOut(msgspec.Struct):
    """One disagreement: ``expected`` is giftflow's side, ``actual`` the report's."""

    issue: str
    kind: str
    ref: str
    expected_minor: int | None
    actual_minor: int | None
    expected_currency: str
    actual_currency: str


class ReconciliationOut(msgspec.Struct):
    """The differences found; none means the report agrees with giftflow."""

    differences: list[DifferenceOut]


# -- helpers -----------------------------------------------------------------------------------


def _admin_only(principal: Principal) -> None:
    if principal.role != "admin":
        raise refuse("forbidden", "only admin keys may do this")


def _done(result: Failure | None) -> None:
    if result is not None:
        raise ApiError(problem(result.code, result.detail))


def _payout(row: dict[str, Any]) -> PayoutItemOut:
    return PayoutItemOut(row["id"], row["status"], row["method"], row["diamonds"],
                         row["cash_minor"], row["currency"], row["requested_at_ms"],
                         row["hold_reason"])


def _with_status(code: str, status: int, detail: str) -> Problem:
    """The problem of ``code`` answered with ``status`` (codes the problems module lacks)."""
    found = problem(code, detail)
    return Problem(status, {**found.body, "status": status, "title": TITLES[status]})


# -- two-factor and KYC ------------------------------------------------------------------------


@post("/v1/users/{user_id:str}/two-factor", sync_to_thread=True, status_code=201)
def enroll_two_factor(services: Svc, principal: Who, user_id: FromPath[str]) -> TwoFactorOut:
    """Start TOTP enrolment; the provisioning URI and the seed are shown this once.

    A user whose enrolment is confirmed already is ``invalid_state`` (409), unless an admin
    replaces it: otherwise a leaked key could swap the second factor.
    """
    user = act_for(services, principal, user_id)
    if user["totp_confirmed"] and principal.role != "admin":
        raise refuse("invalid_state", f"{user_id} has two-factor authentication already")
    enrolled = services.economy.enroll_two_factor(user_id)
    if isinstance(enrolled, Failure):
        raise ApiError(problem(enrolled.code, enrolled.detail))
    uri, seed = enrolled
    return TwoFactorOut(uri, seed)


@post("/v1/users/{user_id:str}/two-factor/confirm", sync_to_thread=True, status_code=200)
def confirm_two_factor(services: Svc, principal: Who, user_id: FromPath[str],
                       data: JSONBody[TwoFactorCodeIn]) -> TwoFactorConfirmedOut:
    """Confirm TOTP enrolment with a first valid code."""
    act_for(services, principal, user_id)
    _done(services.economy.confirm_two_factor(user_id, data.code))
    return TwoFactorConfirmedOut(confirmed=True)


@put("/v1/users/{user_id:str}/kyc", sync_to_thread=True)
def set_kyc(services: Svc, principal: Who, user_id: FromPath[str],
            data: JSONBody[KycIn]) -> KycOut:
    """Set a user's identity-verification status (admin keys)."""
    _admin_only(principal)
    user_of(services, user_id)
    if data.status not in KYC_STATUSES or not services.economy.set_user_fields(
            user_id, {"kyc_status": data.status}):
        raise refuse(codes.NOT_FOUND, f"no user {user_id}")
    return KycOut(user_id, data.status)


# -- receipts ----------------------------------------------------------------------------------


@get("/v1/users/{user_id:str}/receipts", sync_to_thread=True)
def list_receipts(services: Svc, principal: Who, user_id: FromPath[str],
                  before_ms: BeforeMs = None, limit: PageLimit = 50) -> ReceiptPageOut:
    """A buyer's receipts, newest first; ``before_ms`` is the previous page's cursor."""
    act_for(services, principal, user_id)
    page = reports.list_receipts(services.economy, user_id, before_ms=before_ms, limit=limit)
    return ReceiptPageOut([msgspec.convert(row, ReceiptOut) for row in page.receipts],
                          page.next_cursor)


@get("/v1/receipts/{number:str}", sync_to_thread=True, media_type="text/plain")
def get_receipt(services: Svc, principal: Who, number: FromPath[str]) -> str:
    """A receipt as a plain-text document (its buyer, or an admin or its platform's service)."""
    rows = services.economy.store.read("receipts", {"number": number}, limit=1)
    if not rows:
        raise refuse(codes.NOT_FOUND, f"no receipt {number}")
    buyer = rows[0]["buyer_id"]
    act_for(services, principal, buyer)
    document = reports.render_receipt(services.economy, buyer, number)
    if isinstance(document, Failure):
        raise ApiError(problem(document.code, document.detail))
    return document


# -- provider webhooks -------------------------------------------------------------------------


@post("/v1/providers/stripe/webhook", status_code=200)
async def stripe_webhook(services: Svc, request: Request[Any, Any, Any]) -> Response[WebhookOut]:
    """A Stripe notification, authenticated by its ``Stripe-Signature`` (no API key).

    A bad signature, a stale timestamp or a malformed event is 400; an event giftflow does not
    act on is 200 ``ignored``; a refund or dispute whose purchase is not credited yet is 202
    ``waiting`` (it runs when the purchase arrives).
    """
    secret = services.stripe_webhook_secret
    if not secret:
        raise refuse("provider_unconfigured", "the Stripe webhook secret is not configured "
                                              "(GIFTFLOW_STRIPE_WEBHOOK_SECRET)")
    payload = await request.body()
    parsed = StripeWebhooks(secret).parse(payload, request.headers.get("stripe-signature", ""))
    if isinstance(parsed, WebhookRejected):
        raise refuse(parsed.code, parsed.detail)
    if parsed is None:
        return Response(WebhookOut("ignored"), status_code=200)
    result = await asyncio.to_thread(services.economy.handle_payment, parsed)
    if isinstance(result, Failure) and result.code == codes.WAITING_FOR_PURCHASE:
        return Response(WebhookOut("waiting"), status_code=202)
    if isinstance(result, Failure) and result.stored:
        # A business outcome stored under the notification's key (a payment that does not
        # match its order, say): the notification is handled, and a retry would get the same.
        return Response(WebhookOut(f"refused: {result.code}", result.replayed), status_code=200)
    applied: Applied = ok(result)
    return Response(WebhookOut("processed", applied.replayed), status_code=200)


# -- payouts -----------------------------------------------------------------------------------


@get("/v1/users/{user_id:str}/payouts", sync_to_thread=True)
def list_payouts(services: Svc, principal: Who, user_id: FromPath[str],
                 before_ms: BeforeMs = None, limit: PageLimit = 50) -> PayoutPageOut:
    """A creator's payouts, newest first; ``before_ms`` is the previous page's cursor."""
    act_for(services, principal, user_id)
    where: dict[str, Any] = {"creator_id": user_id}
    if before_ms is not None:
        where["requested_at_ms <"] = before_ms
    rows = services.economy.store.read("payouts", where,
                                       order_by=("requested_at_ms DESC", "id"), limit=limit + 1)
    page = rows[:limit]
    return PayoutPageOut([_payout(row) for row in page],
                         page[-1]["requested_at_ms"] if len(rows) > limit else None)


@get("/v1/payouts/review", sync_to_thread=True)
def review_queue(services: Svc, principal: Who, limit: PageLimit = 50) -> list[HoldOut]:
    """Open risk holds, oldest first, each with the payouts it holds (admin keys)."""
    _admin_only(principal)
    return [HoldOut(hold["id"], hold["user_id"], hold["rule"], hold["reason"],
                    hold["created_at_ms"], [_payout(row) for row in hold["payouts"]])
            for hold in services.payouts.review_queue(limit)]


@post("/v1/payouts/review/{hold_id:str}", sync_to_thread=True, status_code=200)
def review_hold(services: Svc, principal: Who, hold_id: FromPath[str],
                data: JSONBody[ReviewIn]) -> ReviewOut:
    """Release a risk hold (its payouts go on) or reject it (they fail) (admin keys)."""
    _admin_only(principal)
    if not services.payouts.review(hold_id, f"admin:{principal.key_id}", release=data.release):
        raise refuse(codes.NOT_FOUND, f"no open hold {hold_id}")
    return ReviewOut(hold_id, "released" if data.release else "rejected")


# -- limits ------------------------------------------------------------------------------------


@get("/v1/users/{user_id:str}/limits", sync_to_thread=True)
def get_limits(services: Svc, principal: Who, user_id: FromPath[str]) -> list[LimitOut]:
    """A user's spending limits in force, and increases still cooling off."""
    user = act_for(services, principal, user_id)
    economy = services.economy
    rows = economy.store.read("spend_limits", {"owner": user_id})
    now = economy.clock_ms()
    answer = []
    for metric in LIMIT_METRICS:
        own = next((row for row in rows if row["metric"] == metric), None)
        waiting = (own is not None and own["pending_effective_at_ms"] is not None
                   and own["pending_effective_at_ms"] > now)
        answer.append(LimitOut(
            metric, economy.effective_limit(user, rows, metric),
            own["pending_amount"] if waiting and own else None,
            own["pending_effective_at_ms"] if waiting and own else None))
    return answer


@put("/v1/users/{user_id:str}/limits/{metric:str}", sync_to_thread=True)
def set_limit(services: Svc, principal: Who, user_id: FromPath[str], metric: FromPath[str],
              data: JSONBody[LimitIn]) -> LimitOut:
    """Set a spending limit; an increase needs a two-factor code and a cooling-off period.

    A decrease applies at once; ``null`` removes the limit (an increase).
    """
    act_for(services, principal, user_id)
    state = services.economy.set_limit(user_id, metric, data.coins, data.totp)
    if isinstance(state, Failure):
        raise ApiError(problem(state.code, state.detail))
    if state["pending_effective_at_ms"] is None:
        return LimitOut(metric, state["amount"])
    return LimitOut(metric, state["amount"], state["pending_amount"],
                    state["pending_effective_at_ms"])


# -- teams -------------------------------------------------------------------------------------


@post("/v1/teams", sync_to_thread=True, status_code=201)
def create_team(services: Svc, principal: Who, data: JSONBody[TeamIn]) -> TeamOut:
    """A new team account owned by a user."""
    act_for(services, principal, data.owner_id)
    _done(services.economy.create_team(data.id, data.owner_id, data.name))
    return TeamOut(data.id, data.name, data.owner_id)


@put("/v1/teams/{team_id:str}/members/{user_id:str}", sync_to_thread=True)
def set_team_member(services: Svc, principal: Who, team_id: FromPath[str],
                    user_id: FromPath[str], data: JSONBody[MemberIn]) -> MemberOut:
    """Add a member to a team or change their budgets (its owner, their platform or admin)."""
    teams = services.economy.store.read("teams", {"id": team_id}, limit=1)
    if not teams:
        raise refuse(codes.NOT_FOUND, f"no team {team_id}")
    act_for(services, principal, teams[0]["owner_id"])
    if principal.role == "service":
        act_for(services, principal, user_id)
    else:
        user_of(services, user_id)
    _done(services.economy.set_member(team_id, user_id,
                                      budget_daily_coins=data.budget_daily_coins,
                                      budget_monthly_coins=data.budget_monthly_coins))
    return MemberOut(team_id, user_id, data.budget_daily_coins, data.budget_monthly_coins)


# -- admin -------------------------------------------------------------------------------------


@post("/v1/admin/freezes", sync_to_thread=True, status_code=200)
def freeze_user(services: Svc, principal: Who, data: JSONBody[FreezeIn]) -> FreezeOut:
    """Freeze or unfreeze a user: a frozen user can't buy, gift, receive or cash out (admin)."""
    _admin_only(principal)
    _done(admin.freeze(services.economy, principal.key_id, data.user_id, data.frozen,
                       data.reason))
    return FreezeOut(data.user_id, data.frozen)


@post("/v1/admin/adjustments", sync_to_thread=True, status_code=201)
def propose_adjustment(services: Svc, principal: Who, data: JSONBody[AdjustmentIn],
                       request: Request[Any, Any, Any]) -> AdjustmentOut:
    """Propose an adjustment, which another admin approves (admin keys)."""
    _admin_only(principal)
    proposed = admin.propose_adjustment(services.economy, principal.key_id, data.ledger,
                                        data.owner, data.kind, data.amount, data.reason,
                                        key=idempotency_key(request))
    if isinstance(proposed, Failure):
        raise ApiError(problem(proposed.code, proposed.detail))
    return AdjustmentOut(proposed, "proposed")


@post("/v1/admin/adjustments/{adjustment_id:str}/approve", sync_to_thread=True,
      status_code=200)
def approve_adjustment(services: Svc, principal: Who,
                       adjustment_id: FromPath[str]) -> AdjustmentOut:
    """Apply a proposed adjustment; the approving admin is not its proposer (admin keys)."""
    _admin_only(principal)
    ok(admin.approve_adjustment(services.economy, adjustment_id, principal.key_id))
    return AdjustmentOut(adjustment_id, "applied")


@post("/v1/admin/adjustments/{adjustment_id:str}/reject", sync_to_thread=True,
      status_code=200)
def reject_adjustment(services: Svc, principal: Who, adjustment_id: FromPath[str],
                      data: JSONBody[RejectIn]) -> AdjustmentOut:
    """Reject a proposed adjustment, with a reason (admin keys)."""
    _admin_only(principal)
    _done(admin.reject_adjustment(services.economy, adjustment_id, principal.key_id,
                                  data.reason))
    return AdjustmentOut(adjustment_id, "rejected")


# -- reports -----------------------------------------------------------------------------------


@get("/v1/creators/{creator_id:str}/statements/{year:int}/{month:int}", sync_to_thread=True)
def get_statement(services: Svc, principal: Who, creator_id: FromPath[str],
                  year: Annotated[int, Parameter(ge=1970, le=9999)],
                  month: Annotated[int, Parameter(ge=1, le=12)]) -> reports.Statement:
    """A creator's monthly statement, in the creator's time zone (the creator or admin)."""
    act_for(services, principal, creator_id)
    statement = reports.creator_statement(services.economy, creator_id, year, month)
    if isinstance(statement, Failure):
        raise ApiError(problem(statement.code, statement.detail))
    return statement


@get("/v1/reports/liability", sync_to_thread=True)
def get_liability(services: Svc, principal: Who) -> list[LiabilityOut]:
    """Unspent coins and unpaid diamonds at cash value, per currency (admin keys)."""
    _admin_only(principal)
    return [LiabilityOut(row.currency, row.unspent_coins, row.unspent_coins_minor,
                         row.unpaid_diamonds, row.unpaid_diamonds_minor, row.cash_held_minor,
                         row.total_minor, row.covered)
            for row in reports.liability_report(services.economy).values()]


@post("/v1/reports/reconciliation/{provider:str}", sync_to_thread=True, status_code=200)
def reconcile(services: Svc, principal: Who, provider: FromPath[str],
              data: JSONBody[ReconciliationIn]) -> ReconciliationOut:
    """Compare a provider's settlement report with giftflow's records (admin keys)."""
    _admin_only(principal)
    found = reports.reconcile(
        services.economy, provider,
        [reports.SettlementRow(row.payment_ref, row.kind, row.amount_minor, row.currency)
         for row in data.rows], since_ms=data.since_ms, until_ms=data.until_ms)
    if isinstance(found, Failure):
        raise ApiError(problem(found.code, found.detail))
    return ReconciliationOut([DifferenceOut(d.issue, d.kind, d.ref, d.expected_minor,
                                            d.actual_minor, d.expected_currency,
                                            d.actual_currency) for d in found])


ROUTES: list[Any] = [
    enroll_two_factor, confirm_two_factor, set_kyc, list_receipts, get_receipt, stripe_webhook,
    list_payouts, review_queue, review_hold, get_limits, set_limit, create_team,
    set_team_member, freeze_user, propose_adjustment, approve_adjustment, reject_adjustment,
    get_statement, get_liability, reconcile,
]
"""Route handlers added to the application."""

__all__ = ["ROUTES", "Services"]
