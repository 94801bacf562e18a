"""What the ledger needs from storage. Adapters implement these; the ledger imports no driver."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self

from giftflow.ledger.model import Account, LedgerSpec, Operation, Page, Result


class StoreConflict(Exception):  # noqa: N818 -- a lost race is an outcome, not an error
    """A transaction lost a race: a key taken concurrently, a deadlock or a busy database.

    Nothing of it was committed, and the same operations can be tried again.
    """


class UnitOfWork(Protocol):
    """One database transaction. It rolls back unless :meth:`commit` is called.

    Operations applied in it see each other's effects, and every row they stage (transfers,
    balances, stored responses and the domain rows returned by ``Operation.effects``) commits
    together or not at all.
    """

    def apply(self, operation: Operation) -> Result:
        """Apply one operation inside this transaction."""
        ...

    def apply_many(self, operations: Sequence[Operation]) -> list[Result]:
        """Apply operations in order, loading what they need in a few statements."""
        ...

    def commit(self) -> None:
        """Write everything staged and commit; raises :class:`StoreConflict` on a lost race."""
        ...

    def rollback(self) -> None:
        """Discard everything staged."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None: ...


class LedgerStore(Protocol):
    """Durable state of the ledger."""

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        ...

    def unit_of_work(self) -> UnitOfWork:
        """A new transaction."""
        ...

    def now_ms(self) -> int:
        """The store's clock: it stamps transfers and decides when pending transfers expire."""
        ...

    def ensure_ledgers(self, ledgers: Sequence[LedgerSpec]) -> None:
        """Create the ledgers that do not exist yet."""
        ...

    def ledgers(self) -> list[LedgerSpec]:
        """Every ledger, by code."""
        ...

    def open_account(self, ledger: str, owner: str, kind: str, *, allow_negative: bool) -> Account:
        """The account of ``(ledger, owner, kind)``, created on first use."""
        ...

    def account(self, account_id: int) -> Account | None:
        """One account and its cached balances."""
        ...

    def history(self, account_id: int, before: int | None, limit: int) -> Page:
        """Transfers of one account, newest first, strictly before the cursor."""
        ...

    def expired_pending_ids(self, now_ms: int, limit: int) -> list[int]:
        """Unresolved pending transfers whose timeout has passed."""
        ...

    def close(self) -> None:
        """Release every connection."""
        ...
