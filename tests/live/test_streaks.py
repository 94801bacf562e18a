"""Gift streaks from external sources, checked against the recorded TikTok LIVE messages.

``shared/data/tiktok-live/events.jsonl`` holds 94 real gift messages from 7 rooms: streaks cut at
either end by the recording window, jumps in ``repeat_count``, end messages that repeat the final
count, and one non-streakable gift. Each message also carries ``fan_ticket_count``, which TikTok
computed itself: the coins that message added. The tracker never sees that field; the tests use
it as an independent check.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tests.recordings import recorded_events

from giftflow.live.streaks import (
    ExternalGift,
    NativeGift,
    StreakEnd,
    StreakEvent,
    StreakTracker,
    StreakUpdate,
)

FAR_FUTURE_MS = 10**13


def recorded_gifts() -> list[dict[str, Any]]:
    """The recorded gift messages, in recording order (receive time)."""
    return [event for event in recorded_events() if event["type"] == "gift"]


def message(event: dict[str, Any]) -> ExternalGift:
    """A recorded gift as the tracker takes it."""
    return ExternalGift(event["msg_id"], event["user"], event["gift_id"], event["gift_type"],
                        event["coin_value"], event["group_id"], event["repeat_count"],
                        bool(event["repeat_end"]), event["recv_ts_ms"])


def replay(gifts: list[dict[str, Any]]) -> dict[str, list[tuple[int, list[StreakEvent]]]]:
    """Each room's gifts through its own tracker: (msg_id, events) per message, then the
    streaks still open, closed by a clock moved far ahead (msg_id 0).
    """
    trackers: dict[str, StreakTracker] = defaultdict(StreakTracker)
    out: dict[str, list[tuple[int, list[StreakEvent]]]] = defaultdict(list)
    for gift in gifts:
        out[gift["room"]].append((gift["msg_id"], trackers[gift["room"]].receive(message(gift))))
    for room, tracker in trackers.items():
        out[room].append((0, list(tracker.advance(FAR_FUTURE_MS))))
    return out


def test_each_streak_is_worth_its_final_count_and_ends_exactly_once() -> None:
    """Per room, the coins added by all updates equal, for each streak (user, gift, group),
    its highest recorded ``repeat_count`` × coin value (the data's own rule), and each streak
    ends exactly once: of the 38 streaks of streakable gifts, 19 end on their ``repeat_end``
    message and 19 time out; the one non-streakable gift is a single, ended at once.
    """
    gifts = recorded_gifts()
    assert len(gifts) == 94
    expected: dict[tuple[str, str, int, int], int] = {}
    for gift in gifts:
        key = (gift["room"], gift["user"], gift["gift_id"], gift["group_id"])
        expected[key] = max(expected.get(key, 0), gift["repeat_count"] * gift["coin_value"])
    ends: dict[tuple[str, str, int, int], list[StreakEnd]] = defaultdict(list)
    added: dict[tuple[str, str, int, int], int] = defaultdict(int)
    for room, steps in replay(gifts).items():
        for _, events in steps:
            for event in events:
                key = (room, *event.key)
                if isinstance(event, StreakUpdate):
                    added[key] += event.added_coins
                else:
                    ends[key].append(event)
    assert dict(added) == expected
    assert len(expected) == 38 + 1
    assert all(len(streak_ends) == 1 for streak_ends in ends.values())
    assert set(ends) == set(expected)
    reasons = [streak_ends[0].reason for streak_ends in ends.values()]
    assert (reasons.count("end_message"), reasons.count("single")) == (19, 1)
    assert reasons.count("timeout") == 19
    assert all(streak_ends[0].coins == expected[key] for key, streak_ends in ends.items())


def test_what_each_message_adds_matches_tiktoks_own_fan_ticket_count() -> None:
    """Each message adds (its ``repeat_count`` − the highest count seen before in its streak)
    × coin value, never less than 0: in receive order counts may arrive out of order (13, 15,
    14, 17, 16 in ``room-0302``), and one that arrives late adds nothing. Per streak seen from
    its count 1, the in-progress messages add, in all, exactly what TikTok's own
    ``fan_ticket_count`` says they added; an end message that repeats the highest count adds
    nothing, and its ``fan_ticket_count`` is 0 too.
    """
    gifts = recorded_gifts()
    by_id = {gift["msg_id"]: gift for gift in gifts}
    highest: dict[tuple[str, str, int, int], int] = {}
    ours: dict[tuple[str, str, int, int], int] = defaultdict(int)
    tiktoks: dict[tuple[str, str, int, int], int] = defaultdict(int)
    from_start: set[tuple[str, str, int, int]] = set()
    ends_checked = 0
    for room, steps in replay(gifts).items():
        for msg_id, events in steps:
            if msg_id == 0:
                continue
            gift = by_id[msg_id]
            key = (room, gift["user"], gift["gift_id"], gift["group_id"])
            coins = sum(e.added_coins for e in events
                        if isinstance(e, StreakUpdate) and (room, *e.key) == key)
            before = highest.get(key, 0)
            assert coins == max(0, gift["repeat_count"] - before) * gift["coin_value"], gift
            if gift["repeat_count"] == 1 and not gift["repeat_end"]:
                from_start.add(key)
            if gift["repeat_end"]:
                if before == gift["repeat_count"]:
                    assert coins == 0 == gift["fan_ticket_count"], gift
                    ends_checked += 1
            else:
                ours[key] += coins
                tiktoks[key] += gift["fan_ticket_count"]
            highest[key] = max(before, gift["repeat_count"])
    assert len(from_start) >= 15
    assert {key: ours[key] for key in from_start} == {key: tiktoks[key] for key in from_start}
    assert ends_checked >= 10


def test_duplicate_messages_change_nothing() -> None:
    """Every recorded message delivered twice in a row gives exactly the events of delivering
    each once (the second copy, same message id, is ignored).
    """
    gifts = recorded_gifts()
    doubled = [copy for gift in gifts for copy in (gift, gift)]
    once = replay(gifts)
    twice = replay(doubled)
    for room, steps in once.items():
        events_twice = [step for step in twice[room] if step[1] or step[0] == 0]
        assert [events for _, events in steps if events] == [
            events for _, events in events_twice if events]


def test_a_streak_without_its_end_times_out_five_seconds_after_its_last_message() -> None:
    """A streak whose end message never comes stays open 4,999 ms after its last message and
    closes at 5,000 ms with its count and coins; a late end message then adds only what it
    adds beyond the closed count, with no second end (one alert per streak).
    """
    tracker = StreakTracker()
    first = ExternalGift(1, "u", 5655, 1, 1, 77, 1, False, 1_000)
    jump = ExternalGift(2, "u", 5655, 1, 1, 77, 4, False, 1_500)
    assert [type(e).__name__ for e in tracker.receive(first)] == ["StreakUpdate"]
    [update] = tracker.receive(jump)
    assert (update.count, update.added, update.added_coins) == (4, 3, 3)
    assert tracker.advance(6_499) == []
    [end] = tracker.advance(6_500)
    assert (end.count, end.coins, end.at_ms, end.reason) == (4, 4, 6_500, "timeout")
    late = tracker.receive(ExternalGift(3, "u", 5655, 1, 1, 77, 6, True, 7_000))
    assert [(type(e).__name__, getattr(e, "added", None)) for e in late] == [("StreakUpdate", 2)]
    assert tracker.receive(ExternalGift(4, "u", 5655, 1, 1, 77, 6, True, 7_100)) == []


def test_native_gifts_sharing_a_streak_id_make_one_streak_that_times_out() -> None:
    """Three native Rose requests of one sender with streak id ``s`` (counts 2, 3 and 1) are
    one streak of 6 with one end, 5 s after the last; a request seen before (same gift id)
    is ignored; another streak id is another streak; a gift without one stands alone (an
    update and an end at once); the same streak id after its end starts a new streak.
    """
    tracker = StreakTracker()
    events: list[StreakEvent] = []
    for gift_id, count, streak, at_ms in [
            (1, 2, "s", 1_000), (2, 3, "s", 2_000), (2, 3, "s", 2_000),  # the same gift again
            (3, 1, "s", 3_000), (4, 4, "t", 3_500), (5, 1, "", 3_600)]:
        events += tracker.receive_native(NativeGift(gift_id, "fan", 5655, count, count,
                                                    streak, at_ms))
    ends = [e for e in events if isinstance(e, StreakEnd)]
    assert [(e.key[2], e.count, e.reason) for e in ends] == [("", 1, "single")]
    ends = tracker.advance(8_000)
    assert [(e.key[2], e.count, e.coins, e.at_ms) for e in ends] == [("s", 6, 6, 8_000)]
    assert [(e.key[2], e.count) for e in tracker.advance(8_500)] == [("t", 4)]
    [update] = tracker.receive_native(NativeGift(9, "fan", 5655, 2, 2, "s", 9_000))
    assert (update.count, update.added) == (2, 2)
