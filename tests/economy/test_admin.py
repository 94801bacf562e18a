"""Freezing accounts and two-admin adjustments, on both stores."""

from __future__ import annotations

import orjson
from economy_env import EconomyEnv

from giftflow.economy import accounts as acc
from giftflow.economy.admin import (
    REASON_CHARS_MAX,
    approve_adjustment,
    freeze,
    propose_adjustment,
    reject_adjustment,
)
from giftflow.ledger import Applied, Failure


def _topics(env: EconomyEnv) -> list[str]:
    return [row["topic"] for row in env.store.read("outbox", {}, order_by=("id",))]


def test_freeze_blocks_gifts_and_unfreeze_restores(env: EconomyEnv) -> None:
    """A frozen sender's gift is refused with account_frozen; after unfreezing it goes through,
    and each change is announced on the outbox.
    """
    env.viewer("v")
    env.creator("c", two_factor=False)
    assert env.buy("v", "web-70").ok
    assert freeze(env.service, "admin1", "v", True, "chargeback pattern") is None
    refused = env.gift("v", "c", 1, 1, key="g1")
    assert isinstance(refused, Failure) and refused.code == "account_frozen"
    assert env.service.user("v")["frozen"] == 1  # type: ignore[index]
    assert freeze(env.service, "admin2", "v", False, "cleared by review") is None
    assert env.gift("v", "c", 1, 1, key="g2").ok
    topics = _topics(env)
    assert topics.index("account_frozen") < topics.index("account_unfrozen")
    event = env.store.read("outbox", {"topic": "account_frozen"})[0]
    assert orjson.loads(event["payload"])["reason"] == "chargeback pattern"
    env.verify_ok()


def test_freeze_needs_a_reason_and_a_user(env: EconomyEnv) -> None:
    """A freeze without a reason, or of nobody, changes nothing."""
    env.viewer("v")
    blank = freeze(env.service, "admin1", "v", True, "  ")
    assert isinstance(blank, Failure) and blank.code == "validation_error"
    nobody = freeze(env.service, "admin1", "ghost", True, "why")
    assert isinstance(nobody, Failure) and nobody.code == "not_found"
    assert env.service.user("v")["frozen"] == 0  # type: ignore[index]


def test_adjustment_needs_a_second_admin_and_applies_once(env: EconomyEnv) -> None:
    """The proposer cannot approve; a second admin's approval credits the creator once, even
    when approved twice, with the reason and the approver on the operation.
    """
    env.creator("c", two_factor=False)
    owner = acc.owner_of_user("c")
    proposed = propose_adjustment(env.service, "admin1", "DIAMOND", owner,
                                  "diamonds:available", 1_234_500, "missed gift credit")
    assert isinstance(proposed, str), proposed
    same = approve_adjustment(env.service, proposed, "admin1")
    assert isinstance(same, Failure) and same.code == "second_admin_required"
    assert env.service.wallet("c")["diamonds"] == 0
    first = approve_adjustment(env.service, proposed, "admin2")
    assert isinstance(first, Applied) and not first.replayed
    again = approve_adjustment(env.service, proposed, "admin3")
    assert isinstance(again, Applied) and again.replayed
    assert env.service.wallet("c")["diamonds_withdrawable"] == 1_234_500
    row = env.store.read("adjustments", {"id": proposed})[0]
    assert (row["status"], row["approved_by"]) == ("applied", "admin2")
    adjustments_id = env.service.ids([acc.adjustments("DIAMOND")])[0]
    entry = env.service.ledger.history(adjustments_id).entries[0]
    assert (entry.amount, entry.code, entry.actor) == (1_234_500, "adjustment", "admin:admin2")
    env.verify_ok()


def test_adjustment_requires_a_reason_and_a_sane_target(env: EconomyEnv) -> None:
    """A missing or too long reason, a zero amount and an unknown ledger are refused."""
    env.creator("c", two_factor=False)
    owner = acc.owner_of_user("c")
    for reason, amount, ledger in (("", 5, "DIAMOND"), ("x" * (REASON_CHARS_MAX + 1), 5,
                                                        "DIAMOND"),
                                   ("ok", 0, "DIAMOND"), ("ok", 5, "GOLD")):
        refused = propose_adjustment(env.service, "admin1", ledger, owner,
                                     "diamonds:available", amount, reason)
        assert isinstance(refused, Failure) and refused.code == "validation_error", refused
    assert env.store.read("adjustments", {}) == []


def test_debit_that_would_overdraw_is_a_stored_failure(env: EconomyEnv) -> None:
    """Debiting more than a creator holds fails with insufficient_funds, stored: approving
    again gives the same answer and nothing moves.
    """
    env.creator("c", two_factor=False)
    proposed = propose_adjustment(env.service, "admin1", "DIAMOND", acc.owner_of_user("c"),
                                  "diamonds:available", -10, "clawback")
    assert isinstance(proposed, str)
    failed = approve_adjustment(env.service, proposed, "admin2")
    assert isinstance(failed, Failure) and failed.code == "insufficient_funds" and failed.stored
    again = approve_adjustment(env.service, proposed, "admin3")
    assert isinstance(again, Failure) and again.code == "insufficient_funds" and again.replayed
    assert env.store.read("adjustments", {"id": proposed})[0]["status"] == "rejected"
    assert env.service.wallet("c")["diamonds"] == 0
    env.verify_ok()


def test_coin_wallet_debit_takes_lots_and_rejection_stops_approval(env: EconomyEnv) -> None:
    """A coin-wallet debit consumes lots first-in first-out so the wallet still matches its
    lots; a rejected adjustment can no longer be approved.
    """
    env.viewer("v")
    assert env.buy("v", "web-70").ok
    owner = acc.owner_of_user("v")
    debit = propose_adjustment(env.service, "admin1", "COIN", owner, "wallet", -20,
                               "duplicate credit", key="k1")
    assert debit == propose_adjustment(env.service, "admin1", "COIN", owner, "wallet", -20,
                                       "duplicate credit", key="k1")
    assert isinstance(debit, str)
    assert approve_adjustment(env.service, debit, "admin2").ok
    assert env.service.wallet("v")["coins"] == 50
    credit = propose_adjustment(env.service, "admin1", "COIN", owner, "wallet", 5, "gift")
    assert isinstance(credit, Failure) and credit.code == "validation_error"
    other = propose_adjustment(env.service, "admin1", "COIN", owner, "wallet", -5, "typo")
    assert isinstance(other, str)
    assert reject_adjustment(env.service, other, "admin2", "not needed") is None
    late = approve_adjustment(env.service, other, "admin3")
    assert isinstance(late, Failure) and late.code == "adjustment_not_proposed"
    assert env.service.wallet("v")["coins"] == 50
    env.verify_ok()
