"""on_violation: quarantine, end to end: the agent is held (not killed) for forensics, its
incident record is served over gRPC, and an operator releases or kills it."""

from __future__ import annotations

import time

from tests.waiting import gone


def wait_incident(daemon, root_pid: int, deadline_s: float = 10) -> str:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for line in daemon.cli("quarantine", "list").stdout.splitlines():
            if f"root_pid={root_pid} " in line:
                return line.split()[0]
        time.sleep(0.1)
    raise AssertionError(f"no incident for {root_pid}:\n{daemon.log.read_text()[-3000:]}")


def test_quarantine_holds_the_agent_and_release_lets_it_go(daemon):
    agent = daemon.start_agent("e2e-quarantine", "hold-connection", "secret")
    try:
        incident = wait_incident(daemon, agent.pid)
        assert agent.poll() is None, "quarantined, not killed"
        alert = daemon.alerts_for(agent.pid)[0]
        assert alert["action"]["kind"] == "ACTION_KIND_QUARANTINE"
        assert alert["action"]["incident_id"] == incident
        assert alert["action"]["in_kernel"] is True  # stopped at the open, before it returned

        shown = daemon.cli("quarantine", "show", incident).stdout
        assert f"{incident}  quarantined" in shown and "method=cgroup" in shown
        assert "frozen=yes" in shown and "network_cut=yes" in shown
        assert str(agent.pid) in shown and "agent_actions.py" in shown
        assert f":{daemon.port}" in shown, "the open TCP connection is in the record"
        assert "/etc/shadow" in shown, "the last events include the violation"
        cgroup = next(l.split(": ", 1)[1] for l in shown.splitlines() if l.strip().startswith("cgroup:"))
        assert str(agent.pid) in open(f"{cgroup}/cgroup.procs").read().split()
        assert "frozen 1" in open(f"{cgroup}/cgroup.events").read()

        released = daemon.cli("quarantine", "release", incident).stdout
        assert f"{incident}  released" in released
        out, err = agent.communicate(timeout=30)
        assert agent.returncode == 0 and "done" in out, err  # it went on after the release
    finally:
        if agent.poll() is None:
            agent.kill()


def test_quarantine_kill_ends_the_tree(daemon):
    agent = daemon.start_agent("e2e-quarantine", "fork-secret")
    try:
        incident = wait_incident(daemon, agent.pid)
        shown = daemon.cli("quarantine", "show", incident).stdout
        killed = daemon.cli("quarantine", "kill", incident).stdout
        assert f"{incident}  killed" in killed
        agent.wait(timeout=30)
        assert agent.returncode == -9
        child = int(agent.stdout.read().split("child ", 1)[1].split()[0])
        assert gone(child) and str(child) in shown
        again = daemon.cli("quarantine", "release", incident, check=False)
        assert again.returncode == 1 and "already killed" in again.stderr
    finally:
        if agent.poll() is None:
            agent.kill()


def test_unknown_incident_is_a_clear_error(daemon):
    r = daemon.cli("quarantine", "show", "no-such-incident", check=False)
    assert r.returncode == 1 and "no incident 'no-such-incident'" in r.stderr
