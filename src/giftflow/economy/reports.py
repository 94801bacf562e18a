"""Statements and reports (SPEC.md §2.3): creator statements, liabilities, reconciliation.

Everything here reads committed rows and ledger balances; nothing writes. Amounts are integers in
the minor unit of their ledger (diamonds at ``10**DIAMOND_SCALE`` per diamond, cash in cents) and
are only turned into text by :func:`format_minor`, with integer arithmetic. Every read is bounded:
tables are paged by primary key (``id >`` the last one seen), ledger history by its cursor.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from giftflow.economy import accounts as acc
from giftflow.economy import codes
from giftflow.economy.config import DIAMOND_SCALE
from giftflow.economy.periods import end_of_day_ms, zone
from giftflow.economy.ports import Row
from giftflow.invariants import invariant
from giftflow.ledger import Failure, HistoryEntry, Phase

if TYPE_CHECKING:
    from giftflow.economy.service import EconomyService

ROWS_PER_PAGE_MAX: Final = 1000
"""Rows one bounded read returns; reports page through the rest."""

HISTORY_ENTRIES_MAX: Final = 1_000_000
"""Ledger history entries one statement walks back through, per account."""

IN_VALUES_MAX: Final = 500
"""Values of one ``in`` condition."""

REPORT_TOO_LARGE: Final = codes.REPORT_TOO_LARGE

DEFAULT_CASH_SCALE: Final = 2
"""The scale of a currency whose ledger is unknown to the statement."""

SettlementKind = Literal["payment", "refund", "payout"]
SETTLEMENT_KINDS: Final[tuple[SettlementKind, ...]] = ("payment", "refund", "payout")

DifferenceIssue = Literal["missing_in_giftflow", "missing_in_report", "amount_mismatch",
                          "currency_mismatch"]


def format_minor(amount: int, scale: int) -> str:
    """``amount`` minor units at ``scale`` as a decimal: ``format_minor(-1205, 2) == "-12.05"``."""
    invariant(type(amount) is int and scale >= 0, "an integer amount at a scale >= 0")
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**scale)
    return f"{sign}{whole}.{fraction:0{scale}d}" if scale else f"{sign}{whole}"


def _pages(service: EconomyService, table: str, where: Mapping[str, Any],
           key: str = "id", rows_per_page_max: int = ROWS_PER_PAGE_MAX) -> Iterator[Row]:
    """Every committed row of ``table`` matching ``where``, read a bounded page at a time."""
    last: Any = None
    while True:
        condition = dict(where) if last is None else {**where, f"{key} >": last}
        page = service.store.read(table, condition, order_by=(key,), limit=rows_per_page_max)
        yield from page
        if len(page) < rows_per_page_max:
            return
        last = page[-1][key]


def _chunks(values: Sequence[Any], size: int = IN_VALUES_MAX) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _cash_scales(service: EconomyService) -> dict[str, int]:
    return {spec.code: spec.scale for spec in service.ledger.store.ledgers()}


# -- creator statements ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Statement:
    """A creator's calendar month in their own time zone.

    Diamonds are in DIAMOND minor units; cash maps a currency to minor units. Opening and closing
    balances are the posted balances at the month's first and last instant (``held`` and
    ``available``; ``available`` includes diamonds that open payouts reserved).
    """

    creator_id: str
    year: int
    month: int
    time_zone: str
    start_ms: int
    """The month's first millisecond (local midnight of its first day)."""
    end_ms: int
    """The first millisecond after the month."""
    gifts_received: int
    """Gifts received, counting each of a multi-gift request (``gift_count``)."""
    gift_coins: int
    gift_diamonds: int
    diamonds_released: int
    diamonds_reversed: int
    """Diamonds that refunds and chargebacks took back."""
    diamonds_restored: int
    """Diamonds that won disputes gave back."""
    diamonds_paid_out: int
    diamonds_returned: int
    """Diamonds of paid payouts that came back."""
    diamonds_adjusted: int
    """Net diamonds of approved admin adjustments."""
    opening_held: int
    opening_available: int
    closing_held: int
    closing_available: int
    payouts_requested: int
    payouts_paid: int
    payouts_failed: int
    payouts_returned: int
    cash_requested: dict[str, int] = field(default_factory=dict)
    cash_paid: dict[str, int] = field(default_factory=dict)
    cash_failed: dict[str, int] = field(default_factory=dict)
    cash_returned: dict[str, int] = field(default_factory=dict)
    cash_scales: dict[str, int] = field(default_factory=dict)
    """Minor-unit scale of each currency above, for rendering."""

    @property
    def opening_diamonds(self) -> int:
        """Held plus available at the start of the month."""
        return self.opening_held + self.opening_available

    @property
    def closing_diamonds(self) -> int:
        """Held plus available at the end of the month."""
        return self.closing_held + self.closing_available


def month_bounds(year: int, month: int, time_zone: str) -> tuple[int, int]:
    """The first millisecond of the month and the first after it, in ``time_zone``."""
    first = date(year, month, 1)
    last = date(year, month, calendar.monthrange(year, month)[1])
    return end_of_day_ms(first - timedelta(days=1), time_zone), end_of_day_ms(last, time_zone)


def _posted_delta(entry: HistoryEntry, account_id: int) -> int:
    """What ``entry`` did to ``account_id``'s posted balance."""
    if entry.phase not in (Phase.SINGLE, Phase.POST):
        return 0
    return entry.amount if entry.credit_account_id == account_id else -entry.amount


@dataclass(slots=True)
class _Walk:
    """One account's ledger history from now back to a month's start."""

    current: int
    after_end: int = 0
    """Posted change after the month."""
    by_code: dict[str, int] = field(default_factory=dict)
    """Posted change within the month, by transfer code."""
    entries: list[HistoryEntry] = field(default_factory=list)
    """The month's entries."""

    @property
    def closing(self) -> int:
        return self.current - self.after_end

    @property
    def opening(self) -> int:
        return self.closing - sum(self.by_code.values())


def _walk(service: EconomyService, account_id: int, start_ms: int, end_ms: int,
          entries_max: int) -> _Walk | None:
    account = service.ledger.account(account_id)
    invariant(account is not None, f"account {account_id} exists")
    walk = _Walk(current=account.posted)  # type: ignore[union-attr]
    cursor: int | None = None
    seen = 0
    while True:
        page = service.ledger.history(account_id, cursor, service.ledger.limits
                                      .history_page_entries_max)
        for entry in page.entries:
            if entry.created_at_ms < start_ms:
                return walk
            seen += 1
            if seen > entries_max:
                return None
            delta = _posted_delta(entry, account_id)
            if entry.created_at_ms >= end_ms:
                walk.after_end += delta
            else:
                walk.by_code[entry.code] = walk.by_code.get(entry.code, 0) + delta
                walk.entries.append(entry)
        if page.next_cursor is None:
            return walk
        cursor = page.next_cursor


def creator_statement(service: EconomyService, creator_id: str, year: int, month: int, *,
                      history_entries_max: int = HISTORY_ENTRIES_MAX) -> Statement | Failure:
    """The statement of ``creator_id`` for ``year``-``month`` in the creator's time zone.

    Gifts and requested payouts come from their rows; diamond movements and balances from the
    ledger history of the creator's held and available accounts (walked back from now, at most
    ``history_entries_max`` entries each). Paid and failed payouts are dated by the ledger
    transfer that posted or voided their reservation; returned ones by their last update.
    """
    if not (1 <= month <= 12 and 1970 <= year <= 9999):  # noqa: PLR2004 -- the calendar
        return Failure(codes.VALIDATION_ERROR, "month is 1..12 and year 1970..9999")
    creator = service.user(creator_id)
    if creator is None or not creator["is_creator"]:
        return Failure(codes.NOT_FOUND, f"no creator {creator_id}")
    time_zone = creator["time_zone"]
    invariant(zone(time_zone) is not None, f"{creator_id} has a known time zone")
    start_ms, end_ms = month_bounds(year, month, time_zone)
    keys = [acc.held(creator_id), acc.available(creator_id)]
    service.book.open(keys)
    held_id, available_id = service.ids(keys)
    held = _walk(service, held_id, start_ms, end_ms, history_entries_max)
    available = _walk(service, available_id, start_ms, end_ms, history_entries_max)
    if held is None or available is None:
        return Failure(REPORT_TOO_LARGE,
                       f"more than {history_entries_max} ledger entries since {year}-{month:02d}")
    window = {"created_at_ms >=": start_ms, "created_at_ms <": end_ms}
    gifts = list(_pages(service, "gifts", {"creator_id": creator_id, **window}))
    requested = list(_pages(service, "payouts", {"creator_id": creator_id,
                                                 "requested_at_ms >=": start_ms,
                                                 "requested_at_ms <": end_ms}))
    paid = _payouts_of(service, creator_id, available, "payout_paid", Phase.POST)
    failed = _payouts_of(service, creator_id, available, "payout_failed", Phase.VOID)
    returned = list(_pages(service, "payouts", {"creator_id": creator_id, "status": "returned",
                                                "updated_at_ms >=": start_ms,
                                                "updated_at_ms <": end_ms}))
    scales = _cash_scales(service)
    currencies = {row["currency"] for row in (*requested, *paid, *failed, *returned)}
    return Statement(
        creator_id=creator_id, year=year, month=month, time_zone=time_zone,
        start_ms=start_ms, end_ms=end_ms,
        gifts_received=sum(g["gift_count"] for g in gifts),
        gift_coins=sum(g["coins"] for g in gifts),
        gift_diamonds=sum(g["diamonds"] for g in gifts),
        diamonds_released=available.by_code.get("release", 0),
        diamonds_reversed=-held.by_code.get("reversal", 0) - available.by_code.get("reversal", 0),
        diamonds_restored=held.by_code.get("restore", 0) + available.by_code.get("restore", 0),
        diamonds_paid_out=-available.by_code.get("payout_paid", 0),
        diamonds_returned=available.by_code.get("payout_returned", 0),
        diamonds_adjusted=(held.by_code.get("adjustment", 0)
                           + available.by_code.get("adjustment", 0)),
        opening_held=held.opening, opening_available=available.opening,
        closing_held=held.closing, closing_available=available.closing,
        payouts_requested=len(requested), payouts_paid=len(paid), payouts_failed=len(failed),
        payouts_returned=len(returned),
        cash_requested=_cash(requested), cash_paid=_cash(paid), cash_failed=_cash(failed),
        cash_returned=_cash(returned),
        cash_scales={c: scales.get(c, DEFAULT_CASH_SCALE) for c in sorted(currencies)})


def _payouts_of(service: EconomyService, creator_id: str, walk: _Walk, code: str,
                phase: Phase) -> list[Row]:
    """The payouts whose reservation a month's entries of ``code`` resolved."""
    pending = sorted({e.pending_id for e in walk.entries
                      if e.code == code and e.phase is phase and e.pending_id is not None})
    rows: list[Row] = []
    for chunk in _chunks(pending):
        rows += service.store.read("payouts", {"creator_id": creator_id,
                                               "pending_transfer_id in": list(chunk)},
                                   order_by=("id",))
    return rows


def _cash(rows: Iterable[Row]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for row in rows:
        totals[row["currency"]] = totals.get(row["currency"], 0) + row["cash_minor"]
    return dict(sorted(totals.items()))


def render_statement(statement: Statement) -> str:
    """The statement as plain text (diamonds to four places, cash to its currency's scale)."""
    s = statement

    def dia(amount: int) -> str:
        return format_minor(amount, DIAMOND_SCALE)

    def cash(totals: Mapping[str, int]) -> str:
        if not totals:
            return "none"
        return ", ".join(f"{format_minor(amount, s.cash_scales.get(currency, 2))} {currency}"
                         for currency, amount in sorted(totals.items()))

    lines = [
        f"Statement for {s.creator_id}, {s.year:04d}-{s.month:02d} ({s.time_zone})",
        (f"Gifts received: {s.gifts_received} gifts, {s.gift_coins} coins, "
         f"{dia(s.gift_diamonds)} diamonds"),
        (f"Opening diamonds: {dia(s.opening_diamonds)} (held {dia(s.opening_held)}, "
         f"available {dia(s.opening_available)})"),
        f"Diamonds released: {dia(s.diamonds_released)}",
        f"Diamonds reversed: {dia(s.diamonds_reversed)}",
        f"Diamonds restored: {dia(s.diamonds_restored)}",
        f"Diamonds paid out: {dia(s.diamonds_paid_out)}",
        f"Diamonds returned: {dia(s.diamonds_returned)}",
        f"Diamonds adjusted: {dia(s.diamonds_adjusted)}",
        (f"Closing diamonds: {dia(s.closing_diamonds)} (held {dia(s.closing_held)}, "
         f"available {dia(s.closing_available)})"),
        f"Payouts requested: {s.payouts_requested} ({cash(s.cash_requested)})",
        f"Payouts paid: {s.payouts_paid} ({cash(s.cash_paid)})",
        f"Payouts failed: {s.payouts_failed} ({cash(s.cash_failed)})",
        f"Payouts returned: {s.payouts_returned} ({cash(s.cash_returned)})",
    ]
    return "\n".join(lines) + "\n"


# -- liabilities ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Liability:
    """What the platform owes in one currency, and the cash it holds against it.

    Unspent coins are valued lot by lot at the net cash their purchase brought in
    (``remaining × net_minor // coins``, rounded down per lot); unpaid diamonds creator by
    creator at their region's diamond value (rounded down per creator).
    """

    currency: str
    unspent_coins: int
    unspent_coins_minor: int
    unpaid_diamonds: int
    """DIAMOND minor units, held plus available (reserved by open payouts included)."""
    unpaid_diamonds_minor: int
    cash_held_minor: int
    """The balance of the platform's cash account in this currency."""

    @property
    def total_minor(self) -> int:
        """The liability: unspent coins plus unpaid diamonds, at cash value."""
        return self.unspent_coins_minor + self.unpaid_diamonds_minor

    @property
    def covered(self) -> bool:
        """Whether the cash held covers the liability."""
        return self.cash_held_minor >= self.total_minor


def liability_report(service: EconomyService, *,
                     rows_per_page_max: int = ROWS_PER_PAGE_MAX) -> dict[str, Liability]:
    """Unspent coins and unpaid diamonds at cash value, per currency (SPEC.md §2.3)."""
    coins: dict[str, int] = {}
    coins_minor: dict[str, int] = {}
    for lot in _pages(service, "lots", {"remaining >": 0}, rows_per_page_max=rows_per_page_max):
        currency = lot["currency"]
        coins[currency] = coins.get(currency, 0) + lot["remaining"]
        coins_minor[currency] = (coins_minor.get(currency, 0)
                                 + lot["remaining"] * lot["net_minor"] // lot["coins"])
    diamonds: dict[str, int] = {}
    diamonds_minor: dict[str, int] = {}
    for creator in _pages(service, "users", {"is_creator": 1},
                          rows_per_page_max=rows_per_page_max):
        region = service.region_of(creator)
        unpaid = service.wallet(creator["id"])["diamonds"]
        invariant(unpaid >= 0, f"creator {creator['id']} holds no negative diamonds")
        currency = region.currency
        diamonds[currency] = diamonds.get(currency, 0) + unpaid
        diamonds_minor[currency] = (diamonds_minor.get(currency, 0)
                                    + region.diamonds_to_cash(unpaid).cash_minor)
    report: dict[str, Liability] = {}
    for currency in sorted(set(coins) | set(diamonds)):
        service.book.open([acc.cash(currency)])
        account = service.ledger.account(service.ids([acc.cash(currency)])[0])
        invariant(account is not None, f"the {currency} cash account exists")
        report[currency] = Liability(
            currency, coins.get(currency, 0), coins_minor.get(currency, 0),
            diamonds.get(currency, 0), diamonds_minor.get(currency, 0),
            account.posted)  # type: ignore[union-attr]
    return report


# -- reconciliation -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SettlementRow:
    """One line of a provider's settlement report."""

    payment_ref: str
    """The provider's reference: a payment's id for payments and refunds, a payout's for
    payouts."""
    kind: SettlementKind
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class Difference:
    """One disagreement between giftflow's records and a settlement report.

    ``expected`` is giftflow's side, ``actual`` the report's; a side that has nothing is
    ``None`` (amounts) or ``""`` (currency). A reference with several report lines (partial
    refunds) is compared by their sum.
    """

    issue: DifferenceIssue
    kind: SettlementKind
    ref: str
    expected_minor: int | None
    actual_minor: int | None
    expected_currency: str
    actual_currency: str


def reconcile(service: EconomyService, provider: str,
              settlement_rows: Iterable[SettlementRow | tuple[str, str, int, str]], *,
              since_ms: int | None = None, until_ms: int | None = None,
              rows_per_page_max: int = ROWS_PER_PAGE_MAX) -> list[Difference] | Failure:
    """Compare a provider's settlement report with giftflow's records; each difference once.

    giftflow's side: paid orders of ``provider`` (their price, at ``payment_ref``), their
    cumulative refunds (``refunded_minor``), and paid payouts through ``provider`` (their cash, at
    ``provider_ref``). ``since_ms``/``until_ms`` limit giftflow's side to orders paid and payouts
    settled in ``[since_ms, until_ms)``, the period a report covers. A report line of an unknown
    kind or with a non-integer amount fails the whole reconciliation (``validation_error``).
    """
    actual: dict[tuple[SettlementKind, str], tuple[int, set[str]]] = {}
    for raw in settlement_rows:
        row = _settlement_row(raw)
        if row is None:
            return Failure(codes.VALIDATION_ERROR,
                           f"a settlement line is (ref, {'|'.join(SETTLEMENT_KINDS)}, "
                           f"integer amount_minor, currency), not {raw!r}")
        amount, currencies = actual.get((row.kind, row.payment_ref), (0, set()))
        actual[row.kind, row.payment_ref] = (amount + row.amount_minor,
                                             currencies | {row.currency})
    expected = _records(service, provider, since_ms, until_ms, rows_per_page_max)
    differences: list[Difference] = []
    for kind, ref in sorted(set(expected) | set(actual)):
        want, got = expected.get((kind, ref)), actual.get((kind, ref))
        if got is None and want is not None:
            differences.append(Difference("missing_in_report", kind, ref, want[0], None,
                                          want[1], ""))
        elif got is not None and want is None:
            differences.append(Difference("missing_in_giftflow", kind, ref, None, got[0], "",
                                          ",".join(sorted(got[1]))))
        elif got is not None and want is not None:
            reported = ",".join(sorted(got[1]))
            if reported != want[1]:
                differences.append(Difference("currency_mismatch", kind, ref, want[0], got[0],
                                              want[1], reported))
            elif got[0] != want[0]:
                differences.append(Difference("amount_mismatch", kind, ref, want[0], got[0],
                                              want[1], reported))
    return differences


def _settlement_row(raw: SettlementRow | tuple[str, str, int, str]) -> SettlementRow | None:
    """A checked report line, or ``None`` when it is not one."""
    ref, kind, amount, currency = ((raw.payment_ref, raw.kind, raw.amount_minor, raw.currency)
                                   if isinstance(raw, SettlementRow) else raw)
    if type(amount) is not int or not ref or not currency:
        return None
    for known in SETTLEMENT_KINDS:
        if kind == known:
            return SettlementRow(ref, known, amount, currency)
    return None


def _records(service: EconomyService, provider: str, since_ms: int | None, until_ms: int | None,
             rows_per_page_max: int) -> dict[tuple[SettlementKind, str], tuple[int, str]]:
    """The giftflow side of a reconciliation: ``(kind, ref) -> (amount_minor, currency)``."""
    def window(column: str) -> dict[str, int]:
        bounds: dict[str, int] = {}
        if since_ms is not None:
            bounds[f"{column} >="] = since_ms
        if until_ms is not None:
            bounds[f"{column} <"] = until_ms
        return bounds

    records: dict[tuple[SettlementKind, str], tuple[int, str]] = {}
    for order in _pages(service, "orders", {"provider": provider, "status": "paid",
                                            **window("paid_at_ms")},
                        rows_per_page_max=rows_per_page_max):
        ref = order["payment_ref"]
        records["payment", ref] = (order["price_minor"], order["currency"])
        if order["refunded_minor"]:
            records["refund", ref] = (order["refunded_minor"], order["currency"])
    for payout in _pages(service, "payouts", {"method": provider, "status": "paid",
                                              **window("updated_at_ms")},
                         rows_per_page_max=rows_per_page_max):
        records["payout", payout["provider_ref"] or payout["id"]] = (payout["cash_minor"],
                                                                     payout["currency"])
    return records


# -- receipts -------------------------------------------------------------------------------------

RECEIPTS_PAGE_MAX: Final = 100
"""The most receipts one listing page returns."""


@dataclass(frozen=True, slots=True)
class ReceiptPage:
    """A page of a buyer's receipts, newest first, and the cursor of the next page."""

    receipts: tuple[Row, ...]
    next_cursor: int | None


def list_receipts(service: EconomyService, buyer_id: str, *, before_ms: int | None = None,
                  limit: int = RECEIPTS_PAGE_MAX) -> ReceiptPage:
    """The buyer's receipts issued before ``before_ms`` (the previous page's cursor)."""
    limit = max(1, min(limit, RECEIPTS_PAGE_MAX))
    where: dict[str, Any] = {"buyer_id": buyer_id}
    if before_ms is not None:
        where["issued_at_ms <"] = before_ms
    rows = service.store.read("receipts", where, order_by=("issued_at_ms DESC", "number"),
                              limit=limit + 1)
    page = tuple(rows[:limit])
    return ReceiptPage(page, page[-1]["issued_at_ms"] if len(rows) > limit else None)


def render_receipt(service: EconomyService, buyer_id: str, number: str) -> str | Failure:
    """The receipt ``number`` as a plain-text document, for its buyer only.

    It carries what SPEC.md §2.1 lists: number, date, pack, coins, price, tax, channel and the
    payment reference; amounts are written exactly from their integers.
    """
    rows = service.store.read("receipts", {"number": number, "buyer_id": buyer_id})
    if not rows:
        return Failure(codes.NOT_FOUND, f"no receipt {number} for {buyer_id}")
    receipt = rows[0]
    scale = _cash_scales(service).get(receipt["currency"], DEFAULT_CASH_SCALE)
    issued = datetime.fromtimestamp(receipt["issued_at_ms"] // 1000, tz=UTC)
    currency = receipt["currency"]
    lines = [
        f"giftflow receipt {receipt['number']}",
        f"date:     {issued:%Y-%m-%d %H:%M} UTC",
        f"buyer:    {receipt['buyer_id']}",
        f"pack:     {receipt['pack_id']} ({receipt['coins']} coins)",
        f"price:    {format_minor(receipt['price_minor'], scale)} {currency} (tax included)",
        f"tax:      {format_minor(receipt['tax_minor'], scale)} {currency}",
        f"channel:  {receipt['channel']} via {receipt['provider']}",
        f"payment:  {receipt['payment_ref']}",
        f"order:    {receipt['order_id']}",
    ]
    return "\n".join(lines) + "\n"
