"""The ``giftflow`` command line, run as a real subprocess on SQLite and on PostgreSQL.

SQLite runs use ``--data-dir`` (the default database inside it); PostgreSQL runs use ``--db`` with
a throwaway schema. Corruption is done with direct SQL on the database, as an operator's mistake or
a disk fault would, and ``ledger verify`` must notice it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.conftest import PostgresSchema
from tests.recordings import RECORDING

TIMEOUT_S = 60


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any GIFTFLOW_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GIFTFLOW_") and k != "COLUMNS"}
    env.update(extra)
    return env


@dataclass
class Target:
    """Where a CLI run points: its options, and a way to run SQL on the same database."""

    dialect: str
    options: list[str]
    cwd: Path
    execute: Callable[[str], list[tuple[Any, ...]]]
    url: str

    def run(self, *args: str, columns: int | None = 400) -> subprocess.CompletedProcess[str]:
        """Run ``giftflow ARGS`` against this database (wide output unless told otherwise)."""
        env = clean_env() if columns is None else clean_env(COLUMNS=str(columns))
        return subprocess.run(
            [sys.executable, "-m", "giftflow", *args, *self.options],
            capture_output=True, text=True, timeout=TIMEOUT_S, cwd=self.cwd, env=env,
            check=False)


def sqlite_executor(path: Path) -> Callable[[str], list[tuple[Any, ...]]]:
    """Run one statement on a SQLite file, committing it."""
    def execute(sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as conn:
            return list(conn.execute(sql).fetchall())
    return execute


def postgres_executor(url: str) -> Callable[[str], list[tuple[Any, ...]]]:
    """Run one statement on PostgreSQL, committing it."""
    def execute(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(sql)
            return list(cursor.fetchall()) if cursor.description is not None else []
    return execute


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """A fresh database for the CLI on each store."""
    data_dir = tmp_path / "data"
    if request.param == "sqlite":
        yield Target("sqlite", ["--data-dir", str(data_dir)], tmp_path,
                     sqlite_executor(data_dir / "giftflow.sqlite3"),
                     f"sqlite:///{data_dir / 'giftflow.sqlite3'}")
        return
    schema = PostgresSchema()
    try:
        yield Target("postgresql", ["--data-dir", str(data_dir), "--db", schema.url], tmp_path,
                     postgres_executor(schema.url), schema.url)
    finally:
        schema.drop()


def test_migrate_applies_once(target: Target) -> None:
    """``giftflow migrate`` applies every migration on a fresh database, then reports up to
    date.
    """
    first = target.run("migrate")
    assert first.returncode == 0, first.stderr
    assert "applied migrations 1, 2, 3, 4, 5; schema is at 5" in first.stdout
    second = target.run("migrate")
    assert second.returncode == 0, second.stderr
    assert "schema is up to date at version 5" in second.stdout
    assert target.execute("SELECT version FROM schema_migrations ORDER BY version") == [
        (1,), (2,), (3,), (4,), (5,)]


def test_example_then_verify_passes(target: Target) -> None:
    """The worked example runs every step, and ``ledger verify`` then exits 0."""
    example = target.run("example")
    assert example.returncode == 0, example.stderr
    out = example.stdout
    assert "viewer buys the 350-coin pack: ok" in out
    assert "the payment notification arrives twice: ok (replayed)" in out
    assert "Universe (34,999): insufficient_coins" in out
    assert "the client retries the Lion with the same key: ok (replayed)" in out
    assert "the same key with other content: idempotency_conflict" in out
    assert "the provider reports the payout paid: posted: ok" in out
    assert "ledger verify: every invariant holds" in out
    assert "Traceback" not in example.stderr

    verified = target.run("ledger", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ledger verify: every invariant holds" in verified.stdout
    assert "FAILED" not in verified.stdout


def test_verify_on_an_empty_database_passes(target: Target) -> None:
    """A database with no transfers at all satisfies every invariant."""
    result = target.run("ledger", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ledger verify: 0 accounts" in result.stdout


def account_id(target: Target, kind: str) -> int:
    """The id of the platform account of ``kind``."""
    rows = target.execute(f"SELECT id FROM accounts WHERE owner = 'platform' AND kind = '{kind}'")
    assert len(rows) == 1
    return int(rows[0][0])


def test_verify_fails_on_a_corrupted_cached_balance(target: Target) -> None:
    """After a direct UPDATE of one cached balance, verify exits 1 and names the violations."""
    assert target.run("example").returncode == 0
    issuance = account_id(target, "coins:issuance")
    before = target.execute(f"SELECT posted FROM accounts WHERE id = {issuance}")[0][0]
    target.execute(f"UPDATE accounts SET posted = posted + 1 WHERE id = {issuance}")
    result = target.run("ledger", "verify")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "ledger verify: FAILED" in out
    assert (f"account {issuance}: cached (posted, pending debits, pending credits) "
            f"({before + 1}, 0, 0) but the transfers give ({before}, 0, 0)") in out
    assert "ledger COIN sums to 1 in cached balances" in out
    assert "Traceback" not in result.stderr


def test_verify_fails_on_a_zero_sum_corruption(target: Target) -> None:
    """Moving one coin between two cached balances keeps the sum at zero but still fails."""
    assert target.run("example").returncode == 0
    issuance = account_id(target, "coins:issuance")
    redeemed = account_id(target, "coins:redeemed")
    target.execute(f"UPDATE accounts SET posted = posted - 1 WHERE id = {issuance}")
    target.execute(f"UPDATE accounts SET posted = posted + 1 WHERE id = {redeemed}")
    result = target.run("ledger", "verify")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "ledger verify: FAILED" in out
    assert f"account {issuance}: cached" in out
    assert f"account {redeemed}: cached" in out
    assert "2 violation(s)" in out
    assert "sums to" not in out


def forge_overspend(target: Target) -> int:
    """Append a transfer that overspends the viewer's wallet, leaving cached balances alone.

    Returns the wallet's id. The row passes every constraint (the cached balance is not
    touched), so only recomputing from the transfers can see it.
    """
    assert target.run("example").returncode == 0
    wallet, wallet_posted = target.execute(
        "SELECT id, posted FROM accounts WHERE kind = 'wallet'")[0]
    redeemed = account_id(target, "coins:redeemed")
    operation = target.execute("SELECT id FROM operations WHERE status = 'succeeded' LIMIT 1")[0]
    target.execute(
        "INSERT INTO transfers (id, operation_id, ledger, debit_account_id, credit_account_id, "
        "amount, code, phase, pending_id, timeout_at_ms, actor, request_id, created_at_ms) "
        f"VALUES (999999999, {operation[0]}, 'COIN', {wallet}, {redeemed}, "
        f"{wallet_posted + 5}, 'forged', 0, NULL, NULL, 'intruder', '', 0)")
    return int(wallet)


def test_verify_fails_on_a_forged_transfer(target: Target) -> None:
    """A transfer row appended behind the ledger's back makes verify exit 1, naming the wallet."""
    wallet = forge_overspend(target)
    result = target.run("ledger", "verify")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"account {wallet}: cached" in result.stdout
    assert "but the transfers give (-5, 0, 0)" in result.stdout


def test_verify_reports_a_forbidden_negative_in_the_transfers(target: Target) -> None:
    """A wallet the transfers take below zero is reported under the forbidden-negative check."""
    wallet = forge_overspend(target)
    result = target.run("ledger", "verify")
    row = next(line for line in result.stdout.splitlines()
               if "may not go negative" in line)
    assert "1 violation(s)" in row
    assert f"account {wallet}" in row


@pytest.mark.parametrize("url", [
    "foo://nowhere",
    "sqlite:///",
    "sqlite:relative.db",
    "mysql://someone@db.internal.example.com:3306/giftflow_production_database",
    "foo://[bold]not-markup[/bold]",
])
def test_bad_database_url_is_one_line_exit_2(tmp_path: Path, url: str) -> None:
    """A malformed --db prints one unwrapped line quoting the URL, no traceback, and exits 2."""
    for command in (["migrate"], ["ledger", "verify"], ["example"]):
        result = subprocess.run(
            [sys.executable, "-m", "giftflow", *command, "--data-dir", str(tmp_path),
             "--db", url],
            capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path, env=clean_env(),
            check=False)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("giftflow: ")
        assert repr(url) in lines[0]
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_unreachable_postgres_is_one_line_exit_2(tmp_path: Path) -> None:
    """A PostgreSQL server that refuses the connection gives one line and exit 2."""
    result = subprocess.run(
        [sys.executable, "-m", "giftflow", "ledger", "verify", "--data-dir", str(tmp_path),
         "--db", "postgresql://giftflow@127.0.0.1:1/giftflow"],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path, env=clean_env(),
        check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("giftflow: database error:")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_verify_reports_an_operation_whose_transfers_are_missing(target: Target) -> None:
    """A succeeded operation that recorded two legs but has none in the transfers table fails the
    legs check (the table is append-only, so the test lifts the trigger to forge the loss).
    """
    assert target.run("example").returncode == 0
    operation_id = target.execute(
        "SELECT id FROM operations WHERE kind = 'gift' AND status = 'succeeded' "
        "ORDER BY id LIMIT 1")[0][0]
    if target.dialect == "sqlite":
        target.execute("DROP TRIGGER transfers_no_delete")
    else:
        target.execute("ALTER TABLE transfers DISABLE TRIGGER transfers_append_only")
    target.execute(f"DELETE FROM transfers WHERE operation_id = {int(operation_id)}")
    result = target.run("ledger", "verify")
    assert result.returncode == 1, result.stdout
    assert f"operation {operation_id} recorded 2 transfers but 0 exist" in result.stdout


# -- the economy's commands -----------------------------------------------------------------------


def test_economy_check_lists_the_packaged_file_and_names_a_bad_key(tmp_path: Path) -> None:
    """``giftflow economy check`` lists the packaged regions; a file with a float rate fails in
    one line that names the key, with exit code 2.
    """
    good = subprocess.run([sys.executable, "-m", "giftflow", "economy", "check"],
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
                          env=clean_env(COLUMNS="200"))
    assert good.returncode == 0, good.stderr
    assert "economy file is valid" in good.stdout
    assert "USD" in good.stdout
    assert "EUR" in good.stdout
    bad = tmp_path / "economy.toml"
    packaged = Path(__file__).resolve().parents[1] / "src/giftflow/economy/default_economy.toml"
    bad.write_text(packaged.read_text().replace("creator_share_bps = 5000",
                                                "creator_share_bps = 50.5", 1))
    refused = subprocess.run([sys.executable, "-m", "giftflow", "economy", "check", str(bad)],
                             capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
                             env=clean_env())
    assert refused.returncode == 2
    assert "regions.US.creator_share_bps" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "Traceback" not in refused.stderr


def test_economy_release_liability_and_payouts_run(target: Target) -> None:
    """The daily jobs run from the command line: ``economy release`` moves matured diamonds
    (350 diamonds of a 700-coin gift, 3,500,000 minor units), ``economy liability`` prints the
    covered liability per currency, and ``payouts run`` reports nothing due.
    """
    from datetime import date  # noqa: PLC0415

    from giftflow.adapters.sql.store import SqlStore  # noqa: PLC0415
    from giftflow.economy import load_catalog, load_economy  # noqa: PLC0415
    from giftflow.economy.service import EconomyOptions, EconomyService, GiftRequest  # noqa: PLC0415
    from giftflow.economy.twofactor import SeedCipher  # noqa: PLC0415
    from giftflow.ledger import Applied, Ledger  # noqa: PLC0415

    store = SqlStore(target.url)
    try:
        service = EconomyService(store, Ledger(store), load_economy(), load_catalog(),
                                 cipher=SeedCipher(SeedCipher.generate_key()),
                                 options=EconomyOptions(demo_mode=True),
                                 clock_ms=lambda: 1_767_225_600_000)  # 2026-01-01
        service.register_user("fan", region="US", time_zone="UTC", birth_date=date(1990, 1, 1))
        service.register_user("star", region="US", time_zone="UTC",
                              birth_date=date(1990, 1, 1), is_creator=True)
        order = service.create_order("fan", "web", "web-700", "simulator", "o1")
        assert isinstance(order, Applied)
        assert service.simulate_payment(order.response["order_id"]).ok
        assert service.send_gift(GiftRequest("fan", "star", 5585, 7, "live", "g1")).ok
    finally:
        store.close()
    early = target.run("economy", "release", "--date", "2026-01-03")
    assert early.returncode == 0, early.stderr
    assert "released diamonds of 0 creator(s)" in early.stdout
    released = target.run("economy", "release", "--date", "2026-01-08")
    assert released.returncode == 0, released.stderr
    assert "released diamonds of 1 creator(s): 3500000 DIAMOND minor units" in released.stdout
    again = target.run("economy", "release", "--date", "2026-01-08")
    assert "released diamonds of 0 creator(s)" in again.stdout
    liability = target.run("economy", "liability")
    assert liability.returncode == 0, liability.stderr
    assert "USD" in liability.stdout
    assert "yes" in liability.stdout
    payouts = target.run("payouts", "run")
    assert payouts.returncode == 0, payouts.stderr
    assert "payouts handled: none due" in payouts.stdout
    bad_date = target.run("economy", "release", "--date", "Jan 8")
    assert bad_date.returncode == 2
    assert "--date must be YYYY-MM-DD" in bad_date.stderr


def test_keys_create_prints_the_key_alone_and_it_authenticates(target: Target) -> None:
    """``giftflow keys create`` prints only the new key on standard output; the key then
    authenticates with its role and owner. A role without the owner it needs is refused.
    """
    from giftflow.access import AccessService  # noqa: PLC0415
    from giftflow.adapters.sql.store import SqlStore  # noqa: PLC0415

    made = target.run("keys", "create", "--role", "viewer", "--owner", "fan")
    assert made.returncode == 0, made.stderr
    [key] = made.stdout.splitlines()
    assert key.startswith("gf_")
    store = SqlStore(target.url)
    try:
        principal = AccessService(store).authenticate(key)
    finally:
        store.close()
    assert principal is not None
    assert (principal.role, principal.owner) == ("viewer", "fan")
    refused = target.run("keys", "create", "--role", "viewer")
    assert refused.returncode == 2
    assert "needs an --owner" in refused.stderr


def test_serve_in_demo_mode_seeds_data_and_answers_over_http(target: Target) -> None:
    """``giftflow serve --mode demo`` seeds a creator, funded viewers and a live stream, prints
    its address and a demo key, and serves the API: a viewer's wallet, then a gift, which a
    WebSocket client of the stream's events receives (through the real server).
    """
    import json  # noqa: PLC0415
    import socket  # noqa: PLC0415
    import time  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    from websockets.sync.client import connect  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "giftflow", "serve", "--mode", "demo", "--port", str(port),
         *target.options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=target.cwd, env=clean_env(COLUMNS="80"))
    try:
        assert server.stdout is not None
        lines = [server.stdout.readline() for _ in range(5)]
        assert f"giftflow demo service on http://127.0.0.1:{port}" in lines[0], lines
        key = next(line.split()[3] for line in lines if "demo API key" in line)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1):  # noqa: S310
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not answer"
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        wallet = urllib.request.Request(f"{base}/v1/users/demo-viewer-1/wallet",  # noqa: S310
                                        headers=headers)
        with urllib.request.urlopen(wallet, timeout=5) as answer:  # noqa: S310
            assert json.loads(answer.read())["coins"] == 7_000
        gift = urllib.request.Request(  # noqa: S310
            f"{base}/v1/streams/demo-stream/gifts", headers=headers, method="POST",
            data=json.dumps({"sender_id": "demo-viewer-1", "gift_id": 5655,
                             "count": 2}).encode())
        with connect(f"ws://127.0.0.1:{port}/v1/streams/demo-stream/events?after_seq=0",
                     additional_headers={"Authorization": f"Bearer {key}"},
                     open_timeout=10) as events:
            seen = [event["type"] for event in json.loads(events.recv(timeout=10))]
            assert seen[0] == "stream_started", seen
            with urllib.request.urlopen(gift, timeout=5) as answer:  # noqa: S310
                assert json.loads(answer.read())["sender_coins"] == 6_998
            while "gift" not in seen:
                seen += [event["type"] for event in json.loads(events.recv(timeout=10))]
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_replay_prints_the_streams_it_fed_and_refuses_unknown_rooms(target: Target) -> None:
    """``giftflow replay FILE --instant --room room-0302`` replays that recorded room into one
    ended ``replay`` stream and prints it as JSON (53 coins of gifts, as the recording's rule
    gives), with the message types it read past; an unknown room is one clear error line.
    """
    done = target.run("replay", str(RECORDING), "--instant", "--room", "room-0302")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    [stream] = printed["streams"]
    assert (stream["room"], stream["coins"], stream["creator_id"]) == (
        "room-0302", 53, "replay-user-0074")
    assert printed["skipped"]["chat"] == 21
    rows = target.execute(f"SELECT source, status FROM streams WHERE id = '{stream['stream_id']}'")
    assert rows == [("replay", "ended")]
    refused = target.run("replay", str(RECORDING), "--instant", "--room", "room-9999")
    assert refused.returncode == 2
    assert "has no events of room(s) room-9999" in refused.stderr
    assert "Traceback" not in refused.stderr
