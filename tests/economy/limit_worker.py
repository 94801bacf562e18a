"""A worker process of the daily-gift-limit test: one viewer's gifts, sent as fast as it can.

Run as a script: ``python tests/economy/limit_worker.py --db URL --clock MS --sender ID
--creator ID --worker N --plan 5,5,1,… --go PATH``. It builds its own store and economy service on
the shared database, with the clock fixed at ``--clock`` (so every process counts the same day),
prints ``READY``, waits for the file ``--go`` to exist, then sends one gift per entry of
``--plan`` (the coins of each gift) under keys ``w<worker>-<index>``.

Each gift's final answer is printed once it is decided: ``OK key coins`` or
``REFUSED key coins code``. ``overloaded`` and ``idempotency_in_progress`` are not decisions: the
worker prints ``TRANSIENT key code`` and sends the same key again.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from giftflow.adapters.sql.store import SqlStore, StoreOptions
from giftflow.economy import codes, load_catalog, load_economy
from giftflow.economy.service import EconomyOptions, EconomyService, GiftRequest
from giftflow.economy.twofactor import SeedCipher
from giftflow.ledger import Applied, Ledger

TRANSIENT = frozenset({codes.OVERLOADED, codes.IDEMPOTENCY_IN_PROGRESS})
ATTEMPTS_MAX = 200


def build_service(url: str, clock_ms: int, *, migrate: bool) -> EconomyService:
    """An economy service on ``url`` whose clock stands still at ``clock_ms``."""
    store = SqlStore(url, StoreOptions(migrate=migrate))

    def clock() -> int:
        return clock_ms

    return EconomyService(store, Ledger(store, clock_ms=clock), load_economy(), load_catalog(),
                          cipher=SeedCipher(SeedCipher.generate_key()),
                          options=EconomyOptions(demo_mode=True), clock_ms=clock)


def gift_id(service: EconomyService, coins: int) -> int:
    """A catalog gift worth ``coins`` coins."""
    return next(g.id for g in service.catalog if g.coin_value == coins)


def main(argv: Sequence[str] | None = None) -> None:
    """Send the planned gifts and print each final answer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--clock", type=int, required=True)
    parser.add_argument("--sender", required=True)
    parser.add_argument("--creator", required=True)
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--go", required=True)
    args = parser.parse_args(argv)
    service = build_service(args.db, args.clock, migrate=False)
    plan = [int(coins) for coins in args.plan.split(",")]
    gifts = {coins: gift_id(service, coins) for coins in set(plan)}
    out = sys.stdout
    out.write("READY\n")
    out.flush()
    go = Path(args.go)
    while not go.exists():
        time.sleep(0.002)
    for index, coins in enumerate(plan):
        key = f"w{args.worker}-{index}"
        request = GiftRequest(args.sender, args.creator, gifts[coins], 1, "stream-1", key)
        for _ in range(ATTEMPTS_MAX):
            result = service.send_gift(request)
            if isinstance(result, Applied):
                out.write(f"OK {key} {result.response['coins']}\n")
                break
            if result.code not in TRANSIENT:
                out.write(f"REFUSED {key} {coins} {result.code}\n")
                break
            out.write(f"TRANSIENT {key} {result.code}\n")
        else:
            out.write(f"UNDECIDED {key}\n")
        out.flush()
    store = service.store
    assert isinstance(store, SqlStore)
    store.close()


if __name__ == "__main__":
    main()
