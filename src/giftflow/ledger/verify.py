"""``giftflow ledger verify``: recompute every balance and check every invariant of SPEC.md §1."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from giftflow.ledger.model import Account, LedgerSpec

DETAILS_PER_CHECK_MAX = 20
"""How many violations a check lists before it only counts them."""


@dataclass(frozen=True, slots=True)
class VerificationFacts:
    """What a store reads, in one snapshot, for verification."""

    ledgers: list[LedgerSpec]
    accounts: list[Account]
    recomputed: dict[int, tuple[int, int, int]]
    """Per account: posted, pending debits and pending credits summed from the transfers."""
    bad_legs: list[tuple[int, int]]
    """Transfers (id, operation) outside their ledger or of a failed or missing operation."""
    double_resolutions: list[tuple[int, int]]
    """Pending transfers (id, resolutions) resolved more than once."""
    bad_resolutions: list[tuple[int, int]]
    """Resolutions (id, pending id) that do not match the pending transfer they resolve."""
    missing_legs: list[tuple[int, int, int]] = field(default_factory=list)
    """Succeeded operations (id, legs recorded in its response, transfers found) that differ."""
    lot_mismatches: list[str] = field(default_factory=list)
    """Where lot consumption disagrees with the coins gifted or with a wallet's balance."""


@dataclass(slots=True)
class Check:
    """One invariant and what violates it."""

    name: str
    description: str
    violations: list[str] = field(default_factory=list)
    violation_count: int = 0

    @property
    def ok(self) -> bool:
        """Whether the invariant holds."""
        return self.violation_count == 0

    def fail(self, detail: str) -> None:
        """Record a violation."""
        self.violation_count += 1
        if len(self.violations) < DETAILS_PER_CHECK_MAX:
            self.violations.append(detail)


@dataclass(slots=True)
class Report:
    """The outcome of a verification."""

    checks: list[Check]
    accounts: int
    ledger_totals: dict[str, int]

    @property
    def ok(self) -> bool:
        """Whether every invariant holds."""
        return all(check.ok for check in self.checks)


ExtraCheck = Callable[[], Check]
"""A check contributed by a later domain (lot consumption, for example)."""


def _check_accounts(facts: VerificationFacts, negatives: Check, cached: Check) -> None:
    for account in facts.accounts:
        if not account.allow_negative and account.posted < account.pending_debits:
            negatives.fail(f"account {account.id} ({account.owner}/{account.kind}) has "
                           f"{account.posted} posted and {account.pending_debits} pending debits")
        expected = facts.recomputed.get(account.id, (0, 0, 0))
        if (not account.allow_negative and expected[0] < expected[1]
                and account.posted >= account.pending_debits):
            negatives.fail(f"account {account.id} ({account.owner}/{account.kind}): the transfers "
                           f"give {expected[0]} posted and {expected[1]} pending debits")
        actual = (account.posted, account.pending_debits, account.pending_credits)
        if actual != expected:
            cached.fail(f"account {account.id}: cached (posted, pending debits, pending credits) "
                        f"{actual} but the transfers give {expected}")
    known = {account.id for account in facts.accounts}
    for account_id in facts.recomputed.keys() - known:
        cached.fail(f"transfers name account {account_id}, which does not exist")


def _ledger_totals(facts: VerificationFacts, sums: Check) -> dict[str, int]:
    cached_totals = {spec.code: 0 for spec in facts.ledgers}
    recomputed_totals = dict(cached_totals)
    ledger_of = {account.id: account.ledger for account in facts.accounts}
    for account in facts.accounts:
        cached_totals[account.ledger] = cached_totals.get(account.ledger, 0) + account.posted
    for account_id, (posted, _, _) in facts.recomputed.items():
        ledger = ledger_of.get(account_id, "?")
        recomputed_totals[ledger] = recomputed_totals.get(ledger, 0) + posted
    for ledger, total in sorted(cached_totals.items()):
        if total != 0:
            sums.fail(f"ledger {ledger} sums to {total} in cached balances")
    for ledger, total in sorted(recomputed_totals.items()):
        if total != 0:
            sums.fail(f"ledger {ledger} sums to {total} in transfers")
    return cached_totals


def verify(facts: VerificationFacts, extra_checks: tuple[ExtraCheck, ...] = ()) -> Report:
    """Check every ledger invariant against freshly recomputed balances."""
    sums = Check("ledgers_sum_to_zero", "each ledger's posted balances sum to zero")
    negatives = Check("no_forbidden_negative",
                      "no account that may not go negative has posted - pending debits < 0")
    cached = Check("cached_equals_recomputed",
                   "every cached balance equals the sum of the account's transfers")
    legs = Check("operation_legs_balance",
                 "every transfer is a positive amount between two accounts of its ledger, "
                 "and every succeeded operation has exactly the transfers it recorded")
    pending_once = Check("pending_resolved_once",
                         "no pending transfer is posted or voided twice, and each resolution "
                         "matches its pending transfer")
    _check_accounts(facts, negatives, cached)
    totals = _ledger_totals(facts, sums)
    for transfer_id, operation_id in facts.bad_legs:
        legs.fail(f"transfer {transfer_id} of operation {operation_id}")
    for operation_id, recorded, found in facts.missing_legs:
        legs.fail(f"operation {operation_id} recorded {recorded} transfers but {found} exist")
    for pending_id, count in facts.double_resolutions:
        pending_once.fail(f"pending transfer {pending_id} resolved {count} times")
    for resolution_id, pending_id in facts.bad_resolutions:
        pending_once.fail(f"transfer {resolution_id} does not match pending {pending_id}")
    lots = Check("lot_consumption_matches",
                 "every gift's lot pieces sum to its coins, and every wallet holds exactly "
                 "the unspent coins of its lots")
    for mismatch in facts.lot_mismatches:
        lots.fail(mismatch)
    checks = [sums, negatives, cached, legs, pending_once, lots]
    checks.extend(extra() for extra in extra_checks)
    return Report(checks, len(facts.accounts), totals)
