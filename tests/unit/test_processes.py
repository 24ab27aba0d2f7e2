"""The process table against the real /proc: path resolution, start ticks, ancestry, lookups
and the fork/exit bookkeeping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sensor.processes as processes_mod
from sensor import _paths
from sensor.correlate import Target
from sensor.abi import OpenSyscall
from sensor.decode import AT_FDCWD, CwdEvent, ForkEvent, Header, OpenedEvent, OpenEvent
from sensor.processes import ProcessTable, start_ticks

PYTHON = sys.executable


def pid_max() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text())


def no_such_pid(offset: int = 1) -> int:
    """A pid above pid_max: never a live process."""
    return pid_max() + offset


def hdr(pid: int) -> Header:
    return Header(ktime_ns=1, cgroup_id=1, pid=pid, tid=pid, uid=os.getuid(), gid=os.getgid(), slot=0,
                  comm="t")


@pytest.fixture
def base(tmp_path) -> Path:
    return Path(os.path.realpath(tmp_path))


@pytest.fixture
def sleeper(base):
    """A child process with its cwd in the tmp dir, ended after the test."""
    work = base / "work"
    work.mkdir()
    proc = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(60)"], cwd=work)
    yield proc
    proc.kill()
    proc.wait()


# --- resolve ---------------------------------------------------------------------------------


def test_absolute_path_is_normalised(base):
    (base / "a").mkdir()
    (base / "c").write_text("")
    table = ProcessTable()
    t = table.resolve(os.getpid(), f"/{base}/./a/../c")
    st = os.stat(base / "c")
    # The literal spelling keeps `..` (only realpath may resolve it, after symlinks).
    assert t == Target(str(base / "a/../c"), str(base / "c"), resolved=True, file_id=(st.st_dev, st.st_ino))
    t = table.resolve(os.getpid(), "//a/./b/../c")
    assert t.file_id is None  # no such file
    assert t.literal == "/a/b/../c" and t.canonical == "/a/c" and t.resolved
    t = table.resolve(os.getpid(), "///etc//passwd/")
    assert t.literal == "/etc/passwd"


def test_dotdot_after_a_symlink_follows_the_link_as_the_kernel_does(base):
    (base / "real" / "inner").mkdir(parents=True)
    (base / "real" / "target").write_text("")
    (base / "link").symlink_to(base / "real" / "inner")
    t = ProcessTable().resolve(os.getpid(), f"{base}/link/../target")
    assert t.canonical == str(base / "real" / "target")  # lexically it would be base/target


def test_relative_path_against_cwd(base, monkeypatch):
    (base / "sub").mkdir()
    monkeypatch.chdir(base)
    t = ProcessTable().resolve(os.getpid(), "sub/../sub/f.txt")
    assert t == Target(str(base / "sub/../sub/f.txt"), str(base / "sub/f.txt"), resolved=True)
    t = ProcessTable().resolve(os.getpid(), "../x", AT_FDCWD)
    assert t.canonical == str(base.parent / "x")


def test_relative_path_against_dirfd(base, monkeypatch):
    (base / "d").mkdir()
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the cwd must not be used
    fd = os.open(base / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        t = ProcessTable().resolve(os.getpid(), "f.txt", fd)
    finally:
        os.close(fd)
    assert t == Target(str(base / "d/f.txt"), str(base / "d/f.txt"), resolved=True)


def test_absolute_path_ignores_dirfd(base):
    t = ProcessTable().resolve(os.getpid(), "/etc/hostname", 12345)
    assert t.literal == "/etc/hostname" and t.resolved


def test_symlink_canonical_differs(base):
    real = base / "real"
    real.mkdir()
    (real / "file").write_text("x")
    (base / "link").symlink_to(real)
    t = ProcessTable().resolve(os.getpid(), str(base / "link/file"))
    assert t.literal == str(base / "link/file")
    assert t.canonical == str(real / "file")
    assert t.spellings == (t.literal, t.canonical)


def test_proc_self_means_the_given_process(base, sleeper):
    table = ProcessTable()
    t = table.resolve(sleeper.pid, "/proc/self/cwd")
    assert t.literal == "/proc/self/cwd"  # as the process named it
    assert t.canonical == str(base / "work")  # the agent's cwd, not the sensor's
    assert table.resolve(sleeper.pid, "/proc/thread-self/cwd").canonical == str(base / "work")
    t = table.resolve(sleeper.pid, "/proc/self/status")
    assert t.canonical == f"/proc/{sleeper.pid}/status"
    assert table.resolve(sleeper.pid, "/proc/self").canonical == f"/proc/{sleeper.pid}"
    # Only the whole component: /proc/selfish is not /proc/self.
    assert table.resolve(sleeper.pid, "/proc/selfish").canonical == "/proc/selfish"


def test_relative_path_of_unknown_gone_process():
    pid = no_such_pid()
    table = ProcessTable()
    assert table.resolve(pid, "notes.txt") == Target("notes.txt", "notes.txt", resolved=False)
    assert table.resolve(pid, "notes.txt", 5) == Target("notes.txt", "notes.txt", resolved=False)
    # An absolute path needs no directory.
    assert table.resolve(pid, "/etc/hostname").resolved


def test_exited_process_falls_back_to_last_cwd(base, sleeper):
    table = ProcessTable()
    info = table.lookup(sleeper.pid)
    assert info.cwd == str(base / "work")
    sleeper.kill()
    sleeper.wait()
    table.on_exit(sleeper.pid)
    t = table.resolve(sleeper.pid, "out/f.txt")
    assert t.literal == str(base / "work/out/f.txt") and t.resolved
    # A dirfd of a gone process is not guessed.
    assert table.resolve(sleeper.pid, "f.txt", 3).resolved is False


def test_the_cwd_followed_by_events_wins_over_proc(base, sleeper):
    """Events are handled after the fact: /proc shows the cwd of now, the events the cwd the
    process had when it named the file (git -C DIR chdirs, opens, exits before we look)."""
    (base / "repo").mkdir()
    table = ProcessTable()
    table.lookup(sleeper.pid)
    table.on_cwd(CwdEvent(hdr=hdr(sleeper.pid), fd=AT_FDCWD, path="../repo"))
    assert table.get(sleeper.pid).cwd == str(base / "repo")  # relative to the old cwd, work/
    assert table.resolve(sleeper.pid, ".git/config").literal == str(base / "repo/.git/config")


def test_a_chdir_through_a_symlink_lands_where_the_kernel_does(base, sleeper):
    (base / "real").mkdir()
    (base / "link").symlink_to(base / "real")
    table = ProcessTable()
    table.lookup(sleeper.pid)
    table.on_cwd(CwdEvent(hdr=hdr(sleeper.pid), fd=AT_FDCWD, path=str(base / "link")))
    assert table.get(sleeper.pid).cwd == str(base / "real")


def test_fchdir_takes_the_directory_of_the_fd_or_leaves_the_cwd_to_proc(base, sleeper):
    table = ProcessTable()
    table.lookup(sleeper.pid)
    table.on_cwd(CwdEvent(hdr=hdr(sleeper.pid), fd=0, path=""))  # the sleeper's stdin is no directory here
    assert table.get(sleeper.pid).cwd == os.readlink(f"/proc/{sleeper.pid}/fd/0")
    table.on_cwd(CwdEvent(hdr=hdr(sleeper.pid), fd=987, path=""))  # no such fd: unknown
    assert table.get(sleeper.pid).cwd is None
    assert table.resolve(sleeper.pid, "x").literal == str(base / "work/x")  # asked /proc instead


def test_a_child_starts_in_its_parents_cwd_as_of_the_fork(base, sleeper):
    table = ProcessTable()
    parent = table.lookup(os.getpid())
    parent.cwd = str(base)
    child = table.on_fork(ForkEvent(hdr=hdr(os.getpid()), child_pid=sleeper.pid, parent_pid=os.getpid()))
    assert child.cwd == str(base)  # not the child's /proc cwd (work/), which it may have moved to since


# --- start ticks -----------------------------------------------------------------------------


def test_start_ticks_of_self():
    stat = Path("/proc/self/stat").read_text()
    comm = Path("/proc/self/comm").read_text().rstrip("\n")
    assert " " not in comm and ")" not in comm  # so a plain split is a fair reference
    assert start_ticks(os.getpid()) == int(stat.split()[21])


def test_start_ticks_of_missing_process():
    assert start_ticks(no_such_pid()) is None


@pytest.mark.parametrize("comm", ["a) b (c", "x) R 1 2 3 4 5"])
def test_start_ticks_with_awkward_comm(comm):
    code = (f"open('/proc/self/comm', 'w').write({comm!r}); import sys, time; "
            "print('ready', flush=True); time.sleep(60)")
    proc = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert Path(f"/proc/{proc.pid}/comm").read_text().rstrip("\n") == comm
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        prefix = f"{proc.pid} ({comm}) "
        assert stat.startswith(prefix)
        expected = int(stat[len(prefix):].split()[19])
        assert start_ticks(proc.pid) == expected
        assert expected >= start_ticks(os.getpid())  # started after this test process
    finally:
        proc.kill()
        proc.wait()


# --- lookup and ancestry ---------------------------------------------------------------------


def test_lookup_builds_from_proc():
    table = ProcessTable()
    assert table.get(os.getpid()) is None
    info = table.lookup(os.getpid())
    assert info.pid == os.getpid() and info.ppid == os.getppid()
    assert info.exe == os.readlink("/proc/self/exe")
    raw = Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    assert info.cmdline == tuple(a.decode() for a in raw)
    assert info.uid == os.getuid()
    assert info.start_ticks == start_ticks(os.getpid())
    assert info.cwd == os.getcwd()
    assert not info.exited and info.agent is None
    assert table.lookup(os.getpid()) is info and table.get(os.getpid()) is info


def test_lookup_of_missing_process():
    info = ProcessTable().lookup(no_such_pid())
    assert info.exited and info.ppid is None and info.exe == "" and info.start_ticks is None


def test_ancestry_parent_first():
    table = ProcessTable()
    table.lookup(os.getpid())
    chain = table.ancestry(os.getpid())
    assert chain, "the test process has a parent"
    assert chain[0].pid == os.getppid()
    for child, parent in zip(chain, chain[1:]):
        assert child.ppid == parent.pid
    assert len(chain) == 16 or not chain[-1].ppid  # ends at the top, or at the limit
    assert os.getpid() not in [p.pid for p in chain]
    assert [p.pid for p in table.ancestry(os.getpid(), limit=1)] == [os.getppid()]


def test_ancestry_includes_exited_known_parent(base):
    table = ProcessTable()
    gone_parent = no_such_pid(1)
    child = no_such_pid(2)
    # A parent the table saw before it exited still appears in its child's ancestry.
    parent_info = table.lookup(os.getpid())
    table.on_fork(ForkEvent(hdr=hdr(os.getpid()), child_pid=gone_parent, parent_pid=os.getpid()))
    table.on_fork(ForkEvent(hdr=hdr(gone_parent), child_pid=child, parent_pid=gone_parent))
    table.on_exit(gone_parent)
    chain = table.ancestry(child)
    assert [p.pid for p in chain[:2]] == [gone_parent, os.getpid()]
    assert chain[0].exited and chain[1] is parent_info


# --- fork / exit -----------------------------------------------------------------------------


def test_on_fork(base, sleeper):
    table = ProcessTable()
    parent = table.lookup(os.getpid())
    parent.agent = object()  # the agent run is inherited as is
    child = table.on_fork(ForkEvent(hdr=hdr(os.getpid()), child_pid=sleeper.pid, parent_pid=os.getpid()))
    assert child.pid == sleeper.pid and child.ppid == os.getpid()
    assert child.exe == parent.exe and child.cmdline == parent.cmdline  # until the child execs
    assert child.uid == os.getuid()
    assert child.start_ticks == start_ticks(sleeper.pid) is not None
    assert child.cwd == parent.cwd  # as of the fork (see test_a_child_starts_in_its_parents_cwd_as_of_the_fork)
    assert child.agent is parent.agent
    assert sleeper.pid in parent.children
    assert table.get(sleeper.pid) is child and not child.exited


def test_on_fork_of_a_child_already_gone():
    table = ProcessTable()
    parent = table.lookup(os.getpid())
    child = table.on_fork(ForkEvent(hdr=hdr(os.getpid()), child_pid=no_such_pid(), parent_pid=os.getpid()))
    assert child.start_ticks is None
    assert child.cwd == parent.cwd  # inherited: a fork keeps the cwd


def test_on_exit():
    table = ProcessTable()
    pid = no_such_pid()
    table.lookup(os.getpid())
    table.on_fork(ForkEvent(hdr=hdr(os.getpid()), child_pid=pid, parent_pid=os.getpid()))
    info = table.on_exit(pid)
    assert info is not None and info.exited
    assert table.get(pid) is info  # kept for the ancestry of later alerts
    assert table.lookup(pid) is info
    assert table.on_exit(pid) is None  # once only
    assert table.on_exit(no_such_pid(2)) is None  # never seen


def test_exited_processes_are_bounded(monkeypatch):
    monkeypatch.setattr(processes_mod, "EXITED_KEPT", 3)
    table = ProcessTable()
    table.lookup(os.getpid())
    pids = [no_such_pid(i) for i in range(1, 7)]
    for pid in pids:
        table.on_fork(ForkEvent(hdr=hdr(os.getpid()), child_pid=pid, parent_pid=os.getpid()))
    for pid in pids:
        table.on_exit(pid)
    assert [pid for pid in pids if table.get(pid) is not None] == pids[-3:]  # oldest forgotten first
    assert table.get(os.getpid()) is not None  # live entries are never evicted


def test_agent_processes_and_agents():
    table = ProcessTable()
    agent = processes_mod.AgentInstance(profile=None, slot=0, root_pid=os.getpid(), start_ticks=None, how="exec")
    table.attach(os.getpid(), agent)
    child = no_such_pid()
    table.on_fork(ForkEvent(hdr=hdr(os.getpid()), child_pid=child, parent_pid=os.getpid()))
    assert {p.pid for p in table.agent_processes(agent)} == {os.getpid(), child}
    assert table.agents() == [agent]
    table.on_exit(child)
    assert {p.pid for p in table.agent_processes(agent)} == {os.getpid()}
    table.forget_agent(agent)
    assert table.agents() == [] and table.agent_processes(agent) == []


def test_lookup_of_a_reused_pid_describes_the_live_process():
    table = ProcessTable()
    # The table saw an earlier process with this pid fork and exit...
    table.lookup(os.getppid())
    old = table.on_fork(ForkEvent(hdr=hdr(os.getppid()), child_pid=os.getpid(), parent_pid=os.getppid()))
    old.start_ticks = 1  # ... an earlier process: it started at another time
    old.exe = "/old/program"
    table.on_exit(os.getpid())
    # ... and now the pid names a live process (this one).
    info = table.lookup(os.getpid())
    assert not info.exited
    assert info.start_ticks == start_ticks(os.getpid())
    assert info.exe == os.readlink("/proc/self/exe")


@pytest.mark.parametrize("sent_at_entry", [False, True], ids=["result in the open", "result on its own"])
def test_a_directory_fd_resolves_from_the_open_that_made_it_after_the_process_is_gone(base, sleeper, sent_at_entry):
    """shutil.rmtree unlinks names relative to directory fds; the process may be gone before
    user space reads /proc/PID/fd: the open's result says which directory the fd is. It comes in
    the open's event, or, for an open the kernel sent at entry, as an OpenedEvent after it."""
    (base / "build").mkdir()
    table = ProcessTable()
    info = table.lookup(sleeper.pid)
    opened = OpenEvent(hdr(sleeper.pid), AT_FDCWD, os.O_RDONLY, 0, OpenSyscall.OPENAT, str(base / "build"), False,
                       result=None if sent_at_entry else 7)
    table.note_open(opened, table.resolve(sleeper.pid, opened.path), info)
    failed = OpenEvent(hdr(sleeper.pid), AT_FDCWD, os.O_RDONLY, 0, OpenSyscall.OPENAT, str(base / "x"), False,
                       result=-2)
    table.note_open(failed, table.resolve(sleeper.pid, failed.path), info)  # -ENOENT: no fd
    if sent_at_entry:
        table.on_opened(OpenedEvent(hdr(sleeper.pid), 7))
    sleeper.kill()
    sleeper.wait()
    table.on_exit(sleeper.pid)
    assert table.resolve(sleeper.pid, "lib", 7).literal == str(base / "build/lib")
    assert table.resolve(sleeper.pid, "lib", 8).resolved is False  # an fd never seen is not guessed


def test_realpath_in_c_agrees_with_pythons_on_every_kind_of_name(tmp_path):
    """processes.realpath takes libc's realpath(3) when it can: it must give what
    os.path.realpath gives, for names that exist, do not, loop or climb through links."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "etc-link").symlink_to("/etc")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "sub" / "up").symlink_to("../sub")
    names = ["/", "/etc/hosts", "/etc/hosts/", "/nonexistent/x", f"{tmp_path}/etc-link/hosts",
             f"{tmp_path}/etc-link/../etc", f"{tmp_path}/loop", f"{tmp_path}/loop/x", f"{tmp_path}/sub/up/up/../x",
             "/usr/lib/../bin//ls", "/etc/./hosts", f"{tmp_path}/missing/../sub", f"{tmp_path}/\udcff",
             f"/proc/{os.getpid()}/cwd/.."]
    assert [processes_mod.realpath(n) for n in names] == [os.path.realpath(n) for n in names]


# --- directories found canonical (CanonicalDirs) -------------------------------------------------

SECOND = 1_000_000_000


def test_a_name_in_a_directory_found_canonical_resolves_as_realpath_does(base, monkeypatch):
    (base / "d").mkdir()
    (base / "d" / "f").write_text("x")
    (base / "d" / "link").symlink_to(base / "d" / "f")
    table = ProcessTable()
    first = table.resolve(os.getpid(), str(base / "d" / "f"), names_seen=(7, 0))
    calls = []
    monkeypatch.setattr(processes_mod, "realpath", lambda p: calls.append(p) or os.path.realpath(p))
    names = ["f", "missing", "link", ".", "..", "f/"]
    found = [table.resolve(os.getpid(), f"{base}/d/{n}", names_seen=(7, 1)) for n in names]
    monkeypatch.undo()
    assert found == [ProcessTable().resolve(os.getpid(), f"{base}/d/{n}") for n in names]
    assert found[0] == first and found[0].file_id == (os.stat(base / "d" / "f").st_dev, os.stat(base / "d" / "f").st_ino)
    # Only the names the directory's entry cannot settle took the long way: a symlink, `.`,
    # `..` and a trailing slash.
    assert calls == [f"{base}/d/{n}" for n in ("link", ".", "..", "f/")]


def test_a_directory_replaced_by_a_symlink_is_seen_after_a_tracked_change_or_the_window(base):
    (base / "d").mkdir()
    (base / "d" / "f").write_text("old")
    (base / "elsewhere").mkdir()
    (base / "elsewhere" / "f").write_text("new")
    table = ProcessTable()
    name = str(base / "d" / "f")
    assert table.resolve(os.getpid(), name, names_seen=(7, 0)).canonical == name
    (base / "d").rename(base / "gone")
    (base / "d").symlink_to(base / "elsewhere")
    new = os.stat(base / "elsewhere" / "f")
    # The name's file is read fresh, through the symlink, even while the directory's entry stands:
    stale = table.resolve(os.getpid(), name, names_seen=(7, SECOND // 2))
    assert stale.file_id == (new.st_dev, new.st_ino)
    assert stale.canonical == name  # the name, though, is the one found before: the documented bound
    # A name change by a tracked process (names_gen moved on), or the window's end: realpath again.
    for seen in [(8, SECOND // 2), (7, SECOND + 1)]:
        assert table.resolve(os.getpid(), name, names_seen=seen).canonical == str(base / "elsewhere" / "f")


def test_a_directory_spelled_through_a_symlink_is_never_taken_for_canonical(base, monkeypatch):
    (base / "real").mkdir()
    (base / "real" / "f").write_text("x")
    (base / "via").symlink_to(base / "real")
    table = ProcessTable()
    for t in range(3):
        assert table.resolve(os.getpid(), str(base / "via" / "f"), names_seen=(1, t)).canonical == str(base / "real" / "f")
    calls = []
    monkeypatch.setattr(processes_mod, "realpath", lambda p: calls.append(p) or os.path.realpath(p))
    table.resolve(os.getpid(), str(base / "via" / "f"), names_seen=(1, 3))
    assert calls == [str(base / "via" / "f")]


def test_canonical_directories_are_bounded(base, monkeypatch):
    monkeypatch.setattr(processes_mod, "CANONICAL_DIRS_KEPT", 3)
    dirs = processes_mod.CanonicalDirs()
    for i in range(5):
        dirs.add(f"{base}/d{i}", (0, 0))
    assert [d for d in (f"{base}/d{i}" for i in range(5)) if dirs.target(d + "/x", 0, 0)] == [
        f"{base}/d2", f"{base}/d3", f"{base}/d4"]


@pytest.fixture(scope="module")
def known_dir(tmp_path_factory):
    """A directory with a name of every kind a Target tells apart."""
    d = tmp_path_factory.mktemp("known")
    (d / "f").write_text("x")
    os.link(d / "f", d / "hard")
    (d / "link").symlink_to(d / "f")
    (d / "dangling").symlink_to(d / "missing")
    (d / "sub").mkdir()
    (d / ".env").write_text("x")
    (d / "\udcff").write_text("not UTF-8")  # the byte 0xff, as os.fsdecode spells it
    return d


NAMES = ["f", "hard", "link", "dangling", "sub", ".env", "\udcff", "missing", ".", "..", "", "f/x", "sub/f",
         "sub/", "./f", "sub/../f", ".envx", "..f"]


@settings(max_examples=200, deadline=None)
@given(name=st.one_of(st.sampled_from(NAMES),
                      st.lists(st.sampled_from(["f", ".", "/", "\udcff", "e", "sub", "link"]), max_size=6).map("".join)))
def test_a_name_in_a_known_directory_resolves_in_c_as_the_long_way_does(known_dir, name):
    """CanonicalDirs.target (sensor/_paths.c) gives the Target realpath and a stat give, every
    field of it, or leaves the name to them."""
    table = ProcessTable()
    table.resolve(os.getpid(), f"{known_dir}/f", names_seen=(7, 0))  # the directory is now known
    path = f"{known_dir}/{name}"
    known = table._canonical_dirs.target(path, 7, 1)
    long_way = ProcessTable().resolve(os.getpid(), path)
    assert table.resolve(os.getpid(), path, names_seen=(7, 1)) == long_way
    if known is not None:
        assert known == long_way and type(known) is Target


def test_a_name_through_proc_self_keeps_its_spelling_in_a_known_directory():
    table = ProcessTable()
    first = table.resolve(os.getpid(), "/proc/self/status", names_seen=(1, 0))
    assert table._canonical_dirs.target(first.canonical, 1, 1) is not None  # /proc/PID is known
    assert table._canonical_dirs.target("/proc/self/status", 1, 1) is None  # the long way keeps the spelling
    assert table.resolve(os.getpid(), "/proc/self/status", names_seen=(1, 1)) == first == Target(
        "/proc/self/status", f"/proc/{os.getpid()}/status", True, first.file_id, 1, False)


def test_known_name_builds_only_a_target_of_six_fields():
    with pytest.raises(TypeError, match="Target must be a named tuple of 6 fields"):
        _paths.set_types(tuple)
