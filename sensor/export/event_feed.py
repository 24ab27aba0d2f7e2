"""The live event feed behind StreamEvents: each judged event of an agent, fanned out to the
consumers connected now. Not stored: a consumer whose bounded queue is full loses events, and
every record it gets says how many so far. Costs nothing while nobody listens.

The judge writes each record as protobuf bytes into each consumer's queue (sensor/_event_wire.c);
the consumer's own gRPC thread cuts what has gathered from the queue's front and sends it as it
stands. A message built per event, or protobuf objects built on the gRPC thread, cost the daemon
more than judging the event."""

from __future__ import annotations

import threading
import time

from ..compiled import _event_wire
from ..decode import wire_text

_event_wire.set_text(wire_text)

# A consumer's queue, at most: about 80,000 records of ordinary names (0.8 s at 100,000 events/s).
QUEUE_BYTES = 8 << 20
# A batch stream gives the judge this long to fill a batch before it sends it: sent as soon as
# there was something, batches were of a few records, and the GIL handovers between the judge
# and the threads sending them cost the judge more than the records.
GATHER_S = 0.005
# A batch's size at most (unless one record is larger, which a name of PATH_MAX is not): far
# below the 4 MiB a gRPC client receives by default.
BATCH_BYTES = 1 << 20


class EventConsumer:
    def __init__(self, agents: set[str]):
        self.agents = agents
        self.dropped = 0
        # Records as protobuf bytes, each framed as an EventBatch's: appended by the judge, cut
        # from the front by one gRPC thread (each a single C call, whole under the GIL).
        self._queue = bytearray()
        self._waiting = False
        self._wake = threading.Event()

    def offer(self, seq: int, agent: str, instance_id: str, pid: int, kind: str, what: str, kernel_acted: bool,
              ktime_ns: int, repeats: int, result: int | None) -> None:
        if self.agents and agent not in self.agents:
            return
        if len(self._queue) >= QUEUE_BYTES:
            self.dropped += 1
            return
        # ktime_ns: the kernel's stamp (CLOCK_MONOTONIC), written as wall time.
        _event_wire.put(self._queue, seq, agent, instance_id, pid, kind, what, kernel_acted, ktime_ns, repeats,
                        result, self.dropped)
        if self._waiting:
            self._wake.set()

    def take(self, most: int, timeout_s: float, bare: bool = False) -> bytes | None:
        """An EventBatch's bytes: up to `most` records and BATCH_BYTES, waiting up to timeout_s
        for the first and, for a batch, GATHER_S for more; bare: one EventRecord's bytes. None if
        none came."""
        if not self._queue:
            self._wake.clear()
            self._waiting = True  # before the second look: an offer after it sets the event
            if not self._queue:
                self._wake.wait(timeout_s)
            self._waiting = False
        if self._queue and most > 1:
            time.sleep(GATHER_S)
        return _event_wire.cut(self._queue, most, BATCH_BYTES, bare) or None


class EventFeed:
    def __init__(self):
        self._lock = threading.Lock()  # subscribe and unsubscribe, from gRPC threads
        self._consumers: tuple[EventConsumer, ...] = ()  # replaced, never changed: publish reads it unlocked
        self.listening = False  # whether anyone is: the judge asks before each event
        self._seq = 0

    def publish(self, agent: str, instance_id: str, pid: int, kind: str, what: str, kernel_acted: bool,
                ktime_ns: int, repeats: int = 0, result: int | None = None) -> None:
        """From the judge's thread only (under the pipeline's lock)."""
        self._seq += 1
        for consumer in self._consumers:
            consumer.offer(self._seq, agent, instance_id, pid, kind, what, kernel_acted, ktime_ns, repeats, result)

    def subscribe(self, agents: set[str]) -> EventConsumer:
        consumer = EventConsumer(agents)
        with self._lock:
            self._consumers += (consumer,)
            self.listening = True
        return consumer

    def unsubscribe(self, consumer: EventConsumer) -> None:
        with self._lock:
            self._consumers = tuple(c for c in self._consumers if c is not consumer)
            self.listening = bool(self._consumers)
