"""The daemon writes each alert to every configured output as well as the gRPC stream: a JSON
lines file in OCSF, syslog over UDP, and stdout in the native schema."""

from __future__ import annotations

import shutil
import socket
import time

import orjson

from .conftest import HERE, Daemon, profile_yaml, start_daemon, stop_daemon


def test_an_alert_reaches_every_output(tmp_path):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    shutil.copy(HERE / "agent_actions.py", workspace / "agent_actions.py")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "kill.yaml").write_text(profile_yaml("e2e-outputs", workspace, 1, "kill"))
    syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    syslog.bind(("127.0.0.1", 0))
    syslog.settimeout(15)
    jsonl = tmp_path / "siem" / "alerts.jsonl"
    proc, server, log = start_daemon(tmp_path, tmp_path / "profiles", "--output", f"jsonl:{jsonl},format=ocsf",
                                     "--output", f"syslog:udp://127.0.0.1:{syslog.getsockname()[1]}",
                                     "--output", "stdout")
    try:
        daemon = Daemon(proc, server, log, workspace, 1)
        result = daemon.run_agent("e2e-outputs", "secret")
        (alert,) = daemon.alerts_for(result.pid)
        message = syslog.recv(65536)
        assert orjson.loads(message.split(b" - ", 1)[1])["id"] == alert["id"]
        deadline = time.monotonic() + 15
        while not jsonl.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        (finding,) = [orjson.loads(line) for line in jsonl.read_text().splitlines()]
        assert finding["class_uid"] == 2004 and finding["metadata"]["uid"] == alert["id"]
        assert finding["evidences"] == [{"file": {"path": "/etc/shadow", "name": "shadow"}}]
    finally:
        assert stop_daemon(proc, log) == 0, log.read_text()
    stdout_records = [orjson.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert [r["id"] for r in stdout_records] == [alert["id"]]


def test_the_config_file_sets_outputs_and_flags_override_it(tmp_path):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    shutil.copy(HERE / "agent_actions.py", workspace / "agent_actions.py")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "kill.yaml").write_text(profile_yaml("e2e-config", workspace, 1, "kill"))
    jsonl = tmp_path / "from-config.jsonl"
    config = tmp_path / "config.yaml"
    # listen and profiles here are overridden by start_daemon's flags; outputs comes from the file.
    config.write_text(f"profiles: [/nonexistent]\nlisten: [unix:///nonexistent/s.sock]\noutputs: ['jsonl:{jsonl}']\n")
    config.chmod(0o644)
    proc, server, log = start_daemon(tmp_path, tmp_path / "profiles", "--config", str(config))
    try:
        result = Daemon(proc, server, log, workspace, 1).run_agent("e2e-config", "secret")
        assert result.returncode == -9
        deadline = time.monotonic() + 15
        while not jsonl.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert orjson.loads(jsonl.read_text().splitlines()[0])["rule"]["kind"] == "RULE_KIND_SECRET_ACCESS"
    finally:
        assert stop_daemon(proc, log) == 0, log.read_text()
