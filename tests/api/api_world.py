"""Helpers the API tests share (``tests/api`` is on pytest's ``pythonpath``)."""

from __future__ import annotations

from litestar.testing import TestClient


def make_user(client: TestClient, admin: dict[str, str], handle: str, *,  # type: ignore[type-arg]
              creator: bool = False) -> str:
    """Create an adult US user (a creator with ``creator``) over the API; returns its id."""
    answer = client.post("/v1/users", headers={**admin, "Idempotency-Key": f"user-{handle}"},
                         json={"handle": handle, "region": "US", "birth_date": "1990-05-01",
                               "is_creator": creator})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])
