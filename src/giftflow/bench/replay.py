"""The bare-SQL baseline: replays statements recorded from giftflow with the driver alone.

A recording (:data:`giftflow.adapters.sql.db.Trace`) holds every statement that giftflow's ``Db``
ran, with its parameters, including ``BEGIN``, ``COMMIT`` and the id-block reservations. The
replay runs exactly those statements, in the same order and transactions, ``executemany`` as
``executemany``, on a connection opened the way giftflow opens its own: nothing else runs in the
timed loop.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from giftflow.adapters.sql.db import Trace, send_batch
from giftflow.bench.resources import ServerProbe, process_wait_s

SQLITE_PRAGMAS = (
    "journal_mode", "synchronous", "foreign_keys", "cache_size", "busy_timeout",
    "wal_autocheckpoint", "temp_store", "mmap_size", "locking_mode", "automatic_index",
    "cache_spill", "secure_delete", "recursive_triggers", "page_size",
)
"""The SQLite settings read from giftflow's connection and given to the baseline's."""

POSTGRES_SETTINGS = (
    "synchronous_commit", "default_transaction_isolation", "jit", "plan_cache_mode", "work_mem",
    "commit_delay", "wal_sync_method",
)
"""The PostgreSQL session settings compared between giftflow's connection and the baseline's.

``search_path`` is left out: the URL of each fresh database sets it to that database's schema.
"""


class ReplayError(Exception):
    """The baseline could not be set up like giftflow's connection, or the replay failed."""


@dataclass(frozen=True, slots=True)
class Step:
    """One recorded statement, ready for the driver (placeholders converted)."""

    many: bool
    sql: str
    params: Any
    group: tuple[Step, ...] = ()
    """For a PostgreSQL round trip (``sql`` is ``queries`` or ``write``): the calls it sends."""
    raw_group: tuple[tuple[str, str, Any], ...] = ()
    """The same calls as recorded (``?`` placeholders), as ``send_batch`` takes them."""

    def flat(self) -> tuple[Step, ...]:
        """This step, or the calls of its pipeline."""
        return self.group or (self,)


@dataclass(frozen=True, slots=True)
class Replay:
    """A recording prepared for one dialect: one lane of steps per client connection.

    Lanes replay concurrently, each on its own connection, as giftflow's clients ran.
    """

    dialect: str
    lanes: tuple[tuple[Step, ...], ...]

    @property
    def steps(self) -> tuple[Step, ...]:
        """Every lane's steps, one lane after the other."""
        return tuple(step for lane in self.lanes for step in lane)

    @property
    def calls(self) -> tuple[Step, ...]:
        """Every driver call, pipelines unpacked."""
        return tuple(call for step in self.steps for call in step.flat())

    @property
    def statements(self) -> int:
        """How many driver calls the replay makes (``BEGIN`` and ``COMMIT`` included)."""
        return len(self.calls)

    @property
    def round_trips(self) -> int:
        """How many times the replay waits for the database (a pipeline waits once)."""
        return len(self.steps)

    @property
    def commits(self) -> int:
        """How many transactions it commits."""
        return sum(1 for step in self.calls if step.sql == "COMMIT")

    @property
    def rollbacks(self) -> int:
        """How many transactions it rolls back (lost races that giftflow retried)."""
        return sum(1 for step in self.calls if step.sql == "ROLLBACK")

    def kinds(self) -> dict[str, int]:
        """Driver calls by the first words of their SQL, for the report."""
        counts: dict[str, int] = {}
        for step in self.calls:
            words = step.sql.split()
            name = " ".join(words[:3] if words[0] == "INSERT" else words[:1])
            name = f"{name} (executemany)" if step.many else name
            counts[name] = counts.get(name, 0) + 1
        return counts


def prepare(traces: Sequence[Trace], dialect: str) -> Replay:
    """Turn recordings, one per client, into driver calls.

    Placeholders are converted as giftflow's ``Db`` converts them.
    """
    lanes: list[tuple[Step, ...]] = []
    for trace in traces:
        steps: list[Step] = []
        for kind, sql, params in trace:
            if kind == "pipeline":
                if dialect == "sqlite" or sql not in {"queries", "write"}:
                    raise ReplayError(f"unexpected pipeline {sql!r} for {dialect}")
                group = tuple(_step(call_kind, call_sql, call_params, dialect)
                              for call_kind, call_sql, call_params in params)
                steps.append(Step(many=False, sql=sql, params=None, group=group,
                                  raw_group=tuple(params)))
            else:
                steps.append(_step(kind, sql, params, dialect))
        lanes.append(tuple(steps))
    return Replay(dialect, tuple(lanes))


def _step(kind: str, sql: str, params: Any, dialect: str) -> Step:  # noqa: ANN401 -- driver data
    many = kind == "executemany"
    if not many and kind != "execute":
        raise ReplayError(f"unknown recorded call {kind!r}")
    if dialect == "sqlite":
        return Step(many, sql, params)
    # psycopg: '%s' placeholders, and no parameters at all rather than an empty tuple.
    return Step(many, sql.replace("?", "%s"), params if many else (params or None))


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall time of one timed section, and where the time went, all in seconds.

    ``*_cpu_seconds`` is time on a CPU; ``*_wait_seconds`` is time spent ready to run but waiting
    for a CPU (the run queue), which shows other processes competing for the cores. The server's
    figures are ``None`` when it is not on this machine; ``client_wait_seconds`` is ``None`` where
    the kernel does not report run-queue time.
    """

    seconds: float
    client_cpu_seconds: float
    client_wait_seconds: float | None
    server_cpu_seconds: float | None
    server_wait_seconds: float | None


class Stopwatch:
    """Measures a section between :meth:`start` and :meth:`stop`."""

    def __init__(self, server: ServerProbe = None) -> None:
        self._server_probe = server
        self._wall = self._cpu = 0.0
        self._wait: float | None = None
        self._server: tuple[float, float] | None = None

    def start(self) -> None:
        """Start measuring."""
        self._server = None if self._server_probe is None else self._server_probe()
        self._wait = process_wait_s()
        self._cpu = time.process_time()
        self._wall = time.perf_counter()

    def stop(self) -> Timing:
        """Stop measuring and return what was measured."""
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        wait_now = process_wait_s()
        wait = None if wait_now is None or self._wait is None else wait_now - self._wait
        server_cpu = server_wait = None
        if self._server_probe is not None and self._server is not None:
            cpu_now, server_wait_now = self._server_probe()
            server_cpu = cpu_now - self._server[0]
            server_wait = server_wait_now - self._server[1]
        return Timing(wall, cpu, wait, server_cpu, server_wait)


def _run_pipeline(cursor: Any, step: Step) -> None:  # noqa: ANN401 -- psycopg's cursor
    """One PostgreSQL round trip of several statements, sent as giftflow's ``Db`` sends it.

    That is the driver's client-side binding of them all into one query (``send_batch``).
    """
    send_batch(cursor.connection, step.raw_group)


def run_steps(cursor: Any, steps: tuple[Step, ...],  # noqa: ANN401 -- either driver's cursor
              stopwatch: Stopwatch) -> Timing:
    """The minimal loop: execute each step, reading the rows of statements that return rows."""
    stopwatch.start()
    for step in steps:
        if step.group:
            _run_pipeline(cursor, step)
        elif step.many:
            cursor.executemany(step.sql, step.params)
        else:
            cursor.execute(step.sql, step.params)
            if cursor.description is not None:
                cursor.fetchall()
    return stopwatch.stop()


def sqlite_settings(raw: sqlite3.Connection) -> dict[str, str]:
    """The values of :data:`SQLITE_PRAGMAS` on a connection."""
    values: dict[str, str] = {}
    for name in SQLITE_PRAGMAS:
        row = raw.execute(f"PRAGMA {name}").fetchone()
        values[name] = "" if row is None else str(row[0])
    return values


def postgres_settings(raw: psycopg.Connection[Any]) -> dict[str, str]:
    """The values of :data:`POSTGRES_SETTINGS` on a connection."""
    values: dict[str, str] = {}
    for name in POSTGRES_SETTINGS:
        row = raw.execute(f"SHOW {name}").fetchone()
        values[name] = "" if row is None else str(row[0])
    return values


def open_sqlite(path: Path, settings: dict[str, str]) -> sqlite3.Connection:
    """A connection opened like giftflow's (autocommit), with giftflow's settings, checked."""
    raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for name, value in settings.items():
        if name != "page_size":  # fixed when the file was created (by giftflow's store)
            raw.execute(f"PRAGMA {name}={value}")
    mine = sqlite_settings(raw)
    if mine != settings:
        differ = {name: (settings[name], mine[name]) for name in settings
                  if settings[name] != mine.get(name)}
        raw.close()
        raise ReplayError(f"the baseline's SQLite settings differ from giftflow's: {differ}")
    return raw


def open_postgres(url: str, settings: dict[str, str]) -> psycopg.Connection[Any]:
    """A connection opened like giftflow's pool opens one (autocommit), with its settings."""
    raw = psycopg.connect(url, autocommit=True)
    mine = postgres_settings(raw)
    if mine != settings:
        raw.close()
        raise ReplayError(f"the baseline's session settings differ from giftflow's: "
                          f"{settings} vs {mine}")
    return raw


def replay_sqlite(path: Path, settings: dict[str, str], replay: Replay) -> Timing:
    """Replay on the SQLite file at ``path``; returns the time of the loop alone."""
    if len(replay.lanes) != 1:
        raise ReplayError("SQLite recordings are replayed from one connection")
    raw = open_sqlite(path, settings)
    try:
        return run_steps(raw.cursor(), replay.lanes[0], Stopwatch())
    finally:
        raw.close()


def replay_postgres(url: str, settings: dict[str, str], replay: Replay,
                    server: ServerProbe) -> Timing:
    """Replay on the PostgreSQL database at ``url``; returns the time of the loops alone.

    Each lane runs on its own connection, all lanes at once.
    """
    connections = [open_postgres(url, settings) for _ in replay.lanes]
    try:
        if len(connections) == 1:
            with connections[0].cursor() as cursor:
                return run_steps(cursor, replay.lanes[0], Stopwatch(server))
        return _run_lanes(connections, replay.lanes, Stopwatch(server))
    finally:
        for connection in connections:
            connection.close()


def _run_lanes(connections: Sequence[Any], lanes: Sequence[tuple[Step, ...]],
               stopwatch: Stopwatch) -> Timing:
    """Run each lane on its own connection, in a thread of its own, all started together."""
    def run(index: int) -> None:
        with connections[index].cursor() as cursor:
            run_steps(cursor, lanes[index], Stopwatch())

    try:
        return run_together(len(lanes), run, stopwatch)
    except Exception as error:
        raise ReplayError(f"a replay lane failed: {error!r}") from error


def run_together(count: int, work: Callable[[int], None], stopwatch: Stopwatch) -> Timing:
    """Run ``work(0)`` … ``work(count - 1)`` in threads released together; time them all.

    The time runs from the release to the end of the last; the first error raised in a thread is
    raised again here.
    """
    start = threading.Barrier(count + 1)
    errors: list[Exception] = []

    def run(index: int) -> None:
        start.wait()
        try:
            work(index)
        except Exception as error:  # noqa: BLE001 -- raised again by the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,), name=f"bench-{index}")
               for index in range(count)]
    for thread in threads:
        thread.start()
    stopwatch.start()
    start.wait()
    for thread in threads:
        thread.join()
    timing = stopwatch.stop()
    if errors:
        raise errors[0]
    return timing
