"""Smoke tests of `giftflow bench ledger` and `giftflow bench events` at tiny sizes."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from giftflow.bench.ledger import run_ledger_bench
from giftflow.settings import Settings


def test_bench_ledger_runs_both_modes_on_sqlite_and_prints_the_comparison(tmp_path: Path) -> None:
    """At tiny sizes on SQLite alone, the bench records, replays and times both modes.

    It must finish without an error row (every gift applied, and giftflow's timed run and the
    bare-SQL replay ended with the recorded run's rows and balances), print a ratio and a
    pass/FAIL verdict for each mode, say what bounds each figure, say that PostgreSQL was skipped,
    and leave no database files behind in the data directory.
    """
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    run_ledger_bench(Settings(data_dir=tmp_path), operations=100, single_operations=50,
                     postgres_url="none", console=console, repeats=1)
    text = out.getvalue()
    assert "PostgreSQL: skipped" in text
    assert "error" not in text
    for mode in ("one op per commit", "group commit"):
        row = next(line for line in text.splitlines()
                   if line.startswith("│ SQLite") and mode in line)
        assert "%" in row
        assert "pass" in row or "FAIL" in row
    assert "what bounds each figure" in text
    assert not list(tmp_path.rglob("*.sqlite3"))


def test_bench_events_times_gifts_to_subscribers_through_the_real_server() -> None:
    """One small scenario of ``giftflow bench events`` against the real server (uvicorn with
    the frame writer, on its own CPU): 40 subscribers are held, 100 gifts/s for 2 s are all
    accepted, every subscriber (fewer than 100, so all are sampled) times every gift it
    receives (positive latencies, p50 at most p99), and nobody is told to resync.
    """
    from giftflow.bench.events import Scenario, measure  # noqa: PLC0415 -- bench only

    result = measure(Scenario("small", 40, 100, 4), seconds=2)
    assert result["subscribers"] == 40
    assert result["gifts_other"] == 0
    assert 150 <= result["gifts_ok"] <= 250
    assert result["latency_samples"] >= 40 * result["gifts_ok"] * 0.9
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["resyncs"] == 0
