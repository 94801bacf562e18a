"""The room engine: a deterministic state machine over a stream's inputs."""

from __future__ import annotations

from typing import Any

from tests.recordings import RECORDING

from giftflow.live.challenges import Challenge
from giftflow.live.goals import Goal
from giftflow.live.ladder import Tier
from giftflow.live.polls import Poll, PollOption
from giftflow.live.replay import read_recording
from giftflow.live.room import LEADERBOARD_SIZE, RoomEngine, RoomEvent, Social
from giftflow.live.streaks import ExternalGift, NativeGift

HEART = 7934
"""A non-streakable catalog gift (type 4), counted on arrival."""


def single(msg_id: int, user: str, coins: int, at_ms: int) -> ExternalGift:
    """A non-streakable gift worth ``coins``."""
    return ExternalGift(msg_id, user, HEART, 4, coins, 0, 1, False, at_ms)


def boards(events: list[RoomEvent]) -> list[list[tuple[str, int]]]:
    """The leaderboards among ``events``, as (user, coins) lists."""
    return [[(row["user"], row["coins"]) for row in data["top"]]
            for kind, data in events if kind == "leaderboard"]


def test_ties_go_to_whoever_reached_the_amount_first_and_only_changes_are_sent() -> None:
    """Alice reaches 5 coins before Bob, so she leads their tie; Bob then reaches 6 first and
    leads, and keeps the lead when Alice ties him at 6. A gift that changes no place sends no
    leaderboard event.
    """
    room = RoomEngine()
    sent: list[RoomEvent] = []
    for number, (user, coins) in enumerate(
            [("alice", 5), ("bob", 5), ("bob", 1), ("alice", 1)], start=1):
        sent += room.receive(single(number, user, coins, number * 1000))
    assert boards(sent) == [[("alice", 5)], [("alice", 5), ("bob", 5)],
                            [("bob", 6), ("alice", 5)], [("bob", 6), ("alice", 6)]]
    assert room.state()["leaderboard"][0] == {"rank": 1, "user": "bob", "coins": 6}
    quiet = room.receive(single(5, "alice", 0, 6000))
    assert boards(quiet) == []


def test_the_board_holds_ten_and_a_late_tie_with_the_last_place_stays_out() -> None:
    """Eleven gifters of 3 coins each: the first ten hold the board in the order they came,
    and the eleventh, tying the last place later, is not on it; with one more coin it enters
    at the top and the tenth drops off.
    """
    room = RoomEngine()
    for number in range(1, 12):
        room.receive(single(number, f"u{number:02}", 3, number))
    assert [user for user, _ in room.leaderboard] == [f"u{n:02}" for n in range(1, 11)]
    assert len(room.leaderboard) == LEADERBOARD_SIZE
    room.receive(single(12, "u11", 1, 12))
    assert room.leaderboard[0] == ("u11", 4)
    assert "u10" not in [user for user, _ in room.leaderboard]


def test_the_same_recorded_inputs_always_give_the_same_events_and_state() -> None:
    """Replaying a recorded room twice through fresh engines gives identical events and
    identical state: the engine reads no clock and draws no randomness.
    """
    with RECORDING.open(encoding="utf-8") as lines:
        inputs = read_recording(lines, ["room-0305"]).rooms["room-0305"]

    def run() -> tuple[list[RoomEvent], dict[str, Any]]:
        room = RoomEngine()
        events = [event for item in inputs for event in room.receive(item)]
        events += room.advance(inputs[-1].recv_ts_ms + 60_000)
        return events, room.state()

    first, second = run(), run()
    assert first == second
    assert first[1]["coins"] > 0 and first[1]["leaderboard"]


def test_goals_reach_milestones_at_their_time_and_advance_carrying_the_excess() -> None:
    """A 10-coin goal then a 20-coin goal: a 12-coin gift at t=5 s reaches the first (a
    milestone at 5,000 ms with its reward) and carries 2 coins to the second; 18 more reach
    it at t=9 s; with no goal left, nothing more is counted. Likes count only toward a likes
    goal, and a gifts goal counts only its own gift.
    """
    room = RoomEngine(goals=[Goal("g1", "coins", 10, "shout-out"),
                             Goal("g2", "coins", 20, "dance"),
                             Goal("g3", "gifts", 3, "song", gift_id=HEART)])
    events = room.receive(single(1, "fan", 12, 5_000))
    milestones = [data for kind, data in events if kind == "milestone"]
    assert [(m["goal_id"], m["reward"], m["at_ms"]) for m in milestones] == [
        ("g1", "shout-out", 5_000)]
    assert room.state()["goal"]["goal_id"] == "g2"
    assert room.state()["goal"]["progress"] == 2
    room.receive(Social("fan", "like", 50, 6_000))
    assert room.state()["goal"]["progress"] == 2
    events = room.receive(single(2, "fan", 18, 9_000))
    assert [(d["goal_id"], d["at_ms"]) for k, d in events if k == "milestone"] == [
        ("g2", 9_000)]
    assert room.state()["goal"] == {"goal_id": "g3", "metric": "gifts", "target": 3,
                                    "progress": 1, "reward": "song", "gift_id": HEART}
    room.receive(ExternalGift(3, "fan", 5655, 1, 1, 9, 5, True, 10_000))  # Roses: not its gift
    assert room.state()["goal"]["progress"] == 1
    room.receive(single(4, "fan", 1, 11_000))
    events = room.receive(single(5, "fan", 1, 12_000))
    assert [d["goal_id"] for k, d in events if k == "milestone"] == ["g3"]
    assert room.state()["goal"] == {"goal_id": None}
    assert room.goals.reached == [("g1", 5_000), ("g2", 9_000), ("g3", 12_000)]


def test_a_coins_goal_on_a_recorded_room_is_reached_when_its_coins_cross_the_target() -> None:
    """On ``room-0302`` (53 coins in all), a 25-coin goal's milestone comes at the receive
    time of the first streak update that takes the room's coins to 25 or more.
    """
    with RECORDING.open(encoding="utf-8") as lines:
        inputs = read_recording(lines, ["room-0302"]).rooms["room-0302"]
    room = RoomEngine(goals=[Goal("g", "coins", 25)])
    events = [event for item in inputs for event in room.receive(item)]
    total, crossed_at = 0, None
    for kind, data in events:
        if kind == "streak_update":
            total += data["added_coins"]
            if total >= 25 and crossed_at is None:
                crossed_at = data["at_ms"]
    assert [d["at_ms"] for k, d in events if k == "milestone"] == [crossed_at]


def test_native_gifts_count_like_external_ones() -> None:
    """A native gift (from giftflow's own API) moves the room's coins, the leaderboard and the
    pinned goal exactly as an external one does.
    """
    room = RoomEngine(goals=[Goal("g", "coins", 5, "wave")])
    events = room.receive(NativeGift(1, "fan", 5655, 5, 5, "s1", 1_000))
    assert [kind for kind, _ in events] == ["streak_update", "leaderboard", "milestone"]
    assert room.state()["coins"] == 5
    assert room.leaderboard == [("fan", 5)]


def test_a_timed_challenge_succeeds_when_its_target_is_reached_in_time() -> None:
    """A "10 coins within 5 s" challenge started at t=1 s: gifts of 4 coins at 2.5 s and 6
    coins at 4 s reach it, so the result is a success at 4,000 ms, after ticks at 2, 3 and
    4 s; nothing more is counted, and a second challenge can start.
    """
    room = RoomEngine()
    started = room.start_challenge(Challenge("c1", "coins", 10, 5_000, "song"), 1_000)
    assert [kind for kind, _ in started] == ["challenge_started"]
    assert started[0][1]["ends_at_ms"] == 6_000
    events = room.receive(single(1, "fan", 4, 2_500))
    events += room.receive(single(2, "fan", 6, 4_000))
    ticks = [data["at_ms"] for kind, data in events if kind == "challenge_tick"]
    assert ticks == [2_000, 3_000, 4_000]
    [result] = [data for kind, data in events if kind == "challenge_result"]
    assert (result["succeeded"], result["at_ms"], result["progress"]) == (True, 4_000, 10)
    assert room.challenges.results == [("c1", True, 4_000)]
    assert room.state()["challenge"] == {"challenge_id": None}
    assert room.start_challenge(Challenge("c2", "coins", 1, 1_000), 7_000)


def test_a_timed_challenge_fails_at_its_end_and_late_gifts_do_not_count() -> None:
    """A "3 Hearts within 2 s" challenge started at t=0: one Heart at 1 s, then the next
    input at 2.5 s first ends the challenge, a failure at exactly 2,000 ms with progress 1,
    and that Heart does not count; only one challenge runs at a time.
    """
    room = RoomEngine()
    room.start_challenge(Challenge("c", "gifts", 3, 2_000, gift_id=HEART), 0)
    assert room.start_challenge(Challenge("other", "coins", 1, 1_000), 10) == []
    room.receive(single(1, "fan", 1, 1_000))
    events = room.receive(single(2, "fan", 1, 2_500))
    [result] = [data for kind, data in events if kind == "challenge_result"]
    assert (result["succeeded"], result["at_ms"], result["progress"]) == (False, 2_000, 1)
    kinds = [kind for kind, _ in events]
    assert kinds.index("challenge_result") < kinds.index("streak_update")


def test_a_poll_counts_gift_votes_and_a_tie_goes_to_who_reached_it_first() -> None:
    """A 10 s poll voted with Roses (A) and Hearts (B), one vote a gift: B gets 2 Hearts at
    2 s, A a 2-Rose streak by 3 s; at the end (t=10 s, as the next input arrives) they tie at
    2 and B, which reached 2 first, wins; the gift after the end votes for nothing.
    """
    room = RoomEngine()
    poll = Poll("p", "Next song?", (PollOption("A", "rock", 5655), PollOption("B", "pop", HEART)),
                10_000)
    assert [kind for kind, _ in room.start_poll(poll, 0)] == ["poll_started"]
    room.receive(single(1, "fan", 1, 1_000))
    room.receive(single(2, "fan", 1, 2_000))
    room.receive(ExternalGift(3, "fan", 5655, 1, 1, 4, 1, False, 2_500))
    updates = room.receive(ExternalGift(4, "fan", 5655, 1, 1, 4, 2, True, 3_000))
    assert [o["votes"] for o in room.state()["poll"]["options"]] == [2, 2]
    assert [kind for kind, _ in updates].count("poll_update") == 1
    ended = room.receive(single(5, "fan", 1, 10_000))
    [result] = [data for kind, data in ended if kind == "poll_result"]
    assert (result["winner"], result["at_ms"]) == ("B", 10_000)
    assert [o["votes"] for o in result["options"]] == [2, 2]
    assert room.polls.results == [("p", "B", 10_000)]


def test_a_coins_poll_weighs_votes_by_coins_and_a_poll_without_votes_has_no_winner() -> None:
    """In a coins poll a 5-coin gift for A outweighs three 1-coin gifts for B; a poll nobody
    votes in ends without a winner.
    """
    room = RoomEngine()
    options = (PollOption("A", "a", 5655), PollOption("B", "b", HEART))
    room.start_poll(Poll("p", "?", options, 5_000, weight="coins"), 0)
    room.receive(ExternalGift(1, "fan", 5655, 4, 5, 0, 1, False, 100))
    for number in range(3):
        room.receive(single(10 + number, "fan", 1, 200 + number))
    assert room.advance(5_000)[-1][1]["winner"] == "A"
    room.start_poll(Poll("q", "?", options, 1_000), 6_000)
    assert room.advance(7_000)[-1][1]["winner"] is None


def test_the_ladder_rewards_each_tier_once_a_viewer_cumulative_or_in_one_gift() -> None:
    """Tiers "10 coins from a viewer: shout-out" and "20 coins in one gift: video": gifts of
    6 and 6 coins earn the shout-out at the second (12 ≥ 10), once, however much more comes;
    a 25-coin Rose streak earns the video when it ends (not while it grows), and a second
    25-coin streak earns nothing more.
    """
    room = RoomEngine(ladder=[Tier("t1", 10, "shout-out"),
                              Tier("t2", 20, "video", kind="single")])
    events = room.receive(single(1, "fan", 6, 1_000)) + room.receive(single(2, "fan", 6, 2_000))
    events += room.receive(single(3, "fan", 6, 3_000))
    rewards = [(d["user"], d["tier_id"], d["at_ms"]) for k, d in events if k == "ladder_reward"]
    assert rewards == [("fan", "t1", 2_000)]
    growing = room.receive(ExternalGift(4, "fan", 5655, 1, 1, 8, 25, False, 4_000))
    assert "ladder_reward" not in [kind for kind, _ in growing]
    ended = room.receive(ExternalGift(5, "fan", 5655, 1, 1, 8, 25, True, 5_000))
    assert [(d["tier_id"], d["at_ms"]) for k, d in ended if k == "ladder_reward"] == [
        ("t2", 5_000)]
    room.receive(ExternalGift(6, "fan", 5655, 1, 1, 9, 25, True, 6_000))
    assert room.ladder.earned == [("fan", "t1", 2_000), ("fan", "t2", 5_000)]
