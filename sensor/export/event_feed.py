"""The live event feed behind StreamEvents: each judged event of an agent, fanned out to the
consumers connected now. Not stored: a consumer whose bounded queue is full loses events, and
every record it gets says how many so far. Costs nothing while nobody listens.

The judge only appends a tuple per consumer; the consumer's own gRPC thread turns what has
gathered into protobuf records. A message built per event on the judge's thread, and a
thread-safe queue's locks, cost it more than judging the event."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import NamedTuple

from .._proto.agent_sensor.v1 import sensor_pb2 as pb
from ..alerts import wall_ns
from ..decode import wire_text

CONSUMER_QUEUE = 65536
NS = 1_000_000_000
# A batch stream gives the judge this long to fill a batch before it sends one that is not full:
# sent as soon as there was something, batches were of a few records, and the GIL handovers
# between the judge and the threads sending them cost the judge more than the records.
GATHER_S = 0.005
# A batch's size, as counted while building it (a name's characters at 4 bytes each, the most
# UTF-8 takes, and the rest of a record at most RECORD_BYTES): far below the 4 MiB a gRPC client
# receives by default, even with names of PATH_MAX.
BATCH_BYTES = 1 << 20
RECORD_BYTES = 256


class Published(NamedTuple):
    seq: int
    agent: str
    instance_id: str
    pid: int
    kind: str
    what: str
    kernel_acted: bool
    ktime_ns: int  # the kernel's stamp (CLOCK_MONOTONIC): the consumer's thread makes it wall time
    repeats: int
    result: int | None  # an open's fd or -errno
    dropped: int  # the consumer's losses when this was queued


class EventConsumer:
    def __init__(self, agents: set[str]):
        self.agents = agents
        self.dropped = 0
        self._pending: deque[Published] = deque()  # appended by the judge, taken by one gRPC thread
        self._waiting = False
        self._wake = threading.Event()

    def offer(self, event: Published) -> None:
        if self.agents and event.agent not in self.agents:
            return
        if len(self._pending) >= CONSUMER_QUEUE:
            self.dropped += 1
            return
        self._pending.append(event._replace(dropped=self.dropped) if self.dropped else event)
        if self._waiting:
            self._wake.set()

    def take(self, most: int, timeout_s: float) -> pb.EventBatch | None:
        """Up to `most` records and about BATCH_BYTES, waiting up to timeout_s for the first (and,
        for a batch not yet full, GATHER_S for more); None if none came."""
        if not self._pending:
            self._wake.clear()
            self._waiting = True  # before the second look: an offer after it sets the event
            if not self._pending:
                self._wake.wait(timeout_s)
            self._waiting = False
        if self._pending and most > 1 and len(self._pending) < most:
            time.sleep(GATHER_S)
        batch = pb.EventBatch()
        add, pending, to_wall, room = batch.records.add, self._pending, wall_ns(0), BATCH_BYTES
        for _ in range(min(most, len(pending))):
            e = pending.popleft()
            room -= RECORD_BYTES + 4 * len(e.what)
            record = add(seq=e.seq, agent=e.agent, instance_id=e.instance_id, pid=e.pid, type=e.kind,
                         what=wire_text(e.what), result=e.result)
            # The fields most records leave at their default, set only when not: each keyword
            # costs the consumer's thread as much as setting it (a sixth of a record's cost).
            if e.kernel_acted:
                record.kernel_acted = True
            if e.repeats:
                record.repeats = e.repeats
            if e.dropped:
                record.dropped = e.dropped
            stamp = record.time
            stamp.seconds, stamp.nanos = divmod(e.ktime_ns + to_wall, NS)  # FromNanoseconds: Python, a fifth slower
            if room <= 0:
                break
        return batch if batch.records else None


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
        # Published(...) without the Python-level __new__ named tuples have: half of its cost.
        event = tuple.__new__(Published, (self._seq, agent, instance_id, pid, kind, what, kernel_acted, ktime_ns,
                                          repeats, result, 0))
        for consumer in self._consumers:
            consumer.offer(event)

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
