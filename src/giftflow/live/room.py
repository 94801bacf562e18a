"""The room engine: one stream's live state, a deterministic state machine fed by events.

Inputs are external gift messages, presence (viewer-count snapshots and joins) and social
signals (likes, follows, shares), each with the time it was received; the engine never reads a
clock. For the same inputs in the same order it always reaches the same state and returns the
same events, ``(type, data)`` pairs of SPEC.md §4, for the stream's log.

This is the first part of the room engine of the Live rooms issue: gift streaks (through
:class:`~giftflow.live.streaks.StreakTracker`), presence and social signals, the stream's
leaderboard, and goals with milestones (:mod:`giftflow.live.goals`). The gift ladder, the
week's and season's boards, challenges, polls and moderation come next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from giftflow.invariants import invariant
from giftflow.live.challenges import Challenge, Challenges
from giftflow.live.goals import Goal, Goals
from giftflow.live.ladder import Ladder, Tier
from giftflow.live.polls import Poll, Polls
from giftflow.live.streaks import (
    STREAK_TIMEOUT_MS,
    ExternalGift,
    NativeGift,
    StreakEnd,
    StreakEvent,
    StreakTracker,
    StreakUpdate,
)

UNIQUE_VIEWERS_MAX: Final = 1_000_000
"""Distinct viewers one room remembers (past that, unique_viewers stops growing)."""
LEADERBOARD_SIZE: Final = 10
"""Gifters a stream's leaderboard shows."""

RoomEvent = tuple[str, dict[str, Any]]
"""An event for the stream's log: its type and data."""


@dataclass(frozen=True, slots=True)
class ViewerCount:
    """A snapshot of the concurrent viewers (external sources)."""

    total: int
    recv_ts_ms: int


@dataclass(frozen=True, slots=True)
class Presence:
    """A viewer joined (or, from native sources, left)."""

    user: str
    action: Literal["join", "leave"]
    recv_ts_ms: int


@dataclass(frozen=True, slots=True)
class Social:
    """Likes (``count`` of them), a follow or a share."""

    user: str
    kind: Literal["like", "follow", "share"]
    count: int
    recv_ts_ms: int


RoomInput = ExternalGift | NativeGift | ViewerCount | Presence | Social


class RoomEngine:
    """One stream's room."""

    def __init__(self, streak_timeout_ms: int = STREAK_TIMEOUT_MS,
                 goals: Sequence[Goal] = (), ladder: Sequence[Tier] = ()) -> None:
        self.streaks = StreakTracker(streak_timeout_ms)
        self.ladder = Ladder(tuple(ladder))
        self.goals = Goals(goals)
        self.challenges = Challenges()
        self.polls = Polls()
        self.viewers = 0
        self.peak_viewers = 0
        self.coins_total = 0
        self.gifts_total = 0
        self.likes_total = 0
        self.coins_by_gifter: dict[str, int] = {}
        self._reached: dict[str, int] = {}  # when (an update's number) a gifter reached it
        self._updates = 0
        self.leaderboard: list[tuple[str, int]] = []
        """The top gifters: most coins first, ties to whoever reached the amount first."""
        self._present: set[str] = set()
        self._unique: set[str] = set()

    def receive(self, item: RoomInput) -> list[RoomEvent]:
        """The events one input causes, after the streak timeouts its time shows."""
        events = self.advance(item.recv_ts_ms)
        if isinstance(item, ExternalGift):
            events += self._streak_events(self.streaks.receive(item))
        elif isinstance(item, NativeGift):
            events += self._streak_events(self.streaks.receive_native(item))
        elif isinstance(item, ViewerCount):
            invariant(item.total >= 0, "a viewer count is not negative")
            self.viewers = item.total
            self.peak_viewers = max(self.peak_viewers, item.total)
            events.append(("viewer_count", {"viewers": item.total, "at_ms": item.recv_ts_ms}))
        elif isinstance(item, Presence):
            events.append(self._presence(item))
        else:
            if item.kind == "like":
                self.likes_total += item.count
            events.append((item.kind, {"user": item.user, "count": item.count,
                                       "at_ms": item.recv_ts_ms}))
            if item.kind in ("like", "follow"):
                events += self.goals.count("likes" if item.kind == "like" else "follows",
                                           item.count, item.recv_ts_ms)
        return events

    def advance(self, now_ms: int) -> list[RoomEvent]:
        """Move the clock: streaks that time out end; a running challenge ticks or fails."""
        events = self._streak_events(self.streaks.advance(now_ms))
        return events + self.challenges.advance(now_ms) + self.polls.advance(now_ms)

    def start_poll(self, poll: Poll, now_ms: int) -> list[RoomEvent]:
        """Open a poll at ``now_ms`` (nothing if one is running)."""
        return self.advance(now_ms) + self.polls.start(poll, now_ms)

    def start_challenge(self, challenge: Challenge, now_ms: int) -> list[RoomEvent]:
        """Start a timed challenge at ``now_ms`` (nothing if one is running)."""
        return self.advance(now_ms) + self.challenges.start(challenge, now_ms)

    @property
    def unique_viewers(self) -> int:
        """Distinct viewers seen joining or gifting."""
        return len(self._unique)

    def state(self) -> dict[str, Any]:
        """What a new client's snapshot shows."""
        return {"viewers": self.viewers, "peak_viewers": self.peak_viewers,
                "unique_viewers": self.unique_viewers, "coins": self.coins_total,
                "gifts": self.gifts_total, "likes": self.likes_total,
                "leaderboard": self._board(), "goal": self.goals.state(),
                "challenge": self.challenges.state(), "poll": self.polls.state()}

    def _board(self) -> list[dict[str, Any]]:
        return [{"rank": rank, "user": user, "coins": coins}
                for rank, (user, coins) in enumerate(self.leaderboard, start=1)]

    def _presence(self, item: Presence) -> RoomEvent:
        if item.action == "join":
            self._present.add(item.user)
            self._see(item.user)
        else:
            self._present.discard(item.user)
        return item.action, {"user": item.user, "at_ms": item.recv_ts_ms}

    def _see(self, user: str) -> None:
        if len(self._unique) < UNIQUE_VIEWERS_MAX:
            self._unique.add(user)

    def _streak_events(self, streak_events: Sequence[StreakEvent]) -> list[RoomEvent]:
        """Room events for streak events: each, then the leaderboard if it changed."""
        events: list[RoomEvent] = []
        for event in streak_events:
            events.append(self._streak_event(event))
            if not isinstance(event, StreakUpdate):
                events += self.ladder.streak_ended(event.key[0], event.coins, event.at_ms)
                continue
            events += self.ladder.gifted(event.key[0], self.coins_by_gifter[event.key[0]],
                                         event.at_ms)
            if self._rank(event.key[0]):
                events.append(("leaderboard", {"top": self._board(), "at_ms": event.at_ms}))
            for counter in (self.goals, self.challenges):
                events += counter.count("coins", event.added_coins, event.at_ms)
                events += counter.count("gifts", event.added, event.at_ms, gift_id=event.key[1])
            events += self.polls.vote(event.key[1], event.added, event.added_coins, event.at_ms)
        return events

    def _rank(self, user: str) -> bool:
        """Place a gifter whose coins grew on the leaderboard; whether the board changed.

        Coins only grow here, so only the gifter who grew can enter or move.
        """
        coins = self.coins_by_gifter[user]
        board = [entry for entry in self.leaderboard if entry[0] != user]
        if len(board) >= LEADERBOARD_SIZE and coins <= board[-1][1]:
            return False  # below the last place (a tie with it came later, so it stays out)
        board.append((user, coins))
        board.sort(key=lambda entry: (-entry[1], self._reached[entry[0]]))
        board = board[:LEADERBOARD_SIZE]
        changed = board != self.leaderboard
        self.leaderboard = board
        return changed

    def _streak_event(self, event: StreakEvent) -> RoomEvent:
        user, gift_id, group_id = event.key
        if isinstance(event, StreakUpdate):
            self.coins_total += event.added_coins
            self.gifts_total += event.added
            self.coins_by_gifter[user] = self.coins_by_gifter.get(user, 0) + event.added_coins
            self._updates += 1
            self._reached[user] = self._updates
            self._see(user)
            return "streak_update", {"user": user, "gift_id": gift_id, "group_id": group_id,
                                     "count": event.count, "added": event.added,
                                     "added_coins": event.added_coins, "at_ms": event.at_ms}
        invariant(isinstance(event, StreakEnd), "a streak event is an update or an end")
        return "streak_end", {"user": user, "gift_id": gift_id, "group_id": group_id,
                              "count": event.count, "coins": event.coins,
                              "reason": event.reason, "at_ms": event.at_ms}
