"""Ids never repeat (large operations, rollbacks racing a shared block), and a failed completion
callback never stops the group committer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import pytest

from giftflow.adapters.sql.db import IdBlock
from giftflow.adapters.sql.store import SqlStore
from giftflow.ledger import (
    Failure,
    GroupCommitSettings,
    GroupCommitter,
    Ledger,
    Operation,
    Result,
    TransferRequest,
    codes,
)
from giftflow.ledger.engine import Limits

WAIT_S = 10


def test_operation_ids_stay_inside_their_reservation(store_url: str) -> None:
    """An operation with more legs than one id block holds gets ids that nobody else is handed:
    the next ids the database gives out are not among its transfer ids, and a following
    operation applies (or the operation is refused as a validation error).

    (Found in review: the engine reserved at most 4,096 ids but took 1 + legs of them, so the
    last transfer ids ran into the next block, which the database then handed out again; on
    SQLite every writer then lost every race.)
    """
    store = SqlStore(store_url, limits=Limits(transfers_per_operation_max=8190))
    try:
        ledger = Ledger(store)
        issuance = ledger.open_account("COIN", "platform", "issuance", allow_negative=True)
        wallet = ledger.open_account("COIN", "viewer", "wallet")
        leg = TransferRequest("COIN", issuance.id, wallet.id, 1)
        big = ledger.apply(Operation.of_transfers("s", "big", [leg] * 4097))
        if isinstance(big, Failure):  # refusing what cannot get consecutive ids is a fix too
            assert big.code == codes.VALIDATION_ERROR
            return
        with store.connection() as db:
            fresh = db.next_ids(2)
        assert {fresh, fresh + 1}.isdisjoint(big.transfer_ids)
        small = ledger.apply(Operation.of_transfers("s", "small", [leg]))
        assert small.ok, small
        assert set(small.transfer_ids).isdisjoint(big.transfer_ids)
    finally:
        store.close()


class _RacingBlock(IdBlock):
    """An id block that runs ``hook`` right after a reader compared against ``end_id``.

    It stands for another thread that runs between the comparison and the read of ``next_id``
    in :meth:`Db.next_ids`; the hook receives the value the reader already saw.
    """

    def __init__(self) -> None:
        self.hook: Callable[[], None] | None = None
        self._end = 0
        super().__init__()

    @property
    def end_id(self) -> int:
        seen = self._end
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return seen

    @end_id.setter
    def end_id(self, value: int) -> None:
        self._end = value


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_postgres_rollback_does_not_reset_the_shared_id_block_under_a_reader(
        store: SqlStore) -> None:
    """On PostgreSQL one id block serves every pooled connection of the process. A connection
    that rolls back a transaction in which it took a block must not reset that shared block
    while another connection is taking ids from it under the block's lock: two connections must
    never be handed the same id.

    (Found in review: ``Db.rollback`` zeroed the shared block without its lock, and needlessly,
    since PostgreSQL's sequence ignores rollbacks; a reader that had checked the bounds then
    handed out ids from 0, twice.)
    """
    block = _RacingBlock()
    with store.connection() as first, store.connection() as second:
        assert first is not second
        first._ids = second._ids = block
        handed: list[int] = []
        for _ in range(2):
            first.begin()
            first.next_ids(1)  # takes a block inside the transaction
            block.hook = first.rollback  # another thread rolls back mid-read
            handed.append(second.next_ids(1))
        assert handed[0] != handed[1]
        assert min(handed) >= 4096  # ids come from blocks numbered from 1


def test_group_committer_survives_a_cancelled_future(ledger: Ledger) -> None:
    """A caller that gives up on :meth:`GroupCommitter.submit` (cancels its future, as an asyncio
    timeout does through ``wrap_future``) must not stop the committer: later submissions still
    complete.

    (Found in review: ``future.set_result`` raised ``InvalidStateError`` on the cancelled
    future, which killed the committer thread, so every later future waited forever.)
    """
    issuance = ledger.open_account("COIN", "platform", "issuance", allow_negative=True)
    wallet = ledger.open_account("COIN", "viewer", "wallet")
    entered, release = threading.Event(), threading.Event()
    apply_batch = ledger.apply_batch

    def slow_apply_batch(operations: Sequence[Operation]) -> list[Result]:
        entered.set()
        release.wait(WAIT_S)
        return apply_batch(operations)

    ledger.apply_batch = slow_apply_batch  # type: ignore[method-assign]
    committer = GroupCommitter(ledger, GroupCommitSettings(window_us=500))
    try:
        def fund(key: str) -> Operation:
            return Operation.of_transfers(
                "s", key, [TransferRequest("COIN", issuance.id, wallet.id, 10)])

        abandoned = committer.submit(fund("abandoned"))
        assert entered.wait(WAIT_S)
        assert abandoned.cancel()
        release.set()
        later = committer.submit(fund("later"))
        assert later.result(timeout=WAIT_S).ok
    finally:
        release.set()
        ledger.apply_batch = apply_batch  # type: ignore[method-assign]
        if committer._thread.is_alive():
            committer.close()
