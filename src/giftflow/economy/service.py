"""The economy service: users, purchases, lots, gifts, hold and release, reversals (SPEC.md §2).

Every money movement is one ledger operation committed in one transaction with the domain rows
that belong to it (lots, gifts, receipts, counters, the outbox). The flow of each call is the
same:

1. validate the request; a validation failure stores nothing;
2. open a transaction, load the idempotency keys, and plan only the operations whose key is new
   (a recorded key replays its stored answer, a busy one gets ``idempotency_in_progress``);
3. read and lock what the plan depends on, and decide: a business refusal is stored under the key
   like a ledger failure, so that a retry gets the same answer;
4. apply the operations, stage the domain writes of those that succeeded, and commit.

A lost race rolls everything back and runs the call again. Payouts, limits, risk and reports live
in :mod:`giftflow.economy.payouts` and :mod:`giftflow.economy.reports`, on the same core.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import partial
from typing import Any, Final, TypeVar

import orjson

from giftflow.economy import accounts as acc
from giftflow.economy import codes
from giftflow.economy.accounts import AccountBook, AccountKey, MissingAccountsError
from giftflow.economy.catalog import GiftCatalog
from giftflow.economy.config import CHANNELS, Economy, Region
from giftflow.economy.lots import LotView, take_fifo
from giftflow.economy.periods import age_on, day_period, local_date, month_period, zone
from giftflow.economy.ports import EconomyStore, EconomyTx, EventSink, Row
from giftflow.economy.providers import PaymentEvent, PaymentEventKind
from giftflow.economy.twofactor import (
    DEFAULT_POLICY,
    SeedCipher,
    TotpState,
    TwoFactorOk,
    TwoFactorPolicy,
    confirm,
    enroll,
)
from giftflow.invariants import fits_int64, invariant
from giftflow.ledger import Applied, Failure, Ledger, Operation, Result, TransferRequest
from giftflow.ledger.ports import StoreConflict

T = TypeVar("T")

DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000

CHANNEL_PROVIDERS: Final = {
    "web": frozenset({"stripe", "simulator"}),
    "ios": frozenset({"apple", "simulator"}),
    "android": frozenset({"google", "simulator"}),
}
"""The official providers of each purchase channel (SPEC.md §2.1)."""

LIMIT_METRICS: Final = ("purchased_daily", "purchased_monthly", "gifted_daily", "gifted_monthly")
"""The spending limits a user can set, in coins."""

USER_ID_CHARS_MAX: Final = 128
"""The longest user id."""

KYC_STATUSES: Final = ("none", "pending", "verified", "rejected")


@dataclass(frozen=True, slots=True)
class EconomyOptions:
    """The service's switches and bounds (rates live in the economy file)."""

    demo_mode: bool = False
    """Allows the ``simulator`` payment and payout providers."""
    gift_batch_requests_max: int = 1000
    conflict_retries_max: int = 8
    lots_read_max: int = 10_000
    """Unspent lots read for one batch of spends."""
    reversal_pieces_max: int = 100_000
    """Gift pieces of one lot that a reversal reads."""
    release_gifts_max: int = 5000
    """Gifts released by one release operation; the next page takes the rest."""
    waiting_events_max: int = 100
    limit_cooling_off_ms: int = DAY_MS
    """How long a limit increase waits before it applies (SPEC.md §2.4: 24 h)."""
    risk_purchases_per_hour_max: int = 20
    """More paid orders than this within an hour put the buyer on hold (purchase velocity)."""
    risk_refunds_max: int = 3
    """Refunded orders within ``risk_refunds_window_ms`` that put the buyer on hold."""
    risk_refunds_window_ms: int = 30 * DAY_MS
    risk_new_account_ms: int = 7 * DAY_MS
    risk_large_gift_coins: int = 10_000
    """A gift of at least this many coins from an account younger than ``risk_new_account_ms``
    puts the receiving creator's payouts on hold."""
    two_factor: TwoFactorPolicy = DEFAULT_POLICY


@dataclass(frozen=True, slots=True)
class GiftRequest:
    """``count`` gifts of catalog gift ``gift_id`` to ``creator_id`` in a stream or on a video.

    With ``team_id`` the coins come from the team's wallet, within the sender's team budget.
    """

    sender_id: str
    creator_id: str
    gift_id: int
    count: int
    target_id: str
    key: str
    target_kind: str = "stream"
    team_id: str = ""
    streak_id: str = ""
    request_id: str = ""


class _GiftPlan:
    """One new gift request as the batch plans it (a plain class: one is made per gift)."""

    __slots__ = ("diamonds", "gift_coins", "gift_id", "lots", "request", "risk", "scope",
                 "wallet_owner")

    def __init__(self, request: GiftRequest, scope: str) -> None:
        self.request = request
        self.scope = scope
        self.gift_coins = 0
        self.diamonds = 0
        self.wallet_owner = ""
        self.lots: Sequence[tuple[str, int]] = ()
        self.risk: Sequence[tuple[str, str, str]] = ()
        self.gift_id = 0


def stable_id(prefix: str, *parts: str) -> str:
    """An id derived from an idempotency scope and key, so that a retry names the same row."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]
    return f"{prefix}_{digest}"


def _limit_field(metric: str) -> str:
    kind, period = metric.split("_")
    return f"coins_{kind}_{period}_max"


class EconomyService:
    """The money system of SPEC.md §2, driven from Python (the HTTP API sits on top of it)."""

    def __init__(self, store: EconomyStore, ledger: Ledger, economy: Economy,
                 catalog: GiftCatalog, *, cipher: SeedCipher,
                 options: EconomyOptions | None = None,
                 clock_ms: Callable[[], int] | None = None) -> None:
        self.store = store
        self.ledger = ledger
        self.economy = economy
        self.catalog = catalog
        self.cipher = cipher
        self.options = options or EconomyOptions()
        self.clock_ms = clock_ms or store.now_ms
        self.book = AccountBook(ledger)
        self.event_sink: EventSink | None = None
        """Where room events go besides the outbox (set by the wiring to the stream logs)."""

    # -- the transaction runner -------------------------------------------------------------------

    def run(self, work: Callable[[EconomyTx], T]) -> T | Failure:
        """Run ``work`` in a transaction, again after a lost race or once missing accounts open.

        ``work`` commits when it has something to write; leaving without a commit rolls back.
        """
        for attempt in range(self.options.conflict_retries_max):
            try:
                with self.store.economy_tx() as tx:
                    return work(tx)
            except MissingAccountsError as missing:
                self.book.open(missing.keys)
            except StoreConflict:
                time.sleep(min(0.001 * 2**attempt, 0.05))
        return Failure(codes.OVERLOADED,
                       f"gave up after {self.options.conflict_retries_max} attempts; retry later")

    def ids(self, keys: Iterable[AccountKey]) -> list[int]:
        """Account ids (see :class:`AccountBook`)."""
        return self.book.ids(keys)

    def leg(self, debit: AccountKey, credit: AccountKey, amount: int, code: str,
            shortfall_code: str = "insufficient_funds") -> TransferRequest:
        """One transfer between two accounts of the same ledger."""
        invariant(debit[0] == credit[0], f"a transfer stays in one ledger: {debit} -> {credit}")
        debit_id, credit_id = self.ids((debit, credit))
        return TransferRequest(debit[0], debit_id, credit_id, amount, code,
                               shortfall_code=shortfall_code)

    @staticmethod
    def single(tx: EconomyTx, operation: Operation) -> Result:
        """Apply one operation whose key state the caller checked."""
        return tx.apply_many((operation,))[0]

    def stage_events(self, tx: EconomyTx, events: Sequence[tuple[str, str, dict[str, Any]]],
                     now_ms: int) -> None:
        """Stage room events (subject, type, data) of one transaction, one frame per subject.

        The event sink (the live domain's stream logs) takes the subjects it keeps; the rest go to
        the outbox, one row per subject: consumers fan events out in frames anyway, and a row per
        event would cost a write per gift.
        """
        frames: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for subject, kind, data in events:
            frames.setdefault(subject, []).append((kind, data))
        rest = frames if self.event_sink is None else self.event_sink.stage(tx, frames, now_ms)
        if rest:
            first = tx.next_ids(len(rest))
            tx.insert_many("outbox", ("id", "topic", "subject", "payload", "created_at_ms"), [
                (first + n, "events", subject,
                 orjson.dumps([{"type": kind, "data": data} for kind, data in subject_events])
                 .decode(), now_ms)
                for n, (subject, subject_events) in enumerate(rest.items())])

    def emit(self, tx: EconomyTx, topic: str, subject: str, payload: Mapping[str, Any]) -> None:
        """Stage an outbox event in the transaction."""
        tx.insert("outbox", {"id": tx.next_ids(1), "topic": topic, "subject": subject,
                             "payload": orjson.dumps(payload).decode(),
                             "created_at_ms": self.clock_ms()})

    # -- users ------------------------------------------------------------------------------------

    def region_of(self, user: Row) -> Region:
        """A user's region from the economy file."""
        return self.economy.region(user["region"])

    def user(self, user_id: str) -> Row | None:
        """A user's row, committed."""
        rows = self.store.read("users", {"id": user_id})
        return rows[0] if rows else None

    def register_user(self, user_id: str, *, region: str, time_zone: str,
                      birth_date: date | None, is_creator: bool = False,
                      kyc_status: str = "none", payout_receiver: str = "",
                      handle: str | None = None, platform: str = "") -> Result:
        """Create a user (a viewer, or a creator with ``is_creator``); a retry returns the same.

        Without a birth date the user's age is unknown, and every age rule refuses them. A
        ``handle`` is unique; ``platform`` names the service (platform) the user belongs to.
        """
        problem = self._user_problem(user_id, region, time_zone, kyc_status)
        if problem:
            return Failure(codes.VALIDATION_ERROR, problem)
        born = "" if birth_date is None else birth_date.isoformat()
        fields = {"user_id": user_id, "region": region, "time_zone": time_zone,
                  "birth_date": born, "is_creator": is_creator, "kyc_status": kyc_status,
                  "payout_receiver": payout_receiver, "handle": handle, "platform": platform}
        owner = acc.owner_of_user(user_id)
        keys = [acc.wallet(owner), acc.coin_debt(owner)]
        if is_creator:
            keys += [acc.held(user_id), acc.available(user_id)]
        self.book.open(keys)

        def work(tx: EconomyTx) -> Result:
            operation = Operation("system:users", f"register:{user_id}", "register_user",
                                  fields, ())
            if tx.key_states([(operation.scope, operation.key)]).get(
                    (operation.scope, operation.key)) == "new":
                refusal = None
                if tx.rows("users", {"id": user_id}):
                    refusal = (codes.VALIDATION_ERROR, f"user {user_id} already exists")
                elif handle is not None and tx.rows("users", {"handle": handle}):
                    refusal = (codes.HANDLE_TAKEN, f"the handle {handle!r} is taken")
                if refusal is not None:
                    operation = Operation(operation.scope, operation.key, operation.kind,
                                          fields, (), refusal=refusal)
            result = self.single(tx, operation)
            if isinstance(result, Applied) and not result.replayed:
                tx.insert("users", {"id": user_id, "region": region, "time_zone": time_zone,
                                    "birth_date": born, "kyc_status": kyc_status,
                                    "is_creator": int(is_creator),
                                    "payout_receiver": payout_receiver, "handle": handle,
                                    "platform": platform, "created_at_ms": self.clock_ms()})
            tx.commit()
            return result

        return self.run(work)

    def _user_problem(self, user_id: str, region: str, time_zone: str, kyc_status: str) -> str:
        if not user_id or len(user_id) > USER_ID_CHARS_MAX or ":" in user_id:
            return f"user ids are 1..{USER_ID_CHARS_MAX} characters without ':'"
        if region not in self.economy.regions:
            return f"unknown region {region!r}"
        if zone(time_zone) is None:
            return f"unknown time zone {time_zone!r}"
        if kyc_status not in KYC_STATUSES:
            return f"kyc_status is one of {', '.join(KYC_STATUSES)}"
        return ""

    def set_user_fields(self, user_id: str, changes: Mapping[str, Any]) -> bool:
        """Change plain user fields (KYC status, payout receiver); False when no such user."""
        def work(tx: EconomyTx) -> bool:
            if not tx.rows("users", {"id": user_id}, lock=True):
                return False
            tx.update("users", {"id": user_id}, changes)
            tx.commit()
            return True

        done = self.run(work)
        return done is True

    def link_accounts(self, user_id: str, link_kind: str, link_value: str) -> None:
        """Record a payment fingerprint, device id or a platform-reported link of a user."""
        def work(tx: EconomyTx) -> None:
            if not tx.rows("user_links", {"user_id": user_id, "link_kind": link_kind,
                                          "link_value": link_value}):
                tx.insert("user_links", {"user_id": user_id, "link_kind": link_kind,
                                         "link_value": link_value})
                tx.commit()

        self.run(work)

    def age(self, user: Row, now_ms: int) -> int:
        """A user's age in whole years today, in their time zone (0 when it is unknown)."""
        if not user["birth_date"]:
            return 0
        today = local_date(now_ms, user["time_zone"])
        return age_on(date.fromisoformat(user["birth_date"]), today)

    def enroll_two_factor(self, user_id: str) -> tuple[str, str] | Failure:
        """Start TOTP enrolment: returns the provisioning URI and the base32 seed to show once.

        The seed is stored encrypted; it takes effect when :meth:`confirm_two_factor` sees a
        first valid code.
        """
        def work(tx: EconomyTx) -> tuple[str, str] | Failure:
            users = tx.rows("users", {"id": user_id}, lock=True)
            if not users:
                return Failure(codes.NOT_FOUND, f"no user {user_id}")
            state, uri, seed = enroll(user_id, self.cipher, self.clock_ms(),
                                      policy=self.options.two_factor)
            tx.update("users", {"id": user_id}, totp_columns(state))
            tx.commit()
            return uri, seed

        return self.run(work)

    def confirm_two_factor(self, user_id: str, code: str) -> Failure | None:
        """Confirm enrolment with a first valid code; ``None`` when confirmed."""
        def work(tx: EconomyTx) -> Failure | None:
            users = tx.rows("users", {"id": user_id}, lock=True)
            state = totp_state(users[0]) if users else None
            if state is None:
                return Failure(codes.NOT_FOUND, f"{user_id} has not started enrolment")
            state, result = confirm(state, user_id, code, self.cipher, self.clock_ms(),
                                    self.options.two_factor)
            tx.update("users", {"id": user_id}, totp_columns(state))
            tx.commit()
            return None if isinstance(result, TwoFactorOk) else Failure(result.code,
                                                                        result.detail)

        return self.run(work)

    def wallet(self, user_id: str) -> dict[str, int]:
        """A user's balances (SPEC.md §2.3): coins and coin debt; for creators, diamonds.

        ``diamonds`` is held plus available; ``diamonds_withdrawable`` is available minus what
        payouts reserved (``diamonds_reserved``). Diamonds are in DIAMOND minor units.
        """
        owner = acc.owner_of_user(user_id)
        keys = [acc.wallet(owner), acc.coin_debt(owner), acc.held(user_id),
                acc.available(user_id)]
        self.book.open(keys)
        coins, debt, held, available = (self.ledger.account(i) for i in self.ids(keys))
        invariant(None not in (coins, debt, held, available), "opened accounts exist")
        reserved = available.pending_debits  # type: ignore[union-attr]
        return {
            "coins": coins.posted,  # type: ignore[union-attr]
            "coin_debt": max(-debt.posted, 0),  # type: ignore[union-attr]
            "diamonds_held": held.posted,  # type: ignore[union-attr]
            "diamonds": held.posted + available.posted,  # type: ignore[union-attr]
            "diamonds_withdrawable": available.posted - reserved,  # type: ignore[union-attr]
            "diamonds_reserved": reserved,
        }

    # -- purchases --------------------------------------------------------------------------------

    def create_order(self, buyer_id: str, channel: str, pack_id: str, provider: str, key: str,
                     *, team_id: str = "") -> Result:
        """Place an order for a pack at today's price (the snapshot a payment must match).

        The order counts against the buyer's purchase limits when it is placed, in the same
        transaction that checks them.
        """
        if channel not in CHANNELS or provider not in CHANNEL_PROVIDERS[channel]:
            return Failure(codes.VALIDATION_ERROR,
                           f"channel {channel!r} is sold through "
                           f"{sorted(CHANNEL_PROVIDERS.get(channel, ()))}, not {provider!r}")
        if provider == "simulator" and not self.options.demo_mode:
            return Failure(codes.DEMO_MODE_REQUIRED, "the simulator provider needs demo mode")
        scope = f"user:{buyer_id}|POST /v1/orders"
        fields = {"buyer": buyer_id, "channel": channel, "pack_id": pack_id,
                  "provider": provider, "team_id": team_id}
        order_id = stable_id("ord", scope, key)

        def work(tx: EconomyTx) -> Result:
            state = tx.key_states([(scope, key)])[(scope, key)]
            if state != "new":
                return self.single(tx, Operation(scope, key, "order", fields, ()))
            buyer = tx.rows("users", {"id": buyer_id}, lock=True)
            if not buyer:
                return Failure(codes.NOT_FOUND, f"no user {buyer_id}")
            region = self.region_of(buyer[0])
            pack = region.pack(channel, pack_id)  # type: ignore[arg-type]
            if pack is None:
                return Failure(codes.VALIDATION_ERROR,
                               f"no pack {pack_id!r} on {channel} in {buyer[0]['region']}")
            refusal = self._order_refusal(tx, buyer[0], team_id, pack.coins)
            response = {"order_id": order_id, "coins": pack.coins,
                        "price_minor": pack.price_minor, "currency": region.currency,
                        "provider": provider}
            result = self.single(tx, Operation(scope, key, "order", fields, (),
                                               actor=f"user:{buyer_id}",
                                               respond=lambda _: response, refusal=refusal))
            if isinstance(result, Applied):
                owner = acc.owner_of_team(team_id) if team_id else acc.owner_of_user(buyer_id)
                tx.insert("orders", {
                    "id": order_id, "buyer_id": buyer_id, "wallet_owner": owner,
                    "region": buyer[0]["region"], "channel": channel, "pack_id": pack.id,
                    "coins": pack.coins, "price_minor": pack.price_minor,
                    "currency": region.currency, "provider": provider, "status": "open",
                    "created_at_ms": self.clock_ms()})
                self._count(tx, buyer[0], acc.owner_of_user(buyer_id), "purchased", pack.coins)
            tx.commit()
            return result

        return self.run(work)

    def _order_refusal(self, tx: EconomyTx, buyer: Row, team_id: str,
                       coins: int) -> tuple[str, str] | None:
        if buyer["frozen"]:
            return (codes.ACCOUNT_FROZEN, f"user {buyer['id']} is frozen")
        if team_id and not tx.rows("teams", {"id": team_id, "owner_id": buyer["id"]}):
            return (codes.NOT_TEAM_MEMBER, f"only the owner of team {team_id} buys its coins")
        owner = acc.owner_of_user(buyer["id"])
        return self.limit_refusal(tx, buyer, owner, "purchased", coins)

    def simulate_payment(self, order_id: str) -> Result:
        """Complete an order at once through the ``simulator`` provider (demo mode only)."""
        if not self.options.demo_mode:
            return Failure(codes.DEMO_MODE_REQUIRED, "the simulator provider needs demo mode")
        orders = self.store.read("orders", {"id": order_id})
        if not orders or orders[0]["provider"] != "simulator":
            return Failure(codes.NOT_FOUND, f"no simulator order {order_id}")
        order = orders[0]
        return self.handle_payment(PaymentEvent(
            "simulator", f"sim:{order_id}", PaymentEventKind.PAID, order_id, f"sim_{order_id}",
            order["price_minor"], order["currency"]))

    def handle_payment(self, event: PaymentEvent) -> Result:
        """Apply a verified provider notification: a payment, a refund or a dispute.

        Notifications are keyed in the provider's namespace (``provider:stripe``), which client
        keys cannot reach. One that refers to a purchase giftflow has not credited yet waits
        (``waiting_for_purchase``) and runs when the purchase arrives.
        """
        from giftflow.economy.reversals import handle_reversal_event  # noqa: PLC0415

        if event.kind is PaymentEventKind.PAID:
            result = self.run(lambda tx: self._paid(tx, event))
            if isinstance(result, Applied) and not result.replayed:
                self._run_waiting(event.provider, event.payment_ref)
            return result
        return handle_reversal_event(self, event)

    def _run_waiting(self, provider: str, payment_ref: str) -> None:
        from giftflow.economy.reversals import handle_reversal_event  # noqa: PLC0415

        waiting = self.store.read("payment_events", {"status": "waiting", "provider": provider,
                                                     "payment_ref": payment_ref},
                                  order_by=("received_at_ms",),
                                  limit=self.options.waiting_events_max)
        for row in waiting:
            body = orjson.loads(row["body"])
            handle_reversal_event(self, PaymentEvent(
                row["provider"], row["event_id"], PaymentEventKind(row["kind"]),
                body["order_id"], row["payment_ref"], row["amount_minor"], row["currency"]))

    def _paid(self, tx: EconomyTx, event: PaymentEvent) -> Result:
        scope, key = f"provider:{event.provider}", f"payment:{event.payment_ref}"
        fields = {"order_id": event.order_id, "payment_ref": event.payment_ref,
                  "amount_minor": event.amount_minor, "currency": event.currency}
        if tx.key_states([(scope, key)])[(scope, key)] != "new":
            return self.single(tx, Operation(scope, key, "purchase", fields, ()))
        orders = (tx.rows("orders", {"id": event.order_id}, lock=True) if event.order_id else
                  tx.rows("orders", {"provider": event.provider,
                                     "payment_ref": event.payment_ref}, lock=True))
        if not orders:
            return Failure(codes.NOT_FOUND, f"no order {event.order_id or event.payment_ref}")
        order = orders[0]
        buyer = tx.rows("users", {"id": order["buyer_id"]}, lock=True)[0]
        refusal = None
        if order["status"] == "paid":
            refusal = (codes.ORDER_ALREADY_PAID, f"order {order['id']} was paid already")
        elif (event.amount_minor, event.currency) != (order["price_minor"], order["currency"]):
            refusal = (codes.PAYMENT_MISMATCH,
                       (f"paid {event.amount_minor} {event.currency}, the order's price is "
                       f"{order['price_minor']} {order['currency']}"))
        legs, lot = ([], None) if refusal else self._purchase_legs(tx, order, event)
        response = {"order_id": order["id"], "coins": order["coins"],
                    "receipt": receipt_number(order["id"])}
        result = self.single(tx, Operation(scope, key, "purchase", fields, legs,
                                           actor=f"provider:{event.provider}",
                                           respond=lambda _: response, refusal=refusal))
        self.record_event(tx, event, "done")
        if isinstance(result, Applied) and lot is not None:
            self._stage_purchase(tx, order, buyer, event, lot)
        tx.commit()
        return result

    def record_event(self, tx: EconomyTx, event: PaymentEvent, status: str) -> None:
        """Stage the notification's row (or its new status when it waited before)."""
        key = {"provider": event.provider, "event_id": event.event_id}
        if tx.rows("payment_events", key):
            tx.update("payment_events", key, {"status": status})
        else:
            tx.insert("payment_events", self._event_row(event, status))

    def _event_row(self, event: PaymentEvent, status: str) -> dict[str, Any]:
        return {"provider": event.provider, "event_id": event.event_id,
                "kind": event.kind.value, "order_id": event.order_id,
                "payment_ref": event.payment_ref, "amount_minor": event.amount_minor,
                "currency": event.currency, "status": status,
                "body": orjson.dumps({"order_id": event.order_id}).decode(),
                "received_at_ms": self.clock_ms()}

    def _purchase_legs(self, tx: EconomyTx, order: Row, event: PaymentEvent
                       ) -> tuple[list[TransferRequest], dict[str, int]]:
        """The legs of a purchase and the new lot's numbers (coins, remaining, net cash)."""
        region = self.economy.region(order["region"])
        currency, provider, price = order["currency"], event.provider, order["price_minor"]
        owner, coins = order["wallet_owner"], order["coins"]
        debt_id = self.ids([acc.coin_debt(owner)])[0]
        owed = -tx.balances([debt_id], lock=True).get(
            debt_id, _ZERO).posted
        repaid = min(coins, max(owed, 0))
        legs = [self.leg(acc.COIN_ISSUANCE, acc.wallet(owner), coins, "purchase"),
                self.leg(acc.provider_clearing(currency, provider), acc.cash(currency), price,
                         "purchase")]
        if repaid:
            legs.append(self.leg(acc.wallet(owner), acc.coin_debt(owner), repaid, "debt_repaid"))
        fee = 0
        if order["channel"] == "web":
            fee = region.card_fee(price).fee_minor
            fee_account = acc.card_fees(currency, provider)
        else:
            fee = region.store_proceeds(price, event.store_proceeds_minor).commission_minor
            fee_account = acc.store_fees(currency, provider)
        if fee:
            legs.append(self.leg(acc.cash(currency), fee_account, fee, "fee"))
        tax = region.tax_included(price).tax_minor
        if tax:
            legs.append(self.leg(acc.cash(currency), acc.tax(currency), tax, "tax"))
        net = price - fee - tax
        invariant(net >= 0, f"order {order['id']}: fees and tax exceed the price")
        return legs, {"coins": coins, "remaining": coins - repaid, "net_minor": net,
                      "tax_minor": tax}

    def _stage_purchase(self, tx: EconomyTx, order: Row, buyer: Row, event: PaymentEvent,
                        lot: dict[str, int]) -> None:
        now = self.clock_ms()
        tx.insert("lots", {"id": order["id"], "owner": order["wallet_owner"],
                           "order_id": order["id"], "seq": tx.next_ids(1), "coins": lot["coins"],
                           "remaining": lot["remaining"], "currency": order["currency"],
                           "net_minor": lot["net_minor"], "created_at_ms": now})
        tx.update("orders", {"id": order["id"]}, {"status": "paid",
                                                 "payment_ref": event.payment_ref,
                                                 "paid_at_ms": now})
        tx.insert("receipts", {
            "number": receipt_number(order["id"]), "buyer_id": order["buyer_id"],
            "order_id": order["id"], "issued_at_ms": now, "pack_id": order["pack_id"],
            "coins": order["coins"], "price_minor": order["price_minor"],
            "tax_minor": lot["tax_minor"], "currency": order["currency"],
            "channel": order["channel"], "provider": event.provider,
            "payment_ref": event.payment_ref})
        if event.fingerprint and not tx.rows("user_links", {
                "user_id": buyer["id"], "link_kind": "fingerprint",
                "link_value": event.fingerprint}):
            tx.insert("user_links", {"user_id": buyer["id"], "link_kind": "fingerprint",
                                     "link_value": event.fingerprint})
        recent = tx.rows("orders", {"buyer_id": buyer["id"], "status": "paid",
                                    "paid_at_ms >=": now - HOUR_MS},
                         limit=self.options.risk_purchases_per_hour_max + 1)
        if len(recent) + 1 > self.options.risk_purchases_per_hour_max:
            self.hold(tx, buyer["id"], "purchase_velocity",
                      f"more than {self.options.risk_purchases_per_hour_max} purchases in an hour")
        self.emit(tx, "purchase_completed", order["buyer_id"],
                  {"order_id": order["id"], "coins": order["coins"],
                   "price_minor": order["price_minor"], "currency": order["currency"]})

    # -- limits -----------------------------------------------------------------------------------

    def periods(self, user: Row) -> tuple[str, str]:
        """The user's current day and month counter periods, in their time zone."""
        today = local_date(self.clock_ms(), user["time_zone"])
        return day_period(today), month_period(today)

    def effective_limit(self, user: Row, rows: Iterable[Row], metric: str) -> int | None:
        """The limit in force, ``None`` for no limit.

        That is the user's own (a pending increase once it matured) or the region's default.
        """
        now = self.clock_ms()
        for row in rows:
            if row["metric"] != metric:
                continue
            if row["pending_effective_at_ms"] is not None and row["pending_effective_at_ms"] <= now:
                pending: int | None = row["pending_amount"]
                return pending
            amount: int | None = row["amount"]
            return amount
        default: int | None = getattr(self.region_of(user).limits, _limit_field(metric))
        return default

    def limit_refusal(self, tx: EconomyTx, user: Row, owner: str, kind: str, coins: int,
                      ) -> tuple[str, str] | None:
        """The refusal when ``coins`` more would pass the user's daily or monthly limit."""
        day, month = self.periods(user)
        limits = tx.rows("spend_limits", {"owner": user["id"]})
        used = {row["period"]: row["amount"] for row in tx.rows(
            "spend_counters", {"owner": owner, "metric": kind, "period in": (day, month)})}
        return self.check_limits(kind, coins, self.limits_in_force(user, limits, kind), used,
                                 (day, month))

    def limits_in_force(self, user: Row, limits: Iterable[Row], kind: str
                        ) -> tuple[int | None, int | None]:
        """The user's daily and monthly limits of ``kind`` (``purchased`` or ``gifted``)."""
        rows = list(limits)
        return (self.effective_limit(user, rows, f"{kind}_daily"),
                self.effective_limit(user, rows, f"{kind}_monthly"))

    @staticmethod
    def check_limits(kind: str, coins: int, in_force: tuple[int | None, int | None],
                     used: Mapping[str, int], periods: tuple[str, str],
                     ) -> tuple[str, str] | None:
        """The refusal when ``coins`` more would pass a limit, given what each period used."""
        for period, name, limit in zip(periods, ("daily", "monthly"), in_force, strict=True):
            spent = used.get(period, 0)
            if limit is not None and spent + coins > limit:
                code = getattr(codes, f"{'PURCHASE' if kind == 'purchased' else 'GIFT'}_LIMIT_"
                                      f"{name.upper()}")
                return (code, (f"{name} limit of {limit} coins {kind}: {spent} used, "
                              f"{coins} more asked"))
        return None

    def set_limit(self, user_id: str, metric: str, coins: int | None, totp: str | None = None
                  ) -> Failure | dict[str, Any]:
        """Set one of the user's spending limits (``coins`` None removes it).

        A decrease applies at once. An increase (or a removal) needs a two-factor code and
        applies after ``limit_cooling_off_ms``; until then the lower limit stays in force.
        Returns the limit's new state.
        """
        if metric not in LIMIT_METRICS:
            return Failure(codes.VALIDATION_ERROR, f"metric is one of {', '.join(LIMIT_METRICS)}")
        if coins is not None and (type(coins) is not int or coins < 0 or
                                  not fits_int64(coins)):
            return Failure(codes.VALIDATION_ERROR, "a limit is a whole number of coins >= 0")

        def work(tx: EconomyTx) -> Failure | dict[str, Any]:
            users = tx.rows("users", {"id": user_id}, lock=True)
            if not users:
                return Failure(codes.NOT_FOUND, f"no user {user_id}")
            rows = tx.rows("spend_limits", {"owner": user_id, "metric": metric}, lock=True)
            current = self.effective_limit(users[0], rows, metric)
            now = self.clock_ms()
            decrease = coins is not None and (current is None or coins <= current)
            if decrease:
                state = {"amount": coins, "pending_amount": None, "pending_effective_at_ms": None}
            else:
                from giftflow.economy.payouts import check_two_factor  # noqa: PLC0415

                refused = check_two_factor(self, tx, users[0], totp)
                if refused is not None:
                    tx.commit()  # failed attempts count
                    return refused
                state = {"amount": current, "pending_amount": coins,
                         "pending_effective_at_ms": now + self.options.limit_cooling_off_ms}
            if rows:
                tx.update("spend_limits", {"owner": user_id, "metric": metric}, state)
            else:
                tx.insert("spend_limits", {"owner": user_id, "metric": metric, **state})
            tx.commit()
            return {"metric": metric, **state}

        return self.run(work)

    def create_team(self, team_id: str, owner_id: str, name: str) -> Failure | None:
        """Create a team account (agency, family, brand) owned by ``owner_id``."""
        self.book.open([acc.wallet(acc.owner_of_team(team_id)),
                        acc.coin_debt(acc.owner_of_team(team_id))])

        def work(tx: EconomyTx) -> Failure | None:
            if not tx.rows("users", {"id": owner_id}):
                return Failure(codes.NOT_FOUND, f"no user {owner_id}")
            if tx.rows("teams", {"id": team_id}):
                return Failure(codes.VALIDATION_ERROR, f"team {team_id} exists")
            tx.insert("teams", {"id": team_id, "owner_id": owner_id, "name": name,
                                "created_at_ms": self.clock_ms()})
            tx.commit()
            return None

        return self.run(work)

    def set_member(self, team_id: str, user_id: str, *, budget_daily_coins: int | None = None,
                   budget_monthly_coins: int | None = None) -> Failure | None:
        """Add a member to a team, or change their budgets (None: no budget of that period)."""
        def work(tx: EconomyTx) -> Failure | None:
            if not tx.rows("teams", {"id": team_id}, lock=True) or not tx.rows(
                    "users", {"id": user_id}):
                return Failure(codes.NOT_FOUND, f"no team {team_id} or user {user_id}")
            budgets = {"budget_daily_coins": budget_daily_coins,
                       "budget_monthly_coins": budget_monthly_coins}
            key = {"team_id": team_id, "user_id": user_id}
            if tx.rows("team_members", key):
                tx.update("team_members", key, budgets)
            else:
                tx.insert("team_members", {**key, **budgets})
            tx.commit()
            return None

        return self.run(work)

    def _count(self, tx: EconomyTx, user: Row, owner: str, kind: str, coins: int) -> None:
        for period in self.periods(user):
            tx.upsert_add("spend_counters", {"owner": owner, "metric": kind, "period": period},
                          {"amount": coins})

    # -- gifts ------------------------------------------------------------------------------------

    def send_gift(self, request: GiftRequest) -> Result:
        """Send one gift request (see :meth:`send_gifts`)."""
        return self.send_gifts((request,))[0]

    def send_gifts(self, requests: Sequence[GiftRequest]) -> list[Result]:
        """Send gift requests in one transaction; each succeeds or fails on its own.

        Each request is one atomic operation: ``count × coin_value`` coins leave the sender's
        lots first-in first-out, and the creator's held diamonds grow by
        ``floor(coins × creator_share_bps × 10^4 / 10000)`` at the creator's region's share.
        """
        invariant(len(requests) <= self.options.gift_batch_requests_max,
                  f"at most {self.options.gift_batch_requests_max} gift requests per batch")
        results: list[Result | None] = [self._gift_problem(r) for r in requests]
        todo = [i for i, result in enumerate(results) if result is None]
        wallets = {(r.team_id, r.sender_id) for r in (requests[i] for i in todo)}
        creators = {requests[i].creator_id for i in todo}
        self.book.open([acc.COIN_REDEEMED, acc.DIAMOND_ISSUANCE]
                       + [acc.wallet(acc.owner_of_team(team) if team else acc.owner_of_user(user))
                          for team, user in wallets]
                       + [acc.held(creator) for creator in creators])
        if todo:
            done = self.run(lambda tx: self._gift_batch(tx, [requests[i] for i in todo]))
            batch = done if isinstance(done, list) else [done] * len(todo)
            for index, result in zip(todo, batch, strict=True):
                results[index] = result
        return [result for result in results if result is not None]

    def _gift_problem(self, request: GiftRequest) -> Failure | None:
        gift = self.catalog.get(request.gift_id)
        if gift is None:
            return Failure(codes.VALIDATION_ERROR, f"no gift {request.gift_id} in the catalog")
        if request.target_kind not in ("stream", "video") or not request.target_id:
            return Failure(codes.VALIDATION_ERROR, "a gift goes to a stream or a video")
        if type(request.count) is not int or request.count < 1:
            return Failure(codes.VALIDATION_ERROR, "count is a whole number of at least 1")
        if not fits_int64(request.count * gift.coin_value * 10**8):
            return Failure(codes.VALIDATION_ERROR, "count is too large")
        return None

    def _gift_batch(self, tx: EconomyTx, requests: Sequence[GiftRequest]) -> list[Result]:
        scopes = [f"user:{r.sender_id}|POST /v1/gifts" for r in requests]
        states = tx.key_states(list(zip(scopes, (r.key for r in requests), strict=True)))
        seen: set[tuple[str, str]] = set()
        plans: list[_GiftPlan | None] = []
        for request, scope in zip(requests, scopes, strict=True):
            fresh = states[scope, request.key] == "new" and (scope, request.key) not in seen
            seen.add((scope, request.key))
            plans.append(_GiftPlan(request, scope) if fresh else None)
        context = _GiftContext.load(self, tx, [p for p in plans if p is not None])
        operations = [self._gift_operation(context, plan, request, scope)
                      for plan, request, scope in zip(plans, requests, scopes, strict=True)]
        results = tx.apply_many(operations)
        writes = _GiftWrites(self, context)
        for plan, operation, result in zip(plans, operations, results, strict=True):
            if plan is None:
                continue
            invariant((operation.refusal is None) == isinstance(result, Applied),
                      partial(_disagreement, operation.key, result))
            if isinstance(result, Applied):
                writes.add(plan)
        writes.stage(tx)
        tx.commit()
        return results

    def _gift_operation(self, context: _GiftContext, plan: _GiftPlan | None,
                        request: GiftRequest, scope: str) -> Operation:
        fields = {"sender": request.sender_id, "creator": request.creator_id,
                  "gift_id": request.gift_id, "count": request.count,
                  "target": f"{request.target_kind}:{request.target_id}",
                  "team_id": request.team_id, "streak_id": request.streak_id}
        if plan is None:
            return Operation(scope, request.key, "gift", fields, ())
        refusal = context.plan(plan)
        if refusal is not None:
            return Operation(scope, request.key, "gift", fields, (), refusal=refusal,
                             actor=f"user:{request.sender_id}", request_id=request.request_id)
        wallet_id, redeemed_id, issuance_id, held_id = context.gift_accounts(
            plan.wallet_owner, request.creator_id)
        legs = (TransferRequest("COIN", wallet_id, redeemed_id, plan.gift_coins, "gift",
                                shortfall_code=codes.INSUFFICIENT_COINS),
                TransferRequest("DIAMOND", issuance_id, held_id, plan.diamonds, "gift"))
        plan.gift_id = context.new_gift_id()
        response = {"gift": plan.gift_id, "coins": plan.gift_coins,
                    "diamonds": plan.diamonds, "lots": plan.lots,
                    "sender_coins": sum(view.remaining for view in
                                        context.lots.get(plan.wallet_owner, ()))}
        return Operation(scope, request.key, "gift", fields,
                         legs if plan.diamonds else legs[:1],
                         actor=f"user:{request.sender_id}", request_id=request.request_id,
                         response=response)

    # -- hold and release -------------------------------------------------------------------------

    def release_matured(self, creator_id: str, day: date) -> list[Result]:
        """Move the creator's diamonds that matured by the end of ``day`` from held to available.

        ``day`` is in the creator's time zone. Keyed by (creator, date): running it again moves
        nothing twice. Pages of ``release_gifts_max`` gifts are operations of their own.
        """
        self.book.open([acc.held(creator_id), acc.available(creator_id)])
        results: list[Result] = []
        page = 0
        while True:
            page += 1
            result = self.run(partial(self._release_page, creator_id=creator_id, day=day,
                                      page=page))
            results.append(result)
            if not (isinstance(result, Applied) and result.response.get("more")):
                return results

    def release_all(self, day: date, *, creators_page_max: int = 500) -> dict[str, int]:
        """The daily release for every creator (:meth:`release_matured` each), page by page.

        Returns the diamond minor units this call released per creator (a day released before
        replays and counts nothing).
        """
        released: dict[str, int] = {}
        last = ""
        while True:
            page = self.store.read("users", {"is_creator": 1, "id >": last}, order_by=("id",),
                                   limit=creators_page_max)
            for creator in page:
                total = sum(int(r.response.get("released", 0)) for r in
                            self.release_matured(creator["id"], day)
                            if isinstance(r, Applied) and not r.replayed)
                if total:
                    released[creator["id"]] = total
            if len(page) < creators_page_max:
                return released
            last = page[-1]["id"]

    def _release_page(self, tx: EconomyTx, *, creator_id: str, day: date, page: int) -> Result:
        from giftflow.economy.periods import end_of_day_ms  # noqa: PLC0415

        scope, key = "system:release", f"release:{creator_id}:{day.isoformat()}:{page}"
        fields = {"creator": creator_id, "date": day.isoformat(), "page": page}
        if tx.key_states([(scope, key)])[(scope, key)] != "new":
            return self.single(tx, Operation(scope, key, "release", fields, ()))
        creator = tx.rows("users", {"id": creator_id})
        if not creator:
            return Failure(codes.NOT_FOUND, f"no creator {creator_id}")
        cutoff = end_of_day_ms(day, creator[0]["time_zone"])
        limit = self.options.release_gifts_max
        gifts = tx.rows("gifts", {"creator_id": creator_id, "released": 0,
                                  "matures_at_ms <": cutoff},
                        order_by=("matures_at_ms",), limit=limit + 1)
        more = len(gifts) > limit
        gifts = gifts[:limit]
        amount = sum(g["diamonds"] - g["reversed_diamonds"] for g in gifts)
        legs = ([self.leg(acc.held(creator_id), acc.available(creator_id), amount, "release")]
                if amount else [])
        response = {"released": amount, "gifts": len(gifts), "more": more}
        result = self.single(tx, Operation(scope, key, "release", fields, legs,
                                           respond=lambda _: response))
        if isinstance(result, Applied) and not result.replayed:
            for gift in gifts:
                tx.update("gifts", {"id": gift["id"]}, {"released": 1})
        tx.commit()
        return result

    # -- risk -------------------------------------------------------------------------------------

    def hold(self, tx: EconomyTx, user_id: str, rule: str, reason: str) -> None:
        """Open a risk hold on a user: their payouts wait for a reviewer (SPEC.md §2.4)."""
        hold_id = stable_id("hold", user_id, rule, str(tx.next_ids(1)))
        tx.insert("risk_holds", {"id": hold_id, "user_id": user_id, "rule": rule,
                                 "reason": reason, "status": "open",
                                 "created_at_ms": self.clock_ms()})
        tx.update("payouts", {"creator_id": user_id, "status": "requested"},
                  {"status": "held", "hold_reason": reason})


class _Zero:
    posted = 0


_ZERO: Final[Any] = _Zero()


def totp_state(user: Row) -> TotpState | None:
    """A user's stored two-factor state, or ``None`` when never enrolled."""
    if user["totp_seed"] is None:
        return None
    return TotpState(bytes(user["totp_seed"]), bool(user["totp_confirmed"]),
                     user["totp_last_step"], user["totp_failures"],
                     user["totp_window_start_ms"], user["totp_locked_until_ms"])


def totp_columns(state: TotpState) -> dict[str, Any]:
    """The user columns that store ``state``."""
    return {"totp_seed": state.seed_encrypted, "totp_confirmed": int(state.confirmed),
            "totp_last_step": state.last_step, "totp_failures": state.failures,
            "totp_window_start_ms": state.failure_window_start_ms,
            "totp_locked_until_ms": state.locked_until_ms}


def _disagreement(key: str, result: Result) -> str:
    return f"gift {key}: the ledger disagreed with its plan: {result}"


def receipt_number(order_id: str) -> str:
    """The receipt number of an order."""
    return "R-" + order_id.removeprefix("ord_").upper()


_NO_LIMITS: Final = (None, None)
_NO_LINKS: Final[frozenset[tuple[str, str]]] = frozenset()


def _budget_owner(team_id: str, user_id: str) -> str:
    return f"team:{team_id}:member:{user_id}"


class _GiftWrites:
    """The domain rows of a batch's successful gifts, staged in one statement per kind."""

    def __init__(self, service: EconomyService, context: _GiftContext) -> None:
        self.service = service
        self.context = context
        self.now = service.clock_ms()
        self.gifts: list[tuple[Any, ...]] = []
        self.pieces: list[tuple[int, str, int]] = []
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.risk: list[tuple[str, str, str]] = []

    def add(self, plan: _GiftPlan) -> None:
        """Collect one successful gift's rows."""
        request, now, context = plan.request, self.now, self.context
        creator = context.users[request.creator_id]
        hold_days = context.region(creator).hold_days
        self.gifts.append((
            plan.gift_id, request.sender_id, plan.wallet_owner, request.creator_id,
            request.target_kind, request.target_id, request.gift_id, request.count,
            plan.gift_coins, plan.diamonds, request.streak_id, now, now + hold_days * DAY_MS))
        self.pieces.extend((plan.gift_id, lot_id, coins) for lot_id, coins in plan.lots)
        self.risk.extend(plan.risk)
        self.events.append((f"{request.target_kind}:{request.target_id}", "gift", {
            "gift": plan.gift_id, "sender": request.sender_id, "creator": request.creator_id,
            "catalog_gift_id": request.gift_id, "count": request.count,
            "coins": plan.gift_coins, "diamonds": plan.diamonds,
            "streak_id": request.streak_id, "at_ms": now}))

    def stage(self, tx: EconomyTx) -> None:
        """Stage everything collected, parents before children.

        The lots and counters move by what the batch's plans took from them: every plan that
        took something succeeded (the batch checked the ledger agreed), so the batch's running
        state less what was loaded is exactly what to write.
        """
        context = self.context
        tx.insert_many("gifts", _GIFT_COLUMNS, self.gifts)
        tx.insert_many("gift_lots", ("gift_id", "lot_id", "coins"), self.pieces)
        tx.add_many("lots", ("id",), ("remaining",), sorted(
            (view.remaining - loaded, lot_id)
            for lot_id, (view, loaded) in context.loaded_lots.items()
            if view.remaining != loaded))
        tx.add_many("spend_counters", ("owner", "metric", "period"), ("amount",), sorted(
            (coins - context.loaded_counts.get(key, 0), key[0], "gifted", key[1])
            for key, coins in context.counted.items()
            if coins != context.loaded_counts.get(key, 0)), upsert=True)
        for user_id, rule, reason in self.risk:
            self.service.hold(tx, user_id, rule, reason)
        self.service.stage_events(tx, self.events, self.now)


_GIFT_COLUMNS: Final = ("id", "sender_id", "wallet_owner", "creator_id", "target_kind",
                        "target_id", "catalog_gift_id", "gift_count", "coins", "diamonds",
                        "streak_id", "created_at_ms", "matures_at_ms")


class _GiftContext:
    """What a batch of gifts reads once, and the running state of its plans."""

    def __init__(self, service: EconomyService, tx: EconomyTx) -> None:
        self.service = service
        self.tx = tx
        self.users: dict[str, Row] = {}
        self.lots: dict[str, list[LotView]] = {}
        self.links: dict[str, set[tuple[str, str]]] = {}
        self.members: dict[tuple[str, str], Row] = {}
        self.counted: dict[tuple[str, str], int] = {}
        """Coins counted by (counter owner, period): what was committed before this batch,
        plus what its earlier plans took."""
        self.limits: dict[str, list[Row]] = {}
        self.loaded_lots: dict[str, tuple[LotView, int]] = {}
        """Each lot's view, and its unspent coins as read before this batch's plans took any
        (spending drops used-up views from :attr:`lots`, never from here)."""
        self.loaded_counts: dict[tuple[str, str], int] = {}
        """The counters as read, before this batch's plans counted anything."""
        self._dates: dict[str, tuple[date, tuple[str, str]]] = {}
        self._ages: dict[str, int] = {}
        self._regions: dict[str, Region] = {}
        self._diamonds: dict[tuple[str, int], int] = {}
        self._gift_ids_next = self._gift_ids_end = 0
        self._gifts_planned = 0
        self._in_force: dict[str, tuple[int | None, int | None]] = {}
        self._gift_accounts: dict[tuple[str, str], tuple[int, int, int, int]] = {}
        self.refused_targets: Mapping[str, tuple[str, str]] = {}
        """Streams or videos that cannot take gifts now (from the event sink)."""
        self.now = service.clock_ms()

    @classmethod
    def load(cls, service: EconomyService, tx: EconomyTx,
             plans: Sequence[_GiftPlan]) -> _GiftContext:
        context = cls(service, tx)
        context._gifts_planned = len(plans)
        if not plans:
            return context
        senders = sorted({p.request.sender_id for p in plans})
        teams = sorted({p.request.team_id for p in plans if p.request.team_id})
        if teams:
            tx.rows_in("teams", "id", teams, order_by=("id",), lock=True)
            for row in tx.rows_in("team_members", "team_id", teams):
                context.members[row["team_id"], row["user_id"]] = row
        for row in tx.rows_in("users", "id", senders, order_by=("id",), lock=True):
            context.users[row["id"]] = row
        creators = sorted({p.request.creator_id for p in plans} - set(context.users))
        for row in tx.rows_in("users", "id", creators):
            context.users[row["id"]] = row
        owners = sorted({acc.owner_of_user(s) for s in senders}
                        | {acc.owner_of_team(t) for t in teams})
        lots = tx.rows("lots", {"owner in": owners, "remaining >": 0}, order_by=("seq",),
                       limit=service.options.lots_read_max + 1)
        invariant(len(lots) <= service.options.lots_read_max,
                  "more unspent lots than lots_read_max in one batch")
        for row in lots:
            view = LotView(row["id"], row["seq"], row["remaining"])
            context.lots.setdefault(row["owner"], []).append(view)
            context.loaded_lots[row["id"]] = (view, row["remaining"])
        context.load_limits(senders, plans)
        if service.event_sink is not None:
            context.refused_targets = service.event_sink.refusals(tx, sorted(
                {f"{p.request.target_kind}:{p.request.target_id}" for p in plans}))
        people = sorted(set(context.users))
        for row in tx.rows_in("user_links", "user_id", people):
            context.links.setdefault(row["user_id"], set()).add(
                (row["link_kind"], row["link_value"]))
        return context

    def load_limits(self, senders: Sequence[str], plans: Sequence[_GiftPlan]) -> None:
        """Read the senders' limits and this period's counters (theirs and team budgets')."""
        tx = self.tx
        for row in tx.rows_in("spend_limits", "owner", senders):
            self.limits.setdefault(row["owner"], []).append(row)
        counter_owners = [acc.owner_of_user(s) for s in senders] + [
            _budget_owner(p.request.team_id, p.request.sender_id) for p in plans
            if p.request.team_id]
        periods = sorted({period for s in senders if s in self.users
                          for period in self.periods(self.users[s])})
        if periods:
            for row in tx.rows("spend_counters", {"owner in": sorted(set(counter_owners)),
                                                  "metric": "gifted", "period in": periods}):
                self.counted[row["owner"], row["period"]] = row["amount"]
        self.loaded_counts = dict(self.counted)

    def plan(self, plan: _GiftPlan) -> tuple[str, str] | None:
        """Decide one gift against the batch's state, and take its lots if it succeeds."""
        request, service = plan.request, self.service
        sender = self.users.get(request.sender_id)
        creator = self.users.get(request.creator_id)
        if sender is None or creator is None or not creator["is_creator"]:
            missing = request.sender_id if sender is None else request.creator_id
            return (codes.NOT_A_CREATOR if sender is not None and creator is not None
                    else codes.NOT_FOUND, f"no such user or creator: {missing}")
        refusal = self._eligibility(request, sender, creator) or self.refused_targets.get(
            f"{request.target_kind}:{request.target_id}")
        if refusal is not None:
            return refusal
        gift = service.catalog.get(request.gift_id)
        invariant(gift is not None, "gifts were validated before planning")
        plan.gift_coins = gift.coin_value * request.count  # type: ignore[union-attr]
        refusal = self._limits(plan, sender)
        if refusal is not None:
            return refusal
        plan.wallet_owner = (acc.owner_of_team(request.team_id) if request.team_id
                             else acc.owner_of_user(request.sender_id))
        views = self.lots.get(plan.wallet_owner, [])
        taken = take_fifo(views, plan.gift_coins, spend=True)
        if taken is None:
            have = sum(view.remaining for view in views)
            return (codes.INSUFFICIENT_COINS, f"{have} coins, the gift costs {plan.gift_coins}")
        plan.lots = taken
        plan.diamonds = self.diamonds_for(creator, plan.gift_coins)
        self._count_batch(plan, sender)
        plan.risk = self._risk(plan, sender, creator)
        return None

    def _eligibility(self, request: GiftRequest, sender: Row,  # noqa: PLR0911 -- a return per rule
                     creator: Row) -> tuple[str, str] | None:
        region = self.region(sender)
        if sender["frozen"] or creator["frozen"]:
            return (codes.ACCOUNT_FROZEN, "the sender or the creator is frozen")
        if request.sender_id == request.creator_id:
            return (codes.SELF_GIFT, "a creator cannot gift to themselves")
        if request.gift_id in region.disabled_gifts:
            return (codes.GIFT_DISABLED, (f"gift {request.gift_id} is disabled in "
                                         f"{sender['region']}"))
        if request.count > region.gift_count_max:
            return (codes.GIFT_COUNT_EXCEEDED,
                    f"count is at most {region.gift_count_max} in {sender['region']}")
        age = self._ages.get(sender["id"])
        if age is None:
            today = self._today(sender["time_zone"])[0]
            born = sender["birth_date"]
            age = self._ages[sender["id"]] = (
                age_on(date.fromisoformat(born), today) if born else 0)
        if age < region.min_age_gift:
            return (codes.UNDERAGE, f"senders must be {region.min_age_gift}+")
        if request.target_kind == "video":
            refusal = self._video(creator)
            if refusal is not None:
                return refusal
        if request.team_id and (request.team_id, request.sender_id) not in self.members:
            return (codes.NOT_TEAM_MEMBER, (f"{request.sender_id} is not in team "
                                           f"{request.team_id}"))
        return None

    def _video(self, creator: Row) -> tuple[str, str] | None:
        """Whether the creator's videos can take gifts: an eligible video (see the glossary)."""
        service = self.service
        creator_region = service.region_of(creator)
        if not creator_region.video_gifts_allowed:
            return (codes.VIDEO_GIFTS_NOT_ALLOWED, f"region {creator['region']} has no video gifts")
        if creator["kyc_status"] != "verified" or service.age(
                creator, self.now) < creator_region.min_age_payout:
            return (codes.CREATOR_NOT_ELIGIBLE, "the video's creator is not payout-eligible")
        return None

    def _limits(self, plan: _GiftPlan, sender: Row) -> tuple[str, str] | None:
        request, service = plan.request, self.service
        day, month = self.periods(sender)
        owner = acc.owner_of_user(request.sender_id)
        in_force = self._in_force.get(request.sender_id)
        if in_force is None:
            in_force = self._in_force[request.sender_id] = service.limits_in_force(
                sender, self.limits.get(request.sender_id, ()), "gifted")
        if in_force != _NO_LIMITS:
            refusal = service.check_limits("gifted", plan.gift_coins, in_force,
                                           self._used(owner, day, month), (day, month))
            if refusal is not None:
                return refusal
        if not request.team_id:
            return None
        member = self.members[request.team_id, request.sender_id]
        used = self._used(_budget_owner(request.team_id, request.sender_id), day, month)
        for period, column, code in ((day, "budget_daily_coins", codes.TEAM_BUDGET_DAILY),
                                     (month, "budget_monthly_coins", codes.TEAM_BUDGET_MONTHLY)):
            budget = member[column]
            if budget is not None and used[period] + plan.gift_coins > budget:
                return (code, f"team budget of {budget} coins: {used[period]} used")
        return None

    def region(self, user: Row) -> Region:
        """A user's region, looked up once per batch."""
        found = self._regions.get(user["id"])
        if found is None:
            found = self._regions[user["id"]] = self.service.region_of(user)
        return found

    def diamonds_for(self, creator: Row, coins: int) -> int:
        """The creator's diamonds for ``coins`` at their region's share, once per amount."""
        key = (creator["region"], coins)
        found = self._diamonds.get(key)
        if found is None:
            found = self._diamonds[key] = self.region(creator).diamonds_for(coins)
        return found

    def new_gift_id(self) -> int:
        """A time-ordered gift id from the store's id blocks, like the ledger's own ids.

        Gift rows and their lot pieces then land at the right edge of their indexes (in SQLite
        the id is the row id itself). A retry gets the id from the stored response of the first
        attempt, so it need not be derived from the key.
        """
        if self._gift_ids_next >= self._gift_ids_end:
            count = max(self._gifts_planned, 1)
            self._gift_ids_next = self.tx.next_ids(count)
            self._gift_ids_end = self._gift_ids_next + count
        gift_id = self._gift_ids_next
        self._gift_ids_next += 1
        return gift_id

    def gift_accounts(self, wallet_owner: str, creator_id: str) -> tuple[int, int, int, int]:
        """The ids of a gift's four accounts: wallet, redeemed, diamond issuance, held."""
        found = self._gift_accounts.get((wallet_owner, creator_id))
        if found is None:
            wallet, redeemed, issuance, held = self.service.ids((
                acc.wallet(wallet_owner), acc.COIN_REDEEMED, acc.DIAMOND_ISSUANCE,
                acc.held(creator_id)))
            found = self._gift_accounts[wallet_owner, creator_id] = (
                wallet, redeemed, issuance, held)
        return found

    def periods(self, user: Row) -> tuple[str, str]:
        """The user's day and month periods (the same for everyone in one time zone)."""
        return self._today(user["time_zone"])[1]

    def _today(self, time_zone: str) -> tuple[date, tuple[str, str]]:
        """The date in ``time_zone`` and its counter periods, computed once per batch."""
        found = self._dates.get(time_zone)
        if found is None:
            today = local_date(self.now, time_zone)
            found = self._dates[time_zone] = (today, (day_period(today), month_period(today)))
        return found

    def _used(self, owner: str, day: str, month: str) -> dict[str, int]:
        counted = self.counted
        return {day: counted.get((owner, day), 0), month: counted.get((owner, month), 0)}

    def _count_batch(self, plan: _GiftPlan, sender: Row) -> None:
        request, counted, coins = plan.request, self.counted, plan.gift_coins
        day, month = self.periods(sender)
        owner = acc.owner_of_user(request.sender_id)
        counted[owner, day] = counted.get((owner, day), 0) + coins
        counted[owner, month] = counted.get((owner, month), 0) + coins
        if request.team_id:
            budget = _budget_owner(request.team_id, request.sender_id)
            counted[budget, day] = counted.get((budget, day), 0) + coins
            counted[budget, month] = counted.get((budget, month), 0) + coins

    def _risk(self, plan: _GiftPlan, sender: Row, creator: Row) -> list[tuple[str, str, str]]:
        options, hits = self.service.options, []
        links = self.links
        shared = links and links.get(sender["id"], _NO_LINKS) & links.get(creator["id"], _NO_LINKS)
        if shared:
            kind, _ = min(shared)
            hits.append((creator["id"], "linked_self_gift",
                         f"gift from {sender['id']}, linked to the creator by {kind}"))
        young = self.now - sender["created_at_ms"] < options.risk_new_account_ms
        if young and plan.gift_coins >= options.risk_large_gift_coins:
            hits.append((creator["id"], "large_gift_new_account",
                         (f"{plan.gift_coins} coins from {sender['id']}, an account younger "
                         f"than {options.risk_new_account_ms // DAY_MS} days")))
        return hits
