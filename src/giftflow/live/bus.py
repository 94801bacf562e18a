"""The frame bus: how committed frames reach the feeds that send them to subscribers.

The stream log in the store is the truth; the bus is the fast path. The process that commits a
frame publishes it once the transaction has committed; every feed that listens hears of it at
once, instead of waiting for its next read of the log. A feed that finds a gap (a frame it was
not told of) reads the log, so a lost or late message costs latency, never an event.

:class:`InMemoryFrameBus` is the backend for one process. A backend over Redis or NATS, for
several workers, implements the same :class:`FrameBus`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

from giftflow.invariants import invariant

FrameListener = Callable[[str, int, int, str], None]
"""Told of a committed frame: stream id, first and last seq, the frame's JSON text."""
LISTENERS_MAX: Final = 16
"""Listeners of one in-memory bus (one event hub per process, and tests)."""


class FrameBus(Protocol):
    """Carries committed frames to the feeds."""

    def publish(self, stream_id: str, first: int, last: int, text: str) -> None:
        """Hand a committed frame to every listener (never blocks on a slow one)."""
        ...

    def subscribe(self, listener: FrameListener) -> None:
        """Be told of every frame published from now on."""
        ...


class InMemoryFrameBus:
    """The bus of one process: listeners are called on the publishing thread."""

    def __init__(self) -> None:
        self._listeners: list[FrameListener] = []

    def publish(self, stream_id: str, first: int, last: int, text: str) -> None:
        """Call every listener with the frame."""
        for listener in self._listeners:
            listener(stream_id, first, last, text)

    def subscribe(self, listener: FrameListener) -> None:
        """Add a listener (a bounded number of them)."""
        invariant(len(self._listeners) < LISTENERS_MAX, "a bounded number of listeners")
        self._listeners.append(listener)
