"""Worker processes for the crash-safety and concurrency tests of the ledger.

Run as a script: ``python tests/ledger/workers.py MODE --db URL …``. The tests also load this file
as a module, so that the gift shapes and the key plan are defined in one place.

An operation is *acknowledged* when this process prints its ``ACK`` (crash mode) or ``OK`` /
``REFUSED`` line (gifts mode). A line is written and flushed only after ``Ledger.apply`` or
``Ledger.apply_batch`` (or a group-commit future) has returned a definitive result for it, that
is, after its transaction committed. ``TRY`` lines are flushed *before* an operation is handed to
the ledger, so every operation that can be in the database has a ``TRY`` line.

Modes:

- ``crash``: applies gift operations for keys ``start, start+1, …`` (after the ``--retry`` keys,
  which a killed predecessor may or may not have committed) until killed or ``--limit`` is
  reached. Gift ``i`` always has the same content, so a retried key is an idempotent repeat.
- ``gifts``: waits for ``--go`` to exist, then sends ``--count`` random gifts from random viewers
  to one hot creator and reports every result.

Commit styles (``--commit``): ``single`` (``apply``: one operation per commit), ``batch``
(``apply_batch``: random batches share a commit) and ``committer`` (a ``GroupCommitter`` fed by
several threads, as request handlers would).
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from giftflow.adapters.sql.store import SqlStore
from giftflow.ledger import (
    Applied,
    Failure,
    GroupCommitSettings,
    GroupCommitter,
    Ledger,
    Operation,
    Result,
    TransferRequest,
)

WORKER = Path(__file__).resolve()
"""This script, as the tests start it."""
ROOT = WORKER.parent.parent.parent
"""The repository, the workers' working directory."""

DIAMONDS_PER_COIN = 5_000
"""Creator share 5000 bps at DIAMOND scale 4: ``coins × 5000 × 10^4 // 10^4``."""
GIFT_COINS = (1, 1, 5, 5, 10, 30, 99)
"""Gift values drawn by the workers (repeats weight the cheap ones)."""
TRANSIENT = frozenset({"idempotency_in_progress", "overloaded"})
"""Answers that are not a decision: the operation must be sent again."""
ATTEMPTS_MAX = 400
COMMITTER_THREADS = 4


@dataclass(frozen=True, slots=True)
class Accounts:
    """The account ids of one test world: a hot creator and ``len(wallets)`` viewers."""

    tag: str
    wallets: tuple[int, ...]
    coins_issuance: int
    coins_redeemed: int
    diamonds_issuance: int
    creator_held: int


def viewer_name(tag: str, index: int) -> str:
    """The owner name of viewer ``index``."""
    return f"{tag}-viewer-{index:02d}"


def creator_name(tag: str) -> str:
    """The owner name of the hot creator."""
    return f"{tag}-creator"


def gift_scope(tag: str, viewer: int) -> str:
    """The idempotency scope of a viewer's gifts: (principal, endpoint)."""
    return f"user:{viewer_name(tag, viewer)}|POST /v1/streams/{{id}}/gifts"


def open_accounts(ledger: Ledger, tag: str, viewers: int) -> Accounts:
    """Open (or find) every account of the world ``tag``; safe to call from every process."""
    open_ = ledger.open_account
    wallets = tuple(open_("COIN", viewer_name(tag, i), "wallet").id for i in range(viewers))
    return Accounts(
        tag=tag,
        wallets=wallets,
        coins_issuance=open_("COIN", "platform", "coins:issuance", allow_negative=True).id,
        coins_redeemed=open_("COIN", "platform", "coins:redeemed", allow_negative=True).id,
        diamonds_issuance=open_("DIAMOND", "platform", "diamonds:issuance",
                                allow_negative=True).id,
        creator_held=open_("DIAMOND", creator_name(tag), "diamonds:held").id,
    )


def fund(ledger: Ledger, accounts: Accounts, coins: Sequence[int]) -> None:
    """Credit each wallet its starting coins (one purchase operation per viewer)."""
    for index, (wallet, amount) in enumerate(zip(accounts.wallets, coins, strict=True)):
        result = ledger.apply(Operation.of_transfers(
            f"provider:simulator|{accounts.tag}", f"fund-{index}",
            [TransferRequest("COIN", accounts.coins_issuance, wallet, amount, "purchase")],
            kind="purchase"))
        if not isinstance(result, Applied):
            raise TypeError(f"funding viewer {index} failed: {result}")


def gift(accounts: Accounts, key: str, viewer: int, coins: int) -> Operation:
    """A gift-shaped operation: coins from the viewer's wallet, diamonds to the hot creator."""
    return Operation(
        gift_scope(accounts.tag, viewer), key, "gift",
        {"creator": creator_name(accounts.tag), "coins": coins},
        [TransferRequest("COIN", accounts.wallets[viewer], accounts.coins_redeemed, coins,
                         "gift", shortfall_code="insufficient_coins"),
         TransferRequest("DIAMOND", accounts.diamonds_issuance, accounts.creator_held,
                         coins * DIAMONDS_PER_COIN, "gift")],
        actor=viewer_name(accounts.tag, viewer))


def crash_key(index: int) -> str:
    """The idempotency key of crash-mode gift ``index``."""
    return f"g{index:07d}"


def crash_plan(index: int, viewers: int) -> tuple[int, int]:
    """The (viewer, coins) of crash-mode gift ``index``: fixed, so retries repeat the content."""
    plan = random.Random(index)
    return plan.randrange(viewers), plan.choice(GIFT_COINS)


# -- reading back what committed -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class GiftRow:
    """A gift operation as stored, with its transfers ``(ledger, debit, credit, amount, phase)``."""

    operation_id: int
    viewer: int
    key: str
    status: str
    response: str
    legs: tuple[tuple[str, int, int, int, int], ...]


def gift_rows(store: SqlStore, accounts: Accounts) -> list[GiftRow]:
    """Every committed gift operation of the world, read in one snapshot."""
    viewer_of = {gift_scope(accounts.tag, i): i for i in range(len(accounts.wallets))}
    with store.connection() as db:
        db.execute("BEGIN" if store.dialect == "sqlite" else
                   "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            operations = db.execute(
                "SELECT id, scope, idem_key, status, response FROM operations "
                "WHERE kind = 'gift' ORDER BY id")
            transfers = db.execute(
                "SELECT t.operation_id, t.ledger, t.debit_account_id, t.credit_account_id, "
                "t.amount, t.phase FROM transfers AS t JOIN operations AS o "
                "ON o.id = t.operation_id WHERE o.kind = 'gift' ORDER BY t.id")
        finally:
            db.rollback()
    legs: dict[int, list[tuple[str, int, int, int, int]]] = {}
    for operation_id, ledger, debit, credit, amount, phase in transfers:
        legs.setdefault(int(operation_id), []).append(
            (ledger, int(debit), int(credit), int(amount), int(phase)))
    return [GiftRow(int(op_id), viewer_of[scope], key, status, response,
                    tuple(legs.get(int(op_id), ())))
            for op_id, scope, key, status, response in operations]


def expected_legs(accounts: Accounts, viewer: int,
                  coins: int) -> tuple[tuple[str, int, int, int, int], ...]:
    """The two transfers a committed gift must have, in order."""
    return (("COIN", accounts.wallets[viewer], accounts.coins_redeemed, coins, 0),
            ("DIAMOND", accounts.diamonds_issuance, accounts.creator_held,
             coins * DIAMONDS_PER_COIN, 0))


# -- output ----------------------------------------------------------------------------------------

_out_lock = threading.Lock()


def emit(line: str) -> None:
    """Write one whole line and flush it before returning."""
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


# -- applying with retries of transient answers ----------------------------------------------------

def apply_until_decided(ledger: Ledger, operations: Sequence[Operation]) -> list[Result]:
    """``apply_batch`` once, then resend alone each operation that got a transient answer."""
    results = ledger.apply_batch(operations) if len(operations) > 1 else [
        ledger.apply(operations[0])]
    for position, operation in enumerate(operations):
        attempt = 0
        while (isinstance(results[position], Failure) and results[position].code in TRANSIENT
               and attempt < ATTEMPTS_MAX):
            time.sleep(min(0.002 * 2 ** min(attempt, 6), 0.1))
            results[position] = ledger.apply(operation)
            attempt += 1
    return results


def submit_until_decided(committer: GroupCommitter, operation: Operation) -> Result:
    """Submit through group commit, resubmitting while the answer is transient."""
    result = committer.submit(operation).result()
    attempt = 0
    while isinstance(result, Failure) and result.code in TRANSIENT and attempt < ATTEMPTS_MAX:
        time.sleep(min(0.002 * 2 ** min(attempt, 6), 0.1))
        result = committer.submit(operation).result()
        attempt += 1
    return result


Report = Callable[[Operation, Result], None]


def _single(ledger: Ledger, operations: Sequence[Operation], report: Report) -> None:
    for operation in operations:
        emit(f"TRY {operation.key}")
        report(operation, apply_until_decided(ledger, [operation])[0])


def _batches(ledger: Ledger, operations: Sequence[Operation], rng: random.Random,
             batch_max: int, report: Report) -> None:
    position = 0
    while position < len(operations):
        batch = operations[position:position + rng.randint(1, batch_max)]
        position += len(batch)
        for operation in batch:
            emit(f"TRY {operation.key}")
        for operation, result in zip(batch, apply_until_decided(ledger, batch), strict=True):
            report(operation, result)


def _committer(ledger: Ledger, operations: Sequence[Operation], batch_max: int,
               report: Report) -> None:
    committer = GroupCommitter(ledger, GroupCommitSettings(batch_operations_max=batch_max,
                                                           window_us=2_000))
    errors: list[BaseException] = []

    def handler(mine: Sequence[Operation]) -> None:
        try:
            for operation in mine:
                emit(f"TRY {operation.key}")
                report(operation, submit_until_decided(committer, operation))
        except BaseException as error:
            errors.append(error)
            raise

    threads = [threading.Thread(target=handler, args=(operations[i::COMMITTER_THREADS],))
               for i in range(COMMITTER_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    committer.close()
    if errors:
        raise errors[0]


def run_operations(ledger: Ledger, operations: Sequence[Operation], commit: str,
                   rng: random.Random, batch_max: int, report: Report) -> None:
    """Apply ``operations`` in the commit style; ``report`` each definitive result after it.

    ``single`` applies one operation per commit, ``batch`` random batches of up to ``batch_max``
    per commit, and ``committer`` submits from several threads to a ``GroupCommitter``.
    """
    if commit == "single":
        _single(ledger, operations, report)
    elif commit == "batch":
        _batches(ledger, operations, rng, batch_max, report)
    elif commit == "committer":
        _committer(ledger, operations, batch_max, report)
    else:
        raise ValueError(f"unknown commit style {commit!r}")


# -- modes -----------------------------------------------------------------------------------------

def describe(result: Result) -> str:
    """``op_id replayed`` of a success, ``code replayed`` of a failure."""
    if isinstance(result, Applied):
        return f"{result.operation_id} {int(result.replayed)}"
    return f"{result.code} {int(result.replayed)}"


def crash_mode(args: argparse.Namespace, ledger: Ledger, accounts: Accounts) -> None:
    """Apply gifts ``--retry`` then ``start…`` until killed; ACK/REFUSED only after commit."""
    rng = random.Random(args.seed)
    retry = [int(index) for index in args.retry.split(",") if index]
    indexes = [*retry, *range(args.start, args.start + args.limit)]

    def operation(index: int) -> Operation:
        viewer, coins = crash_plan(index, len(accounts.wallets))
        return gift(accounts, crash_key(index), viewer, coins)

    def report(op: Operation, result: Result) -> None:
        if isinstance(result, Applied):
            emit(f"ACK {op.key} {describe(result)}")
        elif result.stored:
            emit(f"REFUSED {op.key} {describe(result)}")
        else:
            emit(f"UNDECIDED {op.key} {describe(result)}")

    # Operations are built in chunks so that a long run starts at once.
    chunk = 256
    for begin in range(0, len(indexes), chunk):
        run_operations(ledger, [operation(i) for i in indexes[begin:begin + chunk]],
                       args.commit, rng, args.batch_max, report)


def gifts_mode(args: argparse.Namespace, ledger: Ledger, accounts: Accounts) -> None:
    """Wait for the go file, send ``--count`` random gifts, report every result."""
    rng = random.Random(args.seed)
    plan = [(f"p{args.proc}-{i:04d}", rng.randrange(len(accounts.wallets)),
             rng.choice(GIFT_COINS)) for i in range(args.count)]
    operations = [gift(accounts, key, viewer, coins) for key, viewer, coins in plan]
    shape = {key: (viewer, coins) for key, viewer, coins in plan}

    def report(op: Operation, result: Result) -> None:
        viewer, coins = shape[op.key]
        if isinstance(result, Applied):
            emit(f"OK {op.key} {viewer} {coins} {describe(result)}")
        elif result.stored:
            emit(f"REFUSED {op.key} {viewer} {coins} {describe(result)}")
        else:
            emit(f"UNDECIDED {op.key} {viewer} {coins} {describe(result)}")

    go = Path(args.go)
    deadline = time.monotonic() + 120
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{go} never appeared")
        time.sleep(0.005)
    began = time.perf_counter()
    run_operations(ledger, operations, args.commit, rng, args.batch_max, report)
    emit(f"DONE {time.perf_counter() - began:.3f}")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments, open the store and run one mode."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("crash", "gifts"))
    parser.add_argument("--db", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--viewers", type=int, required=True)
    parser.add_argument("--commit", choices=("single", "batch", "committer"), default="single")
    parser.add_argument("--batch-max", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--limit", type=int, default=1_000_000)
    parser.add_argument("--retry", default="")
    parser.add_argument("--proc", type=int, default=0)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--go", default="")
    args = parser.parse_args(argv)
    store = SqlStore(args.db)
    try:
        ledger = Ledger(store)
        accounts = open_accounts(ledger, args.tag, args.viewers)
        emit(f"READY {accounts.creator_held}")
        if args.mode == "crash":
            crash_mode(args, ledger, accounts)
        else:
            gifts_mode(args, ledger, accounts)
    finally:
        store.close()


if __name__ == "__main__":
    main()
