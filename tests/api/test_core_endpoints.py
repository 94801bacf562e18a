"""The core endpoints of SPEC.md §8.1, end to end over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from api_world import make_user
from litestar.testing import TestClient

from giftflow.api.app import Services

ROSE = 5655



def test_a_viewer_buys_coins_and_gifts_to_a_live_stream(
        client: TestClient, admin: dict[str, str], services: Services) -> None:  # type: ignore[type-arg]
    """A platform creates a creator and a viewer, the viewer buys 700 coins through the
    simulator, the creator's stream goes live, and three Roses cost 3 coins and credit 15,000
    diamond minor units; the wallet shows what is left, and the stream log has the gifts.
    """
    creator = make_user(client, admin, "star", creator=True)
    viewer = make_user(client, admin, "fan")
    bought = client.post("/v1/purchases", headers={**admin, "Idempotency-Key": "buy-1"},
                         json={"user_id": viewer, "pack_id": "web-700", "channel": "web"})
    assert bought.status_code == 201, bought.text
    assert bought.json()["status"] == "paid"
    assert bought.json()["coins"] == 700
    stream = client.post("/v1/streams", headers=admin,
                         json={"creator_id": creator, "title": "Friday"}).json()
    assert stream["status"] == "scheduled"
    assert client.post(f"/v1/streams/{stream['id']}/start", headers=admin).json()[
        "status"] == "live"
    viewer_key = {"Authorization": f"Bearer {services.access.create_key('viewer', viewer)}"}
    sent = client.post(f"/v1/streams/{stream['id']}/gifts",
                       headers={**viewer_key, "Idempotency-Key": "g1"},
                       json={"sender_id": viewer, "gift_id": ROSE, "count": 3})
    assert sent.status_code == 201, sent.text
    body: dict[str, Any] = sent.json()
    assert (body["coins_spent"], body["diamonds_credited"], body["sender_coins"]) == (
        3, 15_000, 697)
    wallet = client.get(f"/v1/users/{viewer}/wallet", headers=viewer_key).json()
    assert wallet["coins"] == 697
    events = [e for frame in services.streams.frames_after(stream["id"], 0) for e in frame]
    assert [e["type"] for e in events] == ["stream_started", "gift"]


def test_gifts_to_a_stream_that_is_not_live_are_invalid_state(
        client: TestClient, admin: dict[str, str]) -> None:  # type: ignore[type-arg]
    """A gift to a scheduled stream is 409 ``invalid_state`` and moves nothing."""
    creator = make_user(client, admin, "star", creator=True)
    viewer = make_user(client, admin, "fan")
    client.post("/v1/purchases", headers=admin,
                json={"user_id": viewer, "pack_id": "web-70", "channel": "web"})
    stream = client.post("/v1/streams", headers=admin,
                         json={"creator_id": creator, "title": "Later"}).json()
    refused = client.post(f"/v1/streams/{stream['id']}/gifts", headers=admin,
                          json={"sender_id": viewer, "gift_id": ROSE, "count": 1})
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "invalid_state"
    assert client.get(f"/v1/users/{viewer}/wallet", headers=admin).json()["coins"] == 70


def test_keys_are_checked_before_anything_else(client: TestClient,  # type: ignore[type-arg]
                                               admin: dict[str, str],
                                               services: Services) -> None:
    """No key is 401 ``unauthorized``; another user's wallet is 403 ``forbidden``; the
    ledgers list their scales.
    """
    viewer = make_user(client, admin, "fan")
    other = make_user(client, admin, "other")
    assert client.get("/v1/ledgers").json()["code"] == "unauthorized"
    key = {"Authorization": f"Bearer {services.access.create_key('viewer', viewer)}"}
    denied = client.get(f"/v1/users/{other}/wallet", headers=key)
    assert (denied.status_code, denied.json()["code"]) == (403, "forbidden")
    ledgers = {row["code"]: row["scale"] for row in client.get("/v1/ledgers", headers=key).json()}
    assert (ledgers["COIN"], ledgers["DIAMOND"], ledgers["USD"]) == (0, 4, 2)


def test_bad_input_is_a_clear_problem(client: TestClient,  # type: ignore[type-arg]
                                      admin: dict[str, str]) -> None:
    """Wrong types, a count above 2^63, malformed JSON and an oversized body are 400 or 413
    problems with their codes.
    """
    viewer = make_user(client, admin, "fan")
    creator = make_user(client, admin, "star", creator=True)
    stream = client.post("/v1/streams", headers=admin,
                         json={"creator_id": creator, "title": "Live"}).json()
    client.post(f"/v1/streams/{stream['id']}/start", headers=admin)
    url = f"/v1/streams/{stream['id']}/gifts"
    for body in ({"sender_id": viewer, "gift_id": ROSE, "count": "3"},
                 {"sender_id": viewer, "gift_id": ROSE, "count": 2**63},
                 {"sender_id": viewer, "gift_id": ROSE, "count": 0}):
        answer = client.post(url, headers=admin, json=body)
        assert (answer.status_code, answer.json()["code"]) == (400, "validation_error"), body
    malformed = client.post(url, headers={**admin, "Content-Type": "application/json"},
                            content=b'{"sender_id": ')
    assert (malformed.status_code, malformed.json()["code"]) == (400, "validation_error")
    huge = client.post(url, headers={**admin, "Content-Type": "application/json"},
                       content=b'{"sender_id": "' + b"x" * 70_000 + b'"}')
    assert (huge.status_code, huge.json()["code"]) == (413, "body_too_large")


def test_the_document_names_operations_links_and_configured_choices(
        client: TestClient, services: Services) -> None:  # type: ignore[type-arg]
    """``/openapi.json`` names each operation after its handler (``createStream``), links a
    created stream's id into ``startStream`` and a created user's id into ``getWallet``, lists
    the economy file's regions and the topics as enums, and refuses unknown body fields.
    """
    document = client.get("/openapi.json").json()
    operations = {op["operationId"]: op for path in document["paths"].values()
                  for method, op in path.items() if method in ("get", "post", "put", "delete")}
    assert {"createUser", "createStream", "startStream", "sendGift", "appointModerator",
            "registerEndpoint"} <= set(operations)
    stream_links = operations["createStream"]["responses"]["201"]["links"]
    assert stream_links["StartStream"] == {"operationId": "startStream",
                                           "parameters": {"stream_id": "$response.body#/id"}}
    user_links = operations["createUser"]["responses"]["201"]["links"]
    assert user_links["GetWallet"]["parameters"] == {"user_id": "$response.body#/id"}
    schemas = document["components"]["schemas"]
    assert schemas["UserIn"]["properties"]["region"]["enum"] == sorted(
        services.economy.economy.regions)
    assert "Europe/Berlin" in schemas["UserIn"]["properties"]["time_zone"]["enum"]
    assert "gift_reversed" in str(schemas["EndpointIn"]["properties"]["topics"])
    assert schemas["StreamIn"]["additionalProperties"] is False
