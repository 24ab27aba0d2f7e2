"""The daemon writes each alert to every configured output as well as the gRPC stream: a JSON
lines file in OCSF, syslog over UDP, and stdout in the native schema."""

from __future__ import annotations

import socket
import time

import orjson

from .conftest import started_kill_daemon, stop_daemon


def test_an_alert_reaches_every_output(tmp_path):
    syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    syslog.bind(("127.0.0.1", 0))
    syslog.settimeout(15)
    jsonl = tmp_path / "siem" / "alerts.jsonl"
    daemon = started_kill_daemon(tmp_path, "e2e-outputs", "--output", f"jsonl:{jsonl},format=ocsf",
                                 "--output", f"syslog:udp://127.0.0.1:{syslog.getsockname()[1]}", "--output", "stdout")
    try:
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
        assert stop_daemon(daemon.proc, daemon.log) == 0, daemon.log.read_text()
    stdout_records = [orjson.loads(line) for line in daemon.log.read_text().splitlines() if line.startswith("{")]
    assert [r["id"] for r in stdout_records] == [alert["id"]]


def test_the_config_file_sets_outputs_and_flags_override_it(tmp_path):
    jsonl = tmp_path / "from-config.jsonl"
    config = tmp_path / "config.yaml"
    # listen and profiles here are overridden by start_daemon's flags; outputs comes from the file.
    config.write_text(f"profiles: [/nonexistent]\nlisten: [unix:///nonexistent/s.sock]\noutputs: ['jsonl:{jsonl}']\n")
    config.chmod(0o644)
    daemon = started_kill_daemon(tmp_path, "e2e-config", "--config", str(config))
    try:
        result = daemon.run_agent("e2e-config", "secret")
        assert result.returncode == -9
        deadline = time.monotonic() + 15
        while not jsonl.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert orjson.loads(jsonl.read_text().splitlines()[0])["rule"]["kind"] == "RULE_KIND_SECRET_ACCESS"
    finally:
        assert stop_daemon(daemon.proc, daemon.log) == 0, daemon.log.read_text()
