"""The pure core of the ledger: applies operations to balances held in memory and stages the writes.

A store's unit of work loads what an operation needs (its idempotency record, its accounts, the
pending transfers it resolves) under the transaction's locks, then calls :meth:`Engine.apply`. The
engine decides every result in Python and stages rows; the unit of work flushes them in bulk at
commit. Because nothing is written until commit, operations that fail leave nothing behind but
their stored failure, and one operation's failure never touches its neighbours in a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from giftflow.invariants import INT64_MAX, INT64_MIN, invariant
from giftflow.ledger import codes
from giftflow.ledger.model import (
    Account,
    Applied,
    Failure,
    Insert,
    Operation,
    Phase,
    Result,
    TransferRequest,
)

STATUS_SUCCEEDED = "succeeded"
STATUS_FAILED = "failed"


class AccountState:
    """The mutable, in-transaction view of one account's balances."""

    __slots__ = ("allow_negative", "id", "kind", "ledger", "owner", "pending_credits",
                 "pending_debits", "posted")

    def __init__(self, account: Account) -> None:
        self.id = account.id
        self.ledger = account.ledger
        self.owner = account.owner
        self.kind = account.kind
        self.allow_negative = account.allow_negative
        self.posted = account.posted
        self.pending_debits = account.pending_debits
        self.pending_credits = account.pending_credits

    def snapshot(self) -> Account:
        """A frozen copy of the current balances."""
        return Account(self.id, self.ledger, self.owner, self.kind, self.allow_negative,
                       self.posted, self.pending_debits, self.pending_credits)


@dataclass(slots=True)
class PendingState:
    """A pending transfer as loaded in the transaction, and whether it is resolved yet."""

    id: int
    ledger: str
    debit_account_id: int
    credit_account_id: int
    amount: int
    timeout_at_ms: int | None
    resolved: bool


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What an idempotency key already holds: the operation and its stored outcome."""

    operation_id: int
    content_hash: bytes
    status: str
    response: bytes | str


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that the engine enforces on every operation."""

    transfers_per_operation_max: int = 64


_Leg = tuple[TransferRequest, PendingState | None]


class _Refused(Exception):  # noqa: N818 -- internal control flow, never escapes this module
    """Internal: an operation cannot apply; carries the failure to return."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure


def _validation(detail: str) -> _Refused:
    return _Refused(Failure(codes.VALIDATION_ERROR, detail))


def _stored(code: str, detail: str) -> _Refused:
    return _Refused(Failure(code, detail, stored=True))


def replay(record: KeyRecord, content_hash: bytes) -> Result:
    """The answer an idempotency key gives to a retry, or a conflict when the content differs."""
    if record.content_hash != content_hash:
        return Failure(codes.IDEMPOTENCY_CONFLICT,
                       "this idempotency key was used with different content")
    stored = orjson.loads(record.response)
    if record.status == STATUS_SUCCEEDED:
        return Applied(record.operation_id, tuple(stored["t"]), stored["b"], replayed=True)
    return Failure(stored["code"], stored["detail"], stored=True, replayed=True)


class Engine:
    """Applies operations, one after another, inside one unit of work."""

    def __init__(self, next_id: Callable[[], int], now_ms: Callable[[], int],
                 limits: Limits | None = None) -> None:
        self.next_id = next_id
        self.now_ms = now_ms
        self.limits = limits or Limits()
        self.accounts: dict[int, AccountState] = {}
        self.pendings: dict[int, PendingState] = {}
        self.keys: dict[tuple[str, str], KeyRecord | None] = {}
        # Staged writes, flushed by the unit of work at commit.
        self.operation_rows: list[tuple[Any, ...]] = []
        self.transfer_rows: list[tuple[Any, ...]] = []
        self.deltas: dict[int, list[int]] = {}
        self.inserts: list[Insert] = []

    # -- what a unit of work must load before apply() ------------------------------------------

    @staticmethod
    def pending_ids(operation: Operation) -> Iterable[int]:
        """The pending transfers this operation resolves."""
        return (leg.pending_id for leg in operation.transfers
                if leg.pending_id is not None and leg.phase in (Phase.POST, Phase.VOID))

    def account_ids(self, operation: Operation) -> set[int]:
        """The accounts this operation touches (pending transfers must be loaded first)."""
        ids: set[int] = set()
        for leg in operation.transfers:
            if leg.phase in (Phase.POST, Phase.VOID):
                pending = self.pendings.get(leg.pending_id or 0)
                if pending is not None:
                    ids.add(pending.debit_account_id)
                    ids.add(pending.credit_account_id)
            else:
                ids.add(leg.debit_account_id)
                ids.add(leg.credit_account_id)
        return ids

    # -- applying -------------------------------------------------------------------------------

    def apply(self, operation: Operation) -> Result:
        """Apply one operation against the loaded state; stage its rows if it succeeds."""
        content_hash = operation.content_hash()
        scope_key = (operation.scope, operation.key)
        invariant(scope_key in self.keys, "the unit of work must load the idempotency key first")
        record = self.keys[scope_key]
        if record is not None:
            return replay(record, content_hash)
        try:
            changes, legs = self._simulate(operation)
        except _Refused as refused:
            if refused.failure.stored:
                self._stage_failure(operation, content_hash, refused.failure)
            return refused.failure
        return self._stage_success(operation, content_hash, changes, legs)

    def _simulate(self, operation: Operation) -> tuple[dict[int, list[int]], list[_Leg]]:
        """Compute every touched account's new balances, or refuse the whole operation."""
        if len(operation.transfers) > self.limits.transfers_per_operation_max:
            raise _validation(f"at most {self.limits.transfers_per_operation_max} transfers "
                              "per operation")
        changes: dict[int, list[int]] = {}
        resolved_here: set[int] = set()
        legs: list[_Leg] = []
        for leg in operation.transfers:
            pending = None
            if leg.phase in (Phase.POST, Phase.VOID):
                pending = self._pending_for(leg, resolved_here)
                debit_id, credit_id = pending.debit_account_id, pending.credit_account_id
                ledger = pending.ledger
            else:
                debit_id, credit_id = leg.debit_account_id, leg.credit_account_id
                ledger = leg.ledger
                self._check_new_leg(leg)
            debit = self._balances(changes, debit_id, ledger)
            credit = self._balances(changes, credit_id, ledger)
            self._move(leg, pending, debit, credit)
            self._check_bounds(leg, debit_id, debit, credit_id, credit)
            legs.append((leg, pending))
        return changes, legs

    def _pending_for(self, leg: TransferRequest, resolved_here: set[int]) -> PendingState:
        pending = self.pendings.get(leg.pending_id or 0)
        if pending is None:
            raise _Refused(Failure(codes.NOT_FOUND, f"pending transfer {leg.pending_id} not found"))
        if pending.resolved or pending.id in resolved_here:
            raise _stored(codes.PENDING_ALREADY_RESOLVED,
                          f"pending transfer {pending.id} is already posted or voided")
        expired = pending.timeout_at_ms is not None and pending.timeout_at_ms <= self.now_ms()
        if leg.phase is Phase.POST and expired:
            raise _stored(codes.PENDING_EXPIRED, f"pending transfer {pending.id} has expired")
        if leg.phase is Phase.POST and not 0 <= leg.amount <= pending.amount:
            raise _validation(f"a post may move 1..{pending.amount}, not {leg.amount}")
        resolved_here.add(pending.id)
        return pending

    @staticmethod
    def _check_new_leg(leg: TransferRequest) -> None:
        amount = leg.amount
        if type(amount) is not int or not 0 < amount <= INT64_MAX:
            raise _validation(f"amount must be an integer in 1..{INT64_MAX}, not {amount!r}")
        if leg.debit_account_id == leg.credit_account_id:
            raise _validation("a transfer needs two different accounts")
        if leg.phase is Phase.PENDING:
            if leg.timeout_ms is not None and not 0 < leg.timeout_ms <= INT64_MAX // 2:
                raise _validation("timeout_ms must be positive")
        elif leg.phase is not Phase.SINGLE:
            raise _validation(f"unknown transfer phase {leg.phase!r}")

    def _balances(self, changes: dict[int, list[int]], account_id: int, ledger: str) -> list[int]:
        balances = changes.get(account_id)
        if balances is None:
            state = self.accounts.get(account_id)
            if state is None:
                raise _Refused(Failure(codes.NOT_FOUND, f"account {account_id} not found"))
            if state.ledger != ledger:
                raise _validation(f"account {account_id} is in ledger {state.ledger}, not {ledger}")
            balances = [state.posted, state.pending_debits, state.pending_credits]
            changes[account_id] = balances
        elif self.accounts[account_id].ledger != ledger:
            raise _validation(f"account {account_id} is not in ledger {ledger}")
        return balances

    @staticmethod
    def _move(leg: TransferRequest, pending: PendingState | None,
              debit: list[int], credit: list[int]) -> None:
        """Apply one leg to the scratch balances ``[posted, pending_debits, pending_credits]``."""
        if pending is None:
            if leg.phase is Phase.SINGLE:
                debit[0] -= leg.amount
                credit[0] += leg.amount
            else:
                debit[1] += leg.amount
                credit[2] += leg.amount
            return
        debit[1] -= pending.amount
        credit[2] -= pending.amount
        if leg.phase is Phase.POST:
            moved = leg.amount or pending.amount
            debit[0] -= moved
            credit[0] += moved

    def _check_bounds(self, leg: TransferRequest, debit_id: int, debit: list[int],
                      credit_id: int, credit: list[int]) -> None:
        for account_id, balances in ((debit_id, debit), (credit_id, credit)):
            posted, pending_debits, pending_credits = balances
            if not (INT64_MIN <= posted <= INT64_MAX and 0 <= pending_debits <= INT64_MAX
                    and 0 <= pending_credits <= INT64_MAX):
                raise _validation(f"the amounts would overflow account {account_id}")
            if posted < pending_debits and not self.accounts[account_id].allow_negative:
                raise _stored(leg.shortfall_code,
                              f"account {account_id} has {posted - pending_debits + leg.amount}"
                              f" available, needs {leg.amount}")

    # -- staging --------------------------------------------------------------------------------

    def _stage_failure(self, operation: Operation, content_hash: bytes, failure: Failure) -> None:
        response = orjson.dumps({"code": failure.code, "detail": failure.detail})
        self._stage_operation(operation, content_hash, STATUS_FAILED, response, self.next_id())

    def _stage_operation(self, operation: Operation, content_hash: bytes, status: str,
                         response: bytes, operation_id: int) -> None:
        self.operation_rows.append((
            operation_id, operation.scope, operation.key, operation.kind, content_hash, status,
            response.decode(), operation.actor, operation.request_id, self.now_ms(),
        ))
        self.keys[operation.scope, operation.key] = KeyRecord(
            operation_id, content_hash, status, response)

    def _stage_success(self, operation: Operation, content_hash: bytes,
                       changes: dict[int, list[int]],
                       legs: list[_Leg]) -> Applied:
        self._check_conservation(changes)
        operation_id = self.next_id()
        now_ms = self.now_ms()
        transfer_ids = []
        for leg, pending in legs:
            transfer_id = self.next_id()
            transfer_ids.append(transfer_id)
            self.transfer_rows.append(self._transfer_row(
                transfer_id, operation_id, operation, leg, pending, now_ms))
            if pending is not None:
                pending.resolved = True
            elif leg.phase is Phase.PENDING:
                self.pendings[transfer_id] = PendingState(
                    transfer_id, leg.ledger, leg.debit_account_id, leg.credit_account_id,
                    leg.amount, None if leg.timeout_ms is None else now_ms + leg.timeout_ms,
                    resolved=False)
        for account_id, (posted, pending_debits, pending_credits) in changes.items():
            state = self.accounts[account_id]
            delta = self.deltas.setdefault(account_id, [0, 0, 0])
            delta[0] += posted - state.posted
            delta[1] += pending_debits - state.pending_debits
            delta[2] += pending_credits - state.pending_credits
            state.posted, state.pending_debits, state.pending_credits = balances_of(changes,
                                                                                    account_id)
        ids = tuple(transfer_ids)
        if operation.respond is None and operation.effects is None:
            applied = Applied(operation_id, ids, {})
        else:
            balances = {account_id: self.accounts[account_id].snapshot() for account_id in changes}
            applied = Applied(operation_id, ids, {}, balances=balances)
            if operation.respond is not None:
                applied = Applied(operation_id, ids, operation.respond(applied), balances=balances)
            if operation.effects is not None:
                self.inserts.extend(operation.effects(applied))
        response = orjson.dumps({"t": ids, "b": applied.response})
        self._stage_operation(operation, content_hash, STATUS_SUCCEEDED, response, operation_id)
        return applied

    def _check_conservation(self, changes: dict[int, list[int]]) -> None:
        """Postcondition: per ledger, posted moves sum to zero and pending sides match."""
        sums: dict[str, list[int]] = {}
        for account_id, (posted, pending_debits, pending_credits) in changes.items():
            state = self.accounts[account_id]
            total = sums.setdefault(state.ledger, [0, 0])
            total[0] += posted - state.posted
            total[1] += (pending_debits - state.pending_debits) - (
                pending_credits - state.pending_credits)
        for ledger, (posted_sum, pending_sum) in sums.items():
            invariant(posted_sum == 0, f"posted moves in {ledger} sum to {posted_sum}, not 0")
            invariant(pending_sum == 0, f"pending debits and credits in {ledger} differ")

    @staticmethod
    def _transfer_row(transfer_id: int, operation_id: int, operation: Operation,
                      leg: TransferRequest, pending: PendingState | None,
                      now_ms: int) -> tuple[Any, ...]:
        if pending is None:
            timeout_at_ms = None if leg.timeout_ms is None else now_ms + leg.timeout_ms
            return (transfer_id, operation_id, leg.ledger, leg.debit_account_id,
                    leg.credit_account_id, leg.amount, leg.code, int(leg.phase), None,
                    timeout_at_ms, operation.actor, operation.request_id, now_ms)
        amount = (leg.amount or pending.amount) if leg.phase is Phase.POST else pending.amount
        return (transfer_id, operation_id, pending.ledger, pending.debit_account_id,
                pending.credit_account_id, amount, leg.code, int(leg.phase), pending.id, None,
                operation.actor, operation.request_id, now_ms)


def balances_of(changes: dict[int, list[int]], account_id: int) -> tuple[int, int, int]:
    """The scratch balances of one account as a tuple."""
    posted, pending_debits, pending_credits = changes[account_id]
    return posted, pending_debits, pending_credits
