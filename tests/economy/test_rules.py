"""Every payout, limit, team-budget and age rule, where it holds and where it fails, with its code.

Each test runs on SQLite and on PostgreSQL (the ``env`` fixture). Amounts: in the US a coin
gifted earns half a diamond (5000 diamond minor units) and two diamonds are worth one cent, so
a payout of ``20_000_000`` diamond minor units is 1000 cents, the minimum.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pyotp

from giftflow.adapters.providers.simulator import SimulatorPayouts
from giftflow.economy import accounts as acc
from giftflow.economy import load_catalog, parse_economy
from giftflow.economy.payouts import Payouts
from giftflow.economy.providers import PaymentEvent, PaymentEventKind
from giftflow.economy.service import EconomyOptions, EconomyService, GiftRequest
from giftflow.economy.twofactor import SeedCipher
from giftflow.ledger import Applied, Failure, Ledger

MINIMAL_REGION = Path(__file__).with_name("minimal_region.toml")

DAY_MS = 86_400_000
MIN_PAYOUT = 20_000_000
"""Diamond minor units worth 1000 cents: the US minimum payout."""
TOKYO = "Asia/Tokyo"
NEW_YORK = "America/New_York"


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, *,
       tz: str) -> int:
    """The epoch ms of a local wall-clock time in ``tz``."""
    moment = datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(tz))
    return int(moment.timestamp()) * 1000


def failed(result: object, code: str) -> bool:
    """``result`` is a failure with ``code`` (the assertion message shows what it was)."""
    return isinstance(result, Failure) and result.code == code


def coins_of(env, owner: str) -> int:
    """The posted coin balance of a ledger owner (a user's or a team's wallet)."""
    account = env.service.ledger.account(env.service.ids([acc.wallet(owner)])[0])
    assert account is not None
    return int(account.posted)


def earn(env, creator: str, fan: str, gifts: int = 1) -> None:
    """``fan`` buys ``gifts`` × 7000 coins and gifts them (7000 at a time) to ``creator``.

    Each 7000 coins earn 35_000_000 diamond minor units (1750 cents); none is a large gift.
    """
    if env.service.user(fan) is None:
        env.viewer(fan, region=env.service.user(creator)["region"])
    for index in range(gifts):
        assert env.buy(fan, "web-7000", key=f"earn-{fan}-{index}").ok
        assert env.gift(fan, creator, 1000, 7, key=f"earn-{fan}-{creator}-{index}").ok


def earn_released(env, creator: str, fan: str = "fan", gifts: int = 1) -> None:
    """:func:`earn`, then move past the hold (8 days) and release the diamonds."""
    earn(env, creator, fan, gifts)
    env.clock.advance(days=8)
    assert env.release(creator).ok


def fresh_totp(env, user_id: str) -> str:
    """A code of a time step not used yet (the clock moves one step first)."""
    env.clock.advance(ms=30_000)
    return str(env.totp(user_id))


def wrong_code(env, user_id: str) -> str:
    """Six digits that match neither the current step nor its neighbours."""
    totp = pyotp.TOTP(env.seeds[user_id])
    now_s = env.clock.now_ms // 1000
    near = {totp.at(now_s + delta) for delta in (-30, 0, 30)}
    return next(c for c in (f"{n:06d}" for n in range(1, 10)) if c not in near)


def enrol(env, user_id: str) -> None:
    """Enrol an existing user in two-factor (as ``env.creator`` does)."""
    enrolled = env.service.enroll_two_factor(user_id)
    assert isinstance(enrolled, tuple), enrolled
    env.seeds[user_id] = enrolled[1]
    assert env.service.confirm_two_factor(user_id, env.totp(user_id)) is None
    env.clock.advance(ms=30_000)


def custom_env(env, **region: str):
    """``env`` over a one-region economy ``XX`` (the minimal region with ``region`` set).

    The region sells a ``web-7000`` pack as well, so that creators can earn payouts quickly.
    """
    text = MINIMAL_REGION.read_text(encoding="utf-8")
    for name, value in region.items():
        text, replaced = re.subn(rf"^{name} = .*$", f"{name} = {value}", text, flags=re.MULTILINE)
        if not replaced:
            text = text.replace("\n[regions.XX.packs]", f"{name} = {value}\n\n[regions.XX.packs]")
    text = text.replace('web = [{ id = "web-70", coins = 70, price_minor = 74 }]',
                        'web = [{ id = "web-70", coins = 70, price_minor = 74 },\n'
                        '       { id = "web-7000", coins = 7000, price_minor = 7499 }]')
    economy = parse_economy(text)
    simulator = SimulatorPayouts()
    service = EconomyService(env.store, Ledger(env.store, clock_ms=env.clock), economy,
                             load_catalog(), cipher=SeedCipher(SeedCipher.generate_key()),
                             options=EconomyOptions(demo_mode=True), clock_ms=env.clock)
    return dataclasses.replace(env, service=service, simulator=simulator,
                               payouts=Payouts(service, {"simulator": simulator}), seeds={})


def pay(env, creator: str, diamonds: int, key: str, totp: str | None = "fresh"):
    """Request a payout through the simulator with a fresh two-factor code (or ``totp``)."""
    code = fresh_totp(env, creator) if totp == "fresh" else totp
    return env.payouts.request(creator, diamonds, "simulator", code, key)


# -- payouts ---------------------------------------------------------------------------------------


def test_payout_minimum_holds_at_the_minimum_and_fails_one_cent_below(env) -> None:
    """A payout worth exactly the region's minimum is reserved; one cent less is
    ``payout_below_minimum`` and reserves nothing.
    """
    env.creator("cr")
    earn_released(env, "cr")
    below = pay(env, "cr", MIN_PAYOUT - 1, "p-below")
    assert failed(below, "payout_below_minimum"), below
    assert env.service.wallet("cr")["diamonds_reserved"] == 0
    done = pay(env, "cr", MIN_PAYOUT, "p-min")
    assert isinstance(done, Applied), done
    assert done.response["cash_minor"] == 1000
    wallet = env.service.wallet("cr")
    assert wallet["diamonds_reserved"] == MIN_PAYOUT
    assert wallet["diamonds_withdrawable"] == 35_000_000 - MIN_PAYOUT
    env.verify_ok()


def test_payout_daily_maximum_counts_paid_payouts_of_the_local_day(env) -> None:
    """Up to the daily maximum passes; a payout past it the same local day (a new UTC day) is
    ``payout_daily_max``; just after local midnight the day starts afresh.
    """
    xx = custom_env(env, payout_daily_max_minor="2000")
    xx.creator("cr", region="XX", time_zone=NEW_YORK)
    earn_released(xx, "cr", gifts=2)  # 3500 cents
    xx.clock.now_ms = at(2026, 1, 9, 10, tz=NEW_YORK)
    first = pay(xx, "cr", MIN_PAYOUT, "p1")
    assert isinstance(first, Applied), first
    assert [row["status"] for row in xx.payouts.process()] == ["paid"]
    second = pay(xx, "cr", MIN_PAYOUT, "p2")  # 1000 + 1000 == the maximum
    assert isinstance(second, Applied), second
    assert [row["status"] for row in xx.payouts.process()] == ["paid"]
    xx.clock.now_ms = at(2026, 1, 9, 23, 59, tz=NEW_YORK)  # 04:59 UTC on 10 January
    over = pay(xx, "cr", MIN_PAYOUT, "p3")
    assert failed(over, "payout_daily_max"), over
    xx.clock.now_ms = at(2026, 1, 10, 0, 0, 30, tz=NEW_YORK)
    next_day = pay(xx, "cr", MIN_PAYOUT, "p4")
    assert isinstance(next_day, Applied), next_day
    xx.verify_ok()


def test_payout_daily_maximum_counts_open_payouts_too(env) -> None:
    """A requested (not yet paid) payout counts against the daily maximum as well."""
    xx = custom_env(env, payout_daily_max_minor="1500")
    xx.creator("cr", region="XX")
    earn_released(xx, "cr")
    assert isinstance(pay(xx, "cr", MIN_PAYOUT, "p1"), Applied)
    over = pay(xx, "cr", MIN_PAYOUT, "p2")
    assert failed(over, "payout_daily_max"), over
    xx.verify_ok()


def test_payout_needs_an_adult_creator_in_their_own_time_zone(env) -> None:
    """A creator who turns 18 tomorrow (local date) is ``payout_underage``; on their
    birthday the payout passes.
    """
    env.creator("young", born=date(2008, 1, 9), time_zone=NEW_YORK)
    earn_released(env, "young")
    env.clock.now_ms = at(2026, 1, 8, 23, 59, tz=NEW_YORK)  # 9 January in UTC already
    refused = pay(env, "young", MIN_PAYOUT, "p-young")
    assert failed(refused, "payout_underage"), refused
    env.clock.now_ms = at(2026, 1, 9, 0, 0, 30, tz=NEW_YORK)
    done = pay(env, "young", MIN_PAYOUT, "p-adult")
    assert isinstance(done, Applied), done
    env.verify_ok()


def test_payout_needs_verified_kyc(env) -> None:
    """A creator whose identity is pending gets ``kyc_required``; once verified, the payout
    passes.
    """
    env.creator("cr", kyc_status="pending")
    earn_released(env, "cr")
    refused = pay(env, "cr", MIN_PAYOUT, "p1")
    assert failed(refused, "kyc_required"), refused
    assert env.service.set_user_fields("cr", {"kyc_status": "verified"})
    done = pay(env, "cr", MIN_PAYOUT, "p2")
    assert isinstance(done, Applied), done
    env.verify_ok()


def test_payout_needs_a_region_that_allows_payouts(env) -> None:
    """In a region with ``payouts_allowed = false`` a payout is ``payouts_not_allowed``; the
    same region with payouts allowed pays.
    """
    closed = custom_env(env, payouts_allowed="false")
    closed.creator("cr", region="XX")
    earn_released(closed, "cr")
    refused = pay(closed, "cr", MIN_PAYOUT, "p1")
    assert failed(refused, "payouts_not_allowed"), refused
    assert closed.service.wallet("cr")["diamonds_reserved"] == 0
    opened = custom_env(env)
    opened.seeds.update(closed.seeds)
    opened.service.cipher = closed.service.cipher
    done = pay(opened, "cr", MIN_PAYOUT, "p2")
    assert isinstance(done, Applied), done
    env.verify_ok()


def test_payout_two_factor_missing_wrong_reused_and_not_enrolled(env) -> None:
    """No code is ``two_factor_required``, a wrong one ``two_factor_invalid``, a code used
    once ``two_factor_reused``, and a creator without two-factor ``two_factor_not_enrolled``.
    """
    env.creator("cr")
    earn_released(env, "cr")
    missing = pay(env, "cr", MIN_PAYOUT, "p1", totp=None)
    assert failed(missing, "two_factor_required"), missing
    wrong = pay(env, "cr", MIN_PAYOUT, "p2", totp=wrong_code(env, "cr"))
    assert failed(wrong, "two_factor_invalid"), wrong
    code = fresh_totp(env, "cr")
    assert isinstance(pay(env, "cr", MIN_PAYOUT, "p3", totp=code), Applied)
    reused = pay(env, "cr", MIN_PAYOUT, "p4", totp=code)
    assert failed(reused, "two_factor_reused"), reused
    assert env.service.wallet("cr")["diamonds_reserved"] == MIN_PAYOUT
    env.creator("plain", two_factor=False)
    earn_released(env, "plain", fan="fan2")
    unenrolled = env.payouts.request("plain", MIN_PAYOUT, "simulator", "123456", "p5")
    assert failed(unenrolled, "two_factor_not_enrolled"), unenrolled
    env.verify_ok()


def test_refused_two_factor_code_is_not_stored_under_the_key(env) -> None:
    """After a wrong code, the same idempotency key with a good code reserves the payout, and
    a further retry replays it.
    """
    env.creator("cr")
    earn_released(env, "cr")
    wrong = pay(env, "cr", MIN_PAYOUT, "same-key", totp=wrong_code(env, "cr"))
    assert failed(wrong, "two_factor_invalid"), wrong
    assert not wrong.stored  # type: ignore[union-attr]
    done = pay(env, "cr", MIN_PAYOUT, "same-key")
    assert isinstance(done, Applied), done
    assert not done.replayed
    again = pay(env, "cr", MIN_PAYOUT, "same-key")
    assert isinstance(again, Applied), again
    assert again.replayed
    assert again.response == done.response
    assert env.service.wallet("cr")["diamonds_reserved"] == MIN_PAYOUT
    env.verify_ok()


def test_stored_business_refusal_replays_on_retry(env) -> None:
    """A ``kyc_required`` refusal is stored under its key: after KYC passes, the same key
    still answers ``kyc_required`` (replayed) while a new key pays.
    """
    env.creator("cr", kyc_status="pending")
    earn_released(env, "cr")
    first = pay(env, "cr", MIN_PAYOUT, "k1")
    assert failed(first, "kyc_required"), first
    assert first.stored  # type: ignore[union-attr]
    assert env.service.set_user_fields("cr", {"kyc_status": "verified"})
    retry = pay(env, "cr", MIN_PAYOUT, "k1")
    assert failed(retry, "kyc_required"), retry
    assert retry.replayed  # type: ignore[union-attr]
    assert env.service.wallet("cr")["diamonds_reserved"] == 0
    assert isinstance(pay(env, "cr", MIN_PAYOUT, "k2"), Applied)
    env.verify_ok()


def test_chargeback_on_the_creators_own_purchase_holds_payouts_until_review(env) -> None:
    """A chargeback on a purchase of the creator opens a risk hold: payouts are
    ``risk_hold`` until a reviewer releases it, then they pass.
    """
    env.creator("cr")
    earn_released(env, "cr")
    order = env.service.create_order("cr", "web", "web-70", "simulator", "own-order")
    assert isinstance(order, Applied), order
    order_id = str(order.response["order_id"])
    assert env.service.simulate_payment(order_id).ok
    dispute = env.service.handle_payment(PaymentEvent(
        "simulator", "evt-dispute", PaymentEventKind.DISPUTE_OPENED, order_id,
        f"sim_{order_id}", 74, "USD"))
    assert dispute.ok, dispute
    refused = pay(env, "cr", MIN_PAYOUT, "p1")
    assert failed(refused, "risk_hold"), refused
    [hold] = env.payouts.review_queue()
    assert hold["user_id"] == "cr"
    assert hold["rule"] == "chargeback"
    assert env.payouts.review(hold["id"], "reviewer-1", release=True)
    done = pay(env, "cr", MIN_PAYOUT, "p2")
    assert isinstance(done, Applied), done
    env.verify_ok()


def test_large_gift_from_a_new_account_holds_but_from_an_old_one_does_not(env) -> None:
    """A 10,000-coin gift from an account younger than 7 days puts the creator on
    ``risk_hold``; the same gift from an older account does not.
    """
    env.creator("cr-a")
    env.creator("cr-b")
    env.viewer("old")
    env.clock.advance(days=7)
    env.viewer("new")
    for fan in ("old", "new"):
        assert env.buy(fan, "web-7000", key=f"{fan}-1").ok
        assert env.buy(fan, "web-3500", key=f"{fan}-2").ok
    assert env.gift("old", "cr-a", 10000, 1, key="g-old").ok
    assert env.gift("new", "cr-b", 10000, 1, key="g-new").ok
    env.clock.advance(days=8)
    assert env.release("cr-a").ok
    assert env.release("cr-b").ok
    held = pay(env, "cr-b", MIN_PAYOUT, "p-b")
    assert failed(held, "risk_hold"), held
    assert [h["rule"] for h in env.payouts.review_queue()] == ["large_gift_new_account"]
    done = pay(env, "cr-a", MIN_PAYOUT, "p-a")
    assert isinstance(done, Applied), done
    env.verify_ok()


def test_payout_needs_withdrawable_diamonds(env) -> None:
    """Held (unreleased) diamonds and more than the available balance are
    ``insufficient_diamonds``; the whole available balance passes.
    """
    env.creator("cr")
    earn(env, "cr", "fan")
    still_held = pay(env, "cr", MIN_PAYOUT, "p1")
    assert failed(still_held, "insufficient_diamonds"), still_held
    env.clock.advance(days=8)
    assert env.release("cr").ok
    too_much = pay(env, "cr", 35_000_000 + 20_000, "p2")
    assert failed(too_much, "insufficient_diamonds"), too_much
    done = pay(env, "cr", 35_000_000, "p3")
    assert isinstance(done, Applied), done
    assert env.service.wallet("cr")["diamonds_withdrawable"] == 0
    env.verify_ok()


def test_frozen_creator_cannot_pay_out(env) -> None:
    """A frozen creator gets ``account_frozen``; unfrozen, the payout passes."""
    env.creator("cr")
    earn_released(env, "cr")
    assert env.service.set_user_fields("cr", {"frozen": 1})
    refused = pay(env, "cr", MIN_PAYOUT, "p1")
    assert failed(refused, "account_frozen"), refused
    assert env.service.set_user_fields("cr", {"frozen": 0})
    assert isinstance(pay(env, "cr", MIN_PAYOUT, "p2"), Applied)
    env.verify_ok()


def test_unknown_payout_method(env) -> None:
    """A method that is not configured is ``unknown_payout_method``; ``simulator`` passes."""
    env.creator("cr")
    earn_released(env, "cr")
    refused = env.payouts.request("cr", MIN_PAYOUT, "paypal", fresh_totp(env, "cr"), "p1")
    assert failed(refused, "unknown_payout_method"), refused
    assert isinstance(pay(env, "cr", MIN_PAYOUT, "p1"), Applied)
    env.verify_ok()


# -- spending limits -------------------------------------------------------------------------------


def test_purchase_limit_daily_is_a_local_calendar_day(env) -> None:
    """Orders up to the daily purchase limit pass, the next one that day is
    ``purchase_limit_daily``, and after local midnight (Tokyo) orders pass again.
    """
    env.viewer("v", time_zone=TOKYO)
    assert env.service.set_limit("v", "purchased_daily", 1400)["amount"] == 1400  # type: ignore[index]
    env.clock.now_ms = at(2026, 1, 5, 23, 58, tz=TOKYO)
    assert env.buy("v", "web-700", key="o1").ok
    assert env.buy("v", "web-700", key="o2").ok
    env.clock.advance(ms=60_000)
    refused = env.buy("v", "web-70", key="o3")
    assert failed(refused, "purchase_limit_daily"), refused
    env.clock.now_ms = at(2026, 1, 6, 0, 0, 30, tz=TOKYO)  # the same UTC day (15:00Z)
    assert env.buy("v", "web-700", key="o4").ok
    assert env.service.wallet("v")["coins"] == 2100
    env.verify_ok()


def test_purchase_limit_monthly_is_a_local_calendar_month(env) -> None:
    """Orders up to the monthly purchase limit pass on different days, the next one that
    month is ``purchase_limit_monthly``, and on the 1st of the next local month they pass.
    """
    env.viewer("v", time_zone=TOKYO)
    assert isinstance(env.service.set_limit("v", "purchased_monthly", 2100), dict)
    for day in (2, 15, 31):
        env.clock.now_ms = at(2026, 1, day, 12, tz=TOKYO)
        assert env.buy("v", "web-700", key=f"o{day}").ok
    env.clock.now_ms = at(2026, 1, 31, 23, 59, tz=TOKYO)
    refused = env.buy("v", "web-70", key="o-late")
    assert failed(refused, "purchase_limit_monthly"), refused
    env.clock.now_ms = at(2026, 2, 1, 0, 0, 30, tz=TOKYO)  # still 31 January in UTC
    assert env.buy("v", "web-700", key="o-feb").ok
    env.verify_ok()


def test_gift_limit_daily_splits_at_local_midnight(env) -> None:
    """Gifts up to the daily gift limit pass; one more that local day is
    ``gift_limit_daily``; a gift just after local midnight (the same UTC day) passes.
    """
    env.viewer("v", time_zone=TOKYO)
    env.creator("cr")
    assert env.buy("v", "web-700", key="o1").ok
    assert isinstance(env.service.set_limit("v", "gifted_daily", 100), dict)
    env.clock.now_ms = at(2026, 1, 2, 23, 59, tz=TOKYO)
    assert env.gift("v", "cr", 100, 1, key="g1").ok
    env.clock.advance(ms=30_000)
    refused = env.gift("v", "cr", 1, 1, key="g2")
    assert failed(refused, "gift_limit_daily"), refused
    env.clock.now_ms = at(2026, 1, 3, 0, 0, 30, tz=TOKYO)
    assert env.gift("v", "cr", 100, 1, key="g3").ok
    assert env.service.wallet("v")["coins"] == 500
    env.verify_ok()


def test_gift_limit_monthly_splits_at_the_local_month(env) -> None:
    """Gifts up to the monthly gift limit pass; one more that local month is
    ``gift_limit_monthly``; on the 1st of the next local month gifts pass again.
    """
    env.viewer("v", time_zone=TOKYO)
    env.creator("cr")
    assert env.buy("v", "web-700", key="o1").ok
    assert isinstance(env.service.set_limit("v", "gifted_monthly", 300), dict)
    env.clock.now_ms = at(2026, 1, 10, tz=TOKYO)
    assert env.gift("v", "cr", 100, 2, key="g1").ok
    env.clock.now_ms = at(2026, 1, 31, 23, 59, tz=TOKYO)
    assert env.gift("v", "cr", 100, 1, key="g2").ok
    refused = env.gift("v", "cr", 1, 1, key="g3")
    assert failed(refused, "gift_limit_monthly"), refused
    env.clock.now_ms = at(2026, 2, 1, 0, 0, 30, tz=TOKYO)
    assert env.gift("v", "cr", 100, 3, key="g4").ok
    env.verify_ok()


def test_limit_decrease_applies_at_once_without_two_factor(env) -> None:
    """Lowering a limit needs no code and refuses the next gift over the new limit at once."""
    env.viewer("v")
    env.creator("cr")
    assert env.buy("v", "web-700", key="o1").ok
    assert isinstance(env.service.set_limit("v", "gifted_daily", 500), dict)
    assert env.gift("v", "cr", 100, 4, key="g1").ok
    lowered = env.service.set_limit("v", "gifted_daily", 450)
    assert lowered == {"metric": "gifted_daily", "amount": 450, "pending_amount": None,
                       "pending_effective_at_ms": None}
    refused = env.gift("v", "cr", 100, 1, key="g2")
    assert failed(refused, "gift_limit_daily"), refused
    assert env.gift("v", "cr", 10, 5, key="g3").ok
    env.verify_ok()


def test_limit_increase_needs_two_factor_and_waits_for_the_cooling_off(env) -> None:
    """Raising a limit is ``two_factor_required`` without a code, ``two_factor_invalid``
    with a wrong one, and with a good code applies only after 24 h: just before, the old
    limit still refuses (``gift_limit_daily``); after, the gift passes.
    """
    env.viewer("v", time_zone=TOKYO)
    enrol(env, "v")
    env.creator("cr")
    assert env.buy("v", "web-700", key="o1").ok
    assert isinstance(env.service.set_limit("v", "gifted_daily", 100), dict)
    missing = env.service.set_limit("v", "gifted_daily", 300)
    assert failed(missing, "two_factor_required"), missing
    wrong = env.service.set_limit("v", "gifted_daily", 300, wrong_code(env, "v"))
    assert failed(wrong, "two_factor_invalid"), wrong
    raised = env.service.set_limit("v", "gifted_daily", 300, fresh_totp(env, "v"))
    asked_at = env.clock.now_ms
    assert raised == {"metric": "gifted_daily", "amount": 100, "pending_amount": 300,
                      "pending_effective_at_ms": asked_at + DAY_MS}
    assert env.gift("v", "cr", 100, 1, key="g1").ok
    same_day = env.gift("v", "cr", 1, 1, key="g2")
    assert failed(same_day, "gift_limit_daily"), same_day
    env.clock.now_ms = asked_at + DAY_MS - 1000  # a new local day, the old limit still in force
    early = env.gift("v", "cr", 100, 2, key="g3")
    assert failed(early, "gift_limit_daily"), early
    env.clock.now_ms = asked_at + DAY_MS
    assert env.gift("v", "cr", 100, 2, key="g4").ok
    env.verify_ok()


def test_limit_removal_needs_two_factor_and_unenrolled_users_cannot_raise(env) -> None:
    """Removing a limit is an increase (``two_factor_required``), and a user without
    two-factor cannot raise one (``two_factor_not_enrolled``); lowering still works.
    """
    env.creator("cr")
    assert isinstance(env.service.set_limit("cr", "purchased_monthly", 1000), dict)
    removal = env.service.set_limit("cr", "purchased_monthly", None)
    assert failed(removal, "two_factor_required"), removal
    removed = env.service.set_limit("cr", "purchased_monthly", None, fresh_totp(env, "cr"))
    assert isinstance(removed, dict)
    assert removed["pending_amount"] is None
    env.viewer("v")
    assert isinstance(env.service.set_limit("v", "purchased_daily", 700), dict)
    raised = env.service.set_limit("v", "purchased_daily", 1400, "123456")
    assert failed(raised, "two_factor_not_enrolled"), raised


def test_region_default_limits_apply_when_the_user_set_none(env) -> None:
    """In DE (35,000 coins a day, 175,000 a month, bought and gifted) orders and gifts up
    to the defaults pass and the next are refused with the daily, then the monthly code.
    """
    env.viewer("v", region="DE", time_zone="Europe/Berlin")
    env.creator("cr", region="DE", time_zone="Europe/Berlin")
    env.clock.now_ms = at(2026, 3, 1, 10, tz="Europe/Berlin")
    for day in range(5):
        assert env.buy("v", "web-17500", key=f"o{day}a").ok
        assert env.buy("v", "web-17500", key=f"o{day}b").ok
        assert env.gift("v", "cr", 5000, 7, key=f"g{day}").ok
        if day == 0:
            daily_buy = env.buy("v", "web-70", key="o-over")
            assert failed(daily_buy, "purchase_limit_daily"), daily_buy
            daily_gift = env.gift("v", "cr", 1, 1, key="g-over")
            assert failed(daily_gift, "gift_limit_daily"), daily_gift
        env.clock.advance(days=1)
    monthly_buy = env.buy("v", "web-70", key="o-month")
    assert failed(monthly_buy, "purchase_limit_monthly"), monthly_buy
    monthly_gift = env.gift("v", "cr", 1, 1, key="g-month")
    assert failed(monthly_gift, "gift_limit_monthly"), monthly_gift
    raise_default = env.service.set_limit("v", "gifted_daily", 50_000)
    assert failed(raise_default, "two_factor_not_enrolled"), raise_default
    env.verify_ok()


# -- team budgets ----------------------------------------------------------------------------------


def team_with_coins(env, coins_pack: str = "web-700") -> None:
    """Team ``acme`` owned by ``boss``, who buys ``coins_pack`` for its wallet."""
    env.viewer("boss")
    env.creator("cr")
    assert env.service.create_team("acme", "boss", "Acme") is None
    order = env.service.create_order("boss", "web", coins_pack, "simulator", "team-order",
                                     team_id="acme")
    assert isinstance(order, Applied), order
    assert env.service.simulate_payment(str(order.response["order_id"])).ok


def team_gift(env, sender: str, coins: int, key: str):
    """``sender`` sends creator ``cr`` one gift worth ``coins``, paid by team ``acme``."""
    gift = next(g for g in env.service.catalog if g.coin_value == coins)
    return env.service.send_gift(GiftRequest(sender, "cr", gift.id, 1, "stream-1", key,
                                             team_id="acme"))


def test_team_budgets_daily_and_monthly_come_from_the_team_wallet(env) -> None:
    """A member gifts from the team wallet within their budgets: past the daily budget is
    ``team_budget_daily``, past the monthly one ``team_budget_monthly``; the member's own
    wallet is untouched, and a new day and month reset the budgets.
    """
    team_with_coins(env)
    assert coins_of(env, acc.owner_of_team("acme")) == 700
    assert env.service.wallet("boss")["coins"] == 0
    env.clock.now_ms = at(2026, 1, 10, 12, tz=NEW_YORK)
    env.viewer("m")
    assert env.service.set_member("acme", "m", budget_daily_coins=300,
                                  budget_monthly_coins=400) is None
    assert team_gift(env, "m", 300, "t1").ok
    assert coins_of(env, acc.owner_of_team("acme")) == 400
    assert env.service.wallet("m")["coins"] == 0
    daily = team_gift(env, "m", 1, "t2")
    assert failed(daily, "team_budget_daily"), daily
    env.clock.advance(days=1)
    assert team_gift(env, "m", 100, "t3").ok
    monthly = team_gift(env, "m", 1, "t4")
    assert failed(monthly, "team_budget_monthly"), monthly
    env.clock.now_ms = at(2026, 2, 1, 12, tz=NEW_YORK)
    assert team_gift(env, "m", 300, "t5").ok
    assert coins_of(env, acc.owner_of_team("acme")) == 0
    env.clock.advance(days=1)
    exhausted = team_gift(env, "m", 1, "t6")
    assert failed(exhausted, "insufficient_coins"), exhausted
    env.verify_ok()


def test_only_members_gift_and_only_the_owner_buys_for_a_team(env) -> None:
    """A non-member's team gift is ``not_team_member`` and so is a non-owner's team order."""
    team_with_coins(env)
    env.viewer("outsider")
    refused = team_gift(env, "outsider", 1, "t1")
    assert failed(refused, "not_team_member"), refused
    order = env.service.create_order("outsider", "web", "web-700", "simulator", "o1",
                                     team_id="acme")
    assert failed(order, "not_team_member"), order
    assert coins_of(env, acc.owner_of_team("acme")) == 700
    env.verify_ok()


def test_members_personal_gift_limit_applies_to_team_gifts(env) -> None:
    """Within the team budget, a member's own daily gift limit still refuses
    (``gift_limit_daily``).
    """
    team_with_coins(env)
    env.viewer("m")
    assert env.service.set_member("acme", "m", budget_daily_coins=700) is None
    assert isinstance(env.service.set_limit("m", "gifted_daily", 100), dict)
    refused = team_gift(env, "m", 300, "t1")
    assert failed(refused, "gift_limit_daily"), refused
    assert team_gift(env, "m", 100, "t2").ok
    assert coins_of(env, acc.owner_of_team("acme")) == 600
    env.verify_ok()


# -- gift eligibility ------------------------------------------------------------------------------


def test_gift_sender_must_be_of_age_on_the_local_date(env) -> None:
    """A sender turning 18 on 1 January is ``underage`` at 23:00 on 31 December in New York
    (already 1 January in UTC) and passes from local midnight; 18 today passes.
    """
    env.creator("cr")
    env.viewer("teen", born=date(2008, 1, 1), time_zone=NEW_YORK)
    env.viewer("exact", born=date(2007, 12, 31), time_zone=NEW_YORK)
    for user in ("teen", "exact"):
        assert env.buy(user, "web-70", key=f"o-{user}").ok
    env.clock.now_ms = at(2025, 12, 31, 23, tz=NEW_YORK)
    assert env.gift("exact", "cr", 1, 1, key="g-exact").ok
    refused = env.gift("teen", "cr", 1, 1, key="g-teen")
    assert failed(refused, "underage"), refused
    assert env.service.wallet("teen")["coins"] == 70
    env.clock.now_ms = at(2026, 1, 1, 0, 0, 30, tz=NEW_YORK)
    assert env.gift("teen", "cr", 1, 1, key="g-teen-2").ok
    env.verify_ok()


def test_leap_day_birthday_comes_of_age_on_the_first_of_march(env) -> None:
    """A sender born on 29 February 2008 is ``underage`` on 28 February 2026 and 18 on
    1 March.
    """
    env.creator("cr")
    env.viewer("leap", born=date(2008, 2, 29), time_zone=TOKYO)
    assert env.buy("leap", "web-70", key="o1").ok
    env.clock.now_ms = at(2026, 2, 28, 23, 59, tz=TOKYO)
    refused = env.gift("leap", "cr", 1, 1, key="g1")
    assert failed(refused, "underage"), refused
    env.clock.now_ms = at(2026, 3, 1, 0, 0, 30, tz=TOKYO)
    assert env.gift("leap", "cr", 1, 1, key="g2").ok
    env.verify_ok()


def test_self_gift_is_refused(env) -> None:
    """A creator gifting to themselves is ``self_gift``; to another creator it passes."""
    env.creator("cr")
    env.creator("other")
    assert env.buy("cr", "web-70", key="o1").ok
    refused = env.gift("cr", "cr", 1, 1, key="g1")
    assert failed(refused, "self_gift"), refused
    assert env.gift("cr", "other", 1, 1, key="g2").ok
    env.verify_ok()


def test_gift_count_above_the_region_maximum_is_refused(env) -> None:
    """``count`` above the region's ``gift_count_max`` (10,000) is ``gift_count_exceeded``;
    exactly the maximum passes.
    """
    env.creator("cr")
    env.viewer("v")
    assert env.buy("v", "web-7000", key="o1").ok
    assert env.buy("v", "web-3500", key="o2").ok
    refused = env.gift("v", "cr", 1, 10_001, key="g1")
    assert failed(refused, "gift_count_exceeded"), refused
    assert env.service.wallet("v")["coins"] == 10_500
    assert env.gift("v", "cr", 1, 10_000, key="g2").ok
    assert env.service.wallet("v")["coins"] == 500
    env.verify_ok()


def test_video_gift_needs_a_payout_eligible_creator(env) -> None:
    """A video gift to a creator whose KYC is not verified is ``creator_not_eligible``; to a
    verified adult creator it passes (and a stream gift to the unverified one passes).
    """
    env.creator("unverified", kyc_status="pending")
    env.creator("cr")
    env.viewer("v")
    assert env.buy("v", "web-70", key="o1").ok
    refused = env.gift("v", "unverified", 1, 1, key="g1", target_kind="video")
    assert failed(refused, "creator_not_eligible"), refused
    assert env.gift("v", "cr", 1, 1, key="g2", target_kind="video").ok
    assert env.gift("v", "unverified", 1, 1, key="g3").ok
    env.creator("minor", born=date(2010, 1, 1))
    underage = env.gift("v", "minor", 1, 1, key="g4", target_kind="video")
    assert failed(underage, "creator_not_eligible"), underage
    env.verify_ok()


def test_region_without_video_gifts_and_disabled_gifts(env) -> None:
    """In a region with ``video_gifts_allowed = false`` a video gift is
    ``video_gifts_not_allowed``, a gift in ``disabled_gifts`` is ``gift_disabled``, a gift to a
    viewer is ``not_a_creator``; other stream gifts pass.
    """
    one_coin = [g.id for g in load_catalog() if g.coin_value == 1]
    xx = custom_env(env, video_gifts_allowed="false", disabled_gifts=f"[{one_coin[0]}]")
    xx.creator("cr", region="XX")
    xx.viewer("v", region="XX")
    xx.viewer("v2", region="XX")
    assert xx.buy("v", "web-70", key="o1").ok
    video = xx.gift("v", "cr", 5, 1, key="g1", target_kind="video")
    assert failed(video, "video_gifts_not_allowed"), video
    disabled = xx.gift("v", "cr", 1, 1, key="g2")
    assert failed(disabled, "gift_disabled"), disabled
    to_viewer = xx.gift("v", "v2", 5, 1, key="g3")
    assert failed(to_viewer, "not_a_creator"), to_viewer
    assert xx.service.wallet("v")["coins"] == 70
    other = next(g for g in xx.service.catalog if g.coin_value == 1 and g.id != one_coin[0])
    sent = xx.service.send_gift(GiftRequest("v", "cr", other.id, 1, "stream-1", "g4"))
    assert sent.ok, sent
    assert xx.gift("v", "cr", 5, 1, key="g5").ok
    xx.verify_ok()


def test_insufficient_coins_moves_nothing(env) -> None:
    """A gift costing more than the wallet is ``insufficient_coins`` and moves nothing; the
    whole wallet passes.
    """
    env.creator("cr")
    env.viewer("v")
    assert env.buy("v", "web-700", key="o1").ok
    before_v, before_cr = env.service.wallet("v"), env.service.wallet("cr")
    refused = env.gift("v", "cr", 1, 701, key="g1")
    assert failed(refused, "insufficient_coins"), refused
    assert env.service.wallet("v") == before_v
    assert env.service.wallet("cr") == before_cr
    env.verify_ok()
    assert env.gift("v", "cr", 1, 700, key="g2").ok
    assert env.service.wallet("v")["coins"] == 0
    assert env.service.wallet("cr")["diamonds_held"] == 3_500_000
    env.verify_ok()
