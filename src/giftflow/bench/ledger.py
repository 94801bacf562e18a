"""``giftflow bench ledger``: gift-shaped operations on a hot creator, giftflow against bare SQL.

A gift is one operation of two linked transfers on two ledgers: COIN from the viewer's wallet to
the platform's redeemed account, and DIAMOND from issuance to the creator's held balance. Every
gift of the run goes to the same creator, so three accounts are hot.

One measurement (a store and a mode) goes like this:

1. Every database starts from the same state, built through giftflow: the platform accounts, one
   creator, and up to 1,000 viewers with coins.
2. Database A: giftflow applies the gifts once, untimed, recording every statement its store runs
   (``Db.trace``): the exact SQL and parameters of this run, id-block reservations, ``BEGIN`` and
   ``COMMIT`` included.
3. Database B: giftflow applies the same gifts, timed, without recording.
4. Database C: a minimal loop replays the recording with the bare driver, timed, on a connection
   with giftflow's PRAGMAs (read back from giftflow's own connection) or session settings.

B and C are repeated on fresh databases, alternating which goes first; the throughputs are the
medians of the runs and the ratio is the median of the ratios within each repeat. After each run
the ledger is verified, and its rows and every balance must equal A's, so both timed runs did the
same writes.

Modes: *one op per commit* calls ``Ledger.apply`` from one thread; *group commit* submits from
several threads to a ``GroupCommitter``, the real hot path, which applies batches of up to the
configured size with ``Ledger.apply_batch``. Each gift is one request of ``submit_many`` with a
completion callback, the path an event loop uses (``submit``, a ``Future`` per gift, is there for
threaded callers and costs more per gift).
"""

from __future__ import annotations

import gc
import os
import platform
import sqlite3
import statistics
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import psycopg
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from giftflow.adapters.sql.db import Trace
from giftflow.adapters.sql.store import SqlStore
from giftflow.adapters.sql.unit_of_work import SqlUnitOfWork
from giftflow.bench.replay import (
    Replay,
    ReplayError,
    Stopwatch,
    Timing,
    postgres_settings,
    prepare,
    run_together,
    sqlite_settings,
)
from giftflow.bench.resources import ServerProbe, flush_latency_s
from giftflow.bench.sites import DEFAULT_POSTGRES_URL, PostgresSite, Site, SiteError, SqliteSite
from giftflow.bootstrap import (
    build_ledger,
    group_commit_settings,
    open_store,
    tune_garbage_collector,
)
from giftflow.economy import load_economy
from giftflow.ledger import (
    GroupCommitter,
    Ledger,
    LedgerLimits,
    LedgerStore,
    Operation,
    Result,
    TransferRequest,
    verify,
)
from giftflow.ledger.ports import StoreConflict
from giftflow.settings import Settings

Mode = Literal["single", "clients", "group"]
SubmitApi = Literal["callback", "future"]
CLIENTS = 4
"""Client threads in the ``clients`` mode, each applying one gift per transaction."""
MODE_LABELS: dict[Mode, str] = {"single": "one op per commit",
                                "clients": f"one op per commit, {CLIENTS} clients",
                                "group": "group commit"}

SUBMITTERS = 4
"""Threads submitting to the GroupCommitter in group mode."""
VIEWERS_MAX = 1_000
FUNDING_COINS = 10**12
GIFT_MENU_COINS = (1, 1, 1, 5, 10, 30, 99, 199)
"""Coin prices of the gifts sent, in turn: mostly roses, some bigger gifts."""
RESULT_TIMEOUT_S = 600.0
REPEATS = 5
"""Timed runs of giftflow and of the baseline per measurement; the figures are their medians."""


class BenchError(Exception):
    """The benchmark could not measure what it claims to (a failed gift, differing writes…)."""


@dataclass(frozen=True, slots=True)
class Target:
    """What the issue asks of one store and mode."""

    ratio_min: float
    ops_per_s_min: float | None = None

    def describe(self) -> str:
        """The target as printed."""
        absolute = f", ≥ {self.ops_per_s_min:,.0f}/s" if self.ops_per_s_min else ""
        return f"≥ {self.ratio_min:.0%}{absolute}"


TARGETS: dict[tuple[str, Mode], Target] = {
    ("sqlite", "single"): Target(0.50),
    ("sqlite", "group"): Target(0.60, 20_000),
    ("postgresql", "single"): Target(0.60, 1_000),
    ("postgresql", "clients"): Target(0.60, 1_000),
    ("postgresql", "group"): Target(0.60),
}


# -- the starting state and the gifts --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Population:
    """The accounts every database of one measurement starts with (same ids everywhere)."""

    coins_redeemed: int
    diamond_issuance: int
    creator_held: int
    viewers: tuple[tuple[str, int], ...]
    """``(viewer name, COIN wallet id)``."""


def _store_settings(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"database_url": url})


def _populate(settings: Settings, url: str, viewers: int) -> Population:
    """Open the accounts and fund the viewers, through giftflow."""
    store = open_store(_store_settings(settings, url))
    try:
        ledger = build_ledger(settings, store)
        open_ = ledger.open_account
        coin_issuance = open_("COIN", "platform", "coins:issuance", allow_negative=True)
        redeemed = open_("COIN", "platform", "coins:redeemed", allow_negative=True)
        diamond_issuance = open_("DIAMOND", "platform", "diamonds:issuance", allow_negative=True)
        held = open_("DIAMOND", "creator-hot", "diamonds:held")
        wallets = tuple((f"viewer-{index:05d}", open_("COIN", f"viewer-{index:05d}", "wallet").id)
                        for index in range(viewers))
        funding = [Operation.of_transfers(
            f"provider:bench|{name}", "funding",
            [TransferRequest("COIN", coin_issuance.id, wallet, FUNDING_COINS, "purchase")],
            kind="purchase") for name, wallet in wallets]
        batch = ledger.limits.batch_operations_max
        for start in range(0, len(funding), batch):
            _check_results(ledger.apply_batch(funding[start:start + batch]), "funding")
    finally:
        store.close()
    return Population(redeemed.id, diamond_issuance.id, held.id, wallets)


def gifts(population: Population, count: int) -> list[Operation]:
    """``count`` gifts to the hot creator, from the viewers in turn, each with its own key."""
    region = load_economy().region("US")  # the creator share of the default economy file
    operations = []
    for index in range(count):
        viewer, wallet = population.viewers[index % len(population.viewers)]
        coins = GIFT_MENU_COINS[index % len(GIFT_MENU_COINS)]
        diamonds = region.diamonds_for(coins)
        operations.append(Operation(
            f"user:{viewer}|POST /v1/streams/{{id}}/gifts", f"gift-{index}", "gift",
            {"creator": "creator-hot", "coins": coins},
            [TransferRequest("COIN", wallet, population.coins_redeemed, coins, "gift",
                             shortfall_code="insufficient_coins"),
             TransferRequest("DIAMOND", population.diamond_issuance, population.creator_held,
                             diamonds, "gift")],
            actor=viewer))
    return operations


def _check_results(results: Sequence[Result], what: str) -> None:
    failed = [result for result in results if not result.ok or result.replayed]
    if failed:
        first = failed[0]
        reason = f"{first.code}: {first.detail}" if not first.ok else "replayed"
        raise BenchError(f"{len(failed)} of {len(results)} {what} operations failed ({reason})")


# -- giftflow's side -------------------------------------------------------------------------------


class _RecordingStore:
    """Giftflow's store, recording every unit of work's statements into its thread's trace.

    One trace per thread that applies operations: the replay runs them concurrently, each on
    a connection of its own, as the threads ran. Everything but :meth:`unit_of_work` is the
    store's own, looked up on it.
    """

    def __init__(self, store: SqlStore, traces: dict[int, Trace]) -> None:
        self._store = store
        self._traces = traces

    def unit_of_work(self) -> SqlUnitOfWork:
        unit_of_work = self._store.unit_of_work()
        # Set before BEGIN, so that BEGIN is recorded too.
        unit_of_work.db.trace = self._traces.setdefault(threading.get_ident(), [])
        return unit_of_work

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 -- whatever the store has
        return getattr(self._store, name)


class _CountingLedger(Ledger):
    """The ledger service, noting the size of each batch it applies (one list append each)."""

    def __init__(self, store: LedgerStore, limits: LedgerLimits) -> None:
        super().__init__(store, limits)
        self.batch_sizes: list[int] = []

    def apply_batch(self, operations: Sequence[Operation]) -> list[Result]:
        self.batch_sizes.append(len(operations))
        return super().apply_batch(operations)


@dataclass(frozen=True, slots=True)
class GiftflowRun:
    """One run of giftflow: its timing, its batches and its connection's settings."""

    timing: Timing
    batch_sizes: list[int]
    session: dict[str, str]


def _session(store: SqlStore) -> dict[str, str]:
    with store.connection() as db:
        if isinstance(db.raw, sqlite3.Connection):
            return sqlite_settings(db.raw)
        return postgres_settings(db.raw)


def run_giftflow(settings: Settings, url: str, operations: list[Operation], mode: Mode, *,
                 traces: dict[int, Trace] | None = None, server: ServerProbe = None,
                 submit_api: SubmitApi = "callback") -> GiftflowRun:
    """Apply ``operations`` with giftflow on the database at ``url``; only the applying is timed."""
    store_settings = _store_settings(settings, url)
    store = open_store(store_settings)
    try:
        session = _session(store)
        limits = build_ledger(store_settings, store).limits
        target: LedgerStore = store if traces is None else cast(
            "LedgerStore", _RecordingStore(store, traces))
        ledger = _CountingLedger(target, limits)
        stopwatch = Stopwatch(server)
        if mode == "single":
            stopwatch.start()
            results = [ledger.apply(operation) for operation in operations]
            timing = stopwatch.stop()
        elif mode == "clients":
            timing, results = _apply_in_clients(ledger, operations, stopwatch)
        else:
            committer: GroupCommitter[Operation] = GroupCommitter(
                ledger, group_commit_settings(store_settings))
            try:
                timing, results = _submit_all(committer, operations, stopwatch, submit_api)
            finally:
                committer.close()
    finally:
        store.close()
    _check_results(results, "gift")
    return GiftflowRun(timing, ledger.batch_sizes, session)


def _apply_in_clients(ledger: Ledger, operations: list[Operation],
                      stopwatch: Stopwatch) -> tuple[Timing, list[Result]]:
    """Apply from :data:`CLIENTS` threads, one gift per transaction each, started together.

    The time runs from the start to the last result.
    """
    shares: list[list[Result]] = [[] for _ in range(CLIENTS)]

    def work(index: int) -> None:
        shares[index].extend(ledger.apply(operation)
                             for operation in operations[index::CLIENTS])

    timing = run_together(CLIENTS, work, stopwatch)
    return timing, [result for share in shares for result in share]


def _submit_all(committer: GroupCommitter[Operation], operations: list[Operation],
                stopwatch: Stopwatch, submit_api: SubmitApi) -> tuple[Timing, list[Result]]:
    """Submit from :data:`SUBMITTERS` threads, each its share, one gift per request; wait for all.

    ``callback`` is the event-loop path: ``submit_many`` with a completion callback per request,
    here one that only keeps the results. ``future`` is ``submit``, a ``Future`` per gift.
    """
    if submit_api == "future":
        return _submit_futures(committer, operations, stopwatch)
    return _submit_callbacks(committer, operations, stopwatch)


def _in_threads(work: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=work, args=(index,), name=f"bench-submit-{index}")
               for index in range(SUBMITTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _submit_callbacks(committer: GroupCommitter[Operation], operations: list[Operation],
                      stopwatch: Stopwatch) -> tuple[Timing, list[Result]]:
    collected: list[list[Result]] = []
    refused = [0] * SUBMITTERS  # each thread writes its own slot
    finished = threading.Event()
    expected = len(operations)

    def done(results: list[Result]) -> None:  # called on the committer thread only
        collected.append(results)
        if len(collected) == expected:
            finished.set()

    def submit(index: int) -> None:
        refused[index] = sum(not committer.submit_many((operation,), done)
                             for operation in operations[index::SUBMITTERS])

    stopwatch.start()
    _in_threads(submit)
    if sum(refused):
        raise BenchError(f"the committer refused {sum(refused)} gifts (queue full)")
    if not finished.wait(RESULT_TIMEOUT_S):
        raise BenchError(f"{expected - len(collected)} gifts got no result within "
                         f"{RESULT_TIMEOUT_S:g} s")
    return stopwatch.stop(), [result for results in collected for result in results]


def _submit_futures(committer: GroupCommitter[Operation], operations: list[Operation],
                    stopwatch: Stopwatch) -> tuple[Timing, list[Result]]:
    futures: list[list[Future[Result]]] = [[] for _ in range(SUBMITTERS)]

    def submit(index: int) -> None:
        futures[index].extend(committer.submit(operation)
                              for operation in operations[index::SUBMITTERS])

    stopwatch.start()
    _in_threads(submit)
    every = [future for mine in futures for future in mine]
    # One wait for all of them: waiting on each future in turn would wake this thread once per
    # gift and take GIL time from the committer: the benchmark's cost, not giftflow's.
    _, pending = wait(every, timeout=RESULT_TIMEOUT_S)
    timing = stopwatch.stop()
    if pending:
        raise BenchError(f"{len(pending)} gifts got no result within {RESULT_TIMEOUT_S:g} s")
    return timing, [future.result() for future in every]


def _verified_state(settings: Settings, url: str) -> tuple[object, ...]:
    """Verify the ledger, then return its row counts and every balance (to compare runs)."""
    store = open_store(_store_settings(settings, url))
    try:
        report = verify(store.verification_facts())
        if not report.ok:
            broken = [check.description for check in report.checks if not check.ok]
            raise BenchError(f"ledger verify failed after a run: {', '.join(broken)}")
        with store.connection() as db:
            operations = db.execute("SELECT COUNT(*) FROM operations")[0]
            transfers = db.execute("SELECT COUNT(*), SUM(amount) FROM transfers")[0]
            balances = db.execute("SELECT id, posted, pending_debits, pending_credits "
                                  "FROM accounts ORDER BY id")
    finally:
        store.close()
    return (int(operations[0]), int(transfers[0]), int(transfers[1] or 0),
            tuple(tuple(int(value) for value in row) for row in balances))


# -- one measurement -------------------------------------------------------------------------------


@dataclass(slots=True)
class Measurement:
    """giftflow and its baseline for one store and mode."""

    site: str
    dialect: str
    mode: Mode
    operations: int
    target: Target
    giftflow: list[GiftflowRun] = field(default_factory=list)
    baseline: list[Timing] = field(default_factory=list)
    recorded_batches: list[int] = field(default_factory=list)
    replay: Replay | None = None
    error: str | None = None

    def giftflow_ops_per_s(self) -> float:
        """Median of giftflow's runs."""
        return statistics.median(self.operations / run.timing.seconds for run in self.giftflow)

    def baseline_ops_per_s(self) -> float:
        """Median of the baseline's runs."""
        return statistics.median(self.operations / timing.seconds for timing in self.baseline)

    def ratio(self) -> float:
        """Giftflow's throughput as a share of the baseline's: the median over the repeats.

        Each repeat runs giftflow and the baseline one right after the other, so comparing
        within a repeat keeps a change in the machine's load (other work on a shared machine)
        out of the ratio better than comparing the two medians would.
        """
        return statistics.median(
            timing.seconds / run.timing.seconds
            for run, timing in zip(self.giftflow, self.baseline, strict=True))

    def passed(self) -> bool:
        """Whether the target holds."""
        floor = self.target.ops_per_s_min
        return self.ratio() >= self.target.ratio_min and (
            floor is None or self.giftflow_ops_per_s() >= floor)

    def median_giftflow(self) -> GiftflowRun:
        """The run with the median time."""
        return sorted(self.giftflow, key=lambda run: run.timing.seconds)[len(self.giftflow) // 2]

    def median_baseline(self) -> Timing:
        """The baseline run with the median time."""
        return sorted(self.baseline, key=lambda timing: timing.seconds)[len(self.baseline) // 2]


class _Steps:
    """The progress display; it is refreshed between timed sections only, never during one."""

    def __init__(self, progress: Progress, total: int) -> None:
        self._progress = progress
        self._task = progress.add_task("", total=total)

    def next(self, description: str) -> None:
        self._progress.update(self._task, description=description)
        self._progress.refresh()

    def done(self) -> None:
        self._progress.advance(self._task)
        self._progress.refresh()


def measure(settings: Settings, site: Site, mode: Mode, operations: int, repeats: int,
            steps: _Steps) -> Measurement:
    """Record on A, then time giftflow (B) and the replay (C) ``repeats`` times each."""
    result = Measurement(site.label, site.dialect, mode, operations, TARGETS[site.dialect, mode])
    name = f"{site.label} · {MODE_LABELS[mode]}"
    viewers = min(VIEWERS_MAX, operations)
    steps.next(f"{name}: recording giftflow's statements")
    database = site.fresh()
    try:
        population = _populate(settings, database.url, viewers)
        gift_operations = gifts(population, operations)
        traces: dict[int, Trace] = {}
        recorded = run_giftflow(settings, database.url, gift_operations, mode, traces=traces)
        result.replay = prepare(list(traces.values()), site.dialect)
        result.recorded_batches = recorded.batch_sizes
        del traces
        expected = _verified_state(settings, database.url)
    finally:
        database.drop()
    steps.done()
    # The recording is kept alive for the replays; freezing it keeps it out of the collector's
    # passes, so that it does not slow giftflow's own garbage collection in the timed runs.
    gc.collect()
    gc.freeze()
    try:
        for repeat in range(repeats):
            order = ("giftflow", "baseline") if repeat % 2 == 0 else ("baseline", "giftflow")
            for side in order:
                steps.next(f"{name}: {side} run {repeat + 1}/{repeats}")
                _timed(settings, site, side, population, gift_operations, recorded, expected,
                       result)
                steps.done()
    finally:
        gc.unfreeze()
    return result


def _timed(settings: Settings, site: Site, side: str, population: Population,
           operations: list[Operation], recorded: GiftflowRun, expected: tuple[object, ...],
           result: Measurement) -> None:
    database = site.fresh()
    try:
        if _populate(settings, database.url, len(population.viewers)) != population:
            raise BenchError("the starting state differs between databases")
        if side == "giftflow":
            run = run_giftflow(settings, database.url, operations, result.mode,
                               server=site.server)
            if run.session != recorded.session:
                raise BenchError("giftflow's connection settings changed between runs")
            result.giftflow.append(run)
        else:
            if result.replay is None:
                raise BenchError("nothing was recorded to replay")
            result.baseline.append(site.replay(database, recorded.session, result.replay))
        if _verified_state(settings, database.url) != expected:
            raise BenchError(f"the {side} run wrote other rows or balances than the recorded run")
    finally:
        database.drop()


# -- what bounds a figure --------------------------------------------------------------------------


def _share(seconds: float | None, wall: float) -> float | None:
    return None if seconds is None else seconds / wall


def bound(dialect: str, timing: Timing, sqlite_synchronous: str = "FULL") -> str:
    """The resource that limits a run, with the shares of the wall time that show it.

    Shares are of one core and can pass 100 % when several threads or processes run at once:
    ``cpu`` is time on a CPU, ``queued`` time ready to run but waiting for a core (other
    processes competing), and for PostgreSQL the same for every server process. A side that is on
    a CPU or queued for one at least 80 % of the time is the bound; otherwise the run alternates
    between resources: CPU and the disk flush for SQLite; client, server and the WAL flush (round
    trips) for PostgreSQL.
    """
    wall = timing.seconds
    client, queued = timing.client_cpu_seconds / wall, _share(timing.client_wait_seconds, wall)
    server = _share(timing.server_cpu_seconds, wall)
    server_queued = _share(timing.server_wait_seconds, wall)
    figures = f"cpu {client:.0%}" + ("" if queued is None else f", queued {queued:.0%}")
    if server is not None:
        figures += f"; server cpu {server:.0%}, queued {server_queued or 0.0:.0%}"
    # Time queued for a core counts as demand for CPU: the process would have been running.
    client_demand = client + (queued or 0.0)
    server_demand = None if server is None else server + (server_queued or 0.0)
    saturated = 0.8
    if client_demand >= saturated and client_demand >= (server_demand or 0.0):
        name = "CPU: one core of the Python process"
    elif server_demand is not None and server_demand >= saturated:
        name = "CPU: the PostgreSQL server"
    elif dialect == "sqlite":
        name = ("CPU and WAL write + fsync per commit, in turn" if sqlite_synchronous == "FULL"
                else "CPU and WAL writes, in turn")
    else:
        name = "round trips: client, server and WAL flush in turn"
    contention = (queued or 0.0) + (server_queued or 0.0)
    if contention >= 0.2:  # noqa: PLR2004 -- worth naming: a fifth of the time waiting for a core
        name += ", slowed by other work on the cores"
    return f"{name} ({figures})"


# -- the command -----------------------------------------------------------------------------------


def _load() -> str:
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _machine() -> str:
    memory = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        memory = "?"
    return (f"{os.cpu_count()} CPUs, {memory} RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")


def _sites(settings: Settings, postgres_url: str | None,
           console: Console) -> list[Site]:
    sites: list[Site] = [SqliteSite(settings.data_dir)]
    if postgres_url is not None and postgres_url.strip().lower() == "none":
        console.print("[yellow]PostgreSQL: skipped (--postgres-url none)[/]")
        return sites
    try:
        sites.append(PostgresSite(postgres_url or DEFAULT_POSTGRES_URL))
    except SiteError as error:
        console.print(f"[yellow]PostgreSQL: skipped: {error}[/]")
    return sites


def run_ledger_bench(settings: Settings, *, operations: int, single_operations: int,
                     postgres_url: str | None, console: Console, repeats: int = REPEATS) -> None:
    """Measure every store and mode against its baseline, print the table; exit 1 on an error."""
    if repeats < 1:
        raise BenchError("repeats must be at least 1")
    # The process is tuned as a long-running giftflow process is; giftflow and the baseline
    # share it, so both run under the same collector settings.
    tune_garbage_collector()
    sites = _sites(settings, postgres_url, console)
    try:  # the temporary files and schemas go away whatever happens, Ctrl-C included
        flush_s = flush_latency_s(sites[0].directory) if isinstance(sites[0], SqliteSite) else 0.0
        _print_header(settings, sites, flush_s, console)
        measurements = _measure_all(settings, sites, operations, single_operations, repeats,
                                    console)
    finally:
        for site in sites:
            site.close()
    _print_results(measurements, settings.sqlite_synchronous, console)
    console.print(f"load average (1 / 5 / 15 min) at the end: {_load()}")
    if any(measurement.error for measurement in measurements):
        raise typer.Exit(1)


def _measure_all(settings: Settings, sites: list[Site], operations: int, single_operations: int,
                 repeats: int, console: Console) -> list[Measurement]:
    # SQLite has one writer at a time, so several clients add nothing to measure there.
    plan: list[tuple[Site, Mode, int]] = [
        (site, mode, operations if mode == "group" else single_operations)
        for site in sites for mode in ("single", "clients", "group")
        if mode != "clients" or site.dialect == "postgresql"]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, auto_refresh=False, transient=True) as progress:
        steps = _Steps(progress, len(plan) * (1 + 2 * repeats))
        return [_measure_safely(settings, site, mode, count, repeats, steps, console)
                for site, mode, count in plan]


def _measure_safely(settings: Settings, site: Site, mode: Mode, count: int, repeats: int,
                    steps: _Steps, console: Console) -> Measurement:
    """One measurement; an expected failure becomes a message and an error row, not a traceback."""
    try:
        return measure(settings, site, mode, count, repeats, steps)
    except (BenchError, ReplayError, SiteError, StoreConflict, OSError, sqlite3.Error,
            psycopg.Error, TimeoutError) as error:
        message = f"{type(error).__name__}: {str(error).strip()}"
        console.print(f"[red]{site.label} · {MODE_LABELS[mode]}: failed: {message}[/]")
        return Measurement(site.label, site.dialect, mode, count, TARGETS[site.dialect, mode],
                           error=message)


def _print_header(settings: Settings, sites: list[Site], flush_s: float,
                  console: Console) -> None:
    console.print(f"[bold]giftflow bench ledger[/] — {_machine()}; load average (1 / 5 / 15 min) "
                  f"at the start: {_load()}")
    console.print(
        f"SQLite synchronous={settings.sqlite_synchronous}, "
        f"cache {settings.sqlite_cache_size_kib:,} KiB; group commit: GroupCommitter.submit_many, "
        f"one gift per request with a completion callback, {SUBMITTERS} submitting threads, "
        f"batches ≤ {settings.group_commit_batch_operations_max}"
        f", window {settings.group_commit_window_us / 1000:g} ms; data flush (4 KiB + fdatasync) "
        f"{flush_s * 1e3:.3f} ms")
    for site in sites:
        console.print(f"{site.label}: {site.describe()}")


def _print_results(measurements: list[Measurement], sqlite_synchronous: str,
                   console: Console) -> None:
    table = Table(title="gift operations per second: giftflow vs bare SQL (medians of the runs; "
                        "ratio: median over the pairs of runs)")
    for column in ("store", "mode", "gifts", "giftflow", "baseline", "ratio", "target", "result"):
        table.add_column(column, justify="left" if column in {"store", "mode", "target"}
                         else "right")
    bounds = Table(title="what bounds each figure (the median run)")
    for column in ("store · mode", "giftflow", "baseline"):
        bounds.add_column(column)
    for item in measurements:
        head = (item.site, MODE_LABELS[item.mode], f"{item.operations:,}")
        if item.error is not None or item.replay is None:
            table.add_row(*head, "—", "—", "—", item.target.describe(), "[red]error[/]")
            continue
        table.add_row(
            *head, f"{item.giftflow_ops_per_s():,.0f}", f"{item.baseline_ops_per_s():,.0f}",
            f"{item.ratio():.0%}", item.target.describe(),
            "[green]pass[/]" if item.passed() else "[red]FAIL[/]")
        bounds.add_row(f"{item.site} · {MODE_LABELS[item.mode]}",
                       bound(item.dialect, item.median_giftflow().timing, sqlite_synchronous),
                       bound(item.dialect, item.median_baseline(), sqlite_synchronous))
    console.print(table)
    console.print(bounds)
    _print_details(measurements, console)


def _print_details(measurements: list[Measurement], console: Console) -> None:
    table = Table(title="what each run did")
    for column in ("store · mode", "commits: recorded / timed", "driver calls",
                   "giftflow ops/s, each run", "baseline ops/s, each run"):
        table.add_column(column)
    for item in measurements:
        if item.replay is None or not item.giftflow:
            continue
        timed = statistics.median(len(run.batch_sizes) for run in item.giftflow)
        table.add_row(
            f"{item.site} · {MODE_LABELS[item.mode]}",
            f"{len(item.recorded_batches):,} / {timed:,.0f} "
            f"(mean batch {item.operations / max(timed, 1):,.1f})",
            f"{item.replay.statements:,} calls in {item.replay.round_trips:,} waits "
            f"({item.replay.round_trips / item.operations:.2f} waits per gift"
            + (f", {item.replay.rollbacks} rollbacks" if item.replay.rollbacks else "") + ")",
            ", ".join(f"{item.operations / run.timing.seconds:,.0f}" for run in item.giftflow),
            ", ".join(f"{item.operations / timing.seconds:,.0f}" for timing in item.baseline))
    console.print(table)
    for item in measurements:
        if item.replay is not None:
            calls = ", ".join(f"{name} × {count / item.operations:.3g}"
                              for name, count in item.replay.kinds().items())
            console.print(f"{item.site} · {MODE_LABELS[item.mode]}, recorded driver calls per "
                          f"gift: {calls}")
