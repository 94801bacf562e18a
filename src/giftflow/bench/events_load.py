"""The load side of ``giftflow bench events``: WebSocket subscribers and a paced gift sender.

Run as ``python -m giftflow.bench.events_load`` (on the load CPU) by :mod:`giftflow.bench.events`.
In one process on one core it holds many subscribers of one stream and sends gifts over HTTP:

- every subscriber is a raw asyncio protocol that speaks just enough RFC 6455 to read the
  server's (unmasked) frames and answer pings, so that thousands of them cost little;
- a *sampled* subscriber (evenly spread among the others) decodes its frames and, for every gift
  event, takes its latency: each gift carries the ``time.monotonic_ns()`` at which its POST was
  written as its ``streak_id``, and ``CLOCK_MONOTONIC`` is the same clock in every process;
- the others only drain: they read, skip the payloads, and count ``resync`` frames;
- an optional *slow* subscriber completes the handshake and then never reads at all;
- gifts go out on keep-alive connections, paced to a target rate (``--gifts-per-s``), or as fast
  as the connections go (``--gifts-per-s 0``: one request in flight per connection).

It prints one JSON line with what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import functools
import gc
import importlib
import json
import os
import resource
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import orjson

from giftflow.bench.frameworks import _percentile, _tree_cpu_s
from giftflow.invariants import invariant

ROSE: Final = 5655
CONNECT_BATCH_MAX: Final = 200
"""Subscribers that connect at the same time."""
PACE_TICK_S: Final = 0.002
"""How often the pacer sends the gifts that are due."""
OPCODE_TEXT, OPCODE_CLOSE, OPCODE_PING = 0x1, 0x8, 0x9
RESYNC_MARK: Final = b'"type":"resync"'
SLOW_RECEIVE_BUFFER_BYTES: Final = 4096
"""The never-reading subscriber's kernel buffer: small, as a stalled phone's would soon be
full, so that what waits for it waits in the server, where its allowance is counted."""
RESYNC_FRAME_BYTES_MAX: Final = 512
"""A resync frame holds one short event: longer frames are not searched for it."""


@dataclass
class Stats:
    """What the whole generator counts."""

    recording: bool = False
    latencies_ms: list[float] = field(default_factory=list)
    http_ms: list[float] = field(default_factory=list)
    gift_events: int = 0
    resyncs: int = 0
    closed: int = 0
    ok: int = 0
    other: int = 0


def _masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask), for pongs and the close."""
    invariant(len(payload) < 126, "control frames are short")  # noqa: PLR2004 -- RFC 6455
    mask = os.urandom(4)
    body = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + body


class Subscriber(asyncio.Protocol):
    """One WebSocket subscriber of the stream's events."""

    def __init__(self, request: bytes, stats: Stats, *, sampled: bool = False,
                 reads: bool = True) -> None:
        self.request, self.stats, self.sampled, self.reads = request, stats, sampled, reads
        self.buffer = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.resynced = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Ask for the upgrade."""
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is no subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        """Read the handshake, then every complete frame."""
        now_ns = time.monotonic_ns()
        buffer = self.buffer
        buffer += data
        if not self.upgraded.done() and not self._handshake():
            return
        start = 0
        while len(buffer) - start >= 2:  # noqa: PLR2004 -- the shortest frame header
            length, offset = buffer[start + 1] & 0x7F, start + 2
            if length == 126:  # noqa: PLR2004 -- RFC 6455: a 16-bit length follows
                if len(buffer) - start < 4:  # noqa: PLR2004
                    break
                length, offset = int.from_bytes(buffer[start + 2:start + 4]), start + 4
            elif length == 127:  # noqa: PLR2004 -- RFC 6455: a 64-bit length follows
                if len(buffer) - start < 10:  # noqa: PLR2004
                    break
                length, offset = int.from_bytes(buffer[start + 2:start + 10]), start + 10
            end = offset + length
            if len(buffer) < end:
                break
            self._frame(buffer[start] & 0x0F, buffer, offset, end, now_ns)
            start = end
        del buffer[:start]

    def _handshake(self) -> bool:
        """Take the upgrade answer off the buffer; whether it is complete and accepted."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        if not buffer.startswith(b"HTTP/1.1 101"):
            self.upgraded.set_exception(ConnectionError(bytes(buffer[:200]).decode()))
            return False
        del buffer[:end + 4]
        self.upgraded.set_result(None)
        if not self.reads:
            cast("asyncio.Transport", self.transport).pause_reading()
        return True

    def _frame(self, opcode: int, buffer: bytearray, offset: int, end: int,
               now_ns: int) -> None:
        stats = self.stats
        if opcode == OPCODE_TEXT:
            if end - offset <= RESYNC_FRAME_BYTES_MAX and buffer.find(
                    RESYNC_MARK, offset, end) >= 0:
                stats.resyncs += 1
                self.resynced = True
            elif self.sampled:
                self._sample(orjson.loads(buffer[offset:end]), now_ns)
        elif opcode == OPCODE_PING and self.transport is not None:
            self.transport.write(_masked(0xA, bytes(buffer[offset:end])))
        elif opcode == OPCODE_CLOSE:
            stats.closed += 1

    def _sample(self, events: list[dict[str, Any]], now_ns: int) -> None:
        stats = self.stats
        for event in events:
            if event.get("type") != "gift":
                continue
            stats.gift_events += 1
            streak = event["data"].get("streak_id", "")
            if stats.recording and streak.startswith("t"):
                stats.latencies_ms.append((now_ns - int(streak[1:])) / 1e6)

    def read_now(self) -> None:
        """Start reading (the slow subscriber, after the measurement)."""
        self.reads = True
        if self.transport is not None:
            self.transport.resume_reading()


class Gifter(asyncio.Protocol):
    """One keep-alive connection that sends a gift when told to (or at once, unpaced)."""

    def __init__(self, head: bytes, stats: Stats, idle: collections.deque[Gifter], *,
                 paced: bool) -> None:
        self.head, self.stats, self.idle, self.paced = head, stats, idle, paced
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.running = True
        self.sent_ns = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Wait for the pacer, or send the first gift."""
        self.transport = cast("asyncio.Transport", transport)
        if self.paced:
            self.idle.append(self)
        else:
            self.send()

    def send(self) -> None:
        """Send one gift stamped with the monotonic time it is written at."""
        self.sent_ns = time.monotonic_ns()
        body = b'{"sender_id":"fan","gift_id":%d,"count":1,"streak_id":"t%d"}' % (
            ROSE, self.sent_ns)
        cast("asyncio.Transport", self.transport).write(
            self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def data_received(self, data: bytes) -> None:
        """Count the answers; send the next gift, or go back to the idle list."""
        buffer = self.buffer
        buffer += data
        while (head_end := buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(buffer[:head_end]).lower()
            marker = head.find(b"\r\ncontent-length:")
            line_end = head.find(b"\r\n", marker + 2)
            length = int(head[marker + 17:line_end if line_end >= 0 else len(head)])
            if len(buffer) < head_end + 4 + length:
                return
            status = int(head[9:12])
            del buffer[:head_end + 4 + length]
            if self.stats.recording:
                if 200 <= status < 300:  # noqa: PLR2004 -- the 2xx range
                    self.stats.ok += 1
                    self.stats.http_ms.append((time.monotonic_ns() - self.sent_ns) / 1e6)
                else:
                    self.stats.other += 1
            if not self.running:
                continue
            if self.paced:
                self.idle.append(self)
            else:
                self.send()


def _upgrade_request(port: int, stream: str, key: str) -> bytes:
    nonce = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /v1/streams/{stream}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n").encode()


async def _subscribe(port: int, make: Callable[[], Subscriber], *,
                     receive_buffer_bytes: int = 0) -> Subscriber:
    """A connected subscriber; with ``receive_buffer_bytes``, its socket's kernel buffer."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)  # noqa: FBT003 -- the socket API
    if receive_buffer_bytes:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    _, subscriber = await loop.create_connection(make, sock=sock)
    await asyncio.wait_for(subscriber.upgraded, 60)
    return subscriber


async def _pace(gifters: list[Gifter], idle: collections.deque[Gifter], gifts_per_s: float,
                until: float) -> int:
    """Send gifts at ``gifts_per_s`` on idle connections; the gifts that could not go on time."""
    started, sent, late = time.monotonic(), 0, 0
    while (now := time.monotonic()) < until:
        due = int((now - started) * gifts_per_s) - sent
        while due > 0 and idle:
            idle.popleft().send()  # the longest idle first: none idles past keep-alive
            sent += 1
            due -= 1
        late = max(late, due)
        await asyncio.sleep(PACE_TICK_S)
    for gifter in gifters:
        gifter.running = False
    return late


@dataclass(frozen=True, slots=True)
class Plan:
    """One measurement."""

    port: int
    key: str
    stream: str
    subscribers: int
    sampled: int
    gifts_per_s: float
    connections: int
    seconds: float
    warmup_s: float
    slow: bool
    server_pid: int


async def run(plan: Plan) -> dict[str, Any]:
    """Connect everyone, send gifts through the warm-up and the window, and report."""
    loop = asyncio.get_running_loop()
    stats = Stats()
    request = _upgrade_request(plan.port, plan.stream, plan.key)
    every = max(1, plan.subscribers // max(plan.sampled, 1))
    connect_started = time.monotonic()
    subscribers: list[Subscriber] = []
    for first in range(0, plan.subscribers, CONNECT_BATCH_MAX):
        batch = range(first, min(first + CONNECT_BATCH_MAX, plan.subscribers))
        subscribers.extend(await asyncio.gather(*(
            _subscribe(plan.port, functools.partial(
                Subscriber, request, stats, sampled=plan.sampled > 0 and n % every == 0))
            for n in batch)))
    connect_s = time.monotonic() - connect_started
    slow = None
    if plan.slow:
        slow = await _subscribe(plan.port,
                                functools.partial(Subscriber, request, stats, reads=False),
                                receive_buffer_bytes=SLOW_RECEIVE_BUFFER_BYTES)
    idle: collections.deque[Gifter] = collections.deque()
    paced = plan.gifts_per_s > 0
    head = (f"POST /v1/streams/{plan.stream}/gifts HTTP/1.1\r\nHost: 127.0.0.1:{plan.port}\r\n"
            f"Authorization: Bearer {plan.key}\r\nContent-Type: application/json\r\n").encode()
    gifters = []
    for _ in range(plan.connections):
        _, gifter = await loop.create_connection(
            lambda: Gifter(head, stats, idle, paced=paced), "127.0.0.1", plan.port)
        gifters.append(gifter)
    until = time.monotonic() + plan.warmup_s + plan.seconds
    pacing = loop.create_task(_pace(gifters, idle, plan.gifts_per_s, until)) if paced else None
    await asyncio.sleep(plan.warmup_s)
    cpu_start = resource.getrusage(resource.RUSAGE_SELF)
    server_start = _tree_cpu_s(plan.server_pid)
    stats.recording = True
    started = time.monotonic()
    await asyncio.sleep(plan.seconds)
    stats.recording = False
    window = time.monotonic() - started
    cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu = _tree_cpu_s(plan.server_pid) - server_start
    late = await pacing if pacing is not None else 0
    for gifter in gifters:
        gifter.running = False
    await asyncio.sleep(1)  # the last frames arrive
    slow_resynced = None
    if slow is not None:
        slow.read_now()
        await asyncio.sleep(2)
        slow_resynced = slow.resynced
    latencies, http = sorted(stats.latencies_ms), sorted(stats.http_ms)
    cpu = (cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime)
    transports = [s.transport for s in subscribers] + [g.transport for g in gifters]
    if slow is not None:
        transports.append(slow.transport)
    for transport in transports:
        if transport is not None:
            transport.close()
    return {"subscribers": len(subscribers), "connect_s": connect_s, "window_s": window,
            "gifts_ok": stats.ok, "gifts_other": stats.other, "late_max": late,
            "latency_samples": len(latencies), "p50_ms": _percentile(latencies, 0.50),
            "p99_ms": _percentile(latencies, 0.99), "max_ms": latencies[-1] if latencies else 0,
            "http_p50_ms": _percentile(http, 0.50), "http_p99_ms": _percentile(http, 0.99),
            "resyncs": stats.resyncs, "closed": stats.closed, "loadgen_cpu_s": cpu,
            "server_cpu_s": server_cpu,
            "slow_resynced": slow_resynced}


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the plan, run it (on uvloop), print the result as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m giftflow.bench.events_load")
    for name, kind in (("port", int), ("key", str), ("stream", str), ("subscribers", int),
                       ("sampled", int), ("gifts-per-s", float), ("connections", int),
                       ("seconds", float), ("warmup-s", float), ("server-pid", int)):
        parser.add_argument(f"--{name}", type=kind, required=True)
    parser.add_argument("--slow", action="store_true")
    options = parser.parse_args(argv)
    plan = Plan(options.port, options.key, options.stream, options.subscribers, options.sampled,
                options.gifts_per_s, options.connections, options.seconds, options.warmup_s,
                options.slow, options.server_pid)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gc.disable()  # a collection's pause would show as latency; this process makes few cycles
    uvloop: Any = importlib.import_module("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run(plan))
    print(json.dumps(result))  # noqa: T201 -- the parent reads this line


if __name__ == "__main__":
    main()
