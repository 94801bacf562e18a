"""The economy: coin packs and prices per region and channel, fees, tax, diamonds and payouts.

The rates are data in an economy file (TOML); :func:`load_economy` reads and checks it, and the
gift catalog comes from :func:`load_catalog`. Import from here; the modules behind it are private
to the economy.
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

__all__ = [
    "BPS_DENOMINATOR",
    "CHANNELS",
    "DIAMOND_SCALE",
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
    "RefundPolicy",
    "Region",
    "StoreSplit",
    "TaxSplit",
    "artwork_key",
    "gifts_for_region",
    "load_catalog",
    "load_economy",
    "parse_economy",
]
