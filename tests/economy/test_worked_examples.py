"""Worked examples of the economy, written as documentation: every number is on the page.

All amounts are integers in the minor unit of their ledger: COIN in coins, DIAMOND in 1/10,000 of
a diamond (so 350 diamonds are 3,500,000), USD and EUR in cents. The rates are the packaged
default economy file's illustrative ones:

- US web prices carry a card fee of 2.9 % (rounded up) + 30 cents and no tax; in-app prices pay a
  30 % app-store commission (proceeds rounded down); the refund policy is ``debt``.
- Germany (DE) prices include 19 % VAT; the refund policy is ``absorb``.
- Creators get 50 % of gifted coins as diamonds; a diamond is worth half a cent at payout.

Every example runs on SQLite and on PostgreSQL, and ends with ``ledger verify`` passing.
"""

from __future__ import annotations

from dataclasses import dataclass

from economy_env import EconomyEnv
from paypal_server import PayPalServer

from giftflow.economy import accounts as acc
from giftflow.economy.providers import PaymentEvent, PaymentEventKind
from giftflow.economy.service import GiftRequest
from giftflow.ledger import Applied, Failure

CONFETTI = 5585
"""A 100-coin gift of the real catalog: seven of them are the seed's 700-coin gift."""
ROSE = 5655
"""The 1-coin Rose."""



def paid_order(env: EconomyEnv, buyer: str, pack: str, channel: str) -> str:
    """Buy ``pack`` through the simulator; returns the order id."""
    order = env.service.create_order(buyer, channel, pack, "simulator", f"{buyer}-{pack}")
    assert isinstance(order, Applied), order
    assert env.service.simulate_payment(order.response["order_id"]).ok
    return str(order.response["order_id"])


def dispute(env: EconomyEnv, order_id: str, kind: PaymentEventKind, amount: int,
            currency: str) -> Applied:
    """A chargeback notification for the whole order (simulator provider)."""
    result = env.service.handle_payment(PaymentEvent(
        "simulator", f"{kind.value}-{order_id}", kind, order_id, f"sim_{order_id}", amount,
        currency))
    assert isinstance(result, Applied), result
    return result


def confetti(env: EconomyEnv, sender: str, creator: str, count: int, key: str) -> Applied:
    """``count`` Confetti (100 coins each) to ``creator``."""
    result = env.service.send_gift(GiftRequest(sender, creator, CONFETTI, count, "live-1", key))
    assert isinstance(result, Applied), result
    return result


# -- the seed's example: a 700-coin pack and a 700-coin gift --------------------------------------


@dataclass(frozen=True)
class Split:
    """Where the buyer's money went, in the currency's minor unit, and the creator's share."""

    price: int
    store_or_card_fee: int
    tax: int
    platform_net: int
    creator_diamonds: int
    creator_cash_value: int


def seed_example(env: EconomyEnv, region: str, channel: str, provider_fees: acc.AccountKey,
                 currency: str) -> Split:
    """Buy the 700-coin pack on ``channel`` and send seven Confetti (700 coins)."""
    time_zone = "Europe/Berlin" if region == "DE" else "America/New_York"
    env.viewer("fan", region=region, time_zone=time_zone)
    env.creator("star", region=region, time_zone=time_zone)
    paid_order(env, "fan", f"{channel}-700", channel)
    gift = confetti(env, "fan", "star", 7, "seven-confetti")
    value = env.service.economy.region(region).diamonds_to_cash(gift.response["diamonds"])
    env.verify_ok()
    return Split(
        price=-env.balance(acc.provider_clearing(currency, "simulator")),
        store_or_card_fee=env.balance(provider_fees),
        tax=env.balance(acc.tax(currency)),
        platform_net=env.balance(acc.cash(currency)),
        creator_diamonds=env.balance(acc.held("star")),
        creator_cash_value=value.cash_minor,
    )


def test_seed_example_on_the_web(env: EconomyEnv) -> None:
    """Web, US: $7.49 pays a card fee of 52 cents (30 + ceil(749 × 2.9 %) = 30 + 22) and no
    tax, so the platform holds $6.97. The 700 coins give the creator 350 diamonds
    (3,500,000 minor units), worth $1.75 at payout.
    """
    split = seed_example(env, "US", "web", acc.card_fees("USD", "simulator"), "USD")
    assert split == Split(price=749, store_or_card_fee=52, tax=0, platform_net=697,
                          creator_diamonds=3_500_000, creator_cash_value=175)
    assert env.service.wallet("fan")["coins"] == 0


def test_seed_example_in_app(env: EconomyEnv) -> None:
    """In-app (iOS), US: $9.99 pays the store 30 % = $3.00 (proceeds floor(999 × 0.7) = 699),
    no tax; the creator's share is the same 350 diamonds, worth $1.75.
    """
    split = seed_example(env, "US", "ios", acc.store_fees("USD", "simulator"), "USD")
    assert split == Split(price=999, store_or_card_fee=300, tax=0, platform_net=699,
                          creator_diamonds=3_500_000, creator_cash_value=175)


def test_seed_example_in_app_with_german_vat(env: EconomyEnv) -> None:
    """In-app (iOS), Germany: €10.99 contains 19 % VAT, floor(1099 × 1900 / 11900) = €1.75,
    booked to the tax account; the store keeps €3.30 (proceeds floor(1099 × 0.7) = 769), so the
    platform holds €5.94. The creator's 350 diamonds are worth €1.75.
    """
    split = seed_example(env, "DE", "ios", acc.store_fees("EUR", "simulator"), "EUR")
    assert split == Split(price=1099, store_or_card_fee=330, tax=175, platform_net=594,
                          creator_diamonds=3_500_000, creator_cash_value=175)


# -- a Rose train ---------------------------------------------------------------------------------


def test_a_rose_train_of_37_roses(env: EconomyEnv) -> None:
    """37 one-coin Roses, sent as 37 requests and committed together: each is its own
    operation, earning the creator 0.5 diamond (5,000 minor units). Together 18.5 diamonds
    (185,000); at payout that is floor(18.5 × 0.5) = 9 cents, and the half diamond that does not
    make a cent (5,000) would stay in the balance.
    """
    env.viewer("fan")
    env.creator("star")
    paid_order(env, "fan", "web-70", "web")
    train = env.service.send_gifts([GiftRequest("fan", "star", ROSE, 1, "live-1", f"rose-{n}",
                                                streak_id="train-1") for n in range(37)])
    assert [result.ok for result in train] == [True] * 37
    assert {result.response["diamonds"] for result in train if isinstance(result, Applied)} == {
        5_000}
    assert env.service.wallet("fan")["coins"] == 70 - 37
    assert env.service.wallet("star")["diamonds"] == 185_000
    cash = env.service.economy.region("US").diamonds_to_cash(185_000)
    assert (cash.cash_minor, cash.remainder_diamonds_minor) == (9, 5_000)
    env.verify_ok()


# -- chargebacks ----------------------------------------------------------------------------------


def test_chargeback_while_the_creators_diamonds_are_still_held(env: EconomyEnv) -> None:
    """The buyer spends 500 of 700 coins, then charges the $7.49 back. Recovery, in order:
    1. the lot's 200 unspent coins, from the wallet;
    2. the 250 diamonds (2,500,000) the 500 spent coins earned, from the creator's held balance;
    3. nothing is left for the policy. The gifts are marked reversed, the buyer goes on hold, and
    the platform is down the 52-cent card fee (697 − 749 = −52).
    """
    env.viewer("fan")
    env.creator("star")
    order_id = paid_order(env, "fan", "web-700", "web")
    confetti(env, "fan", "star", 5, "five-confetti")
    result = dispute(env, order_id, PaymentEventKind.DISPUTE_OPENED, 749, "USD")
    assert result.response["unspent"] == 200
    assert result.response["recovered_diamonds"] == 2_500_000
    assert result.response["left"] == 0
    assert env.service.wallet("fan") == {
        "coins": 0, "coin_debt": 0, "diamonds_held": 0, "diamonds": 0,
        "diamonds_withdrawable": 0, "diamonds_reserved": 0}
    assert env.service.wallet("star")["diamonds_held"] == 0
    assert env.balance(acc.cash("USD")) == -52
    [gift] = env.store.read("gifts", {"sender_id": "fan"})
    assert (gift["reversed"], gift["reversed_diamonds"]) == (1, 2_500_000)
    assert [row["topic"] for row in env.store.read("outbox", {"topic": "gift_reversed"})] == [
        "gift_reversed"]
    assert env.store.read("risk_holds", {"user_id": "fan"})[0]["rule"] == "chargeback"
    env.verify_ok()


def paid_out_then_charged_back(env: EconomyEnv, region: str, pack: str, price: int,
                               currency: str) -> Applied:
    """Buy 17,500 coins, gift 5,000 (fifty Confetti: 2,500 diamonds), let the hold pass, pay
    the creator $12.50 (or €12.50), then charge the whole purchase back.
    """
    time_zone = "Europe/Berlin" if region == "DE" else "America/New_York"
    env.viewer("fan", region=region, time_zone=time_zone)
    env.creator("star", region=region, time_zone=time_zone)
    order_id = paid_order(env, "fan", pack, "web")
    confetti(env, "fan", "star", 50, "fifty-confetti")
    env.clock.advance(days=8)
    env.release("star")
    payout = env.payouts.request("star", 25_000_000, "simulator", env.totp("star"), "payout-1")
    assert isinstance(payout, Applied), payout
    assert payout.response["cash_minor"] == 1_250
    assert env.payouts.process()[0]["status"] == "paid"
    assert env.service.wallet("star")["diamonds"] == 0
    return dispute(env, order_id, PaymentEventKind.DISPUTE_OPENED, price, currency)


def test_chargeback_after_payout_under_the_debt_policy(env: EconomyEnv) -> None:
    """US (``debt``): the 12,500 unspent coins come back from the wallet, but the 2,500
    diamonds were paid out, so nothing comes back from the creator. The 5,000 coins left become
    the buyer's coin debt, and the next purchase repays it first: a 700-coin pack leaves 0 coins
    and a debt of 4,300.
    """
    result = paid_out_then_charged_back(env, "US", "web-17500", 18_749, "USD")
    assert (result.response["unspent"], result.response["recovered_diamonds"],
            result.response["left"], result.response["policy"]) == (12_500, 0, 5_000, "debt")
    assert env.service.wallet("fan")["coin_debt"] == 5_000
    paid_order(env, "fan", "web-700", "web")
    assert (env.service.wallet("fan")["coins"], env.service.wallet("fan")["coin_debt"]) == (
        0, 4_300)
    assert env.balance(acc.COIN_LOSS) == 0
    env.verify_ok()


def test_chargeback_after_payout_under_the_absorb_policy(env: EconomyEnv) -> None:
    """Germany (``absorb``): the same chargeback books the 5,000 unrecovered coins to
    chargeback loss; the buyer owes nothing. The €206.24 go back to the provider and the €32.92
    of VAT (floor(20624 × 1900 / 11900)) come back from the tax account.
    """
    result = paid_out_then_charged_back(env, "DE", "web-17500", 20_624, "EUR")
    assert (result.response["unspent"], result.response["left"], result.response["policy"]) == (
        12_500, 5_000, "absorb")
    assert env.balance(acc.COIN_LOSS) == -5_000
    assert env.service.wallet("fan")["coin_debt"] == 0
    assert env.balance(acc.tax("EUR")) == 0
    assert env.balance(acc.provider_clearing("EUR", "simulator")) == 0
    env.verify_ok()


def test_a_won_dispute_restores_what_it_took(env: EconomyEnv) -> None:
    """After the held-diamonds chargeback, the platform wins the dispute: the 200 coins go back
    to the wallet, the 2,500,000 diamond units back to the creator's held balance, the gift is
    no longer reversed, and the platform holds its $6.97 again.
    """
    env.viewer("fan")
    env.creator("star")
    order_id = paid_order(env, "fan", "web-700", "web")
    confetti(env, "fan", "star", 5, "five-confetti")
    dispute(env, order_id, PaymentEventKind.DISPUTE_OPENED, 749, "USD")
    won = dispute(env, order_id, PaymentEventKind.DISPUTE_WON, 749, "USD")
    assert won.response["restored"] == 1
    assert env.service.wallet("fan")["coins"] == 200
    assert env.service.wallet("star")["diamonds_held"] == 2_500_000
    assert env.balance(acc.cash("USD")) == 697
    [gift] = env.store.read("gifts", {"sender_id": "fan"})
    assert gift["reversed_diamonds"] == 0
    env.verify_ok()


# -- payouts --------------------------------------------------------------------------------------


def earn(env: EconomyEnv, diamonds_coins: int = 5_000) -> None:
    """A fan gifts ``diamonds_coins`` coins to the creator, and the hold passes."""
    env.viewer("fan")
    env.creator("star")
    paid_order(env, "fan", "web-17500", "web")
    confetti(env, "fan", "star", diamonds_coins // 100, "earnings")
    env.clock.advance(days=8)
    env.release("star")


def test_a_payout_from_request_to_paid(env: EconomyEnv) -> None:
    """The creator asks for 2,500.5 diamonds (25,005,000). The cash is floor(2,500.5 × 0.5) =
    $12.50; the half diamond that makes no cent (5,000) stays in the balance. The 25,000,000
    converted units are reserved (pending) until the provider says paid; then they are posted
    and $12.50 leaves the platform's cash for the payout rail.
    """
    earn(env, 5_100)
    assert env.service.wallet("star")["diamonds"] == 25_500_000
    request = env.payouts.request("star", 25_005_000, "simulator", env.totp("star"), "cash-out")
    assert isinstance(request, Applied), request
    assert (request.response["cash_minor"], request.response["diamonds"],
            request.response["diamonds_kept"]) == (1_250, 25_000_000, 5_000)
    wallet = env.service.wallet("star")
    assert (wallet["diamonds_reserved"], wallet["diamonds_withdrawable"]) == (25_000_000, 500_000)
    [payout] = env.payouts.process()
    assert payout["status"] == "paid"
    wallet = env.service.wallet("star")
    assert (wallet["diamonds"], wallet["diamonds_reserved"]) == (500_000, 0)
    assert env.balance(acc.payout_clearing("USD", "simulator")) == 1_250
    assert env.simulator.paid_count() == 1
    env.verify_ok()




def test_a_payout_that_fails_at_the_provider_returns_to_the_balance(
        env: EconomyEnv, paypal: PayPalServer) -> None:
    """PayPal accepts the $12.50 payout (PENDING), then reports it FAILED: the reservation is
    voided, the 2,500 diamonds are withdrawable again and no cash left the platform.
    """
    earn(env)
    payouts = env.paypal_payouts(paypal)
    request = payouts.request("star", 25_000_000, "paypal", env.totp("star"), "cash-out")
    assert isinstance(request, Applied), request
    assert payouts.process()[0]["status"] == "submitted"
    assert env.service.wallet("star")["diamonds_withdrawable"] == 0
    paypal.set_status(request.response["payout"], "FAILED")
    assert payouts.poll()[0]["status"] == "failed"
    wallet = env.service.wallet("star")
    assert (wallet["diamonds_withdrawable"], wallet["diamonds_reserved"]) == (25_000_000, 0)
    assert env.balance(acc.payout_clearing("USD", "paypal")) == 0
    assert len(paypal.payouts) == 1
    env.verify_ok()


def test_a_paypal_returned_item_is_credited_back_by_a_new_operation(
        env: EconomyEnv, paypal: PayPalServer) -> None:
    """PayPal pays the $12.50 (SUCCESS: posted), then the item comes back RETURNED (unclaimed):
    a new operation credits the 2,500 diamonds back to the creator's available balance and the
    $12.50 back to the platform's cash. The posted transfer is never voided.
    """
    earn(env)
    payouts = env.paypal_payouts(paypal)
    request = payouts.request("star", 25_000_000, "paypal", env.totp("star"), "cash-out")
    assert isinstance(request, Applied), request
    payouts.process()
    paypal.set_status(request.response["payout"], "SUCCESS")
    assert payouts.poll()[0]["status"] == "paid"
    assert env.service.wallet("star")["diamonds"] == 0
    paypal.set_status(request.response["payout"], "RETURNED")
    returned = payouts.check_paid(request.response["payout"])
    assert returned is not None
    assert returned["status"] == "returned"
    assert env.service.wallet("star")["diamonds_withdrawable"] == 25_000_000
    assert env.balance(acc.payout_clearing("USD", "paypal")) == 0
    assert payouts.check_paid(request.response["payout"]) is None  # credited once only
    assert len(paypal.payouts) == 1
    env.verify_ok()


def test_a_refused_payout_names_its_rule(env: EconomyEnv) -> None:
    """$9.99 of diamonds (1,998 diamonds) is under the $10 minimum: ``payout_below_minimum``,
    stored under the key, so the retry gets the same answer and nothing is reserved.
    """
    earn(env)
    first = env.payouts.request("star", 19_980_000, "simulator", env.totp("star"), "small")
    env.clock.advance(ms=30_000)
    again = env.payouts.request("star", 19_980_000, "simulator", env.totp("star"), "small")
    assert isinstance(first, Failure)
    assert isinstance(again, Failure)
    assert (first.code, again.code, again.replayed) == (
        "payout_below_minimum", "payout_below_minimum", True)
    assert env.service.wallet("star")["diamonds_reserved"] == 0
