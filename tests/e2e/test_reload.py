"""Hot reload: `agent-sensor profiles reload` (gRPC ReloadProfiles) and SIGHUP. A valid set takes
effect for running agents too, without a restart; an invalid one is refused with its FILE:LINE
errors and the loaded set keeps enforcing."""

from __future__ import annotations

import shutil
import signal
import time

import orjson
import pytest

from .conftest import HERE, Daemon, start_daemon, stop_daemon

DEADLINE_S = 20


def profile(workspace, secrets: str) -> str:
    return f"""\
name: e2e-reload
files:
  read: ["/usr/**", "/etc/**", "/proc/**", "/dev/null", "{workspace}/**"]
secrets: [{secrets}]
exec: ["/usr/bin/python3*"]
on_violation: kill
"""


@pytest.fixture
def reload_daemon(tmp_path):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "token").write_text("T\n")
    shutil.copy(HERE / "agent_actions.py", workspace / "agent_actions.py")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "reload.yaml").write_text(profile(workspace, '"/etc/shadow"'))
    proc, server, log = start_daemon(tmp_path, tmp_path / "profiles")
    yield Daemon(proc, server, log, workspace, 0), tmp_path / "profiles"
    assert stop_daemon(proc, log) == 0, log.read_text()


def loaded(daemon: Daemon) -> set[str]:
    return {p["name"] for p in orjson.loads(daemon.cli("status", "--json").stdout)["profiles"]}


def test_a_reload_applies_to_running_agents(reload_daemon):
    daemon, profiles = reload_daemon
    token = daemon.workspace / "token"
    agent = daemon.start_agent("e2e-reload", "sleep:3", f"open:{token}")
    (profiles / "reload.yaml").write_text(profile(daemon.workspace, f'"/etc/shadow", "{token}"'))
    done = daemon.cli("profiles", "reload")
    assert "reloaded: added none; kept e2e-reload; removed none" in done.stdout
    agent.communicate(timeout=DEADLINE_S)
    assert agent.returncode == -9  # its profile's new secret, read after the reload
    (alert,) = daemon.alerts_for(agent.pid)
    assert alert["rule"]["kind"] == "RULE_KIND_SECRET_ACCESS" and alert["action"]["in_kernel"] is True


def test_an_invalid_set_is_refused_and_the_loaded_one_keeps_enforcing(reload_daemon):
    daemon, profiles = reload_daemon
    (profiles / "broken.yaml").write_text("name: e2e-broken\nnetwrk: {}\n")
    done = daemon.cli("profiles", "reload", check=False)
    assert done.returncode == 1
    assert f"{profiles / 'broken.yaml'}:2: unknown key 'netwrk'" in done.stderr
    assert loaded(daemon) == {"e2e-reload"}
    result = daemon.run_agent("e2e-reload", "secret")  # /etc/shadow: the old rules still hold
    assert result.returncode == -9


def test_sighup_reloads_and_a_removed_profile_stops_being_enforced(reload_daemon):
    daemon, profiles = reload_daemon
    (profiles / "reload.yaml").rename(profiles / "renamed.yaml.off")
    (profiles / "other.yaml").write_text(profile(daemon.workspace, '"/etc/shadow"').replace("e2e-reload", "e2e-other"))
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + DEADLINE_S
    while loaded(daemon) != {"e2e-other"}:
        assert time.monotonic() < deadline, daemon.log.read_text()
        time.sleep(0.1)
    assert daemon.proc.poll() is None  # SIGHUP reloads, it does not stop
    assert daemon.run_agent("e2e-other", "secret").returncode == -9
    assert "profiles reloaded: added e2e-other; kept none; removed e2e-reload" in daemon.log.read_text()
