"""Values of the ledger: ledgers, accounts, transfer requests, operations and their results.

Money moves only as transfers of a positive integer amount from a debit account to a credit
account of the same ledger. An account's posted balance is ``credits - debits``, so the balances of
one ledger always sum to zero. A business operation is one atomic batch of linked transfers under
one idempotency key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from hashlib import sha256
from typing import Any, Final, Literal

import orjson

from giftflow.invariants import INT64_MAX

JSONValue = Any
"""A value that ``orjson`` can serialise: what business fields and responses are made of."""


class Phase(IntEnum):
    """What a transfer row does to balances (TigerBeetle's two-phase model)."""

    SINGLE = 0
    """Posted at once."""
    PENDING = 1
    """Reserved: counted in pending debits and credits until posted, voided or expired."""
    POST = 2
    """Resolves a pending transfer by posting up to its amount; the rest is released."""
    VOID = 3
    """Resolves a pending transfer by releasing all of it."""


@dataclass(frozen=True, slots=True)
class LedgerSpec:
    """A ledger: its code and the scale of its minor unit (``10**scale`` minor units per unit)."""

    code: str
    scale: int


DEFAULT_LEDGERS: Final[tuple[LedgerSpec, ...]] = (
    LedgerSpec("COIN", 0),
    LedgerSpec("DIAMOND", 4),
    LedgerSpec("USD", 2),
    LedgerSpec("EUR", 2),
    LedgerSpec("SPEND", 6),
)
"""The ledgers every store starts with (SPEC.md §1); fiat ledgers are in cents."""


@dataclass(frozen=True, slots=True)
class Account:
    """An account and its balances, all in the minor unit of its ledger.

    ``posted`` is credits minus debits. ``pending_debits`` and ``pending_credits`` are the amounts
    of unresolved pending transfers. An account that may not go negative keeps
    ``posted - pending_debits >= 0`` at all times.
    """

    id: int
    ledger: str
    owner: str
    kind: str
    allow_negative: bool
    posted: int
    pending_debits: int
    pending_credits: int

    @property
    def available(self) -> int:
        """What can still be debited: posted minus what pending debits have reserved."""
        return self.posted - self.pending_debits


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """One leg of an operation, as the caller asks for it.

    For ``Phase.POST`` and ``Phase.VOID`` the ledger and both accounts come from the pending
    transfer named by ``pending_id``; ``amount`` of a post may be lower than the pending amount
    (``0`` posts it whole). ``shortfall_code`` is the failure code reported when the debit account
    lacks the funds, so that a domain can speak its own words (``insufficient_coins``).
    """

    ledger: str
    debit_account_id: int
    credit_account_id: int
    amount: int
    code: str = "transfer"
    phase: Phase = Phase.SINGLE
    pending_id: int | None = None
    timeout_ms: int | None = None
    shortfall_code: str = "insufficient_funds"

    @classmethod
    def post(cls, pending_id: int, amount: int = 0, code: str = "post") -> TransferRequest:
        """Post a pending transfer (all of it when ``amount`` is 0)."""
        return cls("", 0, 0, amount, code, Phase.POST, pending_id)

    @classmethod
    def void(cls, pending_id: int, code: str = "void") -> TransferRequest:
        """Void a pending transfer, releasing all of it."""
        return cls("", 0, 0, 0, code, Phase.VOID, pending_id)

    def as_fields(self) -> dict[str, JSONValue]:
        """The business content of this leg, for content hashes of raw ledger operations."""
        return {
            "ledger": self.ledger,
            "debit": self.debit_account_id,
            "credit": self.credit_account_id,
            "amount": self.amount,
            "code": self.code,
            "phase": int(self.phase),
            "pending_id": self.pending_id,
            "timeout_ms": self.timeout_ms,
        }


@dataclass(slots=True)
class Applied:
    """A successful operation (``replayed`` when a retry got the stored result back).

    Treat it as read-only. It is made once per operation on the group-commit hot path, where a
    frozen dataclass's guarded ``__init__`` costs three times as much.
    """

    operation_id: int
    transfer_ids: tuple[int, ...]
    response: Mapping[str, JSONValue]
    replayed: bool = False
    ok: Literal[True] = True
    balances: Mapping[int, Account] = field(default_factory=dict, compare=False)
    """The touched accounts right after the operation (empty for a replay)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """An expected failure with a stable code.

    ``stored`` failures are business refusals kept under the idempotency key, so that a retry gets
    the same answer. Validation failures are not stored: the request never became an operation.
    """

    code: str
    detail: str
    stored: bool = False
    replayed: bool = False
    ok: Literal[False] = False


Result = Applied | Failure


@dataclass(frozen=True, slots=True)
class Insert:
    """A row that a domain writes in the same transaction as an operation (outbox, receipts…)."""

    table: str
    row: Mapping[str, JSONValue]


@dataclass(frozen=True, slots=True)
class Operation:
    """One business operation: linked transfers under an idempotency key.

    The idempotency scope is ``(scope, key)``; ``scope`` names the owning principal and the
    endpoint. The content hash covers ``kind`` and ``fields`` only (the business fields), never
    authentication, two-factor codes or request ids. ``respond`` builds the stored response from the
    result; ``effects`` returns the other rows that commit with it. Neither is part of the hash.
    """

    scope: str
    key: str
    kind: str
    fields: Mapping[str, JSONValue]
    transfers: Sequence[TransferRequest]
    actor: str = "system"
    request_id: str = ""
    respond: Callable[[Applied], Mapping[str, JSONValue]] | None = field(
        default=None, compare=False)
    effects: Callable[[Applied], Sequence[Insert]] | None = field(default=None, compare=False)
    response: Mapping[str, JSONValue] | None = field(default=None, compare=False)
    """A response known before the operation runs (cheaper than ``respond``)."""
    refusal: tuple[str, str] | None = field(default=None, compare=False)
    """A business refusal decided by the domain (code, detail): the operation moves nothing and
    the failure is stored under its key, so that a retry gets the same answer."""

    @classmethod
    def of_transfers(
        cls,
        scope: str,
        key: str,
        transfers: Sequence[TransferRequest],
        *,
        kind: str = "transfers",
        actor: str = "system",
        request_id: str = "",
    ) -> Operation:
        """A raw ledger operation whose business fields are its transfers."""
        legs = tuple(transfers)
        return cls(
            scope,
            key,
            kind,
            {"transfers": [leg.as_fields() for leg in legs]},
            legs,
            actor,
            request_id,
        )

    def content_hash(self) -> bytes:
        """SHA-256 of the canonical JSON of ``kind`` and the business fields."""
        canonical = orjson.dumps(
            {"kind": self.kind, "fields": self.fields}, option=orjson.OPT_SORT_KEYS
        )
        return sha256(canonical).digest()


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One transfer in an account's history, with what caused it."""

    transfer_id: int
    operation_id: int
    ledger: str
    debit_account_id: int
    credit_account_id: int
    amount: int
    code: str
    phase: Phase
    pending_id: int | None
    actor: str
    request_id: str
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class Page:
    """A page of history and the cursor for the next one (``None`` at the end)."""

    entries: tuple[HistoryEntry, ...]
    next_cursor: int | None


AMOUNT_MAX: Final = INT64_MAX
