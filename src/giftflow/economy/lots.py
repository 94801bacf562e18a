"""Lots: first-in first-out spending, and the recovery order of a reversal (SPEC.md §2.1).

Pure functions over plain values. The economy loads the rows, calls these, and books what they
return; every function checks that the coins and diamonds it hands back add up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from giftflow.invariants import invariant


@dataclass(slots=True)
class LotView:
    """A lot as spending sees it: its id, its FIFO position and its unspent coins."""

    id: str
    seq: int
    remaining: int


def take_fifo(lots: list[LotView], coins: int, *, spend: bool = False
              ) -> list[tuple[str, int]] | None:
    """Which lots pay ``coins``, oldest first, as ``(lot id, coins)``; ``None`` if they can't.

    ``lots`` must be in FIFO order. With ``spend`` the views' ``remaining`` go down by what was
    taken (only when the lots can pay), and lots used up are dropped from the front of the list,
    so that the next spend does not walk over them; otherwise nothing is changed.
    """
    invariant(coins > 0, "a spend takes at least one coin")
    parts: list[tuple[LotView, int]] = []
    left = coins
    for lot in lots:
        if lot.remaining <= 0:
            continue
        part = min(lot.remaining, left)
        parts.append((lot, part))
        left -= part
        if left == 0:
            break
    if left:
        return None
    # ``left`` fell from ``coins`` by each part taken, so the parts sum to the coins spent.
    invariant(left == 0 and bool(parts), "FIFO parts sum to the coins spent")
    if spend:
        for lot, part in parts:
            lot.remaining -= part
        spent = 0
        while spent < len(lots) and lots[spent].remaining <= 0:
            spent += 1
        if spent:
            del lots[:spent]
    return [(lot.id, part) for lot, part in parts]


@dataclass(frozen=True, slots=True)
class SpentPiece:
    """Coins of a lot that paid for one gift, and what that gift earned."""

    gift_id: int
    creator_id: str
    coins: int
    """Coins of this lot in the gift, not reversed yet."""
    gift_coins: int
    gift_diamonds: int
    gift_diamonds_left: int
    """The gift's diamonds not reversed yet."""
    released: bool
    """Whether the gift's diamonds left the hold (then they cannot be recovered from held)."""


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a reversal takes back for one gift."""

    gift_id: int
    creator_id: str
    coins: int
    """Coins of the gift reversed."""
    coins_recovered: int
    """Of those, the coins whose diamonds came back from the creator's held balance."""
    diamonds: int
    """Diamonds taken back from the creator's held balance."""


@dataclass(frozen=True, slots=True)
class ReversalPlan:
    """The recovery of ``coins`` of one lot, in SPEC.md's order.

    1. ``unspent``: the lot's unspent coins, from the wallet;
    2. ``recoveries``: the diamonds the lot's spent coins earned, from creators' held balances;
    3. ``left``: the coins nothing recovered, which follow the refund policy.
    """

    coins: int
    unspent: int
    recoveries: tuple[Recovery, ...] = field(default=())
    left: int = 0


def plan_reversal(coins: int, lot_remaining: int, pieces: Sequence[SpentPiece],
                  held: Mapping[str, int]) -> ReversalPlan:
    """Plan the reversal of ``coins`` of a lot.

    ``pieces`` are the lot's spent coins, newest gift first (the latest spending is undone
    first); ``held`` is each creator's held balance now. For a piece of ``c`` coins whose gift
    earned ``d`` diamonds for ``g`` coins, the diamonds owed are ``floor(d × c / g)`` (the
    creator's side rounded down). What the held balance cannot give back leaves
    ``floor(c × unrecovered / owed)`` coins unrecovered (the buyer's side rounded down), and
    those coins join ``left``.
    """
    invariant(coins >= 0 and lot_remaining >= 0, "reversal amounts are not negative")
    unspent = min(coins, lot_remaining)
    rest = coins - unspent
    balances = dict(held)
    recoveries: list[Recovery] = []
    left = 0
    for piece in pieces:
        if rest == 0:
            break
        part = min(rest, piece.coins)
        if part <= 0:
            continue
        rest -= part
        owed = min(piece.gift_diamonds * part // piece.gift_coins, piece.gift_diamonds_left)
        got = 0 if piece.released else min(owed, balances.get(piece.creator_id, 0))
        balances[piece.creator_id] = balances.get(piece.creator_id, 0) - got
        unrecovered_coins = part if owed == 0 else part * (owed - got) // owed
        left += unrecovered_coins
        recoveries.append(Recovery(piece.gift_id, piece.creator_id, part,
                                   part - unrecovered_coins, got))
    # Coins of the lot that repaid an earlier debt were not gifted: nothing recovers them.
    left += rest
    plan = ReversalPlan(coins, unspent, tuple(recoveries), left)
    invariant(plan.unspent + sum(r.coins for r in plan.recoveries) + (left - sum(
        r.coins - r.coins_recovered for r in plan.recoveries)) == coins,
        "a reversal plan accounts for every coin")
    invariant(all(0 <= r.coins_recovered <= r.coins and r.diamonds >= 0 for r in recoveries),
              "recoveries are within their pieces")
    return plan
