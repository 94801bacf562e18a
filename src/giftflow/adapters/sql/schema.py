"""Versioned schema migrations for SQLite and PostgreSQL.

Each migration is a list of statements per dialect, applied in one transaction and recorded in
``schema_migrations``. The database enforces what it can: positive amounts, unique idempotency
keys, both sides of a transfer in the transfer's ledger, no forbidden negative balance, one
resolution per pending transfer, and append-only transfers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from giftflow.adapters.sql.economy_schema import economy_statements, service_statements
from giftflow.adapters.sql.webhook_schema import webhook_statements


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version."""

    version: int
    name: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]

    def statements(self, dialect: str) -> tuple[str, ...]:
        """The statements for ``dialect``."""
        return self.sqlite if dialect == "sqlite" else self.postgresql


_LEDGER_SQLITE = (
    """CREATE TABLE ledgers (
        code TEXT PRIMARY KEY,
        scale INTEGER NOT NULL CHECK (scale BETWEEN 0 AND 18)
    )""",
    """CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        ledger TEXT NOT NULL REFERENCES ledgers (code),
        owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        allow_negative INTEGER NOT NULL CHECK (allow_negative IN (0, 1)),
        posted INTEGER NOT NULL DEFAULT 0 CHECK (typeof(posted) = 'integer'),
        pending_debits INTEGER NOT NULL DEFAULT 0
            CHECK (typeof(pending_debits) = 'integer' AND pending_debits >= 0),
        pending_credits INTEGER NOT NULL DEFAULT 0
            CHECK (typeof(pending_credits) = 'integer' AND pending_credits >= 0),
        created_at_ms INTEGER NOT NULL,
        UNIQUE (ledger, owner, kind),
        UNIQUE (id, ledger),
        CHECK (allow_negative = 1 OR posted >= pending_debits)
    )""",
    """CREATE TABLE operations (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        idem_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        content_hash BLOB NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('succeeded', 'failed')),
        response TEXT NOT NULL,
        actor TEXT NOT NULL,
        request_id TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        UNIQUE (scope, idem_key)
    )""",
    """CREATE TABLE transfers (
        id INTEGER PRIMARY KEY,
        operation_id INTEGER NOT NULL REFERENCES operations (id),
        ledger TEXT NOT NULL,
        debit_account_id INTEGER NOT NULL,
        credit_account_id INTEGER NOT NULL,
        amount INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount > 0),
        code TEXT NOT NULL,
        phase INTEGER NOT NULL CHECK (phase BETWEEN 0 AND 3),
        pending_id INTEGER REFERENCES transfers (id),
        timeout_at_ms INTEGER,
        actor TEXT NOT NULL,
        request_id TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        CHECK (debit_account_id <> credit_account_id),
        CHECK ((phase IN (2, 3)) = (pending_id IS NOT NULL)),
        FOREIGN KEY (debit_account_id, ledger) REFERENCES accounts (id, ledger),
        FOREIGN KEY (credit_account_id, ledger) REFERENCES accounts (id, ledger)
    )""",
    ("CREATE UNIQUE INDEX transfers_resolution ON transfers (pending_id) "
     "WHERE pending_id IS NOT NULL"),
    "CREATE INDEX transfers_debit ON transfers (debit_account_id, id)",
    "CREATE INDEX transfers_credit ON transfers (credit_account_id, id)",
    ("CREATE INDEX transfers_timeout ON transfers (timeout_at_ms) "
     "WHERE phase = 1 AND timeout_at_ms IS NOT NULL"),
    """CREATE TRIGGER transfers_no_update BEFORE UPDATE ON transfers
       BEGIN SELECT RAISE(ABORT, 'transfers are append-only'); END""",
    """CREATE TRIGGER transfers_no_delete BEFORE DELETE ON transfers
       BEGIN SELECT RAISE(ABORT, 'transfers are append-only'); END""",
    "CREATE TABLE id_blocks (id INTEGER PRIMARY KEY AUTOINCREMENT, taken_at_ms INTEGER NOT NULL)",
)

_LEDGER_POSTGRESQL = (
    """CREATE TABLE ledgers (
        code TEXT PRIMARY KEY,
        scale INTEGER NOT NULL CHECK (scale BETWEEN 0 AND 18)
    )""",
    """CREATE TABLE accounts (
        id BIGINT PRIMARY KEY,
        ledger TEXT NOT NULL REFERENCES ledgers (code),
        owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        allow_negative BOOLEAN NOT NULL,
        posted BIGINT NOT NULL DEFAULT 0,
        pending_debits BIGINT NOT NULL DEFAULT 0 CHECK (pending_debits >= 0),
        pending_credits BIGINT NOT NULL DEFAULT 0 CHECK (pending_credits >= 0),
        created_at_ms BIGINT NOT NULL,
        UNIQUE (ledger, owner, kind),
        UNIQUE (id, ledger),
        CHECK (allow_negative OR posted >= pending_debits)
    )""",
    """CREATE TABLE operations (
        id BIGINT PRIMARY KEY,
        scope TEXT NOT NULL,
        idem_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        content_hash BYTEA NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('succeeded', 'failed')),
        response TEXT NOT NULL,
        actor TEXT NOT NULL,
        request_id TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        UNIQUE (scope, idem_key)
    )""",
    """CREATE TABLE transfers (
        id BIGINT PRIMARY KEY,
        operation_id BIGINT NOT NULL REFERENCES operations (id),
        ledger TEXT NOT NULL,
        debit_account_id BIGINT NOT NULL,
        credit_account_id BIGINT NOT NULL,
        amount BIGINT NOT NULL CHECK (amount > 0),
        code TEXT NOT NULL,
        phase SMALLINT NOT NULL CHECK (phase BETWEEN 0 AND 3),
        pending_id BIGINT REFERENCES transfers (id),
        timeout_at_ms BIGINT,
        actor TEXT NOT NULL,
        request_id TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        CHECK (debit_account_id <> credit_account_id),
        CHECK ((phase IN (2, 3)) = (pending_id IS NOT NULL)),
        FOREIGN KEY (debit_account_id, ledger) REFERENCES accounts (id, ledger),
        FOREIGN KEY (credit_account_id, ledger) REFERENCES accounts (id, ledger)
    )""",
    ("CREATE UNIQUE INDEX transfers_resolution ON transfers (pending_id) "
     "WHERE pending_id IS NOT NULL"),
    "CREATE INDEX transfers_debit ON transfers (debit_account_id, id)",
    "CREATE INDEX transfers_credit ON transfers (credit_account_id, id)",
    ("CREATE INDEX transfers_timeout ON transfers (timeout_at_ms) "
     "WHERE phase = 1 AND timeout_at_ms IS NOT NULL"),
    """CREATE FUNCTION giftflow_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$""",
    """CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE ON transfers
       FOR EACH ROW EXECUTE FUNCTION giftflow_append_only()""",
    "CREATE SEQUENCE id_blocks",
)

_FRAMES_BY_TIME: Final = "CREATE INDEX stream_frames_ts ON stream_frames (ts_ms)"
"""Migration 5: the event log's frames by time, so that history past its keep is pruned
without a scan."""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "ledger", _LEDGER_SQLITE, _LEDGER_POSTGRESQL),
    Migration(2, "economy", economy_statements("sqlite"), economy_statements("postgresql")),
    Migration(3, "service", service_statements("sqlite"), service_statements("postgresql")),
    Migration(4, "webhooks", webhook_statements("sqlite"), webhook_statements("postgresql")),
    Migration(5, "event history", (_FRAMES_BY_TIME,), (_FRAMES_BY_TIME,)),
)

BOOKKEEPING = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)"
)
