"""The economy's transaction on SQL: domain rows beside the ledger's unit of work.

Statements are built from the schema's own table and column names, checked against it, and every
value is a bound parameter. Reads run at once; writes are staged on the unit of work and flushed at
commit with the ledger's rows, so PostgreSQL still commits in one round trip.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self

from giftflow.adapters.sql.economy_schema import COLUMNS, KEYS, PG_TYPES
from giftflow.adapters.sql.unit_of_work import SqlUnitOfWork, account_from_row
from giftflow.economy.ports import KeyState, Row
from giftflow.invariants import invariant
from giftflow.ledger.model import Account, Operation, Result

IN_VALUES_MAX: Final = 1000
"""The most values one ``rows_in`` read takes."""

_OPERATORS: Final = frozenset({"=", "<>", "<", "<=", ">", ">="})
_CONDITION: Final = re.compile(r"([a-z_]+)(?:\s+(\S+))?")


def _columns(table: str) -> tuple[str, ...]:
    columns = COLUMNS.get(table)
    invariant(columns is not None, f"unknown table {table!r}")
    return columns  # type: ignore[return-value]


def _arrays(table: str, columns: Sequence[str]) -> str:
    """``?::type[], …``: one array parameter per column, for PostgreSQL's ``unnest``."""
    types = PG_TYPES[table]
    return ", ".join(f"?::{types[column]}[]" for column in columns)


def where_clause(table: str, where: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``col op ? AND …`` for a ``where`` mapping, with its parameters."""
    known = _columns(table)
    parts: list[str] = []
    params: list[Any] = []
    for condition, value in where.items():
        match = _CONDITION.fullmatch(condition)
        invariant(match is not None, f"bad condition {condition!r}")
        column, operator = match.group(1), match.group(2) or "="  # type: ignore[union-attr]
        invariant(column in known and (operator in _OPERATORS or operator == "in"),
                  f"bad condition {condition!r} on {table}")
        if operator == "in":
            values = list(value)
            invariant(0 < len(values) <= IN_VALUES_MAX,
                      f"an IN list holds 1..{IN_VALUES_MAX} values")
            parts.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
        else:
            parts.append(f"{column} {operator} ?")
            params.append(value)
    return (" AND ".join(parts) or "1 = 1"), params


def _order(table: str, order_by: Sequence[str]) -> str:
    known = _columns(table)
    terms = []
    for term in order_by:
        column, _, direction = term.partition(" ")
        invariant(column in known and direction in {"", "DESC", "ASC"},
                  f"bad ordering {term!r} on {table}")
        terms.append(term)
    return f" ORDER BY {', '.join(terms)}" if terms else ""


def select(table: str, where: Mapping[str, Any], order_by: Sequence[str], limit: int | None,
           *, lock: bool) -> tuple[str, list[Any]]:
    """A SELECT of every column of ``table``."""
    clause, params = where_clause(table, where)
    sql = f"SELECT {', '.join(_columns(table))} FROM {table} WHERE {clause}"
    sql += _order(table, order_by)
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    if lock:
        sql += " FOR UPDATE"
    return sql, params


class SqlEconomyTx:
    """Implements :class:`giftflow.economy.ports.EconomyTx` on a :class:`SqlUnitOfWork`."""

    def __init__(self, uow: SqlUnitOfWork) -> None:
        self.uow = uow
        self._locks = uow.db.dialect.locks_rows
        self._after_commit: list[Callable[[], None]] = []

    def __enter__(self) -> Self:
        self.uow.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.uow.__exit__(kind, error, trace)

    def _read(self, table: str, sql: str, params: Sequence[Any]) -> list[Row]:
        names = _columns(table)
        return [dict(zip(names, row, strict=True))
                for row in self.uow.query([(sql, params)])[0]]

    def rows(self, table: str, where: Mapping[str, Any], *, order_by: Sequence[str] = (),
             lock: bool = False, limit: int | None = None) -> list[Row]:
        """The rows of ``table`` that match ``where``."""
        sql, params = select(table, where, order_by, limit, lock=lock and self._locks)
        return self._read(table, sql, params)

    def rows_in(self, table: str, column: str, values: Sequence[Any], *,
                order_by: Sequence[str] = (), lock: bool = False) -> list[Row]:
        """The rows whose ``column`` is one of ``values``."""
        invariant(len(values) <= IN_VALUES_MAX, f"at most {IN_VALUES_MAX} values per read")
        invariant(column in _columns(table), f"unknown column {column!r} of {table}")
        if not values:
            return []
        marks = ", ".join("?" * len(values))
        sql = f"SELECT {', '.join(_columns(table))} FROM {table} WHERE {column} IN ({marks})"
        sql += _order(table, order_by)
        if lock and self._locks:
            sql += " FOR UPDATE"
        return self._read(table, sql, list(values))

    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        """Stage a new row."""
        known = _columns(table)
        invariant(all(column in known for column in row), f"unknown column in {table}: {row}")
        self.uow.stage([("execute", self.uow.db.dialect.insert(table, list(row)),
                         tuple(row.values()))])

    def update(self, table: str, key: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        """Stage ``SET column = value`` for the rows matching ``key``."""
        self._set(table, key, [f"{column} = ?" for column in changes], list(changes.values()))

    def delete(self, table: str, key: Mapping[str, Any]) -> None:
        """Stage the removal of the rows matching ``key``."""
        invariant(bool(key), "a delete names the rows it removes")
        clause, params = where_clause(table, key)
        self.uow.stage([("execute", f"DELETE FROM {table} WHERE {clause}", tuple(params))])

    def add(self, table: str, key: Mapping[str, Any], deltas: Mapping[str, int]) -> None:
        """Stage ``SET column = column + delta`` for the rows matching ``key``."""
        self._set(table, key, [f"{column} = {column} + ?" for column in deltas],
                  list(deltas.values()))

    def _set(self, table: str, key: Mapping[str, Any], assignments: list[str],
             values: list[Any]) -> None:
        known = _columns(table)
        invariant(bool(assignments) and all(a.split(" ", 1)[0] in known for a in assignments),
                  f"bad assignments on {table}: {assignments}")
        clause, params = where_clause(table, key)
        sql = f"UPDATE {table} SET {', '.join(assignments)} WHERE {clause}"
        self.uow.stage([("execute", sql, (*values, *params))])

    def upsert_add(self, table: str, key: Mapping[str, Any], deltas: Mapping[str, int]) -> None:
        """Stage an insert of ``key`` and ``deltas`` that adds the deltas to an existing row."""
        known, primary = _columns(table), KEYS[table]
        invariant(set(key) == set(primary) and all(c in known for c in deltas),
                  f"upsert on {table} needs exactly its primary key {primary}")
        columns = [*key, *deltas]
        marks = ", ".join("?" * len(columns))
        updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in deltas)
        sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
               f"ON CONFLICT ({', '.join(primary)}) DO UPDATE SET {updates}")
        self.uow.stage([("execute", sql, (*key.values(), *deltas.values()))])

    def balances(self, account_ids: Sequence[int], *, lock: bool = False) -> dict[int, Account]:
        """Ledger accounts with their balances; ``lock`` holds them until commit."""
        if not account_ids:
            return {}
        dialect = self.uow.db.dialect
        statement = dialect.load_accounts if lock else dialect.read_accounts
        rows = self.uow.query([(statement, dialect.id_params(sorted(set(account_ids))))])[0]
        return {account.id: account for account in map(account_from_row, rows)}

    def next_ids(self, count: int) -> int:
        """Reserve ``count`` consecutive time-ordered ids and return the first."""
        return self.uow.db.next_ids(count)

    def insert_many(self, table: str, columns: Sequence[str],
                    rows: Sequence[Sequence[Any]]) -> None:
        """Stage many new rows of the same columns (one statement for all of them)."""
        known = _columns(table)
        invariant(all(column in known for column in columns), f"unknown column in {table}")
        if rows:
            dialect = self.uow.db.dialect
            bulk = (f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM "
                    f"unnest({_arrays(table, columns)})")
            self.uow.stage(dialect.row_steps(dialect.insert(table, columns), rows, bulk))

    def add_many(self, table: str, key_columns: Sequence[str], delta_columns: Sequence[str],
                 rows: Sequence[Sequence[Any]], *, upsert: bool = False) -> None:
        """Stage ``column = column + delta`` for many rows; each row is its deltas, then its key.

        With ``upsert`` a missing row is inserted with the deltas as its values.
        """
        known = _columns(table)
        invariant(all(c in known for c in (*key_columns, *delta_columns)),
                  f"unknown column in {table}")
        if not rows:
            return
        if upsert:
            invariant(tuple(key_columns) == KEYS[table], f"upsert on {table} needs its key")
            columns = [*delta_columns, *key_columns]
            updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in delta_columns)
            conflict = f"ON CONFLICT ({', '.join(key_columns)}) DO UPDATE SET {updates}"
            sql = (f"INSERT INTO {table} ({', '.join(columns)}) "
                   f"VALUES ({', '.join('?' * len(columns))}) {conflict}")
            bulk = (f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM "
                    f"unnest({_arrays(table, columns)}) {conflict}")
        else:
            columns = [*delta_columns, *key_columns]
            assignments = ", ".join(f"{c} = {c} + ?" for c in delta_columns)
            clause = " AND ".join(f"{c} = ?" for c in key_columns)
            sql = f"UPDATE {table} SET {assignments} WHERE {clause}"
            bulk = (f"UPDATE {table} AS t SET "
                    f"{', '.join(f'{c} = t.{c} + v.{c}' for c in delta_columns)} "
                    f"FROM unnest({_arrays(table, columns)}) AS v({', '.join(columns)}) "
                    f"WHERE {' AND '.join(f't.{c} = v.{c}' for c in key_columns)}")
        self.uow.stage(self.uow.db.dialect.row_steps(sql, rows, bulk))

    def key_states(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], KeyState]:
        """Load idempotency keys before planning their operations."""
        return self.uow.key_states(keys)  # type: ignore[return-value]

    def apply_many(self, operations: Sequence[Operation]) -> list[Result]:
        """Apply ledger operations in this transaction."""
        return self.uow.apply_many(operations)

    def commit(self) -> None:
        """Write everything staged and commit; then run the after-commit callbacks."""
        self.uow.commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this transaction has committed (never if it does not)."""
        self._after_commit.append(callback)
