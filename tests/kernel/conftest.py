"""Fixtures for the probe tests on the real kernel (root + bcc; every test here is marked `bpf`).

- `sensor_bpf`: SensorBPF loaded once per session (from the compiled-programs cache; compiled
  first if this kernel has nothing cached).
- `events`: decoded events from the ring buffer, with `wait_for(pids, until)` that polls until a
  condition on the events of those pids holds or a deadline passes. Deadlines only bound waiting:
  no test asserts on how long anything took.
- `tracker`: tracks pids and hands out agent slots unique to the test; at teardown it removes
  every tracked-map entry carrying one of its slots (including entries the kernel added at fork
  or at an exec match) and clears the exec matches, so tests do not affect each other.
- `spawn`: forks a copy of the test process that blocks on a pipe until `go()`, so the test can
  track it first and the child then does exactly one thing. Children always leave with
  os._exit: a normal interpreter exit would run the parent's atexit and pytest clean-ups.
"""

from __future__ import annotations

import itertools
import os
import select
import signal
import socket
import time
import traceback
from typing import Callable, Iterable

import pytest

from sensor.decode import Event, decode
from sensor.kernel_rules import compile_policy
from sensor.profiles import load_profile_file

KILLED = -9  # a child's wait status when SIGKILL ended it
WAIT_S = 5.0  # upper bound on any wait for an event; reached only when a test is failing


@pytest.fixture(scope="session")
def sensor_bpf():
    from sensor.bpf_loader import SensorBPF

    sensor = SensorBPF()
    sensor.load()
    sensor.send_all_execs(True)  # as a daemon whose profiles match by selectors (the examples')
    try:
        yield sensor
    finally:
        sensor.close()


@pytest.fixture
def policy(sensor_bpf, tracker, tmp_path):
    """Install a profile's compiled kernel rules on a fresh slot; removed afterwards."""
    installed = []

    def install(yaml_text: str) -> int:
        path = tmp_path / f"p{len(installed)}.yaml"
        path.write_text(yaml_text)
        slot = tracker.new_slot()
        sensor_bpf.set_policy(slot, compile_policy(load_profile_file(path, homes=["/root"])))
        installed.append(slot)
        return slot

    yield install
    for slot in installed:
        sensor_bpf.clear_policy(slot)


def received_bytes(sock: socket.socket) -> int:
    """Bytes that reached the listener from every connection it got (0 if none came)."""
    total = 0
    sock.settimeout(0.5)
    while True:
        try:
            conn, _ = sock.accept()
        except socket.timeout:
            return total
        with conn:
            conn.settimeout(2)
            while chunk := conn.recv(65536):
                total += len(chunk)


# -- events --------------------------------------------------------------------------------------

class EventLog:
    """Every event decoded since the last reset, so a wait never loses events of other pids."""

    def __init__(self, source):
        self._source = source
        self.seen: list[Event] = []

    def reset(self) -> None:
        while self._source.read(0):
            pass
        self.seen.clear()

    def raw(self, timeout_ms: int) -> list[bytes]:
        """The next undecoded events (of every pid), not kept: for counting a burst."""
        return self._source.read(timeout_ms)

    def _pump(self, timeout_ms: int) -> None:
        for raw in self._source.read(timeout_ms):
            self.seen.append(decode(raw))

    def of(self, pids: Iterable[int]) -> list[Event]:
        pids = set(pids)
        return [e for e in self.seen if e.hdr.pid in pids]

    def wait_for(self, pids: Iterable[int], until: Callable[[list[Event]], bool],
                 timeout: float = WAIT_S) -> list[Event]:
        """The events of `pids` (hdr.pid) in ring-buffer order, once `until(events)` holds or the
        deadline passes (the caller's assertions then report what was missing)."""
        pids = set(pids)
        deadline = time.monotonic() + timeout
        while True:
            self._pump(0)
            got = self.of(pids)
            if until(got):
                return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return got
            self._pump(max(1, min(50, int(remaining * 1000))))

    def wait_exit(self, pid: int, timeout: float = WAIT_S) -> list[Event]:
        """Events of pid up to and including its EXIT event (the kernel emits it last)."""
        return self.wait_for([pid], lambda evs: any(e.kind == "exit" for e in evs), timeout)


@pytest.fixture(scope="session")
def _event_log(sensor_bpf):
    from sensor.source import RingBufferSource

    # One source per session: opening the ring buffer twice would deliver every event twice.
    return EventLog(RingBufferSource(sensor_bpf))


@pytest.fixture
def events(_event_log) -> EventLog:
    _event_log.reset()
    yield _event_log
    _event_log.seen.clear()


# -- tracked map ---------------------------------------------------------------------------------

_slots = itertools.count(100)


class Tracker:
    def __init__(self, sensor_bpf):
        self.sensor = sensor_bpf
        self.slots: set[int] = set()
        self.pids: set[int] = set()

    def new_slot(self) -> int:
        slot = next(_slots)
        self.slots.add(slot)
        return slot

    def track(self, pid: int, slot: int | None = None, root_pid: int | None = None,
              flags: int = 0) -> int:
        if slot is None:
            slot = self.new_slot()
        self.slots.add(slot)
        self.pids.add(pid)
        self.sensor.track(pid, slot, pid if root_pid is None else root_pid, flags)
        return slot

    def cleanup(self) -> None:
        self.sensor.set_exec_matches({})
        for pid, entry in self.sensor.tracked().items():
            if pid in self.pids or entry.slot in self.slots:
                self.sensor.untrack(pid)


@pytest.fixture
def tracker(sensor_bpf):
    t = Tracker(sensor_bpf)
    try:
        yield t
    finally:
        t.cleanup()
        left = {pid for pid, e in sensor_bpf.tracked().items() if pid in t.pids or e.slot in t.slots}
        assert not left, f"tracked entries left behind: {left}"


# -- child processes -----------------------------------------------------------------------------

class Child:
    """A fork of the test process. It waits for go(), runs action(child), optionally waits for
    release(), then _exits 0 (1 if the action raised). The action runs in the child and may use
    send() to pass bytes back and wait_release() to block until the test calls release()."""

    def __init__(self, action: Callable[["Child"], None], hold: bool = False):
        go_r, go_w = os.pipe()
        rel_r, rel_w = os.pipe()
        msg_r, msg_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.close(go_w)
                os.close(rel_w)
                os.close(msg_r)
                self._rel_r, self._msg_w = rel_r, msg_w
                if os.read(go_r, 1) == b"g":
                    action(self)
                    if hold:
                        self.wait_release()
                    code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(go_r)
        os.close(rel_r)
        os.close(msg_w)
        self.pid = pid
        self._go_w, self._rel_w, self._msg_r = go_w, rel_w, msg_r
        self._status: int | None = None

    # child side
    def send(self, data: bytes) -> None:
        os.write(self._msg_w, len(data).to_bytes(4, "little") + data)

    def wait_release(self) -> None:
        os.read(self._rel_r, 1)

    # parent side
    def go(self) -> "Child":
        os.write(self._go_w, b"g")
        return self

    def release(self) -> None:
        os.write(self._rel_w, b"r")

    def _read_exact(self, n: int, deadline: float) -> bytes:
        buf = b""
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._msg_r], [], [], max(0.0, remaining))
            if not ready:
                raise TimeoutError(f"child {self.pid} sent nothing within {WAIT_S} s")
            chunk = os.read(self._msg_r, n - len(buf))
            if not chunk:
                raise EOFError(f"child {self.pid} exited before sending")
            buf += chunk
        return buf

    def recv(self, timeout: float = WAIT_S) -> bytes:
        deadline = time.monotonic() + timeout
        n = int.from_bytes(self._read_exact(4, deadline), "little")
        return self._read_exact(n, deadline)

    def recv_int(self) -> int:
        return int(self.recv())

    def wait(self, timeout: float = WAIT_S) -> int:
        """Reap the child; its exit code (-signal if killed). Kills it if the deadline passes."""
        if self._status is not None:
            return self._status
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._status = os.waitstatus_to_exitcode(status)
                return self._status
            if time.monotonic() >= deadline:
                self.kill()
                raise TimeoutError(f"child {self.pid} still running after {timeout} s: killed")
            time.sleep(0.005)

    def kill(self) -> None:
        if self._status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status = os.waitpid(self.pid, 0)
            self._status = os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        for fd in (self._go_w, self._rel_w, self._msg_r):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def spawn():
    children: list[Child] = []

    def make(action: Callable[[Child], None], hold: bool = False) -> Child:
        child = Child(action, hold)
        children.append(child)
        return child

    yield make
    for child in children:
        child.kill()
        child.close()

