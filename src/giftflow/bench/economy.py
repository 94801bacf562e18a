"""``giftflow bench economy``: end-to-end ``send_gift`` against the ledger's own group commit.

The same gifts (one-coin Roses from many viewers to one hot creator, in batches) go through two
paths on fresh databases of the same store:

- **economy**: ``EconomyService.send_gifts``, the whole domain path: the idempotency keys, the
  senders' rows locked, their limits and counters, first-in first-out lots, the two-leg ledger
  operation, the gift row, its lot pieces, the counters and the outbox event, one transaction
  per batch;
- **ledger**: ``Ledger.apply_batch`` with the same two legs per gift (COIN wallet to redeemed,
  DIAMOND issuance to held), the ledger's group-commit path without any domain rows.

Both go through the group-commit path that serves them: a ``GroupCommitter`` fed from
:data:`SUBMITTERS` threads, one gift per request with a completion callback, batches of up to the
same size. Runs are repeated with the order alternating; the figures are medians and the ratio is
the median of the ratios within each repeat. Each run ends with ``ledger verify``.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from giftflow.adapters.sql.store import SqlStore
from giftflow.bench.sites import PostgresSite, Site, SiteError, SqliteSite, display_url
from giftflow.economy import load_catalog, load_economy
from giftflow.economy.service import EconomyOptions, EconomyService, GiftRequest
from giftflow.economy.twofactor import SeedCipher
from giftflow.ledger import (
    Applied,
    GroupCommitSettings,
    Ledger,
    Operation,
    Result,
    TransferRequest,
    verify,
)
from giftflow.ledger.group_commit import GroupCommitter

ROSE_COINS = 1
VIEWERS = 200
"""Distinct senders; each buys enough coins for its share of the gifts."""
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
SUBMITTERS = 4
"""Threads submitting gifts to the committer, as request handlers would."""


def _through_committer(apply: Callable[[Sequence[Any]], list[Result]], items: Sequence[Any],
                       batch: int) -> float:
    """Gifts per second: ``items`` submitted one per request from :data:`SUBMITTERS` threads."""
    committer: GroupCommitter[Any] = GroupCommitter(
        apply, GroupCommitSettings(batch_operations_max=batch), batch_max=batch)
    failures: list[Result] = []
    finished = threading.Event()
    remaining = [len(items)]
    lock = threading.Lock()

    def done(results: list[Result]) -> None:
        with lock:
            failures.extend(result for result in results if not result.ok)
            remaining[0] -= len(results)
            if remaining[0] == 0:
                finished.set()

    def submit(share: int) -> None:
        for item in items[share::SUBMITTERS]:
            while not committer.submit_many((item,), done):
                time.sleep(0.001)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(SUBMITTERS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    finished.wait()
    elapsed = time.perf_counter() - started
    for thread in threads:
        thread.join()
    committer.close()
    if failures:
        raise EconomyBenchError(f"a gift failed: {failures[0]}")
    return len(items) / elapsed


class EconomyBenchError(Exception):
    """The benchmark could not run (a database missing, a run that failed)."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """One store's figures: gifts per second through each path and their ratio."""

    store: str
    economy_per_s: float
    ledger_per_s: float
    ratio: float


def _service(url: str) -> tuple[SqlStore, EconomyService]:
    store = SqlStore(url)
    service = EconomyService(store, Ledger(store), load_economy(), load_catalog(),
                             cipher=SeedCipher(SeedCipher.generate_key()),
                             options=EconomyOptions(demo_mode=True))
    return store, service


def _economy_run(url: str, gifts: int, batch: int) -> float:
    """Gifts per second through ``send_gifts`` behind a group committer."""
    store, service = _service(url)
    try:
        service.register_user("creator", region="US", time_zone="UTC",
                              birth_date=date(1990, 1, 1), is_creator=True,
                              kyc_status="verified")
        per_viewer = -(-gifts // VIEWERS) * ROSE_COINS
        for n in range(VIEWERS):
            service.register_user(f"v{n}", region="US", time_zone="UTC",
                                  birth_date=date(1990, 1, 1))
            bought = 0
            while bought < per_viewer:
                order = service.create_order(f"v{n}", "web", "web-17500", "simulator",
                                             f"o{n}-{bought}")
                if not isinstance(order, Applied):
                    raise EconomyBenchError(f"setup failed: {order}")
                service.simulate_payment(order.response["order_id"])
                bought += 17_500
        rose = next(g for g in service.catalog if g.coin_value == ROSE_COINS)
        requests = [GiftRequest(f"v{i % VIEWERS}", "creator", rose.id, 1, "live", f"g{i}")
                    for i in range(gifts)]
        rate = _through_committer(service.send_gifts, requests, batch)
        _verify(store)
        return rate
    finally:
        store.close()


def _ledger_run(url: str, gifts: int, batch: int) -> float:
    """Gifts per second through ``Ledger.apply_batch`` behind a group committer, same legs."""
    store = SqlStore(url)
    try:
        ledger = Ledger(store)
        issuance = ledger.open_account("COIN", "platform", "coins:issuance", allow_negative=True)
        redeemed = ledger.open_account("COIN", "platform", "coins:redeemed")
        diamonds = ledger.open_account("DIAMOND", "platform", "diamonds:issuance",
                                       allow_negative=True)
        held = ledger.open_account("DIAMOND", "creator", "diamonds:held")
        wallets = [ledger.open_account("COIN", f"v{n}", "wallet") for n in range(VIEWERS)]
        per_viewer = -(-gifts // VIEWERS) * ROSE_COINS
        ledger.apply_batch([Operation.of_transfers("setup", f"buy-{w.id}", [TransferRequest(
            "COIN", issuance.id, w.id, per_viewer, "purchase")]) for w in wallets])
        operations = [Operation(
            f"user:v{i % VIEWERS}|POST /v1/gifts", f"g{i}", "gift",
            {"sender": f"v{i % VIEWERS}", "creator": "creator", "count": 1},
            (TransferRequest("COIN", wallets[i % VIEWERS].id, redeemed.id, ROSE_COINS, "gift"),
             TransferRequest("DIAMOND", diamonds.id, held.id, 5_000, "gift")))
            for i in range(gifts)]
        rate = _through_committer(ledger.apply_batch, operations, batch)
        _verify(store)
        return rate
    finally:
        store.close()


def _verify(store: SqlStore) -> None:
    report = verify(store.verification_facts())
    broken = [check.name for check in report.checks if check.violations]
    if broken:
        raise EconomyBenchError(f"ledger verify failed after the run: {broken}")


def measure(site: Site, gifts: int, batch: int, repeats: int, progress: Progress) -> Measurement:
    """Median figures of ``repeats`` pairs of runs on fresh databases of ``site``."""
    economy: list[float] = []
    ledger: list[float] = []
    ratios: list[float] = []
    task = progress.add_task(f"{site.label}", total=repeats * 2)
    for repeat in range(repeats):
        pair: dict[str, float] = {}
        order = ("economy", "ledger") if repeat % 2 == 0 else ("ledger", "economy")
        for side in order:
            database = site.fresh()
            try:
                run = _economy_run if side == "economy" else _ledger_run
                pair[side] = run(database.url, gifts, batch)
            finally:
                database.drop()
            progress.advance(task)
        economy.append(pair["economy"])
        ledger.append(pair["ledger"])
        ratios.append(pair["economy"] / pair["ledger"])
    return Measurement(site.label, statistics.median(economy), statistics.median(ledger),
                  statistics.median(ratios))


def run_economy_bench(data_dir: Path, *, gifts: int, batch: int, repeats: int,
                      postgres_url: str | None, console: Console) -> list[Measurement]:
    """Measure on SQLite and (unless ``postgres_url`` is ``none``) PostgreSQL, and print."""
    sites: list[Site] = [SqliteSite(data_dir)]
    url = postgres_url or DEFAULT_POSTGRES_URL
    if url != "none":
        try:
            sites.append(PostgresSite(url))
        except SiteError as error:
            raise EconomyBenchError(str(error)) from error
    console.print(f"[bold]giftflow bench economy[/]: {gifts:,} one-coin gifts from {VIEWERS} "
                  f"viewers to one creator, one per request from {SUBMITTERS} threads to a "
                  f"group committer, batches of up to {batch}, {repeats} repeats, medians")
    for site in sites:
        where = site.describe() if isinstance(site, SqliteSite) else display_url(url)
        console.print(f"  {site.label}: {where}")
    results = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            results = [measure(site, gifts, batch, repeats, progress) for site in sites]
    finally:
        for site in sites:
            site.close()
    table = Table(title="send_gift end to end vs the ledger's group commit (gifts/s)")
    for column in ("store", "economy send_gifts", "ledger group commit (baseline)",
                   "economy / ledger"):
        table.add_column(column, justify="right")
    for result in results:
        table.add_row(result.store, f"{result.economy_per_s:,.0f}",
                      f"{result.ledger_per_s:,.0f}", f"{result.ratio:.0%}")
    console.print(table)
    return results
