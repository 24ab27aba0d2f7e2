"""sensor/export/event_feed.py: what a StreamEvents consumer gets, in order, with its losses
counted, and a waiting consumer woken by the next event."""

from __future__ import annotations

import threading
import time

import sensor.export.event_feed as feed_mod
from sensor.alerts import wall_ns
from sensor.export.event_feed import EventFeed

T0 = 5_000_123_456_789  # the kernel's stamp (CLOCK_MONOTONIC) of the first event


def publish(feed: EventFeed, n: int, agent: str = "crm", start: int = 0) -> None:
    for i in range(start, start + n):
        feed.publish(agent, f"{agent}/1.2", 100 + i, "open", f"/srv/f{i}", i % 2 == 1, T0 + i, repeats=i % 3)


def test_nobody_listening_costs_nothing_and_keeps_nothing():
    feed = EventFeed()
    publish(feed, 3)
    assert not feed.listening
    consumer = feed.subscribe(set())
    assert feed.listening and consumer.take(10, 0) is None  # only what comes after subscribing


def test_records_in_order_in_batches_of_at_most_the_asked_size():
    feed = EventFeed()
    consumer = feed.subscribe(set())
    publish(feed, 3)
    first, second = consumer.take(2, 0), consumer.take(2, 0)
    assert [r.seq for r in first.records] == [1, 2] and [r.seq for r in second.records] == [3]
    r = second.records[0]
    assert (r.agent, r.instance_id, r.pid, r.type, r.what, r.kernel_acted, r.repeats, r.dropped) == (
        "crm", "crm/1.2", 102, "open", "/srv/f2", False, 2, 0)
    assert abs(r.time.ToNanoseconds() - wall_ns(T0 + 2)) < 50_000_000  # the kernel's stamp as wall time
    # Fields left at their default are not set: each record still says what was set.
    assert [(r.kernel_acted, r.repeats) for r in [*first.records, *second.records]] == [(False, 0), (True, 1), (False, 2)]
    assert consumer.take(2, 0) is None


def test_an_opens_result_is_in_its_record_when_the_open_has_one():
    feed = EventFeed()
    consumer = feed.subscribe(set())
    feed.publish("crm", "crm/1", 100, "open", "/srv/missing", False, T0, result=-2)
    feed.publish("crm", "crm/1", 100, "connect", "127.0.0.1:9", False, T0)
    opened, connected = consumer.take(10, 0).records
    assert opened.HasField("result") and opened.result == -2
    assert not connected.HasField("result")


def test_a_consumer_asking_for_some_agents_gets_only_theirs():
    feed = EventFeed()
    crm, everything = feed.subscribe({"crm"}), feed.subscribe(set())
    publish(feed, 2, agent="crm")
    publish(feed, 2, agent="mail", start=2)
    assert [r.agent for r in crm.take(10, 0).records] == ["crm", "crm"]
    assert [r.agent for r in everything.take(10, 0).records] == ["crm", "crm", "mail", "mail"]


def test_a_full_queue_loses_events_and_later_records_say_how_many(monkeypatch):
    monkeypatch.setattr(feed_mod, "CONSUMER_QUEUE", 2)
    feed = EventFeed()
    consumer = feed.subscribe(set())
    publish(feed, 5)
    assert [(r.seq, r.dropped) for r in consumer.take(10, 0).records] == [(1, 0), (2, 0)]
    publish(feed, 1, start=5)
    assert [(r.seq, r.dropped) for r in consumer.take(10, 0).records] == [(6, 3)]


def test_unsubscribed_consumers_get_nothing_more():
    feed = EventFeed()
    consumer = feed.subscribe(set())
    feed.unsubscribe(consumer)
    publish(feed, 1)
    assert not feed.listening and consumer.take(10, 0) is None


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
    assert not thread.is_alive() and [r.seq for r in got[0].records] == [1]


def test_a_batch_of_the_longest_names_stays_far_below_a_clients_4_mib():
    """Records of PATH_MAX names in a 4-byte UTF-8 character each: batches are cut by size."""
    feed = EventFeed()
    consumer = feed.subscribe(set())
    name = "/" + "\U0001F600" * 4095
    for i in range(600):
        feed.publish("crm", "crm/1.2", 100, "open", name, False, T0 + i)
    batches = []
    while (batch := consumer.take(8192, 0)) is not None:
        batches.append(batch)
    assert sum(len(b.records) for b in batches) == 600 and len(batches) > 1
    assert max(b.ByteSize() for b in batches) <= feed_mod.BATCH_BYTES + feed_mod.RECORD_BYTES + 4 * len(name)
    assert max(b.ByteSize() for b in batches) < 4 * 2**20


def test_a_name_that_is_not_utf8_is_sent_with_its_bytes_written():
    """A record's `what` is a protobuf string (UTF-8): the byte 0xff of a name is sent as \\xff,
    not refused (which would end the consumer's stream)."""
    feed = EventFeed()
    consumer = feed.subscribe(set())
    feed.publish("crm", "crm/1.2", 100, "open", "/srv/\udcffile", False, T0)
    feed.publish("crm", "crm/1.2", 100, "open", "/srv/caf\u00e9", False, T0)
    assert [r.what for r in consumer.take(10, 0).records] == ["/srv/\\xffile", "/srv/caf\u00e9"]
