"""API keys and overlay tokens: made with enough entropy, shown once, stored as a hash.

A key reads ``gf_<id>_<secret>``. The id is public and finds the stored row; only a SHA-256 of
the secret is stored, and it is compared in constant time. The secret is 32 random bytes, so a
fast hash is the right one: there is nothing to guess and nothing to stretch.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final, Literal

Role = Literal["admin", "service", "creator", "moderator", "viewer", "overlay"]

ROLES: Final[tuple[Role, ...]] = ("admin", "service", "creator", "moderator", "viewer", "overlay")
"""The roles of SPEC.md §8, and ``overlay`` for the read-only overlay tokens."""

KEY_PREFIX: Final = "gf_"
_KEY: Final = re.compile(r"gf_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")
KEY_CHARS_MAX: Final = 64
"""The longest key string accepted; anything longer is refused before any work."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: the key's role and the owner it is scoped to.

    ``owner`` is a user id for ``viewer``, ``creator`` and ``moderator`` keys, a creator's user id
    for ``overlay`` tokens, a platform id for ``service`` keys, and empty for ``admin``.
    """

    key_id: str
    role: Role
    owner: str


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: the string to show once, and what to store."""

    plaintext: str
    key_id: str
    secret_hash: bytes


def new_key() -> NewKey:
    """A fresh key: a 12-character id and a 256-bit secret."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewKey(f"{KEY_PREFIX}{key_id}_{secret}", key_id, hash_secret(secret))


def hash_secret(secret: str) -> bytes:
    """What is stored for a secret."""
    return hashlib.sha256(secret.encode()).digest()


def parse_key(plaintext: str) -> tuple[str, str] | None:
    """The id and secret of a well-formed key string, or ``None``."""
    if len(plaintext) > KEY_CHARS_MAX:
        return None
    match = _KEY.fullmatch(plaintext)
    return None if match is None else (match.group(1), match.group(2))


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    """Whether ``secret`` is the one whose hash is stored (constant time)."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)
