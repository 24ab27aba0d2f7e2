"""sensor/ringbuf.py on the real kernel: a tracked process's burst of opens, read while it is
produced, arrives whole: every event the kernel sent is read, none refused. (A consumer position
briefly written as 0, as struct.pack_into writes it, made the kernel refuse a few events in every
200,000; this is the test that saw it.)"""

from __future__ import annotations

import os
import time

from sensor.decode import decode

OPENS = 100_000


def burst(ch):
    for _ in range(OPENS):
        os.close(os.open("/etc/hostname", os.O_RDONLY))
    ch.send(b"done")


def test_a_burst_read_while_it_is_produced_loses_nothing(sensor_bpf, tracker, spawn, events):
    sent_before, dropped_before = sensor_bpf.counters()
    child = spawn(burst)
    tracker.track(child.pid)
    child.go()
    kinds = {"open": 0, "opened": 0}
    deadline = time.monotonic() + 60  # bounds a failing run only
    while kinds["opened"] < OPENS and time.monotonic() < deadline:
        for raw in events.raw(10):
            event = decode(raw)
            if event.hdr.pid == child.pid and event.kind in kinds:
                kinds[event.kind] += 1
    assert child.recv() == b"done"
    sent, dropped = sensor_bpf.counters()
    assert {k: dropped[k] - dropped_before[k] for k in dropped if dropped[k] != dropped_before[k]} == {}
    assert kinds == {"open": OPENS, "opened": OPENS}
    assert (sent["open"] - sent_before["open"], sent["opened"] - sent_before["opened"]) == (OPENS, OPENS)
