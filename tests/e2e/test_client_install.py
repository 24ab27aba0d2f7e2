"""The client side installs without bcc or root: `pip install` of this checkout into a venv that
cannot see the system's packages (so no bcc) gives a working `agent-sensor status`/`alerts` and
an importable client; its `agent-sensor run` says bcc is missing and how to get it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import Daemon

ROOT = Path(__file__).resolve().parents[2]
CONSUMER = """\
import sys
from sensor.client import SensorClient
with SensorClient(sys.argv[1]) as client:
    print(client.status().version, len(list(client.alerts(backlog=5))))
"""


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory):
    venv = tmp_path_factory.mktemp("client") / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def test_a_pip_installed_client_talks_to_the_daemon_without_bcc(client_venv, daemon: Daemon, tmp_path):
    python, cli = client_venv / "bin" / "python", client_venv / "bin" / "agent-sensor"
    assert subprocess.run([str(python), "-c", "import bcc"], capture_output=True).returncode != 0
    status = subprocess.run([str(cli), "status", "--server", daemon.server], capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert "e2e-kill" in status.stdout
    alerts = subprocess.run([str(cli), "alerts", "--server", daemon.server, "--backlog", "1"], capture_output=True,
                            text=True)
    assert alerts.returncode == 0, alerts.stderr
    (tmp_path / "consumer.py").write_text(CONSUMER)
    consumer = subprocess.run([str(python), str(tmp_path / "consumer.py"), daemon.server], capture_output=True,
                              text=True)
    assert consumer.returncode == 0 and consumer.stdout.startswith("0.1.0 "), consumer.stderr


def test_the_daemon_of_a_client_only_install_says_how_to_get_bcc(client_venv, tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "p.yaml").write_text("name: x\n")
    done = subprocess.run([str(client_venv / "bin" / "agent-sensor"), "run", "--profiles", str(tmp_path / "profiles"),
                           "--spool", str(tmp_path / "a.db"), "--listen", f"unix://{tmp_path}/s.sock"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "bcc" in done.stderr and "python3-bpfcc" in done.stderr
