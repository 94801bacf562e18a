"""Creating, checking and revoking API keys and overlay tokens.

Keys are rows of ``api_keys`` (through the economy's storage port, which is a plain row gateway).
Authentication is on every request, so a checked key is remembered for ``cache_ttl_ms``; a
revocation is seen by every process within that time, and at once by the process that revoked.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final, TypeVar

from giftflow.access.keys import ROLES, NewKey, Principal, Role, new_key, parse_key, secret_matches
from giftflow.invariants import invariant

if TYPE_CHECKING:
    from collections.abc import Callable

    from giftflow.economy.ports import EconomyStore, EconomyTx

_T = TypeVar("_T")

CACHE_KEYS_MAX: Final = 10_000
"""Checked keys remembered at once."""

OWNERLESS_ROLES: Final = frozenset({"admin"})
"""Roles whose keys may have no owner (an admin key may name the admin user who holds it)."""


class AccessService:
    """API keys: made once, stored hashed, checked on every request, revocable."""

    def __init__(self, store: EconomyStore, clock_ms: Callable[[], int] | None = None,
                 cache_ttl_ms: int = 5_000) -> None:
        self.store = store
        self.clock_ms = clock_ms or store.now_ms
        self.cache_ttl_ms = cache_ttl_ms
        self._cache: dict[str, tuple[Principal | None, int]] = {}
        self._lock = threading.Lock()

    def create_key(self, role: Role, owner: str = "", label: str = "") -> str:
        """Make a key for ``role`` scoped to ``owner``; returns the string to show once."""
        invariant(role in ROLES, f"unknown role {role!r}")
        invariant(role in OWNERLESS_ROLES or owner != "", f"a {role} key needs an owner")
        made: NewKey = new_key()

        def work(tx: EconomyTx) -> None:
            tx.insert("api_keys", {"id": made.key_id, "secret_hash": made.secret_hash,
                                   "role": role, "owner": owner, "label": label[:200],
                                   "created_at_ms": self.clock_ms()})
            tx.commit()

        self._run(work)
        return made.plaintext

    def authenticate(self, plaintext: str) -> Principal | None:
        """The principal of a valid, unrevoked key, or ``None``."""
        parsed = parse_key(plaintext)
        if parsed is None:
            return None
        key_id, secret = parsed
        now = self.clock_ms()
        cached = self._cache.get(plaintext)
        if cached is not None and cached[1] > now:
            return cached[0]
        rows = self.store.read("api_keys", {"id": key_id})
        principal = None
        if rows and rows[0]["revoked_at_ms"] is None and secret_matches(
                secret, bytes(rows[0]["secret_hash"])):
            principal = Principal(key_id, rows[0]["role"], rows[0]["owner"])
        with self._lock:
            if len(self._cache) >= CACHE_KEYS_MAX:
                self._cache.clear()
            self._cache[plaintext] = (principal, now + self.cache_ttl_ms)
        return principal

    def key(self, key_id: str) -> dict[str, Any] | None:
        """A key's row without its hash (role, owner, label, dates), or ``None``."""
        rows = self.store.read("api_keys", {"id": key_id})
        if not rows:
            return None
        return {name: value for name, value in rows[0].items() if name != "secret_hash"}

    def revoke(self, key_id: str) -> bool:
        """Revoke a key; False when there is no such unrevoked key."""
        def work(tx: EconomyTx) -> bool:
            rows = tx.rows("api_keys", {"id": key_id}, lock=True)
            if not rows or rows[0]["revoked_at_ms"] is not None:
                return False
            tx.update("api_keys", {"id": key_id}, {"revoked_at_ms": self.clock_ms()})
            tx.commit()
            return True

        done = self._run(work)
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if not k.startswith(
                f"gf_{key_id}_")}
        return done is True

    def _run(self, work: Callable[[EconomyTx], _T]) -> _T:
        with self.store.economy_tx() as tx:
            return work(tx)
