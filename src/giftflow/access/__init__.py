"""Who may do what: API keys and overlay tokens, roles, and owner scoping (SPEC.md §8)."""

from giftflow.access.keys import ROLES, Principal, Role
from giftflow.access.service import AccessService

__all__ = ["ROLES", "AccessService", "Principal", "Role"]
