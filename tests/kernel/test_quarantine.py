"""sensor/quarantine.py on the real kernel: cgroup v2 freeze, cgroup_skb network cut, release,
kill, the SIGSTOP fallback, the fork race, and what close() or a crash leaves behind.

The isolated "agent" is a real process tree (tree_worker below): a parent Python process and the
child it forks, each appending "<pid> <n>" to a shared counter file every 20 ms, sending the same
line on a TCP connection it holds to a loopback listener of the test (parent over 127.0.0.1,
child over ::1), opening a fresh connection to a second "probe" listener every 5th round, and
listening itself (connections to it tell whether packets reach its sockets).

The network check is a real one: with the programs still attached, the test thaws the incident
cgroup for a moment. The counter file grows (so the processes really ran), yet nothing they send
arrives - neither on the connections they opened before isolation (cut by socket cookie at the
v2 root) nor on fresh ones (opened inside the incident cgroup) - and connections to their
listener time out. After release the same traffic flows again.

Every test cleans up in fixtures even when it fails: the workers are SIGKILLed, any incident
cgroup left is killed and removed, and any as_isolate_* program left attached is detached - and
then the test errors, because a leftover is a bug. Tests use their own parent cgroup
(agent-sensor-test-<pid>), removed at the end, so a daemon running on the machine is not touched.
"""

from __future__ import annotations

import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from sensor import quarantine as qmod
from sensor.probes import cgroup_v2_root
from sensor.processes import cgroup_path
from sensor.quarantine import Isolation, Quarantine, collect_facts

ROOT = cgroup_v2_root()
PARENT = f"agent-sensor-test-{os.getpid()}"
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 5.0

pytestmark = pytest.mark.skipif(ROOT is None, reason="no cgroup v2 hierarchy mounted")

TREE_WORKER = textwrap.dedent("""
    import os, socket, sys, time
    counter, held_v4, held_v6, probe = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    out = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def run(held_addr):
        pid = os.getpid()
        held = socket.create_connection(held_addr)
        held.sendall(f"hello {pid}\\n".encode())
        held.setblocking(False)
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(64)
        os.write(1, f"ready {pid} {lst.getsockname()[1]}\\n".encode())
        n = 0
        while True:
            n += 1
            line = f"{pid} {n}\\n".encode()
            os.write(out, line)
            try:
                held.send(line)
            except OSError:
                pass
            if n % 5 == 0:
                try:
                    s = socket.create_connection(("127.0.0.1", probe), timeout=0.2)
                    s.sendall(f"{pid}\\n".encode())
                    s.close()
                except OSError:
                    pass
            time.sleep(0.02)

    if os.fork() == 0:
        run(("::1", held_v6))
    else:
        run(("127.0.0.1", held_v4))
""")

# Forks as fast as it can (each child forks a grandchild; all then sleep), so isolate() races
# with fork. Stops by itself after MAX children.
FORKER = textwrap.dedent("""
    import os, sys, time
    os.write(1, f"ready {os.getpid()}\\n".encode())
    for _ in range(int(sys.argv[1])):
        if os.fork() == 0:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            time.sleep(60)
            os._exit(0)
        time.sleep(0.002)  # paced, so it is still forking while isolate() runs
    time.sleep(60)
""")

# A daemon that crashes right after isolating: no close(), no atexit clean-up.
CRASHER = textwrap.dedent("""
    import json, os, sys
    from dataclasses import asdict
    sys.path.insert(0, sys.argv[1])
    from sensor.quarantine import Quarantine
    q = Quarantine(parent=sys.argv[2])
    iso = q.isolate(sys.argv[3], [int(p) for p in sys.argv[4:]])
    os.write(1, json.dumps({"isolation": asdict(iso), "program_ids": sorted(q.program_ids)}).encode())
    os._exit(0)
""")


# -- helpers -------------------------------------------------------------------------------------

def parent_dir() -> Path:
    return ROOT / PARENT


def rel(cg: str | Path) -> str:
    return "/" + str(Path(cg).relative_to(ROOT))


def events(cg: str | Path) -> dict[str, str]:
    return qmod._events(Path(cg))


def set_freeze(cg: str | Path, value: str) -> None:
    qmod._write(Path(cg) / "cgroup.freeze", value)
    assert qmod._wait_event(Path(cg), "frozen", value, WAIT_S), f"{cg}: frozen never became {value}"


def state(pid: int) -> str | None:
    p = qmod._stat(pid)
    return p.state if p else None


def gone_or_zombie(pid: int) -> bool:
    return state(pid) in (None, "Z", "X")


def wait_until(cond, timeout: float = WAIT_S, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
    return True


def size(path: Path) -> int:
    return path.stat().st_size


def grows(path: Path, pause: float = 0.3) -> bool:
    before = size(path)
    time.sleep(pause)
    return size(path) > before


def connects(port: int, timeout: float = 0.3) -> bool:
    """Does a TCP handshake with 127.0.0.1:port complete (a listener's backlog answers even while
    its process is frozen, so only a packet drop makes this time out)?"""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
        return True
    except OSError:
        return False


# Ids of the isolate.c programs loaded by this test run (its Quarantine objects and the crashed
# one): another sensor running on the machine may have its own attached, which are not ours to
# check or clean.
MY_PROGRAM_IDS: set[int] = set()


def make_quarantine(**kwargs) -> Quarantine:
    obj = Quarantine(parent=PARENT, **kwargs)
    _objects.append(obj)
    return obj


_objects: list[Quarantine] = []


def our_attachments() -> list[tuple[str, str, int, str]]:
    """(cgroup, program, id, attach type) of every isolate.c program of this test run attached
    anywhere, and of any program at all under the test's parent cgroup."""
    for obj in _objects:
        MY_PROGRAM_IDS.update(obj.program_ids)
    proc = subprocess.run(["bpftool", "cgroup", "tree", "-j"], capture_output=True, text=True, check=True)
    found = []
    for entry in json.loads(proc.stdout or "[]"):
        ours = entry["cgroup"].startswith(str(parent_dir()) + "/")
        for prog in entry.get("programs", []):
            if ours or (prog.get("name") in qmod.OUR_PROGRAMS and prog["id"] in MY_PROGRAM_IDS):
                found.append((entry["cgroup"], prog["name"], prog["id"], prog["attach_type"]))
    return found


def read_lines(proc: subprocess.Popen, count: int, timeout: float = WAIT_S) -> list[str]:
    lines, buf = [], b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while len(lines) < count:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"worker {proc.pid} printed {lines!r} then nothing")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise EOFError(f"worker {proc.pid} exited ({proc.poll()}) after {lines!r}")
        buf += chunk
        while b"\n" in buf and len(lines) < count:
            line, buf = buf.split(b"\n", 1)
            lines.append(line.decode())
    return lines


def force_clean() -> list[str]:
    """Kill and remove every incident cgroup under the test parent and detach every isolate.c
    program still attached; what had to be cleaned (empty when the code under test did it)."""
    left = []
    if parent_dir().is_dir():
        for cg in sorted(parent_dir().glob("incident-*")):
            left.append(f"cgroup {cg.name} (procs {qmod._procs(cg)})")
            try:
                qmod._write(cg / "cgroup.kill", "1")
            except OSError:
                pass
            wait_until(lambda: not qmod._procs(cg))
            try:
                cg.rmdir()
            except OSError as exc:
                left.append(f"cannot remove {cg}: {exc}")
    for cg, name, prog_id, atype in our_attachments():
        left.append(f"{name} (id {prog_id}) on {cg} {atype}")
        qmod._detach_by_id(Path(cg), prog_id, qmod.ATTACH_TYPES[atype])
    return left


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _parent_cgroup():
    assert not our_attachments(), "isolate.c programs attached before the tests started"
    try:
        yield
    finally:
        force_clean()
        try:
            parent_dir().rmdir()
        except FileNotFoundError:
            pass


@pytest.fixture(scope="module")
def q():
    quarantine = make_quarantine()
    ok, why = quarantine.available
    assert ok, why
    try:
        yield quarantine
    finally:
        quarantine.close()


@pytest.fixture(autouse=True)
def no_leftovers(request):
    """After each test (and the fixtures it used): no incident cgroup, no attached program."""
    yield
    left = force_clean()
    assert not left, f"left behind: {left}"


class Server:
    """Loopback listeners of the test: `held_v4`/`held_v6` receive the workers' long-lived
    connections (bytes counted per worker pid), `probe` their fresh connections (one per hit)."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.held_bytes: dict[int, int] = {}
        self.probe_hits: list[tuple[float, int]] = []
        self.listeners = {}
        for name, family, addr in (("held_v4", socket.AF_INET, "127.0.0.1"),
                                   ("held_v6", socket.AF_INET6, "::1"),
                                   ("probe", socket.AF_INET, "127.0.0.1")):
            s = socket.socket(family)
            s.bind((addr, 0))
            s.listen(128)
            s.setblocking(False)
            self.listeners[name] = s
            self.sel.register(s, selectors.EVENT_READ, ("listen", name))
        self.port = {name: s.getsockname()[1] for name, s in self.listeners.items()}
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        conns: dict[socket.socket, dict] = {}
        while not self._stop:
            for key, _ in self.sel.select(0.05):
                kind, name = key.data
                if kind == "listen":
                    try:
                        c, _ = key.fileobj.accept()
                    except OSError:
                        continue
                    c.setblocking(False)
                    conns[c] = {"name": name, "buf": b"", "pid": None}
                    self.sel.register(c, selectors.EVENT_READ, ("conn", name))
                    continue
                c = key.fileobj
                try:
                    data = c.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                st = conns[c]
                if not data:
                    if st["name"] == "probe" and st["buf"].strip().isdigit():
                        with self.lock:
                            self.probe_hits.append((time.monotonic(), int(st["buf"])))
                    self.sel.unregister(c)
                    c.close()
                    del conns[c]
                    continue
                if st["name"] == "probe":
                    st["buf"] += data
                    continue
                if st["pid"] is None:
                    st["buf"] += data
                    if b"\n" not in st["buf"]:
                        continue
                    first, rest = st["buf"].split(b"\n", 1)
                    st["pid"] = int(first.split()[1])
                    data = rest
                with self.lock:
                    self.held_bytes[st["pid"]] = self.held_bytes.get(st["pid"], 0) + len(data)
        for c in conns:
            c.close()

    def held(self, pid: int) -> int:
        with self.lock:
            return self.held_bytes.get(pid, 0)

    def hits(self, pid: int, since: float = 0.0) -> int:
        with self.lock:
            return sum(1 for t, p in self.probe_hits if p == pid and t >= since)

    def close(self):
        self._stop = True
        self._thread.join(2)
        for s in self.listeners.values():
            s.close()


@pytest.fixture
def server():
    s = Server()
    try:
        yield s
    finally:
        s.close()


class Tree:
    def __init__(self, proc: subprocess.Popen, counter: Path, lines: list[str]):
        self.proc = proc
        self.counter = counter
        info = {int(pid): int(port) for _, pid, port in (line.split() for line in lines)}
        self.parent = proc.pid
        (self.child,) = [p for p in info if p != proc.pid]
        self.listen_port = info

    @property
    def pids(self) -> set[int]:
        return {self.parent, self.child}


def _kill_quietly(pids) -> None:
    for pid in pids:
        qmod._signal(pid, signal.SIGKILL)


@pytest.fixture
def tree(tmp_path, server, q):
    script = tmp_path / "tree_worker.py"
    script.write_text(TREE_WORKER)
    counter = tmp_path / "counter.txt"
    proc = subprocess.Popen([sys.executable, str(script), str(counter), str(server.port["held_v4"]),
                             str(server.port["held_v6"]), str(server.port["probe"])],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    t = None
    try:
        t = Tree(proc, counter, read_lines(proc, 2))
        # the network works before isolation: both reach the probe listener
        assert wait_until(lambda: all(server.hits(p) for p in t.pids)), "workers never reached the probe listener"
        yield t
    finally:
        for inc in list(q._incidents.values()):   # a failed test may leave an isolation behind
            q.kill(inc.isolation)
        _kill_quietly([proc.pid] + ([t.child] if t else []))
        proc.wait(WAIT_S)
        proc.stdout.close()


# -- tests ---------------------------------------------------------------------------------------

def test_isolate_freezes_tree_and_cuts_network_release_restores(q, tree, server):
    before = {pid: cgroup_path(pid) for pid in tree.pids}
    for pid in tree.pids:
        assert connects(tree.listen_port[pid]), "worker listener unreachable before isolation"

    iso = q.isolate("net", [tree.parent])   # the child is found as a descendant

    assert iso.method == "cgroup", iso.detail
    assert iso.frozen and iso.network_cut, iso.detail
    assert set(iso.pids) == tree.pids
    assert iso.cgroup == str(parent_dir() / "incident-net")
    assert iso.original_cgroups == before
    for pid in tree.pids:
        assert cgroup_path(pid) == rel(iso.cgroup)
    assert events(iso.cgroup)["frozen"] == "1"
    assert not grows(tree.counter), "counter file grows while frozen"
    attached = {(c, name, atype) for c, name, _, atype in our_attachments()}
    assert {(iso.cgroup, "as_isolate_all", t) for t in ("cgroup_inet_ingress", "cgroup_inet_egress")} <= attached
    assert {(str(ROOT), "as_isolate_sock", t) for t in ("cgroup_inet_ingress", "cgroup_inet_egress")} <= attached

    # Ingress to a socket opened before isolation: its SYNs are dropped even while frozen.
    for pid in tree.pids:
        assert not connects(tree.listen_port[pid]), f"{pid}'s listener still answers"

    # Thaw with the programs attached: the processes run but nothing they send arrives.
    time.sleep(0.1)
    held = {pid: server.held(pid) for pid in tree.pids}
    since = time.monotonic()
    set_freeze(iso.cgroup, "0")
    try:
        assert grows(tree.counter, 0.8), "counter did not grow while thawed: the check would prove nothing"
        for pid in tree.pids:
            assert server.held(pid) == held[pid], f"{pid} sent data on its old connection through the cut"
            assert server.hits(pid, since) == 0, f"{pid} opened a new connection through the cut"
            assert not connects(tree.listen_port[pid])
    finally:
        set_freeze(iso.cgroup, "1")
    assert not grows(tree.counter, 0.2)

    summary = q.release(iso)

    assert "removed" in summary, summary
    assert not Path(iso.cgroup).exists()
    assert not our_attachments(), "programs still attached after release"
    for pid in tree.pids:
        assert cgroup_path(pid) == before[pid]
        assert state(pid) not in ("T", "t")
    assert grows(tree.counter), "counter does not grow after release"
    since = time.monotonic()
    assert wait_until(lambda: all(server.hits(p, since) for p in tree.pids)), "no new connection after release"
    for pid in tree.pids:
        assert connects(tree.listen_port[pid], timeout=2), f"{pid}'s listener unreachable after release"


def test_collect_facts_on_isolated_tree(q, tree, server):
    iso = q.isolate("facts", [tree.parent, tree.child])
    try:
        facts = collect_facts(iso.pids + [999_999_999])
    finally:
        q.release(iso)
    assert facts["gone"] == [999_999_999]
    procs = {p["pid"]: p for p in facts["processes"]}
    assert set(procs) == tree.pids
    for pid, p in procs.items():
        assert p["ppid"] == (tree.parent if pid == tree.child else os.getpid())
        assert p["exe"] and os.path.basename(p["exe"]).startswith("python")
        assert "tree_worker.py" in " ".join(p["cmdline"])
        assert p["user"] == "root" and p["uid"] == 0
        assert p["start_time"] > 0 and p["start_ticks"]
        assert p["state"].startswith("S")                       # a frozen task sleeps in the trap
        assert p["cgroup"] == rel(iso.cgroup)
        files = {f["target"]: f for f in p["open_files"]}
        assert files[str(tree.counter)]["kind"] == "file"
        assert any(f["kind"] == "pipe" for f in p["open_files"])  # stdout
        socks = p["sockets"]
        held_port = server.port["held_v6" if pid == tree.child else "held_v4"]
        held = [s for s in socks if s["protocol"] == "tcp" and s["remote"]["port"] == held_port]
        assert len(held) == 1, socks
        assert held[0]["state"] == "ESTABLISHED"
        assert held[0]["family"] == ("inet6" if pid == tree.child else "inet")
        assert held[0]["remote"]["address"] == ("::1" if pid == tree.child else "127.0.0.1")
        assert files[f"socket:[{held[0]['inode']}]"]["kind"] == "socket"
        listening = [s for s in socks if s["state"] == "LISTEN"]
        assert [s["local"]["port"] for s in listening] == [tree.listen_port[pid]]
    json.dumps(facts)  # goes into the incident record as is


def test_kill_ends_every_process_and_removes_the_cgroup(q, tree):
    iso = q.isolate("kill", [tree.parent])
    assert iso.frozen
    summary = q.kill(iso)
    assert "cgroup.kill" in summary, summary
    assert wait_until(lambda: all(gone_or_zombie(p) for p in tree.pids)), {p: state(p) for p in tree.pids}
    assert not Path(iso.cgroup).exists()
    assert not our_attachments()


def test_sigstop_fallback_without_cgroup_v2(tree):
    q0 = Quarantine(cgroup_root=None)
    ok, why = q0.available
    assert not ok and "cgroup v2" in why
    iso = q0.isolate("nocg", [tree.parent])
    try:
        assert iso.method == "sigstop" and iso.cgroup is None
        assert not iso.network_cut and not iso.frozen
        assert "WARNING" in iso.detail and "cgroup" in iso.detail, iso.detail
        assert set(iso.pids) == tree.pids
        assert wait_until(lambda: all(state(p) == "T" for p in tree.pids)), {p: state(p) for p in tree.pids}
        assert not grows(tree.counter)
    finally:
        summary = q0.release(iso)
        q0.close()
    assert "SIGCONT" in summary
    assert wait_until(lambda: all(state(p) not in ("T", "t") for p in tree.pids))
    assert grows(tree.counter)


def test_tree_already_stopped_by_the_kernel_action_freezes_and_release_resumes_it(q, tree):
    # on_violation: quarantine first SIGSTOPs the agent in the kernel; the daemon then isolates.
    for pid in tree.pids:
        os.kill(pid, signal.SIGSTOP)
    assert wait_until(lambda: all(state(p) == "T" for p in tree.pids))
    iso = q.isolate("stopped", [tree.parent])
    assert iso.frozen and iso.network_cut and set(iso.pids) == tree.pids, iso.detail
    assert "stopped" in iso.detail
    summary = q.release(iso)
    assert "SIGCONT" in summary, summary
    assert wait_until(lambda: all(state(p) not in ("T", "t") for p in tree.pids))
    assert grows(tree.counter)


def test_process_forked_during_isolate_ends_up_inside(q, tmp_path):
    script = tmp_path / "forker.py"
    script.write_text(FORKER)
    proc = subprocess.Popen([sys.executable, str(script), "300"], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    iso = None
    try:
        read_lines(proc, 1)
        time.sleep(0.05)          # forking is under way
        iso = q.isolate("forks", [proc.pid])
        assert iso.method == "cgroup" and iso.frozen, iso.detail

        def descendants() -> list[int]:
            table = qmod._scan()
            return [p for p in qmod._family([proc.pid], table, set()) if qmod._alive(table[p])]

        family = descendants()
        assert len(family) > 3, "the forker had not forked yet: no race was exercised"
        assert len(family) < 1 + 2 * 300, "the forker had finished: no race was exercised"
        outside = [p for p in family if cgroup_path(p) != rel(iso.cgroup)]
        assert not outside, f"{len(outside)} of {len(family)} escaped: {outside[:10]}"
        assert set(family) <= set(iso.pids)
        time.sleep(0.2)           # frozen: nothing new appears, nothing leaves
        assert descendants() == family
        assert events(iso.cgroup)["frozen"] == "1"
    finally:
        if iso is not None:
            q.kill(iso)
        _kill_quietly([proc.pid])
        proc.wait(WAIT_S)
        proc.stdout.close()
    assert not Path(iso.cgroup).exists()


def test_close_keeps_freeze_and_a_new_quarantine_reuses_the_parent(tree, tmp_path):
    q1 = make_quarantine()
    iso = q1.isolate("restart", [tree.parent])
    q2 = None
    try:
        assert iso.frozen and iso.network_cut, iso.detail
        q1.close()
        # programs gone, freeze kept
        assert not our_attachments()
        assert events(iso.cgroup)["frozen"] == "1"
        assert set(qmod._procs(Path(iso.cgroup))) == tree.pids
        assert not grows(tree.counter, 0.2)
        # what a crash could leave: an empty incident cgroup
        (parent_dir() / "incident-stale-empty").mkdir()
        q2 = make_quarantine()
        sleeper = subprocess.Popen(["sleep", "30"])
        try:
            iso2 = q2.isolate("after-restart", [sleeper.pid])
            assert iso2.method == "cgroup" and iso2.frozen and iso2.network_cut, iso2.detail
            assert not (parent_dir() / "incident-stale-empty").exists(), "empty leftover not swept"
            assert Path(iso.cgroup).is_dir(), "the sweep removed a frozen incident"
            q2.release(iso2)
        finally:
            sleeper.kill()
            sleeper.wait()
        # the isolation of the closed object is released by the new one
        summary = q2.release(Isolation(**asdict(iso)))
        assert "removed" in summary, summary
        assert not Path(iso.cgroup).exists()
        assert grows(tree.counter)
    finally:
        for obj in (q1, q2):
            if obj is not None:
                obj.close()
        if Path(iso.cgroup).exists():   # the test failed before releasing it
            with make_quarantine() as q3:
                q3.kill(iso)


def test_crash_leaves_isolation_that_the_next_start_releases(tree):
    crash = subprocess.run([sys.executable, "-c", CRASHER, str(REPO), PARENT, "crash", str(tree.parent)],
                           capture_output=True, text=True, timeout=30)
    assert crash.returncode == 0, crash.stderr[-2000:]
    out = json.loads(crash.stdout)
    MY_PROGRAM_IDS.update(out["program_ids"])
    data = out["isolation"]
    data["original_cgroups"] = {int(k): v for k, v in data["original_cgroups"].items()}
    iso = Isolation(**data)
    q2 = None
    try:
        assert iso.method == "cgroup" and iso.frozen and iso.network_cut, iso.detail
        # the crashed daemon's programs stay attached: the cut outlives it
        left = {(c, name) for c, name, _, _ in our_attachments()}
        assert {(iso.cgroup, "as_isolate_all"), (str(ROOT), "as_isolate_sock")} <= left
        assert not connects(tree.listen_port[tree.parent])
        assert events(iso.cgroup)["frozen"] == "1"

        q2 = make_quarantine()
        summary = q2.release(iso)   # sweeps the orphaned programs, then releases
    finally:
        if q2 is None or Path(iso.cgroup).exists():   # the test failed before releasing it
            q2 = q2 or make_quarantine()
            q2.kill(iso)
        q2.close()
    assert "removed" in summary, summary
    assert not our_attachments()
    assert grows(tree.counter)
    assert connects(tree.listen_port[tree.parent], timeout=2)
