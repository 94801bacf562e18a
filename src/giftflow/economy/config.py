"""The economy file: packs, prices, shares, fees, tax, payout rules and limits, per region.

The economy is data (SPEC.md §2.1, STYLE.md "Configuration"), read from a TOML file into frozen,
typed objects. Every rate is an integer: ``*_bps`` in basis points (0..10000), amounts in the
minor unit of the region's currency (``*_minor``), and rationals as ``{minor, per_diamonds}``.
A float anywhere in the file is an error, because floats never touch money.

Each region states its amounts in its own currency, and the file has no exchange rates and no
amounts outside a region, so there is nothing that could be converted implicitly.

The arithmetic helpers on :class:`Region` use integer arithmetic with the rounding written out;
each returns every part of a split, so that callers book each remainder to a named account.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic import ValidationError as _PydanticValidationError

from giftflow.economy.catalog import GiftCatalog
from giftflow.invariants import fits_int64, invariant
from giftflow.ledger import DEFAULT_LEDGERS, LedgerSpec

BPS_DENOMINATOR: Final = 10_000
"""Basis points per whole: 10000 bps = 100 %. A unit, not a rate."""

DIAMOND_SCALE: Final = next(spec.scale for spec in DEFAULT_LEDGERS if spec.code == "DIAMOND")
"""Diamond minor units per diamond are ``10**DIAMOND_SCALE`` (the DIAMOND ledger's scale)."""

DIAMOND_UNIT: Final[int] = 10**DIAMOND_SCALE
"""Diamond minor units in one diamond."""

DEFAULT_ECONOMY_FILE: Final = "default_economy.toml"
"""The packaged economy file that :func:`load_economy` reads when given no path."""

CHANNELS: Final = ("web", "ios", "android")
"""Purchase channels; ``ios`` and ``android`` pay app-store commission, ``web`` a card fee."""

_FIAT_CODE: Final = re.compile(r"[A-Z]{3}")
_BARE_TOML_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")

Channel = Literal["web", "ios", "android"]
RefundPolicy = Literal["debt", "absorb"]
"""What is left of a reversal after recovery: the buyer owes coins, or chargeback loss takes it."""

Bps = Annotated[StrictInt, Field(ge=0, le=BPS_DENOMINATOR)]
MinorAmount = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
PositiveInt = Annotated[StrictInt, Field(gt=0, le=2**63 - 1)]
Count = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
Age = Annotated[StrictInt, Field(ge=0, le=150)]
RegionCode = Annotated[StrictStr, Field(pattern=r"^[A-Z][A-Z0-9_-]{1,15}$")]


class _Strict(BaseModel):
    """Every table of the file: unknown keys are errors, and loaded values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Rational(_Strict):
    """A cash value per diamonds: ``minor`` minor units of the currency per ``per_diamonds``."""

    minor: PositiveInt
    per_diamonds: PositiveInt


class Pack(_Strict):
    """A coin pack on one channel: ``coins`` for ``price_minor`` (tax included)."""

    id: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    coins: PositiveInt
    price_minor: PositiveInt


class Packs(_Strict):
    """The packs of each purchase channel, in the order the UI shows them."""

    web: tuple[Pack, ...] = ()
    ios: tuple[Pack, ...] = ()
    android: tuple[Pack, ...] = ()

    def for_channel(self, channel: Channel) -> tuple[Pack, ...]:
        """The packs sold on ``channel``."""
        packs: tuple[Pack, ...] = getattr(self, channel)
        return packs


class Limits(_Strict):
    """Default spending limits in coins for a region's users; absent means no default limit."""

    coins_purchased_daily_max: Count | None = None
    coins_purchased_monthly_max: Count | None = None
    coins_gifted_daily_max: Count | None = None
    coins_gifted_monthly_max: Count | None = None


@dataclass(frozen=True, slots=True)
class StoreSplit:
    """An app-store price split: ``proceeds_minor + commission_minor == price_minor``."""

    proceeds_minor: int
    commission_minor: int


@dataclass(frozen=True, slots=True)
class CardFeeSplit:
    """A web price split: ``net_minor + fee_minor == price_minor``."""

    fee_minor: int
    net_minor: int


@dataclass(frozen=True, slots=True)
class TaxSplit:
    """A tax-inclusive price split: ``net_minor + tax_minor == price_minor``."""

    tax_minor: int
    net_minor: int


@dataclass(frozen=True, slots=True)
class CashOut:
    """Diamonds converted at payout.

    ``converted_diamonds_minor + remainder_diamonds_minor`` equals the diamonds offered; the
    remainder stays in the creator's balance.
    """

    cash_minor: int
    converted_diamonds_minor: int
    remainder_diamonds_minor: int


def _check_amount(name: str, value: int) -> None:
    invariant(value >= 0 and fits_int64(value), f"{name} must be in 0..2^63-1, got {value}")


class Region(_Strict):
    """One region's economy, every amount in the minor unit of ``currency``."""

    currency: StrictStr
    creator_share_bps: Bps
    diamond_value: Rational
    hold_days: Count
    payout_min_minor: MinorAmount
    payout_daily_max_minor: MinorAmount
    payouts_allowed: StrictBool
    min_age_gift: Age
    min_age_payout: Age
    video_gifts_allowed: StrictBool
    tax_bps: Bps
    app_store_commission_bps: Bps
    card_fee_bps: Bps
    card_fee_fixed_minor: MinorAmount
    refund_policy: RefundPolicy
    gift_count_max: PositiveInt
    limits: Limits = Limits()
    disabled_gifts: tuple[PositiveInt, ...] = ()
    packs: Packs

    def diamonds_for(self, coins: int) -> int:
        """Diamond minor units a creator earns for ``coins`` gifted.

        ``floor(coins × creator_share_bps × 10^DIAMOND_SCALE / 10000)``: rounded down, the
        creator's side (SPEC.md §2.2). At scale 4 and any share in bps the division is exact.
        """
        _check_amount("coins", coins)
        diamonds: int = coins * self.creator_share_bps * DIAMOND_UNIT // BPS_DENOMINATOR
        _check_amount("diamonds", diamonds)
        return diamonds

    def store_proceeds(self, price_minor: int, reported_proceeds_minor: int | None = None,
                       ) -> StoreSplit:
        """An in-app price split into the platform's proceeds and the store's commission.

        ``proceeds = floor(price × (10000 − app_store_commission_bps) / 10000)``, rounded DOWN,
        and ``commission = price − proceeds`` (so the commission is rounded up). When the store
        reports its proceeds, those override the computed ones.
        """
        _check_amount("price_minor", price_minor)
        if reported_proceeds_minor is None:
            kept_bps = BPS_DENOMINATOR - self.app_store_commission_bps
            proceeds = price_minor * kept_bps // BPS_DENOMINATOR
        else:
            proceeds = reported_proceeds_minor
        invariant(0 <= proceeds <= price_minor, f"proceeds {proceeds} not in 0..{price_minor}")
        split = StoreSplit(proceeds_minor=proceeds, commission_minor=price_minor - proceeds)
        invariant(split.proceeds_minor + split.commission_minor == price_minor, "store split")
        return split

    def card_fee(self, price_minor: int) -> CardFeeSplit:
        """A web price split into the card processor's fee and the platform's net.

        ``net = price − card_fee_fixed_minor − ceil(price × card_fee_bps / 10000)``: the net is
        rounded DOWN (the fee's percentage part up), and ``fee = price − net``. The loader checks
        that every web pack's price exceeds its fee.
        """
        _check_amount("price_minor", price_minor)
        percentage_part = -(-price_minor * self.card_fee_bps // BPS_DENOMINATOR)
        fee = self.card_fee_fixed_minor + percentage_part
        split = CardFeeSplit(fee_minor=fee, net_minor=price_minor - fee)
        invariant(split.fee_minor + split.net_minor == price_minor, "card fee split")
        return split

    def tax_included(self, price_minor: int) -> TaxSplit:
        """The tax contained in a tax-inclusive price.

        ``tax = floor(price × tax_bps / (10000 + tax_bps))``, rounded DOWN, and
        ``net = price − tax`` (rounded up). With ``tax_bps == 0`` the tax is 0.
        """
        _check_amount("price_minor", price_minor)
        tax = price_minor * self.tax_bps // (BPS_DENOMINATOR + self.tax_bps)
        split = TaxSplit(tax_minor=tax, net_minor=price_minor - tax)
        invariant(0 <= split.tax_minor <= split.net_minor or price_minor == 0, "tax split")
        invariant(split.tax_minor + split.net_minor == price_minor, "tax split sums")
        return split

    def diamonds_to_cash(self, diamonds_minor: int) -> CashOut:
        """Diamonds (minor units) turned into cash at ``diamond_value``, at payout only.

        ``cash = floor(diamonds_minor × minor / (per_diamonds × 10^DIAMOND_SCALE))``, rounded
        DOWN. What the cash did not use stays in the creator's balance:
        ``remainder = floor((diamonds_minor × minor − cash × per_diamonds × 10^DIAMOND_SCALE)
        / minor)`` diamond minor units, rounded DOWN (a fraction of a diamond minor unit, possible
        only when ``minor > 1``, goes with the converted diamonds).
        """
        _check_amount("diamonds_minor", diamonds_minor)
        value = self.diamond_value
        diamonds_per_cash_unit = value.per_diamonds * DIAMOND_UNIT
        cash, leftover = divmod(diamonds_minor * value.minor, diamonds_per_cash_unit)
        remainder = leftover // value.minor
        out = CashOut(cash_minor=cash, converted_diamonds_minor=diamonds_minor - remainder,
                      remainder_diamonds_minor=remainder)
        invariant(out.converted_diamonds_minor + out.remainder_diamonds_minor == diamonds_minor,
                  "cash-out parts sum to the diamonds offered")
        invariant(out.converted_diamonds_minor * value.minor
                  >= out.cash_minor * diamonds_per_cash_unit, "cash never exceeds its value")
        return out

    def pack(self, channel: Channel, pack_id: str) -> Pack | None:
        """The pack with ``pack_id`` on ``channel``, or ``None``."""
        return next((p for p in self.packs.for_channel(channel) if p.id == pack_id), None)


class Economy(_Strict):
    """The whole economy file: its regions, by region code."""

    regions: Annotated[dict[RegionCode, Region], Field(min_length=1)]

    def region(self, code: str) -> Region:
        """The region with ``code``; a :class:`KeyError` names it when the file has none."""
        return self.regions[code]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the economy file, at a TOML key path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class EconomyFileError(Exception):
    """The economy file is unreadable or breaks a rule. ``problems`` lists every one found."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        listing = "\n".join(f"  {problem}" for problem in self.problems)
        count = len(self.problems)
        super().__init__(f"economy file {source}: {count} problem(s):\n{listing}")


def key_path(location: Iterable[str | int]) -> str:
    """A TOML key path such as ``regions.US.packs.ios[2].price_minor`` for a pydantic location."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            continue
        else:
            name = part if _BARE_TOML_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
            path += f".{name}" if path else name
    return path


def _message(detail: Mapping[str, Any]) -> str:
    given = detail.get("input")
    kind = detail["type"]
    if isinstance(given, float):
        return f"is the float {given!r}; floats are not allowed: rates and amounts are integers"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if isinstance(given, bool) and kind in {"int_type", "string_type"}:
        return f"is the boolean {str(given).lower()}; {detail['msg'].lower()}"
    if "[key]" in detail["loc"]:
        return f"key {given!r} is not a valid name: {detail['msg']}"
    return f"{detail['msg']} (got {given!r})"


def _currency_problems(at: str, region: Region, fiat: set[str]) -> list[Problem]:
    if not _FIAT_CODE.fullmatch(region.currency):
        return [Problem(f"{at}.currency",
                        f"{region.currency!r} is not a fiat code (3 capital letters)")]
    if region.currency not in fiat:
        known = ", ".join(sorted(fiat))
        return [Problem(f"{at}.currency", f"{region.currency!r} has no fiat ledger ({known})")]
    return []


def _pack_problems(at: str, region: Region) -> list[Problem]:
    problems: list[Problem] = []
    first_seen: dict[str, str] = {}
    for channel in CHANNELS:
        for index, pack in enumerate(region.packs.for_channel(channel)):
            pack_at = f"{at}.packs.{channel}[{index}]"
            if pack.id in first_seen:
                problems.append(Problem(f"{pack_at}.id", f"duplicate pack id {pack.id!r} "
                                        f"(first at {first_seen[pack.id]})"))
            else:
                first_seen[pack.id] = f"{pack_at}.id"
            if channel == "web" and region.card_fee(pack.price_minor).net_minor <= 0:
                problems.append(Problem(f"{pack_at}.price_minor", "does not exceed the card fee"))
    return problems


def _cross_checks(
    regions: Mapping[str, Region], ledgers: Sequence[LedgerSpec], catalog: GiftCatalog | None,
) -> list[Problem]:
    """The rules that span keys: currencies, payout bounds, unique pack ids, known gifts."""
    fiat = {spec.code for spec in ledgers if _FIAT_CODE.fullmatch(spec.code)}
    problems: list[Problem] = []
    for code, region in regions.items():
        at = key_path(("regions", code))
        problems += _currency_problems(at, region, fiat)
        if region.payout_min_minor > region.payout_daily_max_minor:
            problems.append(Problem(f"{at}.payout_min_minor",
                                    "exceeds payout_daily_max_minor, so no payout could be made"))
        problems += _pack_problems(at, region)
        if catalog is not None:
            problems += [Problem(f"{at}.disabled_gifts[{index}]",
                                 f"gift id {gift_id} is not in the catalog")
                         for index, gift_id in enumerate(region.disabled_gifts)
                         if gift_id not in catalog]
    return problems


def _valid_regions(raw: Mapping[str, Any]) -> dict[str, Region]:
    """The regions of a file that failed to validate which are valid on their own.

    Their cross-key rules are still checked, so that one load reports every problem it can.
    """
    regions = raw.get("regions")
    valid: dict[str, Region] = {}
    if isinstance(regions, dict):
        for code, table in regions.items():
            try:
                valid[code] = Region.model_validate(table)
            except _PydanticValidationError:
                continue
    return valid


def parse_economy(
    text: str,
    source: str = "<string>",
    *,
    ledgers: Sequence[LedgerSpec] = DEFAULT_LEDGERS,
    catalog: GiftCatalog | None = None,
) -> Economy:
    """Parse and check economy TOML.

    A region's currency must be a fiat ledger among ``ledgers``; with a ``catalog``, its
    disabled gifts must exist there.

    Raises:
        EconomyFileError: with every problem found, each at its TOML key path.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise EconomyFileError(source, [Problem("", f"not valid TOML: {error}")]) from error
    try:
        economy = Economy.model_validate(raw)
    except _PydanticValidationError as error:
        problems = [Problem(key_path(detail["loc"]), _message(detail))
                    for detail in error.errors()]
        problems += _cross_checks(_valid_regions(raw), ledgers, catalog)
        raise EconomyFileError(source, problems) from error
    problems = _cross_checks(economy.regions, ledgers, catalog)
    if problems:
        raise EconomyFileError(source, problems)
    return economy


def load_economy(
    path: Path | None = None,
    *,
    ledgers: Sequence[LedgerSpec] = DEFAULT_LEDGERS,
    catalog: GiftCatalog | None = None,
) -> Economy:
    """Read and check an economy file; without ``path``, the packaged default file.

    Raises:
        EconomyFileError: the file is unreadable or has problems; the message lists them all.
    """
    if path is None:
        packaged = resources.files("giftflow.economy").joinpath(DEFAULT_ECONOMY_FILE)
        text, source = packaged.read_text(encoding="utf-8"), f"packaged {DEFAULT_ECONOMY_FILE}"
    else:
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise EconomyFileError(source, [Problem("", f"cannot be read: {error}")]) from error
    return parse_economy(text, source, ledgers=ledgers, catalog=catalog)
