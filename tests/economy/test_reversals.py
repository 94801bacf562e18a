"""Refunds and chargebacks of one order never take the same money or coins back twice."""

from __future__ import annotations

from economy_env import EconomyEnv

from giftflow.economy import accounts as acc
from giftflow.economy.providers import PaymentEvent, PaymentEventKind
from giftflow.ledger import Applied


def _notify(env: EconomyEnv, order_id: str, kind: PaymentEventKind, amount: int) -> None:
    result = env.service.handle_payment(PaymentEvent(
        "simulator", f"event-{kind.value}", kind, order_id, f"sim_{order_id}", amount, "USD"))
    assert result.ok, result


def _clearing(env: EconomyEnv) -> int:
    key = acc.provider_clearing("USD", "simulator")
    env.service.book.open([key])
    account = env.service.ledger.account(env.service.ids([key])[0])
    assert account is not None
    return account.posted


def test_a_refund_after_a_chargeback_takes_nothing_twice(env: EconomyEnv) -> None:
    """After a 749-cent chargeback of a 700-coin order, a 749-cent refund of the same order
    moves nothing: the provider got 749 back once, the lot's 700 coins were reversed once, and
    the buyer owes nothing.
    """
    env.viewer("fan")
    order = env.service.create_order("fan", "web", "web-700", "simulator", "order-1")
    assert isinstance(order, Applied)
    order_id = order.response["order_id"]
    assert env.service.simulate_payment(order_id).ok
    _notify(env, order_id, PaymentEventKind.DISPUTE_OPENED, 749)
    _notify(env, order_id, PaymentEventKind.REFUNDED, 749)
    assert _clearing(env) == 0
    assert env.service.wallet("fan")["coin_debt"] == 0
    [lot] = env.store.read("lots", {"id": order_id})
    assert lot["reversed_coins"] == 700
    env.verify_ok()


def test_a_won_dispute_frees_the_order_for_a_later_refund(env: EconomyEnv) -> None:
    """A dispute that is won gives everything back; a later partial refund of 300 cents then
    reverses floor(700 × 300 / 749) = 280 coins, as if the dispute had never been.
    """
    env.viewer("fan")
    order = env.service.create_order("fan", "web", "web-700", "simulator", "order-1")
    assert isinstance(order, Applied)
    order_id = order.response["order_id"]
    assert env.service.simulate_payment(order_id).ok
    _notify(env, order_id, PaymentEventKind.DISPUTE_OPENED, 749)
    _notify(env, order_id, PaymentEventKind.DISPUTE_WON, 749)
    _notify(env, order_id, PaymentEventKind.REFUNDED, 300)
    assert env.service.wallet("fan")["coins"] == 700 - 280
    assert _clearing(env) == -749 + 300
    env.verify_ok()
