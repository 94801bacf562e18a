"""Recorded room events as room-engine inputs, one list per room, in the order received.

The format is the normalized JSONL of ``shared/data/tiktok-live/events.jsonl``.

What the room engine takes so far: gifts, viewer counts, joins, likes, follows and shares.
Chat, goals, envelopes and the other message types are read past, for now.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from giftflow.invariants import invariant
from giftflow.ledger import Failure
from giftflow.live.room import Presence, RoomEngine, RoomEvent, RoomInput, Social, ViewerCount
from giftflow.live.streaks import ExternalGift
from giftflow.live.streams import FRAME_EVENTS_MAX, Streams

LINE_CHARS_MAX: Final = 1_000_000
"""A longer line is refused (a recorded event is a few kilobytes)."""
ROOMS_MAX: Final = 10_000
"""Rooms one recording may hold."""


@dataclass
class Recording:
    """A recording's inputs by room, and what was read past."""

    rooms: dict[str, list[RoomInput]] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


class RecordingError(ValueError):
    """A recording that cannot be read; the message says which line and why."""


def read_recording(lines: Iterable[str], rooms: Iterable[str] = ()) -> Recording:
    """The inputs of every room (or only of ``rooms``) of a normalized recording."""
    wanted = set(rooms)
    recording = Recording()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(line) > LINE_CHARS_MAX:
            raise RecordingError(f"line {number} is longer than {LINE_CHARS_MAX} characters")
        try:
            event = json.loads(line)
            room, kind = event["room"], event["type"]
            item = _input(event)
        except (ValueError, KeyError, TypeError) as error:
            raise RecordingError(f"line {number} is not a recorded event: {error!r}") from error
        if room is None or (wanted and room not in wanted):
            continue
        if item is None:
            recording.skipped[kind] = recording.skipped.get(kind, 0) + 1
            continue
        if room not in recording.rooms and len(recording.rooms) >= ROOMS_MAX:
            raise RecordingError(f"more than {ROOMS_MAX} rooms")
        recording.rooms.setdefault(room, []).append(item)
        recording.hosts.setdefault(room, event.get("host") or room)
    return recording


def _input(event: dict[str, Any]) -> RoomInput | None:
    kind, at_ms = event["type"], int(event["recv_ts_ms"])
    if kind == "gift":
        return ExternalGift(int(event["msg_id"]), str(event["user"]), int(event["gift_id"]),
                            int(event["gift_type"]), int(event["coin_value"]),
                            int(event["group_id"]), int(event["repeat_count"]),
                            bool(event["repeat_end"]), at_ms)
    if kind == "viewer_count":
        return ViewerCount(int(event["total"]), at_ms)
    if kind == "join":
        return Presence(str(event["user"]), "join", at_ms)
    if kind in ("like", "follow", "share"):
        count = int(event["count"]) if kind == "like" else 1
        return Social(str(event["user"]), kind, count, at_ms)
    return None


REPLAY_GAP_MAX_S: Final = 5.0
"""The longest pause a paced replay makes between two inputs (recordings have long gaps)."""
INPUTS_PER_FRAME_MAX: Final = 200
"""Inputs whose events an instant replay logs together, as one frame."""


@dataclass(frozen=True, slots=True)
class ReplayedStream:
    """What a replay fed into one stream."""

    stream_id: str
    room: str
    creator_id: str
    inputs: int
    events: int
    coins: int
    gifts: int
    unique_viewers: int
    peak_viewers: int


def replay_room(streams: Streams, stream_id: str, room: str, creator_id: str,
                inputs: list[RoomInput], *, speed: float | None = None,
                sleep: Callable[[float], None] = time.sleep) -> ReplayedStream | Failure:
    """Feed one room's inputs through a room engine into a new, live ``replay`` stream.

    ``speed`` None replays instantly; otherwise the pauses between inputs are the recorded
    ones divided by ``speed`` (at most ``REPLAY_GAP_MAX_S``), and each input's events are
    logged as it happens. The stream ends when the inputs do, after the open streaks end.
    """
    invariant(speed is None or speed > 0, "a replay speed is positive")
    made = streams.create(stream_id, creator_id, f"Replay of {room}", source="replay")
    if isinstance(made, Failure):
        return made
    started = streams.start(stream_id)
    if isinstance(started, Failure):
        return started
    engine, pending, logged, previous_ms = RoomEngine(), [], 0, None
    for index, item in enumerate(inputs):
        if speed is not None and previous_ms is not None and item.recv_ts_ms > previous_ms:
            sleep(min(REPLAY_GAP_MAX_S, (item.recv_ts_ms - previous_ms) / 1000 / speed))
        previous_ms = item.recv_ts_ms
        pending += engine.receive(item)
        if pending and (speed is not None or index % INPUTS_PER_FRAME_MAX == 0):
            logged += _log(streams, stream_id, pending)
            pending = []
    if previous_ms is not None:
        pending += engine.advance(previous_ms + engine.streaks.streak_timeout_ms)
    if pending:
        logged += _log(streams, stream_id, pending)
    ended = streams.end(stream_id)
    if isinstance(ended, Failure):
        return ended
    state = engine.state()
    return ReplayedStream(stream_id, room, creator_id, len(inputs), logged, state["coins"],
                          state["gifts"], state["unique_viewers"], state["peak_viewers"])


def _log(streams: Streams, stream_id: str, events: list[RoomEvent]) -> int:
    """Log events as frames of at most ``FRAME_EVENTS_MAX``; how many were logged."""
    for start in range(0, len(events), FRAME_EVENTS_MAX):
        logged = streams.log_events(stream_id, events[start:start + FRAME_EVENTS_MAX])
        invariant(not isinstance(logged, Failure), f"the replay stream took its events: {logged}")
    return len(events)
