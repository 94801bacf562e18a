"""A thin wrapper over one DB-API connection: the only place that talks to a driver.

It converts placeholders for the dialect, hands out time-ordered ids from blocks reserved in the
database (hi/lo), translates lost races into :class:`StoreConflict`, and can record every statement
it runs. ``giftflow bench`` uses that recording to replay exactly giftflow's SQL with bare driver
calls, so that the baseline measures the same work without giftflow's code.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import psycopg
import psycopg.errors
from psycopg import pq

from giftflow.adapters.sql.dialects import Dialect
from giftflow.invariants import invariant
from giftflow.ledger.ports import StoreConflict

ID_BLOCK_SIZE = 4096
"""Ids per block reserved from the database; ids inside a block increase with time."""

Step = tuple[str, str, Any]
"""A driver call: ``("execute", sql, parameters)`` or ``("executemany", sql, rows)``."""

Trace = list[Step]
"""Recorded driver calls: ``(kind, sql, parameters)``. Kind ``execute`` or ``executemany`` is one
call. Kind ``pipeline`` (PostgreSQL) holds, in place of parameters, a list of such calls sent in
one round trip by :func:`send_batch`: ``queries`` (the rows of each are read) or ``write``
(ending with ``COMMIT``)."""

_CONFLICTS: tuple[type[Exception], ...] = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
)


def _rows(cursor: Any) -> list[tuple[Any, ...]]:  # noqa: ANN401 -- psycopg's cursor
    """The rows of a psycopg result, or none for a statement without rows.

    Reads the result's status rather than ``cursor.description``, which builds a column object
    per column on every call.
    """
    result = cursor.pgresult
    if result is None or result.status != pq.ExecStatus.TUPLES_OK:
        return []
    rows: list[tuple[Any, ...]] = cursor.fetchall()
    return rows


def send_batch(raw: psycopg.Connection[Any], calls: Sequence[Step]) -> list[list[tuple[Any, ...]]]:
    """Send PostgreSQL calls in one round trip, as one simple-protocol query; their rows.

    The parameters are bound on the client (``ClientCursor``), so the statements travel as one
    ``Query`` message, separated by semicolons: the server runs them in order and answers once.
    An ``executemany`` becomes one statement per row. Measured here, this costs about a fifth of
    a pipeline of the same statements, whose per-statement protocol messages dominate a small
    transaction. Returns the rows of each statement sent (``[]`` for statements without rows).
    """
    parts: list[str] = []
    params: list[Any] = []
    for kind, sql, values in calls:
        statement = _client_sql(sql)
        if kind == "executemany":
            for row in values:
                parts.append(statement)
                params.extend(row)
        else:
            parts.append(statement)
            params.extend(values or ())
    cursor = psycopg.ClientCursor(raw)
    try:
        cursor.execute(";\n".join(parts), params or None)
        results = [_rows(cursor)]
        while cursor.nextset():
            results.append(_rows(cursor))
    finally:
        cursor.close()
    return results


_CLIENT_SQL: dict[str, str] = {}


def _client_sql(sql: str) -> str:
    """``sql`` with ``?`` placeholders as psycopg's ``%s`` (and a literal ``%`` escaped)."""
    converted = _CLIENT_SQL.get(sql)
    if converted is None:
        converted = _CLIENT_SQL[sql] = sql.replace("%", "%%").replace("?", "%s")
    return converted


def _reraise(error: Exception) -> NoReturn:
    """Raise a lost race as :class:`StoreConflict`, and any other error as it is."""
    if _is_conflict(error):
        raise StoreConflict(str(error)) from error
    raise error


def _is_conflict(error: Exception) -> bool:
    if isinstance(error, _CONFLICTS):
        return True
    if isinstance(error, sqlite3.OperationalError):
        message = str(error)
        return "locked" in message or "busy" in message
    if isinstance(error, sqlite3.IntegrityError):
        return "UNIQUE constraint failed" in str(error)
    return False


class IdBlock:
    """The block of ids a connection (SQLite) or a whole process (PostgreSQL) hands out from.

    PostgreSQL sequences ignore rollbacks, so one block can serve every pooled connection of a
    process, which keeps ids in time order. SQLite reserves a block inside the transaction, so
    each connection has its own and gives it up when that transaction rolls back.
    """

    def __init__(self) -> None:
        self.next_id = 0
        self.end_id = 0
        self.lock = threading.Lock()


class Db:
    """One connection, used by one thread at a time."""

    def __init__(self, raw: Any, dialect: Dialect,  # noqa: ANN401 -- either driver
                 ids: IdBlock | None = None) -> None:
        self.raw = raw
        self.dialect = dialect
        self.trace: Trace | None = None
        self._sql: dict[str, str] = {}
        self._ids = ids or IdBlock()
        self._block_in_transaction = False
        self._in_transaction = False
        self._begin_pending = False

    def _convert(self, sql: str) -> str:
        converted = self._sql.get(sql)
        if converted is None:
            converted = sql if self.dialect.name == "sqlite" else sql.replace("?", "%s")
            self._sql[sql] = converted
        return converted

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows (empty for statements without rows)."""
        if self._begin_pending:
            self._begin_pending = False
            self.execute(self.dialect.begin)
        if self.trace is not None:
            self.trace.append(("execute", sql, tuple(params)))
        try:
            if self.dialect.name == "sqlite":
                cursor = self.raw.execute(sql, params)
                return list(cursor.fetchall()) if cursor.description is not None else []
            # psycopg reads '%' as a placeholder whenever parameters are given.
            return _rows(self.raw.execute(self._convert(sql), params or None))
        except (sqlite3.Error, psycopg.Error) as error:
            _reraise(error)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each row of parameters."""
        self.write((("executemany", sql, list(rows)),), commit=False)

    def queries(self, statements: Sequence[tuple[str, Sequence[Any]]]
                ) -> list[list[tuple[Any, ...]]]:
        """Run statements in order and return each one's rows.

        On PostgreSQL they travel in one round trip (:func:`send_batch`), together with a ``BEGIN``
        that :meth:`begin` left pending.
        """
        if self.dialect.name == "sqlite":
            return [self.execute(sql, params) for sql, params in statements]
        batch = [(self.dialect.begin, ())] if self._begin_pending else []
        batch.extend((sql, tuple(params)) for sql, params in statements)
        self._begin_pending = False
        calls: list[Step] = [("execute", sql, params) for sql, params in batch]
        if self.trace is not None:
            self.trace.append(("pipeline", "queries", calls))
        try:
            results = send_batch(self.raw, calls)
        except psycopg.Error as error:
            _reraise(error)
        return results[len(batch) - len(statements):]

    def write(self, steps: Sequence[Step], *, commit: bool) -> None:
        """Run write steps in order, then commit if asked.

        A step is ``("execute", sql, parameters)`` or ``("executemany", sql, rows)``; an
        ``executemany`` without rows is skipped. On PostgreSQL the whole write, and the
        ``COMMIT``, travel in one round trip.
        """
        steps = [step for step in steps if step[0] == "execute" or step[2]]
        if self.dialect.name == "sqlite" or not (steps or commit):
            self._write_one_by_one(steps, commit=commit)
            return
        calls = self._pipeline_calls(steps, commit=commit)
        if self.trace is not None:
            self.trace.append(("pipeline", "write", calls))
        try:
            send_batch(self.raw, calls)
        except psycopg.Error as error:
            _reraise(error)
        if commit:
            self._ended()

    def _pipeline_calls(self, steps: list[Step], *, commit: bool) -> list[Step]:
        """A PostgreSQL write round trip's calls: a pending ``BEGIN``, the steps, ``COMMIT``."""
        calls: list[Step] = []
        if self._begin_pending:
            calls.append(("execute", self.dialect.begin, ()))
        calls.extend(steps)
        if commit and (self._in_transaction or calls):
            calls.append(("execute", "COMMIT", ()))
        self._begin_pending = False
        return calls

    def _write_one_by_one(self, steps: list[Step], *, commit: bool) -> None:
        for kind, sql, params in steps:
            if kind == "execute":
                self.execute(sql, params)
                continue
            if self._begin_pending:
                self._begin_pending = False
                self.execute(self.dialect.begin)
            if self.trace is not None:
                self.trace.append(("executemany", sql, params))
            try:
                if self.dialect.name == "sqlite":
                    self.raw.executemany(sql, params)
                else:
                    with self.raw.cursor() as cursor:
                        cursor.executemany(self._convert(sql), params)
            except (sqlite3.Error, psycopg.Error) as error:
                _reraise(error)
        if commit:
            self.commit()

    def begin(self) -> None:
        """Start a write transaction.

        SQLite runs ``BEGIN IMMEDIATE`` at once, taking the write lock up front. PostgreSQL
        sends its ``BEGIN`` with the transaction's first statements, saving a round trip.
        """
        self._in_transaction = True
        if self.dialect.name == "sqlite":
            self.execute(self.dialect.begin)
        else:
            self._begin_pending = True

    def commit(self) -> None:
        """Commit the transaction."""
        if self._begin_pending:  # nothing was sent, so there is nothing to commit
            self._begin_pending = False
        else:
            self.execute("COMMIT")
        self._ended()

    def _ended(self) -> None:
        self._in_transaction = False
        self._block_in_transaction = False

    def rollback(self) -> None:
        """Roll back; an id block reserved inside the transaction is given up with it."""
        self._in_transaction = False
        if self._block_in_transaction:
            with self._ids.lock:
                self._ids.next_id = self._ids.end_id = 0
            self._block_in_transaction = False
        if self._begin_pending:
            self._begin_pending = False
            return
        try:
            self.execute("ROLLBACK")
        except (sqlite3.Error, psycopg.Error, StoreConflict):
            # Nothing to roll back (the server already ended the transaction); the
            # connection is usable again either way.
            return

    def next_id(self) -> int:
        """A new unique id, increasing within this connection."""
        return self.next_ids(1)

    def next_ids(self, count: int) -> int:
        """Reserve ``count`` consecutive new ids and return the first."""
        invariant(0 < count <= ID_BLOCK_SIZE, f"at most {ID_BLOCK_SIZE} ids at once")
        ids = self._ids
        with ids.lock:
            if ids.next_id + count > ids.end_id:
                block = self.execute(self.dialect.take_id_block,
                                     (time.time_ns() // 1_000_000,))[0][0]
                ids.next_id = int(block) * ID_BLOCK_SIZE
                ids.end_id = ids.next_id + ID_BLOCK_SIZE
                # Only SQLite's block comes from a table that a rollback undoes; PostgreSQL's
                # sequence ignores rollbacks, and its block is shared by the whole process.
                self._block_in_transaction = (self._in_transaction
                                              and self.dialect.name == "sqlite")
            first = ids.next_id
            ids.next_id += count
            return first

    def close(self) -> None:
        """Close the connection."""
        self.raw.close()
