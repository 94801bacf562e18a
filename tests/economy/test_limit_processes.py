"""A daily gift limit under concurrency (Economy issue, point 5), on SQLite and on PostgreSQL.

Eight OS processes (``limit_worker.py``), each with its own store and economy service on the same
database and the same fixed clock, send one viewer's 1-coin and 5-coin gifts as fast as they can.
Together they attempt about twice the viewer's daily gift limit; what they were granted must be
exactly the limit, never more.
"""

from __future__ import annotations

import importlib.util
import logging
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from giftflow.adapters.sql.store import SqlStore
from giftflow.economy import accounts as acc
from giftflow.economy import codes
from giftflow.economy.service import EconomyService
from giftflow.ledger import Applied, verify

log = logging.getLogger(__name__)
WORKER = Path(__file__).resolve().with_name("limit_worker.py")
ROOT = WORKER.parent.parent.parent
_spec = importlib.util.spec_from_file_location("limit_worker", WORKER)
assert _spec is not None and _spec.loader is not None
limit_worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(limit_worker)

PROCESSES = 8
LIMIT = 1000
"""The viewer's ``gifted_daily`` limit, in coins."""
GIFTS_PER_PROCESS = 100
ONES_AT_THE_END = 20
"""Each process ends with this many 1-coin gifts, so that the limit is reached exactly."""
CLOCK_MS = 1_767_272_400_000
"""2026-01-01T13:00:00Z, the fixed time of every process: one day, one counter."""
SEED = 5


def _plans(rng: random.Random) -> list[list[int]]:
    mixed = GIFTS_PER_PROCESS - ONES_AT_THE_END
    return [[rng.choice((1, 5)) for _ in range(mixed)] + [1] * ONES_AT_THE_END
            for _ in range(PROCESSES)]


def _wait_ready(outs: list[Path], processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if all(out.read_bytes().startswith(b"READY\n") for out in outs):
            return
        dead = [p.args for p in processes if p.poll() is not None]
        assert not dead, f"a worker ended before it was ready: {dead}"
        time.sleep(0.01)
    pytest.fail("the workers did not open the store in time")


def _set_up(service: EconomyService) -> int:
    """A viewer with 4200 coins and a daily gift limit, and a creator; the viewer's coins."""
    for user_id, creator in (("viewer", False), ("creator", True)):
        assert service.register_user(user_id, region="US", time_zone="America/New_York",
                                     birth_date=date(1990, 5, 1), is_creator=creator,
                                     kyc_status="verified").ok
    for index in range(3):
        order = service.create_order("viewer", "web", "web-1400", "simulator", f"buy-{index}")
        assert isinstance(order, Applied), order
        assert isinstance(service.simulate_payment(order.response["order_id"]), Applied)
    assert isinstance(service.set_limit("viewer", "gifted_daily", LIMIT), dict)
    service.book.open([acc.COIN_REDEEMED, acc.DIAMOND_ISSUANCE,
                       acc.wallet(acc.owner_of_user("viewer")), acc.held("creator")])
    return service.wallet("viewer")["coins"]


def _run_workers(store_url: str, plans: list[list[int]], tmp_path: Path) -> list[Path]:
    """Start a worker per plan, let them all go at once, and return their outputs."""
    go = tmp_path / "go"
    outs = [tmp_path / f"worker-{n}.out" for n in range(len(plans))]
    errs = [tmp_path / f"worker-{n}.err" for n in range(len(plans))]
    processes = []
    for n, plan in enumerate(plans):
        with outs[n].open("wb") as stdout, errs[n].open("wb") as stderr:
            processes.append(subprocess.Popen(
                [sys.executable, str(WORKER), "--db", store_url, "--clock", str(CLOCK_MS),
                 "--sender", "viewer", "--creator", "creator", "--worker", str(n),
                 "--plan", ",".join(map(str, plan)), "--go", str(go)],
                stdout=stdout, stderr=stderr, cwd=ROOT))
    try:
        _wait_ready(outs, processes)
        started = time.perf_counter()
        go.touch()
        for process in processes:
            process.wait(timeout=300)
        log.info("%d workers finished in %.1fs", len(plans), time.perf_counter() - started)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for n, process in enumerate(processes):
        assert process.returncode == 0, errs[n].read_text()
    return outs


def _parse(outs: list[Path]) -> tuple[dict[str, int], Counter[tuple[str, int]], Counter[str]]:
    """Granted gifts (key → coins), refusals by (code, coins), and transient answers by code."""
    granted: dict[str, int] = {}
    refused: Counter[tuple[str, int]] = Counter()
    transient: Counter[str] = Counter()
    for n, out in enumerate(outs):
        for line in out.read_text().splitlines()[1:]:
            match line.split():
                case ["OK", key, coins]:
                    assert key not in granted, f"worker {n}: {key} answered twice"
                    granted[key] = int(coins)
                case ["REFUSED", _, coins, code]:
                    refused[code, int(coins)] += 1
                case ["TRANSIENT", _, code]:
                    transient[code] += 1
                case _:
                    pytest.fail(f"worker {n}: unexpected line {line!r}")
    return granted, refused, transient


def test_gifts_from_eight_processes_never_pass_the_daily_gift_limit(
        store_url: str, tmp_path: Path) -> None:
    """Gifts from 8 processes against one viewer's daily gift limit sum to exactly the limit:
    every refusal is ``gift_limit_daily``, the gifts, the spend counter and the wallet agree, and
    ``ledger verify`` passes.
    """
    service = limit_worker.build_service(store_url, CLOCK_MS, migrate=True)
    try:
        coins_before = _set_up(service)
        assert coins_before == 4200
        granted, refused, transient = _parse(
            _run_workers(store_url, _plans(random.Random(SEED)), tmp_path))
        decided = len(granted) + sum(refused.values())
        assert decided == PROCESSES * GIFTS_PER_PROCESS, (decided, refused)
        assert {code for code, _ in refused} <= {codes.GIFT_LIMIT_DAILY}, refused
        assert refused[codes.GIFT_LIMIT_DAILY, 1] > 0, "no 1-coin gift was refused"
        assert sum(granted.values()) == LIMIT, (sum(granted.values()), refused)
        assert len({key.split("-")[0] for key in granted}) > 1, "the workers did not overlap"

        gifts = service.store.read("gifts", {"sender_id": "viewer"})
        assert (len(gifts), sum(g["coins"] for g in gifts)) == (len(granted), LIMIT)
        viewer = service.user("viewer")
        assert viewer is not None
        day, _ = service.periods(viewer)
        counter = service.store.read("spend_counters", {"owner": acc.owner_of_user("viewer"),
                                                        "metric": "gifted", "period": day})
        assert [row["amount"] for row in counter] == [LIMIT]
        assert service.wallet("viewer")["coins"] == coins_before - LIMIT
        report = verify(service.store.verification_facts())
        assert not [(c.name, c.violations) for c in report.checks if c.violations]
        log.info("%s: refused %s; transient answers %s", service.store.dialect, dict(refused),
                 dict(transient))
    finally:
        store = service.store
        assert isinstance(store, SqlStore)
        store.close()
