"""The SQL unit of work: loads what operations need, runs the engine, flushes at commit."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

from giftflow.adapters.sql.db import Db
from giftflow.invariants import invariant
from giftflow.ledger import codes
from giftflow.ledger.engine import AccountState, Engine, Limits, PendingState
from giftflow.ledger.model import Account, Failure, Operation, Phase, Result


def account_from_row(row: Sequence[Any]) -> Account:
    """An :class:`Account` from a row of the account columns."""
    return Account(int(row[0]), row[1], row[2], row[3], bool(row[4]), int(row[5]), int(row[6]),
                   int(row[7]))


class SqlUnitOfWork:
    """One transaction on one connection; rolls back unless committed."""

    def __init__(self, db: Db, release: Callable[[], None], now_ms: Callable[[], int],
                 limits: Limits, may_go_negative: set[int] | None = None) -> None:
        self.db = db
        self._release = release
        self.engine = Engine(db.next_ids, now_ms, limits)
        self._busy_keys: set[tuple[str, str]] = set()
        self._staged: list[tuple[str, str, Any]] = []
        self._open = False
        # Accounts known to be allowed below zero. ``allow_negative`` never changes once an
        # account is opened, so the store shares this set between its units of work.
        self._may_go_negative = may_go_negative if may_go_negative is not None else set()

    def __enter__(self) -> Self:
        self.db.begin()
        self._open = True
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            if self._open:
                self.rollback()
        finally:
            self._release()

    def apply(self, operation: Operation) -> Result:
        """Apply one operation inside this transaction."""
        return self.apply_many((operation,))[0]

    def apply_many(self, operations: Sequence[Operation]) -> list[Result]:
        """Load keys, pending transfers and accounts in three statements, then apply in order."""
        invariant(self._open, "apply needs an open unit of work")
        self._load(operations)
        busy = Failure(codes.IDEMPOTENCY_IN_PROGRESS,
                       "an operation with this idempotency key is still running")
        apply, busy_keys = self.engine.apply, self._busy_keys
        if not busy_keys:
            return [apply(op) for op in operations]
        return [busy if (op.scope, op.key) in busy_keys else apply(op) for op in operations]

    def key_states(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Load idempotency keys ahead of their operations: ``new``, ``recorded`` or ``busy``.

        A domain asks before it plans operations, so that it plans only the new ones: a recorded
        key replays its stored answer, and a busy one (held by another transaction) gets
        ``idempotency_in_progress``. The keys stay loaded for :meth:`apply_many`.
        """
        invariant(self._open, "key_states needs an open unit of work")
        engine, busy = self.engine, self._busy_keys
        missing = list(dict.fromkeys(k for k in keys if k not in engine.keys and k not in busy))
        if missing:
            self._take_keys(self.db.queries([self.db.dialect.keys_statement(missing)])[0])
        return {key: "busy" if key in busy else
                ("new" if engine.keys.get(key) is None else "recorded") for key in keys}

    def query(self, statements: Sequence[tuple[str, Sequence[Any]]]
              ) -> list[list[tuple[Any, ...]]]:
        """Run domain reads inside this transaction (on PostgreSQL in one round trip)."""
        invariant(self._open, "query needs an open unit of work")
        return self.db.queries(statements)

    def stage(self, steps: Sequence[tuple[str, str, Any]]) -> None:
        """Stage domain writes (``execute`` or ``executemany`` steps) to run at commit.

        They run after the ledger's rows, in the order staged.
        """
        invariant(self._open, "stage needs an open unit of work")
        self._staged.extend(steps)

    def _load(self, operations: Sequence[Operation]) -> None:
        """Load the operations' keys, the pending transfers they resolve, and lock their accounts.

        On PostgreSQL only the accounts whose balance is checked are locked (``FOR UPDATE``):
        those debited, unless known to be allowed below zero. Every other account is only
        credited, or may go negative, so its balance changes by an atomic increment at commit
        and needs no lock held across the transaction; a hot creator's and the platform's
        accounts are then locked only from their ``UPDATE`` to the ``COMMIT``.

        A duplicate whose key another transaction holds must be answered without touching its
        accounts: locking them would make it wait for that transaction. So the account lock
        travels in the same round trip as the key lookup only behind a guard that takes every
        key's advisory lock first (re-entrant for this transaction); if any key is busy the
        guarded statement locks nothing and the accounts of the others are locked in a second
        round trip. Operations that resolve pending transfers learn their accounts from those
        rows, so they take the second round trip too.
        """
        engine, dialect = self.engine, self.db.dialect
        keys, pending_ids, account_ids, ids_needed = self._scan(operations)
        engine.reserve_ids(ids_needed)
        statements: list[tuple[str, Sequence[Any]]] = []
        if keys:
            statements.append(dialect.keys_statement(keys))
        if pending_ids:
            statements.append((dialect.load_pendings, dialect.id_params(pending_ids)))
        early_ids, read_ids = ([], []) if pending_ids else self._split_locked(operations,
                                                                              account_ids)
        if early_ids:
            statements.append(dialect.guarded_accounts_statement(early_ids, keys))
        if read_ids:
            statements.append((dialect.read_accounts, dialect.id_params(read_ids)))
        results = iter(self.db.queries(statements)) if statements else iter(())
        if keys:
            self._take_keys(next(results))
        if pending_ids:
            self._take_pendings(next(results))
        if early_ids:
            self._take_accounts(next(results))
        if read_ids:
            self._take_accounts(next(results))
        if pending_ids or self._busy_keys:
            self._load_late(operations)

    def _load_late(self, operations: Sequence[Operation]) -> None:
        """Lock the accounts still missing (of posts and voids, or beside a busy key)."""
        late_ids = self._account_ids_to_load(operations)
        if late_ids:
            dialect = self.db.dialect
            self._take_accounts(self.db.execute(dialect.load_accounts,
                                                dialect.id_params(sorted(late_ids))))

    def _scan(self, operations: Sequence[Operation]
              ) -> tuple[list[tuple[str, str]], list[int], set[int], int]:
        """What the operations need that is not loaded yet, in one pass.

        Returns the keys, the pending transfers, the accounts (those of posts and voids are
        learnt from their pending transfers) and how many ids the operations can use.
        """
        engine = self.engine
        known_keys, busy, pendings, accounts = (engine.keys, self._busy_keys, engine.pendings,
                                                engine.accounts)
        keys: dict[tuple[str, str], None] = {}
        pending_ids: set[int] = set()
        account_ids: set[int] = set()
        ids_needed = 0
        for op in operations:
            scope_key = (op.scope, op.key)
            if scope_key not in known_keys and scope_key not in busy:
                keys[scope_key] = None
            ids_needed += 1 + len(op.transfers)
            for leg in op.transfers:
                if leg.phase is Phase.POST or leg.phase is Phase.VOID:
                    if leg.pending_id is not None and leg.pending_id not in pendings:
                        pending_ids.add(leg.pending_id)
                else:
                    account_ids.add(leg.debit_account_id)
                    account_ids.add(leg.credit_account_id)
        account_ids.difference_update(accounts)
        return list(keys), list(pending_ids), account_ids, ids_needed

    def _split_locked(self, operations: Sequence[Operation],
                      account_ids: set[int]) -> tuple[list[int], list[int]]:
        """The accounts to lock and those only to read, each sorted by id."""
        if not self.db.dialect.locks_rows:
            return sorted(account_ids), []
        debited = {leg.debit_account_id for op in operations for leg in op.transfers}
        debited -= self._may_go_negative
        locked = account_ids & debited
        return sorted(locked), sorted(account_ids - locked)

    def _take_keys(self, rows: list[tuple[Any, ...]]) -> None:
        engine = self.engine
        for scope, key, op_id, content_hash, status, response, locked in rows:
            if not locked:
                self._busy_keys.add((scope, key))
            else:
                engine.keys[scope, key] = None if op_id is None else (
                    int(op_id), bytes(content_hash), status, response)

    def _take_pendings(self, rows: list[tuple[Any, ...]]) -> None:
        for row in rows:
            self.engine.pendings[int(row[0])] = PendingState(
                int(row[0]), row[1], int(row[2]), int(row[3]), int(row[4]),
                None if row[5] is None else int(row[5]), bool(row[6]))

    def _take_accounts(self, rows: list[tuple[Any, ...]]) -> None:
        accounts, may_go_negative = self.engine.accounts, self._may_go_negative
        for account_id, ledger, owner, kind, allow_negative, posted, reserved, incoming in rows:
            accounts[int(account_id)] = AccountState(
                int(account_id), ledger, owner, kind, bool(allow_negative), int(posted),
                int(reserved), int(incoming))
            if allow_negative:
                may_go_negative.add(int(account_id))

    def _account_ids_to_load(self, operations: Sequence[Operation]) -> set[int]:
        engine, busy = self.engine, self._busy_keys
        account_ids: set[int] = set()
        for op in operations:
            if not busy or (op.scope, op.key) not in busy:
                account_ids |= engine.account_ids(op)
        account_ids.difference_update(engine.accounts)
        return account_ids

    def commit(self) -> None:
        """Write the staged rows and commit (on PostgreSQL in one round trip)."""
        invariant(self._open, "commit needs an open unit of work")
        engine, dialect = self.engine, self.db.dialect
        writes = dialect.ledger_writes(engine.operation_rows, engine.transfer_rows,
                                       engine.balance_deltas())
        by_shape: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]] = defaultdict(list)
        for insert in engine.inserts:
            by_shape[insert.table, tuple(insert.row)].append(tuple(insert.row.values()))
        for (table, columns), rows in by_shape.items():
            writes.extend(dialect.row_steps(dialect.insert(table, columns), rows))
        writes.extend(self._staged)
        self.db.write(writes, commit=True)
        self._open = False

    def rollback(self) -> None:
        """Discard everything staged."""
        self._open = False
        self.db.rollback()
