"""The ledger service: applies operations with idempotency, retries and group commit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from giftflow.invariants import invariant
from giftflow.ledger import codes
from giftflow.ledger.model import Account, Failure, Operation, Page, Result, TransferRequest
from giftflow.ledger.ports import LedgerStore, StoreConflict


@dataclass(frozen=True, slots=True)
class LedgerLimits:
    """The ledger service's bounds."""

    batch_operations_max: int = 1000
    history_page_entries_max: int = 500
    conflict_retries_max: int = 8
    expiry_batch_transfers_max: int = 500


class Ledger:
    """Applies operations to a :class:`LedgerStore`.

    A duplicate of an operation that is still being applied in this process gets
    ``idempotency_in_progress`` at once; stores add their own guard across processes.
    """

    def __init__(self, store: LedgerStore, limits: LedgerLimits | None = None,
                 clock_ms: Callable[[], int] | None = None) -> None:
        self.store = store
        self.limits = limits or LedgerLimits()
        # One clock decides expiry: the store's, unless a test injects another.
        self.clock_ms = clock_ms or store.now_ms
        self._inflight: set[tuple[str, str]] = set()
        self._inflight_lock = threading.Lock()

    def apply(self, operation: Operation) -> Result:
        """Apply one operation in its own transaction."""
        return self.apply_batch((operation,))[0]

    def apply_batch(self, operations: Sequence[Operation]) -> list[Result]:
        """Apply operations in one transaction (group commit); each succeeds or fails alone.

        If the batch loses a race in the database, it is rolled back and each operation is then
        applied in a transaction of its own, so that one operation never fails its neighbours.
        """
        invariant(len(operations) <= self.limits.batch_operations_max,
                  f"a batch holds at most {self.limits.batch_operations_max} operations")
        keys = [(operation.scope, operation.key) for operation in operations]
        with self._inflight_lock:
            running = self._inflight.intersection(keys)
            mine = set(keys).difference(running)
            self._inflight.update(mine)
        try:
            if not running:
                return self._apply_claimed(operations)
            # Duplicates inside this batch share its claim; keys claimed elsewhere are busy.
            runnable = [op for op, key in zip(operations, keys, strict=True) if key in mine]
            results = iter(self._apply_claimed(runnable))
            busy = Failure(codes.IDEMPOTENCY_IN_PROGRESS,
                           "an operation with this idempotency key is still running")
            return [next(results) if key in mine else busy for key in keys]
        finally:
            with self._inflight_lock:
                self._inflight.difference_update(mine)

    def _apply_claimed(self, operations: Sequence[Operation]) -> list[Result]:
        if not operations:
            return []
        try:
            return self._attempt(operations)
        except StoreConflict:
            if len(operations) == 1:
                return [self._retry_alone(operations[0])]
        return [self._retry_alone(operation) for operation in operations]

    def _attempt(self, operations: Sequence[Operation]) -> list[Result]:
        with self.store.unit_of_work() as uow:
            results = uow.apply_many(operations)
            uow.commit()
        return results

    def _retry_alone(self, operation: Operation) -> Result:
        for attempt in range(self.limits.conflict_retries_max):
            try:
                return self._attempt((operation,))[0]
            except StoreConflict:
                time.sleep(min(0.001 * 2**attempt, 0.05))
        return Failure(codes.OVERLOADED,
                       f"gave up after {self.limits.conflict_retries_max} lost races; retry later")

    # -- reads and maintenance --------------------------------------------------------------------

    def open_account(self, ledger: str, owner: str, kind: str, *,
                     allow_negative: bool = False) -> Account:
        """The account of ``(ledger, owner, kind)``, created on first use."""
        return self.store.open_account(ledger, owner, kind, allow_negative=allow_negative)

    def account(self, account_id: int) -> Account | None:
        """One account with its balances."""
        return self.store.account(account_id)

    def history(self, account_id: int, cursor: int | None = None, limit: int = 100) -> Page:
        """A page of an account's transfers, newest first; pass ``next_cursor`` for the next."""
        limit = max(1, min(limit, self.limits.history_page_entries_max))
        return self.store.history(account_id, cursor, limit)

    def expire_pending(self) -> list[Result]:
        """Void every pending transfer whose timeout has passed (one operation each)."""
        expired = self.store.expired_pending_ids(self.clock_ms(),
                                                 self.limits.expiry_batch_transfers_max)
        operations = [
            Operation.of_transfers("system:expiry", f"expire:{pending_id}",
                                   [TransferRequest.void(pending_id, code="expired")],
                                   kind="expire_pending")
            for pending_id in expired
        ]
        return self.apply_batch(operations) if operations else []
