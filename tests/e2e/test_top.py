"""`agent-sensor top --once`: the running agent with its processes and events, its alert."""

from __future__ import annotations

import time

from .conftest import Daemon


def test_top_shows_the_running_agent_and_its_alert(daemon: Daemon):
    agent = daemon.start_agent("e2e-alert", "secret", "sleep:5")
    try:
        deadline = time.monotonic() + 15
        while True:
            view = daemon.cli("top", "--once").stdout
            line = next((l for l in view.splitlines() if l.startswith(f"e2e-alert/{agent.pid}.")), None)
            if (line and "secret" in view) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert line is not None, view
        procs, events = (int(x) for x in line.split()[1:3])
        assert procs >= 1 and events >= 1
        assert f"agent=e2e-alert pid={agent.pid} rule=secret_access" in view
        assert "QUARANTINED\n  none" in view
    finally:
        agent.kill()
        agent.wait()
