"""Keys, overlay tokens and moderators over HTTP."""

from __future__ import annotations

from datetime import date

import pyotp
from litestar.testing import TestClient

from giftflow.api.app import Services


def _enrolled_admin(services: Services) -> tuple[dict[str, str], str]:
    """An admin user enrolled in two-factor, and headers with an admin key naming them."""
    economy = services.economy
    economy.register_user("ops", region="US", time_zone="UTC", birth_date=date(1985, 1, 1))
    enrolled = economy.enroll_two_factor("ops")
    assert isinstance(enrolled, tuple)
    seed = enrolled[1]
    now_s = economy.clock_ms() // 1000
    assert economy.confirm_two_factor("ops", pyotp.TOTP(seed).at(now_s - 30)) is None
    key = services.access.create_key("admin", "ops")
    return {"Authorization": f"Bearer {key}"}, seed


def test_a_key_made_over_http_needs_a_held_admin_key_and_a_code(
        client: TestClient, services: Services, admin: dict[str, str]) -> None:  # type: ignore[type-arg]
    """An admin key that names no holder cannot make keys (403); a held admin key with a
    wrong code gets ``two_factor_invalid``; with the holder's current code it makes a viewer
    key that then authenticates as that viewer.
    """
    body = {"role": "viewer", "owner": "fan", "totp": "000000"}
    denied = client.post("/v1/keys", headers=admin, json=body)
    assert (denied.status_code, denied.json()["code"]) == (403, "forbidden")
    held, seed = _enrolled_admin(services)
    wrong = client.post("/v1/keys", headers=held, json=body)
    assert (wrong.status_code, wrong.json()["code"]) == (422, "two_factor_invalid")
    code = pyotp.TOTP(seed).at(services.economy.clock_ms() // 1000)
    made = client.post("/v1/keys", headers=held, json={**body, "totp": code})
    assert made.status_code == 201, made.text
    principal = services.access.authenticate(made.json()["key"])
    assert principal is not None
    assert (principal.role, principal.owner) == ("viewer", "fan")
    revoked = client.delete(f"/v1/keys/{made.json()['id']}", headers=admin)
    assert revoked.json()["revoked"] is True
    assert services.access.authenticate(made.json()["key"]) is None


def test_overlay_tokens_are_rotated_and_revoked_by_their_creator(
        client: TestClient, services: Services) -> None:  # type: ignore[type-arg]
    """A creator makes an overlay token, rotates it (the old one stops working, the new one
    works) and revokes it; another creator cannot touch it; the token itself cannot call the
    API.
    """
    economy = services.economy
    for creator in ("star", "rival"):
        economy.register_user(creator, region="US", time_zone="UTC",
                              birth_date=date(1990, 1, 1), is_creator=True)
    star = {"Authorization": f"Bearer {services.access.create_key('creator', 'star')}"}
    rival = {"Authorization": f"Bearer {services.access.create_key('creator', 'rival')}"}
    made = client.post("/v1/creators/star/overlay-tokens", headers=star)
    assert made.status_code == 201, made.text
    token, token_id = made.json()["key"], made.json()["id"]
    assert services.access.authenticate(token) is not None
    as_token = client.get("/v1/ledgers", headers={"Authorization": f"Bearer {token}"})
    assert as_token.status_code == 401
    other = client.post(f"/v1/creators/star/overlay-tokens/{token_id}/rotate", headers=rival)
    assert other.status_code == 403
    rotated = client.post(f"/v1/creators/star/overlay-tokens/{token_id}/rotate", headers=star)
    assert rotated.status_code == 201
    assert services.access.authenticate(token) is None
    fresh = rotated.json()["key"]
    assert services.access.authenticate(fresh) is not None
    gone = client.delete(f"/v1/creators/star/overlay-tokens/{rotated.json()['id']}",
                         headers=star)
    assert gone.json()["revoked"] is True
    assert services.access.authenticate(fresh) is None


def test_a_creator_appoints_and_dismisses_moderators(
        client: TestClient, services: Services) -> None:  # type: ignore[type-arg]
    """A creator appoints a moderator and dismisses them; dismissing again is 404; a viewer
    key cannot appoint for the creator.
    """
    economy = services.economy
    economy.register_user("star", region="US", time_zone="UTC", birth_date=date(1990, 1, 1),
                          is_creator=True)
    economy.register_user("mod", region="US", time_zone="UTC", birth_date=date(1990, 1, 1))
    star = {"Authorization": f"Bearer {services.access.create_key('creator', 'star')}"}
    viewer = {"Authorization": f"Bearer {services.access.create_key('viewer', 'mod')}"}
    assert client.put("/v1/creators/star/moderators/mod", headers=viewer).status_code == 403
    appointed = client.put("/v1/creators/star/moderators/mod", headers=star)
    assert appointed.json() == {"creator_id": "star", "user_id": "mod", "appointed": True}
    assert services.economy.store.read("moderators", {"creator_id": "star"})
    dismissed = client.delete("/v1/creators/star/moderators/mod", headers=star)
    assert dismissed.json()["appointed"] is False
    again = client.delete("/v1/creators/star/moderators/mod", headers=star)
    assert again.status_code == 404
