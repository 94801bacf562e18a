"""Outbound webhooks over HTTP: a platform registers, reads the log, and asks for redelivery."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from litestar.testing import TestClient

from giftflow.api.app import Services
from giftflow.api.webhooks import verify_signature


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ARG002 -- stdlib
        return


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A local HTTP receiver and what it got."""
    handler = type("Handler", (_Receiver,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks", handler.received
    finally:
        server.shutdown()
        server.server_close()


def test_a_platform_registers_an_endpoint_and_gets_signed_purchase_events(
        client: TestClient, services: Services,  # type: ignore[type-arg]
        receiver: tuple[str, list[tuple[dict[str, str], bytes]]]) -> None:
    """A service key registers an endpoint for ``purchase_completed`` (the secret is shown
    once), a purchase of one of its users is delivered signed, the log lists it, another
    platform cannot read it, and a redelivery sends it again.
    """
    url, received = receiver
    service = {"Authorization": f"Bearer {services.access.create_key('service', 'p1')}"}
    other = {"Authorization": f"Bearer {services.access.create_key('service', 'p2')}"}
    made = client.post("/v1/webhooks", headers=service,
                       json={"url": url, "topics": ["purchase_completed"]})
    assert made.status_code == 201, made.text
    endpoint, secret = made.json()["id"], made.json()["secret"]
    assert client.get("/v1/webhooks", headers=service).json()[0]["secret"] is None
    user = client.post("/v1/users", headers=service,
                       json={"handle": "fan", "region": "US", "birth_date": "1990-01-01"})
    bought = client.post("/v1/purchases", headers=service, json={
        "user_id": user.json()["id"], "pack_id": "web-70", "channel": "web"})
    assert bought.status_code == 201, bought.text
    assert services.webhooks.fan_out().deliveries == 1
    assert services.webhooks.deliver_due().delivered == 1
    [(headers, body)] = received
    now_s = services.economy.clock_ms() // 1000
    assert verify_signature(secret, headers["Giftflow-Signature"], body, 300, now_s)
    assert json.loads(body)["topic"] == "purchase_completed"
    log = client.get(f"/v1/webhooks/{endpoint}/deliveries", headers=service).json()
    assert [(d["topic"], d["status"]) for d in log] == [("purchase_completed", "delivered")]
    denied = client.get(f"/v1/webhooks/{endpoint}/deliveries", headers=other)
    assert denied.status_code == 403
    attempts = client.get(f"/v1/webhook-deliveries/{log[0]['id']}/attempts", headers=service)
    assert [a["status_code"] for a in attempts.json()] == [200]
    again = client.post(f"/v1/webhook-deliveries/{log[0]['id']}/redeliver", headers=service)
    assert again.status_code == 202
    services.webhooks.deliver_due()
    assert len(received) == 2
    viewer = {"Authorization": f"Bearer {services.access.create_key('viewer', 'x')}"}
    assert client.get("/v1/webhooks", headers=viewer).status_code == 403
