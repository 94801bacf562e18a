"""The ledger store on SQLite (WAL, one connection per thread) or PostgreSQL (psycopg 3 pool)."""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from giftflow.adapters.sql.db import Db, IdBlock
from giftflow.adapters.sql.dialects import POSTGRESQL, SQLITE, Dialect
from giftflow.adapters.sql.economy_schema import COLUMNS
from giftflow.adapters.sql.economy_tx import SqlEconomyTx, select
from giftflow.adapters.sql.schema import BOOKKEEPING, MIGRATIONS
from giftflow.adapters.sql.unit_of_work import SqlUnitOfWork, account_from_row
from giftflow.ledger.engine import Limits
from giftflow.ledger.model import (
    DEFAULT_LEDGERS,
    Account,
    HistoryEntry,
    LedgerSpec,
    Page,
    Phase,
)
from giftflow.ledger.verify import VerificationFacts

_GIFTS_VS_LOTS = """
    SELECT g.id, g.coins, COALESCE(SUM(p.coins), 0) FROM gifts AS g
    LEFT JOIN gift_lots AS p ON p.gift_id = g.id
    GROUP BY g.id, g.coins HAVING g.coins <> COALESCE(SUM(p.coins), 0)"""
_WALLETS_VS_LOTS = """
    SELECT a.owner, a.posted, COALESCE(SUM(l.remaining), 0) FROM accounts AS a
    LEFT JOIN lots AS l ON l.owner = a.owner
    WHERE a.ledger = 'COIN' AND a.kind = 'wallet'
      AND (a.owner LIKE 'user:%' OR a.owner LIKE 'team:%')
    GROUP BY a.owner, a.posted HAVING a.posted <> COALESCE(SUM(l.remaining), 0)"""
_MIGRATION_LOCK_KEY = 0x6769667466_6C6F77  # "giftflow"


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """How the store connects; the defaults are the durable ones."""

    sqlite_synchronous: str = "FULL"
    sqlite_cache_size_kib: int = 262_144
    busy_timeout_ms: int = 30_000
    pool_connections_max: int = 8
    connect_timeout_s: int = 10
    migrate: bool = True


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SqlStore:
    """Implements :class:`giftflow.ledger.ports.LedgerStore` for both dialects."""

    def __init__(self, url: str, options: StoreOptions | None = None,
                 limits: Limits | None = None, now_ms: Callable[[], int] = _now_ms) -> None:
        self.url = url
        self.options = options or StoreOptions()
        self.limits = limits or Limits()
        self.now_ms = now_ms
        self._dialect: Dialect
        self._local = threading.local()
        self._sqlite_dbs: list[Db] = []
        self._sqlite_lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._pg_dbs: weakref.WeakKeyDictionary[Any, Db] = weakref.WeakKeyDictionary()
        self._pg_ids = IdBlock()
        self._may_go_negative: set[int] = set()
        if url.startswith("sqlite:"):
            self._dialect = SQLITE
            self._path = sqlite_path(url)
            self._path.parent.mkdir(parents=True, exist_ok=True)
        elif url.startswith(("postgresql:", "postgres:")):
            self._dialect = POSTGRESQL
            # Fail fast with the server's own message instead of letting the pool retry quietly.
            psycopg.connect(url, connect_timeout=self.options.connect_timeout_s).close()
            self._pool = ConnectionPool(
                url, min_size=1, max_size=self.options.pool_connections_max,
                kwargs={"autocommit": True}, open=True, name="giftflow")
        else:
            raise ValueError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")
        if self.options.migrate:
            self.migrate()
            self.ensure_ledgers(DEFAULT_LEDGERS)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._dialect.name

    # -- connections ------------------------------------------------------------------------------

    def _sqlite_db(self) -> Db:
        db: Db | None = getattr(self._local, "db", None)
        if db is None:
            raw = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False,
                                  timeout=self.options.busy_timeout_ms / 1000)
            for pragma in (
                "PRAGMA journal_mode=WAL",
                f"PRAGMA synchronous={self.options.sqlite_synchronous}",
                "PRAGMA foreign_keys=ON",
                f"PRAGMA cache_size=-{self.options.sqlite_cache_size_kib}",
                f"PRAGMA busy_timeout={self.options.busy_timeout_ms}",
            ):
                raw.execute(pragma)
            db = Db(raw, self._dialect)
            self._local.db = db
            with self._sqlite_lock:
                self._sqlite_dbs.append(db)
        return db

    @contextmanager
    def connection(self) -> Iterator[Db]:
        """A connection for this thread, returned when the block ends."""
        if self._pool is None:
            yield self._sqlite_db()
            return
        with self._pool.connection() as raw:
            db = self._pg_dbs.get(raw)
            if db is None:
                db = Db(raw, self._dialect, self._pg_ids)
                self._pg_dbs[raw] = db
            yield db

    def unit_of_work(self) -> SqlUnitOfWork:
        """A new transaction on a connection of this thread."""
        if self._pool is None:
            return SqlUnitOfWork(self._sqlite_db(), lambda: None, self.now_ms, self.limits)
        context = self.connection()
        db = context.__enter__()

        def release() -> None:
            context.__exit__(None, None, None)

        return SqlUnitOfWork(db, release, self.now_ms, self.limits, self._may_go_negative)

    def economy_tx(self) -> SqlEconomyTx:
        """A new economy transaction (domain rows and the ledger together)."""
        return SqlEconomyTx(self.unit_of_work())

    def read(self, table: str, where: Mapping[str, Any], *, order_by: Sequence[str] = (),
             limit: int | None = None) -> list[dict[str, Any]]:
        """Committed economy rows of ``table`` that match ``where``."""
        sql, params = select(table, where, order_by, limit, lock=False)
        names = COLUMNS[table]
        with self.connection() as db:
            return [dict(zip(names, row, strict=True)) for row in db.execute(sql, params)]

    def close(self) -> None:
        """Release every connection."""
        with self._sqlite_lock:
            for db in self._sqlite_dbs:
                db.close()
            self._sqlite_dbs.clear()
        self._local = threading.local()
        if self._pool is not None:
            self._pool.close()

    # -- schema -----------------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply the migrations this database lacks; returns the versions applied."""
        applied: list[int] = []
        with self.connection() as db:
            db.begin()
            try:
                if self.dialect == "postgresql":
                    db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK_KEY,))
                db.execute(BOOKKEEPING)
                done = {int(row[0]) for row in db.execute("SELECT version FROM schema_migrations")}
                for migration in MIGRATIONS:
                    if migration.version in done:
                        continue
                    for statement in migration.statements(self.dialect):
                        db.execute(statement)
                    db.execute("INSERT INTO schema_migrations (version, name, applied_at_ms) "
                               "VALUES (?, ?, ?)", (migration.version, migration.name,
                                                    self.now_ms()))
                    applied.append(migration.version)
                db.commit()
            except BaseException:
                db.rollback()
                raise
        return applied

    def schema_version(self) -> int:
        """The highest applied migration."""
        with self.connection() as db:
            rows = db.execute("SELECT MAX(version) FROM schema_migrations")
        return int(rows[0][0] or 0)

    # -- ledgers and accounts ---------------------------------------------------------------------

    def ensure_ledgers(self, ledgers: Sequence[LedgerSpec]) -> None:
        """Create the ledgers that do not exist yet."""
        with self.connection() as db:
            db.executemany(self._dialect.insert_ledger, [(spec.code, spec.scale)
                                                         for spec in ledgers])

    def ledgers(self) -> list[LedgerSpec]:
        """Every ledger, by code."""
        with self.connection() as db:
            return [LedgerSpec(code, int(scale))
                    for code, scale in db.execute(self._dialect.list_ledgers)]

    def open_account(self, ledger: str, owner: str, kind: str, *, allow_negative: bool) -> Account:
        """The account of ``(ledger, owner, kind)``, created on first use."""
        with self.connection() as db:
            db.execute(self._dialect.insert_account,
                       (db.next_id(), ledger, owner, kind, allow_negative, self.now_ms()))
            row = db.execute(self._dialect.find_account, (ledger, owner, kind))[0]
        return account_from_row(row)

    def account(self, account_id: int) -> Account | None:
        """One account and its cached balances."""
        with self.connection() as db:
            rows = db.execute(self._dialect.get_account, (account_id,))
        return account_from_row(rows[0]) if rows else None

    def history(self, account_id: int, before: int | None, limit: int) -> Page:
        """Transfers of one account, newest first, strictly before the cursor."""
        cursor = (2**63 - 1) if before is None else before
        params = (account_id, cursor, limit + 1, account_id, cursor, limit + 1, limit + 1)
        with self.connection() as db:
            rows = db.execute(self._dialect.history, params)
        entries = tuple(
            HistoryEntry(int(r[0]), int(r[1]), r[2], int(r[3]), int(r[4]), int(r[5]), r[6],
                         Phase(int(r[7])), None if r[8] is None else int(r[8]), r[10], r[11],
                         int(r[12]))
            for r in rows[:limit])
        next_cursor = entries[-1].transfer_id if len(rows) > limit else None
        return Page(entries, next_cursor)

    def expired_pending_ids(self, now_ms: int, limit: int) -> list[int]:
        """Unresolved pending transfers whose timeout has passed."""
        with self.connection() as db:
            return [int(row[0]) for row in db.execute(self._dialect.expired_pending,
                                                       (now_ms, limit))]

    # -- verification -----------------------------------------------------------------------------

    def verification_facts(self) -> VerificationFacts:
        """Everything ``giftflow ledger verify`` checks, read in one snapshot."""
        dialect = self._dialect
        with self.connection() as db:
            db.execute("BEGIN" if dialect.name == "sqlite" else
                       "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                accounts = [account_from_row(row) for row in db.execute(dialect.all_accounts)]
                recomputed = {int(row[0]): ((int(row[1]) << 32) + int(row[2]), int(row[3]),
                                            int(row[4]))
                              for row in db.execute(dialect.recompute)}
                facts = VerificationFacts(
                    ledgers=[LedgerSpec(code, int(scale))
                             for code, scale in db.execute(dialect.list_ledgers)],
                    accounts=accounts,
                    recomputed=recomputed,
                    bad_legs=[(int(a), int(b)) for a, b in db.execute(dialect.bad_legs)],
                    double_resolutions=[(int(a), int(b))
                                        for a, b in db.execute(dialect.double_resolutions)],
                    bad_resolutions=[(int(a), int(b))
                                     for a, b in db.execute(dialect.bad_resolutions)],
                    missing_legs=[(int(a), int(b), int(c))
                                  for a, b, c in db.execute(dialect.missing_legs)],
                    lot_mismatches=[
                        *(f"gift {g} costs {c} coins but its lots paid {p}"
                          for g, c, p in db.execute(_GIFTS_VS_LOTS)),
                        *(f"{o} wallet holds {w} coins but its lots hold {r}"
                          for o, w, r in db.execute(_WALLETS_VS_LOTS))],
                )
            finally:
                db.rollback()
        return facts


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix:
        raise ValueError(f"a SQLite URL looks like sqlite:///path/to/file, not {url!r}")
    return Path(url[len(prefix):])


def is_postgres_error(error: BaseException) -> bool:
    """Whether ``error`` came from the PostgreSQL driver (for clear CLI messages)."""
    return isinstance(error, psycopg.Error)
