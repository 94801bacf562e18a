"""Concurrency across processes (SPEC.md §1, §10): eight processes gift to one hot creator at once.

Twenty viewers start with too few coins for all the gifts, so many are refused with
``insufficient_coins`` while the processes race for the same wallets and the same creator. The
processes mix one-operation-per-commit, ``apply_batch`` group commits and a ``GroupCommitter``
fed by several threads. Afterwards what the workers were told, what the database holds and what
the balances imply must agree exactly.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import workers  # tests/ledger is on pytest's pythonpath

from giftflow.adapters.sql.store import SqlStore
from giftflow.ledger import Ledger, verify

WORKER = workers.WORKER
ROOT = workers.ROOT
log = logging.getLogger(__name__)
STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

PROCESSES = 8
GIFTS_PER_PROCESS = 500
VIEWERS = 20
STARTING_COINS = 1_000
"""Per viewer: 20,000 coins in all, against roughly 110,000 coins of gifts."""
COMMIT_STYLES = ("single", "single", "single", "single", "batch", "batch", "committer",
                 "committer")
RUN_TIMEOUT_S = 240



Accounts = workers.Accounts
GiftRow = workers.GiftRow


@dataclass(frozen=True)
class Reported:
    """One result as a worker reported it."""

    key: str
    viewer: int
    coins: int
    ok: bool
    operation_id: int | None
    code: str | None


def _parse(text: str, proc: int) -> list[Reported]:
    results: list[Reported] = []
    done = False
    for line in text.splitlines():
        match line.split():
            case ["READY", _] | ["TRY", _]:
                pass
            case ["OK", key, viewer, coins, op_id, replayed]:
                assert replayed == "0", f"process {proc}: {key} was replayed"
                results.append(Reported(key, int(viewer), int(coins), True, int(op_id), None))
            case ["REFUSED", key, viewer, coins, code, replayed]:
                assert replayed == "0", f"process {proc}: {key} was replayed"
                results.append(Reported(key, int(viewer), int(coins), False, None, code))
            case ["DONE", _]:
                done = True
            case _:
                pytest.fail(f"process {proc}: unexpected line {line!r}")
    assert done, f"process {proc} did not finish"
    return results


def _run_workers(url: str, tag: str, tmp_path: Path) -> tuple[list[list[Reported]], float]:
    go = tmp_path / "go"
    processes = []
    for proc, commit in enumerate(COMMIT_STYLES[:PROCESSES]):
        out, err = tmp_path / f"proc-{proc}.out", tmp_path / f"proc-{proc}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            processes.append((subprocess.Popen(
                [sys.executable, str(WORKER), "gifts", "--db", url, "--tag", tag,
                 "--viewers", str(VIEWERS), "--proc", str(proc), "--count",
                 str(GIFTS_PER_PROCESS), "--commit", commit, "--batch-max", "32",
                 "--seed", str(1_000 + proc), "--go", str(go)],
                stdout=stdout, stderr=stderr, cwd=ROOT), out, err))
    try:
        deadline = time.monotonic() + 60
        for process, out, err in processes:
            while not out.read_bytes().startswith(b"READY "):
                assert process.poll() is None, err.read_text()
                assert time.monotonic() < deadline, "a worker did not open the store in time"
                time.sleep(0.01)
        go.touch()  # every process starts sending at once
        began = time.monotonic()
        for process, _, err in processes:
            process.wait(timeout=RUN_TIMEOUT_S)
            assert process.returncode == 0, err.read_text()
        elapsed = time.monotonic() - began
    finally:
        for process, _, _ in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [_parse(out.read_text(), proc) for proc, (_, out, _) in enumerate(processes)], elapsed


def _check_reports(reports: list[list[Reported]]) -> tuple[list[Reported], list[Reported]]:
    """Every gift got one definitive answer; returns the accepted and the refused."""
    for proc, results in enumerate(reports):
        assert len(results) == GIFTS_PER_PROCESS, f"process {proc} reported {len(results)}"
    reported = [result for results in reports for result in results]
    assert len({result.key for result in reported}) == len(reported), "a key was reported twice"
    accepted = [result for result in reported if result.ok]
    refused = [result for result in reported if not result.ok]
    assert {result.code for result in refused} <= {"insufficient_coins"}
    assert accepted, "no gift was accepted"
    assert len(refused) > len(accepted), "the viewers were meant to run out of coins"
    op_ids = Counter(result.operation_id for result in accepted)
    assert max(op_ids.values()) == 1, "two gifts were answered with the same operation"
    return accepted, refused


def _check_rows(rows: list[GiftRow], reported: list[Reported], accounts: Accounts) -> None:
    """The database holds every gift exactly once, as the workers were told."""
    by_key = {result.key: result for result in reported}
    stored = Counter(row.key for row in rows)
    assert stored.most_common(1)[0][1] == 1, "a key is stored twice"
    assert set(stored) == set(by_key), "the stored gifts are not the ones sent"
    assert {row.key for row in rows if row.status == "succeeded"} == {
        result.key for result in reported if result.ok}
    for row in rows:
        result = by_key[row.key]
        assert row.viewer == result.viewer
        if result.ok:
            assert row.operation_id == result.operation_id
            assert row.legs == workers.expected_legs(accounts, result.viewer, result.coins), row
        else:
            assert row.status == "failed"
            assert row.legs == (), f"refused {row.key} moved money"
            assert '"insufficient_coins"' in row.response


def _check_balances(store: SqlStore, accounts: Accounts, accepted: list[Reported],
                    refused: list[Reported]) -> int:
    """The balances are what the accepted gifts imply and no wallet is overdrawn."""
    wallets = [store.account(wallet) for wallet in accounts.wallets]
    spent = [0] * VIEWERS
    for result in accepted:
        spent[result.viewer] += result.coins
    accepted_coins = sum(spent)
    final = []
    for viewer, wallet in enumerate(wallets):
        assert wallet is not None
        assert wallet.posted >= 0, f"viewer {viewer} is overdrawn: {wallet.posted}"
        assert wallet.posted == STARTING_COINS - spent[viewer], f"viewer {viewer}"
        final.append(wallet.posted)
    assert STARTING_COINS * VIEWERS - sum(final) == accepted_coins
    expected = {accounts.coins_redeemed: accepted_coins,
                accounts.creator_held: accepted_coins * workers.DIAMONDS_PER_COIN,
                accounts.diamonds_issuance: -accepted_coins * workers.DIAMONDS_PER_COIN}
    for account_id, posted in expected.items():
        account = store.account(account_id)
        assert account is not None
        assert account.posted == posted, f"{account.kind}: {account.posted} != {posted}"
    # A refusal was genuine: balances only fall, so the wallet still cannot pay that gift.
    for result in refused:
        assert final[result.viewer] < result.coins, (
            f"{result.key}: refused {result.coins} coins but viewer {result.viewer} "
            f"still has {final[result.viewer]}")
    return accepted_coins


@pytest.mark.slow
@pytest.mark.parametrize("store_url", STORES, indirect=True)
def test_eight_processes_gifting_to_one_hot_creator_agree_with_the_balances(
        store_url: str, tmp_path: Path) -> None:
    """Eight processes gifting to one hot creator agree exactly with the ledger's balances.

    They send 500 gifts each from 20 underfunded viewers, mixing single commits and group
    commits. No wallet is overdrawn, ``verify`` passes, every gift is stored exactly once, the
    gifts the workers saw accepted are exactly the succeeded gift rows, every refusal was genuine,
    and the coins and diamonds moved equal what the accepted gifts imply.
    """
    tag = f"hot{uuid.uuid4().hex[:6]}"
    store = SqlStore(store_url)
    try:
        ledger = Ledger(store)
        accounts = workers.open_accounts(ledger, tag, VIEWERS)
        workers.fund(ledger, accounts, [STARTING_COINS] * VIEWERS)
        reports, elapsed = _run_workers(store_url, tag, tmp_path)
        accepted, refused = _check_reports(reports)
        report = verify(store.verification_facts())
        assert report.ok, [check.violations for check in report.checks if not check.ok]
        _check_rows(workers.gift_rows(store, accounts), accepted + refused, accounts)
        accepted_coins = _check_balances(store, accounts, accepted, refused)
    finally:
        store.close()
    log.info("%s: %d accepted (%d coins), %d refused, %.1f s for %d gifts",
             store_url.split(":", maxsplit=1)[0], len(accepted), accepted_coins, len(refused),
             elapsed, len(accepted) + len(refused))
