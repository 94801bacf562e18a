"""The event stream of SPEC.md §4 over WebSocket: snapshot or catch-up, then live frames.

Events live in the store (``stream_frames``), written with the changes they report, so the
stream survives restarts and any worker can serve any client. One :class:`StreamFeed` per
stream with subscribers sends, every tick, the tick's new events to every subscriber as one
frame, encoded once. It learns of committed frames at once from the frame bus (``live/bus.py``;
in memory, within this process, for now), and reads the log when they leave a gap (another
process wrote) or every ``LOG_READ_MS`` when it heard of nothing. A subscriber that does not
keep up is dropped and told to ``resync``: it never slows the feed, and the feed never slows
gift processing.

How a frame reaches a subscriber:

- **directly**, once the subscriber is live and the server offers the ``giftflow.frames``
  extension (``api/ws_frames.py``, what ``giftflow serve`` runs): each tick's frame is
  serialized once, and the feed's walker goes round the subscribers writing to each connection's
  transport, in one call, the tick frames it lacks. A subscriber with more than
  ``SUBSCRIBER_BUFFER_BYTES_MAX`` unsent bytes, or behind the ``TICK_FRAMES_KEPT`` ticks the feed
  keeps, is dropped.
- **through its bounded queue** otherwise (and while it catches up): its own task sends the
  frames as ASGI messages. A subscriber with ``SUBSCRIBER_FRAMES_MAX`` frames waiting is dropped.

Ticks come every ``TICK_MS``; a walk of many subscribers may take several ticks, and writes each
subscriber everything new when it comes round, so latency is at most about one walk.

A client that connects with ``after_seq=N`` gets the logged events after ``N`` and then the live
ones, each exactly once and in order; without it, a ``snapshot`` of the stream comes first.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from litestar.response.sse import ServerSentEventMessage

from giftflow.api.ws_frames import FrameWriter, text_frame
from giftflow.live import Streams
from giftflow.live.streams import Stream

logger = logging.getLogger(__name__)

TICK_MS: Final = 20
"""How often a feed looks for new frames (SPEC.md §4: one frame per 20–50 ms tick)."""
TICK_FRAMES_KEPT: Final = 256
"""Tick frames a feed keeps for its walker: a direct subscriber further behind is dropped."""
WALK_SLICE_SUBSCRIBERS: Final = 256
"""Subscribers the walker writes to before it lets the event loop serve other work."""
PUBLISHED_FRAMES_MAX: Final = 4096
"""Committed frames that wait for a feed's next tick; past that, the feed reads the log."""
LOG_READ_MS: Final = 250
"""How often a feed that was told of nothing reads the log (for other processes' writes)."""
SUBSCRIBER_FRAMES_MAX: Final = 256
"""Frames a subscriber may have waiting in its queue before it is told to resync."""
SUBSCRIBER_BUFFER_BYTES_MAX: Final = 1 << 20
"""Bytes written directly to a subscriber and not yet taken before it is told to resync."""
SUBSCRIBERS_PER_STREAM_MAX: Final = 20_000
"""Subscribers of one stream in one process."""
CATCH_UP_FRAMES_MAX: Final = 10_000
"""Frames a reconnecting client may be behind before it is told to resync instead."""


Frame = tuple[int, int, str]
"""A frame's first and last ``seq`` and its JSON text (as the log stores it, and as it is
encoded once for every subscriber)."""


@dataclass(eq=False)
class Subscriber:
    """One client of a feed.

    Its bounded queue holds encoded frames (``None`` means resync); ``direct`` is its
    connection's frame writer once frames go to it directly.
    """

    queue: asyncio.Queue[Frame | None] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_FRAMES_MAX))
    dropped: bool = False
    direct: FrameWriter | None = None
    sent: int = 0
    """The last seq written directly to the client."""

    def offer(self, frame: Frame) -> None:
        """Queue a frame without waiting; a full queue drops the subscriber."""
        if self.dropped:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.drop()

    def drop(self) -> None:
        """Stop sending; the subscriber's task tells the client to resync."""
        self.dropped, self.direct = True, None
        with contextlib.suppress(asyncio.QueueEmpty):
            self.queue.get_nowait()
        self.queue.put_nowait(None)


_UNKNOWN: Final = b"?"
"""Marks a last seq whose missing frames this slice has not looked up yet."""


@dataclass(frozen=True, slots=True)
class TickFrame:
    """One tick's frame: its seqs, its JSON text, and the same as a serialized WebSocket frame."""

    first: int
    last: int
    text: str
    serialized: bytes


class StreamFeed:
    """One stream's frames, made every tick, and the walk that writes them to its subscribers.

    Every tick joins the frames committed since the last one into one :class:`TickFrame`,
    kept in a bounded ring, and queues it for the subscribers that take frames through their
    queue. A walker goes round the direct subscribers, a slice at a time (the event loop serves
    requests between slices), and writes to each, in one call, every tick frame after the last
    seq it has: so each subscriber hears of new events within one walk, however long a walk
    of many subscribers takes, and a walk never waits for a tick.
    """

    def __init__(self, streams: Streams, stream_id: str, last_seq: int,
                 on_idle: Callable[[str], None]) -> None:
        self.streams = streams
        self.stream_id = stream_id
        self.last_seq = last_seq
        self.subscribers: set[Subscriber] = set()
        self.direct: set[Subscriber] = set()
        """The subscribers the walker writes to (a subset of ``subscribers``)."""
        self.published: collections.deque[Frame] = collections.deque(
            maxlen=PUBLISHED_FRAMES_MAX)
        """Frames this process committed, appended by the committing thread."""
        self.ticks: collections.deque[TickFrame] = collections.deque(maxlen=TICK_FRAMES_KEPT)
        self._due = asyncio.Event()
        self._on_idle = on_idle
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start ticking and walking (on the running loop)."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run()), loop.create_task(self._walk())]

    def go_direct(self, subscriber: Subscriber, writer: FrameWriter, sent: int) -> None:
        """From now on, the walker writes to ``subscriber`` every frame after ``sent``."""
        subscriber.direct, subscriber.sent = writer, sent
        self.direct.add(subscriber)
        self._due.set()

    def leave(self, subscriber: Subscriber) -> None:
        """Forget a subscriber."""
        self.subscribers.discard(subscriber)
        self.direct.discard(subscriber)
        self._due.set()  # a walker waiting for work finds there is none left and ends

    async def _run(self) -> None:
        read_at = -math.inf
        try:
            while self.subscribers:
                await asyncio.sleep(TICK_MS / 1000)
                stored = self._take_published()
                now = time.monotonic()
                if stored is None or (not stored and now - read_at >= LOG_READ_MS / 1000):
                    stored = await asyncio.to_thread(self.streams.frame_texts_after,
                                                     self.stream_id, self.last_seq)
                    read_at = now
                if stored:
                    self._tick(stored)
        except Exception:  # a bug: tell the subscribers to resync rather than hang
            logger.exception("stream feed %s failed", self.stream_id)
            for subscriber in tuple(self.subscribers):
                subscriber.drop()
        finally:
            self._due.set()
            self._on_idle(self.stream_id)

    def _take_published(self) -> list[Frame] | None:
        """The published frames that follow ``last_seq`` without a gap; ``None`` on a gap.

        A gap (a frame committed by another process, or published before this feed began, or
        more than ``PUBLISHED_FRAMES_MAX`` of them) means the log must be read instead.
        """
        published = self.published
        taken = sorted(published.popleft() for _ in range(len(published)))
        expected, frames = self.last_seq + 1, []
        for frame in taken:
            if frame[1] < expected:
                continue
            if frame[0] != expected:
                return None
            frames.append(frame)
            expected = frame[1] + 1
        return frames

    def _tick(self, stored: list[Frame]) -> None:
        """Make the tick's frame; queue it for the queued subscribers; wake the walker."""
        text = stored[0][2] if len(stored) == 1 else "[" + ",".join(
            events[1:-1] for _, _, events in stored) + "]"
        first, last = stored[0][0], stored[-1][1]
        self.last_seq = last
        self.ticks.append(TickFrame(first, last, text, text_frame(text.encode())))
        if self.direct:
            self._due.set()
        frame = (first, last, text)
        for subscriber in self.subscribers - self.direct:
            subscriber.offer(frame)

    async def _walk(self) -> None:
        """Write every direct subscriber what it lacks, round after round, while there is work."""
        try:
            while self.subscribers:
                await self._due.wait()
                self._due.clear()
                missing: dict[int, bytes | None] = {}  # by last seq sent, for this slice
                everyone = tuple(self.direct)
                for start in range(0, len(everyone), WALK_SLICE_SUBSCRIBERS):
                    if start:
                        await asyncio.sleep(0)
                        missing.clear()  # ticks may have come meanwhile
                    self._write_slice(everyone[start:start + WALK_SLICE_SUBSCRIBERS], missing)
        except Exception:  # a bug: tell the direct subscribers to resync rather than hang
            logger.exception("stream walker %s failed", self.stream_id)
            for subscriber in tuple(self.direct):
                self._drop(subscriber)

    def _write_slice(self, subscribers: tuple[Subscriber, ...],
                     missing: dict[int, bytes | None]) -> None:
        """Write each subscriber of a slice the frames it lacks, in one call each."""
        last_seq = self.last_seq
        for subscriber in subscribers:
            writer = subscriber.direct
            sent = subscriber.sent
            if sent >= last_seq or writer is None:
                continue
            data = missing.get(sent, _UNKNOWN)
            if data is _UNKNOWN:
                data = missing[sent] = self._missing(sent)
            transport = writer.transport
            if data is None or writer.closing() or \
                    transport.get_write_buffer_size() > SUBSCRIBER_BUFFER_BYTES_MAX:
                self._drop(subscriber)
                continue
            transport.write(data)  # one system call for all the frames it lacks
            subscriber.sent = last_seq

    def _missing(self, sent: int) -> bytes | None:
        """The serialized tick frames after ``sent``, joined; ``None`` if the ring lost some."""
        missing: list[TickFrame] = []
        for tick in reversed(self.ticks):
            if tick.last <= sent:
                break
            missing.append(tick)
        if not missing or missing[-1].first > sent + 1:
            return None
        missing.reverse()
        chunks = [tick.serialized for tick in missing]
        if missing[0].first <= sent:  # where a queued catch-up met the ticks
            text = unsent_part((missing[0].first, missing[0].last, missing[0].text), sent)
            chunks[0] = text_frame((text or "[]").encode())
        return b"".join(chunks)

    def _drop(self, subscriber: Subscriber) -> None:
        self.direct.discard(subscriber)
        subscriber.drop()


class EventHub:
    """The feeds of this process, one per stream with subscribers."""

    def __init__(self, streams: Streams) -> None:
        self.streams = streams
        self.feeds: dict[str, StreamFeed] = {}
        streams.bus.subscribe(self._committed)

    def _committed(self, stream_id: str, first: int, last: int, text: str) -> None:
        """A frame of this process committed (on the committing thread; deques are safe)."""
        feed = self.feeds.get(stream_id)
        if feed is not None:
            feed.published.append((first, last, text))

    def subscribe(self, stream_id: str, last_seq: int) -> tuple[Subscriber, int] | None:
        """A new subscriber of the stream, and the seq after which it receives live frames.

        ``None`` when the stream has as many subscribers as it may.
        """
        feed = self.feeds.get(stream_id)
        if feed is None:
            feed = self.feeds[stream_id] = StreamFeed(self.streams, stream_id, last_seq,
                                                      self._idle)
            feed.subscribers.add(subscriber := Subscriber())
            feed.start()
            return subscriber, feed.last_seq
        if len(feed.subscribers) >= SUBSCRIBERS_PER_STREAM_MAX:
            return None
        subscriber = Subscriber()
        feed.subscribers.add(subscriber)
        return subscriber, feed.last_seq

    def unsubscribe(self, stream_id: str, subscriber: Subscriber) -> None:
        """Forget a subscriber; the feed stops after its last one leaves."""
        feed = self.feeds.get(stream_id)
        if feed is not None:
            feed.leave(subscriber)

    def go_direct(self, stream_id: str, subscriber: Subscriber, writer: FrameWriter,
                  sent: int) -> None:
        """Have the stream's walker write to ``subscriber`` the frames after ``sent``."""
        feed = self.feeds.get(stream_id)
        if feed is not None and subscriber in feed.subscribers:
            feed.go_direct(subscriber, writer, sent)

    def _idle(self, stream_id: str) -> None:
        feed = self.feeds.get(stream_id)
        if feed is not None and not feed.subscribers:
            del self.feeds[stream_id]


def resync_frame(stream_id: str, last_seq: int) -> str:
    """The frame that tells a client to reconnect without ``after_seq``."""
    reason = "too far behind; reconnect without after_seq"
    return orjson.dumps([{"stream_id": stream_id, "seq": last_seq, "type": "resync",
                          "data": {"reason": reason}}]).decode()


def snapshot_frame(stream_id: str, state: dict[str, Any], last_seq: int) -> str:
    """The first frame of a client that connects without ``after_seq``."""
    return orjson.dumps([{"stream_id": stream_id, "seq": last_seq, "type": "snapshot",
                          "data": state}]).decode()


Sent = tuple[int, str, bool]
"""What a client is sent: the frame's last seq, its JSON text, and whether it is a resync."""


async def serve_events(socket: Any, hub: EventHub, stream_id: str,  # noqa: ANN401 -- WebSocket
                       after_seq: int | None, writer: FrameWriter | None = None) -> None:
    """Send a connected client its stream's events until it leaves or must resync."""
    streams = hub.streams
    stream = await asyncio.to_thread(streams.get, stream_id)
    if stream is None:
        await socket.close(code=4404, reason="no such stream")
        return
    joined = hub.subscribe(stream_id, stream.last_seq)
    if joined is None:
        await socket.close(code=1013, reason="too many subscribers; try later")
        return
    subscriber, live_from = joined
    try:
        await socket.accept()
        sent = live_from if after_seq is None else after_seq
        async for last, text, resync in first_frames(streams, stream, after_seq, live_from):
            await socket.send_text(text)
            if resync:
                await socket.close(code=1000)
                return
            sent = last
        await _forward(socket, hub, subscriber, stream_id, sent, writer)
    finally:
        hub.unsubscribe(stream_id, subscriber)


async def first_frames(streams: Streams, stream: Stream, after_seq: int | None,
                       live_from: int) -> AsyncIterator[Sent]:
    """The snapshot, or the logged frames after ``after_seq`` up to ``live_from``.

    A client too far behind (or ahead) gets a resync instead, and nothing after it.
    """
    stream_id = stream.id
    if after_seq is None:
        state = {"status": stream.status, "title": stream.title, "creator_id": stream.creator_id}
        yield live_from, snapshot_frame(stream_id, state, live_from), False
        return
    if after_seq > live_from:
        yield live_from, resync_frame(stream_id, live_from), True
        return
    sent, frames_read = after_seq, 0
    while sent < live_from:
        frames = await asyncio.to_thread(streams.frames_after, stream_id, sent)
        frames_read += len(frames)
        kept = [[e for e in frame if e["seq"] <= live_from] for frame in frames]
        kept = [frame for frame in kept if frame]
        pruned = bool(kept) and kept[0][0]["seq"] != sent + 1  # older than the history kept
        if not kept or pruned or frames_read > CATCH_UP_FRAMES_MAX:
            yield live_from, resync_frame(stream_id, live_from), True
            return
        for frame in kept:
            sent = frame[-1]["seq"]
            yield sent, orjson.dumps(frame).decode(), False


def unsent_part(frame: Frame, sent: int) -> str | None:
    """The part of a queued frame after ``sent`` (``None`` when all of it was sent).

    Only the first live frames can overlap the catch-up: a frame read for the catch-up may also
    have been queued.
    """
    first, last, text = frame
    if last <= sent:
        return None
    if first <= sent:
        return orjson.dumps([e for e in orjson.loads(text) if e["seq"] > sent]).decode()
    return text


async def _forward(socket: Any, hub: EventHub, subscriber: Subscriber,  # noqa: ANN401
                   stream_id: str, sent: int, writer: FrameWriter | None) -> None:
    """Pass live frames on until the client leaves or is told to resync.

    Once the queue is empty and a frame writer is offered, the feed writes to the client
    directly, and this task only waits for the client to leave or to be dropped.
    """
    leaving = asyncio.get_running_loop().create_task(_until_closed(socket))
    try:
        while not leaving.done():
            if writer is not None and subscriber.direct is None and \
                    subscriber.queue.empty() and not subscriber.dropped:
                hub.go_direct(stream_id, subscriber, writer, sent)
            getting = asyncio.ensure_future(subscriber.queue.get())
            done, _ = await asyncio.wait({getting, leaving}, return_when=asyncio.FIRST_COMPLETED)
            if getting not in done:
                getting.cancel()
                return
            frame = getting.result()
            if frame is None:
                await socket.send_text(resync_frame(stream_id, sent))
                await socket.close(code=1000)
                return
            text = unsent_part(frame, sent)
            if text is not None:
                await socket.send_text(text)
                sent = frame[1]
    finally:
        leaving.cancel()


async def live_frames(subscriber: Subscriber, stream_id: str, sent: int,
                      idle_s: float) -> AsyncIterator[Sent | None]:
    """A queued subscriber's live frames, ending with a resync if it is dropped.

    ``None`` after ``idle_s`` without a frame (for a keep-alive).
    """
    while True:
        try:
            frame = await asyncio.wait_for(subscriber.queue.get(), idle_s)
        except TimeoutError:
            yield None
            continue
        if frame is None:
            yield sent, resync_frame(stream_id, sent), True
            return
        text = unsent_part(frame, sent)
        if text is not None:
            sent = frame[1]
            yield sent, text, False


SSE_KEEPALIVE_S: Final = 15.0
"""Seconds without a frame after which a Server-Sent Events stream gets a comment."""


async def sse_messages(hub: EventHub, stream: Stream, after_seq: int | None,
                       joined: tuple[Subscriber, int]) -> AsyncIterator[ServerSentEventMessage]:
    """A subscriber's frames as Server-Sent Events, until it is dropped (then a resync).

    The subscriber stays on its bounded queue (there is no frame writer for a plain HTTP
    response); it is let go when the client leaves and the response stops.
    """
    subscriber, live_from = joined
    try:
        sent = live_from if after_seq is None else after_seq
        async for last, text, resync in first_frames(hub.streams, stream, after_seq, live_from):
            yield _sse(last, text, resync)
            if resync:
                return
            sent = last
        async for item in live_frames(subscriber, stream.id, sent, SSE_KEEPALIVE_S):
            if item is None:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
                continue
            yield _sse(*item)
    finally:
        hub.unsubscribe(stream.id, subscriber)


def _sse(last: int, text: str, resync: bool) -> ServerSentEventMessage:
    """One frame as a message; a resync's empty id resets the client's last event id."""
    return ServerSentEventMessage(data=text, id="" if resync else last)


async def _until_closed(socket: Any) -> None:  # noqa: ANN401 -- Litestar's WebSocket
    """Return when the client closes (messages from the client are ignored)."""
    while True:
        message = await socket.receive()
        if message.get("type") == "websocket.disconnect":
            return
