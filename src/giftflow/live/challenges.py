"""Timed challenges (SPEC.md §3), part of the room engine.

"N coins (or N of gift X) within T seconds": a challenge starts at a given time, counts what
comes before its end, and has exactly one result, a success at the moment its target is reached
or a failure at its end. While it runs, a ``challenge_tick`` marks each whole second that passes
(for overlays' countdowns). One challenge runs at a time in a room. Like the rest of the room
engine, it reads no clock: times come with the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from giftflow.invariants import invariant

DURATION_MS_MAX: Final = 3_600_000
"""The longest challenge: an hour."""
TICK_MS: Final = 1_000

ChallengeEvent = tuple[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Challenge:
    """``target`` coins, or gifts of ``gift_id``, within ``duration_ms``."""

    id: str
    metric: Literal["coins", "gifts"]
    target: int
    duration_ms: int
    reward: str = ""
    gift_id: int | None = None

    def __post_init__(self) -> None:
        """Check the challenge can be met."""
        invariant(self.target > 0, "a challenge's target is positive")
        invariant(0 < self.duration_ms <= DURATION_MS_MAX,
                  f"a challenge lasts 1 ms to {DURATION_MS_MAX} ms")
        invariant((self.metric == "gifts") == (self.gift_id is not None),
                  "a gifts challenge names its gift, and only a gifts challenge does")


class Challenges:
    """A room's challenge: at most one running."""

    def __init__(self) -> None:
        self.running: Challenge | None = None
        self.progress = 0
        self.ends_at_ms = 0
        self._ticked_ms = 0
        self.results: list[tuple[str, bool, int]] = []
        """Each challenge's id, whether it succeeded, and when."""

    def start(self, challenge: Challenge, now_ms: int) -> list[ChallengeEvent]:
        """Start ``challenge`` at ``now_ms``; nothing when one is running already."""
        if self.running is not None:
            return []
        self.running, self.progress = challenge, 0
        self.ends_at_ms, self._ticked_ms = now_ms + challenge.duration_ms, now_ms
        return [("challenge_started", self.state() | {"at_ms": now_ms})]

    def count(self, metric: str, amount: int, at_ms: int,
              gift_id: int | None = None) -> list[ChallengeEvent]:
        """Count what arrived at ``at_ms`` (before the end: call :meth:`advance` first)."""
        challenge = self.running
        if challenge is None or amount <= 0 or challenge.metric != metric or (
                metric == "gifts" and challenge.gift_id != gift_id):
            return []
        invariant(at_ms < self.ends_at_ms, "a challenge counts only before its end")
        self.progress += amount
        if self.progress < challenge.target:
            return []
        return self._result(succeeded=True, at_ms=at_ms)

    def advance(self, now_ms: int) -> list[ChallengeEvent]:
        """Ticks for the whole seconds up to ``now_ms``, and the failure if the end has come."""
        challenge = self.running
        if challenge is None:
            return []
        events: list[ChallengeEvent] = []
        until = min(now_ms, self.ends_at_ms - 1)
        while self._ticked_ms + TICK_MS <= until:
            self._ticked_ms += TICK_MS
            events.append(("challenge_tick", {"challenge_id": challenge.id,
                                              "progress": self.progress,
                                              "remaining_ms": self.ends_at_ms - self._ticked_ms,
                                              "at_ms": self._ticked_ms}))
        if now_ms >= self.ends_at_ms:
            events += self._result(succeeded=False, at_ms=self.ends_at_ms)
        return events

    def state(self) -> dict[str, Any]:
        """The running challenge, for snapshots."""
        challenge = self.running
        if challenge is None:
            return {"challenge_id": None}
        return {"challenge_id": challenge.id, "metric": challenge.metric,
                "target": challenge.target, "gift_id": challenge.gift_id,
                "reward": challenge.reward, "progress": self.progress,
                "ends_at_ms": self.ends_at_ms}

    def _result(self, *, succeeded: bool, at_ms: int) -> list[ChallengeEvent]:
        challenge = self.running
        invariant(challenge is not None, "a result ends a running challenge")
        self.results.append((challenge.id, succeeded, at_ms))  # type: ignore[union-attr]
        event = ("challenge_result", self.state() | {"succeeded": succeeded, "at_ms": at_ms})
        self.running = None
        return [event]
