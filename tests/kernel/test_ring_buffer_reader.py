"""sensor/ringbuf.py on the real kernel: a tracked process's burst of opens, read while it is
produced, arrives whole: every event the kernel sent is read, none refused. (A consumer position
briefly written as 0, as struct.pack_into writes it, made the kernel refuse a few events in every
200,000; this is the test that saw it.)"""

from __future__ import annotations

import os
import subprocess
import time

from sensor.decode import decode

OPENS = 100_000


def burst(ch):
    for _ in range(OPENS):
        os.close(os.open("/etc/hostname", os.O_RDONLY))
    ch.send(b"done")


def test_a_burst_read_while_it_is_produced_loses_nothing(sensor_bpf, tracker, spawn, events):
    """The reader only takes the records while the burst runs, as the daemon's drain thread
    does; decoding them in the same loop made this test's reader slower than the agent."""
    sent_before, dropped_before = sensor_bpf.counters()

    def burst_done() -> bool:  # every open of the burst sent or refused by the kernel
        sent, dropped = sensor_bpf.counters()
        return sent["open"] - sent_before["open"] + dropped["open"] - dropped_before["open"] >= OPENS

    child = spawn(burst)
    tracker.track(child.pid)
    child.go()
    raws = []
    deadline = time.monotonic() + 60  # bounds a failing run only
    while not burst_done() and time.monotonic() < deadline:
        raws += events.raw(10)
    while batch := events.raw(0):
        raws += batch
    assert child.recv() == b"done"
    kinds = {"open": 0, "opened": 0}
    for event in map(decode, raws):
        if event.hdr.pid == child.pid and event.kind in kinds:
            kinds[event.kind] += 1
    sent, dropped = sensor_bpf.counters()
    assert {k: dropped[k] - dropped_before[k] for k in dropped if dropped[k] != dropped_before[k]} == {}
    assert kinds == {"open": OPENS, "opened": 0}  # each open with its fd: one event
    assert sent["open"] - sent_before["open"] == OPENS


LONG_WAIT_MS = 30_000  # far beyond any wakeup; reached only if the reader was never woken


def test_an_agents_event_behind_an_unwoken_record_still_wakes_the_reader(sensor_bpf, tracker, spawn, events):
    """Another process's exec is sent without a wakeup, and records otherwise wake the reader
    only when it is right behind them (bpf/maps.h, wakeup_flags). The reader sleeps with such an
    exec unread; an agent's open sent next must wake it, or it would sleep out its whole wait."""
    quiet = subprocess.Popen(["/bin/sh", "-c", "sleep 0.3; exec /bin/true"])  # untracked execs, later
    agent = spawn(lambda ch: (time.sleep(0.8), os.close(os.open("/etc/hostname", os.O_RDONLY))))
    tracker.track(agent.pid)
    agent.go()
    while events.raw(0):  # read everything sent so far: the reader is right behind the next record
        pass
    started, seen = time.monotonic(), []
    while not any(e.hdr.pid == agent.pid and e.kind == "open" for e in seen):
        seen += [decode(raw) for raw in events.raw(LONG_WAIT_MS)]
    waited = time.monotonic() - started
    quiet.wait()
    assert any(e.kind == "exec" and e.hdr.pid == quiet.pid for e in seen)  # the unwoken record came first
    assert waited < LONG_WAIT_MS / 1000 / 2, f"the reader slept {waited:.1f} s: the agent's open did not wake it"


LIBBPF_OPENS = 5_000


def test_libbpfs_reader_used_off_x86_delivers_every_event_too(spawn):
    """Where the in-place reader is not used (IN_PLACE false: CPUs other than x86), SensorBPF
    reads through libbpf's consumer in libbcc. A second sensor, forced onto that reader, gets
    every event of a burst."""
    from sensor.bpf_loader import SensorBPF
    from sensor.source import RingBufferSource

    sensor = SensorBPF(in_place=False)
    sensor.load()
    try:
        source = RingBufferSource(sensor)

        def opens(ch):
            for _ in range(LIBBPF_OPENS):
                os.close(os.open("/etc/hostname", os.O_RDONLY))
            ch.send(b"done")

        child = spawn(opens)
        sensor.track(child.pid, 0, child.pid)
        child.go()
        opened = 0
        deadline = time.monotonic() + 60  # bounds a failing run only
        while opened < LIBBPF_OPENS and time.monotonic() < deadline:
            opened += sum(1 for raw in source.read(10)
                          if (e := decode(raw)).hdr.pid == child.pid and e.kind == "open" and e.result >= 0)
        assert child.recv() == b"done"
        assert opened == LIBBPF_OPENS
        assert sensor.counters()[1]["open"] == 0
    finally:
        sensor.close()
