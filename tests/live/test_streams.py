"""Streams: their lifecycle, and a gap-free event log written with the changes it reports."""

from __future__ import annotations

from datetime import date

from giftflow.adapters.sql.store import SqlStore
from giftflow.economy import load_catalog, load_economy
from giftflow.economy.service import EconomyOptions, EconomyService, GiftRequest
from giftflow.economy.twofactor import SeedCipher
from giftflow.ledger import Applied, Failure, Ledger
from giftflow.live import Streams

ROSE = 5655


def economy_with_streams(store: SqlStore) -> tuple[EconomyService, Streams]:
    """An economy whose room events go to the stream logs."""
    service = EconomyService(store, Ledger(store), load_economy(), load_catalog(),
                             cipher=SeedCipher(SeedCipher.generate_key()),
                             options=EconomyOptions(demo_mode=True))
    streams = Streams(store)
    service.event_sink = streams.events
    service.register_user("star", region="US", time_zone="UTC", birth_date=date(1990, 1, 1),
                          is_creator=True)
    service.register_user("fan", region="US", time_zone="UTC", birth_date=date(1990, 1, 1))
    order = service.create_order("fan", "web", "web-70", "simulator", "o1")
    assert isinstance(order, Applied)
    assert service.simulate_payment(order.response["order_id"]).ok
    return service, streams


def test_a_stream_goes_scheduled_live_ended_once(store: SqlStore) -> None:
    """A stream is created ``scheduled``, started, ended; starting twice or ending a stream
    that is not live is ``invalid_state``; events 1 and 2 report the changes.
    """
    _, streams = economy_with_streams(store)
    created = streams.create("s1", "star", "Friday build")
    assert not isinstance(created, Failure)
    assert created.status == "scheduled"
    assert isinstance(streams.end("s1"), Failure)
    started = streams.start("s1")
    assert not isinstance(started, Failure)
    assert started.status == "live"
    again = streams.start("s1")
    assert isinstance(again, Failure)
    assert again.code == "invalid_state"
    assert not isinstance(streams.end("s1"), Failure)
    events = [event for frame in streams.frames_after("s1", 0) for event in frame]
    assert [(e["seq"], e["type"]) for e in events] == [(1, "stream_started"),
                                                       (2, "stream_ended")]


def test_gifts_get_gap_free_seqs_in_their_stream_and_resume_after_any_seq(
        store: SqlStore) -> None:
    """Gift batches append one frame each to the stream's log with the next seqs (2..31 after
    ``stream_started``); reading after any seq returns exactly the later events, in order.
    """
    service, streams = economy_with_streams(store)
    streams.create("s1", "star", "Roses")
    streams.start("s1")
    for batch in range(3):
        results = service.send_gifts([GiftRequest("fan", "star", ROSE, 1, "s1",
                                                  f"g{batch}-{n}") for n in range(10)])
        assert all(result.ok for result in results)
    frames = streams.frames_after("s1", 0)
    assert [len(frame) for frame in frames] == [1, 10, 10, 10]
    seqs = [event["seq"] for frame in frames for event in frame]
    assert seqs == list(range(1, 32))
    for after in (0, 1, 5, 11, 30, 31):
        resumed = [event["seq"] for frame in streams.frames_after("s1", after)
                   for event in frame]
        assert resumed == list(range(after + 1, 32))
    gift = frames[1][0]
    assert (gift["type"], gift["data"]["sender"], gift["data"]["coins"]) == ("gift", "fan", 1)


def test_the_bus_carries_each_committed_frame_as_logged_and_nothing_refused(
        store: SqlStore) -> None:
    """A listener of the frame bus is told, after each commit, of every frame exactly as
    the log stores it (stream, first and last seq, text); a refused change (starting a live
    stream again) and a refused gift (more coins than the fan has) tell it nothing.
    """
    service, streams = economy_with_streams(store)
    heard: list[tuple[str, int, int, str]] = []
    streams.bus.subscribe(lambda *frame: heard.append(frame))
    streams.create("s1", "star", "Roses")
    streams.start("s1")
    assert isinstance(streams.start("s1"), Failure)
    assert all(r.ok for r in service.send_gifts([
        GiftRequest("fan", "star", ROSE, 1, "s1", f"g{n}") for n in range(3)]))
    assert not service.send_gifts([GiftRequest("fan", "star", ROSE, 1_000, "s1", "big")])[0].ok
    logged = streams.frame_texts_after("s1", 0)
    assert [(stream, first, last) for stream, first, last, _ in heard] == [
        ("s1", 1, 1), ("s1", 2, 4)]
    assert [(first, last, text) for _, first, last, text in heard] == logged
