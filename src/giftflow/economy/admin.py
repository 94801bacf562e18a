"""Admin actions: freezing accounts, and adjustments that a second admin approves (SPEC.md §2.4).

A frozen user can neither buy, gift, receive gifts nor request payouts (the service refuses with
``account_frozen``). An adjustment is proposed with a reason by one admin and applied by another:
one ledger operation under scope ``admin:adjustments`` and the adjustment's id as key, so that
approving twice moves the money once. Expected failures are :class:`giftflow.ledger.Failure`
values with stable codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from giftflow.economy import accounts as acc
from giftflow.economy import codes
from giftflow.economy.accounts import AccountKey
from giftflow.economy.lots import LotView, take_fifo
from giftflow.economy.ports import EconomyTx, Row
from giftflow.economy.service import stable_id
from giftflow.invariants import fits_int64, invariant
from giftflow.ledger import Applied, Failure, Operation, Result

if TYPE_CHECKING:
    from giftflow.economy.service import EconomyService

REASON_CHARS_MAX: Final = 500
"""The longest reason of a freeze or an adjustment."""

ADMIN_ID_CHARS_MAX: Final = 128

ADJUSTMENT_SCOPE: Final = "admin:adjustments"
"""The idempotency scope of applied adjustments (the key is the adjustment's id)."""

ADJUSTMENT_NOT_PROPOSED: Final = codes.ADJUSTMENT_NOT_PROPOSED

ADJUSTMENT_LOTS_MAX: Final = 10_000
"""Unspent lots a coin-wallet debit reads."""

OWNER_PREFIXES: Final = ("user:", "team:", "provider:", "payout:")
OWNER_PATTERN: Final = f"^({acc.PLATFORM}$|{'|'.join(OWNER_PREFIXES)})"
"""The owners an adjustment may name, as a regular expression (for the API's schema)."""


def _reason_problem(reason: str) -> str:
    if not reason.strip() or len(reason) > REASON_CHARS_MAX:
        return f"a reason of 1..{REASON_CHARS_MAX} characters is required"
    return ""


def _admin_problem(admin_id: str) -> str:
    if not admin_id or len(admin_id) > ADMIN_ID_CHARS_MAX:
        return f"an admin id of 1..{ADMIN_ID_CHARS_MAX} characters is required"
    return ""


# -- freezing -------------------------------------------------------------------------------------


def freeze(service: EconomyService, admin_id: str, user_id: str, frozen: bool,
           reason: str) -> Failure | None:
    """Freeze (or unfreeze) a user; ``None`` when done.

    The change is recorded as a ledger operation without transfers (actor ``admin:<id>``, with
    the reason) and announced on the outbox as ``account_frozen`` or ``account_unfrozen``, in the
    same transaction.
    """
    problem = _admin_problem(admin_id) or _reason_problem(reason)
    if problem:
        return Failure(codes.VALIDATION_ERROR, problem)
    topic = "account_frozen" if frozen else "account_unfrozen"

    def work(tx: EconomyTx) -> Failure | None:
        if not tx.rows("users", {"id": user_id}, lock=True):
            return Failure(codes.NOT_FOUND, f"no user {user_id}")
        serial = tx.next_ids(1)
        fields = {"user": user_id, "frozen": frozen, "reason": reason, "serial": serial}
        result = service.single(tx, Operation("admin:accounts", f"{topic}:{user_id}:{serial}",
                                              topic, fields, (), actor=f"admin:{admin_id}"))
        invariant(isinstance(result, Applied), f"a fresh {topic} record applies: {result}")
        tx.update("users", {"id": user_id}, {"frozen": int(frozen)})
        service.emit(tx, topic, user_id, {"user": user_id, "admin": admin_id, "reason": reason,
                                          "at_ms": service.clock_ms()})
        tx.commit()
        return None

    return service.run(work)


# -- adjustments ----------------------------------------------------------------------------------


def propose_adjustment(service: EconomyService, admin_id: str, ledger: str, owner: str,
                       kind: str, amount: int, reason: str, *, key: str = "") -> str | Failure:
    """Propose moving ``amount`` (signed minor units) into account ``(ledger, owner, kind)``.

    A positive amount credits the account from the ledger's adjustments account; a negative one
    debits it. Returns the adjustment's id. With ``key``, a retry by the same admin returns the
    same id. Coin wallets can only be debited (coins enter a wallet with a lot, at purchase).
    """
    problem = (_admin_problem(admin_id) or _reason_problem(reason)
               or _target_problem(service, ledger, owner, kind, amount))
    if problem:
        return Failure(codes.VALIDATION_ERROR, problem)

    def work(tx: EconomyTx) -> str | Failure:
        if owner.startswith("user:") and not tx.rows("users",
                                                     {"id": owner.removeprefix("user:")}):
            return Failure(codes.NOT_FOUND, f"no user {owner}")
        adjustment_id = (stable_id("adj", f"admin:{admin_id}", key) if key
                         else f"adj_{tx.next_ids(1)}")
        if key and tx.rows("adjustments", {"id": adjustment_id}):
            return adjustment_id
        tx.insert("adjustments", {"id": adjustment_id, "ledger": ledger, "owner": owner,
                                  "account_kind": kind, "amount": amount, "reason": reason,
                                  "proposed_by": admin_id, "status": "proposed",
                                  "created_at_ms": service.clock_ms()})
        service.emit(tx, "adjustment_proposed", owner,
                     {"adjustment": adjustment_id, "admin": admin_id, "amount": amount,
                      "ledger": ledger, "kind": kind})
        tx.commit()
        return adjustment_id

    return service.run(work)


def _target_problem(service: EconomyService, ledger: str, owner: str, kind: str,
                    amount: int) -> str:
    if type(amount) is not int or amount == 0 or not fits_int64(abs(amount)):
        return "amount is a non-zero whole number of minor units"
    if ledger not in {spec.code for spec in service.ledger.store.ledgers()}:
        return f"no ledger {ledger!r}"
    if owner != acc.PLATFORM and not owner.startswith(OWNER_PREFIXES):
        return f"an owner is {acc.PLATFORM} or starts with one of {OWNER_PREFIXES}"
    if not kind or (ledger, owner, kind) == acc.adjustments(ledger):
        return "the target is an account other than the adjustments account"
    if (ledger, owner, kind) == acc.wallet(owner) and amount > 0:
        return "coins enter a wallet only with a lot (a purchase); a wallet can only be debited"
    return ""


def _fields(row: Row) -> dict[str, object]:
    return {"adjustment": row["id"], "ledger": row["ledger"], "owner": row["owner"],
            "kind": row["account_kind"], "amount": row["amount"], "reason": row["reason"],
            "proposed_by": row["proposed_by"]}


def approve_adjustment(service: EconomyService, adjustment_id: str, admin_id: str) -> Result:
    """Apply a proposed adjustment as a second admin.

    The proposer cannot approve their own adjustment (``second_admin_required``, not stored).
    A debit that would overdraw an account that may not go negative is a stored failure
    (``insufficient_funds``); the adjustment is then marked ``rejected``. Approving again
    returns the first answer and moves nothing.
    """
    problem = _admin_problem(admin_id)
    if problem:
        return Failure(codes.VALIDATION_ERROR, problem)
    rows = service.store.read("adjustments", {"id": adjustment_id})
    if not rows:
        return Failure(codes.NOT_FOUND, f"no adjustment {adjustment_id}")
    target: AccountKey = (rows[0]["ledger"], rows[0]["owner"], rows[0]["account_kind"])
    service.book.open([target, acc.adjustments(target[0])])
    return service.run(lambda tx: _approve(service, tx, adjustment_id, admin_id, target))


def _approve(service: EconomyService, tx: EconomyTx, adjustment_id: str, admin_id: str,
             target: AccountKey) -> Result:
    row = tx.rows("adjustments", {"id": adjustment_id}, lock=True)[0]
    scope, key, fields = ADJUSTMENT_SCOPE, adjustment_id, _fields(row)
    if tx.key_states([(scope, key)])[(scope, key)] != "new":
        return service.single(tx, Operation(scope, key, "adjustment", fields, ()))
    if admin_id == row["proposed_by"]:
        return Failure(codes.SAME_ADMIN,
                       f"{admin_id} proposed {adjustment_id}; another admin must approve it")
    if row["status"] != "proposed":
        return Failure(ADJUSTMENT_NOT_PROPOSED, f"adjustment {adjustment_id} is {row['status']}")
    amount = row["amount"]
    source = acc.adjustments(target[0])
    leg = (service.leg(source, target, amount, "adjustment") if amount > 0
           else service.leg(target, source, -amount, "adjustment"))
    taken: list[tuple[str, int]] | None = []
    refusal = None
    if target == acc.wallet(target[1]) and amount < 0:
        taken = _wallet_lots(tx, target[1], -amount)
        if taken is None:
            refusal = (codes.INSUFFICIENT_COINS, f"the wallet's lots hold fewer than {-amount}")
    response = {"adjustment": adjustment_id, "amount": amount, "approved_by": admin_id}
    result = service.single(tx, Operation(scope, key, "adjustment", fields,
                                          () if refusal else (leg,), actor=f"admin:{admin_id}",
                                          respond=lambda _: response, refusal=refusal))
    applied = isinstance(result, Applied)
    if not (applied or result.stored):  # type: ignore[union-attr]
        return result
    tx.update("adjustments", {"id": adjustment_id},
              {"status": "applied" if applied else "rejected", "approved_by": admin_id})
    if applied:
        for lot_id, coins in taken or ():
            tx.add("lots", {"id": lot_id}, {"remaining": -coins})
    service.emit(tx, "adjustment_applied" if applied else "adjustment_failed", row["owner"],
                 {"adjustment": adjustment_id, "admin": admin_id, "amount": amount,
                  "code": "" if applied else getattr(result, "code", "")})
    tx.commit()
    return result


def _wallet_lots(tx: EconomyTx, owner: str, coins: int) -> list[tuple[str, int]] | None:
    """The lots a wallet debit of ``coins`` takes, oldest first; ``None`` when they can't."""
    rows = tx.rows("lots", {"owner": owner, "remaining >": 0}, order_by=("seq",), lock=True,
                   limit=ADJUSTMENT_LOTS_MAX)
    return take_fifo([LotView(r["id"], r["seq"], r["remaining"]) for r in rows], coins)


def reject_adjustment(service: EconomyService, adjustment_id: str, admin_id: str,
                      reason: str = "") -> Failure | None:
    """Reject a proposed adjustment (any admin, the proposer included); ``None`` when done."""
    problem = _admin_problem(admin_id)
    if problem:
        return Failure(codes.VALIDATION_ERROR, problem)

    def work(tx: EconomyTx) -> Failure | None:
        rows = tx.rows("adjustments", {"id": adjustment_id}, lock=True)
        if not rows:
            return Failure(codes.NOT_FOUND, f"no adjustment {adjustment_id}")
        if rows[0]["status"] != "proposed":
            return Failure(ADJUSTMENT_NOT_PROPOSED,
                           f"adjustment {adjustment_id} is {rows[0]['status']}")
        tx.update("adjustments", {"id": adjustment_id},
                  {"status": "rejected", "approved_by": admin_id})
        service.emit(tx, "adjustment_rejected", rows[0]["owner"],
                     {"adjustment": adjustment_id, "admin": admin_id, "reason": reason})
        tx.commit()
        return None

    return service.run(work)
