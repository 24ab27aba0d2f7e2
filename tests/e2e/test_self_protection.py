"""Nobody in: a tracked agent that aims a signal at the daemon is killed in the kernel whatever
its profile's action, the alert says so, and the daemon (which takes its stop signals with
their sender) keeps running."""

from __future__ import annotations

import signal

from .conftest import Daemon


def test_an_agent_sending_sigterm_to_the_daemon_is_killed_and_the_daemon_stays(daemon: Daemon):
    result = daemon.run_agent("e2e-alert", f"signal:{daemon.proc.pid}:{int(signal.SIGTERM)}")
    assert result.returncode == -9  # e2e-alert only alerts on its own rules; tampering is always a kill
    (alert,) = daemon.alerts_for(result.pid)
    assert alert["rule"]["kind"] == "RULE_KIND_SENSOR_TAMPER"
    assert alert["reason"] == f"sent signal {int(signal.SIGTERM)} to pid {daemon.proc.pid}, the sensor itself"
    assert alert["action"]["in_kernel"] is True
    assert daemon.proc.poll() is None  # still running
    assert daemon.cli("status").returncode == 0


def test_an_agent_writing_to_the_sensors_profiles_is_killed_before_the_write(daemon: Daemon):
    profiles = daemon.workspace.parent / "profiles"
    planted = profiles / "kill.yaml"
    before = planted.read_bytes()
    result = daemon.run_agent("e2e-alert", f"write:{planted}")
    assert result.returncode == -9
    assert planted.read_bytes() == before  # killed at the open: nothing written
    (alert,) = daemon.alerts_for(result.pid)
    assert alert["rule"]["kind"] == "RULE_KIND_SENSOR_TAMPER"
    assert alert["reason"] == f"changed {planted}, one of the sensor's own files"
    assert alert["action"]["in_kernel"] is True


def test_secret_contents_never_reach_alerts_or_the_log(daemon: Daemon):
    """The agent (alert mode) reads a secret whole; the sensor reports the path, never a byte of it."""
    vault = daemon.workspace / "vault"
    vault.mkdir(exist_ok=True)
    (vault / "api-key").write_text("MARKER-9f1c2e-SECRET-CONTENT\n")
    result = daemon.run_agent("e2e-alert", f"cat:{vault / 'api-key'}")
    assert result.returncode == 0 and "MARKER-9f1c2e" in result.stdout  # it did read it
    (alert,) = daemon.alerts_for(result.pid)
    assert alert["rule"]["kind"] == "RULE_KIND_SECRET_ACCESS"
    assert "MARKER-9f1c2e" not in str(daemon.alerts()) and "MARKER-9f1c2e" not in daemon.log.read_text()
