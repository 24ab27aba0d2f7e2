"""sensor/export/event_feed.py and sensor/_event_wire.c: what a StreamEvents consumer gets, in
order, with its losses counted, and a waiting consumer woken by the next event; the records'
bytes, against protobuf's own."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sensor.export.event_feed as feed_mod
from sensor import _event_wire
from sensor._proto.agent_sensor.v1 import sensor_pb2 as pb
from sensor.alerts import wall_ns
from sensor.decode import wire_text
from sensor.export.event_feed import EventFeed

T0 = 5_000_123_456_789  # the kernel's stamp (CLOCK_MONOTONIC) of the first event


def publish(feed: EventFeed, n: int, agent: str = "crm", start: int = 0) -> None:
    for i in range(start, start + n):
        feed.publish(agent, f"{agent}/1.2", 100 + i, "open", f"/srv/f{i}", i % 2 == 1, T0 + i, repeats=i % 3)


def batch(consumer, most: int = 10) -> pb.EventBatch | None:
    """What the consumer's next StreamEventBatches message holds (None: nothing came)."""
    data = consumer.take(most, 0)
    return None if data is None else pb.EventBatch.FromString(data)


def test_nobody_listening_costs_nothing_and_keeps_nothing():
    feed = EventFeed()
    publish(feed, 3)
    assert not feed.listening
    consumer = feed.subscribe(set())
    assert feed.listening and batch(consumer) is None  # only what comes after subscribing


def test_records_in_order_in_batches_of_at_most_the_asked_size():
    feed = EventFeed()
    consumer = feed.subscribe(set())
    publish(feed, 3)
    first, second = batch(consumer, 2), batch(consumer, 2)
    assert [r.seq for r in first.records] == [1, 2] and [r.seq for r in second.records] == [3]
    r = second.records[0]
    assert (r.agent, r.instance_id, r.pid, r.type, r.what, r.kernel_acted, r.repeats, r.dropped) == (
        "crm", "crm/1.2", 102, "open", "/srv/f2", False, 2, 0)
    assert abs(r.time.ToNanoseconds() - wall_ns(T0 + 2)) < 50_000_000  # the kernel's stamp as wall time
    assert [(r.kernel_acted, r.repeats) for r in [*first.records, *second.records]] == [(False, 0), (True, 1), (False, 2)]
    assert batch(consumer, 2) is None


def test_a_stream_of_single_records_gets_each_record_alone():
    feed = EventFeed()
    consumer = feed.subscribe(set())
    publish(feed, 2)
    first = pb.EventRecord.FromString(_event_wire.cut(consumer._queue, 10, 10**6, True))  # one, whatever `most`
    second = pb.EventRecord.FromString(consumer.take(1, 0, bare=True))
    assert (first.seq, first.what, second.seq, second.what) == (1, "/srv/f0", 2, "/srv/f1")
    assert consumer.take(1, 0, bare=True) is None


def test_an_opens_result_is_in_its_record_when_the_open_has_one():
    feed = EventFeed()
    consumer = feed.subscribe(set())
    feed.publish("crm", "crm/1", 100, "open", "/srv/missing", False, T0, result=-2)
    feed.publish("crm", "crm/1", 100, "connect", "127.0.0.1:9", False, T0)
    opened, connected = batch(consumer).records
    assert opened.HasField("result") and opened.result == -2
    assert not connected.HasField("result")


def test_a_consumer_asking_for_some_agents_gets_only_theirs():
    feed = EventFeed()
    crm, everything = feed.subscribe({"crm"}), feed.subscribe(set())
    publish(feed, 2, agent="crm")
    publish(feed, 2, agent="mail", start=2)
    assert [r.agent for r in batch(crm).records] == ["crm", "crm"]
    assert [r.agent for r in batch(everything).records] == ["crm", "crm", "mail", "mail"]


def test_a_full_queue_loses_events_and_later_records_say_how_many(monkeypatch):
    feed = EventFeed()
    consumer = feed.subscribe(set())
    publish(feed, 1)
    one_record = len(consumer._queue)
    batch(consumer)
    # Room for a second record (a few bytes longer than the first at most), not for a third.
    monkeypatch.setattr(feed_mod, "QUEUE_BYTES", one_record + 8)
    publish(feed, 5, start=1)
    assert [(r.seq, r.dropped) for r in batch(consumer).records] == [(2, 0), (3, 0)]
    publish(feed, 1, start=6)
    assert [(r.seq, r.dropped) for r in batch(consumer).records] == [(7, 3)]


def test_unsubscribed_consumers_get_nothing_more():
    feed = EventFeed()
    consumer = feed.subscribe(set())
    feed.unsubscribe(consumer)
    publish(feed, 1)
    assert not feed.listening and batch(consumer) is None


def test_a_waiting_consumer_is_woken_by_the_next_event():
    feed = EventFeed()
    consumer = feed.subscribe(set())
    got = []
    thread = threading.Thread(target=lambda: got.append(consumer.take(10, 600)), daemon=True)
    thread.start()
    while not consumer._waiting:  # asleep in take, not about to find the event already there
        time.sleep(0.001)
    publish(feed, 1)
    thread.join(120)  # without the wakeup it would sleep out its 600 s
    assert not thread.is_alive() and [r.seq for r in pb.EventBatch.FromString(got[0]).records] == [1]


def test_a_batch_of_the_longest_names_stays_far_below_a_clients_4_mib():
    """Records of PATH_MAX names in a 4-byte UTF-8 character each: batches are cut by size."""
    feed = EventFeed()
    consumer = feed.subscribe(set())
    name = "/" + "\U0001F600" * 4095
    for i in range(400):  # 6.5 MB: within the consumer's queue
        feed.publish("crm", "crm/1.2", 100, "open", name, False, T0 + i)
    batches = []
    while (b := batch(consumer, 8192)) is not None:
        batches.append(b)
    assert sum(len(b.records) for b in batches) == 400 and len(batches) > 1
    assert max(b.ByteSize() for b in batches) <= feed_mod.BATCH_BYTES < 4 * 2**20


def test_a_name_that_is_not_utf8_is_sent_with_its_bytes_written():
    """A record's `what` is a protobuf string (UTF-8): the byte 0xff of a name is sent as \\xff,
    not refused (which would end the consumer's stream)."""
    feed = EventFeed()
    consumer = feed.subscribe(set())
    feed.publish("crm", "crm/1.2", 100, "open", "/srv/\udcffile", False, T0)
    feed.publish("crm", "crm/1.2", 100, "open", "/srv/caf\u00e9", False, T0)
    assert [r.what for r in batch(consumer).records] == ["/srv/\\xffile", "/srv/caf\u00e9"]


RECORDS = st.tuples(
    st.integers(0, 2**64 - 1), st.text(max_size=20), st.text(max_size=30), st.integers(0, 2**32 - 1),
    st.sampled_from(["open", "connect", "exec", ""]), st.text(max_size=80), st.booleans(),
    st.integers(0, 2**62), st.integers(0, 2**64 - 1), st.none() | st.integers(-2**31, 2**31 - 1),
    st.integers(0, 2**64 - 1))


@settings(max_examples=300, deadline=None)
@given(st.lists(RECORDS, min_size=1, max_size=5))
def test_records_are_the_bytes_protobuf_writes_for_them(records):
    """_event_wire.put writes each field as protobuf does (in field order, defaults left out, an
    int32's negative values, a string's bytes that are not UTF-8 as wire_text writes them): the
    queue is protobuf's serialization of the same EventBatch, byte for byte."""
    queue, expected = bytearray(), pb.EventBatch()
    for seq, agent, instance, pid, kind, what, acted, ktime, repeats, result, dropped in records:
        _event_wire.put(queue, seq, agent, instance, pid, kind, what, acted, ktime, repeats, result, dropped)
        record = expected.records.add(seq=seq, agent=wire_text(agent), instance_id=wire_text(instance), pid=pid,
                                      type=kind, what=wire_text(what), kernel_acted=acted, repeats=repeats,
                                      dropped=dropped, result=result)
        # The kernel's stamp made wall time with the clocks' offset of the moment put ran.
        written = pb.EventBatch.FromString(bytes(queue)).records[-1].time
        assert abs(written.ToNanoseconds() - wall_ns(ktime)) < 50_000_000
        record.time.CopyFrom(written)
    assert bytes(queue) == expected.SerializeToString()
    assert _event_wire.cut(queue, 100, feed_mod.BATCH_BYTES, False) == expected.SerializeToString() and not queue


def test_a_cut_takes_whole_records_up_to_the_count_and_the_size():
    queue = bytearray()
    for i in range(5):
        _event_wire.put(queue, i + 1, "crm", "crm/1", 100, "open", "/srv/" + "x" * 100, False, T0, 0, None, 0)
    size = len(queue) // 5
    assert [r.seq for r in pb.EventBatch.FromString(_event_wire.cut(queue, 2, 10**6, False)).records] == [1, 2]
    assert len(pb.EventBatch.FromString(_event_wire.cut(queue, 10, 2 * size - 1, False)).records) == 1
    assert len(pb.EventBatch.FromString(_event_wire.cut(queue, 10, 1, False)).records) == 1  # one at least
    assert [r.seq for r in pb.EventBatch.FromString(_event_wire.cut(queue, 10, 10**6, False)).records] == [5]
    assert _event_wire.cut(queue, 10, 10**6, False) == b"" and not queue
    queue += b"\x0a\x05ab"  # a record cut short: never sent as if whole
    with pytest.raises(ValueError, match="no whole record at byte 0"):
        _event_wire.cut(queue, 10, 10**6, False)
