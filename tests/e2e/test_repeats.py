"""Repeated opens counted in the kernel instead of sent (sensor/repeats.py, bpf/files.c): every
repeat is still reported (the event stream's counts add up to the opens the agent made, exactly),
far fewer opens cross the ring buffer, and a name change makes the next open be judged again."""

from __future__ import annotations

import threading
import time

from sensor.client import SensorClient

from .conftest import Daemon

OPENS = 50000
DEADLINE_S = 20


def kernel_opens(daemon: Daemon) -> int:
    with SensorClient(daemon.server) as client:
        return client.status().events["open"]


def test_repeats_are_counted_in_the_kernel_and_every_one_reported(daemon: Daemon):
    data = daemon.workspace / "data.txt"
    records = []
    stop = threading.Event()

    def consume():
        with SensorClient(daemon.server) as client:
            for record in client.events(agents=["e2e-alert"]):
                records.append(record)
                if stop.is_set():
                    return

    threading.Thread(target=consume, daemon=True).start()
    time.sleep(1)  # connected before the agent starts
    sent_before = kernel_opens(daemon)
    run = daemon.run_agent("e2e-alert", f"open-many:{OPENS}:{data}")
    assert run.returncode == 0, run.stderr
    sent = kernel_opens(daemon) - sent_before

    def reported() -> list:
        return [r for r in records if r.instance_id.startswith(f"e2e-alert/{run.pid}.") and r.what == str(data)]

    deadline = time.monotonic() + DEADLINE_S  # the last counts are reported when the agent exits
    while sum(r.repeats or 1 for r in reported()) < OPENS and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    mine = reported()
    assert sum(r.repeats or 1 for r in mine) == OPENS
    assert any(r.repeats for r in mine), "no open was counted in the kernel"
    # Every open of the run (its interpreter's start-up included) sent through the ring buffer:
    assert sent < OPENS // 2, f"{sent} of {OPENS} repeated opens were sent"
    assert all(r.dropped == 0 for r in records)
    with SensorClient(daemon.server) as client:
        assert client.status().repeats_counted >= OPENS - sent


def test_a_name_change_makes_the_next_open_judged_again(daemon: Daemon):
    """An innocent file opened until its opens are counted, then replaced by a hard link to a
    secret: the next open is sent and judged, at once (not when the entry expires)."""
    vault = daemon.workspace / "vault"
    vault.mkdir(exist_ok=True)
    (vault / "key").write_text("top secret\n")
    swap = daemon.workspace / "out" / "swap.txt"
    swap.parent.mkdir(exist_ok=True)
    swap.write_text("harmless\n")
    run = daemon.run_agent("e2e-alert", f"open-many:2000:{swap}", f"unlink:{swap}", f"link:{vault}/key:{swap}",
                           f"open-many:2000:{swap}")
    assert run.returncode == 0, run.stderr
    opens = [a for a in daemon.alerts_for(run.pid, expect=2)
             if a["event"]["type"] == "open" and a["event"]["file"]["path"] == str(swap)]
    assert opens and opens[0]["rule"]["kind"] == "RULE_KIND_SECRET_ACCESS", opens
    assert "same file as secret" in opens[0]["reason"]
