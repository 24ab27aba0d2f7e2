"""Enforcement benchmark (`make bench`; not a test): how long a user-space kill takes from the
syscall, and how many bytes an in-kernel kill lets through. Runs a real daemon and real agents
on this machine, prints the table and writes it into docs/BENCHMARKS.md.

    sudo .venv/bin/python tests/bench/enforcement.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sensor.client import SensorClient
from tests.bench.report import write_section

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("agent-sensor"))
DOC = ROOT / "docs" / "BENCHMARKS.md"

PROFILE = """\
name: bench
files:
  read: ["/usr/**", "/etc/**", "/proc/**", "/dev/**", "{work}/**"]
  write: ["{work}/out/**", "/dev/null"]
secrets: ["{work}/secret"]
network:
  connect: ["127.0.0.1:{port}"]
exec: ["/usr/bin/python3*"]
on_violation: kill
"""
# User space decides a write outside files.write; the kernel decides a secret.
USER_SPACE_AGENT = "import time; open({forbidden!r}, 'w'); time.sleep(10)"
KERNEL_AGENT = """\
import socket, time
s = socket.create_connection(('127.0.0.1', {port}))
data = open({secret!r}, 'rb').read()
s.sendall(data)
time.sleep(10)
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Listener:
    """Counts every byte any connection delivers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.received = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn):
        with conn:
            while chunk := conn.recv(65536):
                self.received += len(chunk)


def run_agent(server: str, code: str, cwd: Path) -> int:
    proc = subprocess.run([CLI, "exec", "--server", server, "--profile", "bench", "--",
                           "/usr/bin/python3", "-c", code], cwd=cwd, capture_output=True, timeout=60)
    return proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    listener = Listener()
    with tempfile.TemporaryDirectory(prefix="agent-sensor-bench-") as tmp:
        work = Path(tmp)
        (work / "profiles").mkdir()
        (work / "profiles" / "bench.yaml").write_text(PROFILE.format(work=work, port=listener.port))
        secret = work / "secret"
        secret.write_bytes(b"S" * 4096)
        server = f"unix://{work}/sensor.sock"
        daemon = subprocess.Popen([CLI, "run", "--profiles", str(work / "profiles"), "--listen", server,
                                   "--spool", str(work / "alerts.db")],  # this run's alerts only
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = SensorClient(server)
            for _ in range(300):
                try:
                    client.status()
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    time.sleep(0.2)
            codes = [run_agent(server, USER_SPACE_AGENT.format(forbidden=str(work / "forbidden")), work)
                     for _ in range(args.runs)]
            kernel_codes = [run_agent(server, KERNEL_AGENT.format(port=listener.port, secret=str(secret)), work)
                            for _ in range(args.runs)]
            time.sleep(1)
            alerts = list(client.alerts(backlog=10000))
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
    user = [a for a in alerts if not a.action.in_kernel]
    kernel = [a for a in alerts if a.action.in_kernel]
    ms = lambda a, b: (b.ToNanoseconds() - a.ToNanoseconds()) / 1e6  # noqa: E731
    decide = [ms(a.timing.event_time, a.timing.decided_time) for a in user]
    act = [ms(a.timing.event_time, a.timing.action_time) for a in user]
    rows = [
        ("user-space kill: syscall -> decision (ms)", decide),
        ("user-space kill: syscall -> tree killed (ms)", act),
    ]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on this project's CI machine kind ({os.cpu_count()} cores, "
        f"kernel {os.uname().release}), {args.runs} runs each, one daemon, agents run one after another.",
        "",
        "| measure | runs | p50 | p90 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    for name, values in rows:
        if values:
            lines.append(f"| {name} | {len(values)} | {percentile(values, 50):.2f} | {percentile(values, 90):.2f} | "
                         f"{percentile(values, 99):.2f} | {max(values):.2f} |")
    lines += [
        "",
        "| in-kernel kill (secret read, then sent to a loopback listener) | value |",
        "|---|---|",
        f"| agents run | {len(kernel_codes)} |",
        f"| agents killed by SIGKILL | {sum(1 for c in kernel_codes if c == -9)} |",
        f"| alerts saying the kernel acted | {len(kernel)} |",
        f"| bytes of the secret that reached the listener | {listener.received} |",
        "",
        f"User-space kills: {sum(1 for c in codes if c == -9)} of {len(codes)} agents killed; "
        f"mean syscall -> kill {statistics.mean(act):.2f} ms." if act else "No user-space alerts were collected.",
        "",
        "Reproduce: `make bench` (root).",
    ]
    table = "\n".join(lines)
    print(table)
    write_section(DOC, "enforcement", table)


if __name__ == "__main__":
    main()
