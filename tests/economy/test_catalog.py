"""The gift catalog: the packaged capture, giftflow's artwork keys and per-region gifts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from giftflow.economy import CatalogFileError, gifts_for_region, load_catalog, parse_economy

SHARED_CATALOG = (Path(__file__).resolve().parents[2].parent
                  / "shared" / "data" / "tiktok-live" / "catalog.json")
"""The recorded catalog in the shared folder beside the repository (as CI lays it out)."""

REGION_WITH_DISABLED_GIFTS = (Path(__file__).parent / "minimal_region.toml").read_text(
    encoding="utf-8").replace("gift_count_max = 10000\n",
                              "gift_count_max = 10000\ndisabled_gifts = [5655, 7934]\n")
"""The shared minimal region, with two gifts disabled."""


def test_packaged_catalog_counts() -> None:
    """The packaged catalog has 161 gifts, 30 of them streakable (type 1)."""
    catalog = load_catalog()
    assert len(catalog) == 161
    assert sum(gift.streakable for gift in catalog) == 30


def test_packaged_catalog_matches_the_shared_capture() -> None:
    """Each packaged gift equals the shared catalog.json entry, in order, field by field."""
    assert SHARED_CATALOG.exists(), (
        f"{SHARED_CATALOG} is missing: shared/ must sit beside the repository, as CI lays it out")
    shared = json.loads(SHARED_CATALOG.read_text(encoding="utf-8"))
    gifts = load_catalog().gifts
    assert len(gifts) == len(shared)
    for gift, entry in zip(gifts, shared, strict=True):
        assert (gift.id, gift.name, gift.coin_value) == (entry["id"], entry["name"],
                                                         entry["coin_value"])
        assert gift.streakable == (entry["type"] == 1)


def test_artwork_keys_are_giftflow_keys() -> None:
    """Every artwork key is gift-<id>, never a URL or a TikTok address."""
    for gift in load_catalog():
        assert gift.artwork_key == f"gift-{gift.id}"
        assert "://" not in gift.artwork_key
        assert "tiktok" not in gift.artwork_key.lower()


def test_catalog_lookup_by_id() -> None:
    """The Rose (5655) costs 1 coin and streaks; an unknown id is absent."""
    catalog = load_catalog()
    rose = catalog.get(5655)
    assert rose is not None and (rose.name, rose.coin_value, rose.streakable) == ("Rose", 1, True)
    assert 424242 not in catalog
    assert catalog.get(424242) is None


def test_disabled_gifts_are_absent_for_the_region() -> None:
    """A region's disabled gifts are left out of gifts_for_region; the rest stay."""
    catalog = load_catalog()
    region = parse_economy(REGION_WITH_DISABLED_GIFTS, catalog=catalog).region("XX")
    offered = gifts_for_region(catalog, region)
    offered_ids = {gift.id for gift in offered}
    assert 5655 not in offered_ids
    assert 7934 not in offered_ids
    assert len(offered) == 159


def test_default_regions_offer_the_whole_catalog() -> None:
    """Without disabled gifts a region offers every gift of the catalog."""
    catalog = load_catalog()
    region = parse_economy(REGION_WITH_DISABLED_GIFTS.replace("[5655, 7934]", "[]")).region("XX")
    assert gifts_for_region(catalog, region) == catalog.gifts


def test_a_broken_catalog_is_refused(tmp_path: Path) -> None:
    """A repeated gift id or a float coin value makes load_catalog raise CatalogFileError."""
    repeated = tmp_path / "repeated.json"
    repeated.write_text(json.dumps([{"id": 1, "name": "A", "coin_value": 1, "type": 1},
                                    {"id": 1, "name": "B", "coin_value": 5, "type": 2}]))
    with pytest.raises(CatalogFileError, match=r"more than once: \[1\]"):
        load_catalog(repeated)
    floating = tmp_path / "floating.json"
    floating.write_text(json.dumps([{"id": 1, "name": "A", "coin_value": 1.5, "type": 1}]))
    with pytest.raises(CatalogFileError, match="coin_value"):
        load_catalog(floating)
