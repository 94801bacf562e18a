"""The ledger service on both real stores: idempotency, two-phase transfers, group commit, history.

Every test runs against SQLite and the real PostgreSQL server (a fresh schema each). Where a test
needs a transaction to stay open, it pauses a real commit with a threading event; the database is
never replaced by a fake.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import psycopg
import pytest

from giftflow.adapters.sql.store import SqlStore
from giftflow.invariants import InvariantViolation
from giftflow.ledger import (
    Account,
    Applied,
    Failure,
    GroupCommitSettings,
    GroupCommitter,
    Ledger,
    LedgerLimits,
    Operation,
    Phase,
    Result,
    StoreConflict,
    TransferRequest,
    codes,
    verify,
)

T0_MS = 1_750_000_000_000
WAIT_S = 10


@dataclass
class Book:
    """A small chart of accounts: coins for viewers, diamonds for a creator."""

    coin_issuance: Account
    wallet: Account
    wallet_2: Account
    redeemed: Account
    diamond_issuance: Account
    held: Account
    payout_clearing: Account


def open_book(ledger: Ledger) -> Book:
    """Open the accounts of :class:`Book` (fresh owners, so tests never share balances)."""
    run = uuid.uuid4().hex[:6]
    open_ = ledger.open_account
    return Book(
        coin_issuance=open_("COIN", "platform", "coins:issuance", allow_negative=True),
        wallet=open_("COIN", f"viewer-{run}", "wallet"),
        wallet_2=open_("COIN", f"viewer2-{run}", "wallet"),
        redeemed=open_("COIN", "platform", "coins:redeemed", allow_negative=True),
        diamond_issuance=open_("DIAMOND", "platform", "diamonds:issuance", allow_negative=True),
        held=open_("DIAMOND", f"creator-{run}", "diamonds:held"),
        payout_clearing=open_("DIAMOND", "platform", "payout:clearing", allow_negative=True),
    )


def transfer(scope: str, key: str, ledger: str, debit: Account, credit: Account, amount: int,
             **extra: object) -> Operation:
    """A one-leg raw ledger operation."""
    return Operation.of_transfers(
        scope, key, [TransferRequest(ledger, debit.id, credit.id, amount, **extra)])  # type: ignore[arg-type]


def fund(ledger: Ledger, book: Book, amount: int, key: str | None = None,
         wallet: Account | None = None) -> Applied:
    """Buy ``amount`` coins into a wallet."""
    result = ledger.apply(transfer("provider:simulator", key or uuid.uuid4().hex, "COIN",
                                   book.coin_issuance, wallet or book.wallet, amount,
                                   code="purchase"))
    assert isinstance(result, Applied), result
    return result


def spend(book: Book, key: str, amount: int, wallet: Account | None = None) -> Operation:
    """A gift-like spend from a wallet, refused as ``insufficient_coins`` when short."""
    return transfer("user:viewer|POST /v1/streams/{id}/gifts", key, "COIN", wallet or book.wallet,
                    book.redeemed, amount, code="gift", shortfall_code="insufficient_coins")


def posted(ledger: Ledger, account: Account) -> int:
    """The cached posted balance of an account."""
    current = ledger.account(account.id)
    assert current is not None
    return current.posted


def balances(ledger: Ledger, account: Account) -> tuple[int, int, int]:
    """(posted, pending debits, pending credits) of an account, from the store."""
    current = ledger.account(account.id)
    assert current is not None
    return current.posted, current.pending_debits, current.pending_credits


def operation_rows(store: SqlStore, scope: str, key: str) -> int:
    """How many operations the database holds under one idempotency key."""
    with store.connection() as db:
        rows = db.execute("SELECT COUNT(*) FROM operations WHERE scope = ? AND idem_key = ?",
                          (scope, key))
    return int(rows[0][0])


def assert_verified(store: SqlStore) -> None:
    """Every ledger invariant holds on the stored transfers."""
    report = verify(store.verification_facts())
    assert report.ok, [(c.name, c.violations) for c in report.checks if not c.ok]


class CommitGate:
    """Pauses the commits of one store until released, with their transaction still open.

    The real unit of work runs; only its ``commit`` waits on an event first.
    """

    def __init__(self, store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        real_unit_of_work = store.unit_of_work

        def unit_of_work():
            uow = real_unit_of_work()
            real_commit = uow.commit

            def commit() -> None:
                self.entered.set()
                if not self.release.wait(WAIT_S):
                    raise TimeoutError("the commit gate was never released")
                real_commit()

            uow.commit = commit  # type: ignore[method-assign]
            return uow

        monkeypatch.setattr(store, "unit_of_work", unit_of_work)


class Clock:
    """A millisecond clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0_MS

    def __call__(self) -> int:
        """The current time."""
        return self.now


@pytest.fixture
def clock() -> Clock:
    """A hand-driven clock starting at T0_MS."""
    return Clock()


@pytest.fixture
def timed(store_url: str, clock: Clock) -> Iterator[tuple[Ledger, SqlStore]]:
    """A ledger whose service and store both read the hand-driven clock."""
    store = SqlStore(store_url, now_ms=clock)
    try:
        yield Ledger(store, clock_ms=clock), store
    finally:
        store.close()


def in_thread(target: Callable[[], Result]) -> tuple[threading.Thread, list[Result]]:
    """Start ``target`` on a thread; its result lands in the returned list."""
    out: list[Result] = []
    thread = threading.Thread(target=lambda: out.append(target()), daemon=True)
    thread.start()
    return thread, out


# -- idempotency (SPEC §1) ---------------------------------------------------------------------


def test_retry_returns_the_original_success_and_moves_money_once(ledger: Ledger) -> None:
    """A repeat with the same key and content gets the stored result back; money moves once."""
    book = open_book(ledger)
    fund(ledger, book, 100)
    first = ledger.apply(spend(book, "gift-1", 30))
    again = ledger.apply(spend(book, "gift-1", 30))
    assert isinstance(first, Applied)
    assert isinstance(again, Applied)
    assert not first.replayed
    assert again.replayed
    assert (again.operation_id, again.transfer_ids) == (first.operation_id, first.transfer_ids)
    assert posted(ledger, book.wallet) == 70
    assert posted(ledger, book.redeemed) == 30
    assert len(ledger.history(book.wallet.id).entries) == 2


def test_retry_returns_the_stored_business_failure(ledger: Ledger, store: SqlStore) -> None:
    """A stored insufficient_coins is replayed even after the wallet was topped up."""
    book = open_book(ledger)
    fund(ledger, book, 10)
    refused = ledger.apply(spend(book, "gift-1", 25))
    assert isinstance(refused, Failure)
    assert (refused.code, refused.stored, refused.replayed) == ("insufficient_coins", True, False)
    assert operation_rows(store, "user:viewer|POST /v1/streams/{id}/gifts", "gift-1") == 1
    fund(ledger, book, 100)
    again = ledger.apply(spend(book, "gift-1", 25))
    assert isinstance(again, Failure)
    assert (again.code, again.detail, again.stored, again.replayed) == (
        "insufficient_coins", refused.detail, True, True)
    assert posted(ledger, book.wallet) == 110


def test_same_key_other_content_is_a_conflict_that_moves_nothing(ledger: Ledger) -> None:
    """Reusing a key with different content is idempotency_conflict; the original stays."""
    book = open_book(ledger)
    fund(ledger, book, 100)
    first = ledger.apply(spend(book, "gift-1", 30))
    assert first.ok
    conflict = ledger.apply(spend(book, "gift-1", 31))
    assert isinstance(conflict, Failure)
    assert conflict.code == codes.IDEMPOTENCY_CONFLICT
    assert not conflict.stored
    assert posted(ledger, book.wallet) == 70
    again = ledger.apply(spend(book, "gift-1", 30))
    assert isinstance(again, Applied)
    assert again.replayed
    assert again.operation_id == first.operation_id  # type: ignore[union-attr]


def test_conflict_with_a_stored_failure_is_still_a_conflict(ledger: Ledger) -> None:
    """A key that holds a stored failure refuses other content too; it never retries it."""
    book = open_book(ledger)
    assert not ledger.apply(spend(book, "gift-1", 5)).ok
    fund(ledger, book, 100)
    conflict = ledger.apply(spend(book, "gift-1", 1))
    assert isinstance(conflict, Failure)
    assert conflict.code == codes.IDEMPOTENCY_CONFLICT
    assert posted(ledger, book.wallet) == 100


def test_validation_failure_stores_nothing(ledger: Ledger, store: SqlStore) -> None:
    """A request failing validation leaves no key behind: the corrected request may reuse it."""
    book = open_book(ledger)
    fund(ledger, book, 100)
    scope = "user:viewer|POST /v1/streams/{id}/gifts"
    bad = ledger.apply(spend(book, "gift-1", 0))
    assert isinstance(bad, Failure)
    assert bad.code == codes.VALIDATION_ERROR
    assert not bad.stored
    assert operation_rows(store, scope, "gift-1") == 0
    again = ledger.apply(spend(book, "gift-1", 0))
    assert isinstance(again, Failure)
    assert not again.replayed
    corrected = ledger.apply(spend(book, "gift-1", 7))
    assert isinstance(corrected, Applied)
    assert not corrected.replayed
    assert operation_rows(store, scope, "gift-1") == 1
    assert posted(ledger, book.wallet) == 93


def test_content_hash_ignores_actor_and_request_id(ledger: Ledger) -> None:
    """A retry from another request id or actor is still the same request, not a conflict."""
    book = open_book(ledger)
    fund(ledger, book, 100)
    legs = [TransferRequest("COIN", book.wallet.id, book.redeemed.id, 5)]
    first = ledger.apply(Operation.of_transfers("s", "k", legs, actor="a", request_id="r1"))
    retry = ledger.apply(Operation.of_transfers("s", "k", legs, actor="b", request_id="r2"))
    assert isinstance(retry, Applied)
    assert retry.replayed
    assert retry.operation_id == first.operation_id  # type: ignore[union-attr]
    assert posted(ledger, book.wallet) == 95


def test_scopes_are_isolated(ledger: Ledger) -> None:
    """The same key in two scopes names two independent operations."""
    book = open_book(ledger)
    fund(ledger, book, 100)
    a = ledger.apply(transfer("user:1|POST /gifts", "k", "COIN", book.wallet, book.redeemed, 10))
    b = ledger.apply(transfer("user:2|POST /gifts", "k", "COIN", book.wallet, book.redeemed, 20))
    assert isinstance(a, Applied)
    assert isinstance(b, Applied)
    assert not b.replayed
    assert a.operation_id != b.operation_id
    assert posted(ledger, book.wallet) == 70
    again_a = ledger.apply(
        transfer("user:1|POST /gifts", "k", "COIN", book.wallet, book.redeemed, 10))
    assert isinstance(again_a, Applied)
    assert again_a.operation_id == a.operation_id
    assert posted(ledger, book.wallet) == 70


def test_duplicate_while_the_first_runs_is_in_progress(ledger: Ledger, store: SqlStore,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """In one process, a duplicate arriving mid-transaction gets idempotency_in_progress at once.

    After the first commits, the same request gets the replay; money moved once.
    """
    book = open_book(ledger)
    fund(ledger, book, 100)
    gate = CommitGate(store, monkeypatch)
    thread, out = in_thread(lambda: ledger.apply(spend(book, "gift-1", 40)))
    assert gate.entered.wait(WAIT_S)
    started = time.monotonic()
    busy = ledger.apply(spend(book, "gift-1", 40))
    assert time.monotonic() - started < 1.0
    assert isinstance(busy, Failure)
    assert busy.code == codes.IDEMPOTENCY_IN_PROGRESS
    assert not busy.stored
    gate.release.set()
    thread.join(WAIT_S)
    assert isinstance(out[0], Applied)
    again = ledger.apply(spend(book, "gift-1", 40))
    assert isinstance(again, Applied)
    assert again.replayed
    assert again.operation_id == out[0].operation_id
    assert posted(ledger, book.wallet) == 60


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_duplicate_on_another_connection_is_in_progress_then_replays(store: SqlStore) -> None:
    """PostgreSQL: a duplicate from another store object is told in-progress without waiting.

    The first transaction holds the key's advisory lock; a batch from the second store answers
    the duplicate at once and still applies its other operation. After the first commits, the
    duplicate gets the replay.
    """
    ledger = Ledger(store)
    book = open_book(ledger)
    fund(ledger, book, 100)
    fund(ledger, book, 50, wallet=book.wallet_2)
    other = SqlStore(store.url)
    try:
        other_ledger = Ledger(other)
        operation = spend(book, "gift-1", 40)
        with store.unit_of_work() as uow:
            first = uow.apply(operation)
            assert isinstance(first, Applied)
            started = time.monotonic()
            thread, out = in_thread(lambda: other_ledger.apply(operation))
            thread.join(5)
            assert not thread.is_alive(), "the duplicate waited for the first transaction"
            assert time.monotonic() - started < 2.0
            assert isinstance(out[0], Failure)
            assert out[0].code == codes.IDEMPOTENCY_IN_PROGRESS
            # The neighbour touches accounts the first transaction has not locked.
            neighbour_op = transfer("user:viewer-2|refunds", "refund-1", "COIN", book.wallet_2,
                                    book.coin_issuance, 5)
            thread, batch_out = in_thread(
                lambda: other_ledger.apply_batch([operation, neighbour_op]))  # type: ignore[arg-type,return-value]
            thread.join(5)
            assert not thread.is_alive()
            busy, neighbour = batch_out[0]  # type: ignore[misc]
            assert busy.code == codes.IDEMPOTENCY_IN_PROGRESS
            assert isinstance(neighbour, Applied)
            uow.commit()
        replay = other_ledger.apply(operation)
        assert isinstance(replay, Applied)
        assert replay.replayed
        assert replay.operation_id == first.operation_id
        assert posted(ledger, book.wallet) == 60
        assert posted(ledger, book.wallet_2) == 45
    finally:
        other.close()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_rolled_back_first_attempt_frees_the_key_for_another_connection(store: SqlStore) -> None:
    """PostgreSQL: if the first transaction rolls back, the other connection applies afresh."""
    ledger = Ledger(store)
    book = open_book(ledger)
    fund(ledger, book, 100)
    other = SqlStore(store.url)
    try:
        operation = spend(book, "gift-1", 40)
        with store.unit_of_work() as uow:
            assert uow.apply(operation).ok
            uow.rollback()
        result = Ledger(other).apply(operation)
        assert isinstance(result, Applied)
        assert not result.replayed
        assert posted(ledger, book.wallet) == 60
    finally:
        other.close()


# -- two-phase transfers -------------------------------------------------------------------------


def payout(book: Book, key: str, amount: int, timeout_ms: int | None = 60_000) -> Operation:
    """Reserve diamonds from the creator for a payout (a pending transfer)."""
    return transfer(f"user:{book.held.owner}|POST /v1/payouts", key, "DIAMOND", book.held,
                    book.payout_clearing, amount, code="payout", phase=Phase.PENDING,
                    timeout_ms=timeout_ms)


def resolve(key: str, leg: TransferRequest) -> Operation:
    """A provider's final status for a payout."""
    return Operation.of_transfers("provider:simulator|payouts", key, [leg], kind="payout_status")


def earn(ledger: Ledger, book: Book, amount: int) -> None:
    """Credit the creator's held diamonds."""
    result = ledger.apply(transfer("system:gifts", uuid.uuid4().hex, "DIAMOND",
                                   book.diamond_issuance, book.held, amount))
    assert result.ok


def reserved(ledger: Ledger, operation: Operation) -> int:
    """Apply a reservation and return its pending transfer id."""
    result = ledger.apply(operation)
    assert isinstance(result, Applied), result
    return result.transfer_ids[0]


def test_pending_reserve_partial_post_full_post_and_void(
        timed: tuple[Ledger, SqlStore]) -> None:
    """Reservations count against availability; posts move money; voids release it."""
    ledger, store = timed
    book = open_book(ledger)
    earn(ledger, book, 1_000)
    first = reserved(ledger, payout(book, "p1", 300))
    assert balances(ledger, book.held) == (1_000, 300, 0)
    assert balances(ledger, book.payout_clearing)[1:] == (0, 300)
    short = ledger.apply(payout(book, "p-too-big", 701))
    assert isinstance(short, Failure)
    assert short.code == codes.INSUFFICIENT_FUNDS
    assert short.stored

    assert ledger.apply(resolve("p1-paid", TransferRequest.post(first, 120))).ok
    assert balances(ledger, book.held) == (880, 0, 0)
    clearing_after_first = balances(ledger, book.payout_clearing)
    assert clearing_after_first[1:] == (0, 0)

    second = reserved(ledger, payout(book, "p2", 200))
    assert ledger.apply(resolve("p2-paid", TransferRequest.post(second))).ok
    assert balances(ledger, book.held) == (680, 0, 0)
    assert posted(ledger, book.payout_clearing) == clearing_after_first[0] + 200

    third = reserved(ledger, payout(book, "p3", 50))
    assert balances(ledger, book.held) == (680, 50, 0)
    assert ledger.apply(resolve("p3-failed", TransferRequest.void(third))).ok
    assert balances(ledger, book.held) == (680, 0, 0)

    phases = [(e.phase, e.pending_id, e.amount) for e in ledger.history(book.held.id).entries]
    assert phases[:6] == [
        (Phase.VOID, third, 50), (Phase.PENDING, None, 50),
        (Phase.POST, second, 200), (Phase.PENDING, None, 200),
        (Phase.POST, first, 120), (Phase.PENDING, None, 300),
    ]
    assert_verified(store)


@pytest.mark.parametrize("second", ["post", "void"])
def test_double_resolution_is_a_stored_pending_already_resolved(
        timed: tuple[Ledger, SqlStore], second: str) -> None:
    """A pending resolves once; a later post or void fails, stored, and replays on retry."""
    ledger, store = timed
    book = open_book(ledger)
    earn(ledger, book, 1_000)
    pending_id = reserved(ledger, payout(book, "p1", 300))
    assert ledger.apply(resolve("paid", TransferRequest.post(pending_id))).ok
    leg = (TransferRequest.post(pending_id) if second == "post"
           else TransferRequest.void(pending_id))
    refused = ledger.apply(resolve("again", leg))
    assert isinstance(refused, Failure)
    assert (refused.code, refused.stored) == (codes.PENDING_ALREADY_RESOLVED, True)
    retried = ledger.apply(resolve("again", leg))
    assert isinstance(retried, Failure)
    assert (retried.code, retried.replayed) == (codes.PENDING_ALREADY_RESOLVED, True)
    assert balances(ledger, book.held) == (700, 0, 0)
    assert_verified(store)


def test_post_after_timeout_is_pending_expired(timed: tuple[Ledger, SqlStore],
                                               clock: Clock) -> None:
    """At its timeout a pending can no longer be posted; the funds stay reserved until expiry."""
    ledger, store = timed
    book = open_book(ledger)
    earn(ledger, book, 1_000)
    on_time = reserved(ledger, payout(book, "p-on-time", 100, timeout_ms=1_000))
    late = reserved(ledger, payout(book, "p-late", 200, timeout_ms=1_000))
    clock.now += 999
    assert ledger.apply(resolve("on-time-paid", TransferRequest.post(on_time))).ok
    clock.now += 1
    expired = ledger.apply(resolve("late-paid", TransferRequest.post(late)))
    assert isinstance(expired, Failure)
    assert (expired.code, expired.stored) == (codes.PENDING_EXPIRED, True)
    assert balances(ledger, book.held) == (900, 200, 0)
    results = ledger.expire_pending()
    assert [r.ok for r in results] == [True]
    assert balances(ledger, book.held) == (900, 0, 0)
    retried = ledger.apply(resolve("late-paid", TransferRequest.post(late)))
    assert isinstance(retried, Failure)
    assert (retried.code, retried.replayed) == (codes.PENDING_EXPIRED, True)
    assert_verified(store)


def test_expire_pending_voids_only_expired_reservations(timed: tuple[Ledger, SqlStore],
                                                        clock: Clock) -> None:
    """expire_pending voids what timed out, releases pending debits, and never touches the rest."""
    ledger, store = timed
    book = open_book(ledger)
    earn(ledger, book, 1_000)
    short = reserved(ledger, payout(book, "short", 100, timeout_ms=500))
    long = reserved(ledger, payout(book, "long", 200, timeout_ms=5_000))
    reserved(ledger, payout(book, "forever", 300, timeout_ms=None))
    assert balances(ledger, book.held) == (1_000, 600, 0)
    clearing = balances(ledger, book.payout_clearing)

    assert ledger.expire_pending() == []
    clock.now += 500
    first = ledger.expire_pending()
    assert [r.ok for r in first] == [True]
    assert balances(ledger, book.held) == (1_000, 500, 0)
    assert balances(ledger, book.payout_clearing) == (clearing[0], 0, clearing[2] - 100)
    assert ledger.expire_pending() == []

    clock.now += 10**9
    second = ledger.expire_pending()
    assert [r.ok for r in second] == [True]
    assert balances(ledger, book.held) == (1_000, 300, 0)
    assert ledger.expire_pending() == []

    voids = [e for e in ledger.history(book.held.id).entries if e.phase is Phase.VOID]
    assert sorted(e.pending_id for e in voids) == sorted([short, long])  # type: ignore[type-var]
    assert {(e.code, e.actor) for e in voids} == {("expired", "system")}
    late = ledger.apply(resolve("late", TransferRequest.post(short)))
    assert isinstance(late, Failure)
    assert late.code == codes.PENDING_ALREADY_RESOLVED
    assert_verified(store)


# -- group commit ---------------------------------------------------------------------------------


def test_batch_failure_leaves_neighbours_applied(ledger: Ledger, store: SqlStore) -> None:
    """In one group commit, an insufficient op fails alone; the ops around it apply."""
    book = open_book(ledger)
    fund(ledger, book, 50)
    results = ledger.apply_batch([
        spend(book, "a", 20),
        spend(book, "b", 31),
        spend(book, "c", 30),
        spend(book, "a", 20),
        spend(book, "d", 0),
        spend(book, "e", 1),
    ])
    assert [r.ok for r in results] == [True, False, True, True, False, False]
    assert isinstance(results[1], Failure)
    assert (results[1].code, results[1].stored) == ("insufficient_coins", True)
    assert isinstance(results[3], Applied)
    assert results[3].replayed
    assert results[3].operation_id == results[0].operation_id  # type: ignore[union-attr]
    assert isinstance(results[4], Failure)
    assert results[4].code == codes.VALIDATION_ERROR
    assert isinstance(results[5], Failure)
    assert results[5].code == "insufficient_coins"
    assert posted(ledger, book.wallet) == 0
    assert_verified(store)


def count_unit_of_work(store: SqlStore, monkeypatch: pytest.MonkeyPatch,
                       on_first: Callable[[object], None]) -> list[int]:
    """Count the store's transactions; ``on_first`` patches the first one."""
    calls: list[int] = []
    real_unit_of_work = store.unit_of_work

    def unit_of_work():
        uow = real_unit_of_work()
        calls.append(1)
        if len(calls) == 1:
            on_first(uow)
        return uow

    monkeypatch.setattr(store, "unit_of_work", unit_of_work)
    return calls


def test_lost_race_falls_back_to_one_transaction_per_operation(
        ledger: Ledger, store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the batch's commit loses a race, each op is retried alone and applies exactly once."""
    book = open_book(ledger)
    fund(ledger, book, 50)

    def lose(uow: object) -> None:
        def commit() -> None:
            raise StoreConflict("simulated lost race at commit")

        uow.commit = commit  # type: ignore[attr-defined]

    calls = count_unit_of_work(store, monkeypatch, lose)
    results = ledger.apply_batch([spend(book, "a", 20), spend(book, "b", 40),
                                  spend(book, "c", 30)])
    assert len(calls) == 4
    assert [r.ok for r in results] == [True, False, True]
    assert not any(r.replayed for r in results)
    assert isinstance(results[1], Failure)
    assert results[1].code == "insufficient_coins"
    assert posted(ledger, book.wallet) == 0
    assert len(ledger.history(book.wallet.id).entries) == 3
    assert_verified(store)


def test_persistent_lost_races_end_as_overloaded(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """An op that keeps losing races gives up with overloaded after conflict_retries_max tries."""
    ledger = Ledger(store, LedgerLimits(conflict_retries_max=3))
    book = open_book(ledger)
    fund(ledger, book, 50)
    real_unit_of_work = store.unit_of_work
    calls: list[int] = []

    def unit_of_work():
        uow = real_unit_of_work()
        calls.append(1)

        def commit() -> None:
            raise StoreConflict("always loses")

        uow.commit = commit  # type: ignore[method-assign]
        return uow

    monkeypatch.setattr(store, "unit_of_work", unit_of_work)
    result = ledger.apply(spend(book, "a", 20))
    assert isinstance(result, Failure)
    assert result.code == codes.OVERLOADED
    assert len(calls) == 4
    monkeypatch.undo()
    assert posted(ledger, book.wallet) == 50


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_key_taken_by_another_connection_mid_batch_falls_back(
        ledger: Ledger, store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: another connection commits one of the batch's keys first (a real unique
    violation at commit); the batch falls back, that op replays the winner, the rest apply once.
    """
    book = open_book(ledger)
    fund(ledger, book, 100)
    contested = spend(book, "b", 10)
    winner_id = 9_000_000_000_001

    def race(uow: object) -> None:
        real_apply_many = uow.apply_many  # type: ignore[attr-defined]

        def apply_many(operations):
            results = real_apply_many(operations)
            with psycopg.connect(store.url, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO operations (id, scope, idem_key, kind, content_hash, status, "
                    "response, actor, request_id, created_at_ms) "
                    "VALUES (%s, %s, %s, %s, %s, 'succeeded', %s, 'other', '', 0)",
                    (winner_id, contested.scope, contested.key, contested.kind,
                     contested.content_hash(), '{"t":[],"b":{}}'))
            return results

        uow.apply_many = apply_many  # type: ignore[attr-defined]

    calls = count_unit_of_work(store, monkeypatch, race)
    results = ledger.apply_batch([spend(book, "a", 20), contested, spend(book, "c", 30)])
    assert len(calls) == 4
    a, b, c = results
    assert isinstance(a, Applied)
    assert not a.replayed
    assert isinstance(b, Applied)
    assert (b.replayed, b.operation_id, b.transfer_ids) == (True, winner_id, ())
    assert isinstance(c, Applied)
    assert not c.replayed
    assert posted(ledger, book.wallet) == 50
    assert len(ledger.history(book.wallet.id).entries) == 3


def test_batch_larger_than_the_limit_is_refused(store: SqlStore) -> None:
    """apply_batch refuses more operations than batch_operations_max (a caller bug)."""
    ledger = Ledger(store, LedgerLimits(batch_operations_max=2))
    book = open_book(ledger)
    with pytest.raises(InvariantViolation):
        ledger.apply_batch([spend(book, str(i), 1) for i in range(3)])


def test_huge_amount_is_a_validation_error_that_spares_the_batch(ledger: Ledger) -> None:
    """An amount beyond any 64-bit range is validation_error and its neighbours still apply."""
    book = open_book(ledger)
    fund(ledger, book, 50)
    good, huge = ledger.apply_batch([spend(book, "good", 5), spend(book, "huge", 2**70)])
    assert good.ok
    assert isinstance(huge, Failure)
    assert huge.code == codes.VALIDATION_ERROR


# -- history --------------------------------------------------------------------------------------


def test_history_pages_newest_first_without_gaps_or_duplicates(ledger: Ledger) -> None:
    """Cursor pages cover every transfer of an account once, newest first, with its cause."""
    book = open_book(ledger)
    expected = []
    for i in range(1, 16):
        result = ledger.apply(Operation.of_transfers(
            "provider:simulator", f"buy-{i}",
            [TransferRequest("COIN", book.coin_issuance.id, book.wallet.id, i, "purchase")],
            actor=f"provider-{i}", request_id=f"req-buy-{i}"))
        assert isinstance(result, Applied)
        expected.append((result.transfer_ids[0], result.operation_id, i, "purchase",
                         f"provider-{i}", f"req-buy-{i}", book.coin_issuance.id, book.wallet.id))
        if i % 2 == 0:
            result = ledger.apply(Operation.of_transfers(
                "user:viewer|gifts", f"gift-{i}",
                [TransferRequest("COIN", book.wallet.id, book.redeemed.id, 1, "gift")],
                actor="viewer", request_id=f"req-gift-{i}"))
            assert isinstance(result, Applied)
            expected.append((result.transfer_ids[0], result.operation_id, 1, "gift", "viewer",
                             f"req-gift-{i}", book.wallet.id, book.redeemed.id))
    ledger.apply(transfer("unrelated", "x", "COIN", book.coin_issuance, book.wallet_2, 3))
    assert len(expected) == 22

    seen = []
    cursor = None
    pages = 0
    while True:
        page = ledger.history(book.wallet.id, cursor, limit=5)
        pages += 1
        assert len(page.entries) == (5 if page.next_cursor is not None else 2)
        seen.extend(page.entries)
        if page.next_cursor is None:
            break
        assert page.next_cursor == page.entries[-1].transfer_id
        cursor = page.next_cursor
    assert pages == 5
    ids = [e.transfer_id for e in seen]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == len(ids)
    got = [(e.transfer_id, e.operation_id, e.amount, e.code, e.actor, e.request_id,
            e.debit_account_id, e.credit_account_id) for e in seen]
    assert got == sorted(expected, reverse=True)
    assert all(e.ledger == "COIN" and e.phase is Phase.SINGLE for e in seen)


def test_history_page_boundaries_and_limits(store: SqlStore) -> None:
    """An exact multiple of the page size ends without an empty page; limits are clamped."""
    ledger = Ledger(store, LedgerLimits(history_page_entries_max=3))
    book = open_book(ledger)
    assert ledger.history(book.wallet.id).entries == ()
    assert ledger.history(book.wallet.id).next_cursor is None
    for i in range(6):
        fund(ledger, book, i + 1)
    first = ledger.history(book.wallet.id, limit=100)
    assert len(first.entries) == 3
    assert first.next_cursor is not None
    second = ledger.history(book.wallet.id, first.next_cursor, limit=3)
    assert len(second.entries) == 3
    assert second.next_cursor is None
    assert [e.amount for e in first.entries + second.entries] == [6, 5, 4, 3, 2, 1]
    assert len(ledger.history(book.wallet.id, limit=0).entries) == 1


# -- the group committer --------------------------------------------------------------------------


def test_group_committer_serves_many_threads_without_overdraft(ledger: Ledger,
                                                               store: SqlStore) -> None:
    """Many threads submit spends from one wallet; every future resolves and none overdraws.

    The wallet holds 150 coins and 240 one-coin spends race for them: exactly 150 apply. Each
    thread also resubmits its first key, which must get its original's answer back.
    """
    book = open_book(ledger)
    fund(ledger, book, 150)
    committer = GroupCommitter(ledger, GroupCommitSettings(window_us=1_000))
    threads_n, per_thread = 8, 30
    futures: dict[str, Future[Result]] = {}
    duplicates: dict[str, Future[Result]] = {}
    lock = threading.Lock()

    def worker(t: int) -> None:
        mine = {f"t{t}-{i}": committer.submit(spend(book, f"t{t}-{i}", 1))
                for i in range(per_thread)}
        dup = committer.submit(spend(book, f"t{t}-0", 1))
        with lock:
            futures.update(mine)
            duplicates[f"t{t}-0"] = dup

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT_S)
    try:
        results = {key: future.result(timeout=WAIT_S) for key, future in futures.items()}
        dup_results = {key: future.result(timeout=WAIT_S) for key, future in duplicates.items()}
    finally:
        committer.close()
    assert len(results) == threads_n * per_thread
    applied = [r for r in results.values() if isinstance(r, Applied)]
    refused = [r for r in results.values() if isinstance(r, Failure)]
    assert len(applied) == 150
    assert not any(r.replayed for r in applied)
    assert len({r.operation_id for r in applied}) == 150
    assert len(refused) == 90
    assert {(r.code, r.stored) for r in refused} == {("insufficient_coins", True)}
    for key, dup in dup_results.items():
        original = results[key]
        assert dup.replayed
        if isinstance(original, Applied):
            assert isinstance(dup, Applied)
            assert dup.operation_id == original.operation_id
        else:
            assert isinstance(dup, Failure)
            assert dup.code == original.code
    assert posted(ledger, book.wallet) == 0
    assert_verified(store)


def test_group_committer_full_queue_answers_overloaded(ledger: Ledger, store: SqlStore,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """While the committer is stuck and its queue is full, submit answers overloaded at once.

    The refused operation is never applied; the queued ones commit once the committer moves.
    """
    book = open_book(ledger)
    fund(ledger, book, 100)
    gate = CommitGate(store, monkeypatch)
    committer = GroupCommitter(ledger, GroupCommitSettings(
        queue_operations_max=1, submit_timeout_ms=50, window_us=0))
    try:
        first = committer.submit(spend(book, "a", 10))
        assert gate.entered.wait(WAIT_S)
        started = time.monotonic()
        refused = committer.submit(spend(book, "b", 20)).result(timeout=WAIT_S)
        assert time.monotonic() - started < 2.0
        assert isinstance(refused, Failure)
        assert refused.code == codes.OVERLOADED
        gate.release.set()
        assert first.result(timeout=WAIT_S).ok
        later = committer.submit(spend(book, "c", 30)).result(timeout=WAIT_S)
        assert later.ok
    finally:
        gate.release.set()
        committer.close()
    assert posted(ledger, book.wallet) == 60
    retry = ledger.apply(spend(book, "b", 20))
    assert isinstance(retry, Applied)
    assert not retry.replayed
