"""StreamEvents (`agent-sensor events`): a consumer connected before the agent runs sees each of
its events as it is judged, with the canonical path and whether the kernel acted."""

from __future__ import annotations

import threading
import time

from sensor.client import SensorClient

from .conftest import Daemon


def test_a_consumer_sees_the_agents_events_as_they_are_judged(daemon: Daemon):
    records = []

    def consume():
        with SensorClient(daemon.server) as client:
            for record in client.events(agents=["e2e-kill"]):
                records.append(record)
                if record.kernel_acted:
                    return

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    time.sleep(1)  # connected before the agent starts
    data = daemon.workspace / "data.txt"
    started_ns = time.time_ns()
    result = daemon.run_agent("e2e-kill", f"open:{data}", "secret")
    ended_ns = time.time_ns()
    assert result.returncode == -9
    consumer.join(15)
    mine = [r for r in records if r.instance_id.startswith(f"e2e-kill/{result.pid}.")]
    (opened,) = [r for r in mine if r.type == "open" and r.what == str(data)]
    assert not opened.kernel_acted and opened.HasField("result") and opened.result >= 0  # the fd it got
    assert started_ns <= opened.time.ToNanoseconds() <= ended_ns  # the kernel's stamp, as wall time
    assert mine[-1].type == "open" and mine[-1].what == "/etc/shadow" and mine[-1].kernel_acted
    assert not mine[-1].HasField("result")  # sent at entry: the kernel acted before the open returned
    assert [r.seq for r in records] == sorted(set(r.seq for r in records))
    assert all(r.dropped == 0 for r in records)


def test_the_batched_and_the_single_record_streams_carry_the_same_records(daemon: Daemon):
    from sensor._proto.agent_sensor.v1 import sensor_pb2 as pb

    batched, single = [], []

    def consume(out, open_stream):
        with SensorClient(daemon.server) as client:
            for record in open_stream(client):
                out.append(record)
                if record.kernel_acted:
                    return

    streams = [(batched, lambda c: c.events(agents=["e2e-kill"])),
               (single, lambda c: c._stub.StreamEvents(pb.StreamEventsRequest(agents=["e2e-kill"])))]
    threads = [threading.Thread(target=consume, args=s, daemon=True) for s in streams]
    for t in threads:
        t.start()
    time.sleep(1)
    result = daemon.run_agent("e2e-kill", f"open:{daemon.workspace / 'data.txt'}", "allowed", "secret")
    assert result.returncode == -9
    for t in threads:
        t.join(15)
    assert single and [(r.seq, r.what) for r in batched] == [(r.seq, r.what) for r in single]
