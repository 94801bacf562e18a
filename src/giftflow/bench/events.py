"""``giftflow bench events``: gift-to-subscriber latency and the cost of a slow subscriber.

The server (giftflow's application under uvicorn with the frame writer, SQLite
``synchronous=FULL``) runs on CPU ``SERVER_CPU``; the load (:mod:`giftflow.bench.events_load`)
runs on the other CPU: WebSocket subscribers of one live stream, and gifts over HTTP.

- **Latency**: gifts at a fixed rate; 100 sampled subscribers time every gift from the moment
  its POST was written to the moment its frame arrived, while the other subscribers only drain.
  The baseline, from the same run, is the same gifts with the 100 sampled subscribers alone:
  the difference is what the fan-out to everyone else costs.
- **Slow subscriber**: gifts as fast as 64 keep-alive connections go, with 1,000 draining
  subscribers, with and without one more subscriber that never reads. The baseline is the run
  without it; the slow one must be told to ``resync`` and cost at most 10 % of the gifts.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from giftflow.bench.api import serving
from giftflow.bench.frameworks import LOADGEN_CPU, SERVER_CPU, _pinned

SAMPLED: Final = 100
WARMUP_S: Final = 1.0
LOADGEN_TIMEOUT_S: Final = 300


@dataclass(frozen=True, slots=True)
class Scenario:
    """One measured setting."""

    name: str
    subscribers: int
    gifts_per_s: float
    """0: as fast as the connections go."""
    connections: int
    slow: bool = False


LATENCY: Final = (
    (Scenario("1k subs, 2k gifts/s", 1_000, 2_000, 32),
     Scenario("  baseline: 100 subs, 2k/s", SAMPLED, 2_000, 32), 50.0),
    (Scenario("10k subs, 200 gifts/s", 10_000, 200, 32),
     Scenario("  baseline: 100 subs, 200/s", SAMPLED, 200, 32), 150.0),
)
"""(scenario, its baseline, the p99 goal in ms)."""
SLOW: Final = (Scenario("1k subs", 1_000, 0, 64),
               Scenario("1k subs + 1 that never reads", 1_000, 0, 64, slow=True))


def measure(scenario: Scenario, seconds: float) -> dict[str, Any]:
    """Run one scenario against a fresh server; what the load generator measured."""
    with serving("giftflow") as served:
        argv = _pinned(LOADGEN_CPU, [
            sys.executable, "-m", "giftflow.bench.events_load", "--port", str(served.port),
            "--key", served.key, "--stream", "s1", "--subscribers", str(scenario.subscribers),
            "--sampled", str(SAMPLED if scenario.gifts_per_s else 0),
            "--gifts-per-s", str(scenario.gifts_per_s),
            "--connections", str(scenario.connections), "--seconds", str(seconds),
            "--warmup-s", str(WARMUP_S), "--server-pid", str(served.pid),
            *(["--slow"] if scenario.slow else [])])
        finished = subprocess.run(  # noqa: S603 -- our own argv
            argv, capture_output=True, text=True, timeout=LOADGEN_TIMEOUT_S, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"the load generator failed: {finished.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    return result


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(run[key]) for run in runs)


def run_events_bench(console: Console, *, seconds: float = 5.0,
                     repeats: int = 3) -> dict[str, list[dict[str, Any]]]:
    """Measure every scenario ``repeats`` times (alternating with its baseline); print medians."""
    console.print(f"[bold]giftflow bench events[/]: server on CPU {SERVER_CPU}, load on CPU "
                  f"{LOADGEN_CPU}, {seconds:g} s after a {WARMUP_S:g} s warm-up, SQLite "
                  f"synchronous=FULL, {repeats} runs each, medians shown")
    runs: dict[str, list[dict[str, Any]]] = {}
    everything = [s for pair in LATENCY for s in pair[:2]] + list(SLOW)
    with console.status("measuring…") as status:
        for repeat in range(repeats):
            for index, scenario in enumerate(everything):
                status.update(f"run {repeat + 1}/{repeats}, {index + 1}/{len(everything)}: "
                              f"{scenario.name}…")
                runs.setdefault(scenario.name, []).append(measure(scenario, seconds))
    latency = Table(title="gift POST written → frame received (100 sampled subscribers)")
    latency.add_column("scenario", no_wrap=True)
    for column in ("held", "gifts/s", "p50 ms", "p99 ms", "HTTP p99", "resyncs", "goal"):
        latency.add_column(column, justify="right")
    for scenario, baseline, goal_ms in LATENCY:
        for measured, goal in ((scenario, f"p99<{goal_ms:g}"), (baseline, "")):
            mine = runs[measured.name]
            latency.add_row(measured.name, f"{_median(mine, 'subscribers'):,.0f}",
                            f"{_median(mine, 'gifts_ok') / _median(mine, 'window_s'):,.0f}",
                            f"{_median(mine, 'p50_ms'):.1f}", f"{_median(mine, 'p99_ms'):.1f}",
                            f"{_median(mine, 'http_p99_ms'):.1f}",
                            str(sum(run["resyncs"] for run in mine)), goal)
    console.print(latency)
    slow = Table(title="gifts per second with a subscriber that never reads (64 connections)")
    slow.add_column("scenario", no_wrap=True)
    for column in ("gifts/s", "vs baseline", "slow one told to resync"):
        slow.add_column(column, justify="right")
    base = _median(runs[SLOW[0].name], "gifts_ok") / _median(runs[SLOW[0].name], "window_s")
    for scenario in SLOW:
        mine = runs[scenario.name]
        rate = _median(mine, "gifts_ok") / _median(mine, "window_s")
        told = "" if not scenario.slow else (
            f"{sum(bool(run['slow_resynced']) for run in mine)} of {len(mine)} runs")
        slow.add_row(scenario.name, f"{rate:,.0f}", f"{rate / base:.0%}", told)
    console.print(slow)
    console.print("goal: a slow subscriber costs at most 10 % of gift throughput")
    return runs
