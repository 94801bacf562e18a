"""Gift streaks from external sources (SPEC.md §3), a deterministic state machine.

A streakable gift (type 1) arrives as several messages that share ``(user, gift_id, group_id)``,
each with the **cumulative** ``repeat_count``, and ends with one ``repeat_end`` message that
repeats the final count. Each message adds ``(repeat_count − the last count seen for that
streak) × coin_value``: progress is live and nothing is counted twice. "The last count seen" is
the highest: in receive order a streak's messages can arrive out of order (13, 15, 14, 17 in
the recordings), and a late, lower count adds nothing rather than taking coins back. A streak
whose end message never comes closes ``streak_timeout_ms`` after its last message. Other gifts
(type ≠ 1) are single messages that count once. A message seen before (same message id) is ignored.

The clock is the time each message was received (``recv_ts_ms``), never the source's own,
which is not monotonic; :meth:`StreakTracker.advance` moves it without a message. With the
same messages and clock, the tracker always emits the same events. What it emits per streak:
updates (each with what it added) and exactly one end, so that an alert shows once per streak.

The semantics were checked against the recorded TikTok LIVE messages in
``shared/data/tiktok-live`` (see ``tests/live/test_streaks.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

from giftflow.invariants import invariant

STREAKABLE_TYPE: Final = 1
STREAK_TIMEOUT_MS: Final = 5_000
OPEN_STREAKS_MAX: Final = 100_000
"""Streaks one tracker keeps open; past that, the oldest is closed (as if it timed out)."""
SEEN_MESSAGES_MAX: Final = 100_000
"""Message ids remembered for de-duplication."""
CLOSED_STREAKS_MAX: Final = 100_000
"""Closed streaks remembered, so that a late message of one adds only what it adds."""

K = TypeVar("K")
V = TypeVar("V")
StreakKey = tuple[str, int, int | str]
"""``(user, gift_id, group)``: an external source's ``group_id``, or a native ``streak_id``."""


@dataclass(frozen=True, slots=True)
class ExternalGift:
    """One gift message of an external source, as normalized (``shared/data/tiktok-live``)."""

    msg_id: int
    user: str
    gift_id: int
    gift_type: int
    coin_value: int
    group_id: int
    repeat_count: int
    repeat_end: bool
    recv_ts_ms: int


@dataclass(frozen=True, slots=True)
class NativeGift:
    """A gift sent through giftflow's own API, as its stream's log holds it."""

    gift: int
    """The gift's id in the ledger (one id a request)."""
    sender: str
    gift_id: int
    count: int
    coins: int
    streak_id: str
    """The client's streak (empty: the gift stands alone)."""
    recv_ts_ms: int
    """When the room received it (the gift's commit time)."""


@dataclass(frozen=True, slots=True)
class StreakUpdate:
    """A streak grew: ``count`` gifts so far, ``added`` of them (``added_coins``) just now."""

    key: StreakKey
    count: int
    added: int
    added_coins: int
    at_ms: int


@dataclass(frozen=True, slots=True)
class StreakEnd:
    """A streak is over: ``count`` gifts worth ``coins`` in all."""

    key: StreakKey
    count: int
    coins: int
    at_ms: int
    reason: Literal["end_message", "timeout", "single", "evicted"]


StreakEvent = StreakUpdate | StreakEnd


@dataclass(slots=True)
class _Streak:
    count: int
    coins: int
    coin_value: int
    last_ms: int


class StreakTracker:
    """The gift streaks of one room."""

    def __init__(self, streak_timeout_ms: int = STREAK_TIMEOUT_MS) -> None:
        invariant(streak_timeout_ms > 0, "a streak times out after a positive time")
        self.streak_timeout_ms = streak_timeout_ms
        self.now_ms = 0
        self._open: OrderedDict[StreakKey, _Streak] = OrderedDict()  # by last message
        self._closed: OrderedDict[StreakKey, int] = OrderedDict()  # final count
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._seen_native: OrderedDict[int, None] = OrderedDict()

    def receive(self, gift: ExternalGift) -> list[StreakEvent]:
        """The events one message causes (after closing the streaks it shows timed out)."""
        invariant(gift.repeat_count >= 1 and gift.coin_value >= 0,
                  "a gift message counts at least one gift of a non-negative value")
        events: list[StreakEvent] = list(self.advance(gift.recv_ts_ms))
        if gift.msg_id in self._seen:
            return events
        self._remember(self._seen, gift.msg_id, None, SEEN_MESSAGES_MAX)
        at_ms = self.now_ms
        key = (gift.user, gift.gift_id, gift.group_id)
        if gift.gift_type != STREAKABLE_TYPE:
            coins = gift.repeat_count * gift.coin_value
            events.append(StreakUpdate(key, gift.repeat_count, gift.repeat_count, coins, at_ms))
            events.append(StreakEnd(key, gift.repeat_count, coins, at_ms, "single"))
            return events
        streak = self._open.get(key)
        if streak is None:
            if key in self._closed:  # a late message of a closed streak adds only what it adds
                added = gift.repeat_count - self._closed[key]
                if added > 0:
                    self._closed[key] = gift.repeat_count
                    events.append(StreakUpdate(key, gift.repeat_count, added,
                                               added * gift.coin_value, at_ms))
                return events
            if len(self._open) >= OPEN_STREAKS_MAX:
                events.append(self._close(next(iter(self._open)), "evicted"))
            streak = self._open[key] = _Streak(0, 0, gift.coin_value, at_ms)
        added = gift.repeat_count - streak.count
        if added > 0:
            streak.count, streak.coins = gift.repeat_count, streak.coins + added * streak.coin_value
            events.append(StreakUpdate(key, streak.count, added, added * streak.coin_value,
                                       at_ms))
        streak.last_ms = at_ms
        self._open.move_to_end(key)
        if gift.repeat_end:
            events.append(self._close(key, "end_message"))
        return events

    def receive_native(self, gift: NativeGift) -> list[StreakEvent]:
        """The events a native gift causes.

        Gifts that share a ``streak_id`` (and sender and gift) form one streak, ended
        ``streak_timeout_ms`` after its last gift; a gift without one stands alone. Each
        request adds its own count (native counts are not cumulative), once: a gift id seen
        before is ignored. A streak id used again after its streak ended starts a new streak.
        """
        invariant(gift.count >= 1 and gift.coins >= 0, "a native gift counts at least one")
        events: list[StreakEvent] = list(self.advance(gift.recv_ts_ms))
        if gift.gift in self._seen_native:
            return events
        self._remember(self._seen_native, gift.gift, None, SEEN_MESSAGES_MAX)
        at_ms = self.now_ms
        key: StreakKey = (gift.sender, gift.gift_id, gift.streak_id)
        if not gift.streak_id:
            events.append(StreakUpdate(key, gift.count, gift.count, gift.coins, at_ms))
            events.append(StreakEnd(key, gift.count, gift.coins, at_ms, "single"))
            return events
        streak = self._open.get(key)
        if streak is None:
            if len(self._open) >= OPEN_STREAKS_MAX:
                events.append(self._close(next(iter(self._open)), "evicted"))
            streak = self._open[key] = _Streak(0, 0, 0, at_ms)
        streak.count += gift.count
        streak.coins += gift.coins
        streak.last_ms = at_ms
        self._open.move_to_end(key)
        events.append(StreakUpdate(key, streak.count, gift.count, gift.coins, at_ms))
        return events

    def advance(self, now_ms: int) -> list[StreakEnd]:
        """Move the clock (never back) and close the streaks quiet for ``streak_timeout_ms``."""
        self.now_ms = max(self.now_ms, now_ms)
        ended: list[StreakEnd] = []
        while self._open:
            key, oldest = next(iter(self._open.items()))
            if self.now_ms - oldest.last_ms < self.streak_timeout_ms:
                break
            ended.append(self._close(key, "timeout"))
        return ended

    def _close(self, key: StreakKey, reason: Literal["end_message", "timeout",
                                                     "evicted"]) -> StreakEnd:
        streak = self._open.pop(key)
        self._remember(self._closed, key, streak.count, CLOSED_STREAKS_MAX)
        at_ms = self.now_ms if reason != "timeout" else streak.last_ms + self.streak_timeout_ms
        return StreakEnd(key, streak.count, streak.coins, at_ms, reason)

    @staticmethod
    def _remember(memory: OrderedDict[K, V], key: K, value: V, size_max: int) -> None:
        memory[key] = value
        memory.move_to_end(key)
        if len(memory) > size_max:
            memory.popitem(last=False)
