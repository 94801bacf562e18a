"""Risk holds put requested payouts on hold; a reviewer sees why and releases or rejects them."""

from __future__ import annotations

from economy_env import EconomyEnv

from giftflow.economy.service import GiftRequest
from giftflow.ledger import Applied

CONFETTI = 5585
"""A 100-coin gift."""


def payout_then_large_gift_from_a_new_account(env: EconomyEnv) -> str:
    """A creator asks for $12.50; then an account made today gifts 10,000 coins to them."""
    env.viewer("regular")
    env.creator("star")
    assert env.buy("regular", "web-17500").ok
    assert env.service.send_gift(GiftRequest("regular", "star", CONFETTI, 50, "live", "g1")).ok
    env.clock.advance(days=8)
    env.release("star")
    payout = env.payouts.request("star", 25_000_000, "simulator", env.totp("star"), "p1")
    assert isinstance(payout, Applied), payout
    env.viewer("newcomer")
    assert env.buy("newcomer", "web-17500").ok
    assert env.service.send_gift(GiftRequest("newcomer", "star", CONFETTI, 100, "live",
                                             "g2")).ok
    return str(payout.response["payout"])


def test_a_held_payout_waits_and_shows_its_reason(env: EconomyEnv) -> None:
    """The large gift from a new account holds the creator's requested payout: the payout
    worker leaves it alone, and the review queue shows the rule, the reason and the payout.
    """
    payout_id = payout_then_large_gift_from_a_new_account(env)
    assert env.payouts.process() == []
    [hold] = env.payouts.review_queue()
    assert hold["rule"] == "large_gift_new_account"
    assert "10000 coins from newcomer" in hold["reason"]
    assert [(p["id"], p["status"]) for p in hold["payouts"]] == [(payout_id, "held")]
    assert env.service.wallet("star")["diamonds_reserved"] == 25_000_000
    assert env.simulator.paid_count() == 0


def test_a_reviewer_who_releases_the_hold_lets_the_payout_go(env: EconomyEnv) -> None:
    """Released, the payout goes back to ``requested`` and the next run pays it once."""
    payout_id = payout_then_large_gift_from_a_new_account(env)
    [hold] = env.payouts.review_queue()
    assert env.payouts.review(hold["id"], "reviewer-1", release=True)
    assert not env.payouts.review(hold["id"], "reviewer-1", release=True)  # already closed
    assert [(row["id"], row["status"]) for row in env.payouts.process()] == [(payout_id, "paid")]
    assert env.simulator.paid_count() == 1
    env.verify_ok()


def test_a_reviewer_who_rejects_the_hold_returns_the_diamonds(env: EconomyEnv) -> None:
    """Rejected, the held payout is voided: the 2,500 diamonds are withdrawable again, nothing
    was paid, and later requests are refused while the creator has no other open hold.
    """
    payout_id = payout_then_large_gift_from_a_new_account(env)
    [hold] = env.payouts.review_queue()
    assert env.payouts.review(hold["id"], "reviewer-1", release=False)
    [row] = env.store.read("payouts", {"id": payout_id})
    assert row["status"] == "failed"
    assert env.service.wallet("star")["diamonds_withdrawable"] == 25_000_000
    assert env.payouts.review_queue() == []
    assert env.simulator.paid_count() == 0
    env.verify_ok()
