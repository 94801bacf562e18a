"""Refunds and chargebacks of one order never take the same money or coins back twice."""

from __future__ import annotations

from economy_env import EconomyEnv

from giftflow.economy import accounts as acc
from giftflow.economy.providers import PaymentEvent, PaymentEventKind
from giftflow.ledger import Applied


def _notify(env: EconomyEnv, order_id: str, kind: PaymentEventKind, amount: int) -> None:
    result = env.service.handle_payment(PaymentEvent(
        "simulator", f"event-{kind.value}-{order_id}", kind, order_id, f"sim_{order_id}",
        amount, "USD"))
    assert result.ok, result



def _bought(env: EconomyEnv, pack: str, key: str) -> str:
    """The fan's paid order of ``pack`` (simulator provider)."""
    order = env.service.create_order("fan", "web", pack, "simulator", key)
    assert isinstance(order, Applied)
    assert env.service.simulate_payment(order.response["order_id"]).ok
    return str(order.response["order_id"])


def test_a_refund_after_a_chargeback_takes_nothing_twice(env: EconomyEnv) -> None:
    """After a 749-cent chargeback of a 700-coin order, a 749-cent refund of the same order
    moves nothing: the provider got 749 back once, the lot's 700 coins were reversed once, and
    the buyer owes nothing.
    """
    env.viewer("fan")
    order_id = _bought(env, "web-700", "order-1")
    _notify(env, order_id, PaymentEventKind.DISPUTE_OPENED, 749)
    _notify(env, order_id, PaymentEventKind.REFUNDED, 749)
    assert env.balance(acc.provider_clearing("USD", "simulator")) == 0
    assert env.service.wallet("fan")["coin_debt"] == 0
    [lot] = env.store.read("lots", {"id": order_id})
    assert lot["reversed_coins"] == 700
    env.verify_ok()


def test_a_won_dispute_frees_the_order_for_a_later_refund(env: EconomyEnv) -> None:
    """A dispute that is won gives everything back; a later partial refund of 300 cents then
    reverses floor(700 × 300 / 749) = 280 coins, as if the dispute had never been.
    """
    env.viewer("fan")
    order_id = _bought(env, "web-700", "order-1")
    _notify(env, order_id, PaymentEventKind.DISPUTE_OPENED, 749)
    _notify(env, order_id, PaymentEventKind.DISPUTE_WON, 749)
    _notify(env, order_id, PaymentEventKind.REFUNDED, 300)
    assert env.service.wallet("fan")["coins"] == 700 - 280
    assert env.balance(acc.provider_clearing("USD", "simulator")) == -749 + 300
    env.verify_ok()


def test_a_third_refunded_order_within_30_days_puts_the_buyer_on_hold(env: EconomyEnv) -> None:
    """Refund history is a risk rule: two refunded orders pass, the third within 30 days opens
    a ``refund_history`` hold on the buyer, with its reason for the reviewer.
    """
    env.viewer("fan")
    for n in range(3):
        order_id = _bought(env, "web-70", f"order-{n}")
        _notify(env, order_id, PaymentEventKind.REFUNDED, 74)
        holds = env.store.read("risk_holds", {"user_id": "fan"})
        assert len(holds) == (1 if n == 2 else 0)
    assert holds[0]["rule"] == "refund_history"
    assert holds[0]["reason"] == "3 refunded orders within 30 days"
    env.verify_ok()
