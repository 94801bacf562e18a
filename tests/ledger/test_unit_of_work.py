"""The unit of work: an operation's ledger writes and its domain rows commit together."""

from __future__ import annotations

import pytest

from giftflow.adapters.sql.store import SqlStore
from giftflow.ledger import Applied, Insert, Ledger, Operation, TransferRequest


def _outbox(store: SqlStore) -> None:
    with store.connection() as db:
        db.execute("CREATE TABLE effects_log (operation_id BIGINT NOT NULL, kind TEXT NOT NULL, "
                   "coins BIGINT NOT NULL)")


def _rows(store: SqlStore) -> list[tuple[int, str, int]]:
    with store.connection() as db:
        rows = db.execute("SELECT operation_id, kind, coins FROM effects_log "
                          "ORDER BY operation_id")
        return [(int(a), b, int(c)) for a, b, c in rows]


def _gift(wallet: int, redeemed: int, key: str, coins: int) -> Operation:
    def effects(applied: Applied) -> list[Insert]:
        return [Insert("effects_log", {"operation_id": applied.operation_id, "kind": "gift",
                                  "coins": coins})]

    return Operation("user:v|gifts", key, "gift", {"coins": coins},
                     [TransferRequest("COIN", wallet, redeemed, coins, "gift",
                                      shortfall_code="insufficient_coins")],
                     effects=effects,
                     respond=lambda applied: {"sender_coins": applied.balances[wallet].posted})


@pytest.fixture
def accounts(ledger: Ledger) -> tuple[int, int]:
    """A wallet funded with 100 coins and the redeemed account."""
    issuance = ledger.open_account("COIN", "platform", "coins:issuance", allow_negative=True)
    redeemed = ledger.open_account("COIN", "platform", "coins:redeemed", allow_negative=True)
    wallet = ledger.open_account("COIN", "v", "wallet")
    funded = ledger.apply(Operation.of_transfers("s", "fund", [
        TransferRequest("COIN", issuance.id, wallet.id, 100)]))
    assert funded.ok
    return wallet.id, redeemed.id


def test_effects_commit_with_the_operation(store: SqlStore, ledger: Ledger,
                                           accounts: tuple[int, int]) -> None:
    """A succeeded operation's effect rows are written in its transaction; a refused one's are not,
    and a retry writes nothing again.
    """
    _outbox(store)
    wallet, redeemed = accounts
    results = ledger.apply_batch([_gift(wallet, redeemed, "g1", 60),
                                  _gift(wallet, redeemed, "g2", 60),
                                  _gift(wallet, redeemed, "g3", 40)])
    assert [r.ok for r in results] == [True, False, True]
    assert results[0].response == {"sender_coins": 40}
    assert results[2].response == {"sender_coins": 0}
    ids = [r.operation_id for r in results if isinstance(r, Applied)]
    assert _rows(store) == [(ids[0], "gift", 60), (ids[1], "gift", 40)]
    retry = ledger.apply(_gift(wallet, redeemed, "g1", 60))
    assert retry.ok and retry.replayed and retry.response == {"sender_coins": 40}
    assert len(_rows(store)) == 2


def test_rolled_back_unit_of_work_leaves_nothing(store: SqlStore, ledger: Ledger,
                                                 accounts: tuple[int, int]) -> None:
    """Without commit(), neither the transfers, the balances, the stored response nor the effect
    rows survive, and the same key applies afresh afterwards.
    """
    _outbox(store)
    wallet, redeemed = accounts
    with store.unit_of_work() as uow:
        result = uow.apply(_gift(wallet, redeemed, "g1", 30))
        assert result.ok
    assert _rows(store) == []
    account = store.account(wallet)
    assert account is not None and account.posted == 100
    again = ledger.apply(_gift(wallet, redeemed, "g1", 30))
    assert again.ok and not again.replayed
    assert _rows(store) == [(again.operation_id, "gift", 30)] if isinstance(again, Applied) else []


def test_operations_in_one_unit_of_work_see_each_other(store: SqlStore,
                                                       accounts: tuple[int, int]) -> None:
    """A later operation in the same transaction is judged on the balances the earlier ones left."""
    _outbox(store)
    wallet, redeemed = accounts
    with store.unit_of_work() as uow:
        first = uow.apply(_gift(wallet, redeemed, "a", 70))
        second = uow.apply(_gift(wallet, redeemed, "b", 70))
        uow.commit()
    assert first.ok
    assert not second.ok and second.code == "insufficient_coins"
    account = store.account(wallet)
    assert account is not None and account.posted == 30
