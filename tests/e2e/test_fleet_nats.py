"""docs/FLEET.md's worked example: examples/forward_to_nats.py forwards a host's alerts into a
real NATS JetStream server (started here, on loopback); restarted, it resumes after the last
alert in the stream: every alert once, in order."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nats
import orjson
import pytest

from .conftest import Daemon, free_port

ROOT = Path(__file__).resolve().parents[2]
FORWARDER = ROOT / "examples" / "forward_to_nats.py"
DEADLINE_S = 20


@pytest.fixture
def nats_server(tmp_path):
    if not shutil.which("nats-server"):
        pytest.fail("nats-server is not installed (make test installs it: check-tools)")
    port = free_port()
    proc = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"nats://127.0.0.1:{port}"
    deadline = time.monotonic() + DEADLINE_S
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        assert time.monotonic() < deadline, "nats-server did not start"
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait()


def stored_ids(url: str) -> list[int]:
    async def read() -> list[int]:
        nc = await nats.connect(url)
        js = nc.jetstream()
        sub = await js.pull_subscribe("agent-sensor.alerts.test-host", durable=None, stream="AGENT_SENSOR")
        ids = []
        try:
            while True:
                for m in await sub.fetch(100, timeout=1):
                    ids.append(orjson.loads(m.data)["id"])
        except asyncio.TimeoutError:  # nothing more stored (nats-py >= 2.16 raises the plain asyncio one)
            pass
        await nc.close()
        return [int(i) for i in ids]
    return asyncio.run(read())


def start_forwarder(daemon: Daemon, url: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(FORWARDER), "--server", daemon.server, "--nats", url,
                             "--host", "test-host"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("forwarding alerts after #")
    return proc


def wait_for(url: str, condition) -> list[int]:
    deadline = time.monotonic() + DEADLINE_S
    while not condition(ids := stored_ids(url)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return ids


def test_alerts_reach_jetstream_once_across_a_forwarder_restart(daemon: Daemon, nats_server):
    first = daemon.run_agent("e2e-alert", "secret")
    (alert,) = daemon.alerts_for(first.pid)
    forwarder = start_forwarder(daemon, nats_server)
    ids = wait_for(nats_server, lambda ids: int(alert["id"]) in ids)
    assert int(alert["id"]) in ids and ids == sorted(set(ids))
    forwarder.terminate()
    forwarder.wait()
    second = daemon.run_agent("e2e-alert", "secret")  # raised while no forwarder runs
    (missed,) = daemon.alerts_for(second.pid)
    forwarder = start_forwarder(daemon, nats_server)
    try:
        after = wait_for(nats_server, lambda ids: int(missed["id"]) in ids)
    finally:
        forwarder.terminate()
        forwarder.wait()
    assert after[:len(ids)] == ids and int(missed["id"]) in after
    assert after == sorted(set(after))  # in order, none twice
