"""The economy's endpoints beyond the core (giftflow.api.routes), over HTTP, on both stores."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pyotp
from api_world import make_user
from litestar.testing import TestClient
from stripe_events import OTHER_SECRET, SECRET, event_body, sign

from giftflow.api.app import Services, create_app

DIAMONDS_FOR_TEN_DOLLARS = 20_000_000
"""2,000 diamonds in DIAMOND minor units: $10 at 1 cent per 2 diamonds, the US minimum."""



def _key(services: Services, role: str, owner: str = "") -> dict[str, str]:
    return {"Authorization": f"Bearer {services.access.create_key(role, owner)}"}  # type: ignore[arg-type]


def _refused(answer: Any, status: int, code: str, rule: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    assert body["code"] == code, body
    if rule is not None:
        assert body["rule"] == rule, body


def _enroll(client: TestClient, headers: dict[str, str], user: str) -> pyotp.TOTP:  # type: ignore[type-arg]
    enrolled = client.post(f"/v1/users/{user}/two-factor", headers=headers)
    assert enrolled.status_code == 201, enrolled.text
    assert enrolled.json()["provisioning_uri"].startswith("otpauth://totp/")
    totp = pyotp.TOTP(enrolled.json()["seed"])
    confirmed = client.post(f"/v1/users/{user}/two-factor/confirm", headers=headers,
                            json={"code": totp.at(time.time())})
    assert confirmed.status_code == 200, confirmed.text
    return totp


def _credit_diamonds(client: TestClient, services: Services,  # type: ignore[type-arg]
                     creator: str, amount: int) -> None:
    first, second = _key(services, "admin"), _key(services, "admin")
    proposed = client.post("/v1/admin/adjustments", headers=first, json={
        "ledger": "DIAMOND", "owner": f"user:{creator}", "kind": "diamonds:available",
        "amount": amount, "reason": "goodwill credit"})
    assert proposed.status_code == 201, proposed.text
    assert proposed.json()["status"] == "proposed"
    adjustment = proposed.json()["id"]
    _refused(client.post(f"/v1/admin/adjustments/{adjustment}/approve", headers=first),
             422, "second_admin_required")
    approved = client.post(f"/v1/admin/adjustments/{adjustment}/approve", headers=second)
    assert (approved.status_code, approved.json()["status"]) == (200, "applied"), approved.text


def test_a_creator_enrols_two_factor_and_cashes_out(
        client: TestClient, admin: dict[str, str], services: Services) -> None:  # type: ignore[type-arg]
    """An admin verifies a creator's identity and a second admin approves a diamond credit;
    the creator enrols two-factor, a payout without a code is 422 ``payout_rule_failed`` with
    rule ``two_factor_required``, with a code it is reserved and listed; re-enrolling is 409,
    KYC by a non-admin and another creator's payouts are 403.
    """
    creator = make_user(client, admin, "star", creator=True)
    other = make_user(client, admin, "rival", creator=True)
    own = _key(services, "creator", creator)
    _refused(client.put(f"/v1/users/{creator}/kyc", headers=own, json={"status": "verified"}),
             403, "forbidden")
    kyc = client.put(f"/v1/users/{creator}/kyc", headers=admin, json={"status": "verified"})
    assert (kyc.status_code, kyc.json()["status"]) == (200, "verified"), kyc.text
    _credit_diamonds(client, services, creator, DIAMONDS_FOR_TEN_DOLLARS)
    totp = _enroll(client, own, creator)
    _refused(client.post(f"/v1/users/{creator}/two-factor", headers=own), 409, "invalid_state")
    request = {"creator_id": creator, "diamonds": DIAMONDS_FOR_TEN_DOLLARS, "method": "simulator"}
    _refused(client.post("/v1/payouts", headers=own, json=request),
             422, "payout_rule_failed", "two_factor_required")
    paid = client.post("/v1/payouts", headers=own,
                       json={**request, "totp": totp.at(time.time() + 30)})
    assert paid.status_code == 201, paid.text
    assert (paid.json()["cash_minor"], paid.json()["currency"]) == (1000, "USD")
    listed = client.get(f"/v1/users/{creator}/payouts", headers=own)
    assert listed.status_code == 200, listed.text
    assert [p["id"] for p in listed.json()["payouts"]] == [paid.json()["id"]]
    assert listed.json()["next_before_ms"] is None
    _refused(client.get(f"/v1/users/{other}/payouts", headers=own), 403, "forbidden")


def test_a_buyer_reads_their_receipts(client: TestClient, admin: dict[str, str],  # type: ignore[type-arg]
                                      services: Services) -> None:
    """A simulator purchase issues a receipt: the buyer lists it and reads it as text/plain;
    another buyer is 403 and an unknown number 404.
    """
    viewer = make_user(client, admin, "fan")
    other = make_user(client, admin, "other")
    bought = client.post("/v1/purchases", headers=admin,
                         json={"user_id": viewer, "pack_id": "web-700", "channel": "web"})
    number = bought.json()["receipt_id"]
    own = _key(services, "viewer", viewer)
    listed = client.get(f"/v1/users/{viewer}/receipts?limit=10", headers=own)
    assert listed.status_code == 200, listed.text
    receipts = listed.json()["receipts"]
    assert [(r["number"], r["coins"]) for r in receipts] == [(number, 700)]
    assert isinstance(receipts[0]["price_minor"], int)
    document = client.get(f"/v1/receipts/{number}", headers=own)
    assert document.status_code == 200, document.text
    assert document.headers["content-type"].startswith("text/plain")
    assert number in document.text and "700 coins" in document.text
    stranger = _key(services, "viewer", other)
    _refused(client.get(f"/v1/receipts/{number}", headers=stranger), 403, "forbidden")
    _refused(client.get(f"/v1/users/{viewer}/receipts", headers=stranger), 403, "forbidden")
    _refused(client.get("/v1/receipts/R-none", headers=own), 404, "not_found")
    _refused(client.get(f"/v1/users/{viewer}/receipts?limit=1000", headers=own),
             400, "validation_error")


def _intent(order_id: str, amount: int) -> dict[str, Any]:
    return {"id": "pi_web_1", "object": "payment_intent", "amount": amount,
            "amount_received": amount, "currency": "usd", "status": "succeeded",
            "latest_charge": "ch_1", "metadata": {"order_id": order_id}}


def _deliver(client: TestClient, body: bytes, secret: str = SECRET) -> Any:  # type: ignore[type-arg]
    return client.post("/v1/providers/stripe/webhook", content=body,
                       headers={"Stripe-Signature": sign(body, secret),
                                "Content-Type": "application/json"})


def test_stripe_webhooks_credit_purchases_once(
        client: TestClient, admin: dict[str, str], services: Services) -> None:  # type: ignore[type-arg]
    """A signed payment_intent.succeeded credits the Stripe order (200, a replay changes
    nothing); a wrong signature is 400 ``bad_signature``; an event giftflow ignores is 200; a
    refund of a payment not credited yet is 202; without a secret the endpoint is 503.
    """
    viewer = make_user(client, admin, "fan")
    order = client.post("/v1/purchases", headers=admin, json={
        "user_id": viewer, "pack_id": "web-700", "channel": "web", "provider": "stripe"})
    assert (order.status_code, order.json()["status"]) == (201, "open"), order.text
    packs = client.get("/v1/catalog/coin-packs?region=US&channel=web", headers=admin).json()
    price = next(p["price_minor"] for p in packs if p["id"] == "web-700")
    paid = event_body("payment_intent.succeeded", _intent(order.json()["id"], price), "evt_p")
    _refused(_deliver(client, paid), 404, "provider_unconfigured")
    configured = replace(services, stripe_webhook_secret=SECRET)
    with TestClient(app=create_app(configured)) as configured_client:
        _stripe_deliveries(configured_client, admin, viewer, paid)


def _stripe_deliveries(client: TestClient, admin: dict[str, str], viewer: str,  # type: ignore[type-arg]
                       paid: bytes) -> None:
    _refused(_deliver(client, paid, OTHER_SECRET), 400, "bad_signature")
    assert client.get(f"/v1/users/{viewer}/wallet", headers=admin).json()["coins"] == 0
    first = _deliver(client, paid)
    assert (first.status_code, first.json()["status"]) == (200, "processed"), first.text
    again = _deliver(client, paid)
    assert (again.status_code, again.json()["replayed"]) == (200, True), again.text
    assert client.get(f"/v1/users/{viewer}/wallet", headers=admin).json()["coins"] == 700
    ignored = _deliver(client, event_body("customer.created", {"id": "cus_1",
                                                               "object": "customer"}))
    assert (ignored.status_code, ignored.json()["status"]) == (200, "ignored"), ignored.text
    early = event_body("charge.refunded", {
        "id": "ch_9", "object": "charge", "amount": 499, "amount_refunded": 499,
        "currency": "usd", "payment_intent": "pi_later", "refunded": True, "metadata": {}},
        "evt_r")
    waiting = _deliver(client, early)
    assert (waiting.status_code, waiting.json()["status"]) == (202, "waiting"), waiting.text


def test_limits_decrease_at_once_and_increase_with_two_factor(
        client: TestClient, admin: dict[str, str], services: Services) -> None:  # type: ignore[type-arg]
    """A user lowers a daily purchase limit at once; raising it without two-factor is 422
    ``two_factor_not_enrolled``, with a code it waits for the cooling-off period;
    another user's limits are 403, an unknown metric 400.
    """
    viewer = make_user(client, admin, "fan")
    other = make_user(client, admin, "other")
    own = _key(services, "viewer", viewer)
    limits = client.get(f"/v1/users/{viewer}/limits", headers=own)
    assert limits.status_code == 200, limits.text
    assert {row["metric"] for row in limits.json()} == {
        "purchased_daily", "purchased_monthly", "gifted_daily", "gifted_monthly"}
    lowered = client.put(f"/v1/users/{viewer}/limits/purchased_daily", headers=own,
                         json={"coins": 100})
    assert (lowered.status_code, lowered.json()["coins"]) == (200, 100), lowered.text
    _refused(client.put(f"/v1/users/{viewer}/limits/purchased_daily", headers=own,
                        json={"coins": 1000}), 422, "two_factor_not_enrolled")
    totp = _enroll(client, own, viewer)
    raised = client.put(f"/v1/users/{viewer}/limits/purchased_daily", headers=own,
                        json={"coins": 1000, "totp": totp.at(time.time() + 30)})
    assert raised.status_code == 200, raised.text
    assert (raised.json()["coins"], raised.json()["pending_coins"]) == (100, 1000)
    now = {row["metric"]: row for row in
           client.get(f"/v1/users/{viewer}/limits", headers=own).json()}
    assert (now["purchased_daily"]["coins"], now["purchased_daily"]["pending_coins"]) == (
        100, 1000)
    _refused(client.get(f"/v1/users/{other}/limits", headers=own), 403, "forbidden")
    _refused(client.put(f"/v1/users/{viewer}/limits/spent_yearly", headers=own,
                        json={"coins": 1}), 400, "validation_error")


def test_teams_have_owners_and_member_budgets(
        client: TestClient, admin: dict[str, str], services: Services) -> None:  # type: ignore[type-arg]
    """A user creates a team and sets a member's budgets; another user may neither create a
    team for them nor change its members (403); an unknown team is 404.
    """
    owner = make_user(client, admin, "agency")
    member = make_user(client, admin, "member")
    own = _key(services, "viewer", owner)
    created = client.post("/v1/teams", headers=own,
                          json={"id": "acme", "name": "Acme", "owner_id": owner})
    assert created.status_code == 201, created.text
    assert created.json() == {"id": "acme", "name": "Acme", "owner_id": owner}
    budget = client.put(f"/v1/teams/acme/members/{member}", headers=own,
                        json={"budget_daily_coins": 50})
    assert budget.status_code == 200, budget.text
    assert (budget.json()["budget_daily_coins"], budget.json()["budget_monthly_coins"]) == (
        50, None)
    stranger = _key(services, "viewer", member)
    _refused(client.post("/v1/teams", headers=stranger,
                         json={"id": "other", "name": "Other", "owner_id": owner}),
             403, "forbidden")
    _refused(client.put(f"/v1/teams/acme/members/{member}", headers=stranger, json={}),
             403, "forbidden")
    _refused(client.put(f"/v1/teams/none/members/{member}", headers=own, json={}),
             404, "not_found")


def test_admins_freeze_users_and_reject_adjustments(
        client: TestClient, admin: dict[str, str], services: Services) -> None:  # type: ignore[type-arg]
    """An admin freezes a user, whose purchase is then 422 ``account_frozen``; a rejected
    adjustment can't be rejected again (``adjustment_not_proposed``); a viewer key is 403 and
    no key 401 on admin endpoints.
    """
    viewer = make_user(client, admin, "fan")
    frozen = client.post("/v1/admin/freezes", headers=admin,
                         json={"user_id": viewer, "frozen": True, "reason": "chargebacks"})
    assert (frozen.status_code, frozen.json()["frozen"]) == (200, True), frozen.text
    _refused(client.post("/v1/purchases", headers=admin,
                         json={"user_id": viewer, "pack_id": "web-70", "channel": "web"}),
             422, "account_frozen")
    proposed = client.post("/v1/admin/adjustments", headers=admin, json={
        "ledger": "COIN", "owner": f"user:{viewer}", "kind": "wallet", "amount": -5,
        "reason": "duplicate credit"}).json()["id"]
    rejected = client.post(f"/v1/admin/adjustments/{proposed}/reject", headers=admin,
                           json={"reason": "not a duplicate"})
    assert (rejected.status_code, rejected.json()["status"]) == (200, "rejected"), rejected.text
    _refused(client.post(f"/v1/admin/adjustments/{proposed}/reject", headers=admin,
                         json={"reason": "again"}), 422, "adjustment_not_proposed")
    own = _key(services, "viewer", viewer)
    _refused(client.post("/v1/admin/freezes", headers=own,
                         json={"user_id": viewer, "frozen": False, "reason": "me"}),
             403, "forbidden")
    _refused(client.post("/v1/admin/freezes",
                         json={"user_id": viewer, "frozen": False, "reason": "me"}),
             401, "unauthorized")


def test_risk_holds_are_reviewed_by_admins(
        client: TestClient, admin: dict[str, str], services: Services) -> None:  # type: ignore[type-arg]
    """An open risk hold is in the review queue; an admin releases it once (again is 404);
    a creator key can't see the queue (403).
    """
    creator = make_user(client, admin, "star", creator=True)
    economy = services.economy

    def hold(tx: Any) -> None:
        economy.hold(tx, creator, "linked_accounts", "shares a card with a frozen user")
        tx.commit()

    economy.run(hold)
    queue = client.get("/v1/payouts/review", headers=admin)
    assert queue.status_code == 200, queue.text
    assert [(h["user_id"], h["rule"]) for h in queue.json()] == [(creator, "linked_accounts")]
    hold_id = queue.json()[0]["id"]
    _refused(client.get("/v1/payouts/review", headers=_key(services, "creator", creator)),
             403, "forbidden")
    released = client.post(f"/v1/payouts/review/{hold_id}", headers=admin,
                           json={"release": True})
    assert (released.status_code, released.json()["status"]) == (200, "released")
    assert client.get("/v1/payouts/review", headers=admin).json() == []
    _refused(client.post(f"/v1/payouts/review/{hold_id}", headers=admin,
                         json={"release": False}), 404, "not_found")


def test_reports_for_creators_and_admins(
        client: TestClient, admin: dict[str, str], services: Services) -> None:  # type: ignore[type-arg]
    """A creator reads their month's statement (another creator's is 403); admins read the
    liability report and reconcile a settlement report, which finds a payment giftflow lacks;
    a creator key is 403 on both, and a month 13 is 400.
    """
    creator = make_user(client, admin, "star", creator=True)
    other = make_user(client, admin, "rival", creator=True)
    own = _key(services, "creator", creator)
    viewer = make_user(client, admin, "fan")
    client.post("/v1/purchases", headers=admin,
                json={"user_id": viewer, "pack_id": "web-700", "channel": "web"})
    today = time.gmtime()
    url = f"/v1/creators/{creator}/statements/{today.tm_year}/{today.tm_mon}"
    statement = client.get(url, headers=own)
    assert statement.status_code == 200, statement.text
    assert (statement.json()["creator_id"], statement.json()["gifts_received"]) == (creator, 0)
    _refused(client.get(f"/v1/creators/{other}/statements/{today.tm_year}/{today.tm_mon}",
                        headers=own), 403, "forbidden")
    _refused(client.get(f"/v1/creators/{creator}/statements/2024/13", headers=own),
             400, "validation_error")
    liability = client.get("/v1/reports/liability", headers=admin)
    assert liability.status_code == 200, liability.text
    usd = next(row for row in liability.json() if row["currency"] == "USD")
    assert usd["unspent_coins"] == 700
    assert usd["total_minor"] == usd["unspent_coins_minor"] + usd["unpaid_diamonds_minor"]
    _refused(client.get("/v1/reports/liability", headers=own), 403, "forbidden")
    report = {"rows": [{"payment_ref": "pi_ghost", "kind": "payment", "amount_minor": 499,
                        "currency": "USD"}]}
    found = client.post("/v1/reports/reconciliation/stripe", headers=admin, json=report)
    assert found.status_code == 200, found.text
    assert [(d["issue"], d["ref"], d["actual_minor"]) for d in found.json()["differences"]] == [
        ("missing_in_giftflow", "pi_ghost", 499)]
    _refused(client.post("/v1/reports/reconciliation/stripe", headers=own, json=report),
             403, "forbidden")
