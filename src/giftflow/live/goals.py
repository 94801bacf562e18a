"""Stream goals and milestones (SPEC.md §3), part of the room engine.

A goal is a target in coins, in gifts of one kind, in likes or in follows, with a reward text.
Goals wait in a queue: the first is pinned, its progress counts from the moment it was pinned,
and crossing its target is a **milestone** (with its time); the next goal is then pinned at once,
and what went past the target counts toward it when it measures the same thing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from giftflow.invariants import invariant

Metric = Literal["coins", "gifts", "likes", "follows"]
GOALS_MAX: Final = 100
"""Goals one stream may have waiting."""
REWARD_CHARS_MAX: Final = 200

GoalEvent = tuple[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Goal:
    """A target: ``target`` coins, gifts (of ``gift_id``), likes or follows."""

    id: str
    metric: Metric
    target: int
    reward: str = ""
    gift_id: int | None = None

    def __post_init__(self) -> None:
        """Check the goal is one that can be reached."""
        invariant(self.target > 0, "a goal's target is positive")
        invariant((self.metric == "gifts") == (self.gift_id is not None),
                  "a gifts goal names its gift, and only a gifts goal does")
        invariant(len(self.reward) <= REWARD_CHARS_MAX,
                  f"a reward is at most {REWARD_CHARS_MAX} characters")


class Goals:
    """A stream's goal queue: the pinned goal first."""

    def __init__(self, goals: Sequence[Goal] = ()) -> None:
        invariant(len(goals) <= GOALS_MAX, f"at most {GOALS_MAX} goals wait")
        self._queue: deque[Goal] = deque(goals)
        self.progress = 0
        self.reached: list[tuple[str, int]] = []
        """The goals reached so far, with when."""

    @property
    def pinned(self) -> Goal | None:
        """The goal in progress, if any."""
        return self._queue[0] if self._queue else None

    def count(self, metric: Metric, amount: int, at_ms: int,
              gift_id: int | None = None) -> list[GoalEvent]:
        """Add ``amount`` of ``metric`` (of ``gift_id``, for gifts); the events it causes."""
        invariant(amount >= 0, "progress only grows")
        goal = self.pinned
        if goal is None or amount == 0 or goal.metric != metric or (
                metric == "gifts" and goal.gift_id != gift_id):
            return []
        self.progress += amount
        events: list[GoalEvent] = []
        while (goal := self.pinned) is not None and self.progress >= goal.target:
            events.append(("milestone", {"goal_id": goal.id, "metric": goal.metric,
                                         "target": goal.target, "reward": goal.reward,
                                         "at_ms": at_ms}))
            self.reached.append((goal.id, at_ms))
            self._queue.popleft()
            following = self.pinned
            carried = self.progress - goal.target
            self.progress = carried if following is not None and (
                following.metric, following.gift_id) == (goal.metric, goal.gift_id) else 0
        if self.pinned is not None:
            events.append(("goal_progress", self.state() | {"at_ms": at_ms}))
        return events

    def state(self) -> dict[str, Any]:
        """The pinned goal and its progress, for snapshots."""
        goal = self.pinned
        if goal is None:
            return {"goal_id": None}
        return {"goal_id": goal.id, "metric": goal.metric, "target": goal.target,
                "progress": self.progress, "reward": goal.reward, "gift_id": goal.gift_id}
