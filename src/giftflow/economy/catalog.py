"""The gift catalog: which gifts exist, what one costs in coins, and whether it streaks.

The catalog is data (SPEC.md §2.2). The packaged default is a real capture of TikTok's catalog
(``data/catalog.json``, see ``data/CATALOG-LICENSE``); it carries no URLs, and each gift's
artwork is named by a giftflow-owned key, never by a TikTok address.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter
from pydantic import ValidationError as _PydanticValidationError

if TYPE_CHECKING:
    from giftflow.economy.config import Region

STREAKABLE_GIFT_TYPE: Final = 1
"""The capture's ``type`` of a gift that is sent in streaks ("x37"); other types are single."""

_PACKAGED_CATALOG: Final = "catalog.json"


class CatalogFileError(Exception):
    """The catalog file could not be read or breaks a rule; the message names each problem."""


@dataclass(frozen=True, slots=True)
class Gift:
    """One gift of the catalog; ``coin_value`` is the coin price of one gift."""

    id: int
    name: str
    coin_value: int
    streakable: bool
    artwork_key: str
    """giftflow's own artwork key (``gift-<id>``), resolved by the deployment's asset store."""


@dataclass(frozen=True, slots=True)
class GiftCatalog:
    """The gifts in catalog order (by coin value, then id), looked up by id."""

    gifts: tuple[Gift, ...]
    _by_id: dict[int, Gift] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {gift.id: gift for gift in self.gifts})

    def __len__(self) -> int:
        return len(self.gifts)

    def __iter__(self) -> Iterator[Gift]:
        return iter(self.gifts)

    def __contains__(self, gift_id: object) -> bool:
        return gift_id in self._by_id

    def get(self, gift_id: int) -> Gift | None:
        """The gift with this id, or ``None`` when the catalog has none."""
        return self._by_id.get(gift_id)


def artwork_key(gift_id: int) -> str:
    """The giftflow-owned artwork key of a gift: ``gift-<id>``."""
    return f"gift-{gift_id}"


class _CatalogEntry(BaseModel):
    """One entry of ``catalog.json`` as stored: ``{id, name, coin_value, type}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[StrictInt, Field(gt=0)]
    name: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    coin_value: Annotated[StrictInt, Field(gt=0)]
    type: Annotated[StrictInt, Field(ge=0)]


_ENTRIES: Final = TypeAdapter(list[_CatalogEntry])


def _read_text(path: Path | None) -> tuple[str, str]:
    if path is None:
        packaged = resources.files("giftflow.economy").joinpath("data", _PACKAGED_CATALOG)
        return packaged.read_text(encoding="utf-8"), f"packaged {_PACKAGED_CATALOG}"
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except OSError as error:
        raise CatalogFileError(f"catalog {path}: cannot be read: {error}") from error


def load_catalog(path: Path | None = None) -> GiftCatalog:
    """Read a catalog file (default: the packaged one) and check it.

    Raises:
        CatalogFileError: the file is unreadable, not JSON, or an entry is malformed or repeats
            an id; the message names every problem.
    """
    text, source = _read_text(path)
    try:
        entries = _ENTRIES.validate_python(json.loads(text))
    except json.JSONDecodeError as error:
        raise CatalogFileError(f"catalog {source}: not valid JSON: {error}") from error
    except _PydanticValidationError as error:
        problems = "; ".join(
            f"[{'.'.join(str(part) for part in detail['loc'])}] {detail['msg']}"
            for detail in error.errors()
        )
        raise CatalogFileError(f"catalog {source}: {problems}") from error
    seen: set[int] = set()
    duplicates: set[int] = set()
    for entry in entries:
        (duplicates if entry.id in seen else seen).add(entry.id)
    if duplicates:
        raise CatalogFileError(
            f"catalog {source}: gift ids appear more than once: {sorted(duplicates)}")
    return GiftCatalog(tuple(
        Gift(
            id=entry.id,
            name=entry.name,
            coin_value=entry.coin_value,
            streakable=entry.type == STREAKABLE_GIFT_TYPE,
            artwork_key=artwork_key(entry.id),
        )
        for entry in entries
    ))


def gifts_for_region(catalog: GiftCatalog, region: Region) -> tuple[Gift, ...]:
    """The catalog's gifts that ``region`` offers: all of them except its ``disabled_gifts``."""
    disabled = frozenset(region.disabled_gifts)
    return tuple(gift for gift in catalog if gift.id not in disabled)
