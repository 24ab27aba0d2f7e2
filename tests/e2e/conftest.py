"""A real daemon (`agent-sensor run` as a subprocess, real BPF) and tracked test agents.

Waits are bounded by deadlines, never asserted as timings."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from sensor.scenarios import own_daemon
from sensor.scenarios.hosts import with_resolv_conf

CLI = own_daemon.CLI
SYSTEM_PYTHON = "/usr/bin/python3"
HERE = Path(__file__).resolve().parent
ALERT_DEADLINE_S = 10


def profile_yaml(name: str, workspace: Path, port: int, on_violation: str, match: str = "") -> str:
    return f"""\
name: {name}
{match}
files:
  read: ["/usr/**", "/etc/**", "/proc/**", "/dev/null", "/dev/urandom", "{workspace}/**"]
  write: ["{workspace}/out/**", "/dev/null"]
secrets: ["~/.aws/**", "~/.ssh/**", "/etc/shadow", "{workspace}/vault/**"]
network:
  connect: ["127.0.0.1:{port}", "[::1]:{port}"]
exec: ["/usr/bin/python3*", "/usr/bin/true"]
exec_deny: ["/usr/bin/id"]
on_violation: {on_violation}
"""


@dataclass
class Daemon:
    proc: subprocess.Popen
    server: str
    log: Path
    workspace: Path
    port: int

    def cli(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a client command against this daemon (--server goes right after the command name,
        before any `--`)."""
        words = 2 if args[0] in ("profiles", "quarantine") else 1
        argv = [CLI, *args[:words], "--server", self.server, *args[words:]]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)

    def alerts(self) -> list[dict]:
        out = self.cli("alerts", "--json", "--backlog", "10000").stdout
        return [orjson.loads(line) for line in out.splitlines() if line.strip()]

    def alerts_for(self, root_pid: int, expect: int = 1) -> list[dict]:
        """Alerts of one agent run, once at least `expect` arrived (or the deadline passed)."""
        deadline = time.monotonic() + ALERT_DEADLINE_S
        while True:
            found = [a for a in self.alerts() if a["agent"]["root_pid"] == root_pid]
            if len(found) >= expect or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def start_agent(self, profile: str, *actions: str, resolv_conf: Path | None = None) -> subprocess.Popen:
        """`agent-sensor exec --profile P -- python3 agent_actions.py ...`; the Popen's pid is the
        agent's (exec replaces the CLI process). With resolv_conf, the agent runs in its own mount
        namespace where that file is /etc/resolv.conf (its resolver asks a test DNS server)."""
        argv = [CLI, "exec", "--server", self.server, "--profile", profile, "--",
                SYSTEM_PYTHON, str(self.workspace / "agent_actions.py"), str(self.workspace), str(self.port), *actions]
        return subprocess.Popen(with_resolv_conf(resolv_conf, argv) if resolv_conf else argv, cwd=self.workspace,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="backslashreplace")  # it prints the names it was given

    def run_agent(self, profile: str, *actions: str, timeout: float = 30,
                  resolv_conf: Path | None = None) -> subprocess.CompletedProcess:
        proc = self.start_agent(profile, *actions, resolv_conf=resolv_conf)
        out, err = proc.communicate(timeout=timeout)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        result.pid = proc.pid
        return result


def start_daemon(tmp: Path, profiles_dir: Path, *extra: str) -> tuple[subprocess.Popen, str, Path]:
    try:
        return own_daemon.start_daemon(tmp, profiles_dir, *extra)
    except own_daemon.DaemonError as exc:
        pytest.fail(str(exc))


def stop_daemon(proc: subprocess.Popen, log: Path) -> int:
    try:
        return own_daemon.stop_daemon(proc, log)
    except own_daemon.DaemonError as exc:
        pytest.fail(str(exc))


def host_network_daemon(tmp: Path, network_yaml: str, port: int):
    """A daemon with one kill profile, e2e-hosts, for agents talking to test hosts
    (sensor/scenarios/hosts.py): network_yaml is its `network:` section, with {workspace} filled in.
    A generator: yields the Daemon, then stops it."""
    workspace = tmp / "workspace"
    workspace.mkdir()
    shutil.copy(HERE / "agent_actions.py", workspace / "agent_actions.py")
    (tmp / "profiles").mkdir()
    (tmp / "profiles" / "hosts.yaml").write_text(f"""\
name: e2e-hosts
files:
  read: ["/usr/**", "/etc/**", "/proc/**", "/dev/null", "{workspace}/**"]
{network_yaml}
exec: ["/usr/bin/python3*"]
on_violation: kill
""")
    proc, server, log = start_daemon(tmp, tmp / "profiles")
    yield Daemon(proc, server, log, workspace, port)
    assert stop_daemon(proc, log) == 0


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def started_kill_daemon(tmp: Path, name: str, *extra: str) -> Daemon:
    """A daemon (run flags `extra`) with one kill profile, NAME, and a workspace with the test agent."""
    workspace = tmp / "workspace"
    workspace.mkdir()
    shutil.copy(HERE / "agent_actions.py", workspace / "agent_actions.py")
    (tmp / "profiles").mkdir()
    (tmp / "profiles" / "kill.yaml").write_text(profile_yaml(name, workspace, 1, "kill"))
    proc, server, log = start_daemon(tmp, tmp / "profiles", *extra)
    return Daemon(proc, server, log, workspace, 1)


@pytest.fixture(scope="module")
def listener():
    """The 'allowed API' the agents may connect to: a loopback TCP listener."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, listener):
    tmp = tmp_path_factory.mktemp("e2e")
    workspace = tmp / "workspace"
    workspace.mkdir()
    (workspace / "data.txt").write_text("customer table\n")
    shutil.copy(HERE / "agent_actions.py", workspace / "agent_actions.py")
    port = listener.getsockname()[1]
    profiles = tmp / "profiles"
    profiles.mkdir()
    (profiles / "kill.yaml").write_text(profile_yaml("e2e-kill", workspace, port, "kill"))
    (profiles / "alert.yaml").write_text(profile_yaml("e2e-alert", workspace, port, "alert"))
    (profiles / "quarantine.yaml").write_text(profile_yaml("e2e-quarantine", workspace, port, "quarantine"))
    (profiles / "match.yaml").write_text(profile_yaml(
        "e2e-match", workspace, port, "alert",
        match='match:\n  exe: ["/usr/bin/python3*"]\n  cmdline: ["*match_agent.py*"]'))
    proc, server, log = start_daemon(tmp, profiles)
    yield Daemon(proc, server, log, workspace, port)
    code = stop_daemon(proc, log)
    assert code == 0, log.read_text()
