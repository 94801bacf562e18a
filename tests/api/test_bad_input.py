"""Bad input over HTTP: every case gets a clear 4xx problem response, and the ledger is unchanged.

SPEC.md §10: wrong types, negative, zero and huge amounts, unknown ids, malformed JSON, oversized
bodies, a duplicate key with other content, a concurrent duplicate, and unicode in handles.
"""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient

from giftflow.adapters.sql.store import SqlStore
from giftflow.api.app import Services, create_app
from giftflow.ledger import verify

ROSE = 5655


def _ledger_state(store: SqlStore) -> tuple[Any, ...]:
    """Every balance that is not zero, after ``ledger verify`` passed: what must not move.

    (An unknown sender may leave an empty account behind; no money moves into it.)
    """
    facts = store.verification_facts()
    assert verify(facts).ok
    return tuple(sorted((a.id, a.posted, a.pending_debits, a.pending_credits)
                        for a in facts.accounts
                        if (a.posted, a.pending_debits, a.pending_credits) != (0, 0, 0)))


@pytest.fixture
def world(client: TestClient, admin: dict[str, str]) -> dict[str, str]:  # type: ignore[type-arg]
    """A creator with a live stream and a viewer with 70 coins."""
    ids = {}
    for handle, creator in (("star", True), ("fan", False)):
        made = client.post("/v1/users", headers={**admin, "Idempotency-Key": handle}, json={
            "handle": handle, "region": "US", "birth_date": "1990-01-01",
            "is_creator": creator})
        ids[handle] = made.json()["id"]
    client.post("/v1/purchases", headers=admin,
                json={"user_id": ids["fan"], "pack_id": "web-70", "channel": "web"})
    stream = client.post("/v1/streams", headers=admin,
                         json={"creator_id": ids["star"], "title": "Live"}).json()
    client.post(f"/v1/streams/{stream['id']}/start", headers=admin)
    return {**ids, "stream": stream["id"]}


def test_bad_gifts_are_clear_problems_and_move_nothing(
        client: TestClient, admin: dict[str, str], world: dict[str, str],  # type: ignore[type-arg]
        store: SqlStore) -> None:
    """Wrong types, negative, zero and 2^63 counts, unknown gifts, senders and streams,
    malformed JSON and an oversized body are each a 4xx problem with its code; the ledger's
    balances are exactly as before.
    """
    before = _ledger_state(store)
    url = f"/v1/streams/{world['stream']}/gifts"
    good = {"sender_id": world["fan"], "gift_id": ROSE, "count": 1}
    cases: list[tuple[str, dict[str, Any] | bytes, int, str]] = [
        (url, {**good, "count": "1"}, 400, "validation_error"),
        (url, {**good, "count": -1}, 400, "validation_error"),
        (url, {**good, "count": 0}, 400, "validation_error"),
        (url, {**good, "count": 2**63}, 400, "validation_error"),
        (url, {**good, "count": 1.5}, 400, "validation_error"),
        (url, {**good, "gift_id": 999_999_999}, 400, "validation_error"),
        (url, {**good, "sender_id": "nobody"}, 404, "not_found"),
        (url, {**good, "surprise": 1}, 400, "validation_error"),
        ("/v1/streams/no-such-stream/gifts", good, 404, "not_found"),
        (url, b'{"sender_id": ', 400, "validation_error"),
        (url, b"[]", 400, "validation_error"),
        (url, b'{"sender_id": "' + b"x" * 70_000 + b'"}', 413, "body_too_large"),
    ]
    for path, body, status, code in cases:
        if isinstance(body, bytes):
            answer = client.post(path, headers={**admin, "Content-Type": "application/json"},
                                 content=body)
        else:
            answer = client.post(path, headers=admin, json=body)
        assert (answer.status_code, answer.json()["code"]) == (status, code), (body, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert _ledger_state(store) == before


def test_a_key_reused_with_other_content_is_a_conflict(
        client: TestClient, admin: dict[str, str], world: dict[str, str],  # type: ignore[type-arg]
        store: SqlStore) -> None:
    """The same Idempotency-Key with another count is 409 ``idempotency_conflict`` and moves
    nothing; the same content again replays the first answer.
    """
    url = f"/v1/streams/{world['stream']}/gifts"
    headers = {**admin, "Idempotency-Key": "gift-1"}
    first = client.post(url, headers=headers,
                        json={"sender_id": world["fan"], "gift_id": ROSE, "count": 2})
    assert first.status_code == 201, first.text
    before = _ledger_state(store)
    conflict = client.post(url, headers=headers,
                           json={"sender_id": world["fan"], "gift_id": ROSE, "count": 3})
    assert (conflict.status_code, conflict.json()["code"]) == (409, "idempotency_conflict")
    again = client.post(url, headers=headers,
                        json={"sender_id": world["fan"], "gift_id": ROSE, "count": 2})
    assert again.json() == first.json()
    assert _ledger_state(store) == before


def test_a_concurrent_duplicate_is_in_progress(services: Services, admin: dict[str, str],
                                               world: dict[str, str]) -> None:
    """While a gift is being applied, the same request with the same key is 409
    ``idempotency_in_progress``; the first still succeeds.
    """
    services.gifts_in_flight.add((world["fan"], "busy-key"))
    with TestClient(app=create_app(services)) as client:
        busy = client.post(f"/v1/streams/{world['stream']}/gifts",
                           headers={**admin, "Idempotency-Key": "busy-key"},
                           json={"sender_id": world["fan"], "gift_id": ROSE, "count": 1})
    services.gifts_in_flight.discard((world["fan"], "busy-key"))
    assert (busy.status_code, busy.json()["code"]) == (409, "idempotency_in_progress")


def test_unicode_handles_are_refused_clearly(client: TestClient,  # type: ignore[type-arg]
                                             admin: dict[str, str]) -> None:
    """Handles are letters, digits, '.' and '_': a handle with emoji, accents or spaces is a
    400 problem, and no user is made.
    """
    for handle in ("ståle", "fan 1", "🎁gifts", "", "a" * 65):
        answer = client.post("/v1/users", headers=admin,
                             json={"handle": handle, "region": "US"})
        assert (answer.status_code, answer.json()["code"]) == (400, "validation_error"), handle
