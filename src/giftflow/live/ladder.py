"""The gift ladder (SPEC.md §3), part of the room engine.

A ladder's tiers promise rewards (a shout-out, an on-stream reaction, a custom mini-video, a DM)
for coins: either in one gift (``single``: one streak worth that much, counted when it ends), or
cumulatively from one viewer in the stream (``cumulative``). Each tier rewards a viewer at most
once a stream, and every reward earned is a ``ladder_reward`` event: the promise that the
fulfilment queue (owed → delivered or waived) will keep across streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from giftflow.invariants import invariant

TIERS_MAX: Final = 20
REWARD_CHARS_MAX: Final = 200

LadderEvent = tuple[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Tier:
    """``coins`` in one gift (``single``) or from one viewer (``cumulative``) earn ``reward``."""

    id: str
    coins: int
    reward: str
    kind: Literal["single", "cumulative"] = "cumulative"

    def __post_init__(self) -> None:
        """Check the tier can be earned."""
        invariant(self.coins > 0, "a tier costs coins")
        invariant(0 < len(self.reward) <= REWARD_CHARS_MAX,
                  f"a reward is 1 to {REWARD_CHARS_MAX} characters")


class Ladder:
    """A stream's ladder and the rewards its viewers earned."""

    def __init__(self, tiers: tuple[Tier, ...] = ()) -> None:
        invariant(len(tiers) <= TIERS_MAX, f"at most {TIERS_MAX} tiers")
        invariant(len({tier.id for tier in tiers}) == len(tiers), "tier ids are unique")
        self.tiers = tiers
        self.earned: list[tuple[str, str, int]] = []
        """(viewer, tier id, when), in the order earned."""
        self._earned: set[tuple[str, str]] = set()

    def gifted(self, viewer: str, total_coins: int, at_ms: int) -> list[LadderEvent]:
        """A viewer's cumulative coins in the stream grew to ``total_coins``."""
        return self._earn(viewer, "cumulative", total_coins, at_ms)

    def streak_ended(self, viewer: str, coins: int, at_ms: int) -> list[LadderEvent]:
        """One gift (a whole streak) worth ``coins`` ended."""
        return self._earn(viewer, "single", coins, at_ms)

    def _earn(self, viewer: str, kind: str, coins: int, at_ms: int) -> list[LadderEvent]:
        events: list[LadderEvent] = []
        for tier in self.tiers:
            if tier.kind != kind or coins < tier.coins or (viewer, tier.id) in self._earned:
                continue
            self._earned.add((viewer, tier.id))
            self.earned.append((viewer, tier.id, at_ms))
            events.append(("ladder_reward", {"user": viewer, "tier_id": tier.id,
                                             "coins": tier.coins, "kind": tier.kind,
                                             "reward": tier.reward, "at_ms": at_ms}))
        return events
