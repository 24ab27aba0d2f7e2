"""The live event feed behind StreamEvents: each judged event of an agent, fanned out to the
consumers connected now. Not stored: a consumer whose bounded queue is full loses events, and
every record it gets says how many so far. Costs nothing while nobody listens."""

from __future__ import annotations

import queue
import threading

from .._proto.agent_sensor.v1 import sensor_pb2 as pb

CONSUMER_QUEUE = 65536


class EventConsumer:
    def __init__(self, agents: set[str]):
        self.agents = agents
        self.queue: queue.Queue[pb.EventRecord] = queue.Queue(CONSUMER_QUEUE)
        self.dropped = 0

    def offer(self, record: pb.EventRecord) -> None:
        if self.agents and record.agent not in self.agents:
            return
        record.dropped = self.dropped
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class EventFeed:
    def __init__(self):
        self._lock = threading.Lock()
        self._consumers: list[EventConsumer] = []
        self._seq = 0

    @property
    def listening(self) -> bool:
        return bool(self._consumers)

    def publish(self, agent: str, instance_id: str, pid: int, kind: str, what: str, kernel_acted: bool,
                wall_ns: int, repeats: int = 0) -> None:
        with self._lock:
            self._seq += 1
            for consumer in self._consumers:
                record = pb.EventRecord(seq=self._seq, agent=agent, instance_id=instance_id, pid=pid, type=kind,
                                        what=what, kernel_acted=kernel_acted, repeats=repeats)
                record.time.FromNanoseconds(wall_ns)
                consumer.offer(record)

    def subscribe(self, agents: set[str]) -> EventConsumer:
        consumer = EventConsumer(agents)
        with self._lock:
            self._consumers.append(consumer)
        return consumer

    def unsubscribe(self, consumer: EventConsumer) -> None:
        with self._lock:
            if consumer in self._consumers:
                self._consumers.remove(consumer)
