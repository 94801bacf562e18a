"""The pure core of the ledger: applies operations to balances held in memory and stages the writes.

A store's unit of work loads what an operation needs (its idempotency record, its accounts, the
pending transfers it resolves) under the transaction's locks, then calls :meth:`Engine.apply`. The
engine decides every result in Python and stages rows; the unit of work flushes them in bulk at
commit. Because nothing is written until commit, operations that fail leave nothing behind but
their stored failure, and one operation's failure never touches its neighbours in a batch.

This is the hot path of group commit, so it favours plain tuples and lists over richer objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
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

_SINGLE = Phase.SINGLE
_PENDING = Phase.PENDING
_POST = Phase.POST
_VOID = Phase.VOID
_ID_RESERVATION_MAX = 4096
_NO_BALANCES: MappingProxyType[int, Account] = MappingProxyType({})


class AccountState:
    """The mutable, in-transaction view of one account's balances."""

    __slots__ = ("allow_negative", "id", "kind", "ledger", "loaded", "owner", "pending_credits",
                 "pending_debits", "posted")

    def __init__(self, account_id: int, ledger: str, owner: str, kind: str, allow_negative: bool,
                 posted: int, pending_debits: int, pending_credits: int) -> None:
        self.id = account_id
        self.ledger = ledger
        self.owner = owner
        self.kind = kind
        self.allow_negative = allow_negative
        self.posted = posted
        self.pending_debits = pending_debits
        self.pending_credits = pending_credits
        # The balances as loaded: what the database holds until this transaction commits.
        self.loaded = (posted, pending_debits, pending_credits)

    @classmethod
    def of(cls, account: Account) -> AccountState:
        """The state of a loaded account."""
        return cls(account.id, account.ledger, account.owner, account.kind,
                   account.allow_negative, account.posted, account.pending_debits,
                   account.pending_credits)

    def delta(self) -> tuple[int, int, int]:
        """What this transaction changed: posted, pending debits, pending credits."""
        posted, pending_debits, pending_credits = self.loaded
        return (self.posted - posted, self.pending_debits - pending_debits,
                self.pending_credits - pending_credits)

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


KeyRecord = tuple[int, bytes, str, bytes | str]
"""What an idempotency key already holds: operation id, content hash, status, stored response.

A plain tuple: one is made per operation on the hot path, where a named tuple costs ten times as
much to build."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that the engine enforces on every operation."""

    transfers_per_operation_max: int = 64


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
    operation_id, recorded_hash, status, response = record
    if recorded_hash != content_hash:
        return Failure(codes.IDEMPOTENCY_CONFLICT,
                       "this idempotency key was used with different content")
    stored = orjson.loads(response)
    if status == STATUS_SUCCEEDED:
        return Applied(operation_id, tuple(stored["t"]), stored["b"], replayed=True)
    return Failure(stored["code"], stored["detail"], stored=True, replayed=True)


_Leg = tuple[TransferRequest, PendingState | None, int, int, str]
"""A leg as simulated: the request, the pending transfer it resolves, debit, credit, ledger."""


class Engine:
    """Applies operations, one after another, inside one unit of work."""

    def __init__(self, next_ids: Callable[[int], int], now_ms: Callable[[], int],
                 limits: Limits | None = None) -> None:
        """``next_ids(n)`` reserves ``n`` consecutive ids and returns the first."""
        self.next_ids = next_ids
        self.now_ms = now_ms
        self.limits = limits or Limits()
        self.accounts: dict[int, AccountState] = {}
        self.pendings: dict[int, PendingState] = {}
        self.keys: dict[tuple[str, str], KeyRecord | None] = {}
        # Staged writes, flushed by the unit of work at commit.
        self.operation_rows: list[tuple[Any, ...]] = []
        self.transfer_rows: list[tuple[Any, ...]] = []
        self.inserts: list[Insert] = []
        self._id_next = 0
        self._id_end = 0

    def reserve_ids(self, count: int) -> None:
        """Reserve ids for the coming operations at once (one id per operation and per leg)."""
        if self._id_next + count > self._id_end:
            count = min(count, _ID_RESERVATION_MAX)
            self._id_next = self.next_ids(count)
            self._id_end = self._id_next + count

    def _take_ids(self, count: int) -> int:
        """``count`` consecutive ids from the reservation, topping it up when needed."""
        invariant(count <= _ID_RESERVATION_MAX, "an operation needs more ids than one reservation")
        if self._id_next + count > self._id_end:
            self.reserve_ids(max(count, 64))
        first = self._id_next
        self._id_next += count
        return first

    # -- what a unit of work must load before apply() ------------------------------------------

    def account_ids(self, operation: Operation) -> set[int]:
        """The accounts this operation touches (pending transfers must be loaded first)."""
        ids: set[int] = set()
        for leg in operation.transfers:
            if leg.phase is _POST or leg.phase is _VOID:
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
        try:
            content_hash = operation.content_hash()
        except TypeError as error:  # orjson refuses what JSON cannot carry, e.g. ints > 64 bits
            return Failure(codes.VALIDATION_ERROR, f"the operation cannot be encoded: {error}")
        scope_key = (operation.scope, operation.key)
        record = self.keys.get(scope_key, False)
        invariant(record is not False, "the unit of work must load the idempotency key first")
        if record is not None:
            return replay(record, content_hash)  # type: ignore[arg-type]
        if operation.refusal is not None:
            refusal = Failure(*operation.refusal, stored=True)
            self._stage_failure(operation, content_hash, refusal)
            return refusal
        before: dict[int, tuple[int, int, int]] = {}
        try:
            legs = self._apply_legs(operation, before)
        except _Refused as refused:
            self._undo(before)
            if refused.failure.stored:
                self._stage_failure(operation, content_hash, refused.failure)
            return refused.failure
        return self._stage_success(operation, content_hash, before, legs)

    def _apply_legs(self, operation: Operation,
                    before: dict[int, tuple[int, int, int]]) -> list[_Leg]:
        """Move every leg's amount on the accounts' state, or refuse the whole operation.

        ``before`` receives each touched account's balances as they were, so that a refusal can
        put them back. Every leg moves one amount out of one account and into another of the same
        ledger; :meth:`balance_deltas` checks, per ledger, that the sums stay zero.
        """
        transfers = operation.transfers
        # An operation's ids (its own and one per leg) must fit in one reservation.
        most = min(self.limits.transfers_per_operation_max, _ID_RESERVATION_MAX - 1)
        if len(transfers) > most:
            raise _validation(f"at most {most} transfers per operation")
        accounts = self.accounts
        legs: list[_Leg] = []
        for leg in transfers:
            phase = leg.phase
            if phase is _SINGLE or phase is _PENDING:
                pending = None
                _check_new_leg(leg)
                debit_id, credit_id, ledger = (leg.debit_account_id, leg.credit_account_id,
                                               leg.ledger)
                amount = leg.amount
            elif phase is _POST or phase is _VOID:
                pending = self._pending_for(leg, legs)
                debit_id, credit_id, ledger = (pending.debit_account_id,
                                               pending.credit_account_id, pending.ledger)
                amount = pending.amount
            else:
                raise _validation(f"unknown transfer phase {phase!r}")
            debit = accounts.get(debit_id)
            credit = accounts.get(credit_id)
            if debit is None or credit is None:
                missing = debit_id if debit is None else credit_id
                raise _Refused(Failure(codes.NOT_FOUND, f"account {missing} not found"))
            if debit.ledger != ledger or credit.ledger != ledger:
                raise _validation(
                    f"accounts {debit_id} and {credit_id} must both be in ledger {ledger}")
            if debit_id not in before:
                before[debit_id] = (debit.posted, debit.pending_debits, debit.pending_credits)
            if credit_id not in before:
                before[credit_id] = (credit.posted, credit.pending_debits, credit.pending_credits)
            _move(leg, amount, debit, credit)
            if debit.posted < debit.pending_debits and not debit.allow_negative:
                raise _stored(leg.shortfall_code,
                              f"account {debit_id} has "
                              f"{debit.posted - debit.pending_debits + amount} available, "
                              f"needs {amount}")
            legs.append((leg, pending, debit_id, credit_id, ledger))
        return legs

    def _undo(self, before: dict[int, tuple[int, int, int]]) -> None:
        accounts = self.accounts
        for account_id, (posted, pending_debits, pending_credits) in before.items():
            state = accounts[account_id]
            state.posted, state.pending_debits, state.pending_credits = (
                posted, pending_debits, pending_credits)

    def _pending_for(self, leg: TransferRequest, earlier: list[_Leg]) -> PendingState:
        pending = self.pendings.get(leg.pending_id or 0)
        if pending is None:
            raise _Refused(Failure(codes.NOT_FOUND, f"pending transfer {leg.pending_id} not found"))
        if pending.resolved or any(done[1] is pending for done in earlier):
            raise _stored(codes.PENDING_ALREADY_RESOLVED,
                          f"pending transfer {pending.id} is already posted or voided")
        if leg.phase is _POST:
            timeout_at_ms = pending.timeout_at_ms
            if timeout_at_ms is not None and timeout_at_ms <= self.now_ms():
                raise _stored(codes.PENDING_EXPIRED, f"pending transfer {pending.id} has expired")
            if type(leg.amount) is not int or not 0 <= leg.amount <= pending.amount:
                raise _validation(f"a post may move 1..{pending.amount}, not {leg.amount}")
        return pending

    # -- staging --------------------------------------------------------------------------------

    def _stage_failure(self, operation: Operation, content_hash: bytes, failure: Failure) -> None:
        response = orjson.dumps({"code": failure.code, "detail": failure.detail})
        self._stage_operation(operation, content_hash, STATUS_FAILED, response, self._take_ids(1),
                              self.now_ms())

    def _stage_operation(self, operation: Operation, content_hash: bytes, status: str,
                         response: bytes, operation_id: int, now_ms: int) -> None:
        self.operation_rows.append((
            operation_id, operation.scope, operation.key, operation.kind, content_hash, status,
            response.decode(), operation.actor, operation.request_id, now_ms,
        ))
        self.keys[operation.scope, operation.key] = (operation_id, content_hash, status, response)

    def _stage_success(self, operation: Operation, content_hash: bytes,
                       before: dict[int, tuple[int, int, int]], legs: list[_Leg]) -> Applied:
        operation_id = self._take_ids(1 + len(legs))
        now_ms = self.now_ms()
        actor, request_id = operation.actor, operation.request_id
        transfer_rows = self.transfer_rows
        transfer_id = operation_id
        for leg, pending, debit_id, credit_id, ledger in legs:
            transfer_id += 1
            if pending is None:
                timeout_at_ms = None if leg.timeout_ms is None else now_ms + leg.timeout_ms
                transfer_rows.append((transfer_id, operation_id, ledger, debit_id, credit_id,
                                      leg.amount, leg.code, int(leg.phase), None, timeout_at_ms,
                                      actor, request_id, now_ms))
                if leg.phase is _PENDING:
                    self.pendings[transfer_id] = PendingState(
                        transfer_id, ledger, debit_id, credit_id, leg.amount, timeout_at_ms,
                        resolved=False)
            else:
                pending.resolved = True
                amount = (leg.amount or pending.amount) if leg.phase is _POST else pending.amount
                transfer_rows.append((transfer_id, operation_id, ledger, debit_id, credit_id,
                                      amount, leg.code, int(leg.phase), pending.id, None, actor,
                                      request_id, now_ms))
        ids = tuple(range(operation_id + 1, transfer_id + 1))
        if operation.respond is None and operation.effects is None:
            applied = Applied(operation_id, ids, operation.response or {},
                              balances=_NO_BALANCES)
        else:
            balances = {account_id: self.accounts[account_id].snapshot() for account_id in before}
            applied = Applied(operation_id, ids, {}, balances=balances)
            if operation.respond is not None:
                applied = Applied(operation_id, ids, operation.respond(applied), balances=balances)
            if operation.effects is not None:
                self.inserts.extend(operation.effects(applied))
        response = orjson.dumps({"t": ids, "b": applied.response})
        self._stage_operation(operation, content_hash, STATUS_SUCCEEDED, response, operation_id,
                              now_ms)
        return applied

    def balance_deltas(self) -> list[tuple[int, int, int, int]]:
        """``(posted, pending debits, pending credits, account id)`` for each changed account.

        Postcondition of the unit of work: per ledger, the posted changes sum to zero and the
        pending debits added equal the pending credits added.
        """
        rows = []
        sums: dict[str, list[int]] = {}
        # In id order, so that concurrent transactions take the rows' locks in one order.
        for account_id, state in sorted(self.accounts.items()):
            delta = state.delta()
            if delta != (0, 0, 0):
                rows.append((*delta, account_id))
                total = sums.setdefault(state.ledger, [0, 0])
                total[0] += delta[0]
                total[1] += delta[1] - delta[2]
        for ledger, (posted_sum, pending_sum) in sums.items():
            invariant(posted_sum == 0, f"posted moves in {ledger} sum to {posted_sum}, not 0")
            invariant(pending_sum == 0, f"pending debits and credits in {ledger} differ")
        return rows


def _move(leg: TransferRequest, amount: int, debit: AccountState, credit: AccountState) -> None:
    """Apply one leg to the two accounts' state.

    ``amount`` is the leg's amount, or the pending amount for a post or a void.
    """
    phase = leg.phase
    if phase is _SINGLE:
        debit.posted -= amount
        credit.posted += amount
    elif phase is _PENDING:
        debit.pending_debits += amount
        credit.pending_credits += amount
        if debit.pending_debits > INT64_MAX or credit.pending_credits > INT64_MAX:
            raise _validation("the amounts would overflow a pending balance")
        return
    else:
        debit.pending_debits -= amount
        credit.pending_credits -= amount
        if phase is _POST:
            moved = leg.amount or amount
            debit.posted -= moved
            credit.posted += moved
    if debit.posted < INT64_MIN or credit.posted > INT64_MAX:
        raise _validation("the amounts would overflow a balance")


def _check_new_leg(leg: TransferRequest) -> None:
    """Precondition of a new transfer: a positive int64 amount between two accounts."""
    amount = leg.amount
    if type(amount) is not int or not 0 < amount <= INT64_MAX:
        raise _validation(f"amount must be an integer in 1..{INT64_MAX}, not {amount!r}")
    if leg.debit_account_id == leg.credit_account_id:
        raise _validation("a transfer needs two different accounts")
    timeout_ms = leg.timeout_ms
    if timeout_ms is not None and not (
            leg.phase is _PENDING and type(timeout_ms) is int and 0 < timeout_ms <= INT64_MAX // 2):
        raise _validation("timeout_ms must be a positive integer, and only on a pending transfer")
