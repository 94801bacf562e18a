"""Keys, overlay tokens and moderators over HTTP (SPEC.md §8 "Auth").

Creating a key over HTTP needs an admin key that names the admin user who holds it, and a
two-factor code of that user (``giftflow keys create`` on the machine itself needs neither).
Overlay tokens are read-only keys scoped to one creator's streams; they can be rotated (a new
token, the old one revoked) and revoked. A creator appoints moderators, who then act on that
creator's streams only.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import delete, post, put
from litestar.params import FromPath, JSONBody

from giftflow.api.common import Services, Svc, Who, act_for, refuse
from giftflow.economy import codes
from giftflow.economy.payouts import check_two_factor
from giftflow.economy.ports import EconomyTx

LABEL_CHARS_MAX: Final = 200


class KeyIn(msgspec.Struct, forbid_unknown_fields=True):
    """A key to make: its role, the owner it acts as, and the holder's two-factor code."""

    role: Literal["admin", "service", "creator", "moderator", "viewer"]
    totp: Annotated[str, msgspec.Meta(max_length=16)]
    owner: Annotated[str, msgspec.Meta(max_length=128)] = ""
    label: Annotated[str, msgspec.Meta(max_length=LABEL_CHARS_MAX)] = ""


class KeyOut(msgspec.Struct):
    """A key just made: shown once."""

    id: str
    key: str
    role: str
    owner: str


class RevokedOut(msgspec.Struct):
    """A revoked key or token."""

    id: str
    revoked: bool


class ModeratorOut(msgspec.Struct):
    """A creator's moderator."""

    creator_id: str
    user_id: str
    appointed: bool


def _second_factor(services: Services, user_id: str, code: str) -> None:
    """Check the two-factor code of ``user_id``; a refusal is a problem response."""
    def work(tx: EconomyTx) -> str | None:
        users = tx.rows("users", {"id": user_id}, lock=True)
        if not users:
            return f"no user {user_id}"
        refused = check_two_factor(services.economy, tx, users[0], code)
        tx.commit()
        return None if refused is None else refused.code

    found = services.economy.run(work)
    if isinstance(found, str):
        raise refuse(found if found.startswith("two_factor") else codes.NOT_FOUND, found)
    if found is not None:
        raise refuse(found.code, found.detail)


@post("/v1/keys", sync_to_thread=True, status_code=201)
def create_key(services: Svc, principal: Who, data: JSONBody[KeyIn]) -> KeyOut:
    """Make an API key (an admin key held by a named admin user, with that user's code)."""
    if principal.role != "admin":
        raise refuse("forbidden", "only admin keys make keys")
    if not principal.owner:
        raise refuse("forbidden", "this admin key names no holder, so no two-factor code can "
                                  "be checked; make keys with `giftflow keys create` instead")
    if data.role != "admin" and not data.owner:
        raise refuse(codes.VALIDATION_ERROR, f"a {data.role} key needs an owner")
    _second_factor(services, principal.owner, data.totp)
    plaintext = services.access.create_key(data.role, data.owner, data.label)
    return KeyOut(plaintext.split("_")[1], plaintext, data.role, data.owner)


@delete("/v1/keys/{key_id:str}", sync_to_thread=True, status_code=200)
def revoke_key(services: Svc, principal: Who, key_id: FromPath[str]) -> RevokedOut:
    """Revoke an API key (admin)."""
    if principal.role != "admin":
        raise refuse("forbidden", "only admin keys revoke keys")
    if services.access.key(key_id) is None:
        raise refuse(codes.NOT_FOUND, f"no key {key_id}")
    return RevokedOut(key_id, services.access.revoke(key_id))


@post("/v1/creators/{creator_id:str}/overlay-tokens", sync_to_thread=True, status_code=201)
def create_overlay_token(services: Svc, principal: Who, creator_id: FromPath[str]) -> KeyOut:
    """A read-only token for the creator's overlays (in the overlay URL as ``?token=``)."""
    _creator(services, principal, creator_id)
    plaintext = services.access.create_key("overlay", creator_id, "overlay")
    return KeyOut(plaintext.split("_")[1], plaintext, "overlay", creator_id)


def _creator(services: Services, principal: Any, creator_id: str) -> None:  # noqa: ANN401
    user = act_for(services, principal, creator_id)
    if not user["is_creator"]:
        raise refuse(codes.NOT_A_CREATOR, f"{creator_id} is not a creator")


def _overlay_of(services: Services, creator_id: str, key_id: str) -> None:
    key = services.access.key(key_id)
    if key is None or key["role"] != "overlay" or key["owner"] != creator_id:
        raise refuse(codes.NOT_FOUND, f"no overlay token {key_id} of {creator_id}")


@delete("/v1/creators/{creator_id:str}/overlay-tokens/{key_id:str}", sync_to_thread=True,
        status_code=200)
def revoke_overlay_token(services: Svc, principal: Who, creator_id: FromPath[str],
                         key_id: FromPath[str]) -> RevokedOut:
    """Revoke one of the creator's overlay tokens."""
    _creator(services, principal, creator_id)
    _overlay_of(services, creator_id, key_id)
    return RevokedOut(key_id, services.access.revoke(key_id))


@post("/v1/creators/{creator_id:str}/overlay-tokens/{key_id:str}/rotate", sync_to_thread=True,
      status_code=201)
def rotate_overlay_token(services: Svc, principal: Who, creator_id: FromPath[str],
                         key_id: FromPath[str]) -> KeyOut:
    """Replace an overlay token: a new one is made and the old one is revoked."""
    _creator(services, principal, creator_id)
    _overlay_of(services, creator_id, key_id)
    plaintext = services.access.create_key("overlay", creator_id, "overlay")
    services.access.revoke(key_id)
    return KeyOut(plaintext.split("_")[1], plaintext, "overlay", creator_id)


@put("/v1/creators/{creator_id:str}/moderators/{user_id:str}", sync_to_thread=True)
def appoint_moderator(services: Svc, principal: Who, creator_id: FromPath[str],
                      user_id: FromPath[str]) -> ModeratorOut:
    """Appoint a moderator of the creator's streams."""
    _creator(services, principal, creator_id)
    if services.economy.user(user_id) is None:
        raise refuse(codes.NOT_FOUND, f"no user {user_id}")
    key = {"creator_id": creator_id, "user_id": user_id}

    def work(tx: EconomyTx) -> None:
        if not tx.rows("moderators", key):
            tx.insert("moderators", {**key, "created_at_ms": services.economy.clock_ms()})
            tx.commit()

    services.economy.run(work)
    return ModeratorOut(creator_id, user_id, appointed=True)


@delete("/v1/creators/{creator_id:str}/moderators/{user_id:str}", sync_to_thread=True,
        status_code=200)
def dismiss_moderator(services: Svc, principal: Who, creator_id: FromPath[str],
                      user_id: FromPath[str]) -> ModeratorOut:
    """Dismiss a moderator."""
    _creator(services, principal, creator_id)
    key = {"creator_id": creator_id, "user_id": user_id}

    def work(tx: EconomyTx) -> bool:
        if not tx.rows("moderators", key, lock=True):
            return False
        tx.delete("moderators", key)
        tx.commit()
        return True

    if services.economy.run(work) is not True:
        raise refuse(codes.NOT_FOUND, f"{user_id} is not a moderator of {creator_id}")
    return ModeratorOut(creator_id, user_id, appointed=False)


ROUTES: Final = [create_key, revoke_key, create_overlay_token, revoke_overlay_token,
                 rotate_overlay_token, appoint_moderator, dismiss_moderator]
"""The handlers of this module."""
