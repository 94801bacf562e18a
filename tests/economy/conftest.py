"""The economy wired over a real store (SQLite and PostgreSQL), with a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from economy_env import Clock, EconomyEnv
from paypal_server import PayPalServer

from giftflow.adapters.providers.simulator import SimulatorPayouts
from giftflow.adapters.sql.store import SqlStore
from giftflow.economy import load_catalog, load_economy
from giftflow.economy.payouts import Payouts
from giftflow.economy.service import EconomyOptions, EconomyService
from giftflow.economy.twofactor import SeedCipher
from giftflow.ledger import Ledger


@pytest.fixture
def env(store: SqlStore) -> EconomyEnv:
    """An economy in demo mode over the test's store (SQLite or PostgreSQL).

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


@pytest.fixture
def paypal() -> Iterator[PayPalServer]:
    """A local server speaking PayPal's Payouts API."""
    with PayPalServer() as server:
        yield server
