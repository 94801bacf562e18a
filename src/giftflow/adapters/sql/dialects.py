"""The SQL that the ledger store issues, per dialect.

Both dialects issue the same statements in the same order for an operation; only the way a list
travels as one parameter differs (a JSON array read with ``json_each`` in SQLite, arrays in
PostgreSQL). PostgreSQL also locks the touched accounts (``FOR UPDATE``) and takes a transaction
advisory lock per idempotency key, so that a concurrent duplicate in another process is told
``idempotency_in_progress`` instead of waiting.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import orjson

_OPERATION_COLUMNS = ("id, scope, idem_key, kind, content_hash, status, response, actor, "
                      "request_id, created_at_ms")
_TRANSFER_COLUMNS = ("id, operation_id, ledger, debit_account_id, credit_account_id, amount, code, "
                     "phase, pending_id, timeout_at_ms, actor, request_id, created_at_ms")
_ACCOUNT_COLUMNS = ("id, ledger, owner, kind, allow_negative, posted, pending_debits, "
                    "pending_credits")

_RESOLVED = "EXISTS (SELECT 1 FROM transfers AS r WHERE r.pending_id = t.id)"

# Posted is summed in two 32-bit halves: an account's credits (or debits) may add up to more than
# int64 even though its balance fits, and SQLite's SUM raises "integer overflow" on any partial
# sum that leaves int64. The store joins the halves in Python.
_RECOMPUTE = f"""
SELECT account_id, SUM(posted_high), SUM(posted_low), SUM(pending_debits),
       SUM(pending_credits) FROM (
    SELECT credit_account_id AS account_id, amount >> 32 AS posted_high,
           amount & 4294967295 AS posted_low, 0 AS pending_debits, 0 AS pending_credits
        FROM transfers WHERE phase IN (0, 2)
    UNION ALL SELECT debit_account_id, -(amount >> 32), -(amount & 4294967295), 0, 0
        FROM transfers WHERE phase IN (0, 2)
    UNION ALL SELECT debit_account_id, 0, 0, amount, 0 FROM transfers AS t
        WHERE phase = 1 AND NOT {_RESOLVED}
    UNION ALL SELECT credit_account_id, 0, 0, 0, amount FROM transfers AS t
        WHERE phase = 1 AND NOT {_RESOLVED}
) AS legs GROUP BY account_id
"""

_HISTORY = f"""
SELECT * FROM (
    SELECT * FROM (SELECT {_TRANSFER_COLUMNS} FROM transfers
                   WHERE debit_account_id = ? AND id < ? ORDER BY id DESC LIMIT ?) AS d
    UNION ALL
    SELECT * FROM (SELECT {_TRANSFER_COLUMNS} FROM transfers
                   WHERE credit_account_id = ? AND id < ? ORDER BY id DESC LIMIT ?) AS c
) AS h ORDER BY id DESC LIMIT ?
"""

_EXPIRED = f"""
SELECT t.id FROM transfers AS t
WHERE t.phase = 1 AND t.timeout_at_ms IS NOT NULL AND t.timeout_at_ms <= ? AND NOT {_RESOLVED}
ORDER BY t.timeout_at_ms LIMIT ?
"""

_BAD_LEGS = """
SELECT t.id, t.operation_id FROM transfers AS t
JOIN accounts AS d ON d.id = t.debit_account_id
JOIN accounts AS c ON c.id = t.credit_account_id
LEFT JOIN operations AS o ON o.id = t.operation_id
WHERE d.ledger <> t.ledger OR c.ledger <> t.ledger OR t.amount <= 0
   OR o.id IS NULL OR o.status <> 'succeeded'
"""

_DOUBLE_RESOLUTIONS = """
SELECT pending_id, COUNT(*) FROM transfers WHERE pending_id IS NOT NULL
GROUP BY pending_id HAVING COUNT(*) > 1
"""

_BAD_RESOLUTIONS = """
SELECT r.id, r.pending_id FROM transfers AS r LEFT JOIN transfers AS p ON p.id = r.pending_id
WHERE r.pending_id IS NOT NULL AND (
    p.id IS NULL OR p.phase <> 1 OR p.ledger <> r.ledger
    OR p.debit_account_id <> r.debit_account_id OR p.credit_account_id <> r.credit_account_id
    OR r.amount > p.amount OR (r.phase = 3 AND r.amount <> p.amount))
"""


_MISSING_LEGS = """
SELECT o.id, {legs}, COUNT(t.id) FROM operations AS o
LEFT JOIN transfers AS t ON t.operation_id = o.id
WHERE o.status = 'succeeded' GROUP BY o.id, o.response HAVING {legs} <> COUNT(t.id)
"""


@dataclass(frozen=True, slots=True)
class Dialect:
    """The statements of one SQL dialect."""

    name: str
    begin: str
    load_keys: str
    load_accounts: str
    load_accounts_guarded: str
    load_one_key: str
    load_accounts_one_guard: str
    read_accounts: str
    locks_rows: bool
    load_pendings: str
    take_id_block: str
    missing_legs: str
    insert_ledger: str
    insert_account: str
    find_account: str
    get_account: str
    list_ledgers: str = "SELECT code, scale FROM ledgers ORDER BY code"
    insert_operations: str = f"INSERT INTO operations ({_OPERATION_COLUMNS}) VALUES (?{', ?' * 9})"
    insert_transfers: str = f"INSERT INTO transfers ({_TRANSFER_COLUMNS}) VALUES (?{', ?' * 12})"
    update_balances: str = (
        "UPDATE accounts SET posted = posted + ?, pending_debits = pending_debits + ?, "
        "pending_credits = pending_credits + ? WHERE id = ?"
    )
    history: str = _HISTORY
    expired_pending: str = _EXPIRED
    all_accounts: str = f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY id"
    recompute: str = _RECOMPUTE
    bad_legs: str = _BAD_LEGS
    double_resolutions: str = _DOUBLE_RESOLUTIONS
    bad_resolutions: str = _BAD_RESOLUTIONS

    def keys_statement(self, keys: Sequence[tuple[str, str]]) -> tuple[str, tuple[Any, ...]]:
        """The statement that loads idempotency records, with its parameters.

        One key (an operation committed on its own) takes plain parameters: measured on
        PostgreSQL, the array form costs about a quarter of a one-gift transaction's throughput,
        because the driver dumps arrays in Python and the server scans ``unnest``.
        """
        if len(keys) == 1:
            (scope, key), = keys
            if self.name == "sqlite":
                return self.load_one_key, (scope, key, scope, key)
            return self.load_one_key, (scope, key, lock_key(scope, key), scope, key)
        return self.load_keys, self.key_params(keys)

    def guarded_accounts_statement(self, ids: Sequence[int], keys: Sequence[tuple[str, str]]
                                   ) -> tuple[str, tuple[Any, ...]]:
        """The statement that locks accounts behind the keys' advisory locks, with parameters."""
        if self.name == "postgresql" and len(keys) == 1:
            (scope, key), = keys
            return self.load_accounts_one_guard, (list(ids), lock_key(scope, key))
        return self.load_accounts_guarded, self.guarded_account_params(ids, keys)

    def key_params(self, keys: Sequence[tuple[str, str]]) -> tuple[Any, ...]:
        """The parameters of :attr:`load_keys` for ``(scope, key)`` pairs."""
        if self.name == "sqlite":
            return (orjson.dumps(keys).decode(),)
        return ([scope for scope, _ in keys], [key for _, key in keys],
                [lock_key(scope, key) for scope, key in keys])

    def guarded_account_params(self, ids: Sequence[int],
                               keys: Sequence[tuple[str, str]]) -> tuple[Any, ...]:
        """The parameters of :attr:`load_accounts_guarded`."""
        if self.name == "sqlite":
            return self.id_params(ids)
        return (list(ids), [lock_key(scope, key) for scope, key in keys])

    def id_params(self, ids: Sequence[int]) -> tuple[Any, ...]:
        """The parameters of a statement that takes a list of ids."""
        if self.name == "sqlite":
            return (orjson.dumps(ids).decode(),)
        return (list(ids),)

    def ledger_writes(self, operation_rows: Sequence[Sequence[Any]],
                      transfer_rows: Sequence[Sequence[Any]],
                      balance_rows: Sequence[Sequence[Any]]) -> list[tuple[str, str, Any]]:
        """The steps that write a unit of work's operations, transfers and balance changes."""
        return [*self.row_steps(self.insert_operations, operation_rows, _PG_BULK_OPERATIONS),
                *self.row_steps(self.insert_transfers, transfer_rows, _PG_BULK_TRANSFERS),
                *self.row_steps(self.update_balances, balance_rows, _PG_BULK_BALANCES)]

    def row_steps(self, statement: str, rows: Sequence[Sequence[Any]],
                  bulk: str | None = None) -> list[tuple[str, str, Any]]:
        """How this dialect sends ``statement`` for each of ``rows``.

        SQLite binds each row in-process, so ``executemany`` is its cheapest form. PostgreSQL
        pays per statement, and all of a write travels as one query (see ``Db``):
        - from :data:`BULK_ROWS_MIN` rows, the ``bulk`` form reads every row from arrays with
          ``unnest`` (measured here: 23 % more gifts per second in batches of 1,000);
        - fewer rows of an ``INSERT … VALUES`` go as one statement with a row of values each;
        - otherwise one statement per row.
        """
        if not rows:
            return []
        if self.name == "postgresql":
            if bulk is not None and len(rows) >= BULK_ROWS_MIN:
                return [("execute", bulk, _columns(rows))]
            multi = _MULTI_VALUES.fullmatch(statement)
            if multi is not None and len(rows) > 1:
                values = ", ".join([multi.group(2)] * len(rows))
                return [("execute", f"{multi.group(1)}{values}{multi.group(3)}",
                         [value for row in rows for value in row])]
            return [("execute", statement, row) for row in rows]
        return [("executemany", statement, rows)]

    def insert(self, table: str, columns: Sequence[str]) -> str:
        """An INSERT for a domain row staged with an operation."""
        placeholders = ", ".join("?" * len(columns))
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"


_MULTI_VALUES = re.compile(r"(INSERT INTO .*? VALUES )(\((?:\?, )*\?\))(.*)", re.DOTALL)
"""An ``INSERT … VALUES (?, …)`` (with anything after, such as ``ON CONFLICT``)."""

BULK_ROWS_MIN = 16
"""From this many rows on, PostgreSQL writes a table's rows with one ``unnest`` statement."""

def _columns(rows: Sequence[Sequence[Any]]) -> tuple[list[Any], ...]:
    """Rows turned into one list per column, for ``unnest``."""
    return tuple(list(column) for column in zip(*rows, strict=True))


LOCK_KEYS_CACHED_MAX = 4096
"""Advisory-lock keys remembered, about one batch's worth."""

_PG_BULK_OPERATIONS = (
    f"INSERT INTO operations ({_OPERATION_COLUMNS}) SELECT * FROM unnest(?::bigint[], ?::text[], "
    "?::text[], ?::text[], ?::bytea[], ?::text[], ?::text[], ?::text[], ?::text[], ?::bigint[])"
)
_PG_BULK_TRANSFERS = (
    f"INSERT INTO transfers ({_TRANSFER_COLUMNS}) SELECT * FROM unnest(?::bigint[], ?::bigint[], "
    "?::text[], ?::bigint[], ?::bigint[], ?::bigint[], ?::text[], ?::smallint[], ?::bigint[], "
    "?::bigint[], ?::text[], ?::text[], ?::bigint[])"
)
_PG_BULK_BALANCES = (
    "UPDATE accounts AS a SET posted = a.posted + d.posted, "
    "pending_debits = a.pending_debits + d.pending_debits, "
    "pending_credits = a.pending_credits + d.pending_credits "
    "FROM unnest(?::bigint[], ?::bigint[], ?::bigint[], ?::bigint[]) "
    "AS d (posted, pending_debits, pending_credits, id) WHERE a.id = d.id"
)


@functools.lru_cache(maxsize=LOCK_KEYS_CACHED_MAX)
def lock_key(scope: str, key: str) -> int:
    """A signed 64-bit advisory-lock key for an idempotency key.

    Cached: a transaction asks for each key's lock twice (the key lookup and the account guard).
    """
    digest = blake2b(f"{scope}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_SQLITE_ACCOUNTS = (
    f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id IN (SELECT value FROM json_each(?))"
)

SQLITE = Dialect(
    name="sqlite",
    begin="BEGIN IMMEDIATE",
    load_keys=(
        "SELECT k.value ->> 0, k.value ->> 1, o.id, o.content_hash, o.status, o.response, 1 "
        "FROM json_each(?) AS k LEFT JOIN operations AS o "
        "ON o.scope = k.value ->> 0 AND o.idem_key = k.value ->> 1"
    ),
    # SQLite has no concurrent writer to wait for (BEGIN IMMEDIATE already holds the write
    # lock), so locking, guarded and plain account reads are one statement.
    load_accounts=_SQLITE_ACCOUNTS,
    load_accounts_guarded=_SQLITE_ACCOUNTS,
    read_accounts=_SQLITE_ACCOUNTS,
    load_one_key=(
        "SELECT ?, ?, o.id, o.content_hash, o.status, o.response, 1 FROM (SELECT 1) AS one "
        "LEFT JOIN operations AS o ON o.scope = ? AND o.idem_key = ?"
    ),
    load_accounts_one_guard="",  # SQLite takes no advisory locks
    locks_rows=False,
    load_pendings=(
        "SELECT t.id, t.ledger, t.debit_account_id, t.credit_account_id, t.amount, "
        f"t.timeout_at_ms, {_RESOLVED} FROM transfers AS t "
        "WHERE t.phase = 1 AND t.id IN (SELECT value FROM json_each(?))"
    ),
    take_id_block="INSERT INTO id_blocks (taken_at_ms) VALUES (?) RETURNING id",
    missing_legs=_MISSING_LEGS.format(legs="json_array_length(o.response, '$.t')"),
    insert_ledger="INSERT INTO ledgers (code, scale) VALUES (?, ?) ON CONFLICT (code) DO NOTHING",
    insert_account=(
        "INSERT INTO accounts (id, ledger, owner, kind, allow_negative, created_at_ms) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (ledger, owner, kind) DO NOTHING"
    ),
    find_account=(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE ledger = ? AND owner = ? AND kind = ?"
    ),
    get_account=f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ?",
)

POSTGRESQL = Dialect(
    name="postgresql",
    begin="BEGIN",
    load_keys=(
        "SELECT k.scope, k.idem_key, o.id, o.content_hash, o.status, o.response, "
        "pg_try_advisory_xact_lock(k.lock_key) "
        "FROM unnest(?::text[], ?::text[], ?::bigint[]) AS k (scope, idem_key, lock_key) "
        "LEFT JOIN operations AS o ON o.scope = k.scope AND o.idem_key = k.idem_key"
    ),
    load_accounts=(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY(?::bigint[]) "
        "ORDER BY id FOR UPDATE"
    ),
    load_accounts_guarded=(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY(?::bigint[]) "
        "AND (SELECT coalesce(bool_and(pg_try_advisory_xact_lock(k)), true) "
        "FROM unnest(?::bigint[]) AS k) ORDER BY id FOR UPDATE"
    ),
    read_accounts=f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY(?::bigint[])",
    load_one_key=(
        "SELECT ?::text, ?::text, o.id, o.content_hash, o.status, o.response, "
        "pg_try_advisory_xact_lock(?::bigint) FROM (SELECT 1) AS one "
        "LEFT JOIN operations AS o ON o.scope = ? AND o.idem_key = ?"
    ),
    load_accounts_one_guard=(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY(?::bigint[]) "
        "AND pg_try_advisory_xact_lock(?::bigint) ORDER BY id FOR UPDATE"
    ),
    locks_rows=True,
    load_pendings=(
        "SELECT t.id, t.ledger, t.debit_account_id, t.credit_account_id, t.amount, "
        f"t.timeout_at_ms, {_RESOLVED} FROM transfers AS t "
        "WHERE t.phase = 1 AND t.id = ANY(?::bigint[])"
    ),
    take_id_block="SELECT nextval('id_blocks') + 0 * ?",
    missing_legs=_MISSING_LEGS.format(legs="json_array_length((o.response::json) -> 't')"),
    insert_ledger=SQLITE.insert_ledger,
    insert_account=SQLITE.insert_account,
    find_account=SQLITE.find_account,
    get_account=SQLITE.get_account,
)
