"""What the economy needs from storage: one transaction that holds domain rows and the ledger.

The economy speaks of tables and columns (the rows of ``giftflow.adapters.sql.economy_schema``)
but never of SQL or a driver. Reads happen at once inside the transaction; writes are staged and
run at commit, after the ledger's own rows, in the order they were staged. So an operation's
ledger writes, its lot consumption, its counters, its receipt and its outbox event commit
together or not at all (SPEC.md §1, "Same transaction").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from giftflow.ledger.model import Account, Operation, Result

Row = dict[str, Any]
"""A row by column name."""

KeyState = Literal["new", "recorded", "busy"]
"""An idempotency key before its operation runs: unused, answered before, or held elsewhere."""


class EconomyTx(Protocol):
    """One database transaction for the economy; rolls back unless committed.

    ``where`` maps a column, optionally followed by one of ``= <> < <= > >=`` (``"seq >"``) or
    ``in`` (with a sequence of values), to a value; the conditions are joined with AND.
    ``lock`` takes row locks (``FOR UPDATE``) where the database has them; SQLite's write
    transaction already excludes every other writer.
    """

    def rows(self, table: str, where: Mapping[str, Any], *, order_by: Sequence[str] = (),
             lock: bool = False, limit: int | None = None) -> list[Row]:
        """The rows of ``table`` that match ``where``."""
        ...

    def rows_in(self, table: str, column: str, values: Sequence[Any], *,
                order_by: Sequence[str] = (), lock: bool = False) -> list[Row]:
        """The rows whose ``column`` is one of ``values`` (at most ``in_values_max``)."""
        ...

    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        """Stage a new row."""
        ...

    def update(self, table: str, key: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        """Stage ``SET column = value`` for the row(s) matching ``key``."""
        ...

    def delete(self, table: str, key: Mapping[str, Any]) -> None:
        """Stage the removal of the row(s) matching ``key``.

        Never of money (ledger rows are append-only): this is for domain rows such as a
        dismissed moderator.
        """
        ...

    def add(self, table: str, key: Mapping[str, Any], deltas: Mapping[str, int]) -> None:
        """Stage ``SET column = column + delta`` for the row(s) matching ``key``."""
        ...

    def upsert_add(self, table: str, key: Mapping[str, Any], deltas: Mapping[str, int]) -> None:
        """Stage an insert of ``key`` with ``deltas`` that adds to the row if it exists."""
        ...

    def balances(self, account_ids: Sequence[int], *, lock: bool = False) -> dict[int, Account]:
        """Ledger accounts with their balances; ``lock`` holds them until commit."""
        ...

    def next_ids(self, count: int) -> int:
        """Reserve ``count`` consecutive time-ordered ids and return the first."""
        ...

    def insert_many(self, table: str, columns: Sequence[str],
                    rows: Sequence[Sequence[Any]]) -> None:
        """Stage many new rows of the same columns (one statement for all of them)."""
        ...

    def add_many(self, table: str, key_columns: Sequence[str], delta_columns: Sequence[str],
                 rows: Sequence[Sequence[Any]], *, upsert: bool = False) -> None:
        """Stage ``column = column + delta`` for many rows; each row is its deltas, then its key.

        With ``upsert`` a row that does not exist is inserted with the deltas as its values
        (the key must then be the table's primary key).
        """
        ...

    def key_states(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], KeyState]:
        """Load idempotency keys before planning their operations."""
        ...

    def apply_many(self, operations: Sequence[Operation]) -> list[Result]:
        """Apply ledger operations in this transaction."""
        ...

    def commit(self) -> None:
        """Write everything staged and commit (``StoreConflict`` on a lost race)."""
        ...

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this transaction has committed (never if it does not)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None: ...


class EconomyStore(Protocol):
    """Opens economy transactions and answers reads outside them."""

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        ...

    def economy_tx(self) -> EconomyTx:
        """A new transaction."""
        ...

    def read(self, table: str, where: Mapping[str, Any], *, order_by: Sequence[str] = (),
             limit: int | None = None) -> list[Row]:
        """Committed rows of ``table`` that match ``where`` (no transaction kept open)."""
        ...

    def now_ms(self) -> int:
        """The store's clock."""
        ...


class EventSink(Protocol):
    """Where a transaction's room events go (the live domain's stream logs), if anywhere.

    ``frames`` maps subjects (``stream:<id>``, ``video:<id>``) to (type, data) events, in order.
    The sink stages what it keeps in the same transaction and returns the rest, which the economy
    writes to its outbox.
    """

    def stage(self, tx: EconomyTx, frames: Mapping[str, list[tuple[str, dict[str, Any]]]],
              now_ms: int) -> Mapping[str, list[tuple[str, dict[str, Any]]]]:
        """Stage the events of the subjects the sink keeps; return the others."""
        ...

    def refusals(self, tx: EconomyTx, subjects: Sequence[str]) -> Mapping[str, tuple[str, str]]:
        """The subjects that cannot take gifts now, with a refusal (code, detail) each.

        For example a stream that does not exist or is not live.
        """
        ...
