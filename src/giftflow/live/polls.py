"""Polls voted with gifts (SPEC.md §3), part of the room engine.

Each option is voted with one gift: in a ``gifts`` poll every such gift is one vote, in a
``coins`` poll its coins are the vote's weight. A poll runs for a set time, one at a time in a
room; every vote sends the live results (``poll_update``), and the end sends the result
(``poll_result``): the option with the most votes, a tie going to the option that reached that
total first. Like the rest of the room engine, it reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from giftflow.invariants import invariant

OPTIONS_MIN: Final = 2
OPTIONS_MAX: Final = 10
DURATION_MS_MAX: Final = 3_600_000
"""The longest poll: an hour."""

PollEvent = tuple[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PollOption:
    """An answer, voted with gifts of ``gift_id``."""

    id: str
    label: str
    gift_id: int


@dataclass(frozen=True, slots=True)
class Poll:
    """A question whose options are voted with gifts for ``duration_ms``."""

    id: str
    question: str
    options: tuple[PollOption, ...]
    duration_ms: int
    weight: Literal["gifts", "coins"] = "gifts"

    def __post_init__(self) -> None:
        """Check the poll can be voted."""
        invariant(OPTIONS_MIN <= len(self.options) <= OPTIONS_MAX,
                  f"a poll has {OPTIONS_MIN} to {OPTIONS_MAX} options")
        invariant(len({o.gift_id for o in self.options}) == len(self.options),
                  "each option is voted with its own gift")
        invariant(0 < self.duration_ms <= DURATION_MS_MAX,
                  f"a poll lasts 1 ms to {DURATION_MS_MAX} ms")


class Polls:
    """A room's poll: at most one running."""

    def __init__(self) -> None:
        self.running: Poll | None = None
        self.ends_at_ms = 0
        self.votes: dict[str, int] = {}
        self._reached: dict[str, int] = {}
        self._vote_number = 0
        self.results: list[tuple[str, str | None, int]] = []
        """Each poll's id, its winning option (``None`` without a vote), and when it ended."""

    def start(self, poll: Poll, now_ms: int) -> list[PollEvent]:
        """Open ``poll`` at ``now_ms``; nothing when one is running already."""
        if self.running is not None:
            return []
        self.running, self.ends_at_ms = poll, now_ms + poll.duration_ms
        self.votes = {option.id: 0 for option in poll.options}
        self._reached = {}
        return [("poll_started", self.state() | {"at_ms": now_ms})]

    def vote(self, gift_id: int, count: int, coins: int, at_ms: int) -> list[PollEvent]:
        """Count gifts of ``gift_id`` that arrived at ``at_ms`` (call :meth:`advance` first)."""
        poll = self.running
        option = next((o for o in poll.options if o.gift_id == gift_id), None) if poll else None
        weight = count if poll is not None and poll.weight == "gifts" else coins
        if poll is None or option is None or weight <= 0:
            return []
        invariant(at_ms < self.ends_at_ms, "a poll counts only before its end")
        self.votes[option.id] += weight
        self._vote_number += 1
        self._reached[option.id] = self._vote_number
        return [("poll_update", self.state() | {"at_ms": at_ms})]

    def advance(self, now_ms: int) -> list[PollEvent]:
        """The result, if the poll's end has come by ``now_ms``."""
        poll = self.running
        if poll is None or now_ms < self.ends_at_ms:
            return []
        voted = [option for option in poll.options if self.votes[option.id] > 0]
        winner = min(voted, key=lambda o: (-self.votes[o.id], self._reached[o.id]),
                     default=None)
        winner_id = winner.id if winner is not None else None
        self.results.append((poll.id, winner_id, self.ends_at_ms))
        event = ("poll_result", self.state() | {"winner": winner_id, "at_ms": self.ends_at_ms})
        self.running = None
        return [event]

    def state(self) -> dict[str, Any]:
        """The running poll and its votes, for snapshots."""
        poll = self.running
        if poll is None:
            return {"poll_id": None}
        return {"poll_id": poll.id, "question": poll.question, "weight": poll.weight,
                "options": [{"id": o.id, "label": o.label, "gift_id": o.gift_id,
                             "votes": self.votes[o.id]} for o in poll.options],
                "ends_at_ms": self.ends_at_ms}
