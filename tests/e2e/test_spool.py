"""Nothing lost: the alert spool. A consumer streaming alerts while the daemon is killed with
SIGKILL resumes, after a restart, from the last id it saw, and ends up with every stored alert
exactly once, in order."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest

from sensor.client import SensorClient
from sensor.export.spool import AlertSpool

from .conftest import SYSTEM_PYTHON, CLI, start_daemon, stop_daemon

DEADLINE_S = 30

NOISY_AGENT = """
import sys, time
for i in range(int(sys.argv[1])):
    try:
        open("/etc/hostname").read()   # outside files.read: one alert each
    except OSError:
        pass
    time.sleep(0.01)
"""


class Consumer(threading.Thread):
    """Streams alerts with --follow from since_id; keeps every id it received, in order."""

    def __init__(self, server: str, since_id: int, ids: list[int]):
        super().__init__(daemon=True)
        self.server, self.since_id, self.ids = server, since_id, ids
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with SensorClient(self.server) as client:
                for alert in client.alerts(follow=True, since_id=self.since_id):
                    self.ids.append(alert.id)
        except grpc.RpcError as exc:  # the daemon went away
            self.error = exc


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def spool_run(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "noisy.yaml").write_text(
        'name: e2e-noisy\nfiles:\n  read: ["/usr/**", "/proc/**", "/dev/null"]\nexec: ["/usr/bin/python3*"]\n'
        "on_violation: alert\n")
    (tmp_path / "noisy.py").write_text(NOISY_AGENT)
    return tmp_path


def start_agent(server: str, run_dir, count: int):
    import subprocess
    return subprocess.Popen([CLI, "exec", "--server", server, "--profile", "e2e-noisy", "--",
                             SYSTEM_PYTHON, str(run_dir / "noisy.py"), str(count)])


def test_a_consumer_resumes_after_sigkill_with_nothing_missing_or_twice(spool_run):
    run_dir = spool_run
    ids: list[int] = []
    proc, server, log = start_daemon(run_dir, run_dir / "profiles")
    first = Consumer(server, 0, ids)
    first.start()
    agent = start_agent(server, run_dir, 200)
    wait_until(lambda: len(ids) >= 20, "the first alerts")
    proc.send_signal(signal.SIGKILL)  # mid-stream: alerts are still being made
    proc.wait()
    first.join(DEADLINE_S)
    assert first.error is not None  # the stream broke with the daemon
    agent.kill()
    agent.wait()
    seen_before = len(ids)

    proc, server, log = start_daemon(run_dir, run_dir / "profiles")  # the same spool
    resumed = Consumer(server, ids[-1], ids)
    resumed.start()
    agent = start_agent(server, run_dir, 30)
    assert agent.wait(DEADLINE_S) == 0
    with SensorClient(server) as client:
        wait_until(lambda: ids[-1] == client.status().spool.last_id, "the resumed stream to reach the last alert")
        last_id = client.status().spool.last_id
    assert stop_daemon(proc, log) == 0, log.read_text()
    resumed.join(DEADLINE_S)

    spool = AlertSpool(run_dir / "alerts.db")
    stored = [a.id for a in spool.after(0)]
    spool.close()
    assert len(stored) > seen_before >= 20
    assert ids == stored  # every stored alert, once, in order, across the kill
    assert stored[-1] == last_id
