"""Replaying a recording into streams, through the room engine, on both stores."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from typing import Any

import pytest
from test_streaks import recorded_gifts
from test_streams import economy_with_streams
from tests.recordings import RECORDING

from giftflow.adapters.sql.store import SqlStore
from giftflow.live.replay import RecordingError, ReplayedStream, read_recording, replay_room

ROOM = "room-0302"


def room_worth(room: str) -> int:
    """What a room's gifts are worth by the recording's own rule: per streak, its highest
    ``repeat_count`` × coin value.
    """
    streaks: dict[tuple[str, int, int], int] = defaultdict(int)
    for gift in recorded_gifts():
        if gift["room"] == room:
            key = (gift["user"], gift["gift_id"], gift["group_id"])
            streaks[key] = max(streaks[key], gift["repeat_count"] * gift["coin_value"])
    return sum(streaks.values())


def logged(store: SqlStore, stream_id: str) -> list[dict[str, Any]]:
    """Every event of a stream's log, in order."""
    rows = store.read("stream_frames", {"stream_id": stream_id}, order_by=("first_seq",))
    return [event for row in rows for event in json.loads(row["events"])]


def test_a_replayed_room_logs_its_streaks_presence_and_signals_and_ends(
        store: SqlStore) -> None:
    """Replaying ``room-0302`` instantly makes a ``replay`` stream that ends after its inputs:
    its log has gap-free seqs from ``stream_started`` to ``stream_ended``, one ``streak_end``
    per recorded streak, streak updates that add up to the room's worth by the recording's
    own rule (53 coins), the viewer counts and joins; the peak is the highest count recorded.
    """
    economy, streams = economy_with_streams(store)
    economy.register_user("host", region="US", time_zone="UTC", birth_date=None,
                          is_creator=True)
    with RECORDING.open(encoding="utf-8") as lines:
        recording = read_recording(lines, [ROOM])
    assert list(recording.rooms) == [ROOM]
    result = replay_room(streams, "r1", ROOM, "host", recording.rooms[ROOM])
    assert isinstance(result, ReplayedStream)
    stream = streams.get("r1")
    assert stream is not None
    assert (stream.source, stream.status) == ("replay", "ended")
    events = logged(store, "r1")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (events[0]["type"], events[-1]["type"]) == ("stream_started", "stream_ended")
    kinds = [e["type"] for e in events]
    gifts = [g for g in recorded_gifts() if g["room"] == ROOM]
    assert kinds.count("streak_end") == len({(g["user"], g["gift_id"], g["group_id"])
                                              for g in gifts})
    added = sum(e["data"]["added_coins"] for e in events if e["type"] == "streak_update")
    assert added == result.coins == room_worth(ROOM) == 53
    with RECORDING.open(encoding="utf-8") as lines:
        recorded = [json.loads(line) for line in lines]
    counts = [e["total"] for e in recorded if e["room"] == ROOM and e["type"] == "viewer_count"]
    assert kinds.count("viewer_count") == len(counts)
    assert result.peak_viewers == max(counts)
    assert kinds.count("join") == sum(
        1 for e in recorded if e["room"] == ROOM and e["type"] == "join")


def test_a_paced_replay_keeps_the_recorded_pauses_capped_and_logs_as_it_goes(
        store: SqlStore) -> None:
    """At speed 2, each pause is the recorded gap halved, never above 5 s, and events are
    logged input by input (one frame per input that made events).
    """
    economy, streams = economy_with_streams(store)
    economy.register_user("host", region="US", time_zone="UTC", birth_date=None,
                          is_creator=True)
    with RECORDING.open(encoding="utf-8") as lines:
        inputs = read_recording(lines, [ROOM]).rooms[ROOM]
    pauses: list[float] = []
    result = replay_room(streams, "r2", ROOM, "host", inputs, speed=2, sleep=pauses.append)
    assert isinstance(result, ReplayedStream)
    gaps = [b.recv_ts_ms - a.recv_ts_ms for a, b in itertools.pairwise(inputs)]
    assert pauses == [min(5.0, gap / 2000) for gap in gaps if gap > 0]
    frames = store.read("stream_frames", {"stream_id": "r2"})
    assert len(frames) >= len(inputs) // 2


def test_a_broken_recording_names_its_line() -> None:
    """A line that is not a recorded event is refused with its line number."""
    with pytest.raises(RecordingError, match="line 2"):
        read_recording(['{"room": null, "type": "other", "recv_ts_ms": 1}\n', "not json\n"])
