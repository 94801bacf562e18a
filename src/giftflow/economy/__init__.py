"""The economy: coin packs and prices per region and channel, fees, tax, diamonds and payouts.

The rates are data in an economy file (TOML); :func:`load_economy` reads and checks it, and the
gift catalog comes from :func:`load_catalog`. :func:`classify_chat` flags scam red flags in chat
(SPEC.md §2.4). Import from here; the modules behind it are private to the economy.
"""

from giftflow.economy.catalog import (
    CatalogFileError,
    Gift,
    GiftCatalog,
    artwork_key,
    gifts_for_region,
    load_catalog,
)
from giftflow.economy.config import (
    BPS_DENOMINATOR,
    CHANNELS,
    DIAMOND_SCALE,
    CardFeeSplit,
    CashOut,
    Channel,
    Economy,
    EconomyFileError,
    Limits,
    Pack,
    Packs,
    Problem,
    Rational,
    RefundPolicy,
    Region,
    StoreSplit,
    TaxSplit,
    load_economy,
    parse_economy,
)
from giftflow.economy.scam import (
    CHAT_TEXT_CHARS_MAX,
    REASON_CODES,
    SCAM_RULES,
    ReasonCode,
    ScamMatch,
    ScamRule,
    ScamVerdict,
    classify_chat,
    normalize_chat,
)

__all__ = [
    "BPS_DENOMINATOR",
    "CHANNELS",
    "CHAT_TEXT_CHARS_MAX",
    "DIAMOND_SCALE",
    "REASON_CODES",
    "SCAM_RULES",
    "CardFeeSplit",
    "CashOut",
    "CatalogFileError",
    "Channel",
    "Economy",
    "EconomyFileError",
    "Gift",
    "GiftCatalog",
    "Limits",
    "Pack",
    "Packs",
    "Problem",
    "Rational",
    "ReasonCode",
    "RefundPolicy",
    "Region",
    "ScamMatch",
    "ScamRule",
    "ScamVerdict",
    "StoreSplit",
    "TaxSplit",
    "artwork_key",
    "classify_chat",
    "gifts_for_region",
    "load_catalog",
    "load_economy",
    "normalize_chat",
    "parse_economy",
]
