"""The double-entry ledger: integer amounts, linked transfers, idempotent operations.

Import from here; the modules behind it are private to the ledger.
"""

from giftflow.ledger.group_commit import GroupCommitSettings, GroupCommitter
from giftflow.ledger.model import (
    DEFAULT_LEDGERS,
    Account,
    Applied,
    Failure,
    HistoryEntry,
    Insert,
    LedgerSpec,
    Operation,
    Page,
    Phase,
    Result,
    TransferRequest,
)
from giftflow.ledger.ports import LedgerStore, StoreConflict, UnitOfWork
from giftflow.ledger.service import Ledger, LedgerLimits
from giftflow.ledger.verify import Report, VerificationFacts, verify

__all__ = [
    "DEFAULT_LEDGERS",
    "Account",
    "Applied",
    "Failure",
    "GroupCommitSettings",
    "GroupCommitter",
    "HistoryEntry",
    "Insert",
    "Ledger",
    "LedgerLimits",
    "LedgerSpec",
    "LedgerStore",
    "Operation",
    "Page",
    "Phase",
    "Report",
    "Result",
    "StoreConflict",
    "TransferRequest",
    "UnitOfWork",
    "VerificationFacts",
    "verify",
]
