"""Payouts: two-phase, with every rule of SPEC.md §2.3 failing with its own code.

A request reserves the diamonds (a pending transfer from the creator's available balance, with
no timeout) and records the payout ``requested``. :meth:`Payouts.process` submits requested
payouts to their provider; :meth:`Payouts.poll` asks providers about submitted ones. The states:

``requested`` → ``submitting`` (committed before the provider is called) → ``submitted`` →
``paid`` (the reservation is posted and the cash leaves) or ``failed`` (voided: the diamonds
return). A paid payout that comes back (PayPal ``RETURNED`` or ``REVERSED``) is ``returned``,
credited by a new operation. ``held`` waits for a risk reviewer, who releases or rejects it.

Once a payout is ``submitting`` its reservation never expires: only the provider's final status
posts or voids it. A provider that does not answer leaves it as it is, and the next poll asks
again; a provider that never received it (``not_found``) gets it again under the same
idempotency key, so nothing is paid twice and no reservation is lost, across restarts too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from giftflow.economy import accounts as acc
from giftflow.economy import codes
from giftflow.economy.periods import local_date
from giftflow.economy.ports import EconomyTx, Row
from giftflow.economy.providers import (
    PayoutProvider,
    PayoutRequest,
    PayoutState,
    PayoutStatus,
    ProviderFailure,
)
from giftflow.economy.service import stable_id, totp_columns, totp_state
from giftflow.economy.twofactor import TwoFactorOk, verify
from giftflow.ledger import Applied, Failure, Operation, Phase, Result, TransferRequest

if TYPE_CHECKING:
    from giftflow.economy.service import EconomyService

OPEN_STATUSES: Final = ("requested", "held", "submitting", "submitted")
"""Payouts whose diamonds are still reserved."""

COUNTED_STATUSES: Final = (*OPEN_STATUSES, "paid")
"""Payouts that count against the daily maximum."""


@dataclass(frozen=True, slots=True)
class PayoutOptions:
    """Bounds of the payout workers."""

    batch_payouts_max: int = 100
    """Payouts one :meth:`Payouts.process` or :meth:`Payouts.poll` call handles."""


def check_two_factor(service: EconomyService, tx: EconomyTx, user: Row,
                     code: str | None) -> Failure | None:
    """Check a two-factor code and stage the user's new state; a refusal is never stored."""
    state = totp_state(user)
    if state is None:
        return Failure("two_factor_not_enrolled",
                       "two-factor authentication is not set up for this user")
    state, result = verify(state, user["id"], code, service.cipher, service.clock_ms(),
                           service.options.two_factor)
    tx.update("users", {"id": user["id"]}, totp_columns(state))
    if isinstance(result, TwoFactorOk):
        return None
    return Failure(result.code, result.detail)


class Payouts:
    """Payout requests, provider submission and settlement, and risk review."""

    def __init__(self, service: EconomyService, providers: Mapping[str, PayoutProvider],
                 options: PayoutOptions | None = None) -> None:
        self.service = service
        self.providers = dict(providers)
        self.options = options or PayoutOptions()

    # -- request ----------------------------------------------------------------------------------

    def request(self, creator_id: str, diamonds: int, method: str, totp: str | None,
                key: str) -> Result:
        """Reserve ``diamonds`` (minor units) for a payout through ``method``.

        The diamonds that the cash (rounded down) does not use stay in the balance. A refused
        two-factor code is not stored under the key (it is not a business field), so the same
        request can be retried with a good code; failed codes still count towards the lockout.
        """
        service = self.service
        if type(diamonds) is not int or diamonds <= 0:
            return Failure(codes.VALIDATION_ERROR, "diamonds is a positive whole number")
        if method not in self.providers:
            return Failure(codes.UNKNOWN_PAYOUT_METHOD,
                           f"no payout method {method!r}; configured: {sorted(self.providers)}")
        service.book.open([acc.available(creator_id), acc.DIAMOND_PAID_OUT])
        scope = f"user:{creator_id}|POST /v1/payouts"
        fields = {"creator": creator_id, "diamonds": diamonds, "method": method}
        return service.run(lambda tx: self._request(tx, scope, key, fields, totp))

    def _request(self, tx: EconomyTx, scope: str, key: str, fields: dict[str, Any],
                 totp: str | None) -> Result:
        service = self.service
        if tx.key_states([(scope, key)])[(scope, key)] != "new":
            return service.single(tx, Operation(scope, key, "payout", fields, ()))
        creator_id, diamonds = fields["creator"], fields["diamonds"]
        users = tx.rows("users", {"id": creator_id}, lock=True)
        if not users or not users[0]["is_creator"]:
            return Failure(codes.NOT_FOUND, f"no creator {creator_id}")
        creator = users[0]
        region = service.region_of(creator)
        cash = region.diamonds_to_cash(diamonds)
        refusal = self._rule_refusal(tx, creator, cash.cash_minor)
        if refusal is None:
            second = self._two_factor(tx, creator, totp)
            if second is not None:
                tx.commit()  # the failed attempt counts even though nothing else happens
                return second
        payout_id = stable_id("pay", scope, key)
        debit_id, credit_id = service.ids([acc.available(creator_id), acc.DIAMOND_PAID_OUT])
        leg = TransferRequest("DIAMOND", debit_id, credit_id, cash.converted_diamonds_minor,
                              "payout", Phase.PENDING, shortfall_code=codes.INSUFFICIENT_DIAMONDS)
        response = {"payout": payout_id, "diamonds": cash.converted_diamonds_minor,
                    "diamonds_kept": cash.remainder_diamonds_minor,
                    "cash_minor": cash.cash_minor, "currency": region.currency}
        result = service.single(tx, Operation(
            scope, key, "payout", fields, () if refusal else (leg,),
            actor=f"user:{creator_id}", respond=lambda _: response, refusal=refusal))
        if isinstance(result, Applied) and not result.replayed:
            now = service.clock_ms()
            tx.insert("payouts", {
                "id": payout_id, "creator_id": creator_id, "method": fields["method"],
                "receiver": creator["payout_receiver"] or creator_id,
                "diamonds": cash.converted_diamonds_minor, "cash_minor": cash.cash_minor,
                "currency": region.currency, "status": "requested",
                "local_day": local_date(now, creator["time_zone"]).isoformat(),
                "pending_transfer_id": result.transfer_ids[0], "requested_at_ms": now,
                "updated_at_ms": now})
        tx.commit()
        return result

    def _rule_refusal(self, tx: EconomyTx, creator: Row,  # noqa: PLR0911 -- a return per rule
                      cash_minor: int
                      ) -> tuple[str, str] | None:
        """The first payout rule that fails, in SPEC.md §2.3's order (two-factor aside)."""
        service = self.service
        region = service.region_of(creator)
        now = service.clock_ms()
        if creator["frozen"]:
            return (codes.ACCOUNT_FROZEN, f"creator {creator['id']} is frozen")
        if cash_minor < region.payout_min_minor:
            return (codes.PAYOUT_BELOW_MINIMUM,
                    (f"{cash_minor} is below the minimum of {region.payout_min_minor} "
                    f"{region.currency} minor units"))
        today = local_date(now, creator["time_zone"]).isoformat()
        used = sum(row["cash_minor"] for row in tx.rows(
            "payouts", {"creator_id": creator["id"], "local_day": today,
                        "status in": COUNTED_STATUSES}))
        if used + cash_minor > region.payout_daily_max_minor:
            return (codes.PAYOUT_DAILY_MAX,
                    (f"{used} paid out today; the daily maximum is "
                    f"{region.payout_daily_max_minor}"))
        if service.age(creator, now) < region.min_age_payout:
            return (codes.PAYOUT_UNDERAGE, f"creators must be {region.min_age_payout}+")
        if creator["kyc_status"] != "verified":
            return (codes.KYC_REQUIRED, "the creator's identity is not verified")
        if not region.payouts_allowed:
            return (codes.PAYOUTS_NOT_ALLOWED, f"region {creator['region']} has no payouts")
        if tx.rows("risk_holds", {"user_id": creator["id"], "status": "open"}, limit=1):
            return (codes.RISK_HOLD, "a risk hold is in place; a reviewer will look at it")
        return None

    def _two_factor(self, tx: EconomyTx, user: Row, code: str | None) -> Failure | None:
        return check_two_factor(self.service, tx, user, code)

    # -- provider side ----------------------------------------------------------------------------

    def process(self) -> list[Row]:
        """Submit requested payouts to their providers; returns the payouts as they end up."""
        due = self.service.store.read("payouts", {"status": "requested"},
                                      order_by=("requested_at_ms",),
                                      limit=self.options.batch_payouts_max)
        return [self._submit(row) for row in due]

    def _submit(self, row: Row) -> Row:
        if not self._mark(row["id"], ("requested",), {"status": "submitting"}):
            return row
        provider = self.providers[row["method"]]
        answer = provider.submit(self._provider_request(row))
        return self._settle(row, answer)

    def poll(self) -> list[Row]:
        """Ask providers about payouts in flight (and about paid ones that may come back)."""
        rows = self.service.store.read("payouts", {"status in": ("submitting", "submitted")},
                                       order_by=("updated_at_ms",),
                                       limit=self.options.batch_payouts_max)
        done = []
        for row in rows:
            answer = self.providers[row["method"]].status(self._provider_request(row))
            if isinstance(answer, ProviderFailure) and answer.code == "not_found":
                answer = self.providers[row["method"]].submit(self._provider_request(row))
            done.append(self._settle(row, answer))
        return done

    def check_paid(self, payout_id: str) -> Row | None:
        """Ask the provider about a paid payout: money that came back is credited once."""
        rows = self.service.store.read("payouts", {"id": payout_id, "status": "paid"})
        if not rows:
            return None
        answer = self.providers[rows[0]["method"]].status(self._provider_request(rows[0]))
        return self._settle(rows[0], answer)

    @staticmethod
    def _provider_request(row: Row) -> PayoutRequest:
        return PayoutRequest(row["id"], row["id"], row["receiver"], row["cash_minor"],
                             row["currency"], note="giftflow payout",
                             provider_ref=row["provider_ref"])

    def _settle(self, row: Row, answer: PayoutState | ProviderFailure) -> Row:
        if isinstance(answer, ProviderFailure):
            if answer.code == "rejected" and row["status"] in ("submitting", "submitted"):
                return self._finish(row, "failed", answer.detail)
            self._mark(row["id"], (row["status"],), {"detail": answer.detail})
            return self._reload(row)
        status = answer.status
        if status is PayoutStatus.PENDING:
            self._mark(row["id"], ("submitting", "submitted"),
                       {"status": "submitted", "provider_ref": answer.provider_ref})
            return self._reload(row)
        if status is PayoutStatus.SUCCESS:
            return self._finish(row, "paid", answer.detail, answer.provider_ref)
        if status in (PayoutStatus.FAILED, PayoutStatus.DENIED):
            return self._finish(row, "failed", answer.detail or status.value,
                                answer.provider_ref)
        # RETURNED or REVERSED: paid first if it was not yet, then credited back.
        if row["status"] != "paid" and row["status"] != "returned":
            row = self._finish(row, "paid", "", answer.provider_ref)
        return self._finish(row, "returned", answer.detail or status.value,
                            answer.provider_ref)

    def _finish(self, row: Row, status: str, detail: str, provider_ref: str = "") -> Row:
        """Post, void or credit back a payout with its own operation, once."""
        service = self.service
        currency, method = row["currency"], row["method"]
        scope, key = f"provider:{method}", f"payout:{row['id']}:{status}"
        if status == "paid":
            service.book.open([acc.cash(currency), acc.payout_clearing(currency, method)])
            legs = [TransferRequest.post(row["pending_transfer_id"], code="payout_paid"),
                    service.leg(acc.cash(currency), acc.payout_clearing(currency, method),
                                row["cash_minor"], "payout_paid")]
            allowed: tuple[str, ...] = ("submitting", "submitted", "held")
        elif status == "failed":
            legs = [TransferRequest.void(row["pending_transfer_id"], code="payout_failed")]
            allowed = ("submitting", "submitted", "held", "requested")
        else:
            service.book.open([acc.available(row["creator_id"])])
            legs = [service.leg(acc.DIAMOND_PAID_OUT, acc.available(row["creator_id"]),
                                row["diamonds"], "payout_returned"),
                    service.leg(acc.payout_clearing(currency, method), acc.cash(currency),
                                row["cash_minor"], "payout_returned")]
            allowed = ("paid",)
        fields = {"payout": row["id"], "status": status}

        def work(tx: EconomyTx) -> Result:
            if tx.key_states([(scope, key)])[(scope, key)] != "new":
                return service.single(tx, Operation(scope, key, "payout_" + status, fields, ()))
            current = tx.rows("payouts", {"id": row["id"]}, lock=True)[0]
            if current["status"] not in allowed:
                return Failure(codes.VALIDATION_ERROR,
                               f"payout {row['id']} is {current['status']}, not {allowed}")
            result = service.single(tx, Operation(scope, key, "payout_" + status, fields, legs,
                                                  actor=scope))
            if isinstance(result, Applied):
                changes = {"status": status, "detail": detail,
                           "updated_at_ms": service.clock_ms()}
                if provider_ref:
                    changes["provider_ref"] = provider_ref
                tx.update("payouts", {"id": row["id"]}, changes)
                service.emit(tx, "payout_" + status, row["creator_id"],
                             {"payout": row["id"], "cash_minor": row["cash_minor"],
                              "currency": currency})
            tx.commit()
            return result

        service.run(work)
        return self._reload(row)

    def _mark(self, payout_id: str, allowed: tuple[str, ...], changes: dict[str, Any]) -> bool:
        service = self.service

        def work(tx: EconomyTx) -> bool:
            rows = tx.rows("payouts", {"id": payout_id}, lock=True)
            if not rows or rows[0]["status"] not in allowed:
                return False
            tx.update("payouts", {"id": payout_id},
                      {**changes, "updated_at_ms": service.clock_ms()})
            tx.commit()
            return True

        return service.run(work) is True

    def _reload(self, row: Row) -> Row:
        return self.service.store.read("payouts", {"id": row["id"]})[0]

    # -- risk review ------------------------------------------------------------------------------

    def review_queue(self, limit: int = 100) -> list[dict[str, Any]]:
        """Open risk holds, each with its reason and the payouts it holds."""
        store = self.service.store
        holds = store.read("risk_holds", {"status": "open"}, order_by=("created_at_ms",),
                           limit=limit)
        return [{**hold, "payouts": store.read("payouts", {"creator_id": hold["user_id"],
                                                           "status": "held"})}
                for hold in holds]

    def review(self, hold_id: str, reviewer: str, *, release: bool) -> bool:
        """Release a hold (its payouts go on to the provider) or reject it (voided)."""
        service = self.service

        def work(tx: EconomyTx) -> Row | None:
            holds = tx.rows("risk_holds", {"id": hold_id, "status": "open"}, lock=True)
            if not holds:
                return None
            tx.update("risk_holds", {"id": hold_id},
                      {"status": "released" if release else "rejected", "reviewer": reviewer,
                       "resolved_at_ms": service.clock_ms()})
            still_open = [h for h in tx.rows("risk_holds", {"user_id": holds[0]["user_id"],
                                                            "status": "open"})
                          if h["id"] != hold_id]
            if release and not still_open:
                tx.update("payouts", {"creator_id": holds[0]["user_id"], "status": "held"},
                          {"status": "requested", "hold_reason": ""})
            tx.commit()
            return holds[0]

        hold = service.run(work)
        if not isinstance(hold, dict):
            return False
        if not release:
            for row in service.store.read("payouts", {"creator_id": hold["user_id"],
                                                      "status": "held"}):
                self._finish(row, "failed", f"rejected by {reviewer}")
        return True

