"""Stateful property tests: the ledger against an exact Python model of SPEC.md §1.

A Hypothesis state machine drives random operations through :class:`giftflow.ledger.Ledger` on a
real store (a fresh SQLite file or a fresh PostgreSQL schema per run) in the COIN and DIAMOND
ledgers: transfers that succeed, overdrafts that fail and are stored, validation failures that
store nothing, retries with the same key and content, the same key with other content, gift-shaped
operations across both ledgers, linked multi-leg operations, group-committed batches with in-batch
duplicates, and pending reservations that are posted (whole or in part), voided or expired by a
controlled clock.

The machine keeps its own model of every balance, every pending transfer and the recorded outcome
of every idempotency key, predicts each result before it asks the ledger, and after every step
checks the store against the model and runs ``verify`` over the store's verification facts.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal, NamedTuple

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from tests.conftest import PostgresSchema, make_store_url, require_postgres

from giftflow.adapters.sql.store import SqlStore
from giftflow.invariants import INT64_MAX, INT64_MIN
from giftflow.ledger import (
    Applied,
    Failure,
    Ledger,
    Operation,
    Phase,
    Result,
    TransferRequest,
    VerificationFacts,
    codes,
    verify,
)

CLOCK_START_MS = 1_700_000_000_000
CREATOR_SHARE_BPS = 5000
DIAMOND_SCALE = 4
EXPIRY_SCOPE = "system:expiry"
TIMEOUT_MS_MAX = INT64_MAX // 2


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """An account the machine opens: its name in the model and its place in the ledger."""

    name: str
    ledger: str
    owner: str
    kind: str
    allow_negative: bool


ACCOUNTS = (
    AccountSpec("coin_issuance", "COIN", "platform", "coins:issuance", allow_negative=True),
    AccountSpec("alice_wallet", "COIN", "alice", "wallet", allow_negative=False),
    AccountSpec("bob_wallet", "COIN", "bob", "wallet", allow_negative=False),
    AccountSpec("coins_redeemed", "COIN", "platform", "coins:redeemed", allow_negative=False),
    AccountSpec("diamond_issuance", "DIAMOND", "platform", "diamonds:issuance",
                allow_negative=True),
    AccountSpec("creator_held", "DIAMOND", "creator", "held", allow_negative=False),
    AccountSpec("creator_available", "DIAMOND", "creator", "available", allow_negative=False),
    AccountSpec("payout_clearing", "DIAMOND", "platform", "payout:clearing", allow_negative=True),
)
LEDGER_OF = {spec.name: spec.ledger for spec in ACCOUNTS}
SAME_LEDGER_PAIRS = tuple(
    (debit.name, credit.name) for debit in ACCOUNTS for credit in ACCOUNTS
    if debit.name != credit.name and debit.ledger == credit.ledger)
INVALID_PAIRS = (("alice_wallet", "alice_wallet"), ("alice_wallet", "creator_held"))
SCOPES = ("alice:/v1/transfers", "bob:/v1/transfers")


# -- what the rules draw ------------------------------------------------------------------------

class NewTransfer(NamedTuple):
    """A fresh single-leg operation (``timeout_ms`` set makes it a pending reservation)."""

    scope: str
    pair: tuple[str, str]
    amount: int
    phase: Literal["single", "pending"] = "single"
    timeout_ms: int | None = None


class Gift(NamedTuple):
    """A gift: COIN wallet → coins:redeemed and DIAMOND issuance → creator:held, all or none."""

    sender: str
    count: int
    coin_value: int
    diamond_leg_first: bool


class LinkedLeg(NamedTuple):
    """One leg of a linked operation."""

    pair: tuple[str, str]
    amount: int
    pending: bool


class Linked(NamedTuple):
    """A fresh operation of several linked legs, possibly across both ledgers."""

    scope: str
    legs: tuple[LinkedLeg, ...]


class Resolve(NamedTuple):
    """Post (whole, with 0, in part, or too much) or void a known pending transfer, newest first."""

    pick: int
    action: Literal["post_zero", "post_whole", "post_partial", "post_too_much", "void"]
    open_only: bool


class ResolveUnknown(NamedTuple):
    """Post or void an id that is no pending transfer (a posted transfer, or nothing at all)."""

    target: Literal["single_transfer", "missing"]
    void: bool


class Retry(NamedTuple):
    """Send an earlier operation (counted back from the latest) again: same key, same content."""

    pick: int


class Conflict(NamedTuple):
    """Send an earlier operation's key again with other content."""

    pick: int
    bump: int


class Rescope(NamedTuple):
    """Send an earlier operation's key and content under the other principal's scope."""

    pick: int


class Duplicate(NamedTuple):
    """Repeat, inside a batch, an operation sent earlier in the same batch (maybe altered)."""

    pick: int
    altered: bool


Spec = (NewTransfer | Gift | Linked | Resolve | ResolveUnknown | Retry | Conflict | Rescope
        | Duplicate)

# Ordinary requests draw ordinary values; the edge rule alone draws the odd ones (refused amounts,
# accounts of the wrong ledger, amounts at the int64 limit, timeouts out of range), so that a run
# keeps enough successful operations to stay interesting.
AMOUNTS = st.integers(1, 250)
PAIRS = st.sampled_from(SAME_LEDGER_PAIRS)
TIMEOUTS = st.one_of(st.none(), st.integers(1, 5_000))
PICKS = st.integers(0, 1_000)

TRANSFERS = st.builds(NewTransfer, scope=st.sampled_from(SCOPES), pair=PAIRS, amount=AMOUNTS,
                      phase=st.just("single"), timeout_ms=st.none())
FUNDING = st.builds(
    NewTransfer, scope=st.just("stripe:webhook"), amount=st.integers(1, 5_000),
    pair=st.sampled_from((("coin_issuance", "alice_wallet"), ("coin_issuance", "bob_wallet"),
                          ("creator_held", "creator_available"))),
    phase=st.just("single"), timeout_ms=st.none())
# Reservations also favour debit accounts that can pay: payouts reserve available diamonds.
RESERVATIONS = st.builds(
    NewTransfer, scope=st.sampled_from(SCOPES), amount=AMOUNTS, phase=st.just("pending"),
    pair=st.one_of(PAIRS, st.sampled_from((("creator_available", "payout_clearing"),
                                           ("diamond_issuance", "creator_held"),
                                           ("coin_issuance", "bob_wallet")))),
    timeout_ms=TIMEOUTS)
EDGE_PAIRS = st.sampled_from((("coin_issuance", "alice_wallet"), ("alice_wallet", "coin_issuance"),
                              ("alice_wallet", "bob_wallet"), *INVALID_PAIRS))
EDGE_AMOUNTS = st.sampled_from((1, 0, -7, 2**62, INT64_MAX))
EDGES = st.one_of(
    st.builds(NewTransfer, scope=st.sampled_from(SCOPES), pair=EDGE_PAIRS, amount=EDGE_AMOUNTS,
              phase=st.just("single"), timeout_ms=st.none()),
    st.builds(NewTransfer, scope=st.sampled_from(SCOPES), pair=EDGE_PAIRS, amount=EDGE_AMOUNTS,
              phase=st.just("pending"),
              timeout_ms=st.sampled_from((None, 0, -1, TIMEOUT_MS_MAX, TIMEOUT_MS_MAX + 1))),
)
GIFTS = st.builds(Gift, sender=st.sampled_from(("alice_wallet", "bob_wallet")),
                  count=st.integers(1, 10), coin_value=st.sampled_from((1, 5, 99)),
                  diamond_leg_first=st.booleans())
LINKED = st.builds(
    Linked, scope=st.sampled_from(SCOPES),
    legs=st.lists(st.builds(LinkedLeg, pair=PAIRS, amount=AMOUNTS, pending=st.booleans()),
                  min_size=2, max_size=4).map(tuple))
RESOLVES = st.builds(
    Resolve, pick=PICKS, open_only=st.booleans(),
    action=st.sampled_from(("post_zero", "post_whole", "post_partial", "post_too_much", "void")))
UNKNOWN_RESOLVES = st.builds(ResolveUnknown, target=st.sampled_from(("single_transfer", "missing")),
                             void=st.booleans())
RETRIES = st.builds(Retry, pick=PICKS)
CONFLICTS = st.builds(Conflict, pick=PICKS, bump=st.integers(1, 50))
RESCOPES = st.builds(Rescope, pick=PICKS)
BATCH_SPECS = st.one_of(
    TRANSFERS, FUNDING, EDGES, RESERVATIONS, GIFTS, LINKED, RESOLVES, UNKNOWN_RESOLVES, RETRIES,
    CONFLICTS, RESCOPES, st.builds(Duplicate, pick=PICKS, altered=st.booleans()))


# -- operations the machine sends ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class GiftResponse:
    """The stored response of a gift, built from the balances right after it applied."""

    wallet_id: int
    coins: int
    diamonds: int

    def __call__(self, applied: Applied) -> Mapping[str, int]:
        """What the ledger stores under the key (``Operation.respond``)."""
        return self.expected(applied.balances[self.wallet_id].available)

    def expected(self, wallet_available: int) -> Mapping[str, int]:
        """The response for a wallet that has ``wallet_available`` coins after the gift."""
        return {"coins": self.coins, "diamonds": self.diamonds,
                "wallet_available": wallet_available}


def gift_operation(scope: str, key: str, gift: Gift, ids: Mapping[str, int]) -> Operation:
    """A gift-shaped operation: both legs under one key, the coin leg failing both."""
    coins = gift.count * gift.coin_value
    diamonds = coins * CREATOR_SHARE_BPS * 10**DIAMOND_SCALE // 10_000
    coin_leg = TransferRequest("COIN", ids[gift.sender], ids["coins_redeemed"], coins, code="gift",
                               shortfall_code="insufficient_coins")
    diamond_leg = TransferRequest("DIAMOND", ids["diamond_issuance"], ids["creator_held"],
                                  diamonds, code="gift")
    legs = (diamond_leg, coin_leg) if gift.diamond_leg_first else (coin_leg, diamond_leg)
    fields = {"sender": gift.sender, "gift_coins": gift.coin_value, "count": gift.count,
              "order": "diamond_first" if gift.diamond_leg_first else "coin_first"}
    return Operation(scope, key, "gift", fields, legs,
                     respond=GiftResponse(ids[gift.sender], coins, diamonds))


def expiry_operation(pending_id: int) -> Operation:
    """The operation ``Ledger.expire_pending`` sends for one expired pending transfer."""
    return Operation.of_transfers(EXPIRY_SCOPE, f"expire:{pending_id}",
                                  [TransferRequest.void(pending_id, code="expired")],
                                  kind="expire_pending")


def altered(operation: Operation, bump: int, ids: Mapping[str, int]) -> Operation:
    """The same scope and key with other business content."""
    if operation.kind == "gift":
        fields = operation.fields
        gift = Gift(fields["sender"], fields["count"] + bump, fields["gift_coins"],
                    diamond_leg_first=fields["order"] == "diamond_first")
        return gift_operation(operation.scope, operation.key, gift, ids)
    first, *rest = operation.transfers
    if first.phase is Phase.VOID:
        first = replace(first, code=f"{first.code}-{bump}")
    else:
        first = replace(first, amount=first.amount + bump)
    return Operation.of_transfers(operation.scope, operation.key, [first, *rest],
                                  kind=operation.kind)


# -- the model ----------------------------------------------------------------------------------

@dataclass(slots=True)
class PendingModel:
    """A pending transfer as the model knows it."""

    id: int
    ledger: str
    debit: int
    credit: int
    amount: int
    timeout_at_ms: int | None
    resolved: bool = False


@dataclass(frozen=True, slots=True)
class KeyModel:
    """What an idempotency key holds: the content it was first used with, and the outcome."""

    kind: str
    fields: Mapping[str, object]
    outcome: Result


@dataclass(frozen=True, slots=True)
class Plan:
    """What a new operation does when it applies."""

    balances: dict[int, tuple[int, int, int]]
    opened: tuple[tuple[int, PendingModel], ...]
    """(leg index, pending transfer without its id yet) for each pending leg."""
    resolved: tuple[int, ...]
    response: Mapping[str, int]


class RefusalError(Exception):
    """The model predicts that an operation fails with ``code``."""

    def __init__(self, code: str, *, stored: bool) -> None:
        super().__init__(code)
        self.code = code
        self.stored = stored


@dataclass(slots=True)
class Model:
    """The exact expected state of the ledger: balances, pending transfers, idempotency keys."""

    ledger_of: dict[int, str]
    allow_negative: dict[int, bool]
    balances: dict[int, tuple[int, int, int]]
    pendings: dict[int, PendingModel] = field(default_factory=dict)
    keys: dict[tuple[str, str], KeyModel] = field(default_factory=dict)
    operation_ids: set[int] = field(default_factory=set)
    transfer_ids: set[int] = field(default_factory=set)

    def predict(self, operation: Operation, now_ms: int) -> Plan | Failure:
        """The expected result: a plan, a fresh failure, or the exact replayed result."""
        record = self.keys.get((operation.scope, operation.key))
        if record is not None:
            if (record.kind, record.fields) != (operation.kind, operation.fields):
                return Failure(codes.IDEMPOTENCY_CONFLICT, "")
            return replace(record.outcome, replayed=True)
        try:
            return self._simulate(operation, now_ms)
        except RefusalError as refusal:
            return Failure(refusal.code, "", stored=refusal.stored)

    def _simulate(self, operation: Operation, now_ms: int) -> Plan:
        scratch: dict[int, list[int]] = {}
        resolved: list[int] = []
        opened: list[tuple[int, PendingModel]] = []
        for index, leg in enumerate(operation.transfers):
            if leg.phase in {Phase.POST, Phase.VOID}:
                pending = self._pending_for(leg, resolved, now_ms)
                ledger, debit_id, credit_id = pending.ledger, pending.debit, pending.credit
                moved = (leg.amount or pending.amount) if leg.phase is Phase.POST else 0
                debit_delta = (-moved, -pending.amount, 0)
                credit_delta = (moved, 0, -pending.amount)
            else:
                self._check_new_leg(leg)
                ledger = leg.ledger
                debit_id, credit_id = leg.debit_account_id, leg.credit_account_id
                if leg.phase is Phase.SINGLE:
                    debit_delta, credit_delta = (-leg.amount, 0, 0), (leg.amount, 0, 0)
                else:
                    debit_delta, credit_delta = (0, leg.amount, 0), (0, 0, leg.amount)
                    timeout_at_ms = None if leg.timeout_ms is None else now_ms + leg.timeout_ms
                    opened.append((index, PendingModel(0, ledger, debit_id, credit_id, leg.amount,
                                                       timeout_at_ms)))
            debit = self._scratch(scratch, debit_id, ledger)
            credit = self._scratch(scratch, credit_id, ledger)
            for balances, delta in ((debit, debit_delta), (credit, credit_delta)):
                for column, change in enumerate(delta):
                    balances[column] += change
            # Overflow is checked for the whole leg before the shortfall, as the engine does.
            self._check_overflow(debit, credit)
            self._check_shortfall(leg, debit_id, debit)
            self._check_shortfall(leg, credit_id, credit)
        balances = {account_id: (b[0], b[1], b[2]) for account_id, b in scratch.items()}
        response: Mapping[str, int] = {}
        if isinstance(operation.respond, GiftResponse):
            posted, pending_debits, _ = balances[operation.respond.wallet_id]
            response = operation.respond.expected(posted - pending_debits)
        return Plan(balances, tuple(opened), tuple(resolved), response)

    def _pending_for(self, leg: TransferRequest, resolved: list[int], now_ms: int) -> PendingModel:
        pending = self.pendings.get(leg.pending_id or 0)
        if pending is None:
            raise RefusalError(codes.NOT_FOUND, stored=False)
        if pending.resolved or pending.id in resolved:
            raise RefusalError(codes.PENDING_ALREADY_RESOLVED, stored=True)
        if leg.phase is Phase.POST:
            if pending.timeout_at_ms is not None and pending.timeout_at_ms <= now_ms:
                raise RefusalError(codes.PENDING_EXPIRED, stored=True)
            if not 0 <= leg.amount <= pending.amount:
                raise RefusalError(codes.VALIDATION_ERROR, stored=False)
        resolved.append(pending.id)
        return pending

    @staticmethod
    def _check_new_leg(leg: TransferRequest) -> None:
        timeout_ok = leg.timeout_ms is None or 0 < leg.timeout_ms <= TIMEOUT_MS_MAX
        if (not 0 < leg.amount <= INT64_MAX or leg.debit_account_id == leg.credit_account_id
                or (leg.phase is Phase.PENDING and not timeout_ok)):
            raise RefusalError(codes.VALIDATION_ERROR, stored=False)

    def _scratch(self, scratch: dict[int, list[int]], account_id: int, ledger: str) -> list[int]:
        if account_id not in self.ledger_of:
            raise RefusalError(codes.NOT_FOUND, stored=False)
        if self.ledger_of[account_id] != ledger:
            raise RefusalError(codes.VALIDATION_ERROR, stored=False)
        return scratch.setdefault(account_id, list(self.balances[account_id]))

    @staticmethod
    def _check_overflow(*accounts: list[int]) -> None:
        for posted, pending_debits, pending_credits in accounts:
            if not (INT64_MIN <= posted <= INT64_MAX and 0 <= pending_debits <= INT64_MAX
                    and 0 <= pending_credits <= INT64_MAX):
                raise RefusalError(codes.VALIDATION_ERROR, stored=False)

    def _check_shortfall(self, leg: TransferRequest, account_id: int, balances: list[int]) -> None:
        posted, pending_debits, _ = balances
        if posted < pending_debits and not self.allow_negative[account_id]:
            raise RefusalError(leg.shortfall_code, stored=True)

    def record_success(self, operation: Operation, plan: Plan, applied: Applied) -> None:
        """Take a new operation's ids from the store and apply its plan to the model."""
        ids = applied.transfer_ids
        assert len(ids) == len(operation.transfers), (operation, applied)
        assert len({*ids, applied.operation_id}) == len(ids) + 1, applied
        assert applied.operation_id not in self.operation_ids | self.transfer_ids, applied
        assert not self.transfer_ids & {*ids} and not self.operation_ids & {*ids}, applied
        assert applied.response == plan.response, (applied.response, plan.response)
        self.operation_ids.add(applied.operation_id)
        self.transfer_ids.update(ids)
        self.balances.update(plan.balances)
        for pending_id in plan.resolved:
            self.pendings[pending_id].resolved = True
        for index, pending in plan.opened:
            self.pendings[ids[index]] = replace(pending, id=ids[index])
        self.keys[operation.scope, operation.key] = KeyModel(
            operation.kind, operation.fields,
            Applied(applied.operation_id, ids, plan.response))

    def record_failure(self, operation: Operation, failure: Failure) -> None:
        """Remember a stored business failure under the operation's key."""
        self.keys[operation.scope, operation.key] = KeyModel(
            operation.kind, operation.fields, Failure(failure.code, failure.detail, stored=True))

    def check(self, operation: Operation, actual: Result, now_ms: int) -> None:
        """Compare one result with the prediction, then move the model as the ledger did."""
        expected = self.predict(operation, now_ms)
        if isinstance(expected, Plan):
            assert isinstance(actual, Applied), (operation, actual)
            assert not actual.replayed, actual
            self.record_success(operation, expected, actual)
        elif expected.replayed:
            assert actual == expected, (operation, actual, expected)
        else:
            assert isinstance(actual, Failure), (operation, actual, expected)
            got = (actual.code, actual.stored, actual.replayed)
            assert got == (expected.code, expected.stored, False), (operation, actual, expected)
            if actual.stored:
                self.record_failure(operation, actual)

    def expired_unresolved(self, now_ms: int) -> list[int]:
        """Pending transfers that ``expire_pending`` must void now."""
        return sorted(p.id for p in self.pendings.values() if not p.resolved
                      and p.timeout_at_ms is not None and p.timeout_at_ms <= now_ms)


# -- the state machine --------------------------------------------------------------------------

class LedgerMachine(RuleBasedStateMachine):
    """Random operations on a real store, checked step by step against :class:`Model`."""

    dialect: ClassVar[str] = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.now_ms = CLOCK_START_MS
        self.directory = Path(tempfile.mkdtemp(prefix="giftflow-stateful-"))
        self.schema: PostgresSchema | None = None
        try:
            url, self.schema = make_store_url(self.dialect, self.directory)
            self.store = SqlStore(url, now_ms=self.clock_ms)
        except BaseException:
            self._drop()
            raise
        self.ledger = Ledger(self.store, clock_ms=self.clock_ms)
        self.ids = {spec.name: self.ledger.open_account(
            spec.ledger, spec.owner, spec.kind, allow_negative=spec.allow_negative).id
            for spec in ACCOUNTS}
        self.model = Model(
            ledger_of={self.ids[spec.name]: spec.ledger for spec in ACCOUNTS},
            allow_negative={self.ids[spec.name]: spec.allow_negative for spec in ACCOUNTS},
            balances=dict.fromkeys(self.ids.values(), (0, 0, 0)))
        self.sent: list[Operation] = []
        self.keys_made = 0
        self.steps = 0
        self._facts: tuple[int, VerificationFacts] | None = None

    def clock_ms(self) -> int:
        """The controlled clock of the store and the ledger."""
        return self.now_ms

    def teardown(self) -> None:
        """Close the store and drop its database."""
        self.store.close()
        self._drop()

    def _drop(self) -> None:
        if self.schema is not None:
            self.schema.drop()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- building operations ---------------------------------------------------------------------

    def fresh_key(self) -> str:
        """A key never used before in any scope."""
        self.keys_made += 1
        return f"key-{self.keys_made}"

    def build(self, spec: Spec, batch: list[Operation]) -> Operation:  # noqa: PLR0911 -- a dispatch
        """The operation a drawn spec stands for, in the current state."""
        match spec:
            case NewTransfer():
                return self._new_transfer(spec)
            case Gift():
                return gift_operation(f"{spec.sender}:/v1/gifts", self.fresh_key(), spec, self.ids)
            case Linked():
                legs = [self._leg(leg.pair, leg.amount, pending=leg.pending) for leg in spec.legs]
                return Operation.of_transfers(spec.scope, self.fresh_key(), legs)
            case Resolve():
                return self._resolve(spec)
            case ResolveUnknown():
                return self._resolve_unknown(spec)
            case Duplicate() if batch:
                chosen = batch[-1 - spec.pick % len(batch)]
                return altered(chosen, 1, self.ids) if spec.altered else chosen
            case Retry() | Conflict() | Rescope() if self.sent:
                return self._again(spec)
        return self._new_transfer(NewTransfer(SCOPES[0], ("coin_issuance", "alice_wallet"), 10))

    def _leg(self, pair: tuple[str, str], amount: int, *, pending: bool,
             timeout_ms: int | None = None) -> TransferRequest:
        debit, credit = pair
        return TransferRequest(LEDGER_OF[debit], self.ids[debit], self.ids[credit], amount,
                               phase=Phase.PENDING if pending else Phase.SINGLE,
                               timeout_ms=timeout_ms)

    def _new_transfer(self, spec: NewTransfer) -> Operation:
        leg = self._leg(spec.pair, spec.amount, pending=spec.phase == "pending",
                        timeout_ms=spec.timeout_ms)
        return Operation.of_transfers(spec.scope, self.fresh_key(), [leg])

    def _resolve(self, spec: Resolve) -> Operation:
        candidates = sorted((p.id for p in self.model.pendings.values()
                             if not (spec.open_only and p.resolved)), reverse=True)
        if not candidates:
            return self._resolve_unknown(ResolveUnknown("missing", void=spec.action == "void"))
        pending = self.model.pendings[candidates[spec.pick % len(candidates)]]
        amounts = {"post_zero": 0, "post_whole": pending.amount,
                   "post_partial": 1 + spec.pick % pending.amount,
                   "post_too_much": pending.amount + 1}
        leg = (TransferRequest.void(pending.id) if spec.action == "void"
               else TransferRequest.post(pending.id, amounts[spec.action]))
        return Operation.of_transfers(SCOPES[spec.pick % 2], self.fresh_key(), [leg])

    def _resolve_unknown(self, spec: ResolveUnknown) -> Operation:
        singles = sorted(self.model.transfer_ids - self.model.pendings.keys())
        target = singles[-1] if spec.target == "single_transfer" and singles else 7
        leg = TransferRequest.void(target) if spec.void else TransferRequest.post(target)
        return Operation.of_transfers(SCOPES[0], self.fresh_key(), [leg])

    def _again(self, spec: Retry | Conflict | Rescope) -> Operation:
        earlier = self.sent[-1 - spec.pick % len(self.sent)]
        match spec:
            case Conflict():
                return altered(earlier, spec.bump, self.ids)
            case Rescope() if earlier.scope in SCOPES:
                other = SCOPES[1 - SCOPES.index(earlier.scope)]
                return replace(earlier, scope=other)
        return earlier

    # -- sending ---------------------------------------------------------------------------------

    def send(self, specs: list[Spec]) -> None:
        """Build the operations, apply them in one batch (or alone) and check every result."""
        self.steps += 1
        operations: list[Operation] = []
        for spec in specs:
            operations.append(self.build(spec, operations))
        results = (self.ledger.apply_batch(operations) if len(operations) > 1
                   else [self.ledger.apply(operations[0])])
        assert len(results) == len(operations)
        for operation, result in zip(operations, results, strict=True):
            self.model.check(operation, result, self.now_ms)
        self.sent.extend(operations)

    @rule(spec=st.one_of(TRANSFERS, FUNDING))
    def transfer(self, spec: NewTransfer) -> None:
        """A single transfer applies, overdrafts a wallet (stored) or fails validation."""
        self.send([spec])

    @rule(spec=EDGES)
    def edge_transfer(self, spec: NewTransfer) -> None:
        """Odd requests fail validation and store nothing; int64-limit amounts never overflow.

        Refused amounts, accounts of two ledgers, one account on both sides and timeouts out of
        range are validation errors; amounts at the int64 limit apply or are refused.
        """
        self.send([spec])

    @rule(spec=RESERVATIONS)
    def reserve(self, spec: NewTransfer) -> None:
        """A pending transfer reserves the amount in pending debits and credits."""
        self.send([spec])

    @rule(spec=GIFTS)
    def gift(self, spec: Gift) -> None:
        """A gift moves coins and diamonds together, or neither when the wallet is short."""
        self.send([spec])

    @rule(spec=LINKED)
    def linked(self, spec: Linked) -> None:
        """Linked legs across both ledgers apply all together or not at all."""
        self.send([spec])

    @precondition(lambda self: self.model.pendings)
    @rule(spec=st.one_of(RESOLVES, RESOLVES, RESOLVES, UNKNOWN_RESOLVES))
    def resolve(self, spec: Resolve | ResolveUnknown) -> None:
        """A post (whole or partial) or void resolves a pending transfer exactly once.

        An id that is no pending transfer is not_found and stores nothing.
        """
        self.send([spec])

    @precondition(lambda self: self.sent)
    @rule(spec=RETRIES)
    def retry(self, spec: Retry) -> None:
        """A retry with the same key and content gets the original result and moves nothing."""
        self.send([spec])

    @precondition(lambda self: self.sent)
    @rule(spec=CONFLICTS)
    def conflict(self, spec: Conflict) -> None:
        """The same key with other content is idempotency_conflict once the key holds a result."""
        self.send([spec])

    @precondition(lambda self: self.sent)
    @rule(spec=RESCOPES)
    def rescope(self, spec: Rescope) -> None:
        """The same key under another principal's scope is a different key."""
        self.send([spec])

    @rule(specs=st.lists(BATCH_SPECS, min_size=2, max_size=8))
    def batch(self, specs: list[Spec]) -> None:
        """A group-committed batch gives each operation the result it would get alone, in order."""
        self.send(specs)

    @rule(elapsed_ms=st.integers(1, 6_000))
    def advance_clock(self, elapsed_ms: int) -> None:
        """Time passes; pending transfers past their timeout can no longer be posted."""
        self.steps += 1
        self.now_ms += elapsed_ms

    @rule(elapsed_ms=st.integers(0, 6_000))
    def expire(self, elapsed_ms: int) -> None:
        """After time passes, expire_pending voids exactly the pending transfers past timeout."""
        self.steps += 1
        self.now_ms += elapsed_ms
        expected = self.model.expired_unresolved(self.now_ms)
        results = self.ledger.expire_pending()
        assert len(results) == len(expected), (results, expected)
        voided: dict[int, Applied] = {}
        for result in results:
            assert isinstance(result, Applied), result
            assert not result.replayed, result
            assert len(result.transfer_ids) == 1, result
            voided[result.transfer_ids[0]] = result
        resolutions = self._resolutions({self.model.pendings[p].debit for p in expected})
        by_pending = {resolutions[transfer_id]: applied
                      for transfer_id, applied in voided.items()}
        assert sorted(by_pending) == expected, (by_pending, expected)
        for pending_id in expected:
            operation = expiry_operation(pending_id)
            self.model.check(operation, by_pending[pending_id], self.now_ms)
            self.sent.append(operation)

    def _resolutions(self, account_ids: set[int]) -> dict[int, int]:
        """Recent expiry voids on these accounts: transfer id → the pending transfer it voided."""
        found: dict[int, int] = {}
        for account_id in account_ids:
            for entry in self.ledger.history(account_id, limit=500).entries:
                if entry.phase is Phase.VOID and entry.code == "expired":
                    assert entry.pending_id is not None
                    assert entry.amount == self.model.pendings[entry.pending_id].amount, entry
                    found[entry.transfer_id] = entry.pending_id
        return found

    # -- invariants ------------------------------------------------------------------------------

    def facts(self) -> VerificationFacts:
        """The store's verification facts, read once per step."""
        if self._facts is None or self._facts[0] != self.steps:
            self._facts = (self.steps, self.store.verification_facts())
        return self._facts[1]

    @invariant()
    def verify_passes(self) -> None:
        """``verify`` recomputes every balance from the transfers and finds no violation."""
        report = verify(self.facts())
        assert report.ok, [(check.name, check.violations) for check in report.checks
                           if not check.ok]

    @invariant()
    def ledgers_sum_to_zero(self) -> None:
        """Per ledger, posted balances sum to zero and pending debits equal pending credits."""
        sums: dict[str, list[int]] = {}
        for account in self.facts().accounts:
            total = sums.setdefault(account.ledger, [0, 0])
            total[0] += account.posted
            total[1] += account.pending_debits - account.pending_credits
        assert all(total == [0, 0] for total in sums.values()), sums

    @invariant()
    def no_forbidden_negative(self) -> None:
        """No wallet or creator balance has less posted than its pending debits reserve."""
        for account in self.facts().accounts:
            assert account.allow_negative == self.model.allow_negative[account.id], account
            assert account.allow_negative or account.available >= 0, account

    @invariant()
    def store_equals_model(self) -> None:
        """Cached and recomputed balances of every account equal the model's, exactly."""
        facts = self.facts()
        cached = {a.id: (a.posted, a.pending_debits, a.pending_credits) for a in facts.accounts}
        assert cached == self.model.balances, (cached, self.model.balances)
        recomputed = {account_id: facts.recomputed.get(account_id, (0, 0, 0))
                      for account_id in cached}
        assert recomputed == self.model.balances, (recomputed, self.model.balances)

    @invariant()
    def expiry_candidates_match(self) -> None:
        """The store's expired pending transfers are exactly the model's."""
        actual = sorted(self.store.expired_pending_ids(self.now_ms, 1_000))
        assert actual == self.model.expired_unresolved(self.now_ms)


class SqliteLedgerMachine(LedgerMachine):
    """The machine on a fresh SQLite file per run."""

    dialect = "sqlite"


class PostgresLedgerMachine(LedgerMachine):
    """The machine on a fresh schema of the real PostgreSQL server per run."""

    dialect = "postgresql"


def test_ledger_matches_model_on_sqlite() -> None:
    """On SQLite, every result, balance and stored outcome matches the model after every step."""
    run_state_machine_as_test(SqliteLedgerMachine, settings=settings())


@pytest.mark.postgres
def test_ledger_matches_model_on_postgresql() -> None:
    """On PostgreSQL, every result, balance and stored outcome matches the model at every step."""
    require_postgres()
    run_state_machine_as_test(PostgresLedgerMachine, settings=settings())
