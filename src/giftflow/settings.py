"""The one typed settings object. Values come from arguments, then ``GIFTFLOW_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a giftflow process is configured with; limits carry their unit last."""

    model_config = SettingsConfigDict(env_prefix="GIFTFLOW_", extra="forbid")

    data_dir: Path = Path("giftflow-data")
    database_url: str | None = None
    """``sqlite:///FILE`` or ``postgresql://…``; default: SQLite inside ``data_dir``."""
    mode: Literal["demo", "production"] = "production"

    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    sqlite_cache_size_kib: int = Field(default=262_144, ge=2_000, le=16_777_216)
    busy_timeout_ms: int = Field(default=30_000, ge=100, le=600_000)
    pool_connections_max: int = Field(default=8, ge=1, le=256)

    group_commit_batch_operations_max: int = Field(default=1_000, ge=1, le=10_000)
    group_commit_window_us: int = Field(default=2_000, ge=0, le=1_000_000)
    group_commit_queue_operations_max: int = Field(default=20_000, ge=1, le=1_000_000)
    transfers_per_operation_max: int = Field(default=64, ge=1, le=4_095)
    history_page_entries_max: int = Field(default=500, ge=1, le=10_000)
    event_history_days: int = Field(default=7, ge=1, le=3_650)
    """How long streams' events are kept for clients that resume (SPEC.md §4)."""
    conflict_retries_max: int = Field(default=8, ge=1, le=100)

    rate_requests_per_s: float = Field(default=50.0, gt=0, le=1_000_000)
    """Requests per second each API key (or client address) may sustain."""
    rate_burst_requests: int = Field(default=100, ge=1, le=1_000_000)
    """Requests above the sustained rate a key may send at once."""

    economy_file: Path | None = None
    """The economy TOML; default: the packaged illustrative rates."""
    catalog_file: Path | None = None
    """The gift catalog JSON; default: the packaged real catalog."""
    paypal_base_url: str | None = None
    """PayPal's API (``https://api-m.paypal.com``); with the client id and secret it enables
    the ``paypal`` payout method."""
    paypal_client_id: str | None = None
    paypal_client_secret: str | None = None
    stripe_webhook_secret: str | None = None
    """The signing secret (``whsec_…``) of the Stripe webhook endpoint; without it the
    endpoint answers 503 ``provider_unconfigured``."""
    stripe_api_key: str | None = None
    """A Stripe secret key: enables the ``bank`` payout method (Stripe Connect transfers)."""
    stripe_api_base: str | None = None
    """Another Stripe API address (a local server in tests); default: Stripe's own."""
    webhook_key: str | None = None
    """Base64 of the 32-byte key that encrypts webhook endpoint secrets; default: a key file in
    ``data_dir`` made on first use (mode 0600)."""
    totp_key: str | None = None
    """Base64 of the 32-byte key that encrypts TOTP seeds; default: a key file in
    ``data_dir`` made on first use (mode 0600)."""

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``giftflow.sqlite3`` in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'giftflow.sqlite3').resolve()}"
