"""Event loss on the real kernel: a tracked agent that fills the ring buffer while nobody reads
it loses events; the kernel counts them for its agent run, and the pipeline turns them into an
event_loss alert acted on as the profile's on_event_loss says (here: kill)."""

from __future__ import annotations

import os

from sensor.alerts import AlertBus
from sensor.export.spool import AlertSpool
from sensor.pipeline import Pipeline
from sensor.profiles import load_profile_file

from .conftest import KILLED


def flood(ch):
    """Opens until told to stop: 8 MiB of ring buffer fill in well under a second."""
    for _ in range(200_000):
        try:
            os.close(os.open("/etc/hostname", os.O_RDONLY))
        except OSError:
            pass
    ch.send(b"flooded")
    ch.wait_release()


def test_lost_events_are_counted_per_run_and_acted_on(sensor_bpf, tracker, spawn, events, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: lossy\nfiles:\n  read: [\"/**\"]\non_event_loss: kill\n")
    profile = load_profile_file(path, homes=["/root"])
    spool = AlertSpool(tmp_path / "alerts.db")
    pipeline = Pipeline([profile], sensor_bpf, AlertBus(spool))
    child = spawn(flood, hold=True)
    try:
        _, dropped_before = sensor_bpf.counters()
        agent = pipeline.track(child.pid, "lossy", pending_exec=False)
        child.go()
        assert child.recv(timeout=60) == b"flooded"  # nobody read the ring buffer meanwhile
        _, dropped_after = sensor_bpf.counters()
        lost = sensor_bpf.lost_by_run().get(child.pid, 0)
        assert lost > 0
        assert dropped_after["open"] + dropped_after["opened"] - dropped_before["open"] - dropped_before["opened"] >= lost
        pipeline.check_event_loss()
        assert child.wait() == KILLED
        (alert,) = list(spool.after(0))
        assert alert.rule.name == "on_event_loss" and alert.agent.root_pid == child.pid
        assert alert.reason.startswith(f"{lost} event(s) of this agent run were lost")
        # Checked again: only what was lost since is reported (the dying agent's exit event, say),
        # so the alerts add up to the kernel's count, each lost event reported once.
        pipeline.check_event_loss()
        total = sensor_bpf.lost_by_run()[child.pid]
        reported = [int(a.reason.split(" ")[0]) for a in spool.after(0)]
        assert reported[0] == lost and sum(reported) == total
        assert agent.root_pid == child.pid
    finally:
        events.reset()  # drain the flood for the next tests
        sensor_bpf.forget_lost(child.pid)
        sensor_bpf.forget_doomed(child.pid)
        sensor_bpf.clear_policy(0)
        spool.close()
