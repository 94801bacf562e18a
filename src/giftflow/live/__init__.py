"""Live rooms: streams, their lifecycle and their gap-free event log (SPEC.md §3 and §4)."""

from giftflow.live.bus import FrameBus, InMemoryFrameBus
from giftflow.live.streams import StreamEvents, Streams

__all__ = ["FrameBus", "InMemoryFrameBus", "StreamEvents", "Streams"]
