"""The economy's ledger accounts: who owns each, what it holds, and which may go negative.

An account is ``(ledger, owner, kind)``. Owners are ``platform``, ``user:<id>``, ``team:<id>``,
``provider:<name>`` and ``payout:<method>``. Accounts of the platform's issuance and of the outside
world (providers, payout rails, chargeback loss, a buyer's coin debt as a receivable) may go
negative; wallets and creator balances never may (SPEC.md §1).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Final

from giftflow.ledger import Ledger

AccountKey = tuple[str, str, str]
"""``(ledger, owner, kind)``."""

PLATFORM: Final = "platform"

COIN_ISSUANCE: Final = ("COIN", PLATFORM, "coins:issuance")
"""Coins come from here at purchase and return here on reversal (goes negative)."""
COIN_REDEEMED: Final = ("COIN", PLATFORM, "coins:redeemed")
"""Coins spent on gifts."""
COIN_LOSS: Final = ("COIN", PLATFORM, "coins:chargeback_loss")
"""Coins of a reversal that nothing recovered, under the ``absorb`` policy (goes negative)."""
DIAMOND_ISSUANCE: Final = ("DIAMOND", PLATFORM, "diamonds:issuance")
"""Diamonds come from here at each gift and return here on reversal (goes negative)."""
DIAMOND_PAID_OUT: Final = ("DIAMOND", PLATFORM, "diamonds:paid_out")
"""Diamonds reserved (pending) and then paid out to creators."""

_NEGATIVE_KINDS: Final = frozenset({
    "coins:issuance", "coins:chargeback_loss", "coin_debt", "diamonds:issuance", "clearing",
    "cash", "adjustments",
})


def owner_of_user(user_id: str) -> str:
    """The ledger owner of a user."""
    return f"user:{user_id}"


def owner_of_team(team_id: str) -> str:
    """The ledger owner of a team account."""
    return f"team:{team_id}"


def wallet(owner: str) -> AccountKey:
    """The coin wallet of a user or team."""
    return ("COIN", owner, "wallet")


def coin_debt(owner: str) -> AccountKey:
    """What a buyer owes in coins after a reversal under ``debt``: a receivable, at most 0."""
    return ("COIN", owner, "coin_debt")


def held(creator_id: str) -> AccountKey:
    """A creator's diamonds inside the hold period."""
    return ("DIAMOND", owner_of_user(creator_id), "diamonds:held")


def available(creator_id: str) -> AccountKey:
    """A creator's released diamonds; payouts reserve from here."""
    return ("DIAMOND", owner_of_user(creator_id), "diamonds:available")


def cash(currency: str) -> AccountKey:
    """The platform's money in ``currency``: what buyers paid, less everything paid out of it."""
    return (currency, PLATFORM, "cash")


def provider_clearing(currency: str, provider: str) -> AccountKey:
    """Money between a payment provider and the platform (goes negative as buyers pay)."""
    return (currency, f"provider:{provider}", "clearing")


def card_fees(currency: str, provider: str) -> AccountKey:
    """Card processing fees kept by a provider."""
    return (currency, f"provider:{provider}", "fees:card")


def store_fees(currency: str, provider: str) -> AccountKey:
    """App-store commission kept by a store."""
    return (currency, f"provider:{provider}", "fees:store")


def tax(currency: str) -> AccountKey:
    """Tax contained in prices, owed to the tax authority."""
    return (currency, PLATFORM, "tax")


def payout_clearing(currency: str, method: str) -> AccountKey:
    """Cash sent to creators through a payout method."""
    return (currency, f"payout:{method}", "clearing")


def adjustments(ledger: str) -> AccountKey:
    """Where approved admin adjustments come from or go to (goes negative)."""
    return (ledger, PLATFORM, "adjustments")


def may_go_negative(key: AccountKey) -> bool:
    """Whether the account of ``key`` is allowed below zero."""
    return key[2] in _NEGATIVE_KINDS


class MissingAccountsError(Exception):
    """Internal: a transaction needs accounts that are not open yet; open them and retry."""

    def __init__(self, keys: Iterable[AccountKey]) -> None:
        self.keys = tuple(keys)
        super().__init__(f"accounts to open first: {self.keys}")


class AccountBook:
    """Account ids by key, opened through the ledger outside any transaction and cached.

    Inside a transaction :meth:`id` only reads the cache: opening an account there would join
    the transaction (SQLite) and vanish with its rollback. A miss raises
    :class:`MissingAccountsError`; the economy opens the accounts and runs the work again.
    """

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._ids: dict[AccountKey, int] = {}
        self._lock = threading.Lock()

    def open(self, keys: Iterable[AccountKey]) -> None:
        """Open (or find) every account of ``keys`` and cache its id."""
        for key in keys:
            if key not in self._ids:
                account = self._ledger.open_account(*key, allow_negative=may_go_negative(key))
                with self._lock:
                    self._ids[key] = account.id

    def id(self, key: AccountKey) -> int:
        """The id of an opened account; raises :class:`MissingAccountsError` when not cached."""
        found = self._ids.get(key)
        if found is None:
            raise MissingAccountsError([key])
        return found

    def ids(self, keys: Iterable[AccountKey]) -> list[int]:
        """The ids of several accounts, naming every missing one at once."""
        keys = list(keys)
        missing = [key for key in keys if key not in self._ids]
        if missing:
            raise MissingAccountsError(missing)
        return [self._ids[key] for key in keys]
