"""A daemon of its own (`agent-sensor run` as a subprocess), for the scenario runner without
--server and for the end-to-end tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

CLI = str(Path(sys.executable).with_name("agent-sensor"))
READY_DEADLINE_S = 60
STOP_DEADLINE_S = 30


class DaemonError(Exception):
    pass


def _answers(server: str) -> bool:
    """Does the API answer a status request? A new client each time: a channel that failed to
    connect waits out a backoff before trying again."""
    import grpc

    from ..client import SensorClient
    try:
        with SensorClient(server, timeout=1.0) as client:
            client.status()
        return True
    except grpc.RpcError:
        return False


def start_daemon(run_dir: Path, profiles_dir: Path, *extra: str) -> tuple[subprocess.Popen, str, Path]:
    """Start it and wait until its API answers; its output goes to run_dir/daemon.log, its alert
    spool to run_dir/alerts.db (a restart with the same run_dir resumes it)."""
    server = f"unix://{run_dir}/run/sensor.sock"
    log = run_dir / "daemon.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([CLI, "run", "-v", "--profiles", str(profiles_dir), "--listen", server,
                                 "--spool", str(run_dir / "alerts.db"), *extra], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DaemonError(f"daemon exited with {proc.returncode}:\n{log.read_text()}")
        if _answers(server):
            return proc, server, log
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise DaemonError(f"daemon not ready after {READY_DEADLINE_S}s:\n{log.read_text()}")


def stop_daemon(proc: subprocess.Popen, log: Path) -> int:
    """SIGTERM, as an operator would; its exit status (a clean stop is 0)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise DaemonError(f"daemon did not stop on SIGTERM:\n{log.read_text()}") from None
