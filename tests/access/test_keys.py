"""API keys: shown once, stored hashed, checked in constant time, revocable."""

from __future__ import annotations

import pytest

from giftflow.access import AccessService
from giftflow.access.keys import hash_secret, parse_key
from giftflow.adapters.sql.store import SqlStore
from giftflow.invariants import InvariantViolation


def test_a_key_authenticates_as_its_role_and_owner(store: SqlStore) -> None:
    """A new key is shown once as ``gf_<id>_<secret>``; it authenticates as its role and owner,
    and only the secret's SHA-256 is stored.
    """
    access = AccessService(store)
    plaintext = access.create_key("creator", "star", label="studio")
    parsed = parse_key(plaintext)
    assert parsed is not None
    key_id, secret = parsed
    principal = access.authenticate(plaintext)
    assert principal is not None
    assert (principal.key_id, principal.role, principal.owner) == (key_id, "creator", "star")
    [row] = store.read("api_keys", {"id": key_id})
    assert bytes(row["secret_hash"]) == hash_secret(secret)
    assert secret not in repr(row)


@pytest.mark.parametrize("bad", [
    "", "gf_", "Bearer x", "gf_short_secret", "gf_" + "a" * 12 + "_" + "b" * 43 + "x" * 100,
])
def test_malformed_keys_are_refused(store: SqlStore, bad: str) -> None:
    """Anything that is not a well-formed key is refused before any lookup."""
    assert AccessService(store).authenticate(bad) is None


def test_a_wrong_secret_or_a_revoked_key_is_refused(store: SqlStore) -> None:
    """The right id with another secret is refused; a revoked key stops working at once in
    the process that revoked it, and revoking twice reports nothing to revoke.
    """
    access = AccessService(store)
    plaintext = access.create_key("viewer", "fan")
    key_id, secret = parse_key(plaintext) or ("", "")
    forged = f"gf_{key_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    assert access.authenticate(forged) is None
    assert access.authenticate(plaintext) is not None
    assert access.revoke(key_id)
    assert access.authenticate(plaintext) is None
    assert not access.revoke(key_id)


def test_admin_keys_may_name_their_holder_and_others_need_an_owner(store: SqlStore) -> None:
    """An admin key may have no owner, or name the admin user who holds it; every other role
    needs an owner.
    """
    access = AccessService(store)
    assert access.authenticate(access.create_key("admin")) is not None
    held = access.authenticate(access.create_key("admin", "ops-alice"))
    assert held is not None
    assert held.owner == "ops-alice"
    with pytest.raises(InvariantViolation):
        access.create_key("viewer")
