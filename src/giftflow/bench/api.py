"""``giftflow bench api``: gifts per second over HTTP, next to a bare ASGI app on the same path.

The server runs on one core (CPU 0), the load on the other (CPU 1): 64 keep-alive connections,
one request in flight each, every request a gift of one Rose to a live stream, committed durably
(SQLite ``synchronous=FULL``) through the gift committer. The same run serves, on a fresh
database each:

- **giftflow**: the real application (authentication, strict validation, ownership, problems);
- **bare**: a raw ASGI app calling the same services and gift committer, nothing else.

The ratio is giftflow's gifts per second over the bare app's; the issue's goal is at least 60 %,
and at least 5,000 gifts per second.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.table import Table

from giftflow.api import ws_frames
from giftflow.bench.frameworks import LOADGEN_CPU, SERVER_CPU, WARMUP_S, _free_port, _pinned
from giftflow.bootstrap import build_services
from giftflow.ledger import Applied
from giftflow.settings import Settings

ROSE: Final = 5655
SENDERS_PACKS: Final = 60
"""17,500-coin packs the sender buys: enough for every gift of a run."""
APPS: Final = ("giftflow", "bare")


@dataclass(frozen=True, slots=True)
class Served:
    """A running bench server: its port, an admin key, and its process id."""

    port: int
    key: str
    pid: int


@dataclass(frozen=True, slots=True)
class ApiRun:
    """One measured run of one app."""

    app: str
    gifts_per_s: float
    p50_ms: float
    p99_ms: float
    refused: int


def _seed(data_dir: Path) -> str:
    """A creator with a live stream and a well-funded viewer; returns an admin key."""
    settings = Settings(data_dir=data_dir, mode="demo")
    services = build_services(settings)
    economy = services.economy
    economy.register_user("star", region="US", time_zone="UTC", birth_date=date(1990, 1, 1),
                          is_creator=True)
    economy.register_user("fan", region="US", time_zone="UTC", birth_date=date(1990, 1, 1))
    for pack in range(SENDERS_PACKS):
        order = economy.create_order("fan", "web", "web-17500", "simulator", f"pack-{pack}")
        if isinstance(order, Applied):
            economy.simulate_payment(order.response["order_id"])
    services.streams.create("s1", "star", "bench")
    services.streams.start("s1")
    key = services.access.create_key("admin", label="bench")
    services.gifts.close()
    services.economy.ledger.store.close()
    return key


def _wait_ready(port: int, deadline_s: float = 30) -> None:
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the server on port {port} did not start")


@contextlib.contextmanager
def serving(app: str) -> Iterator[Served]:
    """A seeded data directory and ``app`` served by uvicorn on CPU ``SERVER_CPU``.

    The server's own output goes to a file, so that it can never block on a full pipe.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    try:
        key = _seed(data_dir)
        port = _free_port()
        # The rate limiter stays in the path, with a limit that the load cannot reach: this
        # measures throughput, not the limiter's refusals.
        env = {**os.environ, "GIFTFLOW_DATA_DIR": str(data_dir), "GIFTFLOW_MODE": "demo",
               "GIFTFLOW_BENCH_APP": app, "GIFTFLOW_RATE_REQUESTS_PER_S": "1000000",
               "GIFTFLOW_RATE_BURST_REQUESTS": "1000000"}
        env.pop("GIFTFLOW_DATABASE_URL", None)
        with (data_dir / "server.log").open("wb") as log:
            server = subprocess.Popen(  # noqa: S603 -- our own interpreter
                _pinned(SERVER_CPU, [str(Path(sys.executable).parent / "uvicorn"),
                                     "giftflow.bench.api_apps:app", "--host", "127.0.0.1",
                                     "--port", str(port), "--loop", "uvloop", "--http",
                                     "httptools", "--ws", ws_frames.PROTOCOL,
                                     "--no-access-log", "--log-level", "warning",
                                     "--backlog", "4096"]),
                env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            if app == "bare":
                time.sleep(2)  # the bare app has no /healthz; give uvicorn its start-up
            else:
                _wait_ready(port)
            yield Served(port, key, server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _run(app: str, seconds: float, connections: int) -> ApiRun:
    with serving(app) as served:
        body = json.dumps({"sender_id": "fan", "gift_id": ROSE, "count": 1})
        loadgen = _pinned(LOADGEN_CPU, [
            sys.executable, "-m", "giftflow.bench.frameworks", "--loadgen", str(served.port),
            "--seconds", str(seconds), "--connections", str(connections),
            "--warmup", str(WARMUP_S), "--server-pid", str(served.pid),
            "--path", "/v1/streams/s1/gifts", "--body", body,
            "--header", f"Authorization: Bearer {served.key}"])
        finished = subprocess.run(  # noqa: S603 -- our own argv
            loadgen, capture_output=True, check=True, text=True, timeout=seconds + 60)
    data = json.loads(finished.stdout.strip().splitlines()[-1])
    return ApiRun(app, data["ok"] / data["window_s"], data["p50_ms"], data["p99_ms"],
                  data["other"])


def run_api_bench(console: Console, *, seconds: float = 5.0, connections: int = 64,
                  repeats: int = 2) -> list[ApiRun]:
    """Measure both apps ``repeats`` times, alternating, and print the medians and the ratio."""
    console.print(f"[bold]giftflow bench api[/]: one-Rose gifts over HTTP, {connections} "
                  f"keep-alive connections, server on CPU {SERVER_CPU}, load on CPU "
                  f"{LOADGEN_CPU}, {seconds:g} s after a {WARMUP_S:g} s warm-up, SQLite "
                  f"synchronous=FULL, {repeats} runs each")
    runs: list[ApiRun] = []
    with console.status("measuring…"):
        for repeat in range(repeats):
            order = APPS if repeat % 2 == 0 else tuple(reversed(APPS))
            runs.extend(_run(app, seconds, connections) for app in order)
    table = Table(title="gifts per second over HTTP (medians)")
    for column in ("app", "gifts/s", "p50 ms", "p99 ms", "refused"):
        table.add_column(column, justify="right")
    medians = {}
    for app in APPS:
        mine = [run for run in runs if run.app == app]
        medians[app] = statistics.median(run.gifts_per_s for run in mine)
        table.add_row(app, f"{medians[app]:,.0f}",
                      f"{statistics.median(run.p50_ms for run in mine):.2f}",
                      f"{statistics.median(run.p99_ms for run in mine):.2f}",
                      str(sum(run.refused for run in mine)))
    console.print(table)
    console.print(f"giftflow / bare: {medians['giftflow'] / medians['bare']:.0%} "
                  "(goal: at least 60 %, and at least 5,000 gifts/s)")
    return runs
