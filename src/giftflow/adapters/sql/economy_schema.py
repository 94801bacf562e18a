"""Migration 2: the economy's tables (users, orders, lots, gifts, payouts, limits, risk, outbox).

One text serves both dialects: ``{int}`` is SQLite's ``INTEGER`` or PostgreSQL's ``BIGINT``,
``{blob}`` is ``BLOB`` or ``BYTEA``, and ``{keyed}`` is SQLite's ``WITHOUT ROWID`` (see
:data:`TYPES`). Flags are 0/1 integers in both, so that rows read the same.
Money columns are integers in the minor unit of their ledger; ``CHECK`` constraints keep counts and
amounts non-negative. Money itself lives only in the ledger: these rows say what it was for.
"""

from __future__ import annotations

import re
from typing import Final

from giftflow.adapters.sql.webhook_schema import _WEBHOOK_TABLES

_TABLES: Final = (
    """CREATE TABLE users (
        id TEXT PRIMARY KEY,
        region TEXT NOT NULL,
        time_zone TEXT NOT NULL,
        birth_date TEXT NOT NULL,
        kyc_status TEXT NOT NULL CHECK (kyc_status IN ('none', 'pending', 'verified', 'rejected')),
        is_creator {int} NOT NULL DEFAULT 0 CHECK (is_creator IN (0, 1)),
        frozen {int} NOT NULL DEFAULT 0 CHECK (frozen IN (0, 1)),
        payout_receiver TEXT NOT NULL DEFAULT '',
        totp_seed {blob},
        totp_confirmed {int} NOT NULL DEFAULT 0,
        totp_last_step {int} NOT NULL DEFAULT -1,
        totp_failures {int} NOT NULL DEFAULT 0,
        totp_window_start_ms {int} NOT NULL DEFAULT 0,
        totp_locked_until_ms {int} NOT NULL DEFAULT 0,
        created_at_ms {int} NOT NULL
    )""",
    """CREATE TABLE user_links (
        user_id TEXT NOT NULL REFERENCES users (id),
        link_kind TEXT NOT NULL,
        link_value TEXT NOT NULL,
        PRIMARY KEY (user_id, link_kind, link_value)
    )""",
    "CREATE INDEX user_links_value ON user_links (link_kind, link_value)",
    """CREATE TABLE teams (
        id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL REFERENCES users (id),
        name TEXT NOT NULL,
        created_at_ms {int} NOT NULL
    )""",
    """CREATE TABLE team_members (
        team_id TEXT NOT NULL REFERENCES teams (id),
        user_id TEXT NOT NULL REFERENCES users (id),
        budget_daily_coins {int} CHECK (budget_daily_coins >= 0),
        budget_monthly_coins {int} CHECK (budget_monthly_coins >= 0),
        PRIMARY KEY (team_id, user_id)
    )""",
    """CREATE TABLE orders (
        id TEXT PRIMARY KEY,
        buyer_id TEXT NOT NULL REFERENCES users (id),
        wallet_owner TEXT NOT NULL,
        region TEXT NOT NULL,
        channel TEXT NOT NULL,
        pack_id TEXT NOT NULL,
        coins {int} NOT NULL CHECK (coins > 0),
        price_minor {int} NOT NULL CHECK (price_minor > 0),
        currency TEXT NOT NULL,
        provider TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'paid')),
        payment_ref TEXT NOT NULL DEFAULT '',
        refunded_minor {int} NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
        disputed_minor {int} NOT NULL DEFAULT 0 CHECK (disputed_minor >= 0),
        created_at_ms {int} NOT NULL,
        paid_at_ms {int}
    )""",
    "CREATE INDEX orders_payment ON orders (provider, payment_ref)",
    "CREATE INDEX orders_buyer ON orders (buyer_id, created_at_ms)",
    """CREATE TABLE lots (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        order_id TEXT NOT NULL REFERENCES orders (id),
        seq {int} NOT NULL,
        coins {int} NOT NULL CHECK (coins > 0),
        remaining {int} NOT NULL CHECK (remaining >= 0 AND remaining <= coins),
        reversed_coins {int} NOT NULL DEFAULT 0 CHECK (reversed_coins >= 0),
        currency TEXT NOT NULL,
        net_minor {int} NOT NULL CHECK (net_minor >= 0),
        created_at_ms {int} NOT NULL
    )""",
    "CREATE INDEX lots_fifo ON lots (owner, seq) ",
    """CREATE TABLE gifts (
        id {int} PRIMARY KEY,
        sender_id TEXT NOT NULL,
        wallet_owner TEXT NOT NULL,
        creator_id TEXT NOT NULL,
        target_kind TEXT NOT NULL CHECK (target_kind IN ('stream', 'video')),
        target_id TEXT NOT NULL,
        catalog_gift_id {int} NOT NULL,
        gift_count {int} NOT NULL CHECK (gift_count > 0),
        coins {int} NOT NULL CHECK (coins > 0),
        diamonds {int} NOT NULL CHECK (diamonds >= 0),
        streak_id TEXT NOT NULL DEFAULT '',
        created_at_ms {int} NOT NULL,
        matures_at_ms {int} NOT NULL,
        released {int} NOT NULL DEFAULT 0 CHECK (released IN (0, 1)),
        reversed_diamonds {int} NOT NULL DEFAULT 0 CHECK (reversed_diamonds >= 0),
        reversed {int} NOT NULL DEFAULT 0 CHECK (reversed IN (0, 1))
    )""",
    "CREATE INDEX gifts_maturity ON gifts (creator_id, released, matures_at_ms)",
    "CREATE INDEX gifts_target ON gifts (target_kind, target_id, created_at_ms)",
    """CREATE TABLE gift_lots (
        gift_id {int} NOT NULL REFERENCES gifts (id),
        lot_id TEXT NOT NULL REFERENCES lots (id),
        coins {int} NOT NULL CHECK (coins > 0),
        reversed_coins {int} NOT NULL DEFAULT 0 CHECK (reversed_coins >= 0),
        PRIMARY KEY (gift_id, lot_id)
    ){keyed}""",
    "CREATE INDEX gift_lots_lot ON gift_lots (lot_id)",
    """CREATE TABLE receipts (
        number TEXT PRIMARY KEY,
        buyer_id TEXT NOT NULL,
        order_id TEXT NOT NULL UNIQUE,
        issued_at_ms {int} NOT NULL,
        pack_id TEXT NOT NULL,
        coins {int} NOT NULL,
        price_minor {int} NOT NULL,
        tax_minor {int} NOT NULL,
        currency TEXT NOT NULL,
        channel TEXT NOT NULL,
        provider TEXT NOT NULL,
        payment_ref TEXT NOT NULL
    )""",
    "CREATE INDEX receipts_buyer ON receipts (buyer_id, issued_at_ms)",
    """CREATE TABLE payment_events (
        provider TEXT NOT NULL,
        event_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        order_id TEXT NOT NULL,
        payment_ref TEXT NOT NULL,
        amount_minor {int} NOT NULL,
        currency TEXT NOT NULL,
        body TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('waiting', 'done')),
        received_at_ms {int} NOT NULL,
        PRIMARY KEY (provider, event_id)
    )""",
    "CREATE INDEX payment_events_waiting ON payment_events (status, payment_ref)",
    """CREATE TABLE reversals (
        id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL REFERENCES orders (id),
        cause TEXT NOT NULL,
        coins {int} NOT NULL,
        plan TEXT NOT NULL,
        restored {int} NOT NULL DEFAULT 0 CHECK (restored IN (0, 1)),
        created_at_ms {int} NOT NULL
    )""",
    "CREATE INDEX reversals_order ON reversals (order_id)",
    """CREATE TABLE spend_counters (
        owner TEXT NOT NULL,
        metric TEXT NOT NULL,
        period TEXT NOT NULL,
        amount {int} NOT NULL CHECK (amount >= 0),
        PRIMARY KEY (owner, metric, period)
    ){keyed}""",
    """CREATE TABLE spend_limits (
        owner TEXT NOT NULL,
        metric TEXT NOT NULL,
        amount {int} CHECK (amount >= 0),
        pending_amount {int} CHECK (pending_amount >= 0),
        pending_effective_at_ms {int},
        PRIMARY KEY (owner, metric)
    )""",
    """CREATE TABLE payouts (
        id TEXT PRIMARY KEY,
        creator_id TEXT NOT NULL REFERENCES users (id),
        method TEXT NOT NULL,
        receiver TEXT NOT NULL,
        diamonds {int} NOT NULL CHECK (diamonds > 0),
        cash_minor {int} NOT NULL CHECK (cash_minor > 0),
        currency TEXT NOT NULL,
        local_day TEXT NOT NULL,
        status TEXT NOT NULL,
        pending_transfer_id {int} NOT NULL,
        provider_ref TEXT NOT NULL DEFAULT '',
        hold_reason TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '',
        requested_at_ms {int} NOT NULL,
        updated_at_ms {int} NOT NULL
    )""",
    "CREATE INDEX payouts_creator_day ON payouts (creator_id, local_day)",
    "CREATE INDEX payouts_status ON payouts (status)",
    """CREATE TABLE risk_holds (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        rule TEXT NOT NULL,
        reason TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'released', 'rejected')),
        reviewer TEXT NOT NULL DEFAULT '',
        created_at_ms {int} NOT NULL,
        resolved_at_ms {int}
    )""",
    "CREATE INDEX risk_holds_user ON risk_holds (user_id, status)",
    """CREATE TABLE adjustments (
        id TEXT PRIMARY KEY,
        ledger TEXT NOT NULL,
        owner TEXT NOT NULL,
        account_kind TEXT NOT NULL,
        amount {int} NOT NULL,
        reason TEXT NOT NULL,
        proposed_by TEXT NOT NULL,
        approved_by TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL CHECK (status IN ('proposed', 'applied', 'rejected')),
        created_at_ms {int} NOT NULL
    )""",
    """CREATE TABLE outbox (
        id {int} PRIMARY KEY,
        topic TEXT NOT NULL,
        subject TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at_ms {int} NOT NULL
    )""",
)

TYPES: Final = {
    "sqlite": {"int": "INTEGER", "blob": "BLOB", "keyed": " WITHOUT ROWID"},
    "postgresql": {"int": "BIGINT", "blob": "BYTEA", "keyed": ""},
}
"""Per dialect: the integer and bytes types, and ``{keyed}``: SQLite keeps the rows of the tables
written with every gift in their primary key's own B-tree (``WITHOUT ROWID``), one B-tree fewer
to write per row."""


_SERVICE_TABLES: Final = (
    "ALTER TABLE users ADD COLUMN handle TEXT",
    "ALTER TABLE users ADD COLUMN platform TEXT NOT NULL DEFAULT ''",
    "CREATE UNIQUE INDEX users_handle ON users (handle)",
    """CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        secret_hash {blob} NOT NULL,
        role TEXT NOT NULL
            CHECK (role IN ('admin', 'service', 'creator', 'moderator', 'viewer', 'overlay')),
        owner TEXT NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        created_at_ms {int} NOT NULL,
        revoked_at_ms {int}
    )""",
    "CREATE INDEX api_keys_owner ON api_keys (owner, role)",
    """CREATE TABLE moderators (
        creator_id TEXT NOT NULL REFERENCES users (id),
        user_id TEXT NOT NULL REFERENCES users (id),
        created_at_ms {int} NOT NULL,
        PRIMARY KEY (creator_id, user_id)
    ){keyed}""",
    """CREATE TABLE streams (
        id TEXT PRIMARY KEY,
        creator_id TEXT NOT NULL REFERENCES users (id),
        title TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('native', 'tiktok', 'replay', 'simulated')),
        status TEXT NOT NULL CHECK (status IN ('scheduled', 'live', 'ended')),
        last_seq {int} NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
        created_at_ms {int} NOT NULL,
        started_at_ms {int},
        ended_at_ms {int}
    )""",
    "CREATE INDEX streams_creator ON streams (creator_id, created_at_ms)",
    """CREATE TABLE stream_frames (
        stream_id TEXT NOT NULL REFERENCES streams (id),
        first_seq {int} NOT NULL CHECK (first_seq >= 1),
        last_seq {int} NOT NULL,
        ts_ms {int} NOT NULL,
        events TEXT NOT NULL,
        PRIMARY KEY (stream_id, first_seq),
        CHECK (last_seq >= first_seq)
    ){keyed}""",
)
"""Migration 3: what the HTTP service adds (handles, platforms, API keys and overlay tokens,
moderators, streams and their gap-free event log, kept as frames: each row is a JSON array of
consecutive events, ``first_seq`` to ``last_seq``, as a WebSocket client receives them)."""


def economy_statements(dialect: str) -> tuple[str, ...]:
    """The statements of migration 2 for ``dialect``."""
    return tuple(statement.format(**TYPES[dialect]) for statement in _TABLES)


def service_statements(dialect: str) -> tuple[str, ...]:
    """The statements of migration 3 for ``dialect``."""
    return tuple(statement.format(**TYPES[dialect]) for statement in _SERVICE_TABLES)


_COLUMN: Final = re.compile(r"^\s+([a-z_]+) (TEXT|\{int\}|\{blob\})", re.MULTILINE)
_PG_TYPES: Final = {"TEXT": "text", "{int}": "bigint", "{blob}": "bytea"}
_TABLE: Final = re.compile(r"CREATE TABLE ([a-z_]+)")
_ADDED: Final = re.compile(r"ALTER TABLE ([a-z_]+) ADD COLUMN ([a-z_]+) (TEXT|\{int\}|\{blob\})")
_PRIMARY: Final = re.compile(r"PRIMARY KEY \(([a-z_, ]+)\)")


def _catalogue() -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]],
                          dict[str, dict[str, str]]]:
    """Each table's columns, primary key and PostgreSQL column types.

    They are read from the statements above, so the schema stays the one source.
    """
    columns: dict[str, tuple[str, ...]] = {}
    keys: dict[str, tuple[str, ...]] = {}
    types: dict[str, dict[str, str]] = {}
    for statement in (*_TABLES, *_SERVICE_TABLES, *_WEBHOOK_TABLES):
        added = _ADDED.match(statement)
        if added is not None:
            name, column, kind = added.groups()
            columns[name] = (*columns[name], column)
            types[name][column] = _PG_TYPES[kind]
            continue
        table = _TABLE.match(statement)
        if table is None:
            continue
        name = table.group(1)
        found = _COLUMN.findall(statement)
        columns[name] = tuple(column for column, _ in found)
        types[name] = {column: _PG_TYPES[kind] for column, kind in found}
        composite = _PRIMARY.search(statement)
        keys[name] = (tuple(c.strip() for c in composite.group(1).split(","))
                      if composite else (columns[name][0],))
    return columns, keys, types


COLUMNS, KEYS, PG_TYPES = _catalogue()
"""Every economy table's columns, its primary key columns, and their PostgreSQL types."""
