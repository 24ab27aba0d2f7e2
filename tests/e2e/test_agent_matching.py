"""Agents recognised by their profile's match selectors rather than launched with `exec`:
at exec time in user space, at exec time in the kernel (exact executable paths), and processes
already running when the daemon starts (rescan)."""

from __future__ import annotations

import shutil
import subprocess
import time

from .conftest import SYSTEM_PYTHON, profile_yaml, start_daemon, stop_daemon


def test_selectors_match_a_new_process_at_exec(daemon):
    script = daemon.workspace / "match_agent.py"
    shutil.copy(daemon.workspace / "agent_actions.py", script)
    # Started directly, not through `agent-sensor exec`. The selectors are matched in user space
    # after the exec event arrives, so the agent first waits: the documented matching window.
    proc = subprocess.Popen([SYSTEM_PYTHON, "-c", "import time; time.sleep(1); import runpy, sys; "
                             "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
                             str(script), str(daemon.workspace), str(daemon.port), "secret"],
                            cwd=daemon.workspace, stdout=subprocess.PIPE, text=True)
    proc.communicate(timeout=30)
    alerts = daemon.alerts_for(proc.pid)
    assert len(alerts) == 1, alerts
    assert alerts[0]["agent"]["name"] == "e2e-match"
    assert alerts[0]["rule"]["kind"] == "RULE_KIND_SECRET_ACCESS"


def test_running_agents_are_found_at_start_and_exact_paths_match_in_the_kernel(tmp_path, listener):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    port = listener.getsockname()[1]
    # An agent binary at an exact path: a shell script that waits for a trigger, then reads a secret.
    agent = workspace / "kernel-matched-agent"
    # Shell builtins only: any program it ran would itself be an exec outside the profile.
    agent.write_text('#!/bin/sh\nwhile [ ! -e "$1" ]; do :; done\nexec 3< /etc/shadow\nwhile :; do :; done\n')
    agent.chmod(0o755)
    running = tmp_path / "already-running.py"
    running.write_text("import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.05)\n"
                       "open('/etc/shadow').read(1)\ntime.sleep(30)\n")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "exact.yaml").write_text(profile_yaml(
        "e2e-exact", workspace, port, "kill", match=f'match:\n  exe: ["{agent}"]'))
    (profiles / "rescan.yaml").write_text(profile_yaml(
        "e2e-rescan", workspace, port, "kill", match='match:\n  cmdline: ["*already-running.py*"]'))

    go = tmp_path / "go"
    before = subprocess.Popen([SYSTEM_PYTHON, str(running), str(go)])
    after = None
    proc, server, log = start_daemon(tmp_path, profiles)
    try:
        from .conftest import Daemon
        d = Daemon(proc, server, log, workspace, port)
        listed = {p.split()[0]: p for p in d.cli("profiles", "list").stdout.splitlines() if not p.startswith(" ")}
        assert set(listed) == {"e2e-exact", "e2e-rescan"}
        assert f"kernel exec match {agent}" in d.cli("profiles", "list").stdout

        after = subprocess.Popen([str(agent), str(go)])
        status = d.cli("status", "--json").stdout
        assert f'"pid": {before.pid}' in status  # tracked by the rescan
        go.touch()
        assert before.wait(timeout=30) == -9
        assert after.wait(timeout=30) == -9
        by_pid = {a["agent"]["root_pid"]: a for a in d.alerts()}
        assert by_pid[before.pid]["agent"]["name"] == "e2e-rescan"
        # The kernel tracked the exact path from its first instruction: the secret read by the
        # shell's redirection is caught although the script never waits for user space.
        assert by_pid[after.pid]["agent"]["name"] == "e2e-exact"
        assert by_pid[after.pid]["rule"]["kind"] == "RULE_KIND_SECRET_ACCESS"
    finally:
        for p in (before, after):
            if p is not None and p.poll() is None:
                p.kill()
        assert stop_daemon(proc, log) == 0


def test_exec_launcher_is_not_mistaken_for_the_agent_it_launches(daemon):
    """The match profile's selectors (python3 + *match_agent.py*) also fit the command line of
    `agent-sensor exec ... -- python3 match_agent.py`: the launcher must still register the
    agent under the requested profile instead of being matched and judged itself."""
    script = daemon.workspace / "match_agent.py"
    shutil.copy(daemon.workspace / "agent_actions.py", script)
    from .conftest import CLI
    proc = subprocess.Popen([CLI, "exec", "--server", daemon.server, "--profile", "e2e-alert", "--",
                             SYSTEM_PYTHON, str(script), str(daemon.workspace), str(daemon.port), "allowed"],
                            cwd=daemon.workspace, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "done" in out
    time.sleep(0.5)
    assert daemon.alerts_for(proc.pid, expect=0) == []
    assert f"(pid {proc.pid}) as agent e2e-alert [exec]" in daemon.log.read_text()
    assert f"(pid {proc.pid}) as agent e2e-match" not in daemon.log.read_text()
