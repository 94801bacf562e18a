"""The worked example: one short gifting scenario through the ledger, printed as it goes.

It is what the README's first command runs until the HTTP service exists, and a test runs it too.
The amounts follow SPEC.md: a 350-coin pack at $4.99, gifts split to the creator in diamonds at
the default economy file's US share (50 %, scale 4), and a payout reserved as a pending transfer
and then posted.
"""

from __future__ import annotations

import uuid

from rich.console import Console
from rich.table import Table

from giftflow.economy import load_economy
from giftflow.ledger import Account, Ledger, Operation, Phase, Result, TransferRequest, verify
from giftflow.ledger.ports import LedgerStore
from giftflow.ledger.verify import VerificationFacts


class _Scenario:
    def __init__(self, ledger: Ledger, console: Console) -> None:
        self.ledger = ledger
        self.console = console
        self.region = load_economy().region("US")
        run_id = uuid.uuid4().hex[:8]
        self.viewer = f"viewer-{run_id}"
        self.creator = f"creator-{run_id}"
        open_ = ledger.open_account
        self.coin_issuance = open_("COIN", "platform", "coins:issuance", allow_negative=True)
        self.coins_redeemed = open_("COIN", "platform", "coins:redeemed", allow_negative=True)
        self.wallet = open_("COIN", self.viewer, "wallet")
        self.diamond_issuance = open_("DIAMOND", "platform", "diamonds:issuance",
                                      allow_negative=True)
        self.held = open_("DIAMOND", self.creator, "diamonds:held")
        self.payout_clearing = open_("DIAMOND", "platform", "payout:clearing",
                                     allow_negative=True)

    def step(self, title: str, result: Result) -> Result:
        status = "[green]ok[/]" if result.ok else f"[yellow]{result.code}[/]"
        replay = " (replayed)" if result.replayed else ""
        self.console.print(f"• {title}: {status}{replay}")
        return result

    def gift(self, key: str, coins: int) -> Operation:
        return Operation(
            f"user:{self.viewer}|POST /v1/streams/{{id}}/gifts", key, "gift",
            {"creator": self.creator, "coins": coins},
            [TransferRequest("COIN", self.wallet.id, self.coins_redeemed.id, coins, "gift",
                             shortfall_code="insufficient_coins"),
             TransferRequest("DIAMOND", self.diamond_issuance.id, self.held.id,
                             self.region.diamonds_for(coins), "gift")],
            actor=self.viewer)

    def balances(self) -> None:
        table = Table(title="balances (minor units of each ledger)")
        for column in ("account", "ledger", "posted", "pending debits"):
            table.add_column(column)
        for account in (self.wallet, self.coins_redeemed, self.held, self.payout_clearing):
            now = self.ledger.account(account.id)
            if isinstance(now, Account):
                table.add_row(f"{now.owner} {now.kind}", now.ledger, str(now.posted),
                              str(now.pending_debits))
        self.console.print(table)


def run(store: LedgerStore, console: Console) -> bool:
    """Run the scenario on ``store``, print each step, then verify; True when verify passes."""
    ledger = Ledger(store)
    s = _Scenario(ledger, console)
    console.rule("giftflow worked example")
    buy = Operation.of_transfers(f"provider:simulator|{s.viewer}", "order-1", [
        TransferRequest("COIN", s.coin_issuance.id, s.wallet.id, 350, "purchase")],
        kind="purchase")
    s.step("viewer buys the 350-coin pack", ledger.apply(buy))
    s.step("the payment notification arrives twice", ledger.apply(buy))
    results = ledger.apply_batch([s.gift("rose-train-1", 1), s.gift("rose-train-2", 1),
                                  s.gift("lion", 299), s.gift("universe", 34_999)])
    for name, result in zip(("Rose", "Rose", "Lion (299)", "Universe (34,999)"), results,
                            strict=True):
        s.step(f"gift train, one commit: {name}", result)
    s.step("the client retries the Lion with the same key", ledger.apply(s.gift("lion", 299)))
    s.step("the same key with other content", ledger.apply(s.gift("lion", 300)))
    reserve = ledger.apply(Operation.of_transfers(
        f"user:{s.creator}|POST /v1/payouts", "payout-1",
        [TransferRequest("DIAMOND", s.held.id, s.payout_clearing.id, s.region.diamonds_for(200),
                         "payout", Phase.PENDING, timeout_ms=86_400_000)], kind="payout"))
    s.step("creator requests a payout: diamonds reserved (pending)", reserve)
    s.balances()
    if reserve.ok:
        post = Operation.of_transfers("provider:simulator|payouts", "payout-1-paid",
                                      [TransferRequest.post(reserve.transfer_ids[0])],
                                      kind="payout_paid")
        s.step("the provider reports the payout paid: posted", ledger.apply(post))
    s.balances()
    facts: VerificationFacts = store.verification_facts()  # type: ignore[attr-defined]
    report = verify(facts)
    console.print("ledger verify: " + ("[green]every invariant holds[/]" if report.ok
                                       else "[red]FAILED[/]"))
    return report.ok
