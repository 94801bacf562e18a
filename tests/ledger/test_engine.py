"""The pure ledger engine: results, staging and invariants, with every balance held in memory.

No database is involved: accounts are loaded into the engine by hand, exactly as a unit of work
would load them, and the staged rows are inspected instead of a table.
"""

from __future__ import annotations

import random

import pytest

from giftflow.invariants import INT64_MAX, INT64_MIN, InvariantViolation
from giftflow.ledger import codes
from giftflow.ledger.engine import (
    STATUS_FAILED,
    STATUS_SUCCEEDED,
    AccountState,
    Engine,
    Limits,
    PendingState,
)
from giftflow.ledger.model import (
    Account,
    Applied,
    Failure,
    Operation,
    Phase,
    Result,
    TransferRequest,
)

NOW_MS = 1_700_000_000_000

ISSUANCE = 1
WALLET = 2
REDEEMED = 3
OTHER_WALLET = 4
D_ISSUANCE = 11
HELD = 12


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now_ms: int = NOW_MS) -> None:
        self.now = now_ms

    def __call__(self) -> int:
        """The current time in milliseconds."""
        return self.now


class IdCounter:
    """Hands out increasing ids; ``count`` consecutive ones at a time when asked."""

    def __init__(self, first: int = 1_000) -> None:
        self.next = first

    def __call__(self, count: int = 1) -> int:
        """Reserve ``count`` ids and return the first."""
        first = self.next
        self.next += count
        return first


def staged_deltas(engine: Engine) -> dict[int, tuple[int, int, int]]:
    """What the unit of work would add to each account at commit: (posted, pd, pc)."""
    return {row[3]: (row[0], row[1], row[2]) for row in engine.balance_deltas()}


def make_engine(limits: Limits | None = None, clock: Clock | None = None,
                wallet: int = 0) -> Engine:
    """An engine with a small COIN and DIAMOND book loaded; ``wallet`` coins are in WALLET."""
    engine = Engine(IdCounter(), clock or Clock(), limits)
    book = (
        (ISSUANCE, "COIN", "platform", "coins:issuance", True, -wallet),
        (WALLET, "COIN", "viewer", "wallet", False, wallet),
        (REDEEMED, "COIN", "platform", "coins:redeemed", True, 0),
        (OTHER_WALLET, "COIN", "viewer-2", "wallet", False, 0),
        (D_ISSUANCE, "DIAMOND", "platform", "diamonds:issuance", True, 0),
        (HELD, "DIAMOND", "creator", "diamonds:held", False, 0),
    )
    for account_id, ledger, owner, kind, allow_negative, balance in book:
        account = Account(account_id, ledger, owner, kind, allow_negative=allow_negative,
                          posted=balance, pending_debits=0, pending_credits=0)
        engine.accounts[account.id] = AccountState.of(account)
    return engine


def run(engine: Engine, operation: Operation) -> Result:
    """Apply ``operation`` after loading its (absent) idempotency key, as a unit of work does."""
    engine.keys.setdefault((operation.scope, operation.key), None)
    return engine.apply(operation)


def op(key: str, *legs: TransferRequest, scope: str = "user:1|POST /t") -> Operation:
    """A raw ledger operation."""
    return Operation.of_transfers(scope, key, legs)


def coin(debit: int, credit: int, amount: object, **extra: object) -> TransferRequest:
    """A COIN leg (``amount`` is deliberately untyped so that bad values can be passed)."""
    return TransferRequest("COIN", debit, credit, amount, **extra)  # type: ignore[arg-type]


def posted(engine: Engine, account_id: int) -> int:
    """The in-transaction posted balance of one account."""
    return engine.accounts[account_id].posted


def gift(key: str, coins: int) -> Operation:
    """A gift: coins leave the wallet and the creator is credited diamonds (two ledgers)."""
    return Operation(
        "user:viewer|POST /v1/streams/{id}/gifts", key, "gift", {"coins": coins},
        [TransferRequest("COIN", WALLET, REDEEMED, coins, "gift",
                         shortfall_code="insufficient_coins"),
         TransferRequest("DIAMOND", D_ISSUANCE, HELD, coins * 5_000, "gift")])


# -- business failures are stored ---------------------------------------------------------------


def test_shortfall_is_a_stored_failure_with_the_legs_own_code() -> None:
    """A debit beyond the wallet fails with the leg's shortfall_code and is staged as stored."""
    engine = make_engine(wallet=10)
    result = run(engine, gift("g1", 11))
    assert isinstance(result, Failure)
    assert result.code == "insufficient_coins"
    assert result.stored
    assert not result.replayed
    assert "account 2 has 10 available, needs 11" in result.detail
    assert engine.transfer_rows == []
    assert staged_deltas(engine) == {}
    assert [row[5] for row in engine.operation_rows] == [STATUS_FAILED]
    assert posted(engine, WALLET) == 10
    assert posted(engine, HELD) == 0


def test_default_shortfall_code_is_insufficient_funds() -> None:
    """Without a custom shortfall_code the failure code is the generic insufficient_funds."""
    engine = make_engine(wallet=0)
    result = run(engine, op("k", coin(WALLET, REDEEMED, 1)))
    assert isinstance(result, Failure)
    assert result.code == codes.INSUFFICIENT_FUNDS
    assert result.stored


def test_stored_failure_replays_even_after_funds_arrive() -> None:
    """A retry of a stored failure gets the same failure back, not a fresh attempt."""
    engine = make_engine(wallet=5)
    first = run(engine, gift("g", 6))
    assert run(engine, op("fund", coin(ISSUANCE, WALLET, 100))).ok
    again = engine.apply(gift("g", 6))
    assert isinstance(again, Failure)
    assert (again.code, again.detail, again.stored, again.replayed) == (
        first.code, first.detail, True, True)  # type: ignore[union-attr]
    assert posted(engine, WALLET) == 105


def test_exact_balance_may_be_spent_to_zero() -> None:
    """A wallet may be spent to exactly zero (the bound is posted >= pending debits)."""
    engine = make_engine(wallet=7)
    assert run(engine, op("k", coin(WALLET, REDEEMED, 7))).ok
    assert posted(engine, WALLET) == 0
    assert posted(engine, REDEEMED) == 7


# -- validation failures are not stored --------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "why"),
    [
        (0, "zero"),
        (-1, "negative"),
        (1.0, "a float"),
        ("5", "a string"),
        (True, "a bool"),
        (None, "missing"),
        (INT64_MAX + 1, "beyond int64"),
        (2**64, "beyond uint64"),
    ],
)
def test_bad_amount_is_a_validation_error_that_stores_nothing(amount: object, why: str) -> None:
    """An amount that is not an integer in 1..INT64_MAX is refused and leaves no trace."""
    engine = make_engine(wallet=10)
    result = run(engine, op("k", coin(WALLET, REDEEMED, amount)))
    assert isinstance(result, Failure), why
    assert result.code == codes.VALIDATION_ERROR
    assert not result.stored
    assert engine.operation_rows == []
    assert engine.transfer_rows == []
    assert engine.keys[("user:1|POST /t", "k")] is None
    assert posted(engine, WALLET) == 10


def test_same_account_on_both_sides_is_a_validation_error() -> None:
    """A transfer needs two different accounts."""
    engine = make_engine(wallet=10)
    result = run(engine, op("k", coin(WALLET, WALLET, 1)))
    assert isinstance(result, Failure)
    assert result.code == codes.VALIDATION_ERROR
    assert not result.stored
    assert engine.operation_rows == []


@pytest.mark.parametrize(
    "leg",
    [
        TransferRequest("COIN", D_ISSUANCE, WALLET, 1),
        TransferRequest("COIN", ISSUANCE, HELD, 1),
        TransferRequest("DIAMOND", ISSUANCE, WALLET, 1),
    ],
    ids=["debit-elsewhere", "credit-elsewhere", "both-elsewhere"],
)
def test_account_of_another_ledger_is_a_validation_error(leg: TransferRequest) -> None:
    """Both accounts of a transfer must be in the transfer's ledger."""
    engine = make_engine(wallet=10)
    result = run(engine, op("k", leg))
    assert isinstance(result, Failure)
    assert result.code == codes.VALIDATION_ERROR
    assert "ledger" in result.detail
    assert not result.stored
    assert engine.operation_rows == []


def test_account_used_in_two_ledgers_within_one_operation_is_refused() -> None:
    """An account already touched in its ledger cannot reappear under another ledger's leg."""
    engine = make_engine(wallet=10)
    result = run(engine, op("k", coin(ISSUANCE, WALLET, 1),
                            TransferRequest("DIAMOND", D_ISSUANCE, WALLET, 1)))
    assert isinstance(result, Failure)
    assert result.code == codes.VALIDATION_ERROR
    assert posted(engine, WALLET) == 10


def test_too_many_transfers_is_a_validation_error() -> None:
    """An operation may carry at most transfers_per_operation_max legs; exactly that many pass."""
    engine = make_engine(Limits(transfers_per_operation_max=3), wallet=10)
    at_limit = run(engine, op("ok", *[coin(WALLET, REDEEMED, 1)] * 3))
    assert at_limit.ok
    over = run(engine, op("over", *[coin(WALLET, REDEEMED, 1)] * 4))
    assert isinstance(over, Failure)
    assert over.code == codes.VALIDATION_ERROR
    assert not over.stored
    assert posted(engine, WALLET) == 7


def test_unknown_account_is_not_found_and_not_stored() -> None:
    """A leg naming an account that does not exist fails with not_found, stored nowhere."""
    engine = make_engine(wallet=10)
    result = run(engine, op("k", coin(WALLET, 999, 1)))
    assert isinstance(result, Failure)
    assert result.code == codes.NOT_FOUND
    assert not result.stored
    assert engine.operation_rows == []


@pytest.mark.parametrize("timeout_ms", [0, -1, INT64_MAX])
def test_pending_timeout_out_of_range_is_a_validation_error(timeout_ms: int) -> None:
    """A pending transfer's timeout must be a positive number of milliseconds that fits."""
    engine = make_engine(wallet=10)
    result = run(engine, op("k", coin(WALLET, REDEEMED, 1, phase=Phase.PENDING,
                                      timeout_ms=timeout_ms)))
    assert isinstance(result, Failure)
    assert result.code == codes.VALIDATION_ERROR
    assert engine.operation_rows == []


# -- overflow --------------------------------------------------------------------------------------


def test_credit_overflow_is_a_validation_error() -> None:
    """Crediting past INT64_MAX is refused as validation_error, not wrapped or stored."""
    engine = make_engine()
    engine.accounts[REDEEMED].posted = INT64_MAX - 5
    engine.accounts[ISSUANCE].posted = -(INT64_MAX - 5)
    fits = run(engine, op("fits", coin(ISSUANCE, REDEEMED, 5)))
    assert fits.ok
    assert posted(engine, REDEEMED) == INT64_MAX
    result = run(engine, op("over", coin(OTHER_WALLET, REDEEMED, 1)))
    assert isinstance(result, Failure)
    assert result.code == codes.VALIDATION_ERROR
    assert "overflow" in result.detail
    assert not result.stored
    assert posted(engine, REDEEMED) == INT64_MAX


def test_debit_underflow_of_a_negative_account_is_a_validation_error() -> None:
    """An issuance account may go negative, but never below INT64_MIN."""
    engine = make_engine()
    engine.accounts[ISSUANCE].posted = INT64_MIN + 3
    engine.accounts[REDEEMED].posted = -(INT64_MIN + 3)
    result = run(engine, op("k", coin(ISSUANCE, WALLET, 4)))
    assert isinstance(result, Failure)
    assert result.code == codes.VALIDATION_ERROR
    assert posted(engine, ISSUANCE) == INT64_MIN + 3
    assert run(engine, op("k2", coin(ISSUANCE, WALLET, 3))).ok
    assert posted(engine, ISSUANCE) == INT64_MIN


def test_pending_debits_overflow_is_a_validation_error() -> None:
    """Reservations on an account cannot add up beyond INT64_MAX."""
    engine = make_engine()
    assert run(engine, op("a", coin(ISSUANCE, REDEEMED, INT64_MAX, phase=Phase.PENDING))).ok
    result = run(engine, op("b", coin(ISSUANCE, OTHER_WALLET, 1, phase=Phase.PENDING)))
    assert isinstance(result, Failure)
    assert result.code == codes.VALIDATION_ERROR
    assert engine.accounts[ISSUANCE].pending_debits == INT64_MAX


def test_largest_amount_moves_exactly() -> None:
    """INT64_MAX itself is a valid amount and moves without loss."""
    engine = make_engine()
    assert run(engine, op("k", coin(ISSUANCE, REDEEMED, INT64_MAX))).ok
    assert posted(engine, REDEEMED) == INT64_MAX
    assert posted(engine, ISSUANCE) == -INT64_MAX


# -- linked transfers ----------------------------------------------------------------------------


def test_linked_transfers_apply_together_across_ledgers() -> None:
    """A gift moves coins and diamonds in one operation, with one transfer row per leg."""
    engine = make_engine(wallet=10)
    result = run(engine, gift("g", 4))
    assert isinstance(result, Applied)
    assert len(result.transfer_ids) == 2
    assert len(engine.transfer_rows) == 2
    assert (posted(engine, WALLET), posted(engine, REDEEMED)) == (6, 4)
    assert (posted(engine, D_ISSUANCE), posted(engine, HELD)) == (-20_000, 20_000)
    assert staged_deltas(engine) == {WALLET: (-4, 0, 0), REDEEMED: (4, 0, 0),
                                     D_ISSUANCE: (-20_000, 0, 0), HELD: (20_000, 0, 0)}


def test_linked_transfers_are_all_or_nothing() -> None:
    """When a later leg fails, the earlier legs of the same operation move nothing."""
    engine = make_engine(wallet=10)
    result = run(engine, op("k", coin(ISSUANCE, OTHER_WALLET, 3),
                            coin(WALLET, REDEEMED, 6),
                            coin(WALLET, REDEEMED, 6)))
    assert isinstance(result, Failure)
    assert result.code == codes.INSUFFICIENT_FUNDS
    assert posted(engine, OTHER_WALLET) == 0
    assert posted(engine, WALLET) == 10
    assert posted(engine, REDEEMED) == 0
    assert engine.transfer_rows == []
    assert staged_deltas(engine) == {}


def test_later_leg_may_spend_what_an_earlier_leg_credited() -> None:
    """Legs apply in order within an operation, so a leg can spend the previous leg's credit."""
    engine = make_engine(wallet=0)
    result = run(engine, op("k", coin(ISSUANCE, WALLET, 5), coin(WALLET, REDEEMED, 5)))
    assert result.ok
    assert posted(engine, WALLET) == 0
    assert posted(engine, REDEEMED) == 5
    assert WALLET not in staged_deltas(engine)


def test_a_failed_operation_leaves_its_neighbours_in_the_batch_alone() -> None:
    """In one unit of work, operations before and after a failure still apply."""
    engine = make_engine(wallet=10)
    results = [run(engine, o) for o in (
        op("a", coin(WALLET, REDEEMED, 4)),
        op("b", coin(WALLET, REDEEMED, 7)),
        op("c", coin(WALLET, REDEEMED, 6)),
    )]
    assert [r.ok for r in results] == [True, False, True]
    assert posted(engine, WALLET) == 0
    assert posted(engine, REDEEMED) == 10
    statuses = [row[5] for row in engine.operation_rows]
    assert statuses == [STATUS_SUCCEEDED, STATUS_FAILED, STATUS_SUCCEEDED]


# -- idempotency inside one engine ---------------------------------------------------------------


def test_duplicate_key_in_the_same_batch_replays() -> None:
    """The same key twice in one batch applies once; the second gets the first's result."""
    engine = make_engine(wallet=10)
    first = run(engine, gift("g", 3))
    second = run(engine, gift("g", 3))
    assert isinstance(first, Applied)
    assert isinstance(second, Applied)
    assert not first.replayed
    assert second.replayed
    assert second.operation_id == first.operation_id
    assert second.transfer_ids == first.transfer_ids
    assert posted(engine, WALLET) == 7
    assert len(engine.operation_rows) == 1
    assert len(engine.transfer_rows) == 2


def test_same_key_with_other_content_is_a_conflict_that_moves_nothing() -> None:
    """Reusing a key with different business fields is idempotency_conflict, never applied."""
    engine = make_engine(wallet=10)
    assert run(engine, gift("g", 3)).ok
    result = run(engine, gift("g", 4))
    assert isinstance(result, Failure)
    assert result.code == codes.IDEMPOTENCY_CONFLICT
    assert not result.stored
    assert posted(engine, WALLET) == 7
    assert len(engine.operation_rows) == 1


def test_same_scope_and_key_but_different_kind_conflicts() -> None:
    """The kind of an operation is part of its content hash."""
    engine = make_engine(wallet=10)
    legs = [coin(WALLET, REDEEMED, 1)]
    assert run(engine, Operation.of_transfers("s", "k", legs, kind="gift")).ok
    other = run(engine, Operation.of_transfers("s", "k", legs, kind="purchase"))
    assert isinstance(other, Failure)
    assert other.code == codes.IDEMPOTENCY_CONFLICT


def test_content_hash_ignores_actor_and_request_id() -> None:
    """Only kind and business fields are hashed: who sent it and the request id are not."""
    a = Operation.of_transfers("s", "k", [coin(WALLET, REDEEMED, 1)], actor="alice",
                               request_id="req-1")
    b = Operation.of_transfers("s", "k", [coin(WALLET, REDEEMED, 1)], actor="bob",
                               request_id="req-2")
    c = Operation.of_transfers("s", "k", [coin(WALLET, REDEEMED, 2)], actor="alice",
                               request_id="req-1")
    assert a.content_hash() == b.content_hash()
    assert a.content_hash() != c.content_hash()


def test_preloaded_key_record_replays_stored_success_and_failure() -> None:
    """A key record loaded from storage answers with the stored outcome, never re-applying."""
    engine = make_engine(wallet=10)
    ok_op = op("ok", coin(WALLET, REDEEMED, 1))
    failed_op = op("failed", coin(WALLET, REDEEMED, 1))
    engine.keys[(ok_op.scope, ok_op.key)] = (
        77, ok_op.content_hash(), STATUS_SUCCEEDED, b'{"t":[78],"b":{"x":1}}')
    engine.keys[(failed_op.scope, failed_op.key)] = (
        79, failed_op.content_hash(), STATUS_FAILED,
        '{"code":"insufficient_coins","detail":"nope"}')
    replay_ok = engine.apply(ok_op)
    replay_failed = engine.apply(failed_op)
    assert replay_ok == Applied(77, (78,), {"x": 1}, replayed=True)
    assert replay_failed == Failure("insufficient_coins", "nope", stored=True, replayed=True)
    assert posted(engine, WALLET) == 10
    assert engine.operation_rows == []


def test_apply_requires_the_key_to_be_loaded() -> None:
    """Applying without loading the idempotency key first is a bug the engine refuses."""
    engine = make_engine(wallet=10)
    with pytest.raises(InvariantViolation):
        engine.apply(op("k", coin(WALLET, REDEEMED, 1)))


# -- two-phase transfers ---------------------------------------------------------------------------


def reserve(engine: Engine, key: str, amount: int, timeout_ms: int | None = None) -> int:
    """Reserve ``amount`` from WALLET to REDEEMED; returns the pending transfer id."""
    result = run(engine, op(key, coin(WALLET, REDEEMED, amount, phase=Phase.PENDING,
                                      timeout_ms=timeout_ms)))
    assert isinstance(result, Applied), result
    return result.transfer_ids[0]


def balances(engine: Engine, account_id: int) -> tuple[int, int, int]:
    """(posted, pending debits, pending credits) of one account."""
    state = engine.accounts[account_id]
    return state.posted, state.pending_debits, state.pending_credits


def test_pending_reserves_and_partial_post_releases_the_rest() -> None:
    """A pending reserves funds; a partial post moves part and releases the remainder."""
    engine = make_engine(wallet=100)
    pending_id = reserve(engine, "r", 60)
    assert balances(engine, WALLET) == (100, 60, 0)
    assert balances(engine, REDEEMED) == (0, 0, 60)
    short = run(engine, op("spend", coin(WALLET, OTHER_WALLET, 41)))
    assert isinstance(short, Failure)
    assert short.code == codes.INSUFFICIENT_FUNDS
    assert run(engine, op("p", TransferRequest.post(pending_id, 25))).ok
    assert balances(engine, WALLET) == (75, 0, 0)
    assert balances(engine, REDEEMED) == (25, 0, 0)
    row = engine.transfer_rows[-1]
    assert (row[5], row[7], row[8]) == (25, int(Phase.POST), pending_id)


def test_post_with_zero_amount_posts_the_whole_pending() -> None:
    """``TransferRequest.post(id)`` moves the full pending amount."""
    engine = make_engine(wallet=100)
    pending_id = reserve(engine, "r", 60)
    assert run(engine, op("p", TransferRequest.post(pending_id))).ok
    assert balances(engine, WALLET) == (40, 0, 0)
    assert balances(engine, REDEEMED) == (60, 0, 0)
    assert engine.transfer_rows[-1][5] == 60


def test_void_releases_the_whole_pending() -> None:
    """A void gives the reserved amount back and posts nothing."""
    engine = make_engine(wallet=100)
    pending_id = reserve(engine, "r", 60)
    assert run(engine, op("v", TransferRequest.void(pending_id))).ok
    assert balances(engine, WALLET) == (100, 0, 0)
    assert balances(engine, REDEEMED) == (0, 0, 0)


@pytest.mark.parametrize("second", ["post", "void"])
def test_resolving_twice_is_a_stored_pending_already_resolved(second: str) -> None:
    """After a post, a second post or a void fails with pending_already_resolved (stored)."""
    engine = make_engine(wallet=100)
    pending_id = reserve(engine, "r", 60)
    assert run(engine, op("p1", TransferRequest.post(pending_id, 10))).ok
    leg = TransferRequest.post(pending_id) if second == "post" else TransferRequest.void(
        pending_id)
    result = run(engine, op("p2", leg))
    assert isinstance(result, Failure)
    assert result.code == codes.PENDING_ALREADY_RESOLVED
    assert result.stored
    assert balances(engine, WALLET) == (90, 0, 0)


def test_resolving_twice_within_one_operation_is_refused() -> None:
    """An operation that posts and voids the same pending fails as a whole."""
    engine = make_engine(wallet=100)
    pending_id = reserve(engine, "r", 60)
    result = run(engine, op("pv", TransferRequest.post(pending_id),
                            TransferRequest.void(pending_id)))
    assert isinstance(result, Failure)
    assert result.code == codes.PENDING_ALREADY_RESOLVED
    assert balances(engine, WALLET) == (100, 60, 0)


def test_post_after_timeout_is_pending_expired_but_void_still_works() -> None:
    """At its timeout a pending can no longer be posted (stored failure); it can be voided."""
    clock = Clock()
    engine = make_engine(clock=clock, wallet=100)
    pending_id = reserve(engine, "r", 60, timeout_ms=1_000)
    clock.now += 999
    early = engine.pendings[pending_id].timeout_at_ms
    assert early == NOW_MS + 1_000
    clock.now += 1
    result = run(engine, op("p", TransferRequest.post(pending_id)))
    assert isinstance(result, Failure)
    assert result.code == codes.PENDING_EXPIRED
    assert result.stored
    assert run(engine, op("v", TransferRequest.void(pending_id))).ok
    assert balances(engine, WALLET) == (100, 0, 0)


def test_post_just_before_timeout_succeeds() -> None:
    """One millisecond before its timeout a pending still posts."""
    clock = Clock()
    engine = make_engine(clock=clock, wallet=100)
    pending_id = reserve(engine, "r", 60, timeout_ms=1_000)
    clock.now += 999
    assert run(engine, op("p", TransferRequest.post(pending_id))).ok


@pytest.mark.parametrize("amount", [-1, 61])
def test_post_outside_the_pending_amount_is_a_validation_error(amount: int) -> None:
    """A post moves between 1 and the pending amount; anything else is refused, not stored."""
    engine = make_engine(wallet=100)
    pending_id = reserve(engine, "r", 60)
    result = run(engine, op("p", TransferRequest.post(pending_id, amount)))
    assert isinstance(result, Failure)
    assert result.code == codes.VALIDATION_ERROR
    assert not result.stored
    assert balances(engine, WALLET) == (100, 60, 0)


@pytest.mark.parametrize("amount", [1.5, True], ids=["float", "bool"])
def test_post_with_a_non_integer_amount_is_a_validation_error(amount: object) -> None:
    """A post's amount must be an int like every other amount; floats never touch money."""
    engine = make_engine(wallet=100)
    pending_id = reserve(engine, "r", 60)
    result = run(engine, op("p", TransferRequest.post(pending_id, amount)))  # type: ignore[arg-type]
    assert isinstance(result, Failure)
    assert result.code == codes.VALIDATION_ERROR


def test_resolving_an_unknown_pending_is_not_found() -> None:
    """Posting a pending id that was never loaded fails with not_found and stores nothing."""
    engine = make_engine(wallet=100)
    result = run(engine, op("p", TransferRequest.post(123_456)))
    assert isinstance(result, Failure)
    assert result.code == codes.NOT_FOUND
    assert engine.operation_rows == []


def test_loaded_resolved_pending_cannot_be_resolved() -> None:
    """A pending loaded as already resolved (by an earlier transaction) refuses resolution."""
    engine = make_engine(wallet=100)
    engine.pendings[5] = PendingState(5, "COIN", WALLET, REDEEMED, 10, None, resolved=True)
    result = run(engine, op("p", TransferRequest.void(5)))
    assert isinstance(result, Failure)
    assert result.code == codes.PENDING_ALREADY_RESOLVED


# -- conservation --------------------------------------------------------------------------------


def test_conservation_holds_over_a_random_workload() -> None:
    """Per ledger, posted balances sum to zero and pending debits equal pending credits.

    Random singles, pendings, posts and voids (many of them failing) run through one engine; the
    staged deltas must add up to the same zero sums as the balances.
    """
    rng = random.Random(20240611)
    clock = Clock()
    engine = make_engine(clock=clock, wallet=500)
    initial = {account_id: (s.posted, s.pending_debits, s.pending_credits)
               for account_id, s in engine.accounts.items()}
    coin_accounts = [ISSUANCE, WALLET, REDEEMED, OTHER_WALLET]
    pendings: list[int] = []
    outcomes = {"ok": 0, "failed": 0}
    for i in range(400):
        clock.now += rng.randint(0, 50)
        choice = rng.random()
        if choice < 0.55 or not pendings:
            debit, credit = rng.sample(coin_accounts, 2)
            phase = Phase.PENDING if rng.random() < 0.3 else Phase.SINGLE
            leg = coin(debit, credit, rng.randint(1, 120), phase=phase,
                       timeout_ms=rng.choice([None, 200, 2_000]) if phase else None)
            result = run(engine, op(f"k{i}", leg, TransferRequest(
                "DIAMOND", D_ISSUANCE, HELD, rng.randint(1, 9))))
            if isinstance(result, Applied) and phase is Phase.PENDING:
                pendings.append(result.transfer_ids[0])
        else:
            pending_id = rng.choice(pendings)
            amount = engine.pendings[pending_id].amount
            leg = (TransferRequest.post(pending_id, rng.randint(0, amount))
                   if rng.random() < 0.5 else TransferRequest.void(pending_id))
            result = run(engine, op(f"k{i}", leg))
        outcomes["ok" if result.ok else "failed"] += 1
        for ledger in ("COIN", "DIAMOND"):
            states = [s for s in engine.accounts.values() if s.ledger == ledger]
            assert sum(s.posted for s in states) == 0
            assert sum(s.pending_debits for s in states) == sum(
                s.pending_credits for s in states)
        for state in engine.accounts.values():
            assert state.allow_negative or state.posted >= state.pending_debits
    assert outcomes["ok"] > 50
    assert outcomes["failed"] > 10
    deltas = staged_deltas(engine)
    for ledger in ("COIN", "DIAMOND"):
        in_ledger = [d for account_id, d in deltas.items()
                     if engine.accounts[account_id].ledger == ledger]
        assert sum(d[0] for d in in_ledger) == 0
        assert sum(d[1] - d[2] for d in in_ledger) == 0
    for account_id, state in engine.accounts.items():
        now = (state.posted, state.pending_debits, state.pending_credits)
        delta = deltas.get(account_id, (0, 0, 0))
        assert tuple(a - b for a, b in zip(now, initial[account_id], strict=True)) == delta


def test_conservation_check_refuses_unbalanced_changes() -> None:
    """The engine's postcondition raises, per ledger, if money appears when the unit of work's
    balance changes are written.
    """
    engine = make_engine(wallet=10)
    redeemed = engine.accounts[REDEEMED]
    redeemed.posted += 1
    with pytest.raises(InvariantViolation, match="in COIN sum to 1"):
        engine.balance_deltas()
    redeemed.posted -= 1
    wallet = engine.accounts[WALLET]
    wallet.pending_debits += 5
    with pytest.raises(InvariantViolation, match="pending"):
        engine.balance_deltas()
    wallet.pending_debits -= 5
    wallet.posted -= 1
    redeemed.posted += 1
    assert staged_deltas(engine) == {WALLET: (-1, 0, 0), REDEEMED: (1, 0, 0)}


def test_timeout_on_a_posted_transfer_is_a_validation_error() -> None:
    """Only a pending transfer can time out; a timeout on a posted one is refused, not stored."""
    engine = make_engine(wallet=100)
    leg = TransferRequest("COIN", WALLET, REDEEMED, 5, timeout_ms=2**63 - 1)
    result = run(engine, Operation.of_transfers("s", "t", [leg]))
    assert result.code == codes.VALIDATION_ERROR
    assert not result.stored
    assert balances(engine, WALLET) == (100, 0, 0)
