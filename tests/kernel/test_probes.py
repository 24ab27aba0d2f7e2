"""Every probe of bpf/*.c on the running kernel, through the real loader, ring buffer and decoder.

The pattern: fork a copy of the test process that blocks until the test has put it in the
tracked map (or deliberately not), let it do one thing, and assert on the decoded events. A
negative claim ("no event") is checked after a barrier: an event that ought to come later in
ring-buffer order (the process's own EXIT, or a tracked helper's marker open) has arrived, and
the ring buffer keeps reservation order, so an event of the earlier action would have come first.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from sensor import abi
from sensor.bpf_loader import PROBES
from sensor.probes import tracepoint_exists

from .conftest import WAIT_S

from conftest import skip_missing_feature  # tests/conftest.py

AT_FDCWD = -100
SYS_OPENAT2 = 437            # the same number on every architecture (new syscall table)
X86_64 = os.uname().machine == "x86_64"
SYS_OPEN_X86_64 = 2
SYS_CLONE3 = 435
SYS_FORK_X86_64 = 57
CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND, CLONE_THREAD = 0x100, 0x200, 0x400, 0x800, 0x10000
TRUE = shutil.which("true") or "/bin/true"
CAT = shutil.which("cat") or "/bin/cat"

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


# -- helpers -------------------------------------------------------------------------------------

def of_kind(evs, kind):
    return [e for e in evs if e.kind == kind]


def opens_of(evs, path):
    return [e for e in evs if e.kind == "open" and e.path == path]


def has_open(path):
    return lambda evs: bool(opens_of(evs, path))


def has_kind(kind, pid=None):
    return lambda evs: any(e.kind == kind and (pid is None or e.hdr.pid == pid) for e in evs)


def try_open(path, flags=os.O_RDONLY, mode=0o600, dir_fd=None):
    try:
        os.close(os.open(path, flags, mode, dir_fd=dir_fd))
    except OSError:
        pass


def marker_path() -> str:
    return f"/nonexistent-agent-sensor-test/{uuid.uuid4().hex}"


def run_tracked(spawn, tracker, events, action, flags=0):
    """Fork, track, run action, reap; the child's events up to its EXIT and its slot."""
    child = spawn(action)
    slot = tracker.track(child.pid, flags=flags)
    child.go()
    assert child.wait() == 0
    evs = events.wait_exit(child.pid)
    assert of_kind(evs, "exit"), f"no EXIT event from tracked pid {child.pid}: {evs}"
    return child, slot, evs


def barrier(spawn, tracker, events):
    """Returns once every event reserved before this call has been read (see module doc)."""
    path = marker_path()
    child = spawn(lambda ch: try_open(path))
    tracker.track(child.pid)
    child.go()
    child.wait()
    evs = events.wait_for([child.pid], has_open(path))
    assert opens_of(evs, path), "barrier marker open never arrived"


def closed_port(family=socket.AF_INET, host="127.0.0.1") -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]  # bound, never listened, now closed: connect is refused


def connect_action(family, sock_type, address, proto=0):
    def act(ch):
        s = socket.socket(family, sock_type, proto)
        ch.send(str(s.fileno()).encode())
        try:
            s.connect(address)
        except OSError:
            pass
        s.close()
    return act


def release_fifo(fifo: Path) -> None:
    """Let a reader blocked in open(fifo) go on and read EOF."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def has_elf_interpreter(path: str) -> bool:
    with open(path, "rb") as f:
        data = f.read()
    return b"/ld-linux" in data or b"/ld-musl" in data


def require_tracepoint(event: str) -> None:
    if not tracepoint_exists("syscalls", event):
        skip_missing_feature(f"tracepoint syscalls:{event}")


# -- load ----------------------------------------------------------------------------------------

def test_every_present_tracepoint_is_attached(sensor_bpf):
    by_name = {c.name: c for c in sensor_bpf.capabilities}
    for probe in PROBES:
        cap = by_name[f"tracepoint {probe.name}"]
        assert cap.available == tracepoint_exists(probe.category, probe.event), probe.name
        if probe.required:
            assert cap.available, probe.name


# -- open ----------------------------------------------------------------------------------------

def test_open_builtin_is_openat_read(spawn, tracker, events, tmp_path):
    path = tmp_path / "read-me"
    path.write_bytes(b"x")

    def act(ch):
        with open(path, "rb"):
            pass

    child, slot, evs = run_tracked(spawn, tracker, events, act)
    opens = of_kind(evs, "open")
    assert [e.path for e in opens] == [str(path)]
    ev = opens[0]
    assert ev.syscall == abi.OpenSyscall.OPENAT
    assert ev.dirfd == AT_FDCWD
    assert ev.flags & os.O_ACCMODE == os.O_RDONLY
    assert not ev.is_write and not ev.truncated
    assert (ev.hdr.pid, ev.hdr.tid, ev.hdr.slot) == (child.pid, child.pid, slot)
    assert (ev.hdr.uid, ev.hdr.gid) == (os.getuid(), os.getgid())
    assert ev.hdr.cgroup_id != 0


def test_os_open_write_vs_read(spawn, tracker, events, tmp_path):
    wpath, rpath = tmp_path / "written", tmp_path / "read"
    rpath.write_bytes(b"x")

    def act(ch):
        try_open(wpath, os.O_WRONLY | os.O_CREAT, 0o640)
        try_open(rpath, os.O_RDONLY)

    _, _, evs = run_tracked(spawn, tracker, events, act)
    opens = of_kind(evs, "open")
    assert [e.path for e in opens] == [str(wpath), str(rpath)]
    w, r = opens
    assert w.is_write and w.flags & os.O_ACCMODE == os.O_WRONLY and w.flags & os.O_CREAT
    assert w.mode == 0o640
    assert not r.is_write and r.flags & os.O_ACCMODE == os.O_RDONLY
    assert wpath.exists()


def test_failed_open_is_still_reported(spawn, tracker, events):
    path = marker_path()
    _, _, evs = run_tracked(spawn, tracker, events, lambda ch: try_open(path))
    assert [e.result for e in opens_of(evs, path)] == [-errno.ENOENT]


def test_creat(spawn, tracker, events, tmp_path):
    require_tracepoint("sys_enter_creat")
    path = tmp_path / "created"

    def act(ch):
        fd = libc.creat(os.fsencode(path), 0o600)
        assert fd >= 0, os.strerror(ctypes.get_errno())
        os.close(fd)

    _, _, evs = run_tracked(spawn, tracker, events, act)
    (ev,) = opens_of(evs, str(path))
    assert ev.syscall == abi.OpenSyscall.CREAT
    assert ev.flags == os.O_CREAT | os.O_WRONLY | os.O_TRUNC and ev.is_write
    assert ev.mode == 0o600 and ev.dirfd == AT_FDCWD


def test_legacy_open_syscall(spawn, tracker, events, tmp_path):
    require_tracepoint("sys_enter_open")
    if not X86_64:
        skip_missing_feature("open(2) syscall number", "test knows it for x86_64 only")
    path = tmp_path / "legacy"
    path.write_bytes(b"")

    def act(ch):
        fd = libc.syscall(SYS_OPEN_X86_64, os.fsencode(path), os.O_RDWR, 0)
        assert fd >= 0, os.strerror(ctypes.get_errno())
        os.close(fd)

    _, _, evs = run_tracked(spawn, tracker, events, act)
    (ev,) = opens_of(evs, str(path))
    assert ev.syscall == abi.OpenSyscall.OPEN and ev.dirfd == AT_FDCWD
    assert ev.flags & os.O_ACCMODE == os.O_RDWR and ev.is_write


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def test_openat2(spawn, tracker, events, tmp_path):
    require_tracepoint("sys_enter_openat2")
    path = tmp_path / "via-openat2"

    def act(ch):
        how = OpenHow(flags=os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, mode=0o604, resolve=0)
        fd = libc.syscall(SYS_OPENAT2, AT_FDCWD, os.fsencode(path), ctypes.byref(how),
                          ctypes.sizeof(how))
        if fd < 0 and ctypes.get_errno() == errno.ENOSYS:
            ch.send(b"ENOSYS")
            return
        assert fd >= 0, os.strerror(ctypes.get_errno())
        ch.send(b"ok")
        os.close(fd)

    child = spawn(act)
    tracker.track(child.pid)
    child.go()
    if child.recv() == b"ENOSYS":
        skip_missing_feature("openat2", "ENOSYS")
    assert child.wait() == 0
    evs = events.wait_exit(child.pid)
    (ev,) = opens_of(evs, str(path))
    assert ev.syscall == abi.OpenSyscall.OPENAT2
    assert ev.flags == os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC and ev.is_write
    assert ev.mode == 0o604 and ev.dirfd == AT_FDCWD


def test_relative_path_with_dirfd(spawn, tracker, events, tmp_path):
    (tmp_path / "rel.txt").write_bytes(b"x")
    dirfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)  # inherited by the child
    try:
        _, _, evs = run_tracked(spawn, tracker, events,
                                lambda ch: try_open("rel.txt", dir_fd=dirfd))
    finally:
        os.close(dirfd)
    (ev,) = opens_of(evs, "rel.txt")
    assert ev.dirfd == dirfd and ev.syscall == abi.OpenSyscall.OPENAT


def test_successful_chdir_and_fchdir_are_reported_in_order(spawn, tracker, events, tmp_path):
    (tmp_path / "sub").mkdir()

    def moves(ch):
        os.chdir(tmp_path)
        try:
            os.chdir("missing")  # fails: the cwd does not change, nothing is reported
        except OSError:
            pass
        os.chdir("sub")
        fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
        os.fchdir(fd)
        ch.send(str(fd).encode())

    child, _, evs = run_tracked(spawn, tracker, events, moves)
    fd = child.recv_int()
    cwd = [(e.fd, e.path) for e in evs if e.kind == "cwd"]
    assert cwd == [(AT_FDCWD, str(tmp_path)), (AT_FDCWD, "sub"), (fd, "")]


def test_an_open_is_one_event_with_its_result(spawn, tracker, events, tmp_path):
    def opens(ch):
        fd = os.open(tmp_path, os.O_RDONLY)
        ch.send(str(fd).encode())
        try_open(str(tmp_path / "missing"))  # fails: -ENOENT, no fd

    child, _, evs = run_tracked(spawn, tracker, events, opens)
    fd = child.recv_int()
    got = [(e.path, e.result) for e in of_kind(evs, "open")]
    assert got[-2:] == [(str(tmp_path), fd), (str(tmp_path / "missing"), -errno.ENOENT)]
    assert not of_kind(evs, "opened")  # the result is in the open's event, not a second one


def fill_open_stash(sensor_bpf) -> list[int]:
    """Fill the map where each agent thread's open waits for its result with made-up thread
    ids (above any real one); the ids, for clear_open_stash."""
    stash, made = sensor_bpf.bpf[b"open_stash"], []
    for tid in range(0xFFFF0000, 0xFFFFFFFF):
        try:
            stash[ctypes.c_uint32(tid)] = abi.OpenEvent()
        except OSError as exc:
            assert exc.errno == errno.E2BIG, exc
            return made
        made.append(tid)
    raise AssertionError("open_stash never filled")


def test_with_no_room_to_keep_an_open_it_is_sent_at_entry_and_its_fd_follows(sensor_bpf, spawn, tracker,
                                                                              events, tmp_path):
    """A plain hash, so an open in flight is never evicted: with the map full (more agent
    threads than it holds) a thread's opens go out as before, at entry and the fd on its own."""
    made = fill_open_stash(sensor_bpf)
    try:
        def opens(ch):
            fd = os.open(tmp_path, os.O_RDONLY)
            ch.send(str(fd).encode())

        child, _, evs = run_tracked(spawn, tracker, events, opens)
        fd = child.recv_int()
    finally:
        for tid in made:
            del sensor_bpf.bpf[b"open_stash"][ctypes.c_uint32(tid)]
    (opened,) = opens_of(evs, str(tmp_path))
    assert opened.result is None
    results = of_kind(evs, "opened")
    assert [r.fd for r in results if r.hdr.tid == child.pid][-1:] == [fd]
    assert evs.index(opened) < evs.index(results[-1])


def test_a_threads_kept_open_goes_when_the_thread_does(sensor_bpf, spawn, tracker, events, tmp_path):
    """Each agent thread that opened has one entry in open_stash, removed when it exits."""
    def opens(ch):
        def in_thread():
            try_open(str(tmp_path / "from-a-thread"))
            ch.send(str(threading.get_native_id()).encode())

        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join()
        try_open(str(tmp_path / "from-the-main-thread"))
        ch.send(b"0")
        ch.wait_release()

    child = spawn(opens)
    tracker.track(child.pid)
    child.go()
    thread_id = child.recv_int()
    child.recv()
    kept = {k.value for k in sensor_bpf.bpf[b"open_stash"].keys()}
    child.release()
    assert child.wait() == 0
    events.wait_exit(child.pid)
    assert child.pid in kept and thread_id not in kept
    assert child.pid not in {k.value for k in sensor_bpf.bpf[b"open_stash"].keys()}


def test_path_longer_than_path_max_is_truncated(spawn, tracker, events):
    path = "/" + "L" * 5000  # the kernel refuses it (ENAMETOOLONG) after the probe saw it
    _, _, evs = run_tracked(spawn, tracker, events, lambda ch: try_open(path))
    opens = of_kind(evs, "open")
    assert len(opens) == 1
    assert opens[0].truncated and opens[0].result == -errno.ENAMETOOLONG
    assert opens[0].path == path[: abi.PATH_MAX - 1]


def test_path_of_path_max_minus_one_arrives_whole(spawn, tracker, events):
    path = "/" + "p" * (abi.PATH_MAX - 2)  # 4095 bytes: the longest path the kernel accepts
    assert len(path) == abi.PATH_MAX - 1
    _, _, evs = run_tracked(spawn, tracker, events, lambda ch: try_open(path))
    (ev,) = opens_of(evs, path)
    assert ev.path == path


def test_path_of_path_max_minus_one_is_not_flagged_truncated(spawn, tracker, events):
    path = "/" + "q" * (abi.PATH_MAX - 2)
    _, _, evs = run_tracked(spawn, tracker, events, lambda ch: try_open(path))
    (ev,) = opens_of(evs, path)
    assert not ev.truncated


def test_unreadable_path_pointer_gives_empty_path(spawn, tracker, events):
    libc.openat.restype = ctypes.c_int

    def act(ch):
        rc = libc.openat(AT_FDCWD, ctypes.c_void_p(1), os.O_RDONLY)  # EFAULT in the kernel
        assert rc == -1 and ctypes.get_errno() == errno.EFAULT

    _, slot, evs = run_tracked(spawn, tracker, events, act)
    opens = of_kind(evs, "open")
    assert len(opens) == 1
    assert opens[0].path == "" and not opens[0].truncated and opens[0].hdr.slot == slot
    assert opens[0].result == -errno.EFAULT and opens[0].read_at_exit


def test_open_name_on_a_page_not_yet_faulted_in(spawn, tracker, events, tmp_path):
    """The entry probe cannot fault a page in; the name is then read again at syscall exit."""
    target = tmp_path / "named-from-an-untouched-page"
    target.write_bytes(b"x")
    holder = tmp_path / "page-with-the-name"
    holder.write_bytes(os.fsencode(target) + b"\0")
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.openat.restype = ctypes.c_int

    def act(ch):
        fd = os.open(holder, os.O_RDONLY)
        # PROT_READ, MAP_PRIVATE; nothing touches the page before the kernel copies the name
        addr = libc.mmap(None, 4096, 0x1, 0x2, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value)
        rc = libc.openat(AT_FDCWD, ctypes.c_void_p(addr), os.O_RDONLY)
        assert rc >= 0, os.strerror(ctypes.get_errno())
        ch.send(str(rc).encode())

    child, slot, evs = run_tracked(spawn, tracker, events, act)
    assert [e.path for e in of_kind(evs, "open")] == [str(holder), str(target)]
    ev = opens_of(evs, str(target))[0]
    assert ev.hdr.slot == slot and ev.syscall == abi.OpenSyscall.OPENAT and not ev.truncated
    assert ev.read_at_exit and ev.result == child.recv_int()


def test_non_utf8_file_name_round_trips(spawn, tracker, events, tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9-\xff\xfe.bin"
    _, _, evs = run_tracked(spawn, tracker, events,
                            lambda ch: try_open(raw, os.O_WRONLY | os.O_CREAT))
    opens = of_kind(evs, "open")
    assert len(opens) == 1
    assert os.fsencode(opens[0].path) == raw
    assert not opens[0].truncated


# -- connect -------------------------------------------------------------------------------------

def run_connect(spawn, tracker, events, action):
    child = spawn(action)
    slot = tracker.track(child.pid)
    child.go()
    fd = child.recv_int()
    assert child.wait() == 0
    evs = events.wait_exit(child.pid)
    conns = of_kind(evs, "connect")
    assert len(conns) == 1, evs
    ev = conns[0]
    assert (ev.fd, ev.hdr.pid, ev.hdr.slot) == (fd, child.pid, slot)
    return ev


def test_connect_inet(spawn, tracker, events):
    port = closed_port()
    ev = run_connect(spawn, tracker, events,
                     connect_action(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", port)))
    assert (ev.family, ev.address, ev.port) == (socket.AF_INET, "127.0.0.1", port)
    assert ev.ip == ipaddress.IPv4Address("127.0.0.1")


def _ipv6_loopback() -> None:
    try:
        closed_port(socket.AF_INET6, "::1")
    except OSError as exc:
        skip_missing_feature("IPv6 loopback", str(exc))


def test_connect_inet6(spawn, tracker, events):
    _ipv6_loopback()
    port = closed_port(socket.AF_INET6, "::1")
    ev = run_connect(spawn, tracker, events,
                     connect_action(socket.AF_INET6, socket.SOCK_STREAM, ("::1", port)))
    assert (ev.family, ev.address, ev.port) == (socket.AF_INET6, "::1", port)
    assert ev.ip == ipaddress.IPv6Address("::1")


def test_connect_v4_mapped_v6(spawn, tracker, events):
    port = closed_port()
    ev = run_connect(spawn, tracker, events,
                     connect_action(socket.AF_INET6, socket.SOCK_STREAM, ("::ffff:127.0.0.1", port)))
    assert ev.family == socket.AF_INET6 and ev.port == port
    assert ev.ip == ipaddress.IPv6Address("::ffff:127.0.0.1")
    assert ev.ip.ipv4_mapped == ipaddress.IPv4Address("127.0.0.1")


def test_connect_udp_inet(spawn, tracker, events):
    port = closed_port()
    ev = run_connect(spawn, tracker, events,
                     connect_action(socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", port)))
    assert (ev.family, ev.address, ev.port) == (socket.AF_INET, "127.0.0.1", port)


def test_connect_unix_path(spawn, tracker, events, tmp_path):
    path = str(tmp_path / "nobody-listens.sock")
    ev = run_connect(spawn, tracker, events,
                     connect_action(socket.AF_UNIX, socket.SOCK_STREAM, path))
    assert (ev.family, ev.address, ev.port) == (socket.AF_UNIX, path, None)
    assert ev.ip is None


def test_connect_unix_abstract(spawn, tracker, events):
    name = f"agent-sensor-test-{uuid.uuid4().hex}"
    ev = run_connect(spawn, tracker, events,
                     connect_action(socket.AF_UNIX, socket.SOCK_STREAM, "\0" + name))
    assert (ev.family, ev.address, ev.port) == (socket.AF_UNIX, "@" + name, None)


def test_connect_other_family_has_no_address(spawn, tracker, events):
    ev = run_connect(spawn, tracker, events,
                     connect_action(socket.AF_NETLINK, socket.SOCK_RAW, (0, 0), socket.NETLINK_ROUTE))
    assert (ev.family, ev.address, ev.port) == (socket.AF_NETLINK, "", None)


# -- fork and threads ----------------------------------------------------------------------------

def test_fork_is_reported_and_child_inherits_tracking(sensor_bpf, spawn, tracker, events):
    marker = marker_path()

    def act(ch):
        gpid = os.fork()
        if gpid == 0:
            try:
                ch.wait_release()
                try_open(marker)
            finally:
                os._exit(0)
        ch.send(str(gpid).encode())
        os.waitpid(gpid, 0)

    child = spawn(act)
    slot = tracker.track(child.pid)
    child.go()
    gpid = child.recv_int()
    evs = events.wait_for([child.pid], has_kind("fork"))
    (fork,) = of_kind(evs, "fork")
    assert (fork.child_pid, fork.parent_pid) == (gpid, child.pid)
    assert (fork.hdr.pid, fork.hdr.slot) == (child.pid, slot)
    entry = sensor_bpf.tracked()[gpid]  # in the map before the child ran
    assert (entry.slot, entry.root_pid, entry.flags) == (slot, child.pid, 0)
    maybe = sensor_bpf.bpf.shared("maybe_tracked")  # bpf/maps.h: one byte per pid
    assert (maybe[child.pid], maybe[gpid]) == (1, 1)  # set by user space's track, and at the fork

    child.release()
    assert child.wait() == 0
    evs = events.wait_exit(child.pid)
    gevs = events.of([gpid])
    (gopen,) = opens_of(gevs, marker)
    assert (gopen.hdr.pid, gopen.hdr.slot) == (gpid, slot)
    assert len(of_kind(gevs, "exit")) == 1
    assert gpid not in sensor_bpf.tracked()
    assert (maybe[child.pid], maybe[gpid]) == (0, 0)  # cleared by the kernel at their exits


def test_a_tracked_entry_counts_only_with_its_pid_byte(sensor_bpf, spawn, tracker, events):
    """Untracked processes are turned away by their byte in maybe_tracked before the tracked
    hash is searched: an entry whose byte is not set is not seen, which is why track() sets the
    byte first. (The entry is written here behind track()'s back.)"""
    before, after = marker_path(), marker_path()

    def act(ch):
        try_open(before)
        ch.send(b"opened")
        ch.wait_release()
        try_open(after)

    child = spawn(act)
    slot = tracker.new_slot()
    tracker.pids.add(child.pid)
    maybe = sensor_bpf.bpf.shared("maybe_tracked")
    maybe[child.pid] = 0  # a byte an earlier process with this pid may have left set
    sensor_bpf.bpf[b"tracked"][ctypes.c_uint32(child.pid)] = abi.TrackedProc(slot=slot, root_pid=child.pid)
    child.go()
    assert child.recv() == b"opened"
    tracker.track(child.pid, slot)  # the byte, then the same entry again
    child.release()
    evs = events.wait_for([child.pid], lambda evs: opens_of(evs, after))
    assert opens_of(evs, after) and not opens_of(evs, before)  # sent in order: the first was never sent
    assert child.wait() == 0


def test_posix_spawn_clone3_is_a_fork(sensor_bpf, spawn, tracker, events):
    """glibc's posix_spawn uses clone3(CLONE_VM|CLONE_VFORK): a process, not a thread."""
    def act(ch):
        gpid = os.posix_spawn(TRUE, [TRUE, "spawned"], {})
        ch.send(str(gpid).encode())
        os.waitpid(gpid, 0)

    child, slot, evs = run_tracked(spawn, tracker, events, act)
    gpid = child.recv_int()
    (fork,) = of_kind(evs, "fork")
    assert fork.child_pid == gpid
    gevs = events.wait_exit(gpid)
    (exe,) = of_kind(gevs, "exec")
    assert exe.filename == TRUE and exe.hdr.slot == slot
    assert exe.argv == (TRUE, "spawned")
    assert gpid not in sensor_bpf.tracked()


def test_thread_is_not_a_fork(sensor_bpf, spawn, tracker, events, tmp_path):
    path = tmp_path / "from-thread"
    path.write_bytes(b"x")

    def act(ch):
        tids = []

        def body():
            tids.append(threading.get_native_id())
            with open(path, "rb"):
                pass

        t = threading.Thread(target=body)
        t.start()
        t.join()
        ch.send(str(tids[0]).encode())

    child = spawn(act, hold=True)
    slot = tracker.track(child.pid)
    child.go()
    tid = child.recv_int()
    assert tid != child.pid
    table = sensor_bpf.tracked()
    assert tid not in table            # no entry for the thread ...
    assert child.pid in table          # ... and its exit did not remove the process's
    child.release()
    assert child.wait() == 0
    evs = events.wait_exit(child.pid)
    assert not of_kind(evs, "fork")
    (ev,) = opens_of(evs, str(path))
    assert (ev.hdr.pid, ev.hdr.tid, ev.hdr.slot) == (child.pid, tid, slot)
    assert len(of_kind(evs, "exit")) == 1  # the thread's exit is not the process's


def require_x86_64(what: str) -> None:
    if not X86_64:
        skip_missing_feature(what, "the test knows the syscall number for x86_64 only")


def test_raw_fork_syscall_is_a_fork(sensor_bpf, spawn, tracker, events):
    """fork(2) itself (not clone) has no entry probe: no clone flags means a process."""
    require_x86_64("fork(2) syscall")

    def act(ch):
        gpid = libc.syscall(SYS_FORK_X86_64)
        if gpid == 0:
            os._exit(0)
        ch.send(str(gpid).encode())
        os.waitpid(gpid, 0)

    child, slot, evs = run_tracked(spawn, tracker, events, act)
    gpid = child.recv_int()
    assert [e.child_pid for e in of_kind(evs, "fork")] == [gpid]
    assert [e.hdr.slot for e in of_kind(events.wait_exit(gpid), "exit")] == [slot]


def test_fork_from_a_thread(sensor_bpf, spawn, tracker, events):
    def act(ch):
        out = []

        def body():
            gpid = os.fork()
            if gpid == 0:
                os._exit(0)
            out.append((threading.get_native_id(), gpid))
            os.waitpid(gpid, 0)

        t = threading.Thread(target=body)
        t.start()
        t.join()
        ch.send(b"%d %d" % out[0])

    child, slot, evs = run_tracked(spawn, tracker, events, act)
    tid, gpid = map(int, child.recv().split())
    (fork,) = of_kind(evs, "fork")
    assert (fork.child_pid, fork.parent_pid) == (gpid, child.pid)
    assert (fork.hdr.pid, fork.hdr.tid, fork.hdr.slot) == (child.pid, tid, slot)
    assert [e.hdr.slot for e in of_kind(events.wait_exit(gpid), "exit")] == [slot]


def test_fork_after_failed_thread_clone_is_still_tracked(sensor_bpf, spawn, tracker, events):
    require_x86_64("fork(2) syscall")

    def act(ch):
        args = (ctypes.c_uint64 * 11)()
        args[0] = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD
        rc = libc.syscall(SYS_CLONE3, args, 8)  # size 8 < CLONE_ARGS_SIZE_VER0: EINVAL
        assert rc == -1
        gpid = libc.syscall(SYS_FORK_X86_64)
        if gpid == 0:
            os._exit(0)
        ch.send(str(gpid).encode())
        os.waitpid(gpid, 0)

    child, _, evs = run_tracked(spawn, tracker, events, act)
    gpid = child.recv_int()
    assert [e.child_pid for e in of_kind(evs, "fork")] == [gpid]


# -- exec ----------------------------------------------------------------------------------------

def test_exec(sensor_bpf, spawn, tracker, events):
    child, slot, evs = run_tracked(spawn, tracker, events,
                                   lambda ch: os.execv(TRUE, [TRUE, "a", "b"]))
    assert [e.kind for e in evs if e.kind not in ("open", "opened")] == ["exec", "exit"]  # opens: the loader's
    exe, exit_ = evs[0], evs[-1]
    assert exe.filename == TRUE and exe.argv == (TRUE, "a", "b")
    assert exe.flags == 0 and not exe.agent_start
    assert (exe.hdr.pid, exe.old_tid, exe.hdr.slot) == (child.pid, child.pid, slot)
    assert exe.dirfd == AT_FDCWD and exe.matched_slot is None
    assert exe.hdr.comm == os.path.basename(TRUE)
    assert exit_.hdr.comm == os.path.basename(TRUE) and exit_.hdr.slot == slot


def _exec_event(spawn, tracker, events, argv):
    child, _, evs = run_tracked(spawn, tracker, events, lambda ch: os.execv(TRUE, argv))
    (exe,) = of_kind(evs, "exec")
    return exe


def test_exec_exactly_max_args_is_whole(spawn, tracker, events):
    argv = [TRUE] + [f"arg{i}" for i in range(1, abi.MAX_ARGS)]
    assert len(argv) == abi.MAX_ARGS
    exe = _exec_event(spawn, tracker, events, argv)
    assert exe.argv == tuple(argv)
    assert not exe.flags & abi.ExecFlags.ARGV_TRUNCATED


def test_exec_many_args_truncated(spawn, tracker, events):
    argv = [TRUE] + [f"arg{i}" for i in range(1, 40)]
    exe = _exec_event(spawn, tracker, events, argv)
    assert exe.argv == tuple(argv[: abi.MAX_ARGS])
    assert exe.flags & abi.ExecFlags.ARGV_TRUNCATED


def test_exec_long_arg_truncated(spawn, tracker, events):
    long_arg = "z" * 300
    exe = _exec_event(spawn, tracker, events, [TRUE, long_arg, "after"])
    assert exe.argv == (TRUE, long_arg[: abi.ARG_CHUNK - 1], "after")
    assert exe.flags & abi.ExecFlags.ARGV_TRUNCATED


def test_exec_argv_buffer_full_truncated(spawn, tracker, events):
    chunk = abi.ARG_CHUNK - 2  # each entry takes ARG_CHUNK-1 bytes with its NUL: never cut
    argv = [TRUE] + [f"{i:02d}" + "y" * (chunk - 2) for i in range(12)]
    exe = _exec_event(spawn, tracker, events, argv)
    assert exe.flags & abi.ExecFlags.ARGV_TRUNCATED
    captured = exe.argv
    assert 0 < len(captured) < len(argv)
    assert captured == tuple(argv[: len(captured)])  # whole entries, in order


def test_exec_arg_of_chunk_minus_one_is_not_truncated(spawn, tracker, events):
    arg = "w" * (abi.ARG_CHUNK - 1)
    exe = _exec_event(spawn, tracker, events, [TRUE, arg])
    assert exe.argv == (TRUE, arg)
    assert not exe.flags & abi.ExecFlags.ARGV_TRUNCATED


def test_execveat(spawn, tracker, events):
    require_tracepoint("sys_enter_execveat")

    def act(ch):
        fd = os.open(TRUE, os.O_RDONLY)
        ch.send(str(fd).encode())
        os.execve(fd, ["true-via-fd", "x"], {})  # glibc fexecve: execveat(fd, "", AT_EMPTY_PATH)

    child, slot, evs = run_tracked(spawn, tracker, events, act)
    fd = child.recv_int()
    (exe,) = of_kind(evs, "exec")
    assert exe.flags & abi.ExecFlags.EXECVEAT
    assert exe.dirfd == fd and exe.filename == ""
    assert exe.argv == ("true-via-fd", "x") and exe.hdr.slot == slot


def test_exec_from_a_thread(sensor_bpf, spawn, tracker, events):
    """The exec'ing thread takes over the process: old_tid names it, the process goes on. Its
    old id's entry in open_stash (it opened a file first) goes with the id."""
    def act(ch):
        def body():
            ch.send(str(threading.get_native_id()).encode())
            try_open(marker_path())
            os.execv(TRUE, [TRUE, "from-thread"])

        threading.Thread(target=body).start()
        time.sleep(WAIT_S)  # the exec kills this thread; it never gets past here

    child, slot, evs = run_tracked(spawn, tracker, events, act)
    tid = child.recv_int()
    assert tid != child.pid
    (exe,) = of_kind(evs, "exec")
    assert (exe.hdr.pid, exe.hdr.tid, exe.old_tid, exe.hdr.slot) == (child.pid, child.pid, tid, slot)
    assert exe.argv == (TRUE, "from-thread")
    assert [e.kind for e in evs if e.kind not in ("open", "opened")] == ["exec", "exit"]  # no EXIT for the old leader
    assert tid not in {k.value for k in sensor_bpf.bpf[b"open_stash"].keys()}


def test_failed_exec_emits_nothing(sensor_bpf, spawn, tracker, events):
    missing = "/nonexistent-agent-sensor-test/no-such-program"

    def act(ch):
        try:
            os.execv(missing, [missing, "x"])
        except FileNotFoundError:
            ch.send(b"failed")

    child, _, evs = run_tracked(spawn, tracker, events, act)
    assert child.recv() == b"failed"
    assert not of_kind(evs, "exec")
    stash = {k.value for k in sensor_bpf.bpf[b"exec_stash"].keys()}
    assert child.pid not in stash  # the half-finished exec was dropped at sys_exit


def test_untracked_exec_is_seen_without_slot(sensor_bpf, spawn, events):
    child = spawn(lambda ch: os.execv(TRUE, [TRUE, "untracked"])).go()
    assert child.wait() == 0
    evs = events.wait_for([child.pid], has_kind("exec"))
    (exe,) = of_kind(evs, "exec")
    assert exe.hdr.slot is None and exe.matched_slot is None
    assert exe.argv == (TRUE, "untracked")
    assert not exe.flags & (abi.ExecFlags.AGENT_START | abi.ExecFlags.KERNEL_MATCHED)
    assert child.pid not in sensor_bpf.tracked()


@pytest.fixture
def agents_execs_only(sensor_bpf):
    """The kernel as a daemon whose profiles have no `match` leaves it: only agents' execs sent."""
    sensor_bpf.send_all_execs(False)
    try:
        yield
    finally:
        sensor_bpf.send_all_execs(True)


def test_without_selectors_other_processes_execs_are_not_read_or_sent(sensor_bpf, spawn, tracker, events,
                                                                     agents_execs_only):
    quiet = spawn(lambda ch: os.execv(TRUE, [TRUE, "untracked"])).go()
    assert quiet.wait() == 0
    _, slot, evs = run_tracked(spawn, tracker, events, lambda ch: os.execv(TRUE, [TRUE, "agent"]))
    (exe,) = of_kind(evs, "exec")  # an agent's exec is sent all the same
    assert (exe.hdr.slot, exe.argv) == (slot, (TRUE, "agent"))
    barrier(spawn, tracker, events)
    assert events.of([quiet.pid]) == []
    assert quiet.pid not in {k.value for k in sensor_bpf.bpf[b"exec_stash"].keys()}


def test_without_selectors_a_launched_agent_still_starts_at_its_exec(sensor_bpf, spawn, tracker, events,
                                                                     agents_execs_only):
    """`agent-sensor exec`: tracked (pending) before its exec, which must arrive as the start."""
    _, slot, evs = run_tracked(spawn, tracker, events, lambda ch: os.execv(TRUE, [TRUE, "launched"]),
                               flags=abi.TrackedFlags.PENDING_EXEC)
    (exe,) = of_kind(evs, "exec")
    assert exe.hdr.slot == slot and exe.agent_start and exe.argv == (TRUE, "launched")


# -- exit ----------------------------------------------------------------------------------------

def test_exit(sensor_bpf, spawn, tracker, events):
    child = spawn(lambda ch: None)
    slot = tracker.track(child.pid)
    assert child.pid in sensor_bpf.tracked()
    child.go()
    assert child.wait() == 0  # the exit probe has run: it fires before the parent is notified
    evs = events.wait_exit(child.pid)
    assert [e.kind for e in evs] == ["exit"]
    assert (evs[0].hdr.pid, evs[0].hdr.tid, evs[0].hdr.slot) == (child.pid, child.pid, slot)
    assert child.pid not in sensor_bpf.tracked()


def test_exit_by_signal(sensor_bpf, spawn, tracker, events):
    child = spawn(lambda ch: os.kill(os.getpid(), 9))
    slot = tracker.track(child.pid)
    child.go()
    assert child.wait() == -9
    evs = events.wait_exit(child.pid)
    assert [e.kind for e in evs] == ["exit"] and evs[0].hdr.slot == slot
    assert child.pid not in sensor_bpf.tracked()


def open_connect_fork(ch, path: str, port: int, child_execs: bool) -> None:
    """One of each traced action: open, connect, fork (+ exec of /bin/true in the child);
    sends the child's pid."""
    try_open(path)
    with socket.socket() as s:
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            pass
    gpid = os.fork()
    if gpid == 0:
        if child_execs:
            os.execv(TRUE, [TRUE])
        os._exit(0)
    ch.send(str(gpid).encode())
    os.waitpid(gpid, 0)


# -- untracked processes -------------------------------------------------------------------------

def test_untracked_process_is_not_reported(sensor_bpf, spawn, tracker, events):
    path = marker_path()
    port = closed_port()

    def act(ch):
        open_connect_fork(ch, path, port, child_execs=False)

    child = spawn(act).go()
    gpid = child.recv_int()
    assert child.wait() == 0
    barrier(spawn, tracker, events)
    assert events.of([child.pid, gpid]) == []
    assert not any(e.kind == "open" and e.path == path for e in events.seen)
    table = sensor_bpf.tracked()
    assert child.pid not in table and gpid not in table


# -- agents started by `agent-sensor exec`: tracked but pending until their exec -----------------

def test_pending_exec(sensor_bpf, spawn, tracker, events, tmp_path):
    before = tmp_path / "opened-before-exec"
    before.write_bytes(b"x")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def act(ch):
        with open(before, "rb"):
            pass
        os.execv(CAT, [CAT, str(fifo)])  # cat blocks in open(fifo) until release_fifo

    child = spawn(act)
    slot = tracker.track(child.pid, flags=abi.TrackedFlags.PENDING_EXEC)
    assert sensor_bpf.tracked()[child.pid].flags == abi.TrackedFlags.PENDING_EXEC
    child.go()
    evs = events.wait_for([child.pid], has_open(str(fifo)))
    entry = sensor_bpf.tracked()[child.pid]
    assert (entry.slot, entry.root_pid, entry.flags) == (slot, child.pid, 0)
    release_fifo(fifo)
    assert child.wait() == 0
    evs = events.wait_exit(child.pid)

    assert evs[0].kind == "exec", f"events before the exec: {evs[:3]}"
    exe = evs[0]
    assert exe.flags == abi.ExecFlags.AGENT_START and exe.agent_start
    assert exe.hdr.slot == slot and exe.argv == (CAT, str(fifo))
    assert not opens_of(evs, str(before))
    assert len(opens_of(evs, str(fifo))) == 1
    assert evs[-1].kind == "exit"
    assert child.pid not in sensor_bpf.tracked()


def test_pending_process_fork_is_silent_but_inherited(sensor_bpf, spawn, tracker, events):
    def act(ch):
        gpid = os.fork()
        if gpid == 0:
            try:
                ch.wait_release()
            finally:
                os._exit(0)
        ch.send(str(gpid).encode())
        os.waitpid(gpid, 0)

    child = spawn(act)
    slot = tracker.track(child.pid, flags=abi.TrackedFlags.PENDING_EXEC)
    child.go()
    gpid = child.recv_int()
    entry = sensor_bpf.tracked()[gpid]
    assert (entry.slot, entry.root_pid, entry.flags) == (slot, child.pid, abi.TrackedFlags.PENDING_EXEC)
    child.release()
    assert child.wait() == 0
    barrier(spawn, tracker, events)
    assert events.of([child.pid, gpid]) == []  # no FORK, and a pending process has no EXIT
    table = sensor_bpf.tracked()
    assert child.pid not in table and gpid not in table


# -- exec_match: the kernel starts tracking at the exec of a known agent binary ------------------

def test_exec_match_tracks_in_kernel(sensor_bpf, spawn, tracker, events, tmp_path):
    agent = tmp_path / "agent-cat"
    shutil.copy(CAT, agent)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    slot = tracker.new_slot()
    sensor_bpf.set_exec_matches({str(agent): slot})

    child = spawn(lambda ch: os.execv(agent, [str(agent), str(fifo)])).go()  # not tracked
    evs = events.wait_for([child.pid], has_open(str(fifo)))
    entry = sensor_bpf.tracked()[child.pid]
    assert (entry.slot, entry.root_pid, entry.flags) == (slot, child.pid, 0)
    release_fifo(fifo)
    assert child.wait() == 0
    evs = events.wait_exit(child.pid)

    exe = evs[0]
    assert exe.kind == "exec" and exe.filename == str(agent)
    assert exe.flags == abi.ExecFlags.KERNEL_MATCHED | abi.ExecFlags.AGENT_START
    assert exe.hdr.slot == slot and exe.matched_slot == slot
    opens = of_kind(evs, "open")
    assert opens and all(e.hdr.slot == slot for e in opens)
    if has_elf_interpreter(CAT):  # the dynamic loader's first open, before main(), is seen
        assert ".so" in opens[0].path, opens[0].path
    assert len(opens_of(evs, str(fifo))) == 1
    assert evs[-1].kind == "exit" and child.pid not in sensor_bpf.tracked()


def test_exec_match_other_path_is_not_matched(sensor_bpf, spawn, tracker, events, tmp_path):
    agent = tmp_path / "agent-true"
    other = tmp_path / "other-true"
    shutil.copy(TRUE, agent)
    shutil.copy(TRUE, other)
    sensor_bpf.set_exec_matches({str(agent): tracker.new_slot()})
    child = spawn(lambda ch: os.execv(other, [str(other)])).go()
    assert child.wait() == 0
    evs = events.wait_for([child.pid], has_kind("exec"))
    (exe,) = of_kind(evs, "exec")
    assert exe.hdr.slot is None and exe.matched_slot is None and exe.flags == 0
    assert child.pid not in sensor_bpf.tracked()


def test_exec_match_does_not_match_a_longer_path(sensor_bpf, spawn, tracker, events, tmp_path):
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    binary = deep / ("t" * 200)
    shutil.copy(TRUE, binary)
    full = str(binary)
    assert len(full.encode()) > abi.EXEC_KEY_LEN
    prefix = full[: abi.EXEC_KEY_LEN - 1]  # the longest key set_exec_matches accepts
    sensor_bpf.set_exec_matches({prefix: tracker.new_slot()})
    child = spawn(lambda ch: os.execv(full, [full])).go()
    assert child.wait() == 0
    evs = events.wait_for([child.pid], has_kind("exec"))
    (exe,) = of_kind(evs, "exec")
    assert exe.filename == full
    assert exe.matched_slot is None and not exe.flags & abi.ExecFlags.KERNEL_MATCHED


# -- counters ------------------------------------------------------------------------------------

def test_counters(sensor_bpf, spawn, tracker, events):
    kinds = {k.name.lower() for k in abi.EventType}
    emitted0, dropped0 = sensor_bpf.counters()
    assert set(emitted0) == kinds and set(dropped0) == kinds
    path = marker_path()
    port = closed_port()

    def act(ch):
        open_connect_fork(ch, path, port, child_execs=True)

    child, _, evs = run_tracked(spawn, tracker, events, act)
    gpid = child.recv_int()
    evs = evs + events.wait_exit(gpid)
    # Every program that emitted these events has returned: the child and grandchild are reaped.
    emitted1, dropped1 = sensor_bpf.counters()
    seen = {k: len(of_kind(evs, k)) for k in kinds}
    expected = {"exec": 1, "fork": 1, "exit": 2, "connect": 1, "opened": 0}  # each open carries its fd
    assert {k: seen[k] for k in expected} == expected
    assert seen["open"] >= 1
    assert all(n == 0 for k, n in seen.items() if k not in expected and k != "open"), seen
    for kind in kinds:
        assert emitted1[kind] - emitted0[kind] >= seen[kind], kind
        assert isinstance(dropped1[kind], int) and dropped1[kind] >= dropped0[kind] >= 0, kind
