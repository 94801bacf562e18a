"""The event stream over WebSocket: snapshot, resume with after_seq, restarts, slow clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from giftflow.adapters.sql.store import SqlStore
from giftflow.api import ws_frames
from giftflow.api.app import Services, create_app
from giftflow.api.events import SUBSCRIBER_FRAMES_MAX, EventHub, Subscriber
from giftflow.bootstrap import build_services
from giftflow.economy.service import GiftRequest
from giftflow.settings import Settings

ROSE = 5655


def live_stream(services: Services) -> str:
    """A live stream of a creator, and a viewer with 700 coins."""
    from datetime import date  # noqa: PLC0415

    economy = services.economy
    economy.register_user("star", region="US", time_zone="UTC", birth_date=date(1990, 1, 1),
                          is_creator=True)
    economy.register_user("fan", region="US", time_zone="UTC", birth_date=date(1990, 1, 1))
    order = economy.create_order("fan", "web", "web-700", "simulator", "o")
    economy.simulate_payment(order.response["order_id"])  # type: ignore[union-attr]
    services.streams.create("s1", "star", "Live")
    services.streams.start("s1")
    return "s1"


def gifts(services: Services, first: int, count: int) -> None:
    """``count`` Roses from the fan, one request each, keys numbered from ``first``."""
    results = services.economy.send_gifts([GiftRequest("fan", "star", ROSE, 1, "s1",
                                                       f"g{first + n}") for n in range(count)])
    assert all(result.ok for result in results)


def events_of(frame: str) -> list[dict[str, Any]]:
    """The events of a frame (a JSON array)."""
    decoded: list[dict[str, Any]] = json.loads(frame)
    return decoded


def test_a_new_client_gets_a_snapshot_then_live_gifts(services: Services,
                                                     admin: dict[str, str]) -> None:
    """Without ``after_seq`` the first frame is one ``snapshot`` at the last seq (1, the
    ``stream_started`` event); gifts sent afterwards arrive as frames with seq 2, 3, 4.
    """
    live_stream(services)
    with TestClient(app=create_app(services)) as client, client.websocket_connect(
            "/v1/streams/s1/events", headers=admin) as socket:
        [snapshot] = events_of(socket.receive_text())
        assert (snapshot["type"], snapshot["seq"], snapshot["data"]["status"]) == (
            "snapshot", 1, "live")
        gifts(services, 0, 3)
        seen: list[int] = []
        while len(seen) < 3:
            seen += [event["seq"] for event in events_of(socket.receive_text())]
        assert seen == [2, 3, 4]


def test_a_client_resumes_with_after_seq_exactly_once_in_order_across_a_restart(
        services: Services, admin: dict[str, str]) -> None:
    """A client reads some gifts, disconnects while gifts go on, and reconnects with its last
    seq: it gets every missed event once, in order, then live ones. The same holds when the
    second connection goes to a new application over the same store (a restart).
    """
    live_stream(services)
    received: list[int] = []
    with TestClient(app=create_app(services)) as client:
        with client.websocket_connect("/v1/streams/s1/events?after_seq=0",
                                      headers=admin) as socket:
            gifts(services, 0, 5)
            while len(received) < 6:
                received += [e["seq"] for e in events_of(socket.receive_text())]
        gifts(services, 5, 7)
    with TestClient(app=create_app(services)) as restarted, restarted.websocket_connect(
            f"/v1/streams/s1/events?after_seq={received[-1]}", headers=admin) as socket:
        while len(received) < 13:
            received += [e["seq"] for e in events_of(socket.receive_text())]
        gifts(services, 12, 2)
        while len(received) < 15:
            received += [e["seq"] for e in events_of(socket.receive_text())]
    assert received == list(range(1, 16))


def test_frames_committed_by_another_process_reach_subscribers_in_order(
        services: Services, store: SqlStore, admin: dict[str, str], tmp_path: Path) -> None:
    """A feed learns of this process's commits at once, and of another process's (here a
    second set of services over the same store, which tells this hub nothing) by reading the
    log: with gifts from both, interleaved, a subscriber gets every event once, in order.
    """
    live_stream(services)
    other = build_services(Settings(data_dir=tmp_path / "other", mode="demo"), store)
    received: list[int] = []
    with TestClient(app=create_app(services)) as client, client.websocket_connect(
            "/v1/streams/s1/events?after_seq=1", headers=admin) as socket:
        for round_ in range(6):
            sender = services if round_ % 2 == 0 else other
            results = sender.economy.send_gifts([
                GiftRequest("fan", "star", ROSE, 1, "s1", f"r{round_}-{n}") for n in range(3)])
            assert all(result.ok for result in results)
            while len(received) < 3 * (round_ + 1):
                received += [e["seq"] for e in events_of(socket.receive_text())]
    other.gifts.close()
    assert received == list(range(2, 20))


def test_a_refused_key_closes_with_4401(services: Services) -> None:
    """A connection without a valid key is closed with code 4401."""
    live_stream(services)
    with TestClient(app=create_app(services)) as client, pytest.raises(
            WebSocketDisconnect) as refused, client.websocket_connect(
            "/v1/streams/s1/events?token=nope") as socket:
        socket.receive_text()
    assert refused.value.code == 4401


def test_a_subscriber_that_never_reads_is_told_to_resync_and_slows_nothing() -> None:
    """A subscriber that never reads fills its own bounded queue, then holds only a resync
    marker; offering it frames never blocks and never grows its queue.
    """
    async def scenario() -> None:
        subscriber = Subscriber()
        for seq in range(1, SUBSCRIBER_FRAMES_MAX + 50):
            subscriber.offer((seq, seq, "[]"))
        assert subscriber.dropped
        assert subscriber.queue.qsize() == SUBSCRIBER_FRAMES_MAX
        items = [subscriber.queue.get_nowait() for _ in range(SUBSCRIBER_FRAMES_MAX)]
        assert items[-1] is None
    asyncio.run(scenario())


def test_a_slow_subscriber_does_not_hold_back_a_fast_one(services: Services,
                                                        admin: dict[str, str]) -> None:
    """Through plain ASGI (no frame writer), one subscriber of the feed never reads while 300
    gifts pass in more ticks than its (here four-frame) queue holds: it is dropped with a
    resync, and a reading client still gets every event once, in order.
    """
    live_stream(services)
    app = create_app(services)
    hub: EventHub = services.hub
    idle_frames_max = 4
    with TestClient(app=app) as client, client.websocket_connect(
            "/v1/streams/s1/events?after_seq=1", headers=admin) as socket:
        async def add_idle() -> Subscriber:
            subscriber = Subscriber(queue=asyncio.Queue(idle_frames_max))
            hub.feeds["s1"].subscribers.add(subscriber)
            return subscriber
        idle = client.blocking_portal.call(add_idle)
        seen: list[int] = []
        for frame in range(300):
            gifts(services, frame, 1)
            if frame % 20 == 19:
                while len(seen) < frame + 1:
                    seen += [e["seq"] for e in events_of(socket.receive_text())]
        assert seen == list(range(2, 302))
        assert idle.dropped
        waiting = [idle.queue.get_nowait() for _ in range(idle.queue.qsize())]
        assert len(waiting) <= idle_frames_max
        assert waiting[-1] is None


@contextlib.contextmanager
def real_server(app: Any) -> Iterator[int]:
    """``app`` served by uvicorn with the frame writer, as ``giftflow serve`` runs it; the port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, ws=ws_frames.PROTOCOL,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_subscriber_that_never_reads_is_dropped_by_the_real_server(
        services: Services, admin: dict[str, str]) -> None:
    """Through uvicorn with the frame writer (frames written straight to each connection), a
    client that stops reading, with a 4 KiB receive buffer, is dropped once more than its
    allowance (1 MiB) waits for it, while batches of 1,000 gifts keep going: it stays
    subscribed to nothing, and when it reads again it finds the frames up to its drop and then
    ``resync``. A reading client meanwhile gets every event once, in order.
    """
    live_stream(services)
    for pack in range(3):
        order = services.economy.create_order("fan", "web", "web-17500", "simulator", f"p{pack}")
        services.economy.simulate_payment(order.response["order_id"])  # type: ignore[union-attr]
    headers = {"Authorization": admin["Authorization"]}
    with real_server(create_app(services)) as port:
        url = f"ws://127.0.0.1:{port}/v1/streams/s1/events?after_seq=1"
        slow_socket = socket.socket()
        slow_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow_socket.connect(("127.0.0.1", port))
        # websockets' client reads in a thread until 16 messages wait, then stops reading.
        with connect(url, sock=slow_socket, additional_headers=headers, max_queue=16) as slow, \
                connect(url, additional_headers=headers) as reader:
            seen: list[int] = []

            def read_all() -> None:
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        seen.extend(e["seq"] for e in events_of(reader.recv(timeout=30)))
            reading = threading.Thread(target=read_all)
            reading.start()
            hub: EventHub = services.hub
            batches = 0
            while not any(s.dropped for s in hub.feeds["s1"].subscribers):
                assert batches < 50, "the slow client was never dropped"
                results = services.economy.send_gifts([
                    GiftRequest("fan", "star", ROSE, 1, "s1", f"b{batches}-{n}")
                    for n in range(1000)])
                assert all(result.ok for result in results)
                batches += 1
                time.sleep(0.05)
            last = 1 + 1000 * batches
            deadline = time.monotonic() + 30
            while (not seen or seen[-1] < last) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert seen == list(range(2, last + 1))
            assert any(s.direct is not None for s in hub.feeds["s1"].subscribers), \
                "the reader is written to directly"
            received: list[dict[str, Any]] = []
            with contextlib.suppress(ConnectionClosed):
                while True:
                    received += events_of(slow.recv(timeout=30))
            assert received[-1]["type"] == "resync"
            kept = [e["seq"] for e in received[:-1]]
            assert kept == list(range(2, kept[-1] + 1))
            assert kept[-1] < last
            reader.close()
            reading.join(10)


def sse_messages(lines: Iterator[str]) -> Iterator[tuple[str | None, list[dict[str, Any]]]]:
    """The (id, events) of each Server-Sent Events message; comments are skipped."""
    message_id: str | None = None
    for line in lines:
        if line.startswith("id:"):
            message_id = line[3:].strip()
        elif line.startswith("data:"):
            yield message_id, events_of(line[5:])
            message_id = None


def test_server_sent_events_resume_from_last_event_id_and_end_with_an_empty_id_resync(
        services: Services, admin: dict[str, str]) -> None:
    """Over Server-Sent Events (uvicorn) a client gets the snapshot, then gifts, each message's
    id its last seq; reconnecting with ``Last-Event-ID`` (as ``EventSource`` does) it gets the
    events it missed once, in order, even with an older ``?after_seq``; and asking for a seq
    the stream has not reached gets one ``resync`` with an empty id, and the stream ends.
    """
    live_stream(services)
    with real_server(create_app(services)) as port:
        url = f"http://127.0.0.1:{port}/v1/streams/s1/events"
        with httpx.stream("GET", url, headers=admin, timeout=10) as answer:
            assert answer.headers["content-type"].startswith("text/event-stream")
            messages = sse_messages(answer.iter_lines())
            first_id, [snapshot] = next(messages)
            assert (first_id, snapshot["type"]) == ("1", "snapshot")
            gifts(services, 0, 2)
            seen: list[int] = []
            while len(seen) < 2:
                message_id, events = next(messages)
                seen += [e["seq"] for e in events]
                assert message_id == str(events[-1]["seq"])
        gifts(services, 2, 3)
        with httpx.stream("GET", f"{url}?after_seq=1",
                          headers={**admin, "Last-Event-ID": str(seen[-1])},
                          timeout=10) as answer:
            messages = sse_messages(answer.iter_lines())
            while len(seen) < 5:
                seen += [e["seq"] for e in next(messages)[1]]
        assert seen == [2, 3, 4, 5, 6]
        with httpx.stream("GET", f"{url}?after_seq=99", headers=admin, timeout=10) as answer:
            ended = list(sse_messages(answer.iter_lines()))
        assert [(message_id, [e["type"] for e in events]) for message_id, events in ended] == [
            ("", ["resync"])]


def test_history_past_its_keep_is_pruned_and_resuming_from_it_means_resync(
        services: Services, admin: dict[str, str]) -> None:
    """Pruning removes the oldest logged frames, a bounded number at a time (here 2 of the 4:
    ``stream_started`` and the first gift batch). A client resuming from a removed seq gets
    ``resync`` at once; one resuming from the first kept seq's predecessor gets the kept events.
    """
    live_stream(services)
    for batch in range(3):
        gifts(services, batch * 2, 2)
    newest_ms = max(row["ts_ms"] for row in services.economy.store.read("stream_frames", {}))
    assert services.streams.prune_history(newest_ms + 1, frames_max=2) == 2
    kept = services.streams.frame_texts_after("s1", 3)
    assert [(first, last) for first, last, _ in kept] == [(4, 5), (6, 7)]
    with TestClient(app=create_app(services)) as client:
        with client.websocket_connect("/v1/streams/s1/events?after_seq=1",
                                      headers=admin) as socket:
            assert [e["type"] for e in events_of(socket.receive_text())] == ["resync"]
        with client.websocket_connect("/v1/streams/s1/events?after_seq=3",
                                      headers=admin) as socket:
            seen: list[int] = []
            while len(seen) < 4:
                seen += [e["seq"] for e in events_of(socket.receive_text())]
    assert seen == [4, 5, 6, 7]
