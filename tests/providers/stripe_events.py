"""Stripe webhook bodies and their signatures, made with the ``stripe`` package's own helpers."""

from __future__ import annotations

import json
import time
from typing import Any

import stripe

SECRET = "whsec_giftflow_test_secret"  # noqa: S105 (a test signing secret)
OTHER_SECRET = "whsec_another_endpoint"  # noqa: S105 (a test signing secret)


def sign(payload: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe would send for this body."""
    return stripe.WebhookSignature.generate_signature_header(
        payload.decode(), secret, timestamp=timestamp
    )


def event_body(event_type: str, obj: dict[str, Any], event_id: str = "evt_1") -> bytes:
    """A Stripe v1 event document around ``obj``."""
    return json.dumps({
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "type": event_type,
        "data": {"object": obj},
    }).encode()
