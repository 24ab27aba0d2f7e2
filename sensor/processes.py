"""The process table: what the sensor knows about each agent process, from events first and from
/proc (psutil) to fill gaps. All the I/O the correlator must not do happens here: resolving
relative paths against a process's cwd or dirfd, symlinks, and the facts profiles match on."""

from __future__ import annotations

import os
import pwd
import stat
from collections import OrderedDict
from functools import cached_property, partial
from dataclasses import dataclass, field

import psutil

from .correlate import Target
from .abi import FileOp
from .decode import AT_FDCWD, CwdEvent, ExecEvent, FileChangeEvent, ForkEvent, OpenedEvent, OpenEvent
from .profiles import Profile
from .repeats import WINDOW_NS

from .compiled import _paths

_paths.set_types(Target)

EXITED_KEPT = 4096  # exited processes remembered for the ancestry of later alerts
FDS_KEPT = 1024     # open files remembered per process (the oldest are forgotten first)
OPENING_KEPT = 4096  # opens sent at entry waiting for their result, by thread
CANONICAL_DIRS_KEPT = 4096  # directories found canonical (CanonicalDirs)


@dataclass
class AgentInstance:
    """One running agent: a profile applied to a process tree rooted at root_pid."""
    profile: Profile
    slot: int
    root_pid: int
    start_ticks: int | None
    how: str  # "exec" (agent-sensor exec), "kernel-match", "match", "rescan"
    events: int = 0  # judged so far, and the repeats the kernel counted (status, top)

    @cached_property  # named in every event the stream carries; a reload keeps the profile's name
    def id(self) -> str:
        return f"{self.profile.name}/{self.root_pid}.{self.start_ticks or 0}"


@dataclass
class ProcessInfo:
    pid: int
    ppid: int | None
    exe: str
    cmdline: tuple[str, ...]
    uid: int | None
    start_ticks: int | None     # /proc/<pid>/stat starttime: tells a process from a reused pid
    cwd: str | None = None      # followed through fork and chdir events; None: ask /proc
    fds: dict[int, str] = field(default_factory=dict)  # fd -> file, from open results (bounded)
    agent: AgentInstance | None = None
    exited: bool = False
    children: set[int] = field(default_factory=set)

    @property
    def user(self) -> str | None:
        return user_name(self.uid)


def user_name(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def proc_stat_fields(pid: int, task: int | None = None) -> list[bytes] | None:
    """/proc/PID/stat (or one thread's, /proc/PID/task/TASK/stat) from field 3 (state) on, or
    None if the process is gone. comm (field 2) may contain spaces and parentheses: the split
    starts after its closing one."""
    try:
        with open(f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    fields = proc_stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22 overall


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def cgroup_path(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


class ExecFacts:
    """ProcessFacts (profiles/match.py) of a process that just called exec, each read only when
    a selector asks for it: most execs on a host are no agent's, and the command line (in the
    event) usually settles that without a look at /proc."""

    def __init__(self, table: ProcessTable, event: ExecEvent):
        self._table, self._event = table, event
        self.uid = event.hdr.uid

    @cached_property
    def cmdline(self) -> str:
        argv = self._event.argv
        if self._event.flags & self._event.flags.ARGV_TRUNCATED or not argv:
            argv = tuple(_proc_cmdline(self._event.hdr.pid)) or argv
        return " ".join(argv)

    @cached_property
    def exe_paths(self) -> tuple[str, ...]:
        pid, spellings = self._event.hdr.pid, []
        if self._event.filename:
            spellings.extend(self._table.resolve(pid, self._event.filename, self._event.dirfd).spellings)
        exe = _readlink(f"/proc/{pid}/exe")
        if exe and exe not in spellings:
            spellings.append(exe)
        return tuple(spellings)

    @cached_property
    def username(self) -> str | None:
        return user_name(self.uid)

    @cached_property
    def cgroup(self) -> str | None:
        return cgroup_path(self._event.hdr.pid)


class ProcessTable:
    def __init__(self) -> None:
        self._live: dict[int, ProcessInfo] = {}
        self._exited: OrderedDict[int, ProcessInfo] = OrderedDict()
        self._opening: dict[int, str] = {}  # tid -> canonical path of its open in progress
        self._canonical_dirs = CanonicalDirs()

    # -- lookups ---------------------------------------------------------------------------
    def get(self, pid: int) -> ProcessInfo | None:
        """The live process with this pid, else the last one that had it and exited."""
        return self._live.get(pid) or self._exited.get(pid)

    def lookup(self, pid: int) -> ProcessInfo:
        """The live process with this pid, read from /proc if the table has not seen it yet.
        An exited entry is never returned for a live process that reuses its pid."""
        info = self._live.get(pid)
        if info is not None:
            return info
        info = self._from_proc(pid)
        if info.exited:
            return self._exited.get(pid, info)
        self._add_live(info)
        return info

    def _add_live(self, info: ProcessInfo) -> None:
        self._exited.pop(info.pid, None)  # the pid now names a new process
        self._live[info.pid] = info

    def agent_processes(self, agent: AgentInstance) -> list[ProcessInfo]:
        return [p for p in self._live.values() if p.agent is agent]

    def agents(self) -> list[AgentInstance]:
        seen: dict[int, AgentInstance] = {}
        for p in self._live.values():
            if p.agent is not None:
                seen.setdefault(id(p.agent), p.agent)
        return list(seen.values())

    def ancestry(self, pid: int, limit: int = 16) -> list[ProcessInfo]:
        """Parent first, up to init or limit entries."""
        chain: list[ProcessInfo] = []
        info = self.get(pid)
        while info is not None and info.ppid and len(chain) < limit:
            # Ancestors outside the agent get no exit events, so they are read fresh, not cached.
            parent = self.get(info.ppid) or self._from_proc(info.ppid)
            if parent.exited and parent.pid not in self._exited:
                break
            chain.append(parent)
            info = parent
        return chain

    # -- events ----------------------------------------------------------------------------
    def on_fork(self, event: ForkEvent) -> ProcessInfo:
        parent = self.lookup(event.parent_pid)
        # The parent's cwd as of the fork, not the child's as /proc shows it later (it may have moved on).
        child = ProcessInfo(pid=event.child_pid, ppid=parent.pid, exe=parent.exe, cmdline=parent.cmdline,
                            uid=event.hdr.uid, start_ticks=start_ticks(event.child_pid),
                            cwd=parent.cwd or _readlink(f"/proc/{event.child_pid}/cwd"), agent=parent.agent)
        parent.children.add(child.pid)
        self._add_live(child)
        return child

    def on_cwd(self, event: CwdEvent) -> ProcessInfo:
        """A successful chdir/fchdir: the new cwd, resolved as the kernel did (symlinks followed).
        An fchdir whose fd is gone leaves the cwd unknown: /proc is asked at the next use."""
        info = self.lookup(event.hdr.pid)
        if event.path:
            target = self.resolve(event.hdr.pid, event.path)
            info.cwd = target.canonical if target.resolved else None
        else:
            info.cwd = _readlink(f"/proc/{info.pid}/fd/{event.fd}")
        return info

    def note_open(self, event: OpenEvent, target: Target, info: ProcessInfo) -> None:
        """Which file an open's fd is (info: the process that opened it), from its result; for
        an open sent before it returned, the result comes on its own (on_opened)."""
        if event.result is None:
            put_newest(self._opening, event.hdr.tid, target.canonical, OPENING_KEPT)
        elif event.result >= 0:
            put_newest(info.fds, event.result, target.canonical, FDS_KEPT)

    def on_opened(self, event: OpenedEvent) -> None:
        """The result of an open sent at entry: the fd that thread's open in progress became."""
        path = self._opening.pop(event.hdr.tid, None)
        if path is not None:
            self._add_fd(event.hdr.pid, event.fd, path)

    def _add_fd(self, pid: int, fd: int, path: str) -> None:
        info = self.get(pid)
        if info is not None:
            put_newest(info.fds, fd, path, FDS_KEPT)

    def on_exec(self, event: ExecEvent) -> ProcessInfo:
        """What the process runs now. Without a name and arguments in the event (not readable at
        execve entry: README, Known limits) they are read from /proc; "" and () if the process
        is already gone, never what it ran before the exec."""
        info = self.lookup(event.hdr.pid)
        program = self.resolve(event.hdr.pid, event.filename, event.dirfd).canonical if event.filename else ""
        info.exe = program or _readlink(f"/proc/{info.pid}/exe") or ""
        info.cmdline = event.argv or tuple(_proc_cmdline(info.pid))
        info.uid = event.hdr.uid
        return info

    def on_exit(self, pid: int) -> ProcessInfo | None:
        info = self._live.pop(pid, None)
        if info is None:
            return None
        info.exited = True
        self._exited[pid] = info
        while len(self._exited) > EXITED_KEPT:
            self._exited.popitem(last=False)
        return info

    def attach(self, pid: int, agent: AgentInstance) -> ProcessInfo:
        info = self.lookup(pid)
        info.agent = agent
        return info

    def forget_agent(self, agent: AgentInstance) -> None:
        for p in list(self._live.values()):
            if p.agent is agent:
                p.agent = None

    # -- enrichment ------------------------------------------------------------------------
    def resolve(self, pid: int, path: str, dirfd: int = AT_FDCWD, follow: bool = True,
                names_seen: tuple[int, int] | None = None) -> Target:
        """Absolute and canonical spellings of a path as process pid named it. follow=False for
        operations on the name itself (unlink, rename, link): a final symlink is not followed.
        names_seen: an open's (names_gen, ktime_ns), for CanonicalDirs."""
        if not path.startswith("/"):
            info = self.get(pid)
            if dirfd == AT_FDCWD and info is not None and info.cwd:
                base = info.cwd  # as of this event: /proc shows the cwd of now
            elif dirfd != AT_FDCWD and info is not None and dirfd in info.fds:
                base = info.fds[dirfd]  # the same: the fd may be closed, or the process gone
            else:
                base = _readlink(f"/proc/{pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{pid}/fd/{dirfd}")
                if base is not None and dirfd == AT_FDCWD and info is not None:
                    info.cwd = base
            if base is None:
                return Target(path, path, resolved=False)
            path = os.path.join(base, path)
        if follow and names_seen:
            # Nearly every open: a name in a directory found canonical, settled by one C call
            # before the Python below. It answers only for a name that Python would leave as
            # it is (no `.`, `..` or empty segment; /proc/self, a symlink, is never a directory
            # found canonical).
            known = self._canonical_dirs.target(path, *names_seen)
            if known is not None:
                return known
        # `..` is resolved by realpath, after the symlink before it, as the kernel does: a
        # lexical normpath would turn /proc/PID/cwd/../x into /proc/PID/x.
        absolute = _proc_self_as(pid, path)
        literal = _tidy(path)
        if follow:
            canonical = realpath(absolute)
        else:
            head, name = os.path.split(absolute.rstrip("/") or "/")
            canonical = os.path.join(realpath(head), name) if name not in ("", ".", "..") \
                else realpath(absolute)
        try:
            st = os.stat(canonical, follow_symlinks=follow)
        except OSError:
            st = None
        if names_seen and follow and canonical == absolute and st is not None:
            self._canonical_dirs.add(canonical.rpartition("/")[0], names_seen)
        if st is None:
            return Target(literal, canonical)
        return Target(literal, canonical, True, (st.st_dev, st.st_ino), st.st_nlink, stat.S_ISDIR(st.st_mode))

    def change_targets(self, event: FileChangeEvent) -> tuple[Target | None, Target | None]:
        """The names a file change acts on: (the changed file or a symlink's target, the second name)."""
        pid = event.hdr.pid
        follow = event.op in (FileOp.CHMOD, FileOp.CHOWN, FileOp.TRUNCATE)
        second = self.resolve(pid, event.path2, event.dirfd2, follow=False) if event.path2 else None
        if event.fd >= 0 and not event.path:
            fd_path = _readlink(f"/proc/{pid}/fd/{event.fd}")
            return (self.resolve(pid, fd_path) if fd_path and fd_path.startswith("/") else None), second
        if not event.path:
            return None, second
        if event.op == FileOp.SYMLINK:
            # A relative symlink target is relative to the link's directory, not to the cwd.
            base = os.path.dirname(second.literal) if second and not event.path.startswith("/") else ""
            return self.resolve(pid, os.path.join(base, event.path) if base else event.path, event.dirfd), second
        return self.resolve(pid, event.path, event.dirfd, follow=follow), second

    def facts(self, event: ExecEvent) -> ExecFacts:
        """What profiles' match selectors see for a process that just called exec."""
        return ExecFacts(self, event)

    def _from_proc(self, pid: int) -> ProcessInfo:
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                ppid, uid = p.ppid(), p.uids().real
                cmdline = tuple(p.cmdline())
                exe = _safe(p.exe) or ""
                cwd = _safe(p.cwd)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return ProcessInfo(pid=pid, ppid=None, exe="", cmdline=(), uid=None, start_ticks=None, exited=True)
        return ProcessInfo(pid=pid, ppid=ppid, exe=exe, cmdline=cmdline, uid=uid,
                           start_ticks=start_ticks(pid), cwd=cwd)


class CanonicalDirs:
    """Directories an agent's open found spelled canonically (no symlink, `.` or `..` on the
    way): a later open of a name in one needs one lstat, not realpath's readlink per component.

    A name found through one is as fresh as realpath would make it, with the same bound as
    counted repeats (sensor/repeats.py): a name change by any tracked process moves names_gen
    on, so every entry misses at once; a change by a process that is not an agent (a directory
    on the way replaced by a symlink) is seen when the entry expires, WINDOW_NS after it was
    found. The file's identity, which secrets are also matched by, is always read fresh: the
    lstat goes through the name as the agent spelled it."""

    def __init__(self) -> None:
        self._dirs: dict[str, tuple[int, int]] = {}  # directory -> (names_gen, expiry ktime)
        # target(name, names_gen, ktime_ns) -> the Target of a name in a known directory that is
        # not itself a symlink; None: resolve it the long way. In C
        # (sensor/_paths.c): the lookup and the Target cost the judge more than the statx.
        self.target = partial(_paths.known_name, self._dirs)

    def add(self, directory: str, names_seen: tuple[int, int]) -> None:
        generation, now_ns = names_seen
        put_newest(self._dirs, directory or "/", (generation, now_ns + WINDOW_NS), CANONICAL_DIRS_KEPT)


def put_newest(entries: dict, key, value, most: int) -> None:
    """Set key, moved to the end if it was there, and forget the oldest entries past `most`."""
    entries.pop(key, None)
    entries[key] = value
    while len(entries) > most:
        entries.pop(next(iter(entries)))


def _safe(getter):
    try:
        return getter()
    except (psutil.Error, OSError):
        return None


def _proc_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode("utf-8", "surrogateescape") for a in raw.rstrip(b"\0").split(b"\0") if raw]


def realpath(path: str) -> str:
    """os.path.realpath, in C when every name on the way exists: one call instead of a Python
    loop over lstat, the judge's largest cost per open. A missing name (the C function fails)
    takes Python's way, which resolves what exists and keeps the rest."""
    found = _paths.realpath(path)
    return found if found is not None else os.path.realpath(path)


def _tidy(path: str) -> str:
    """The path as named, without repeated slashes or `.` segments (`..` kept: see resolve)."""
    if "//" not in path and "/." not in path and path[-1:] != "/":
        return path  # already tidy: most names are
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/" + "/".join(parts)


def _proc_self_as(pid: int, path: str) -> str:
    """/proc/self means the *agent*, not the sensor resolving the path."""
    if not path.startswith("/proc/"):  # nearly every name: one test
        return path
    for prefix in ("/proc/self", "/proc/thread-self"):
        if path == prefix or path.startswith(prefix + "/"):
            return f"/proc/{pid}" + path[len(prefix):]
    return path
