"""The economy wired over a real store (SQLite and PostgreSQL), with a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from economy_env import EconomyEnv, build_env
from paypal_server import PayPalServer

from giftflow.adapters.sql.store import SqlStore


@pytest.fixture
def env(store: SqlStore) -> EconomyEnv:
    """An economy in demo mode over the test's store (SQLite or PostgreSQL)."""
    return build_env(store)


@pytest.fixture
def paypal() -> Iterator[PayPalServer]:
    """A local server speaking PayPal's Payouts API."""
    with PayPalServer() as server:
        yield server
