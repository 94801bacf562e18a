"""The wiring module: the one place that picks adapters for the domains (cosmicpython style)."""

from __future__ import annotations

import base64
import gc
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from giftflow.adapters.providers.paypal import PayPalPayouts
from giftflow.adapters.providers.simulator import SimulatorPayouts
from giftflow.adapters.providers.stripe_connect import StripeConnectPayouts
from giftflow.adapters.sql.store import SqlStore, StoreOptions
from giftflow.economy import load_catalog, load_economy
from giftflow.economy.payouts import Payouts
from giftflow.economy.providers import PayoutProvider
from giftflow.economy.service import EconomyOptions, EconomyService, GiftRequest
from giftflow.economy.twofactor import SeedCipher
from giftflow.ledger import GroupCommitSettings, Ledger, LedgerLimits
from giftflow.ledger.engine import Limits
from giftflow.ledger.group_commit import GroupCommitter
from giftflow.settings import Settings

if TYPE_CHECKING:
    from giftflow.api.app import Services

GC_GENERATION0_OBJECTS = 50_000
"""Allocations between young-generation collections in a long-running giftflow process."""


def tune_garbage_collector() -> None:
    """Settings for a long-running process (``serve``, ``bench``): fewer, larger GC passes.

    The hot path allocates many short-lived, acyclic objects (rows, results), which reference
    counting frees at once; the cyclic collector's frequent young-generation passes find little
    and cost about 4 % of group-commit throughput. Objects alive after start-up are frozen out of
    the collector's passes. Both are standard tuning for Python services.
    """
    gc.collect()
    gc.freeze()
    _, generation1, generation2 = gc.get_threshold()
    gc.set_threshold(GC_GENERATION0_OBJECTS, generation1, generation2)


def open_store(settings: Settings, *, migrate: bool = True) -> SqlStore:
    """The store that ``settings`` names, migrated to the current schema unless told not to."""
    options = StoreOptions(
        sqlite_synchronous=settings.sqlite_synchronous,
        sqlite_cache_size_kib=settings.sqlite_cache_size_kib,
        busy_timeout_ms=settings.busy_timeout_ms,
        pool_connections_max=settings.pool_connections_max,
        migrate=migrate,
    )
    limits = Limits(transfers_per_operation_max=settings.transfers_per_operation_max)
    return SqlStore(settings.resolved_database_url, options, limits)


def build_ledger(settings: Settings, store: SqlStore | None = None) -> Ledger:
    """A ledger service over the configured store."""
    limits = LedgerLimits(
        batch_operations_max=settings.group_commit_batch_operations_max,
        history_page_entries_max=settings.history_page_entries_max,
        conflict_retries_max=settings.conflict_retries_max,
    )
    return Ledger(store or open_store(settings), limits)


def group_commit_settings(settings: Settings) -> GroupCommitSettings:
    """The group-commit bounds from ``settings``."""
    return GroupCommitSettings(
        batch_operations_max=settings.group_commit_batch_operations_max,
        window_us=settings.group_commit_window_us,
        queue_operations_max=settings.group_commit_queue_operations_max,
    )


WEBHOOK_KEY_FILE = "webhook-secret.key"
"""The file in the data directory that holds the webhook secrets' key when no setting gives one."""

TOTP_KEY_FILE = "totp-seed.key"
"""The file in the data directory that holds the TOTP seed key when no setting gives one."""


def secret_key(settings: Settings, configured: str | None, file_name: str) -> bytes:
    """A 32-byte key: the configured one (base64), or the data directory's key file.

    The file is made on first use, with mode 0600.
    """
    if configured:
        return base64.b64decode(configured, validate=True)
    path = settings.data_dir / file_name
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(base64.b64encode(SeedCipher.generate_key()))
    return base64.b64decode(path.read_bytes(), validate=True)


def seed_cipher(settings: Settings) -> SeedCipher:
    """The cipher for TOTP seeds: the configured key, or the data directory's key file."""
    return SeedCipher(secret_key(settings, settings.totp_key, TOTP_KEY_FILE))


def build_economy(settings: Settings, store: SqlStore | None = None,
                  providers: dict[str, PayoutProvider] | None = None,
                  ) -> tuple[EconomyService, Payouts]:
    """The economy service and its payouts over the configured store.

    In demo mode the ``simulator`` payout provider is added to ``providers``.
    """
    store = store or open_store(settings)
    demo = settings.mode == "demo"
    service = EconomyService(
        store, build_ledger(settings, store), load_economy(settings.economy_file),
        load_catalog(settings.catalog_file), cipher=seed_cipher(settings),
        options=EconomyOptions(demo_mode=demo,
                               conflict_retries_max=settings.conflict_retries_max))
    methods: dict[str, PayoutProvider] = dict(providers or {})
    if settings.paypal_base_url and settings.paypal_client_id and settings.paypal_client_secret:
        methods.setdefault("paypal", PayPalPayouts(
            base_url=settings.paypal_base_url, client_id=settings.paypal_client_id,
            client_secret=settings.paypal_client_secret))
    if settings.stripe_api_key:
        methods.setdefault("bank", StripeConnectPayouts(settings.stripe_api_key,
                                                        base_url=settings.stripe_api_base))
    if demo:
        methods.setdefault("simulator", SimulatorPayouts())
    return service, Payouts(service, methods)


def build_services(settings: Settings, store: SqlStore | None = None) -> Services:
    """Everything the HTTP service uses, over one store.

    That is the economy with its payouts, the stream logs as the economy's event sink, API keys,
    and the gift committer.
    """
    from giftflow.access import AccessService  # noqa: PLC0415 -- only the service needs these
    from giftflow.api.app import Services  # noqa: PLC0415
    from giftflow.api.events import EventHub  # noqa: PLC0415
    from giftflow.api.webhooks import SecretCipher, WebhookDispatcher, WebhookOptions  # noqa: PLC0415
    from giftflow.live import Streams  # noqa: PLC0415

    store = store or open_store(settings)
    economy, payouts = build_economy(settings, store)
    streams = Streams(store)
    economy.event_sink = streams.events
    gifts: GroupCommitter[GiftRequest] = GroupCommitter(
        economy.send_gifts, group_commit_settings(settings),
        batch_max=economy.options.gift_batch_requests_max)
    webhooks = WebhookDispatcher(
        store, httpx.Client(trust_env=False), store.now_ms,
        WebhookOptions(https_only=settings.mode == "production"),
        cipher=SecretCipher(secret_key(settings, settings.webhook_key, WEBHOOK_KEY_FILE)))
    return Services(economy, payouts, streams, AccessService(store), gifts, webhooks,
                    demo=settings.mode == "demo", hub=EventHub(streams),
                    stripe_webhook_secret=settings.stripe_webhook_secret or "",
                    rate_requests_per_s=settings.rate_requests_per_s,
                    rate_burst_requests=settings.rate_burst_requests)


WEBHOOK_TICK_S = 1.0
"""How often the worker fans webhook events out and delivers what is due."""
PRUNE_TICK_S = 600.0
"""How often the worker removes the streams' events past their keep."""


def start_workers(services: Services, settings: Settings) -> Callable[[], None]:
    """Run the service's background work in a thread; returns its stop.

    Every :data:`WEBHOOK_TICK_S`, webhook fan-out and delivery; every :data:`PRUNE_TICK_S`,
    the streams' events older than ``settings.event_history_days`` are removed, a bounded
    batch at a time.
    """
    from giftflow.live.streams import PRUNE_FRAMES_MAX  # noqa: PLC0415 -- as build_services

    stop = threading.Event()
    history_ms = settings.event_history_days * 86_400_000

    def work() -> None:
        pruned_at = 0.0
        while not stop.wait(WEBHOOK_TICK_S):
            services.webhooks.fan_out()
            services.webhooks.deliver_due()
            if time.monotonic() - pruned_at >= PRUNE_TICK_S:
                pruned_at = time.monotonic()
                before_ms = services.streams.clock_ms() - history_ms
                while (services.streams.prune_history(before_ms) == PRUNE_FRAMES_MAX
                       and not stop.is_set()):
                    pass

    thread = threading.Thread(target=work, name="giftflow-workers", daemon=True)
    thread.start()

    def stopper() -> None:
        stop.set()
        thread.join(timeout=30)

    return stopper
