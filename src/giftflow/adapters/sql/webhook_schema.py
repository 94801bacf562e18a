"""Migration 4: outbound webhooks (endpoints, deliveries, attempts, the outbox's fan-out flag).

Written in the conventions of :mod:`giftflow.adapters.sql.economy_schema` (``{int}``, ``{blob}``,
``{keyed}``), whose catalogue also reads these statements, so the economy's row gateway knows
the tables.

The outbox gets a ``fanned_out`` flag rather than a cursor on its ids: outbox ids come from
blocks reserved per connection (SQLite) or per process (PostgreSQL), so a row with a smaller id
can commit after one with a larger id, and a cursor would skip it. Rows written before this
migration count as fanned out: endpoints only receive what happens after they exist.
"""

from __future__ import annotations

from typing import Final

_WEBHOOK_TABLES: Final = (
    "ALTER TABLE outbox ADD COLUMN fanned_out {int} NOT NULL DEFAULT 0",
    "UPDATE outbox SET fanned_out = 1",
    "CREATE INDEX outbox_fan_out ON outbox (fanned_out, id)",
    """CREATE TABLE webhook_endpoints (
        id {int} PRIMARY KEY,
        platform TEXT NOT NULL,
        url TEXT NOT NULL,
        secret_encrypted {blob} NOT NULL,
        topics TEXT NOT NULL,
        disabled {int} NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        created_at_ms {int} NOT NULL
    )""",
    "CREATE INDEX webhook_endpoints_platform ON webhook_endpoints (platform, id)",
    """CREATE TABLE webhook_deliveries (
        id {int} PRIMARY KEY,
        endpoint_id {int} NOT NULL REFERENCES webhook_endpoints (id),
        outbox_id {int} NOT NULL,
        topic TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts {int} NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        attempts_base {int} NOT NULL DEFAULT 0 CHECK (attempts_base >= 0),
        status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
        next_attempt_at_ms {int} NOT NULL,
        last_status_code {int},
        last_error TEXT NOT NULL DEFAULT '',
        created_at_ms {int} NOT NULL,
        delivered_at_ms {int},
        UNIQUE (endpoint_id, outbox_id)
    )""",
    "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at_ms)",
    "CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id)",
    """CREATE TABLE webhook_attempts (
        delivery_id {int} NOT NULL REFERENCES webhook_deliveries (id),
        number {int} NOT NULL CHECK (number >= 1),
        attempted_at_ms {int} NOT NULL,
        status_code {int},
        error TEXT NOT NULL DEFAULT '',
        duration_ms {int} NOT NULL CHECK (duration_ms >= 0),
        PRIMARY KEY (delivery_id, number)
    ){keyed}""",
)
"""The statements of migration 4, in the economy schema's conventions.

``webhook_deliveries.payload`` is the exact body sent (and signed). ``attempts`` counts every
attempt; ``attempts_base`` is its value when the delivery was last (re)queued, so a redelivery
gets a fresh retry budget. ``webhook_attempts`` is the delivery log, one row per HTTP attempt.
"""


def webhook_statements(dialect: str) -> tuple[str, ...]:
    """The statements of migration 4 for ``dialect``."""
    from giftflow.adapters.sql.economy_schema import TYPES  # noqa: PLC0415 -- import cycle

    return tuple(statement.format(**TYPES[dialect]) for statement in _WEBHOOK_TABLES)
