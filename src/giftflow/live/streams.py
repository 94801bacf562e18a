"""Streams and their event log.

A stream has a creator, a title, a source and a lifecycle ``scheduled → live → ended``. Every
event of a stream gets the next ``seq`` of that stream (1, 2, 3… with no gap), assigned in the
same transaction as the change it reports: the stream row holds ``last_seq`` and is locked while
events are appended. Events are stored as frames, a JSON array of consecutive events, which is
what a WebSocket client receives (SPEC.md §4): a batch of gifts to one stream is one frame.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from giftflow.economy import codes
from giftflow.economy.ports import EconomyStore, EconomyTx, Row
from giftflow.invariants import invariant
from giftflow.ledger import Failure
from giftflow.live.bus import FrameBus, InMemoryFrameBus

INVALID_STATE: Final = "invalid_state"
"""A change that the stream's state does not allow (a gift to a stream that is not live)."""

SOURCES: Final = ("native", "tiktok", "replay", "simulated")
TITLE_CHARS_MAX: Final = 200
CREATORS_CACHED_MAX: Final = 100_000
"""Streams whose creator is remembered."""
FRAMES_READ_MAX: Final = 1_000
"""Frames one read of the log returns."""
FRAME_EVENTS_MAX: Final = 1_000
"""Events one logged frame holds, when a caller logs them (gift batches make their own)."""
PRUNE_FRAMES_MAX: Final = 1_000
"""Frames one pruning transaction removes."""


@dataclass(frozen=True, slots=True)
class Stream:
    """A stream as the API shows it."""

    id: str
    creator_id: str
    title: str
    source: str
    status: str
    last_seq: int


def _stream(row: Row) -> Stream:
    return Stream(row["id"], row["creator_id"], row["title"], row["source"], row["status"],
                  row["last_seq"])


class StreamEvents:
    """Appends events to streams' logs inside a transaction, with gap-free ``seq``.

    Once a transaction that appended a frame commits, the frame is published on the frame bus,
    from the committing thread: so live subscribers need not wait for the next read of the log.
    The log stays the truth; the bus is a shortcut.
    """

    def __init__(self, bus: FrameBus) -> None:
        self.bus = bus

    def append(self, tx: EconomyTx, stream: Row, events: Sequence[tuple[str, Mapping[str, Any]]],
               now_ms: int) -> list[dict[str, Any]]:
        """Append ``events`` (type, data) to a stream whose row the caller locked.

        Returns them with their ``seq``, as one frame.
        """
        invariant(bool(events), "a frame holds at least one event")
        first = stream["last_seq"] + 1
        frame = [{"stream_id": stream["id"], "seq": first + n, "type": kind, "ts": now_ms,
                  "data": data} for n, (kind, data) in enumerate(events)]
        last = first + len(events) - 1
        text = orjson.dumps(frame).decode()
        tx.insert("stream_frames", {"stream_id": stream["id"], "first_seq": first,
                                    "last_seq": last, "ts_ms": now_ms, "events": text})
        tx.after_commit(functools.partial(self.bus.publish, stream["id"], first, last, text))
        tx.update("streams", {"id": stream["id"]}, {"last_seq": last})
        stream["last_seq"] = last
        return frame

    def refusals(self, tx: EconomyTx, subjects: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Streams among ``subjects`` that cannot take gifts: unknown, or not live."""
        ids = sorted(s.removeprefix("stream:") for s in subjects if s.startswith("stream:"))
        if not ids:
            return {}
        status = {row["id"]: row["status"] for row in tx.rows_in("streams", "id", ids)}
        refused: dict[str, tuple[str, str]] = {}
        for stream_id in ids:
            found = status.get(stream_id)
            if found is None:
                refused[f"stream:{stream_id}"] = (codes.NOT_FOUND, f"no stream {stream_id}")
            elif found != "live":
                refused[f"stream:{stream_id}"] = (INVALID_STATE,
                                                  f"stream {stream_id} is {found}, not live")
        return refused

    def stage(self, tx: EconomyTx, frames: Mapping[str, list[tuple[str, dict[str, Any]]]],
              now_ms: int) -> Mapping[str, list[tuple[str, dict[str, Any]]]]:
        """Append a batch's events to their streams' logs, one frame per stream.

        ``frames`` maps ``stream:<id>`` subjects to (type, data) events. Returns the subjects
        that are not streams of this store (video gifts), for the caller's outbox.
        """
        ids = sorted(subject.removeprefix("stream:") for subject in frames
                     if subject.startswith("stream:"))
        streams = {row["id"]: row for row in tx.rows_in("streams", "id", ids, order_by=("id",),
                                                        lock=True)} if ids else {}
        rest: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for subject, events in frames.items():
            stream = streams.get(subject.removeprefix("stream:"))
            if stream is None:
                rest[subject] = events
                continue
            self.append(tx, stream, events, now_ms)
        return rest


class Streams:
    """Creating, starting and ending streams, and reading their event logs."""

    def __init__(self, store: EconomyStore, clock_ms: Any = None,  # noqa: ANN401
                 bus: FrameBus | None = None) -> None:
        self.store = store
        self.clock_ms = clock_ms or store.now_ms
        self.bus = bus or InMemoryFrameBus()
        self.events = StreamEvents(self.bus)
        self._creators: dict[str, str] = {}

    def create(self, stream_id: str, creator_id: str, title: str,
               source: str = "native") -> Stream | Failure:
        """A new stream in ``scheduled``."""
        if source not in SOURCES or not 0 < len(title) <= TITLE_CHARS_MAX:
            return Failure(codes.VALIDATION_ERROR,
                           f"title is 1..{TITLE_CHARS_MAX} characters; source is one of {SOURCES}")
        with self.store.economy_tx() as tx:
            creators = tx.rows("users", {"id": creator_id})
            if not creators or not creators[0]["is_creator"]:
                return Failure(codes.NOT_FOUND, f"no creator {creator_id}")
            row = {"id": stream_id, "creator_id": creator_id, "title": title, "source": source,
                   "status": "scheduled", "last_seq": 0, "created_at_ms": self.clock_ms()}
            tx.insert("streams", row)
            tx.commit()
        return _stream(row)

    def creator_of(self, stream_id: str) -> str | None:
        """The creator of a stream (which never changes, so it is remembered), or ``None``."""
        found = self._creators.get(stream_id)
        if found is None:
            stream = self.get(stream_id)
            if stream is None:
                return None
            if len(self._creators) >= CREATORS_CACHED_MAX:
                self._creators.clear()
            found = self._creators[stream_id] = stream.creator_id
        return found

    def get(self, stream_id: str) -> Stream | None:
        """One stream, committed."""
        rows = self.store.read("streams", {"id": stream_id})
        return _stream(rows[0]) if rows else None

    def start(self, stream_id: str) -> Stream | Failure:
        """``scheduled → live``, with a ``stream_started`` event."""
        return self._move(stream_id, "scheduled", "live", "started_at_ms", "stream_started")

    def end(self, stream_id: str) -> Stream | Failure:
        """``live → ended``, with a ``stream_ended`` event."""
        return self._move(stream_id, "live", "ended", "ended_at_ms", "stream_ended")

    def _move(self, stream_id: str, before: str, after: str, stamp: str,
              event: str) -> Stream | Failure:
        now = self.clock_ms()
        with self.store.economy_tx() as tx:
            rows = tx.rows("streams", {"id": stream_id}, lock=True)
            if not rows:
                return Failure(codes.NOT_FOUND, f"no stream {stream_id}")
            stream = rows[0]
            if stream["status"] != before:
                return Failure(INVALID_STATE, f"stream {stream_id} is {stream['status']}, "
                                              f"not {before}")
            tx.update("streams", {"id": stream_id}, {"status": after, stamp: now})
            self.events.append(tx, stream, [(event, {"status": after})], now)
            tx.commit()
            stream["status"] = after
        return _stream(stream)

    def prune_history(self, before_ms: int, frames_max: int = PRUNE_FRAMES_MAX) -> int:
        """Remove at most ``frames_max`` frames logged before ``before_ms``; how many went.

        The oldest go first. A client that resumes from a removed seq gets ``resync``.
        """
        with self.store.economy_tx() as tx:
            old = tx.rows("stream_frames", {"ts_ms <": before_ms}, order_by=("ts_ms",),
                          limit=min(frames_max, PRUNE_FRAMES_MAX))
            for row in old:
                tx.delete("stream_frames", {"stream_id": row["stream_id"],
                                            "first_seq": row["first_seq"]})
            tx.commit()
        return len(old)

    def log_events(self, stream_id: str, events: Sequence[tuple[str, Mapping[str, Any]]],
                   now_ms: int | None = None) -> int | Failure:
        """Append room events to a live stream's log as one frame; its last seq."""
        invariant(0 < len(events) <= FRAME_EVENTS_MAX,
                  f"a frame holds 1..{FRAME_EVENTS_MAX} events")
        at_ms = self.clock_ms() if now_ms is None else now_ms
        with self.store.economy_tx() as tx:
            rows = tx.rows("streams", {"id": stream_id}, lock=True)
            if not rows:
                return Failure(codes.NOT_FOUND, f"no stream {stream_id}")
            if rows[0]["status"] != "live":
                return Failure(INVALID_STATE, f"stream {stream_id} is {rows[0]['status']}")
            self.events.append(tx, rows[0], events, at_ms)
            tx.commit()
        last: int = rows[0]["last_seq"]
        return last

    def frame_texts_after(self, stream_id: str, after_seq: int,
                          limit: int = FRAMES_READ_MAX) -> list[tuple[int, int, str]]:
        """The logged frames after ``after_seq`` as stored: first seq, last seq, JSON text.

        ``after_seq`` must be the last seq of a frame (or 0), so that no frame is cut.
        """
        rows = self.store.read("stream_frames", {"stream_id": stream_id,
                                                 "last_seq >": after_seq},
                               order_by=("first_seq",), limit=min(limit, FRAMES_READ_MAX))
        invariant(not rows or rows[0]["first_seq"] > after_seq,
                  f"seq {after_seq} of stream {stream_id} is inside a frame")
        return [(row["first_seq"], row["last_seq"], row["events"]) for row in rows]

    def frames_after(self, stream_id: str, after_seq: int,
                     limit: int = FRAMES_READ_MAX) -> list[list[dict[str, Any]]]:
        """The logged frames holding events after ``after_seq``, those events only, in order."""
        rows = self.store.read("stream_frames", {"stream_id": stream_id,
                                                 "last_seq >": after_seq},
                               order_by=("first_seq",), limit=min(limit, FRAMES_READ_MAX))
        frames = []
        for row in rows:
            events = [event for event in orjson.loads(row["events"]) if event["seq"] > after_seq]
            frames.append(events)
        return frames
