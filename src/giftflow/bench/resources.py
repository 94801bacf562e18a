"""What bounds a benchmark: disk flush latency, CPU and run-queue time of us and of the server."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

ServerProbe = Callable[[], tuple[float, float]] | None
"""Reads the database server's CPU and run-queue seconds so far, when it runs on this machine."""

_LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})
_PROC = Path("/proc")


def flush_latency_s(directory: Path, samples: int = 200) -> float:
    """Median time of one 4 KiB write and ``fdatasync`` in ``directory`` (what a commit waits on).

    SQLite on Linux flushes its WAL with ``fdatasync``; PostgreSQL's default ``wal_sync_method``
    is ``fdatasync`` too.
    """
    path = directory / "flush-probe.bin"
    sync = getattr(os, "fdatasync", os.fsync)
    block = b"\0" * 4096
    times: list[float] = []
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for index in range(samples):
            os.pwrite(descriptor, block, (index % 16) * 4096)
            started = time.perf_counter()
            sync(descriptor)
            times.append(time.perf_counter() - started)
    finally:
        os.close(descriptor)
        path.unlink(missing_ok=True)
    return statistics.median(times)


def process_wait_s() -> float | None:
    """Seconds the threads of this process have waited for a CPU (run queue), from ``/proc``.

    Threads that ended are not counted; ``None`` where the kernel does not report it.
    """
    total = 0
    try:
        tasks = list((_PROC / "self" / "task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return total / 1e9


def postgres_probe(url: str) -> ServerProbe:
    """A reader of the CPU and run-queue seconds of every ``postgres`` process, when local.

    It sums them over the server's processes (the backends and the WAL writer, checkpointer and
    others), so it counts what the server spent on our behalf. ``None`` when the server is on
    another host or ``/proc`` cannot be read.
    """
    host = str(conninfo_to_dict(url).get("host") or "")
    if host not in _LOCAL_HOSTS and not host.startswith("/"):
        return None
    if not _postgres_pids():
        return None
    ticks_per_s = os.sysconf("SC_CLK_TCK")

    def read() -> tuple[float, float]:
        cpu_ticks = wait_ns = 0
        for pid in _postgres_pids():
            try:
                stat = (_PROC / pid / "stat").read_text()
                schedstat = (_PROC / pid / "schedstat").read_text().split()
            except OSError:
                continue  # the process ended meanwhile
            fields = stat[stat.rfind(")") + 2:].split()
            # utime and stime are fields 14 and 15 of stat; fields[0] here is field 3.
            cpu_ticks += int(fields[11]) + int(fields[12])
            wait_ns += int(schedstat[1])
        return cpu_ticks / ticks_per_s, wait_ns / 1e9

    return read


def _postgres_pids() -> list[str]:
    pids: list[str] = []
    try:
        entries = list(_PROC.iterdir())
    except OSError:
        return pids
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if name == "postgres":
            pids.append(entry.name)
    return pids
