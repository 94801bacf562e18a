"""A seeded random economy simulation on SQLite and on PostgreSQL (Economy issue, point 4).

About 10,000 mixed operations (purchases, gifts singly and in batches, partial refunds,
chargebacks opened, won and lost, payouts through a provider that fails, answers late, loses
answers and returns paid payouts, limit changes, releases) run against the real service. The test
keeps its own tally of the cash each step moved, computed from the region's rate helpers and the
pro-rata rules of :mod:`giftflow.economy.reversals`, and checks the ledger's named accounts against
it at the end. Every few hundred operations it checks that the platform's liability (unspent
coins at the net cash their lots brought in, plus creators' unpaid diamonds at their value) never
exceeds the cash it holds. ``GIFTFLOW_SIM_SEED`` replays a run; every message names the seed.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from giftflow.adapters.providers.simulator import SimulatorPayouts
from giftflow.economy import accounts as acc
from giftflow.economy import codes
from giftflow.economy.config import Region
from giftflow.economy.payouts import Payouts
from giftflow.economy.providers import (
    PaymentEvent,
    PaymentEventKind,
    PayoutRequest,
    PayoutState,
    PayoutStatus,
    ProviderFailure,
)
from giftflow.economy.reports import liability_report
from giftflow.economy.service import GiftRequest
from giftflow.ledger import Applied, Failure, Result

log = logging.getLogger(__name__)
SEED = int(os.environ.get("GIFTFLOW_SIM_SEED", "20260104"))
OPERATIONS = 10_000
CHECK_EVERY = 500
"""Operations between two liability checks."""
REGIONS = {"US": ("USD", "America/New_York"), "DE": ("EUR", "Europe/Berlin")}
VIEWERS_PER_REGION = 10
CREATORS_PER_REGION = 3
METHODS = ("simulator", "flaky")
GIFT_VALUES = (1, 1, 5, 10, 30, 99, 100, 199)
PACKS = ("70", "350", "700", "1400", "1400", "3500", "7000")
CHANNELS = ("web", "web", "ios", "android")

GIFT_REFUSALS = frozenset({codes.INSUFFICIENT_COINS, codes.GIFT_LIMIT_DAILY,
                           codes.GIFT_LIMIT_MONTHLY})
ORDER_REFUSALS = frozenset({codes.PURCHASE_LIMIT_DAILY, codes.PURCHASE_LIMIT_MONTHLY})
PAYOUT_REFUSALS = frozenset({codes.PAYOUT_BELOW_MINIMUM, codes.PAYOUT_DAILY_MAX})


class FlakyPayouts:
    """A payout provider that loses calls, fails payouts and answers ``PENDING`` for a while.

    It wraps the simulator, which keeps the provider's truth: what it received and each payout's
    final status. ``unavailable`` before sending means the provider never got the payout;
    ``unavailable`` after sending means it did and the answer was lost.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.calls: Counter[tuple[str, str]] = Counter()
        self.inner = SimulatorPayouts("flaky")

    def roll(self, request: PayoutRequest, call: str) -> float:
        """A draw of its own per payout and call, so that the order of calls changes nothing."""
        self.calls[request.payout_id, call] += 1
        count = self.calls[request.payout_id, call]
        return random.Random(f"{self.seed}:{request.payout_id}:{call}:{count}").random()

    @property
    def name(self) -> str:
        """The method name."""
        return self.inner.name

    def submit(self, request: PayoutRequest) -> PayoutState | ProviderFailure:
        """Send the payout, perhaps failing it, leaving it pending, or losing the answer."""
        roll = self.roll(request, "submit")
        if roll < 0.1:
            return ProviderFailure("unavailable", "timeout before the provider got it")
        new = isinstance(self.inner.status(request), ProviderFailure)
        answer = self.inner.submit(request)
        if new and roll < 0.2:
            self.inner.set_status(request.idempotency_key, PayoutStatus.FAILED)
        elif new and roll < 0.35:
            self.inner.set_status(request.idempotency_key, PayoutStatus.PENDING)
        answer = self.inner.status(request)
        if roll > 0.9:
            return ProviderFailure("unavailable", "timeout after the provider got it")
        return answer

    def status(self, request: PayoutRequest) -> PayoutState | ProviderFailure:
        """The payout's status; a pending one settles now and then."""
        roll = self.roll(request, "status")
        if roll < 0.1:
            return ProviderFailure("unavailable", "status call timed out")
        answer = self.inner.status(request)
        if isinstance(answer, PayoutState) and answer.status is PayoutStatus.PENDING and roll < 0.5:
            self.inner.set_status(request.idempotency_key, PayoutStatus.SUCCESS)
            answer = self.inner.status(request)
        return answer


@dataclass
class OrderRecord:
    """What the test knows of one paid order."""

    order_id: str
    region: Region
    channel: str
    price: int
    card_fee: int
    store_fee: int
    tax: int
    refunded: int = 0
    dispute: str = "none"
    disputed: int = 0


@dataclass
class Tally:
    """The cash one currency moved, as the test computes it."""

    paid: int = 0
    returned_to_buyers: int = 0
    card_fees: int = 0
    store_fees: int = 0
    tax: int = 0

    def reverse(self, order: OrderRecord, amount: int, sign: int = 1) -> None:
        """Take back (or, with ``sign=-1``, restore) ``amount`` of ``order`` pro rata."""
        self.returned_to_buyers += sign * amount
        self.tax -= sign * (order.tax * amount // order.price)
        self.store_fees -= sign * (order.store_fee * amount // order.price)


@dataclass
class Simulation:
    """The simulation's state: the users, the orders, the payouts and the tallies."""

    env: Any
    rng: random.Random
    payouts: Payouts
    flaky: FlakyPayouts
    viewers: dict[str, list[str]] = field(default_factory=dict)
    creators: dict[str, list[str]] = field(default_factory=dict)
    gift_ids: dict[int, int] = field(default_factory=dict)
    orders: dict[str, OrderRecord] = field(default_factory=dict)
    payout_requests: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    """payout id → (method, currency, cash)."""
    tallies: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    sent_gifts: list[GiftRequest] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    margins: dict[str, int] = field(default_factory=dict)
    """Per currency, the smallest cash minus liability seen."""
    seq: int = 0

    def key(self, prefix: str) -> str:
        """A fresh idempotency key or event id."""
        self.seq += 1
        return f"{prefix}-{self.seq}"

    def fail(self, what: str, result: object) -> str:
        """An assertion message that names the seed."""
        return f"seed {SEED}, {what}: {result}"

    def totp(self, user_id: str) -> str:
        """A fresh two-factor code (the clock moves a step first, so codes never repeat)."""
        self.env.clock.advance(ms=30_000)
        return str(self.env.totp(user_id))

    def expect(self, result: Result, allowed: frozenset[str], what: str) -> bool:
        """Whether ``result`` applied; a refusal must be one of ``allowed``."""
        if isinstance(result, Applied):
            self.counts[what + ":ok"] += 1
            return True
        assert isinstance(result, Failure) and result.code in allowed, self.fail(what, result)
        self.counts[what + ":" + result.code] += 1
        return False

    # -- setup ------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Register viewers (two-factor enrolled, for limit increases) and creators per region."""
        env = self.env
        for value in set(GIFT_VALUES):
            self.gift_ids[value] = next(g.id for g in env.service.catalog
                                        if g.coin_value == value)
        for region, (_, time_zone) in REGIONS.items():
            self.viewers[region] = []
            self.creators[region] = []
            for index in range(VIEWERS_PER_REGION):
                viewer = f"v-{region}-{index}"
                env.viewer(viewer, region=region, time_zone=time_zone)
                enrolled = env.service.enroll_two_factor(viewer)
                assert isinstance(enrolled, tuple), enrolled
                env.seeds[viewer] = enrolled[1]
                assert env.service.confirm_two_factor(viewer, self.totp(viewer)) is None
                self.viewers[region].append(viewer)
            for index in range(CREATORS_PER_REGION):
                creator = f"c-{region}-{index}"
                env.creator(creator, region=region, time_zone=time_zone)
                self.creators[region].append(creator)

    # -- operations -------------------------------------------------------------------------------

    def purchase(self) -> int:
        """Order a pack and pay it; now and then a partial refund arrives before the payment."""
        env, rng = self.env, self.rng
        region_code = rng.choice(list(REGIONS))
        viewer = rng.choice(self.viewers[region_code])
        channel = rng.choice(CHANNELS)
        order = env.service.create_order(viewer, channel, f"{channel}-{rng.choice(PACKS)}",
                                         "simulator", self.key("order"))
        if not self.expect(order, ORDER_REFUSALS, "order"):
            return 1
        assert isinstance(order, Applied)
        order_id, price = order.response["order_id"], order.response["price_minor"]
        region = env.service.economy.region(region_code)
        early = rng.random() < 0.03
        if early:
            early_amount = rng.randint(1, price)
            waiting = env.service.handle_payment(self.event(
                order_id, PaymentEventKind.REFUNDED, early_amount, region.currency))
            assert isinstance(waiting, Failure), self.fail("early refund", waiting)
            assert waiting.code == "waiting_for_purchase", self.fail("early refund", waiting)
        paid = env.service.simulate_payment(order_id)
        assert isinstance(paid, Applied), self.fail("payment", paid)
        record = OrderRecord(
            order_id, region, channel, price,
            card_fee=region.card_fee(price).fee_minor if channel == "web" else 0,
            store_fee=0 if channel == "web" else region.store_proceeds(price).commission_minor,
            tax=region.tax_included(price).tax_minor)
        self.orders[order_id] = record
        tally = self.tallies[region.currency]
        tally.paid += price
        tally.card_fees += record.card_fee
        tally.store_fees += record.store_fee
        tally.tax += record.tax
        if early:
            tally.reverse(record, early_amount)
            record.refunded = early_amount
            self.counts["refund:early"] += 1
        return 1

    def event(self, order_id: str, kind: PaymentEventKind, amount: int,
              currency: str) -> PaymentEvent:
        """A simulator notification about an order's payment."""
        return PaymentEvent("simulator", self.key("evt"), kind, order_id, f"sim_{order_id}",
                            amount, currency)

    def refund(self) -> int:
        """A partial (or full) refund, with the cumulative amount, sometimes sent twice."""
        candidates = [o for o in self.orders.values()
                      if o.refunded < o.price and o.dispute in ("none", "won")]
        if not candidates:
            return 0
        order = self.rng.choice(candidates)
        total = self.rng.randint(order.refunded + 1, order.price)
        event = self.event(order.order_id, PaymentEventKind.REFUNDED, total,
                           order.region.currency)
        result = self.env.service.handle_payment(event)
        assert isinstance(result, Applied) and not result.replayed, self.fail("refund", result)
        if self.rng.random() < 0.1:
            again = self.env.service.handle_payment(event)
            assert isinstance(again, Applied) and again.replayed, self.fail("refund again", again)
        self.tallies[order.region.currency].reverse(order, total - order.refunded)
        order.refunded = total
        self.counts["refund"] += 1
        return 1

    def dispute(self) -> int:
        """Open a chargeback, or settle an open one (won restores it, lost keeps it)."""
        rng = self.rng
        open_ = [o for o in self.orders.values() if o.dispute == "open"]
        if open_ and rng.random() < 0.5:
            order = rng.choice(open_)
            won = rng.random() < 0.5
            kind = PaymentEventKind.DISPUTE_WON if won else PaymentEventKind.DISPUTE_LOST
            result = self.env.service.handle_payment(self.event(
                order.order_id, kind, order.disputed, order.region.currency))
            assert isinstance(result, Applied), self.fail(f"dispute {kind}", result)
            if won:
                self.tallies[order.region.currency].reverse(order, order.disputed, sign=-1)
            order.dispute = "won" if won else "lost"
            self.counts[f"dispute:{order.dispute}"] += 1
            return 1
        candidates = [o for o in self.orders.values()
                      if o.dispute == "none" and o.refunded < o.price]
        if not candidates:
            return 0
        order = rng.choice(candidates)
        left = order.price - order.refunded
        amount = left if rng.random() < 0.6 else rng.randint(1, left)
        result = self.env.service.handle_payment(self.event(
            order.order_id, PaymentEventKind.DISPUTE_OPENED, amount, order.region.currency))
        assert isinstance(result, Applied), self.fail("dispute opened", result)
        order.dispute, order.disputed = "open", amount
        self.tallies[order.region.currency].reverse(order, amount)
        self.counts["dispute:opened"] += 1
        return 1

    def gift_request(self) -> GiftRequest:
        """A random gift within one region; one in twenty repeats an earlier request."""
        rng = self.rng
        if self.sent_gifts and rng.random() < 0.05:
            return rng.choice(self.sent_gifts)
        region = rng.choice(list(REGIONS))
        value = rng.choice(GIFT_VALUES)
        request = GiftRequest(rng.choice(self.viewers[region]),
                              rng.choice(self.creators[region]), self.gift_ids[value],
                              rng.randint(1, 3), f"stream-{region}", self.key("gift"))
        self.sent_gifts.append(request)
        return request

    def gifts(self) -> int:
        """A single gift or a batch of up to 12 through ``send_gifts``."""
        size = 1 if self.rng.random() < 0.5 else self.rng.randint(2, 12)
        requests = [self.gift_request() for _ in range(size)]
        for result in self.env.service.send_gifts(requests):
            self.expect(result, GIFT_REFUSALS, "gift")
        return size

    def release(self) -> int:
        """A day or more passes; every creator's matured diamonds are released."""
        self.env.clock.advance(days=self.rng.choice((1, 1, 1, 2, 3)))
        creators = [c for region in REGIONS for c in self.creators[region]]
        for creator in creators:
            result = self.env.release(creator)
            assert isinstance(result, Applied), self.fail("release", result)
        return len(creators)

    def limit(self) -> int:
        """A viewer lowers a limit at once, or raises or removes one with a two-factor code."""
        rng = self.rng
        viewer = rng.choice(self.viewers[rng.choice(list(REGIONS))])
        metric = rng.choice(("gifted_daily", "gifted_monthly", "purchased_daily",
                             "purchased_monthly"))
        coins = None if rng.random() < 0.2 else rng.choice((0, 500, 2000, 10_000, 50_000))
        result = self.env.service.set_limit(viewer, metric, coins, self.totp(viewer))
        assert isinstance(result, dict), self.fail("set_limit", result)
        self.counts["limit"] += 1
        return 1

    def payout(self) -> int:
        """A creator asks for some of their withdrawable diamonds through a random method."""
        rng = self.rng
        region = rng.choice(list(REGIONS))
        creator = rng.choice(self.creators[region])
        withdrawable = self.env.service.wallet(creator)["diamonds_withdrawable"]
        if withdrawable <= 0:
            return 0
        diamonds = withdrawable if rng.random() < 0.5 else rng.randint(1, withdrawable)
        method = rng.choice(METHODS)
        result = self.payouts.request(creator, diamonds, method, self.totp(creator),
                                      self.key("payout"))
        if self.expect(result, PAYOUT_REFUSALS, "payout"):
            assert isinstance(result, Applied)
            response = result.response
            cash = self.env.service.economy.region(region).diamonds_to_cash(diamonds)
            assert (response["cash_minor"], response["diamonds"]) == (
                cash.cash_minor, cash.converted_diamonds_minor), self.fail("payout", response)
            self.payout_requests[response["payout"]] = (method, REGIONS[region][0],
                                                        cash.cash_minor)
        return 1

    def payout_work(self) -> int:
        """The payout workers run: submit what is requested, poll what is in flight."""
        self.payouts.process()
        self.payouts.poll()
        return 1

    def payout_return(self) -> int:
        """A paid payout comes back from the provider and is credited once."""
        paid = self.env.store.read("payouts", {"status": "paid"}, order_by=("id",))
        if not paid:
            return 0
        row = self.rng.choice(paid)
        self.provider(row["method"]).set_status(row["id"], PayoutStatus.RETURNED)
        self.payouts.check_paid(row["id"])
        self.counts["payout:returned"] += 1
        return 1

    def provider(self, method: str) -> SimulatorPayouts:
        """The simulator that keeps a method's truth."""
        return self.env.simulator if method == "simulator" else self.flaky.inner

    # -- settling and checking --------------------------------------------------------------------

    def drain(self) -> None:
        """Run the payout workers until every payout is final and every return is credited."""
        for _ in range(500):
            self.payouts.process()
            self.payouts.poll()
            for row in self.env.store.read("payouts", {"status": "paid"}):
                truth = self.provider(row["method"]).status(self.request_of(row))
                if isinstance(truth, PayoutState) and truth.status is PayoutStatus.RETURNED:
                    self.payouts.check_paid(row["id"])
            statuses = self.final_statuses()
            if all(self.agrees(method_status, status)
                   for method_status, status in statuses.values()):
                return
        raise AssertionError(self.fail("payouts did not settle", self.final_statuses()))

    @staticmethod
    def request_of(row: dict[str, Any]) -> PayoutRequest:
        """The provider request of a payout row (as the payout worker builds it)."""
        return PayoutRequest(row["id"], row["id"], row["receiver"], row["cash_minor"],
                             row["currency"])

    def final_statuses(self) -> dict[str, tuple[str, str]]:
        """Payout id → (the provider's status, giftflow's status)."""
        out = {}
        for row in self.env.store.read("payouts", {}):
            truth = self.provider(row["method"]).status(self.request_of(row))
            out[row["id"]] = (truth.status.value if isinstance(truth, PayoutState)
                              else truth.code, row["status"])
        return out

    @staticmethod
    def agrees(provider_status: str, status: str) -> bool:
        """Whether giftflow's final status is the provider's."""
        return (provider_status, status) in {("SUCCESS", "paid"), ("FAILED", "failed"),
                                             ("RETURNED", "returned")}

    def balance(self, key: acc.AccountKey) -> int:
        """An account's posted balance (opened if it never was, at zero)."""
        service = self.env.service
        service.book.open([key])
        account = service.ledger.account(service.ids([key])[0])
        assert account is not None
        return int(account.posted)

    def liability(self) -> dict[str, int]:
        """Per currency: unspent coins at their lots' net cash, plus unpaid diamonds' value."""
        owed: dict[str, int] = defaultdict(int)
        for lot in self.env.store.read("lots", {"remaining >": 0}):
            owed[lot["currency"]] += lot["remaining"] * lot["net_minor"] // lot["coins"]
        for region_code, creators in self.creators.items():
            region = self.env.service.economy.region(region_code)
            for creator in creators:
                diamonds = self.env.service.wallet(creator)["diamonds"]
                owed[region.currency] += region.diamonds_to_cash(diamonds).cash_minor
        return owed

    def check_liability(self, done: int) -> None:
        """The liability report agrees with the test's count and never exceeds the cash."""
        owed = self.liability()
        report = liability_report(self.env.service)
        for currency, _ in REGIONS.values():
            cash = self.balance(acc.cash(currency))
            line = report[currency]
            assert (line.total_minor, line.cash_held_minor) == (owed[currency], cash), self.fail(
                f"after {done} operations the {currency} report", (line, dict(owed), cash))
            assert line.covered and owed[currency] <= cash, self.fail(
                f"after {done} operations the {currency} liability {owed[currency]} exceeds "
                f"the cash {cash}", line)
            self.margins[currency] = min(self.margins.get(currency, cash - owed[currency]),
                                         cash - owed[currency])

    def check_accounts(self) -> None:
        """Each named account holds the test's tally, and together they are minus the cash."""
        facts = self.env.store.verification_facts()
        for currency, tally in self.tallies.items():
            paid_out: dict[str, int] = defaultdict(int)
            for payout_id, (method, payout_currency, cash) in self.payout_requests.items():
                truth = self.provider(method).status(
                    PayoutRequest(payout_id, payout_id, "", cash, payout_currency))
                if payout_currency == currency and isinstance(truth, PayoutState) and (
                        truth.status is PayoutStatus.SUCCESS):
                    paid_out[method] += cash
            expected = {
                acc.provider_clearing(currency, "simulator"): -(tally.paid
                                                                - tally.returned_to_buyers),
                acc.card_fees(currency, "simulator"): tally.card_fees,
                acc.store_fees(currency, "simulator"): tally.store_fees,
                acc.tax(currency): tally.tax,
                **{acc.payout_clearing(currency, m): paid_out[m] for m in METHODS},
            }
            actual = {key: self.balance(key) for key in expected}
            assert actual == expected, self.fail(f"{currency} accounts", (actual, expected))
            cash = self.balance(acc.cash(currency))
            assert sum(actual.values()) == -cash, self.fail(f"{currency} cash", cash)
            assert cash == (tally.paid - tally.returned_to_buyers - tally.card_fees
                            - tally.store_fees - tally.tax - sum(paid_out.values()))
            others = [a for a in facts.accounts if a.ledger == currency and a.posted
                      and (a.ledger, a.owner, a.kind) not in expected
                      and (a.ledger, a.owner, a.kind) != acc.cash(currency)]
            assert not others, self.fail(f"unexpected {currency} accounts", others)


ACTIONS = (
    ("gifts", 45), ("purchase", 40), ("refund", 10), ("dispute", 7), ("release", 3),
    ("limit", 5), ("payout", 12), ("payout_work", 8), ("payout_return", 3),
)


def test_random_economy_keeps_every_account_and_the_liability_covered(env) -> None:
    """10,000 seeded random operations keep ``ledger verify`` passing, leave each named cash
    account (provider clearing, card and store fees, tax, payout clearing) at the test's own
    tally and minus the platform's cash in sum, and never let the liability exceed the cash.
    """
    started = time.perf_counter()
    rng = random.Random(SEED)
    flaky = FlakyPayouts(SEED)
    payouts = Payouts(env.service, {"simulator": env.simulator, "flaky": flaky})
    sim = Simulation(env, rng, payouts, flaky)
    sim.setup()
    names = [name for name, _ in ACTIONS]
    weights = [weight for _, weight in ACTIONS]
    done, next_check = 0, CHECK_EVERY
    while done < OPERATIONS:
        done += getattr(sim, rng.choices(names, weights)[0])()
        if done >= next_check:
            sim.check_liability(done)
            next_check += CHECK_EVERY
    sim.drain()
    sim.check_liability(done)
    sim.check_accounts()
    env.verify_ok()
    cli = subprocess.run([sys.executable, "-m", "giftflow", "ledger", "verify", "--db",
                          env.store.url], capture_output=True, text=True, timeout=120,
                         check=False)
    assert cli.returncode == 0, sim.fail("giftflow ledger verify", cli.stdout + cli.stderr)
    elapsed = time.perf_counter() - started
    log.info("seed %d: %d operations on %s in %.1fs: %s; smallest cash margin %s", SEED, done,
             env.store.dialect, elapsed, dict(sorted(sim.counts.items())), sim.margins)
    assert sim.counts["gift:ok"] > 1000 and sim.counts["payout:ok"] > 20, sim.fail(
        "too little happened", sim.counts)
    assert sim.counts["dispute:won"] and sim.counts["dispute:lost"], sim.fail(
        "no settled disputes", sim.counts)
