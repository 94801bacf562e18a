"""The SQL store: what the database itself enforces, migrations, and URL parsing.

The constraint tests bypass giftflow entirely and write raw SQL on the store's own connection, so
each refusal must come from the database (a CHECK, a UNIQUE index, a foreign key or a trigger),
not from Python.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest

from giftflow.adapters.sql.db import Db
from giftflow.adapters.sql.store import SqlStore, StoreOptions, sqlite_path
from giftflow.ledger import DEFAULT_LEDGERS, Account, LedgerSpec


def raw(db: Db, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the driver connection itself (autocommit), bypassing giftflow."""
    if db.dialect.name == "postgresql":
        sql = sql.replace("?", "%s")
    cursor = db.raw.execute(sql, tuple(params))
    return list(cursor.fetchall()) if cursor.description is not None else []


def violation(store: SqlStore, postgres_error: type[Exception]) -> pytest.RaisesContext[Exception]:
    """Expect the database's own integrity error for the store's dialect."""
    if store.dialect == "sqlite":
        return pytest.raises(sqlite3.IntegrityError)
    return pytest.raises(postgres_error)


class Rows:
    """Valid rows to start from, written with raw SQL."""

    def __init__(self, store: SqlStore, db: Db) -> None:
        self.db = db
        run = uuid.uuid4().hex[:6]
        self.issuance = store.open_account("COIN", "platform", "coins:issuance",
                                           allow_negative=True)
        self.wallet = store.open_account("COIN", f"viewer-{run}", "wallet", allow_negative=False)
        self.held = store.open_account("DIAMOND", f"creator-{run}", "diamonds:held",
                                       allow_negative=False)
        self.operation_id = self.operation("seed", f"k-{run}")

    def operation(self, scope: str, key: str) -> int:
        """Insert a succeeded operation row; returns its id."""
        operation_id = self.db.next_id()
        raw(self.db, "INSERT INTO operations (id, scope, idem_key, kind, content_hash, status, "
                     "response, actor, request_id, created_at_ms) "
                     "VALUES (?, ?, ?, 'transfers', ?, 'succeeded', '{}', 'test', '', 0)",
            (operation_id, scope, key, b"\x00" * 32))
        return operation_id

    def transfer(self, debit: Account, credit: Account, amount: object, *, ledger: str = "COIN",
                 phase: int = 0, pending_id: int | None = None) -> int:
        """Insert a transfer row; returns its id."""
        transfer_id = self.db.next_id()
        raw(self.db, "INSERT INTO transfers (id, operation_id, ledger, debit_account_id, "
                     "credit_account_id, amount, code, phase, pending_id, timeout_at_ms, actor, "
                     "request_id, created_at_ms) "
                     "VALUES (?, ?, ?, ?, ?, ?, 'raw', ?, ?, NULL, 'test', '', 0)",
            (transfer_id, self.operation_id, ledger, debit.id, credit.id, amount, phase,
             pending_id))
        return transfer_id

    def count(self, table: str) -> int:
        """Rows in one table."""
        return int(raw(self.db, f"SELECT COUNT(*) FROM {table}")[0][0])


@pytest.fixture
def rows(store: SqlStore) -> Rows:
    """Seed rows on the store's connection."""
    with store.connection() as db:
        return Rows(store, db)


# -- constraints the database enforces ------------------------------------------------------------


@pytest.mark.parametrize("amount", [0, -1, -(2**62)])
def test_database_refuses_a_non_positive_amount(store: SqlStore, rows: Rows,
                                                amount: int) -> None:
    """transfers.amount has CHECK (amount > 0): zero and negative amounts are refused."""
    rows.transfer(rows.issuance, rows.wallet, 1)
    before = rows.count("transfers")
    with violation(store, psycopg.errors.CheckViolation):
        rows.transfer(rows.issuance, rows.wallet, amount)
    assert rows.count("transfers") == before


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("amount", [1.5, "seven", b"\x01"])
def test_sqlite_refuses_a_non_integer_amount(rows: Rows, amount: object) -> None:
    """SQLite's loose typing is closed off: REAL, TEXT or BLOB amounts fail typeof() = 'integer'.

    (PostgreSQL's BIGINT column types the value itself.)
    """
    with pytest.raises(sqlite3.IntegrityError):
        rows.transfer(rows.issuance, rows.wallet, amount)
    assert rows.count("transfers") == 0


def test_database_refuses_a_duplicate_idempotency_key(store: SqlStore, rows: Rows) -> None:
    """The operations table has UNIQUE (scope, idem_key); another scope may reuse the key."""
    rows.operation("user:1|POST /gifts", "k-1")
    rows.operation("user:2|POST /gifts", "k-1")
    with violation(store, psycopg.errors.UniqueViolation):
        rows.operation("user:1|POST /gifts", "k-1")
    assert int(raw(rows.db, "SELECT COUNT(*) FROM operations WHERE idem_key = 'k-1'")[0][0]) == 2


@pytest.mark.parametrize("side", ["debit", "credit"])
def test_database_refuses_an_account_of_another_ledger(store: SqlStore, rows: Rows,
                                                       side: str) -> None:
    """The composite foreign keys (account id, ledger) keep both sides in the transfer's ledger."""
    debit, credit = (rows.held, rows.wallet) if side == "debit" else (rows.issuance, rows.held)
    with violation(store, psycopg.errors.ForeignKeyViolation):
        rows.transfer(debit, credit, 1, ledger="COIN")
    with violation(store, psycopg.errors.ForeignKeyViolation):
        rows.transfer(debit, credit, 1, ledger="DIAMOND")
    assert rows.count("transfers") == 0


def test_database_refuses_a_transfer_to_the_same_account(store: SqlStore, rows: Rows) -> None:
    """CHECK (debit_account_id <> credit_account_id)."""
    with violation(store, psycopg.errors.CheckViolation):
        rows.transfer(rows.wallet, rows.wallet, 1)


def test_database_refuses_a_resolution_without_its_pending(store: SqlStore, rows: Rows) -> None:
    """A post or void must name a pending transfer, and a single one must not name any."""
    pending = rows.transfer(rows.wallet, rows.issuance, 5, phase=1)
    with violation(store, psycopg.errors.CheckViolation):
        rows.transfer(rows.wallet, rows.issuance, 5, phase=2)
    with violation(store, psycopg.errors.CheckViolation):
        rows.transfer(rows.wallet, rows.issuance, 5, phase=0, pending_id=pending)


def test_database_refuses_a_forbidden_negative_balance(store: SqlStore, rows: Rows) -> None:
    """An account without allow_negative can never hold posted < pending_debits.

    Updating the cached balance directly is refused; an issuance account may go negative.
    """
    wallet = rows.wallet.id
    with violation(store, psycopg.errors.CheckViolation):
        raw(rows.db, "UPDATE accounts SET posted = posted - 1 WHERE id = ?", (wallet,))
    raw(rows.db, "UPDATE accounts SET posted = 10 WHERE id = ?", (wallet,))
    raw(rows.db, "UPDATE accounts SET pending_debits = 10 WHERE id = ?", (wallet,))
    with violation(store, psycopg.errors.CheckViolation):
        raw(rows.db, "UPDATE accounts SET pending_debits = 11 WHERE id = ?", (wallet,))
    with violation(store, psycopg.errors.CheckViolation):
        raw(rows.db, "UPDATE accounts SET pending_credits = -1 WHERE id = ?", (wallet,))
    assert raw(rows.db, "SELECT posted, pending_debits FROM accounts WHERE id = ?",
               (wallet,)) == [(10, 10)]
    raw(rows.db, "UPDATE accounts SET posted = -5 WHERE id = ?", (rows.issuance.id,))
    assert store.account(rows.issuance.id).posted == -5  # type: ignore[union-attr]


def test_transfers_are_append_only(store: SqlStore, rows: Rows) -> None:
    """A trigger refuses every UPDATE and DELETE of a transfer row."""
    transfer_id = rows.transfer(rows.issuance, rows.wallet, 3)
    append_only = (psycopg.errors.RaiseException if store.dialect == "postgresql"
                   else sqlite3.IntegrityError)
    with pytest.raises(append_only, match="append-only"):
        raw(rows.db, "UPDATE transfers SET amount = 4 WHERE id = ?", (transfer_id,))
    with pytest.raises(append_only, match="append-only"):
        raw(rows.db, "UPDATE transfers SET code = 'edited'")
    with pytest.raises(append_only, match="append-only"):
        raw(rows.db, "DELETE FROM transfers WHERE id = ?", (transfer_id,))
    assert raw(rows.db, "SELECT amount, code FROM transfers WHERE id = ?",
               (transfer_id,)) == [(3, "raw")]


def test_pending_transfer_resolves_only_once(store: SqlStore, rows: Rows) -> None:
    """A unique index on pending_id allows one post or void per pending transfer."""
    pending = rows.transfer(rows.wallet, rows.issuance, 5, phase=1)
    other = rows.transfer(rows.wallet, rows.issuance, 5, phase=1)
    rows.transfer(rows.wallet, rows.issuance, 3, phase=2, pending_id=pending)
    with violation(store, psycopg.errors.UniqueViolation):
        rows.transfer(rows.wallet, rows.issuance, 5, phase=3, pending_id=pending)
    with violation(store, psycopg.errors.UniqueViolation):
        rows.transfer(rows.wallet, rows.issuance, 2, phase=2, pending_id=pending)
    rows.transfer(rows.wallet, rows.issuance, 5, phase=3, pending_id=other)
    assert rows.count("transfers") == 4


def test_constraint_violations_inside_giftflows_transaction_roll_back(store: SqlStore,
                                                                      rows: Rows) -> None:
    """A refused statement inside a unit of work leaves nothing of that transaction behind."""
    before = rows.count("transfers")
    with store.unit_of_work() as uow:
        first = uow.db.next_id()
        uow.db.execute("INSERT INTO transfers (id, operation_id, ledger, debit_account_id, "
                       "credit_account_id, amount, code, phase, actor, request_id, "
                       "created_at_ms) VALUES (?, ?, 'COIN', ?, ?, 1, 'raw', 0, 't', '', 0)",
                       (first, rows.operation_id, rows.issuance.id, rows.wallet.id))
        with pytest.raises((sqlite3.IntegrityError, psycopg.errors.CheckViolation)):
            uow.db.execute("UPDATE accounts SET posted = -1 WHERE id = ?", (rows.wallet.id,))
    assert rows.count("transfers") == before


# -- migrations, ledgers, accounts ----------------------------------------------------------------


def test_migrations_apply_once(store_url: str) -> None:
    """A fresh database gets every migration in order; migrating again, or reopening, applies
    nothing.
    """
    fresh = SqlStore(store_url, StoreOptions(migrate=False))
    try:
        assert fresh.migrate() == [1, 2, 3, 4, 5]
        assert fresh.migrate() == []
        assert fresh.schema_version() == 5
    finally:
        fresh.close()
    reopened = SqlStore(store_url)
    try:
        assert reopened.migrate() == []
        assert reopened.schema_version() == 5
        with reopened.connection() as db:
            assert raw(db, "SELECT version, name FROM schema_migrations ORDER BY version") == [
                (1, "ledger"), (2, "economy"), (3, "service"), (4, "webhooks"),
                (5, "event history")]
    finally:
        reopened.close()


def test_store_starts_with_the_default_ledgers(store: SqlStore) -> None:
    """The ledgers and scales of SPEC §1 exist after start; ensuring them again changes nothing."""
    expected = sorted(DEFAULT_LEDGERS, key=lambda spec: spec.code)
    assert store.ledgers() == expected
    assert LedgerSpec("DIAMOND", 4) in expected
    store.ensure_ledgers([LedgerSpec("COIN", 3), LedgerSpec("GBP", 2)])
    assert store.ledgers() == sorted([*expected, LedgerSpec("GBP", 2)],
                                     key=lambda spec: spec.code)


def test_open_account_is_idempotent(store: SqlStore) -> None:
    """Opening (ledger, owner, kind) twice returns the same account with zero balances."""
    first = store.open_account("COIN", "viewer-1", "wallet", allow_negative=False)
    again = store.open_account("COIN", "viewer-1", "wallet", allow_negative=True)
    other = store.open_account("DIAMOND", "viewer-1", "wallet", allow_negative=False)
    assert again == first
    assert not again.allow_negative
    assert other.id != first.id
    assert (first.posted, first.pending_debits, first.pending_credits) == (0, 0, 0)
    assert store.account(first.id) == first
    assert store.account(-1) is None


def test_unknown_database_url_is_refused(tmp_path: Path) -> None:
    """Only sqlite:/// and postgresql:// URLs open a store."""
    with pytest.raises(ValueError, match="unsupported database URL"):
        SqlStore(f"mysql://{tmp_path}/x")


# -- sqlite_path ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///giftflow.sqlite3", Path("giftflow.sqlite3")),
        ("sqlite:///data/dir/g.db", Path("data/dir/g.db")),
        ("sqlite:////var/lib/giftflow/g.db", Path("/var/lib/giftflow/g.db")),
    ],
)
def test_sqlite_path_parses_relative_and_absolute_urls(url: str, path: Path) -> None:
    """Three slashes start a relative path, four an absolute one."""
    assert sqlite_path(url) == path
    assert sqlite_path(url).is_absolute() == url.startswith("sqlite:////")


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite://x.db", "sqlite:x.db",
                                 "postgresql://h/db", "x.db"])
def test_sqlite_path_refuses_malformed_urls(url: str) -> None:
    """A URL without a file after sqlite:/// is refused with the expected shape in the message."""
    with pytest.raises(ValueError, match="sqlite:///path/to/file"):
        sqlite_path(url)


def test_sqlite_store_creates_its_directory(tmp_path: Path) -> None:
    """Opening a SQLite URL in a missing directory creates the directory and the file."""
    target = tmp_path / "a" / "b" / "g.sqlite3"
    store = SqlStore(f"sqlite:///{target}")
    try:
        assert store.schema_version() == 5
    finally:
        store.close()
    assert target.is_file()
