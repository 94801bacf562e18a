"""The economy file: the default file, validation with key paths, and the integer arithmetic."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import giftflow.economy
from giftflow.economy import (
    DIAMOND_SCALE,
    EconomyFileError,
    Region,
    load_catalog,
    load_economy,
    parse_economy,
)
from giftflow.invariants import InvariantViolation

DEFAULT_FILE = Path(giftflow.economy.__file__).parent / "default_economy.toml"

SPEC_IN_APP_PRICES = [(70, 99), (350, 499), (700, 999), (1400, 1999), (3500, 4999),
                      (7000, 9999), (17500, 24999)]

MINIMAL_REGION = (Path(__file__).parent / "minimal_region.toml").read_text(encoding="utf-8")
"""A complete, valid one-region file, shared with the catalog tests."""


def problems_of(text: str, **kwargs: object) -> list[str]:
    """The problem lines an invalid file reports, as ``path: message`` strings."""
    with pytest.raises(EconomyFileError) as caught:
        parse_economy(text, "test.toml", **kwargs)  # type: ignore[arg-type]
    return [str(problem) for problem in caught.value.problems]


def one_problem(text: str) -> str:
    """The single problem an invalid file reports."""
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


def region(**changes: int) -> Region:
    """The minimal region with some integer keys changed."""
    return parse_economy(MINIMAL_REGION).region("XX").model_copy(update=changes)


def test_public_surface_names_exist() -> None:
    """Every name in giftflow.economy.__all__ is importable from the package."""
    for name in giftflow.economy.__all__:
        assert hasattr(giftflow.economy, name), name


def test_default_file_loads_with_the_packaged_catalog() -> None:
    """The packaged default file loads without a path and passes the catalog cross-check."""
    economy = load_economy(catalog=load_catalog())
    assert set(economy.regions) == {"US", "DE"}
    assert load_economy(DEFAULT_FILE) == economy


def test_default_us_in_app_prices_are_the_spec_list() -> None:
    """US ios and android packs are exactly the SPEC §2.1 coins / price_minor list, in USD."""
    us = load_economy().region("US")
    assert us.currency == "USD"
    for channel in ("ios", "android"):
        packs = us.packs.for_channel(channel)
        assert [(pack.coins, pack.price_minor) for pack in packs] == SPEC_IN_APP_PRICES


def test_default_web_is_cheaper_for_every_coin_amount() -> None:
    """In every region, each web pack costs less than the in-app pack with the same coins."""
    for code, each in load_economy().regions.items():
        web = {pack.coins: pack.price_minor for pack in each.packs.web}
        ios = {pack.coins: pack.price_minor for pack in each.packs.ios}
        assert set(web) == set(ios), code
        for coins, price_minor in ios.items():
            assert web[coins] < price_minor, (code, coins)
            assert web[coins] == price_minor * 3 // 4, (code, coins)


def test_default_second_region_is_in_euro_with_its_own_prices() -> None:
    """DE states EUR amounts with 19 % tax; its prices are its own, not the dollar numbers."""
    de = load_economy().region("DE")
    assert de.currency == "EUR"
    assert de.tax_bps == 1900
    assert [pack.price_minor for pack in de.packs.ios] != [p for _, p in SPEC_IN_APP_PRICES]


def test_default_rates_match_the_spec_defaults() -> None:
    """The default US region carries the SPEC defaults: 50 % share, $0.005 diamonds, 7-day hold."""
    us = load_economy().region("US")
    assert (us.creator_share_bps, us.diamond_value.minor, us.diamond_value.per_diamonds) == (
        5000, 1, 2)
    assert (us.hold_days, us.payout_min_minor, us.payout_daily_max_minor) == (7, 1000, 100000)
    assert (us.min_age_gift, us.min_age_payout, us.gift_count_max) == (18, 18, 10000)
    assert us.app_store_commission_bps == 3000


def test_float_price_is_named_by_its_key_path() -> None:
    """A float price is refused at regions.XX.packs.ios[2].price_minor, saying floats are out."""
    text = MINIMAL_REGION.replace("price_minor = 999", "price_minor = 9.99")
    problem = one_problem(text)
    assert problem.startswith("regions.XX.packs.ios[2].price_minor: is the float 9.99")
    assert "floats are not allowed" in problem


def test_float_rate_is_refused() -> None:
    """A float in a bps rate is refused too: no float anywhere in the file."""
    problem = one_problem(MINIMAL_REGION.replace("tax_bps = 0", "tax_bps = 0.0"))
    assert problem.startswith("regions.XX.tax_bps: is the float 0.0")


def test_negative_price_is_refused() -> None:
    """A negative price is refused at its key path with the bound it breaks."""
    problem = one_problem(MINIMAL_REGION.replace("price_minor = 499", "price_minor = -499"))
    assert problem == (
        "regions.XX.packs.ios[1].price_minor: Input should be greater than 0 (got -499)")


def test_unknown_key_is_refused() -> None:
    """An unknown key, including a per-pack currency, is reported as an unknown key."""
    text = MINIMAL_REGION.replace('{ id = "ios-70",', '{ id = "ios-70", currency = "EUR",')
    assert one_problem(text) == "regions.XX.packs.ios[0].currency: unknown key"


def test_missing_required_key_is_refused() -> None:
    """A region without creator_share_bps reports that required key as missing."""
    problem = one_problem(MINIMAL_REGION.replace("creator_share_bps = 5000\n", ""))
    assert problem == "regions.XX.creator_share_bps: required key is missing"


@pytest.mark.parametrize("key", ["creator_share_bps", "tax_bps", "app_store_commission_bps",
                                 "card_fee_bps"])
def test_bps_out_of_range_is_refused(key: str) -> None:
    """Basis points above 10000 are refused at their key path."""
    text = re.sub(rf"^{key} = \d+$", f"{key} = 10001", MINIMAL_REGION, flags=re.MULTILINE)
    problem = one_problem(text)
    assert problem == f"regions.XX.{key}: Input should be less than or equal to 10000 (got 10001)"


def test_duplicate_pack_ids_are_refused_across_channels() -> None:
    """A pack id used twice in one region is reported at the second use, naming the first."""
    text = MINIMAL_REGION.replace('id = "web-70"', 'id = "ios-350"')
    assert one_problem(text) == (
        "regions.XX.packs.ios[1].id: duplicate pack id 'ios-350' "
        "(first at regions.XX.packs.web[0].id)")


def test_zero_per_diamonds_is_refused() -> None:
    """A diamond value with per_diamonds = 0 is refused (it would divide by zero)."""
    text = MINIMAL_REGION.replace("per_diamonds = 2", "per_diamonds = 0")
    problem = one_problem(text)
    assert problem.startswith("regions.XX.diamond_value.per_diamonds: Input should be greater")


def test_currency_must_be_a_known_fiat_ledger() -> None:
    """A lower-case code and a code without a fiat ledger are both refused at currency."""
    assert "is not a fiat code" in one_problem(MINIMAL_REGION.replace('"USD"', '"usd"'))
    assert "has no fiat ledger" in one_problem(MINIMAL_REGION.replace('"USD"', '"GBP"'))


def test_disabled_gift_must_exist_in_the_catalog() -> None:
    """With a catalog, a disabled gift id that the catalog lacks is refused at its index."""
    text = MINIMAL_REGION.replace("gift_count_max = 10000",
                                  "gift_count_max = 10000\ndisabled_gifts = [5655, 424242]")
    problems = problems_of(text, catalog=load_catalog())
    assert problems == ["regions.XX.disabled_gifts[1]: gift id 424242 is not in the catalog"]
    assert parse_economy(text).region("XX").disabled_gifts == (5655, 424242)


def test_every_problem_is_reported_in_one_error() -> None:
    """Type errors, unknown keys and cross-key rules in one file are all in one exception."""
    text = (MINIMAL_REGION
            .replace("price_minor = 999", "price_minor = 9.99")
            .replace("hold_days = 7", "hold_days = 7\nholdays = 7")
            .replace("min_age_gift = 18\n", "")
            + MINIMAL_REGION.replace("XX", "YY").replace('id = "web-70"', 'id = "ios-70"'))
    with pytest.raises(EconomyFileError) as caught:
        parse_economy(text, "broken.toml")
    message = str(caught.value)
    assert message.startswith("economy file broken.toml: 4 problem(s):")
    for expected in ("regions.XX.packs.ios[2].price_minor: is the float 9.99",
                     "regions.XX.holdays: unknown key",
                     "regions.XX.min_age_gift: required key is missing",
                     "regions.YY.packs.ios[0].id: duplicate pack id 'ios-70'"):
        assert expected in message


def test_unreadable_and_malformed_files_raise_the_same_error(tmp_path: Path) -> None:
    """A missing file and invalid TOML are EconomyFileError too, naming the source."""
    with pytest.raises(EconomyFileError, match="cannot be read"):
        load_economy(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[regions.US\n", encoding="utf-8")
    with pytest.raises(EconomyFileError, match=r"(?s)broken\.toml.*not valid TOML"):
        load_economy(broken)


def test_loaded_economy_is_frozen() -> None:
    """A loaded region cannot be changed in place."""
    us = load_economy().region("US")
    with pytest.raises(ValueError, match="frozen"):
        us.creator_share_bps = 9000  # type: ignore[misc]


def test_diamonds_for_worked_example() -> None:
    """700 coins at 5000 bps give 3,500,000 DIAMOND minor units: 350 diamonds at scale 4."""
    assert DIAMOND_SCALE == 4
    us = load_economy().region("US")
    assert us.diamonds_for(700) == 3_500_000
    assert us.diamonds_for(1) == 5_000
    assert region(creator_share_bps=3333).diamonds_for(7) == 23_331  # 7 × 0.3333 diamonds


def test_store_proceeds_round_down() -> None:
    """$9.99 at 3000 bps: proceeds floor(999 × 0.7) = 699, commission 999 − 699 = 300."""
    split = load_economy().region("US").store_proceeds(999)
    assert (split.proceeds_minor, split.commission_minor) == (699, 300)
    ninety_nine = load_economy().region("US").store_proceeds(99)
    assert (ninety_nine.proceeds_minor, ninety_nine.commission_minor) == (69, 30)


def test_store_reported_proceeds_override() -> None:
    """Proceeds the store reports replace the computed ones; the commission is the rest."""
    split = load_economy().region("US").store_proceeds(999, reported_proceeds_minor=849)
    assert (split.proceeds_minor, split.commission_minor) == (849, 150)
    with pytest.raises(InvariantViolation):
        load_economy().region("US").store_proceeds(999, reported_proceeds_minor=1000)


def test_card_fee_rounds_the_net_down() -> None:
    """$7.49 web at 2.9 % + 30¢: fee 30 + ceil(21.721) = 52, net 697."""
    split = load_economy().region("US").card_fee(749)
    assert (split.fee_minor, split.net_minor) == (52, 697)


def test_card_fee_must_be_below_every_web_price() -> None:
    """A web pack whose price does not exceed the card fee is refused at load."""
    text = MINIMAL_REGION.replace("card_fee_fixed_minor = 30", "card_fee_fixed_minor = 74")
    assert one_problem(text) == "regions.XX.packs.web[0].price_minor: does not exceed the card fee"


def test_tax_included_rounds_the_tax_down() -> None:
    """€10.99 with 19 % included: tax floor(1099 × 1900 / 11900) = 175, net 924; US tax is 0."""
    de = load_economy().region("DE")
    split = de.tax_included(1099)
    assert (split.tax_minor, split.net_minor) == (175, 924)
    assert de.tax_included(119).tax_minor == 19
    assert load_economy().region("US").tax_included(999).tax_minor == 0


def test_diamonds_to_cash_even_amount() -> None:
    """350 diamonds (3,500,000 minor) at 1 cent per 2 diamonds are 175 cents, remainder 0."""
    out = load_economy().region("US").diamonds_to_cash(3_500_000)
    assert (out.cash_minor, out.converted_diamonds_minor, out.remainder_diamonds_minor) == (
        175, 3_500_000, 0)


def test_diamonds_to_cash_keeps_the_remainder() -> None:
    """3 diamonds become 1 cent and 1 diamond (10,000 minor) stays; 1.5 diamonds give 0 cents."""
    us = load_economy().region("US")
    out = us.diamonds_to_cash(30_000)
    assert (out.cash_minor, out.converted_diamonds_minor, out.remainder_diamonds_minor) == (
        1, 20_000, 10_000)
    assert us.diamonds_to_cash(15_000).cash_minor == 0
    assert us.diamonds_to_cash(15_000).remainder_diamonds_minor == 15_000


def test_diamonds_to_cash_with_a_non_unit_value() -> None:
    """At 3 cents per 2 diamonds, 1 diamond (10,000 minor) is 1 cent, 3,333 minor stay."""
    rational_region = parse_economy(MINIMAL_REGION.replace("minor = 1, per_diamonds = 2",
                                                           "minor = 3, per_diamonds = 2"))
    out = rational_region.region("XX").diamonds_to_cash(10_000)
    assert (out.cash_minor, out.converted_diamonds_minor, out.remainder_diamonds_minor) == (
        1, 6_667, 3_333)


def test_arithmetic_refuses_negative_or_oversized_amounts() -> None:
    """Negative amounts and amounts beyond int64 are bugs and raise InvariantViolation."""
    us = load_economy().region("US")
    with pytest.raises(InvariantViolation):
        us.diamonds_for(-1)
    with pytest.raises(InvariantViolation):
        us.store_proceeds(2**63)
    with pytest.raises(InvariantViolation):
        us.diamonds_for(2**62)  # the diamonds would not fit in int64
