"""``giftflow bench frameworks``: the HTTP stack (framework x server) measured on this machine.

The same endpoint, ``POST /v1/streams/{stream_id}/gifts`` with a body
``{"sender_id": str, "gift_id": int, "count": int}`` (``count`` in 1..10000, otherwise a 4xx),
answering ``{"id", "coins_spent", "diamonds_credited", "sender_coins"}`` computed trivially
(no database), is written four ways:

- **raw**: a bare ASGI callable with ``orjson``, the floor every framework adds to;
- **fastapi-orjson**: FastAPI, a pydantic model body and an ``ORJSONResponse`` built by hand;
- **fastapi**: FastAPI, a pydantic model body and a pydantic return type, which FastAPI
  serialises itself (what it recommends since it deprecated ``ORJSONResponse``);
- **litestar**: Litestar, a ``msgspec.Struct`` body and return type, with the problem-details
  plugin on for every HTTP error.

Each is served by **uvicorn** (uvloop, httptools, no access log, one worker) and **granian**
(ASGI, one worker, one runtime thread, one blocking thread, uvloop, HTTP/1 only, no access log).
The server runs pinned to CPU 0 and the load generator to CPU 1 (``taskset``, or
``os.sched_setaffinity`` where ``taskset`` is missing). The apps are written as source text to a
temporary directory, so this module imports none of the web stacks (they have no stubs for
mypy, and only the server subprocesses need them).

The load generator (``python -m giftflow.bench.frameworks --loadgen ...``, started by the bench)
is an ``asyncio.Protocol`` on uvloop: ``connections`` keep-alive HTTP/1.1 connections, each with
one request in flight, the request pre-encoded, the response parsed only as far as its status
line and ``Content-Length``. After a warm-up it counts the 2xx responses completed within the
window and their latencies, and reports its own CPU time and the server's (its processes, from
``/proc``) over the same window, so the table shows whether the generator or the server ran out
of CPU first. Each (app, server) pair runs ``repeats`` times,
the pairs alternating within each round; the figures are medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import importlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, cast

from rich.console import Console
from rich.table import Table

from giftflow.invariants import invariant

SERVER_CPU = 0
"""The CPU the server under test is pinned to."""

LOADGEN_CPU = 1
"""The CPU the load generator is pinned to."""

WARMUP_S = 1.0
"""Seconds of load before the measured window, not counted."""

PATH = "/v1/streams/s1/gifts"
"""The endpoint every app serves (``s1`` is the stream id path parameter)."""

BODY = b'{"sender_id":"u-42","gift_id":7,"count":3}'
"""The request body every request of the run sends."""

INVALID_BODY = b'{"sender_id":"u-42","gift_id":7,"count":0}'
"""A body each app must reject (``count`` below 1)."""

_COMPUTE = """
_PRICE = {gift: 1 + gift % 100 for gift in range(1, 101)}


def _price(gift_id):
    return _PRICE.get(gift_id, 1)
"""

_RAW_APP = """
# Bare ASGI app: orjson in and out, validation by hand.
import itertools

import orjson
""" + _COMPUTE + """
_ids = itertools.count(1)
_JSON = [(b"content-type", b"application/json")]
_PROBLEM = [(b"content-type", b"application/problem+json")]


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _reply(send, status, body, headers):
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _problem(status, detail):
    return orjson.dumps({"type": "about:blank", "status": status, "detail": detail})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    parts = scope["path"].split("/")
    if (scope["method"] != "POST" or len(parts) != 5 or parts[1] != "v1"
            or parts[2] != "streams" or parts[4] != "gifts"):
        await _reply(send, 404, _problem(404, "not found"), _PROBLEM)
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    try:
        data = orjson.loads(body)
        sender_id = data["sender_id"]
        gift_id = data["gift_id"]
        count = data["count"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        await _reply(send, 422, _problem(422, "invalid body"), _PROBLEM)
        return
    if (not isinstance(sender_id, str) or type(gift_id) is not int or type(count) is not int
            or not 1 <= count <= 10000):
        await _reply(send, 422, _problem(422, "count must be 1..10000"), _PROBLEM)
        return
    spent = count * _price(gift_id)
    out = {"id": next(_ids), "coins_spent": spent, "diamonds_credited": spent // 2,
           "sender_coins": 1_000_000 - spent}
    await _reply(send, 200, orjson.dumps(out), _JSON)
"""

_FASTAPI_MODELS = """
import itertools
from typing import Annotated

from fastapi import FastAPI
from pydantic import BaseModel, Field
""" + _COMPUTE + """
_ids = itertools.count(1)


class GiftIn(BaseModel):
    sender_id: str
    gift_id: int
    count: Annotated[int, Field(ge=1, le=10000)]


class GiftOut(BaseModel):
    id: int
    coins_spent: int
    diamonds_credited: int
    sender_coins: int
"""

_FASTAPI_ORJSON_APP = """
# FastAPI: pydantic body, ORJSONResponse built by hand (response model for the docs only).
import warnings

warnings.simplefilter("ignore")  # ORJSONResponse is deprecated in recent FastAPI
from fastapi.responses import ORJSONResponse
""" + _FASTAPI_MODELS + """
app = FastAPI()


@app.post("/v1/streams/{stream_id}/gifts", response_model=GiftOut,
          response_class=ORJSONResponse)
async def send_gift(stream_id: str, body: GiftIn) -> ORJSONResponse:
    spent = body.count * _price(body.gift_id)
    return ORJSONResponse({"id": next(_ids), "coins_spent": spent,
                           "diamonds_credited": spent // 2, "sender_coins": 1_000_000 - spent})
"""

_FASTAPI_APP = """
# FastAPI: pydantic body and return type, serialised by FastAPI through pydantic.
""" + _FASTAPI_MODELS + """
app = FastAPI()


@app.post("/v1/streams/{stream_id}/gifts")
async def send_gift(stream_id: str, body: GiftIn) -> GiftOut:
    spent = body.count * _price(body.gift_id)
    return GiftOut(id=next(_ids), coins_spent=spent, diamonds_credited=spent // 2,
                   sender_coins=1_000_000 - spent)
"""

_LITESTAR_APP = """
# Litestar: msgspec Struct body and return type, problem details for every HTTP error.
import itertools
from typing import Annotated

import msgspec
from litestar import Litestar, post
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsPlugin
""" + _COMPUTE + """
_ids = itertools.count(1)


class GiftIn(msgspec.Struct):
    sender_id: str
    gift_id: int
    count: Annotated[int, msgspec.Meta(ge=1, le=10000)]


class GiftOut(msgspec.Struct):
    id: int
    coins_spent: int
    diamonds_credited: int
    sender_coins: int


@post("/v1/streams/{stream_id:str}/gifts", status_code=200)
async def send_gift(stream_id: str, data: GiftIn) -> GiftOut:
    spent = data.count * _price(data.gift_id)
    return GiftOut(id=next(_ids), coins_spent=spent, diamonds_credited=spent // 2,
                   sender_coins=1_000_000 - spent)


app = Litestar(
    [send_gift],
    plugins=[ProblemDetailsPlugin(ProblemDetailsConfig(enable_for_all_http_exceptions=True))],
)
"""

APPS: dict[str, str] = {
    "raw": _RAW_APP,
    "fastapi-orjson": _FASTAPI_ORJSON_APP,
    "fastapi": _FASTAPI_APP,
    "litestar": _LITESTAR_APP,
}
"""The apps under test, by name: the source of a module exposing ``app``."""

OPENAPI_PATHS: dict[str, str] = {
    "fastapi-orjson": "/openapi.json",
    "fastapi": "/openapi.json",
    "litestar": "/schema/openapi.json",
}
"""Where each framework serves the OpenAPI document it generates."""

SERVERS = ("uvicorn", "granian")
"""The ASGI servers under test."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What the load generator measured in one window."""

    ok: int
    """2xx responses completed within the window."""
    other: int
    """Non-2xx responses completed within the window."""
    window_s: float
    p50_ms: float
    p99_ms: float
    cpu_s: float
    """CPU seconds (user + system) the generator spent during the window."""
    server_cpu_s: float
    """CPU seconds the server's processes spent during the window."""

    @property
    def rps(self) -> float:
        """2xx responses per second."""
        return self.ok / self.window_s if self.window_s else 0.0


@dataclass(frozen=True, slots=True)
class Run:
    """One (app, server) measurement."""

    app: str
    server: str
    load: LoadResult


@dataclass(frozen=True, slots=True)
class Check:
    """How one app behaves off the hot path: its rejection and its OpenAPI document."""

    app: str
    invalid_status: int
    invalid_type: str
    openapi: str
    """A summary of the generated document: the count bounds, documented statuses."""


# --- load generator ------------------------------------------------------------------------


class _Counters:
    """Shared by the connections of one generator."""

    def __init__(self) -> None:
        self.recording = False
        self.running = True
        self.ok = 0
        self.other = 0
        self.latencies: list[float] = []


class _Connection(asyncio.Protocol):
    """One keep-alive connection with one request in flight."""

    def __init__(self, request: bytes, counters: _Counters) -> None:
        self._request = request
        self._counters = counters
        self._buffer = bytearray()
        self._sent = 0.0
        self._transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the first request."""
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is no subclass
        self._send()

    def _send(self) -> None:
        invariant(self._transport is not None, "a request is sent only once connected")
        self._sent = time.perf_counter()
        self._transport.write(self._request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        """Complete as many responses as the buffer holds; send the next request."""
        buffer = self._buffer
        buffer += data
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(buffer[:head_end]).lower()
            marker = head.find(b"\r\ncontent-length:")
            if marker < 0:
                raise ConnectionError("response without Content-Length")
            line_end = head.find(b"\r\n", marker + 2)
            length = int(head[marker + 17:line_end if line_end >= 0 else len(head)])
            end = head_end + 4 + length
            if len(buffer) < end:
                return
            status = int(head[9:12])
            del buffer[:end]
            counters = self._counters
            if counters.recording:
                if 200 <= status < 300:  # noqa: PLR2004 -- the 2xx range
                    counters.ok += 1
                    counters.latencies.append(time.perf_counter() - self._sent)
                else:
                    counters.other += 1
            if counters.running:
                self._send()
            elif self._transport is not None:
                self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 -- protocol API
        """Mark the connection done."""
        if not self.closed.done():
            self.closed.set_result(None)


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def post_request(port: int, path: str, body: bytes, headers: Sequence[str] = ()) -> bytes:
    """One pre-encoded HTTP/1.1 keep-alive JSON POST."""
    extra = "".join(f"{header}\r\n" for header in headers)
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _generate(port: int, *, seconds: float, connections: int, warmup_s: float,
                    server_pid: int, request: bytes | None = None) -> LoadResult:
    loop = asyncio.get_running_loop()
    request = request or post_request(port, PATH, BODY)
    counters = _Counters()
    protocols: list[_Connection] = []
    for _ in range(connections):
        _, protocol = await loop.create_connection(
            lambda: _Connection(request, counters), "127.0.0.1", port)
        protocols.append(protocol)
    await asyncio.sleep(warmup_s)
    server_start = _tree_cpu_s(server_pid)
    cpu_start = resource.getrusage(resource.RUSAGE_SELF)
    counters.recording = True
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    counters.recording = False
    window = time.perf_counter() - started
    cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu = _tree_cpu_s(server_pid) - server_start
    counters.running = False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(p.closed for p in protocols)), 5)
    latencies = sorted(counters.latencies)
    cpu = (cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime)
    return LoadResult(ok=counters.ok, other=counters.other, window_s=window,
                      p50_ms=_percentile(latencies, 0.50) * 1e3,
                      p99_ms=_percentile(latencies, 0.99) * 1e3, cpu_s=cpu,
                      server_cpu_s=server_cpu)


def loadgen_main(port: int, *, seconds: float, connections: int, warmup_s: float,
                 server_pid: int, path: str = PATH, body: bytes = BODY,
                 headers: Sequence[str] = ()) -> None:
    """Run the load generator (on uvloop when installed) and print its result as JSON."""
    coroutine = _generate(port, seconds=seconds, connections=connections, warmup_s=warmup_s,
                          server_pid=server_pid,
                          request=post_request(port, path, body, headers))
    try:
        uvloop: Any = importlib.import_module("uvloop")
    except ImportError:
        result = asyncio.run(coroutine)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(coroutine)
    print(json.dumps({  # noqa: T201 -- the parent reads this line
        "ok": result.ok, "other": result.other, "window_s": result.window_s,
        "p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "cpu_s": result.cpu_s,
        "server_cpu_s": result.server_cpu_s,
    }))


# --- servers -------------------------------------------------------------------------------


def _pinned(cpu: int, argv: list[str]) -> list[str]:
    """``argv`` run on ``cpu`` only: through ``taskset``, or a launcher that sets the affinity."""
    taskset = shutil.which("taskset")
    if taskset:
        return [taskset, "-c", str(cpu), *argv]
    launcher = (
        "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); "
        "os.execv(sys.argv[2], sys.argv[2:])"
    )
    return [sys.executable, "-c", launcher, str(cpu), *argv]


def _server_argv(server: str, module: str, app_dir: Path, port: int) -> list[str]:
    binary = str(Path(sys.executable).parent / server)
    target = f"{module}:app"
    if server == "uvicorn":
        return [binary, target, "--app-dir", str(app_dir), "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools",
                "--no-access-log", "--log-level", "warning"]
    return [binary, target, "--working-dir", str(app_dir), "--interface", "asgi",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--runtime-threads", "1", "--blocking-threads", "1", "--runtime-mode", "st",
            "--loop", "uvloop", "--http", "1", "--no-ws", "--no-access-log",
            "--log-level", "warning"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _request(port: int, method: str, path: str, body: bytes | None = None,
             ) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        connection.close()


def _tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and its descendants, from ``/proc``."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = int(fields[11]) + int(fields[12])
    members = {root}
    grew = True
    while grew:
        added = {pid for pid, parent in parents.items() if parent in members} - members
        members |= added
        grew = bool(added)
    return sum(times.get(pid, 0) for pid in members) / os.sysconf("SC_CLK_TCK")


class _Server:
    """One server subprocess, pinned, on a free port; a context manager that stops it."""

    def __init__(self, server: str, app: str, app_dir: Path) -> None:
        self.port = _free_port()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 -- closed in __exit__
        argv = _pinned(SERVER_CPU, _server_argv(server, f"app_{app.replace('-', '_')}",
                                                app_dir, self.port))
        self.process = subprocess.Popen(  # noqa: S603 -- our own argv
            argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self._name = f"{server}/{app}"

    def __enter__(self) -> Self:
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                self._log.seek(0)
                output = self._log.read().decode(errors="replace")
                raise RuntimeError(f"{self._name} exited: {output[-2000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _, _ = _request(self.port, "POST", PATH, BODY)
                if 200 <= status < 300:  # noqa: PLR2004 -- the 2xx range
                    return self
                raise RuntimeError(f"{self._name} answered {status} to a valid gift")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self._name} did not answer within 30 s")
            time.sleep(0.1)

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def _measure(server: str, app: str, app_dir: Path, *, seconds: float,
             connections: int) -> Run:
    with _Server(server, app, app_dir) as running:
        loadgen = _pinned(LOADGEN_CPU, [
            sys.executable, "-m", "giftflow.bench.frameworks", "--loadgen", str(running.port),
            "--seconds", str(seconds), "--connections", str(connections),
            "--warmup", str(WARMUP_S), "--server-pid", str(running.process.pid)])
        finished = subprocess.run(  # noqa: S603 -- our own argv
            loadgen, capture_output=True, check=True, text=True, timeout=seconds + 60)
    data = json.loads(finished.stdout.strip().splitlines()[-1])
    if not data["ok"]:
        raise RuntimeError(f"no 2xx from {server}/{app}: {data}; {finished.stderr[-2000:]}")
    return Run(app=app, server=server, load=LoadResult(**data))


def _check(app: str, app_dir: Path) -> Check:
    """Reject an invalid gift and read the OpenAPI document, under uvicorn."""
    with _Server("uvicorn", app, app_dir) as running:
        status, content_type, _ = _request(running.port, "POST", PATH, INVALID_BODY)
        summary = "none"
        if app in OPENAPI_PATHS:
            _, _, raw = _request(running.port, "GET", OPENAPI_PATHS[app])
            summary = _openapi_summary(json.loads(raw))
    return Check(app=app, invalid_status=status, invalid_type=content_type.split(";")[0],
                 openapi=summary)


def _openapi_summary(document: dict[str, Any]) -> str:
    """The count bounds and the documented statuses (with their media types) of the route."""
    operation = document["paths"]["/v1/streams/{stream_id}/gifts"]["post"]
    schemas = document.get("components", {}).get("schemas", {})
    body_ref = operation["requestBody"]["content"]["application/json"]["schema"]
    body = schemas[body_ref["$ref"].rsplit("/", 1)[1]] if "$ref" in body_ref else body_ref
    count = body["properties"]["count"]
    statuses = ", ".join(
        f"{code} {'/'.join(sorted(answer.get('content', {})))}".strip()
        for code, answer in sorted(operation["responses"].items()))
    return (f"count {count.get('minimum')}..{count.get('maximum')}; "
            f"responses: {statuses}")


def _fmt_load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def run_frameworks_bench(console: Console, *, seconds: float, connections: int = 64,
                         repeats: int = 2) -> list[Run]:
    """Measure every (app, server) pair ``repeats`` times, alternating; print the medians."""
    available = os.sched_getaffinity(0)
    if not {SERVER_CPU, LOADGEN_CPU} <= available:
        raise RuntimeError(f"needs CPUs {SERVER_CPU} and {LOADGEN_CPU}, have {available}")
    load_start = _fmt_load()
    console.print(
        f"[bold]giftflow bench frameworks[/]: {connections} keep-alive connections, "
        f"{WARMUP_S:g} s warm-up + {seconds:g} s, {repeats} runs a pair; server on CPU "
        f"{SERVER_CPU}, load generator on CPU {LOADGEN_CPU}; load average {load_start}")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="giftflow-frameworks-") as directory:
        app_dir = Path(directory)
        for name, source in APPS.items():
            (app_dir / f"app_{name.replace('-', '_')}.py").write_text(source)
        checks = [_check(name, app_dir) for name in APPS]
        for round_index in range(repeats):
            pairs = [(app, server) for app in APPS for server in SERVERS]
            if round_index % 2:
                pairs.reverse()
            for app, server in pairs:
                run = _measure(server, app, app_dir, seconds=seconds, connections=connections)
                runs.append(run)
                console.print(
                    f"  {app:>14} {server:<7} {run.load.rps:>7,.0f}/s "
                    f"p50 {run.load.p50_ms:5.2f} p99 {run.load.p99_ms:5.2f} ms "
                    f"non-2xx {run.load.other} CPU gen "
                    f"{run.load.cpu_s / run.load.window_s:.0%} srv "
                    f"{_server_share(run):.0%}", soft_wrap=True)
    console.print(_table(runs))
    checks_table = Table(title="Off the hot path: count=0 and the generated OpenAPI")
    for column in ("app", "count=0 →", "content type", "OpenAPI of the route"):
        checks_table.add_column(column)
    for check in checks:
        checks_table.add_row(check.app, str(check.invalid_status), check.invalid_type,
                             check.openapi)
    console.print(checks_table)
    console.print(f"load average at start {load_start}, at end {_fmt_load()}")
    return runs


def _server_share(run: Run) -> float:
    return run.load.server_cpu_s / run.load.window_s


def _table(runs: Sequence[Run]) -> Table:
    table = Table(title="Medians per (app, server)")
    for column in ("app", "server", "req/s", "p50 ms", "p99 ms", "gen CPU", "server CPU"):
        table.add_column(column, justify="left" if column in {"app", "server"} else "right")
    for app in APPS:
        for server in SERVERS:
            mine = [run for run in runs if run.app == app and run.server == server]
            if not mine:
                continue
            table.add_row(
                app, server,
                f"{statistics.median(run.load.rps for run in mine):,.0f}",
                f"{statistics.median(run.load.p50_ms for run in mine):.2f}",
                f"{statistics.median(run.load.p99_ms for run in mine):.2f}",
                f"{statistics.median(run.load.cpu_s / run.load.window_s for run in mine):.0%}",
                f"{statistics.median(_server_share(run) for run in mine):.0%}")
    return table


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m giftflow.bench.frameworks``: run the bench (or, internally, the generator)."""
    parser = argparse.ArgumentParser(prog="python -m giftflow.bench.frameworks",
                                     description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each (app, server)")
    parser.add_argument("--loadgen", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=WARMUP_S, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--path", default=PATH, help=argparse.SUPPRESS)
    parser.add_argument("--body", default=BODY.decode(), help=argparse.SUPPRESS)
    parser.add_argument("--header", action="append", default=[], help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.loadgen is not None:
        loadgen_main(options.loadgen, seconds=options.seconds,
                     connections=options.connections, warmup_s=options.warmup,
                     server_pid=options.server_pid, path=options.path,
                     body=options.body.encode(), headers=options.header)
        return
    run_frameworks_bench(Console(), seconds=options.seconds, connections=options.connections,
                         repeats=options.repeats)


if __name__ == "__main__":
    main()
