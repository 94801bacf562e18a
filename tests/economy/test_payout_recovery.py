"""Payouts survive lost answers, outages and restarts: nothing is paid twice, nothing is lost.

Each test drives PayPal's Payouts API on a local server that keeps PayPal's batch semantics
(``sender_batch_id`` dedupe), and "restarts" giftflow by building new payout workers over the
same database, as a new process would.
"""

from __future__ import annotations

from economy_env import EconomyEnv
from paypal_server import PayPalServer

from giftflow.economy.service import GiftRequest
from giftflow.ledger import Applied

CONFETTI = 5585




def requested(env: EconomyEnv, server: PayPalServer) -> str:
    """A creator with 2,500 released diamonds asks for a $12.50 PayPal payout."""
    env.viewer("fan")
    env.creator("star")
    assert env.buy("fan", "web-17500").ok
    assert env.service.send_gift(GiftRequest("fan", "star", CONFETTI, 50, "live", "g")).ok
    env.clock.advance(days=8)
    env.release("star")
    payouts = env.paypal_payouts(server, timeout_s=1.0)
    result = payouts.request("star", 25_000_000, "paypal", env.totp("star"), "p")
    assert isinstance(result, Applied), result
    return str(result.response["payout"])


def test_a_lost_answer_then_a_restart_pays_once(env: EconomyEnv, paypal: PayPalServer) -> None:
    """PayPal takes the payout but the answer is lost: giftflow keeps it ``submitting`` with
    the diamonds reserved. After a restart, new workers ask again under the same
    ``sender_batch_id``, learn the batch, and settle it when PayPal says SUCCESS: one payout at
    PayPal, posted once.
    """
    payout_id = requested(env, paypal)
    paypal.drop_next(endpoint="create")
    [row] = env.paypal_payouts(paypal, timeout_s=1.0).process()
    assert row["status"] == "submitting"
    assert env.service.wallet("star")["diamonds_reserved"] == 25_000_000
    assert len(paypal.payouts) == 1
    restarted = env.paypal_payouts(paypal, timeout_s=1.0)
    assert restarted.poll()[0]["status"] == "submitted"
    paypal.set_status(payout_id, "SUCCESS")
    assert env.paypal_payouts(paypal, timeout_s=1.0).poll()[0]["status"] == "paid"
    assert len(paypal.payouts) == 1
    wallet = env.service.wallet("star")
    assert (wallet["diamonds"], wallet["diamonds_reserved"]) == (0, 0)
    env.verify_ok()


def test_an_outage_keeps_the_reservation_until_the_provider_answers(
        env: EconomyEnv, paypal: PayPalServer) -> None:
    """PayPal answers 503 to every call for a while: the payout stays ``submitting`` and its
    reservation holds (it never expires); once PayPal is back, the next poll submits it under
    the same key and PayPal pays it once.
    """
    payout_id = requested(env, paypal)
    paypal.fail_next(6, status=503)
    assert env.paypal_payouts(paypal, timeout_s=1.0).process()[0]["status"] == "submitting"
    for _ in range(2):
        assert env.paypal_payouts(paypal, timeout_s=1.0).poll()[0]["status"] == "submitting"
    assert env.service.wallet("star")["diamonds_reserved"] == 25_000_000
    assert paypal.payouts == []
    statuses = [env.paypal_payouts(paypal, timeout_s=1.0).poll()[0]["status"] for _ in range(4)]
    assert statuses[-1] == "submitted", statuses
    paypal.set_status(payout_id, "SUCCESS")
    assert env.paypal_payouts(paypal, timeout_s=1.0).poll()[0]["status"] == "paid"
    assert len(paypal.payouts) == 1
    env.verify_ok()


def test_a_denied_payout_after_a_restart_returns_the_diamonds(
        env: EconomyEnv, paypal: PayPalServer) -> None:
    """PayPal accepts, giftflow restarts, then PayPal denies the item: the reservation is
    voided once and the creator can withdraw the 2,500 diamonds again.
    """
    payout_id = requested(env, paypal)
    assert env.paypal_payouts(paypal, timeout_s=1.0).process()[0]["status"] == "submitted"
    paypal.set_status(payout_id, "DENIED")
    assert env.paypal_payouts(paypal, timeout_s=1.0).poll()[0]["status"] == "failed"
    assert env.paypal_payouts(paypal, timeout_s=1.0).poll() == []
    assert env.service.wallet("star")["diamonds_withdrawable"] == 25_000_000
    env.verify_ok()
