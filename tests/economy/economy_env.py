"""Shared pieces of the economy tests: a clock the test moves and a wired economy.

Test modules import them from here (``tests/economy`` is on pytest's ``pythonpath``); the
``env`` fixture in ``conftest.py`` builds one per test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import pyotp
from paypal_server import CLIENT_ID_DEFAULT, CLIENT_SECRET_DEFAULT, PayPalServer

from giftflow.adapters.providers.paypal import PayPalPayouts
from giftflow.adapters.providers.simulator import SimulatorPayouts
from giftflow.adapters.sql.store import SqlStore
from giftflow.economy import load_catalog, load_economy
from giftflow.economy.accounts import AccountKey
from giftflow.economy.payouts import Payouts
from giftflow.economy.periods import local_date
from giftflow.economy.service import EconomyOptions, EconomyService, GiftRequest
from giftflow.economy.twofactor import SeedCipher
from giftflow.ledger import Applied, Ledger, Result, verify

START_MS = 1_767_225_600_000
"""2026-01-01T00:00:00Z: where every test's clock starts."""

DAY_MS = 86_400_000


@dataclass
class Clock:
    """A clock the test moves; the economy and the ledger read it."""

    now_ms: int = START_MS

    def __call__(self) -> int:
        """The current time in ms."""
        return self.now_ms

    def advance(self, *, days: int = 0, ms: int = 0) -> None:
        """Move the clock forward."""
        self.now_ms += days * DAY_MS + ms


@dataclass
class EconomyEnv:
    """An economy service, its payouts, and helpers that tests share."""

    store: SqlStore
    service: EconomyService
    payouts: Payouts
    simulator: SimulatorPayouts
    clock: Clock
    seeds: dict[str, str] = field(default_factory=dict)

    def viewer(self, user_id: str, *, region: str = "US", born: date = date(1990, 5, 1),
               time_zone: str = "America/New_York") -> None:
        """Register a viewer (an adult unless ``born`` says otherwise)."""
        result = self.service.register_user(user_id, region=region, time_zone=time_zone,
                                            birth_date=born)
        assert result.ok, result

    def creator(self, user_id: str, *, region: str = "US", born: date = date(1990, 5, 1),
                kyc_status: str = "verified", time_zone: str = "America/New_York",
                two_factor: bool = True) -> None:
        """Register a creator, KYC-verified and enrolled in two-factor unless told otherwise."""
        result = self.service.register_user(
            user_id, region=region, time_zone=time_zone, birth_date=born, is_creator=True,
            kyc_status=kyc_status, payout_receiver=f"{user_id}@example.com")
        assert result.ok, result
        if two_factor:
            enrolled = self.service.enroll_two_factor(user_id)
            assert isinstance(enrolled, tuple), enrolled
            self.seeds[user_id] = enrolled[1]
            assert self.service.confirm_two_factor(user_id, self.totp(user_id)) is None
            self.clock.advance(ms=30_000)

    def totp(self, user_id: str) -> str:
        """The user's code at the current time (move the clock a step for a fresh one)."""
        return str(pyotp.TOTP(self.seeds[user_id]).at(self.clock.now_ms // 1000))

    def buy(self, user_id: str, pack_id: str = "web-700", *, channel: str = "web",
            key: str | None = None) -> Result:
        """Order a pack through the simulator and pay for it at once."""
        order = self.service.create_order(user_id, channel, pack_id, "simulator",
                                          key or f"order-{user_id}-{pack_id}-{self.clock()}")
        if not isinstance(order, Applied):
            return order
        return self.service.simulate_payment(order.response["order_id"])

    def gift(self, sender: str, creator: str, coins_each: int = 1, count: int = 1, *,
             key: str, **extra: str) -> Result:
        """Send ``count`` gifts of the catalog's first gift worth ``coins_each`` coins."""
        gift = next(g for g in self.service.catalog if g.coin_value == coins_each)
        return self.service.send_gift(GiftRequest(sender, creator, gift.id, count, "stream-1",
                                                  key, **extra))

    def release(self, creator: str) -> Result:
        """Release what matured by today (the creator's time zone)."""
        user = self.service.user(creator)
        assert user is not None
        return self.service.release_matured(
            creator, local_date(self.clock(), user["time_zone"]))[-1]

    def balance(self, key: AccountKey) -> int:
        """The posted balance of a ledger account (opened, at 0, if it never was)."""
        self.service.book.open([key])
        account = self.service.ledger.account(self.service.ids([key])[0])
        assert account is not None
        return account.posted

    def paypal_payouts(self, server: PayPalServer, timeout_s: float = 2.0) -> Payouts:
        """Payout workers whose ``paypal`` method is a fresh client of the local PayPal server
        (what a restarted process has).
        """
        adapter = PayPalPayouts(base_url=server.base_url, client_id=CLIENT_ID_DEFAULT,
                                client_secret=CLIENT_SECRET_DEFAULT, timeout_s=timeout_s)
        return Payouts(self.service, {"paypal": adapter})

    def verify_ok(self) -> None:
        """``ledger verify`` passes, lot consumption included."""
        report = verify(self.store.verification_facts())
        failures = [(c.name, c.violations) for c in report.checks if c.violations]
        assert not failures, failures


def build_env(store: SqlStore) -> EconomyEnv:
    """An economy in demo mode over ``store``, on a clock the test moves.

    The store stamps transfers with the same clock, so ledger history and domain rows agree.
    """
    clock = Clock()
    store.now_ms = clock
    simulator = SimulatorPayouts()
    service = EconomyService(store, Ledger(store, clock_ms=clock), load_economy(),
                             load_catalog(), cipher=SeedCipher(SeedCipher.generate_key()),
                             options=EconomyOptions(demo_mode=True), clock_ms=clock)
    return EconomyEnv(store, service, Payouts(service, {"simulator": simulator}), simulator,
                      clock)
