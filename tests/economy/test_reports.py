"""Creator statements, the liability report and reconciliation, on both stores."""

from __future__ import annotations

from economy_env import EconomyEnv

from giftflow.economy import accounts as acc
from giftflow.economy.reports import (
    Difference,
    Liability,
    SettlementRow,
    Statement,
    creator_statement,
    format_minor,
    liability_report,
    list_receipts,
    reconcile,
    render_receipt,
    render_statement,
)
from giftflow.ledger import Applied, Failure


def _paid_creator_month(env: EconomyEnv) -> str:
    """Viewer v buys 7000 coins and gifts 5000 + 200 to creator c, who is paid $10 in January.

    The ledger stamps transfers with the store's clock: the test's clock drives it too.
    """
    env.store.now_ms = env.clock
    env.viewer("v")
    env.creator("c")
    env.clock.advance(days=1)  # 2026-01-01 19:00 in New York: January there
    assert env.buy("v", "web-7000").ok
    assert env.gift("v", "c", 100, 50, key="g1").ok
    assert env.gift("v", "c", 100, 2, key="g2").ok
    env.clock.advance(days=8)
    assert env.release("c").ok
    env.clock.advance(ms=30_000)
    payout = env.payouts.request("c", 2000 * 10_000, "simulator", env.totp("c"), "p1")
    assert isinstance(payout, Applied), payout
    assert env.payouts.process()[0]["status"] == "paid"
    return payout.response["payout"]


def test_format_minor_is_exact() -> None:
    """Minor units become decimals by integer division: diamonds to 4 places, cents to 2."""
    assert format_minor(123_456, 4) == "12.3456"
    assert format_minor(1234, 2) == "12.34"
    assert format_minor(-5, 2) == "-0.05"
    assert format_minor(7, 0) == "7"


def test_statement_shows_the_month(env: EconomyEnv) -> None:
    """A January statement counts the month's gifts, release and payout, and balances open and
    close from the ledger; February opens where January closed.
    """
    _paid_creator_month(env)
    january = creator_statement(env.service, "c", 2026, 1)
    assert isinstance(january, Statement), january
    assert (january.gifts_received, january.gift_coins, january.gift_diamonds) == (
        52, 5200, 26_000_000)
    assert january.opening_diamonds == 0
    assert january.diamonds_released == 26_000_000
    assert january.diamonds_paid_out == 20_000_000
    assert (january.closing_held, january.closing_available) == (0, 6_000_000)
    assert (january.payouts_requested, january.payouts_paid) == (1, 1)
    assert january.cash_requested == {"USD": 1000} and january.cash_paid == {"USD": 1000}
    assert env.service.wallet("c")["diamonds"] == january.closing_diamonds
    text = render_statement(january)
    assert "Gifts received: 52 gifts, 5200 coins, 2600.0000 diamonds" in text
    assert "Diamonds paid out: 2000.0000" in text
    assert "Payouts paid: 1 (10.00 USD)" in text
    assert "Closing diamonds: 600.0000 (held 0.0000, available 600.0000)" in text

    env.clock.advance(days=40)
    assert env.gift("v", "c", 100, 1, key="g3").ok
    february = creator_statement(env.service, "c", 2026, 2)
    assert isinstance(february, Statement)
    assert (february.gifts_received, february.opening_available) == (1, 6_000_000)
    assert february.closing_held == 500_000 and february.payouts_requested == 0
    again = creator_statement(env.service, "c", 2026, 1)
    assert again == january


def test_statement_of_december_is_empty_and_unknown_creators_fail(env: EconomyEnv) -> None:
    """A month before any activity has zeros; a viewer or a bad month is refused."""
    _paid_creator_month(env)
    december = creator_statement(env.service, "c", 2025, 12)
    assert isinstance(december, Statement)
    assert december.gifts_received == 0 and december.closing_diamonds == 0
    assert "Payouts requested: 0 (none)" in render_statement(december)
    refused = creator_statement(env.service, "v", 2026, 1)
    assert isinstance(refused, Failure) and refused.code == "not_found"
    bad = creator_statement(env.service, "c", 2026, 13)
    assert isinstance(bad, Failure) and bad.code == "validation_error"


def test_liability_has_exact_values_and_stays_below_cash(env: EconomyEnv) -> None:
    """Unspent coins are valued per lot at net cash, unpaid diamonds at the region's value;
    the total never exceeds the cash the platform holds.
    """
    _paid_creator_month(env)
    report = liability_report(env.service)
    assert set(report) == {"USD"}
    usd = report["USD"]
    assert isinstance(usd, Liability)
    # web-7000: price 7499, card fee 2.9 % + 30 cents = 248 (the region's rounding), no tax.
    assert env.service.economy.region("US").card_fee(7499).fee_minor == 248
    net = 7499 - 248
    assert usd.unspent_coins == 1800
    assert usd.unspent_coins_minor == 1800 * net // 7000 == 1864
    assert usd.unpaid_diamonds == 6_000_000  # 600 diamonds at 1 cent per 2
    assert usd.unpaid_diamonds_minor == 300
    assert usd.cash_held_minor == net - 1000  # the payout left the cash account
    assert usd.total_minor == usd.unspent_coins_minor + 300
    assert usd.covered and usd.total_minor <= usd.cash_held_minor


def test_liability_pages_through_lots(env: EconomyEnv) -> None:
    """Bounded pages of one row still visit every lot and creator."""
    env.viewer("a")
    env.viewer("b")
    env.creator("c", two_factor=False)
    assert env.buy("a", "web-70").ok
    assert env.buy("b", "web-350").ok
    assert env.buy("b", "web-70").ok
    assert env.gift("b", "c", 10, 1, key="g").ok
    whole = liability_report(env.service)
    paged = liability_report(env.service, rows_per_page_max=1)
    assert paged == whole
    assert whole["USD"].unspent_coins == 70 + 350 + 70 - 10
    assert whole["USD"].unpaid_diamonds == 50_000


def _reconcile_setup(env: EconomyEnv) -> None:
    env.viewer("v")
    env.creator("c")
    assert env.buy("v", "web-700").ok
    assert env.buy("v", "web-70").ok


def _matching_report(env: EconomyEnv) -> list[SettlementRow]:
    orders = env.store.read("orders", {"provider": "simulator", "status": "paid"},
                            order_by=("id",))
    return [SettlementRow(o["payment_ref"], "payment", o["price_minor"], o["currency"])
            for o in orders]


def test_reconcile_matching_report_has_no_difference(env: EconomyEnv) -> None:
    """A report that lists every paid order at its price and currency matches exactly."""
    _reconcile_setup(env)
    assert reconcile(env.service, "simulator", _matching_report(env)) == []
    assert reconcile(env.service, "stripe", []) == []


def test_reconcile_lists_each_kind_of_difference(env: EconomyEnv) -> None:
    """Missing on either side, a wrong amount and a wrong currency each appear once, with the
    reference, giftflow's value and the report's.
    """
    _reconcile_setup(env)
    rows = _matching_report(env)
    big, small = sorted(rows, key=lambda r: r.amount_minor, reverse=True)
    report = [
        SettlementRow(big.payment_ref, "payment", big.amount_minor + 1, "USD"),
        ("ghost", "refund", 50, "USD"),
        ("ghost-payout", "payout", 1000, "USD"),
    ]
    differences = reconcile(env.service, "simulator", report)
    assert isinstance(differences, list)
    by_issue = {d.issue: d for d in differences}
    assert len(differences) == 4
    assert by_issue["amount_mismatch"] == Difference(
        "amount_mismatch", "payment", big.payment_ref, 749, 750, "USD", "USD")
    assert by_issue["missing_in_report"] == Difference(
        "missing_in_report", "payment", small.payment_ref, 74, None, "USD", "")
    assert {(d.kind, d.ref) for d in differences if d.issue == "missing_in_giftflow"} == {
        ("refund", "ghost"), ("payout", "ghost-payout")}
    wrong_currency = reconcile(env.service, "simulator", [
        SettlementRow(big.payment_ref, "payment", 749, "EUR"), small])
    assert wrong_currency == [Difference("currency_mismatch", "payment", big.payment_ref,
                                         749, 749, "USD", "EUR")]
    bad = reconcile(env.service, "simulator", [("r", "chargeback", 1, "USD")])
    assert isinstance(bad, Failure) and bad.code == "validation_error"


def test_reconcile_checks_paid_payouts(env: EconomyEnv) -> None:
    """A paid payout is expected in its provider's report at its cash amount."""
    payout_id = _paid_creator_month(env)
    row = env.store.read("payouts", {"id": payout_id})[0]
    payments = _matching_report(env)
    matching = [*payments, SettlementRow(row["provider_ref"], "payout", 1000, "USD")]
    assert reconcile(env.service, "simulator", matching) == []
    short = [*payments, SettlementRow(row["provider_ref"], "payout", 999, "USD")]
    assert reconcile(env.service, "simulator", short) == [Difference(
        "amount_mismatch", "payout", row["provider_ref"], 1000, 999, "USD", "USD")]
    env.verify_ok()
    cash = env.service.ledger.account(env.service.ids([acc.cash("USD")])[0])
    assert cash is not None and cash.posted == liability_report(env.service)[
        "USD"].cash_held_minor


def test_a_buyer_lists_and_downloads_their_receipts(env: EconomyEnv) -> None:
    """Every purchase yields a receipt: the buyer lists them newest first, a page at a time,
    and downloads one as a document with number, date, pack, coins, price, tax, channel and
    payment reference; another user cannot download it.
    """
    env.viewer("fan")
    env.viewer("other")
    for pack in ("web-70", "web-350", "web-700"):
        assert env.buy("fan", pack).ok
        env.clock.advance(ms=1_000)
    first = list_receipts(env.service, "fan", limit=2)
    assert [r["pack_id"] for r in first.receipts] == ["web-700", "web-350"]
    assert first.next_cursor is not None
    second = list_receipts(env.service, "fan", before_ms=first.next_cursor, limit=2)
    assert [r["pack_id"] for r in second.receipts] == ["web-70"]
    assert second.next_cursor is None
    newest = first.receipts[0]
    document = render_receipt(env.service, "fan", newest["number"])
    assert isinstance(document, str)
    assert f"giftflow receipt {newest['number']}" in document
    assert "pack:     web-700 (700 coins)" in document
    assert "price:    7.49 USD (tax included)" in document
    assert "tax:      0.00 USD" in document
    assert "channel:  web via simulator" in document
    assert f"payment:  {newest['payment_ref']}" in document
    refused = render_receipt(env.service, "other", newest["number"])
    assert isinstance(refused, Failure)
    assert refused.code == "not_found"
