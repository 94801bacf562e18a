"""Demo data for ``giftflow serve --mode demo``: a creator with a live stream and funded viewers.

Seeding is idempotent: a second start finds what the first made and adds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Final

from giftflow.api.app import Services
from giftflow.ledger import Applied

CREATOR: Final = "demo-creator"
VIEWERS: Final = ("demo-viewer-1", "demo-viewer-2", "demo-viewer-3")
STREAM: Final = "demo-stream"


@dataclass(frozen=True, slots=True)
class DemoData:
    """What the demo holds, to print."""

    creator_id: str
    viewer_ids: tuple[str, ...]
    stream_id: str


def seed(services: Services) -> DemoData:
    """Make the demo creator, three viewers with 7,000 coins each, and a live stream."""
    economy = services.economy
    if economy.user(CREATOR) is None:
        economy.register_user(CREATOR, region="US", time_zone="UTC",
                              birth_date=date(1995, 1, 1), is_creator=True,
                              kyc_status="verified", handle="demo_creator")
    for viewer in VIEWERS:
        if economy.user(viewer) is None:
            economy.register_user(viewer, region="US", time_zone="UTC",
                                  birth_date=date(1990, 1, 1), handle=viewer.replace("-", "_"))
            order = economy.create_order(viewer, "web", "web-7000", "simulator",
                                         f"demo-{viewer}")
            if isinstance(order, Applied):
                economy.simulate_payment(order.response["order_id"])
    stream = services.streams.get(STREAM)
    if stream is None:
        services.streams.create(STREAM, CREATOR, "giftflow demo stream")
        stream = services.streams.get(STREAM)
    if stream is not None and stream.status == "scheduled":
        services.streams.start(STREAM)
    return DemoData(CREATOR, VIEWERS, STREAM)
