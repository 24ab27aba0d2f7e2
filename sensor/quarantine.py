"""Quarantine (`on_violation: quarantine`): keep an agent's processes alive for forensics but
unable to do anything. Mechanism only: the daemon decides when to isolate, release or kill.

The cgroup method (cgroup v2; on a hybrid layout the v2 hierarchy is /sys/fs/cgroup/unified):

1. mkdir <root>/<parent>/incident-<id>. The parent cgroup never holds processes itself.
2. Freeze the still-empty incident cgroup (cgroup.freeze = 1), *then* move the processes in. A
   process moved into a frozen cgroup stops at once, so a moved parent cannot fork any more; a
   child forked before its parent's move exists (fork and cgroup migration exclude each other)
   and is found by the next round's /proc scan for descendants of the given pids and moved too.
   Rounds repeat until no descendant is outside (bounded). Freezing first closes the fork race
   instead of chasing it.
3. Wait (bounded) for cgroup.events to say `frozen 1`.
4. Cut the network with bpf/isolate.c. A cgroup_skb program filters a packet by the cgroup of its
   *socket*, fixed when the socket was created, so a program on the incident cgroup alone does
   not touch connections or listeners the processes opened before the move (checked on 6.18).
   Hence two programs: `as_isolate_all` (drop everything) on the incident cgroup for sockets
   opened from now on, and `as_isolate_sock` at the v2 root, which drops the packets of the
   sockets the processes already held, matched by socket cookie (found with sock_diag, else
   pidfd_getfd + SO_COOKIE). The root program sees every inet packet of the machine (one hash
   lookup each), so it is attached only while some isolation holds such sockets.
   Unix sockets are not network and are not cut (a frozen process cannot use them anyway).

The fallback, when there is no usable cgroup v2 (not mounted, no permission, no cgroup.freeze) or
a step fails: SIGSTOP every process (given pids and their descendants, until none is left
running). That is weaker - anyone allowed to signal the process can SIGCONT it, and the network
stays up - and the Isolation says so in `detail`.

What is left behind, deliberately:
- A frozen incident cgroup survives close(), a daemon crash and a restart: its processes stay
  frozen until someone calls release() or kill() with the Isolation record (or by hand:
  `echo 1 > .../incident-<id>/cgroup.kill`, or move the pids out and rmdir).
- close() detaches every program this object attached, so the kernel keeps no program nobody
  owns, but leaves freezes alone. After a crash the programs stay attached (the cgroup holds
  them); the next Quarantine sweeps before its first use: it detaches `as_isolate_*` programs no
  process holds an fd of, removes empty incident-* cgroups and keeps populated ones. So crash +
  restart ends in the same state as close() + restart.
- <root>/<parent> itself is never removed: it is reused as it is."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from . import bpf_syscall
from .bpf_maps import Maps
from .bpf_object import DEFAULT_CACHE, ObjectError, load_program, obtain
from .cgroup_bpf import Program, detach_each, detach_stale, fd_links, held_prog_ids, prog_id_of
from .probes import cgroup_v2_root
from .processes import cgroup_path, proc_stat_fields, start_ticks, user_name

log = logging.getLogger("agent-sensor")

BPF_SOURCE = Path(__file__).resolve().parent.parent / "bpf" / "isolate.c"
PROG_ALL = "as_isolate_all"
PROG_SOCK = "as_isolate_sock"
OUR_PROGRAMS = (PROG_ALL, PROG_SOCK)
BPF_F_ALLOW_MULTI = 2
ATTACH_INGRESS, ATTACH_EGRESS = 0, 1          # BPF_CGROUP_INET_INGRESS / _EGRESS
ATTACH_TYPES = {"cgroup_inet_ingress": ATTACH_INGRESS, "ingress": ATTACH_INGRESS,
                "cgroup_inet_egress": ATTACH_EGRESS, "egress": ATTACH_EGRESS}

MOVE_ROUNDS = 50            # rounds of "move every descendant still outside"
FREEZE_WAIT_S = 2.0
KILL_WAIT_S = 2.0
STOP_WAIT_S = 1.0
RMDIR_WAIT_S = 2.0
POLL_S = 0.005
PF_KTHREAD = 0x00200000
SYS_PIDFD_GETFD = 438       # same number on every architecture
SO_COOKIE = 57
SO_DOMAIN = 39
INCIDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")

# incident cgroup directories some Quarantine of this process is using: a sweep leaves them alone
_ACTIVE_DIRS: set[str] = set()
# ids of isolate.c programs loaded by live Quarantine objects of this process
_LIVE_PROG_IDS: set[int] = set()
_REGISTRY_LOCK = threading.Lock()
_AUTO = object()


@dataclass
class Isolation:
    """What isolate() did, for the incident record and the alert."""
    incident_id: str
    method: str                  # "cgroup" (moved + frozen + network cut) or "sigstop" (fallback)
    cgroup: str | None           # path of the incident cgroup, or None for "sigstop"
    frozen: bool                 # cgroup.events said frozen (always False for "sigstop")
    network_cut: bool
    pids: list[int]              # processes isolated
    original_cgroups: dict[int, str]   # pid -> v2 cgroup ("0::" form, e.g. "/user.slice/x") it came from
    detail: str                  # human-readable summary, incl. any degradation warning


@dataclass
class _Incident:
    """What this object set up for one isolation and must undo."""
    isolation: Isolation
    tag: int
    cgroup_fd: int | None = None
    attached: list[int] = field(default_factory=list)     # attach types of as_isolate_all
    cookies: set[int] = field(default_factory=set)        # entries in isolated_sockets
    ticks: dict[int, int | None] = field(default_factory=dict)


class _Degrade(Exception):
    """A step of the cgroup method failed: undo it and fall back to SIGSTOP."""


# -- small kernel-interface helpers -----------------------------------------------------------

def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _events(cg: Path) -> dict[str, str]:
    try:
        text = (cg / "cgroup.events").read_text()
    except OSError:
        return {}
    return dict(line.split(None, 1) for line in text.splitlines() if " " in line)


def _wait_event(cg: Path, key: str, value: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if _events(cg).get(key, "").strip() == value:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


def _procs(cg: Path) -> list[int]:
    try:
        return [int(x) for x in (cg / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _hierarchy_root(path: Path) -> Path:
    """The root of the v2 hierarchy containing path (the root cgroup has no cgroup.type)."""
    while (path / "cgroup.type").exists() and path.parent != path:
        path = path.parent
    return path


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    state: str
    kthread: bool


def _stat(pid: int) -> _Proc | None:
    rest = proc_stat_fields(pid)
    if rest is None:
        return None
    try:
        return _Proc(pid, int(rest[1]), rest[0].decode(), bool(int(rest[6]) & PF_KTHREAD))
    except (IndexError, ValueError):
        return None


def _scan() -> dict[int, _Proc]:
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            p = _stat(int(name))
            if p is not None:
                table[p.pid] = p
    return table


def _protected(table: dict[int, _Proc]) -> set[int]:
    """Never isolate init, the sensor itself or its ancestors (freezing those would hang us)."""
    keep = {0, 1, 2, os.getpid()}
    pid = os.getpid()
    while pid > 1 and pid in table:
        pid = table[pid].ppid
        keep.add(pid)
    return keep


def _family(seeds: Iterable[int], table: dict[int, _Proc], protected: set[int]) -> list[int]:
    """seeds and all their descendants alive in table, parents before children."""
    children: dict[int, list[int]] = defaultdict(list)
    for p in table.values():
        children[p.ppid].append(p.pid)
    order: list[int] = []
    seen: set[int] = set()
    queue = deque(sorted(seeds))
    while queue:
        pid = queue.popleft()
        if pid in seen or pid not in table:
            continue
        seen.add(pid)
        if pid in protected or table[pid].kthread:
            continue
        order.append(pid)
        queue.extend(sorted(children.get(pid, ())))
    return order


def _alive(p: _Proc | None) -> bool:
    return p is not None and p.state not in ("Z", "X", "x")


def _signal(pid: int, sig: int, ticks: int | None = None) -> bool:
    """Signal through a pidfd; with ticks given, only if pid still names that process."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if ticks is not None and start_ticks(pid) not in (ticks, None):
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _fmt(pids: Iterable[int]) -> str:
    pids = list(pids)
    return ", ".join(map(str, pids[:20])) + (f" (+{len(pids) - 20} more)" if len(pids) > 20 else "")


# -- sockets ------------------------------------------------------------------------------------

def _socket_inode(target: str) -> int | None:
    if target.startswith("socket:[") and target.endswith("]"):
        return int(target[8:-1])
    return None


_TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
               6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}
_UNIX_TYPES = {1: "stream", 2: "dgram", 5: "seqpacket"}


def _diag_dump(unix: bool = True) -> tuple[dict[int, dict], str | None]:
    """inode -> description of every TCP/UDP (IPv4, IPv6) and unix socket, from sock_diag."""
    try:
        from pyroute2 import DiagSocket
    except ImportError as exc:
        return {}, f"pyroute2 missing: {exc}"
    found: dict[int, dict] = {}
    errors = []
    try:
        with DiagSocket() as ds:
            ds.bind()
            for family, fname in ((socket.AF_INET, "inet"), (socket.AF_INET6, "inet6")):
                for proto, pname in ((socket.IPPROTO_TCP, "tcp"), (socket.IPPROTO_UDP, "udp")):
                    try:
                        msgs = ds.get_sock_stats(family=family, protocol=proto)
                    except Exception as exc:  # noqa: BLE001 - one family missing is not fatal
                        errors.append(f"{fname}/{pname}: {exc}")
                        continue
                    for m in msgs:
                        state = m["idiag_state"]
                        if pname == "udp":
                            state_name = "ESTABLISHED" if state == 1 else "UNCONNECTED"
                        else:
                            state_name = _TCP_STATES.get(state, str(state))
                        found[m["idiag_inode"]] = {
                            "family": fname, "protocol": pname, "state": state_name,
                            "local": {"address": m["idiag_src"], "port": m["idiag_sport"]},
                            "remote": {"address": m["idiag_dst"], "port": m["idiag_dport"]},
                            "cookie": m["idiag_cookie"],
                        }
            if unix:
                try:
                    msgs = ds.get_sock_stats(family=socket.AF_UNIX)
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"unix: {exc}")
                    msgs = ()
                for m in msgs:
                    name = m.get_attr("UNIX_DIAG_NAME")
                    if name is not None and name.startswith("\0"):
                        name = "@" + name[1:]
                    found[m["udiag_ino"]] = {
                        "family": "unix", "protocol": _UNIX_TYPES.get(m["udiag_type"], str(m["udiag_type"])),
                        "state": _TCP_STATES.get(m["udiag_state"], str(m["udiag_state"])),
                        "path": name, "peer_inode": m.get_attr("UNIX_DIAG_PEER"),
                    }
    except Exception as exc:  # noqa: BLE001 - no sock_diag at all
        return found, f"sock_diag failed: {exc}"
    return found, "; ".join(errors) or None


_libc = None


def _pidfd_getfd(pidfd: int, fd: int) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    res = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res


def _cookie_via_getfd(pid: int, fd: int) -> int | None:
    """SO_COOKIE of an inet socket another process holds (None: not inet, or no access)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        dup = _pidfd_getfd(pidfd, fd)
    except OSError:
        return None
    finally:
        os.close(pidfd)
    try:
        s = socket.socket(fileno=os.dup(dup))
    except OSError:
        os.close(dup)
        return None
    try:
        if s.getsockopt(socket.SOL_SOCKET, SO_DOMAIN) not in (socket.AF_INET, socket.AF_INET6):
            return None
        return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")
    except OSError:
        return None
    finally:
        s.detach()
        os.close(dup)


def _inet_cookies(pids: Iterable[int]) -> tuple[set[int], list[str]]:
    """Cookies of the inet sockets the processes hold, and what could not be resolved."""
    holders: dict[int, tuple[int, int]] = {}
    for pid in pids:
        for fd, target in fd_links(pid):
            inode = _socket_inode(target)
            if inode is not None:
                holders.setdefault(inode, (pid, fd))
    if not holders:
        return set(), []
    table, err = _diag_dump(unix=True)
    cookies, missed = set(), []
    for inode, (pid, fd) in holders.items():
        info = table.get(inode)
        if info is not None and info["family"] == "unix":
            continue
        if info is not None:
            cookies.add(info["cookie"])
            continue
        cookie = _cookie_via_getfd(pid, fd)   # raw/ICMP/SCTP sockets, or sock_diag missing
        if cookie is not None:
            cookies.add(cookie)
        elif err:
            missed.append(f"socket:[{inode}] of {pid}")
    if missed and err:
        missed.append(f"({err})")
    return cookies, missed


# -- programs attached to cgroups (sweep after a crash) -----------------------------------------

def _detach_stale(cg: Path, held: set[int]) -> list[str]:
    """Detach isolate.c programs attached to cg that no process holds (left by a crash)."""
    return detach_stale(cg, OUR_PROGRAMS, ATTACH_TYPES, held | _LIVE_PROG_IDS)


# -- the quarantine -----------------------------------------------------------------------------

class Quarantine:
    def __init__(self, cgroup_root: Path | str | None = _AUTO, parent: str = "agent-sensor",  # type: ignore[assignment]
                 bpf_cache: Path | None = DEFAULT_CACHE):
        self.bpf_cache = bpf_cache  # where the compiled isolate.c is kept (sensor/bpf_object.py)
        if cgroup_root is _AUTO:
            cgroup_root = cgroup_v2_root()
        self.root: Path | None = Path(cgroup_root) if cgroup_root is not None else None
        self.parent = parent.strip("/")
        self._lock = threading.RLock()
        self._incidents: dict[str, _Incident] = {}
        self._tags = 0
        self._bpf = None
        self._fn_all = None
        self._fn_sock = None
        self._bpf_error: str | None = None
        self._root_fd: int | None = None
        self._root_attached: list[int] = []
        self._swept = False
        self._prog_ids: set[int] = set()

    # -- capability -------------------------------------------------------------------------
    @property
    def parent_dir(self) -> Path | None:
        return self.root / self.parent if self.root is not None else None

    @property
    def available(self) -> tuple[bool, str]:
        """Can the cgroup method work here, and if not, why."""
        if self.root is None:
            return False, "no cgroup v2 hierarchy mounted (or disabled): only SIGSTOP is possible"
        if not (self.root / "cgroup.procs").exists() or not (self.root / "cgroup.controllers").exists():
            return False, f"{self.root} is not a cgroup v2 directory"
        if not os.access(self.root, os.W_OK):
            return False, f"no permission to create cgroups under {self.root} (needs root)"
        probe = self.parent_dir if self.parent_dir.is_dir() else None
        if probe is None:
            probe = next((d for d in self.root.iterdir() if d.is_dir() and (d / "cgroup.type").exists()), None)
        if probe is not None:
            if not (probe / "cgroup.freeze").exists():
                return False, "this kernel's cgroup v2 has no freezer (cgroup.freeze, Linux >= 5.2)"
        else:
            major, minor = (int(x) for x in re.findall(r"\d+", os.uname().release)[:2])
            if (major, minor) < (5, 2):
                return False, "this kernel's cgroup v2 has no freezer (cgroup.freeze, Linux >= 5.2)"
        return True, f"cgroup v2 at {self.root}: incidents under {self.parent_dir}"

    @property
    def program_ids(self) -> set[int]:
        """Kernel ids of every isolate.c program this object has loaded (kept after close(), to
        tell its attachments from those of another sensor in `bpftool cgroup tree`)."""
        return set(self._prog_ids)

    def prepare(self) -> tuple[bool, str]:
        """Compile bpf/isolate.c now rather than at the first isolation (optional)."""
        with self._lock:
            ok = self._ensure_bpf()
            return ok, (f"{BPF_SOURCE.name} loaded" if ok else self._bpf_error or "unknown error")

    # -- isolate ----------------------------------------------------------------------------
    def isolate(self, incident_id: str, pids: list[int]) -> Isolation:
        """Move pids and all their descendants into a frozen incident cgroup and cut their
        network; SIGSTOP them instead when that is impossible (see Isolation.detail). A process
        already gone is skipped. Raises ValueError only for an incident id that cannot name a
        cgroup or is already isolated by this object."""
        if not INCIDENT_ID.match(incident_id or ""):
            raise ValueError(f"incident id {incident_id!r} is not usable as a cgroup name")
        with self._lock:
            if incident_id in self._incidents:
                raise ValueError(f"incident {incident_id} is already isolated by this Quarantine")
            ok, why = self.available
            if not ok:
                return self._sigstop(incident_id, pids, f"WARNING: cgroup isolation unavailable ({why})")
            self._sweep()
            try:
                return self._isolate_cgroup(incident_id, pids)
            except _Degrade as exc:
                return self._sigstop(incident_id, pids, f"WARNING: cgroup isolation failed ({exc})")

    def _isolate_cgroup(self, incident_id: str, pids: list[int]) -> Isolation:
        assert self.root is not None
        hroot = _hierarchy_root(self.root)
        cg = self.parent_dir / f"incident-{incident_id}"
        rel = "/" + str(cg.relative_to(hroot))
        with _REGISTRY_LOCK:
            _ACTIVE_DIRS.add(str(cg))
        warnings: list[str] = []
        original: dict[int, str] = {}
        try:
            try:
                cg.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _Degrade(f"cannot create {cg}: {exc.strerror}") from exc
            if not (cg / "cgroup.freeze").exists():
                raise _Degrade(f"{cg} has no cgroup.freeze (cgroup v2 freezer needs Linux >= 5.2)")
            try:
                _write(cg / "cgroup.freeze", "1")
            except OSError as exc:
                raise _Degrade(f"cannot freeze {cg}: {exc.strerror}") from exc
            complete = self._move_in(cg, rel, pids, original)
            if not complete:
                warnings.append(f"WARNING: processes were still appearing outside after {MOVE_ROUNDS} rounds")
        except _Degrade:
            self._undo(cg, original, hroot)
            with _REGISTRY_LOCK:
                _ACTIVE_DIRS.discard(str(cg))
            raise
        members = _procs(cg)
        if not members:  # nothing to hold: leave no empty frozen cgroup behind
            self._undo(cg, original, hroot)
        frozen = bool(members) and _wait_event(cg, "frozen", "1", FREEZE_WAIT_S)
        members = _procs(cg) if members else []
        table = _scan()
        refused = sorted(p for p in set(pids) & _protected(table))
        if refused:
            warnings.append(f"WARNING: refused to isolate {_fmt(refused)} (init, the sensor or its ancestors)")
        if members and not frozen:
            warnings.append(f"WARNING: freeze requested but cgroup.events did not report frozen within "
                            f"{FREEZE_WAIT_S:.0f} s (a process in uninterruptible sleep?); it completes when "
                            "they return to user space")
        self._fill_original(members, original)
        self._tags += 1
        isolation = Isolation(incident_id=incident_id, method="cgroup", cgroup=str(cg), frozen=frozen,
                              network_cut=False, pids=members,
                              original_cgroups={p: original[p] for p in members if p in original}, detail="")
        incident = _Incident(isolation, self._tags, ticks={p: start_ticks(p) for p in members})
        if members:
            self._incidents[incident_id] = incident
            cut, why = self._cut_network(incident)
            isolation.network_cut = cut
            if why:
                warnings.append(why)
        stopped = [p for p in members if (st := _stat(p)) is not None and st.state == "T"]
        if stopped:
            warnings.append(f"also job-control stopped (SIGSTOP) before isolation: {_fmt(stopped)}")
        missing = sorted(set(pids) - set(members))
        summary = (f"{len(members)} process(es) moved to {cg} and " + ("frozen" if frozen else "freezing")
                   + (", network cut" if isolation.network_cut else ", network NOT cut"))
        if not members:
            summary = (f"nothing isolated: none of the processes [{_fmt(pids)}] is alive and isolable; "
                       f"{cg} removed")
        if members and missing:
            summary += f"; already gone: {_fmt(missing)}"
        isolation.detail = "; ".join([summary, *warnings])
        log.info("quarantine %s: %s", incident_id, isolation.detail)
        return isolation

    def _move_in(self, cg: Path, rel: str, seeds: list[int], original: dict[int, str]) -> bool:
        """Move seeds and their descendants into cg until none is outside; True when converged."""
        for _ in range(MOVE_ROUNDS):
            table = _scan()
            protected = _protected(table)
            outside = []
            for pid in _family(set(seeds) | set(original), table, protected):
                if not _alive(table.get(pid)):
                    continue
                current = cgroup_path(pid)
                if current is not None and current != rel:
                    outside.append((pid, current))
            if not outside:
                return True
            for pid, current in outside:
                try:
                    _write(cg / "cgroup.procs", str(pid))
                except OSError as exc:
                    if exc.errno == errno.ESRCH or not _alive(_stat(pid)):
                        continue  # exited meanwhile
                    raise _Degrade(f"moving pid {pid} into {cg} failed: {exc.strerror}") from exc
                original.setdefault(pid, current)
        return False

    @staticmethod
    def _fill_original(members: list[int], original: dict[int, str]) -> None:
        """Children born inside (between their parent's move and its freeze) come from where
        their nearest moved ancestor came from."""
        for pid in members:
            if pid in original:
                continue
            p, hops = _stat(pid), 0
            while p is not None and p.ppid not in original and p.ppid > 1 and hops < 64:
                p, hops = _stat(p.ppid), hops + 1
            if p is not None and p.ppid in original:
                original[pid] = original[p.ppid]

    def _undo(self, cg: Path, original: dict[int, str], hroot: Path) -> None:
        for pid in _procs(cg):
            self._move_out(pid, original, hroot)
        try:
            _write(cg / "cgroup.freeze", "0")
        except OSError:
            pass
        self._rmdir(cg)

    # -- network ----------------------------------------------------------------------------
    def _ensure_bpf(self) -> bool:
        if self._bpf is not None:
            return True
        try:
            obj, _ = obtain("isolate", BPF_SOURCE.read_text(), ["-w"], self.bpf_cache)
            bpf = Maps(obj.maps, {"isolated_sockets": (ctypes.c_uint64, ctypes.c_uint64)})
        except (OSError, TypeError, ObjectError) as exc:
            self._bpf_error = f"compiling/loading {BPF_SOURCE} failed: {exc}"
            return False
        fns: list[Program] = []
        try:
            for name in (PROG_ALL, PROG_SOCK):
                fns.append(Program(name, load_program(obj, bpf.fds, name, bpf_syscall.PROG_TYPE_CGROUP_SKB)))
        except (OSError, ObjectError) as exc:
            for fn in fns:
                os.close(fn.fd)
            bpf.close()
            self._bpf_error = f"loading {BPF_SOURCE} failed: {exc}"
            return False
        fn_all, fn_sock = fns
        self._bpf, self._fn_all, self._fn_sock = bpf, fn_all, fn_sock
        self._bpf_error = None
        with _REGISTRY_LOCK:
            for fn in (fn_all, fn_sock):
                prog_id = prog_id_of(f"/proc/self/fdinfo/{fn.fd}")
                if prog_id is not None:
                    _LIVE_PROG_IDS.add(prog_id)
                    self._prog_ids.add(prog_id)
        return True

    def _cut_network(self, inc: _Incident) -> tuple[bool, str | None]:
        if not self._ensure_bpf():
            return False, f"WARNING: network NOT cut: {self._bpf_error}"
        cg = Path(inc.isolation.cgroup)
        try:
            inc.cgroup_fd = os.open(cg, os.O_RDONLY | os.O_DIRECTORY)
            for atype in (ATTACH_EGRESS, ATTACH_INGRESS):
                bpf_syscall.prog_attach(inc.cgroup_fd, self._fn_all.fd, atype, BPF_F_ALLOW_MULTI)
                inc.attached.append(atype)
        except Exception as exc:  # noqa: BLE001
            self._detach_incident(inc)
            return False, f"WARNING: network NOT cut: attaching {PROG_ALL} (cgroup_skb) to {cg} failed: {exc}"
        # Sockets opened before the move still belong to the old cgroup: cut them by cookie.
        cookies, missed = _inet_cookies(inc.isolation.pids)
        notes = []
        if missed:
            notes.append(f"WARNING: sockets not identified, not cut: {', '.join(missed[:10])}")
        if cookies:
            table = self._bpf[b"isolated_sockets"]
            try:
                for cookie in cookies:
                    table[table.Key(cookie)] = table.Leaf(inc.tag)
                    inc.cookies.add(cookie)
                self._attach_root()
            except Exception as exc:  # noqa: BLE001
                self._remove_cookies(inc)
                return False, (f"WARNING: network only partly cut: new sockets are blocked but the "
                               f"{len(cookies)} socket(s) opened before isolation are not ({PROG_SOCK}: {exc})")
        return not missed, "; ".join(notes) or None

    def _attach_root(self) -> None:
        if self._root_attached:
            return
        hroot = _hierarchy_root(self.root)
        if self._root_fd is None:
            self._root_fd = os.open(hroot, os.O_RDONLY | os.O_DIRECTORY)
        for atype in (ATTACH_EGRESS, ATTACH_INGRESS):
            try:
                bpf_syscall.prog_attach(self._root_fd, self._fn_sock.fd, atype, BPF_F_ALLOW_MULTI)
            except Exception:
                self._detach_root()
                raise
            self._root_attached.append(atype)

    def _detach_root(self) -> list[str]:
        errors = detach_each(self._root_fd, [(self._fn_sock, a) for a in self._root_attached], "the cgroup root")
        self._root_attached.clear()
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None
        return errors

    def _remove_cookies(self, inc: _Incident) -> list[str]:
        errors = []
        if inc.cookies and self._bpf is not None:
            table = self._bpf[b"isolated_sockets"]
            for cookie in list(inc.cookies):
                try:
                    del table[table.Key(cookie)]
                except KeyError:
                    pass
                except Exception as exc:  # noqa: BLE001
                    errors.append(str(exc))
        inc.cookies.clear()
        if self._root_attached and not any(i.cookies for i in self._incidents.values()):
            errors += self._detach_root()
        return errors

    def _detach_incident(self, inc: _Incident) -> list[str]:
        errors = detach_each(inc.cgroup_fd, [(self._fn_all, a) for a in inc.attached], "the incident cgroup")
        inc.attached.clear()
        if inc.cgroup_fd is not None:
            os.close(inc.cgroup_fd)
            inc.cgroup_fd = None
        return errors

    def _uncut(self, inc: _Incident | None) -> list[str]:
        if inc is None:
            return []
        return self._detach_incident(inc) + self._remove_cookies(inc)

    # -- release / kill ---------------------------------------------------------------------
    def release(self, isolation: Isolation, resume_stopped: bool = True) -> str:
        """Undo isolate(): restore the network, move every process back where it came from
        (they resume as they leave the frozen cgroup: moving them while still frozen means none
        can fork into the incident cgroup meanwhile), thaw and remove the incident cgroup.
        A process that was also job-control stopped (the kernel's STOP action for quarantine
        sends SIGSTOP before the daemon isolates) gets SIGCONT unless resume_stopped is False.
        Works on an Isolation made by another (closed or crashed) Quarantine too; for "sigstop"
        the pids are then signalled without the start-time check against pid reuse."""
        with self._lock:
            inc = self._incidents.pop(isolation.incident_id, None)
            if isolation.method == "sigstop":
                ticks = inc.ticks if inc else {}
                resumed = [p for p in isolation.pids if _signal(p, signal.SIGCONT, ticks.get(p))]
                return f"resumed {len(resumed)} process(es) with SIGCONT: {_fmt(resumed)}"
            self._sweep()
            errors = self._uncut(inc)
            cg = Path(isolation.cgroup)
            hroot = _hierarchy_root(self.root if self.root is not None else cg)
            original = {int(k): v for k, v in isolation.original_cgroups.items()}
            moved: list[int] = []
            if cg.is_dir():
                for _ in range(MOVE_ROUNDS):
                    members = _procs(cg)
                    if not members:
                        break
                    for pid in members:
                        err = self._move_out(pid, original, hroot)
                        if err is None:
                            moved.append(pid)
                        elif err:
                            errors.append(err)
                try:
                    _write(cg / "cgroup.freeze", "0")
                except OSError as exc:
                    errors.append(f"thaw: {exc.strerror}")
                _wait_event(cg, "frozen", "0", FREEZE_WAIT_S)
            removed = self._rmdir(cg)
            ticks = inc.ticks if inc else {}
            stopped = [p for p in moved if (st := _stat(p)) is not None and st.state == "T"]
            continued = [p for p in stopped if resume_stopped and _signal(p, signal.SIGCONT, ticks.get(p))]
            summary = (f"released {len(moved)} process(es) to their original cgroups: {_fmt(moved)}" if moved
                       else "no process was left in the incident cgroup")
            if continued:
                summary += f"; SIGCONT to {len(continued)} that were also stopped: {_fmt(continued)}"
            elif stopped:
                summary += f"; still stopped (SIGSTOP, not resumed): {_fmt(stopped)}"
            summary += "; network restored" if isolation.network_cut and not errors else ""
            summary += f"; {cg} removed" if removed else f"; WARNING: {cg} could not be removed"
            if errors:
                summary += "; errors: " + "; ".join(errors)
            return summary

    def _move_out(self, pid: int, original: dict[int, str], hroot: Path) -> str | None:
        """Move pid back; None when moved, "" when it is gone, else an error text."""
        rel = original.get(pid)
        if rel is None:  # born in the incident cgroup: follow its parent's origin
            p = _stat(pid)
            rel = original.get(p.ppid) if p else None
        dest = hroot / rel.lstrip("/") if rel else hroot
        if not (dest / "cgroup.procs").exists():
            dest = hroot
        try:
            _write(dest / "cgroup.procs", str(pid))
            return None
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return ""
            if dest != hroot:
                try:
                    _write(hroot / "cgroup.procs", str(pid))
                    return None
                except OSError:
                    pass
            return f"moving {pid} to {dest}: {exc.strerror}"

    def kill(self, isolation: Isolation) -> str:
        """SIGKILL every isolated process (frozen ones die too), then remove the cgroup."""
        with self._lock:
            inc = self._incidents.pop(isolation.incident_id, None)
            if isolation.method == "sigstop":
                ticks = inc.ticks if inc else {}
                killed = [p for p in isolation.pids if _signal(p, signal.SIGKILL, ticks.get(p))]
                return f"killed {len(killed)} stopped process(es): {_fmt(killed)}"
            self._sweep()
            cg = Path(isolation.cgroup)
            killed = _procs(cg)
            how = "cgroup.kill"
            if cg.is_dir():
                if (cg / "cgroup.kill").exists():
                    try:
                        _write(cg / "cgroup.kill", "1")
                    except OSError as exc:
                        how = f"SIGKILL each (cgroup.kill failed: {exc.strerror})"
                else:
                    how = "SIGKILL each (no cgroup.kill, Linux < 5.14)"
                deadline = time.monotonic() + KILL_WAIT_S
                while True:
                    left = _procs(cg)
                    if not left:
                        break
                    if how != "cgroup.kill":
                        for pid in left:
                            _signal(pid, signal.SIGKILL)
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(POLL_S)
            errors = self._uncut(inc)
            left = _procs(cg)
            removed = self._rmdir(cg)
            summary = (f"killed {len(killed)} process(es) via {how}: {_fmt(killed)}" if killed
                       else "no process was left in the incident cgroup")
            if left:
                summary += f"; WARNING: still alive: {_fmt(left)}"
            summary += f"; {cg} removed" if removed else f"; WARNING: {cg} could not be removed"
            if errors:
                summary += "; errors: " + "; ".join(errors)
            return summary

    def _rmdir(self, cg: Path) -> bool:
        deadline = time.monotonic() + RMDIR_WAIT_S
        try:
            while True:
                try:
                    cg.rmdir()
                    return True
                except FileNotFoundError:
                    return True
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                        log.warning("quarantine: cannot remove %s: %s", cg, exc.strerror)
                        return False
                    time.sleep(POLL_S)
        finally:
            if not cg.exists():
                with _REGISTRY_LOCK:
                    _ACTIVE_DIRS.discard(str(cg))

    # -- fallback ---------------------------------------------------------------------------
    def _sigstop(self, incident_id: str, pids: list[int], why: str) -> Isolation:
        stopped: list[int] = []
        ticks: dict[int, int | None] = {}
        for _ in range(MOVE_ROUNDS):
            table = _scan()
            todo = [p for p in _family(set(pids) | set(stopped), table, _protected(table))
                    if p not in ticks and _alive(table.get(p))]
            if not todo:
                break
            for pid in todo:  # parents first: a stopped parent forks no more
                t = start_ticks(pid)
                ticks[pid] = t
                if _signal(pid, signal.SIGSTOP, t):
                    stopped.append(pid)
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            if all(not _alive(p) or p.state in ("T", "t") for p in map(_stat, stopped)):
                break
            time.sleep(POLL_S)
        running = [p for p in stopped if (s := _stat(p)) is not None and _alive(s) and s.state not in ("T", "t")]
        isolation = Isolation(incident_id=incident_id, method="sigstop", cgroup=None, frozen=False,
                              network_cut=False, pids=stopped, original_cgroups={}, detail="")
        parts = [f"{len(stopped)} process(es) stopped with SIGSTOP: {_fmt(stopped)}", why,
                 "WARNING: network NOT cut and SIGCONT from any process allowed to signal them resumes them"]
        if running:
            parts.append(f"WARNING: not yet stopped: {_fmt(running)}")
        isolation.detail = "; ".join(parts)
        self._tags += 1
        self._incidents[incident_id] = _Incident(isolation, self._tags, ticks=ticks)
        log.warning("quarantine %s: %s", incident_id, isolation.detail)
        return isolation

    # -- maintenance ------------------------------------------------------------------------
    def _sweep(self) -> None:
        """Once per object: clear what a crashed predecessor left (see the module docstring)."""
        if self._swept or self.root is None:
            return
        self._swept = True
        notes: list[str] = []
        held: set[int] | None = None
        parent_dir = self.parent_dir
        if parent_dir.is_dir():
            for cg in sorted(parent_dir.glob("incident-*")):
                with _REGISTRY_LOCK:
                    if str(cg) in _ACTIVE_DIRS:
                        continue
                if _events(cg).get("populated", "").strip() == "0":
                    try:
                        cg.rmdir()
                        notes.append(f"removed empty leftover {cg.name}")
                        continue
                    except OSError:
                        pass
                held = held_prog_ids() if held is None else held
                notes += _detach_stale(cg, held)
                notes.append(f"kept leftover {cg.name} (holds processes; release or kill it)")
        if shutil.which("bpftool"):
            held = held_prog_ids() if held is None else held
            notes += _detach_stale(_hierarchy_root(self.root), held)
        for note in notes:
            log.warning("quarantine sweep: %s", note)

    def close(self) -> None:
        """Detach every program this object attached (daemon shutdown). Frozen incident cgroups
        stay frozen: their processes wait for a release or a kill."""
        with self._lock:
            for inc in self._incidents.values():
                for err in self._detach_incident(inc):
                    log.warning("quarantine close: %s", err)
                inc.cookies.clear()
            for err in self._detach_root():
                log.warning("quarantine close: %s", err)
            if self._bpf is not None:
                with _REGISTRY_LOCK:
                    for fn in (self._fn_all, self._fn_sock):
                        _LIVE_PROG_IDS.discard(prog_id_of(f"/proc/self/fdinfo/{fn.fd}"))
                        os.close(fn.fd)
                self._bpf.close()
                self._bpf = self._fn_all = self._fn_sock = None

    def __enter__(self) -> "Quarantine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- forensics ----------------------------------------------------------------------------------

def _fd_kind(target: str) -> str:
    if target.startswith("socket:["):
        return "socket"
    if target.startswith("pipe:["):
        return "pipe"
    if target.startswith("anon_inode:"):
        return "anon_inode"
    if target.startswith("/"):
        return "file"
    return "other"


def _process_facts(pid: int, sockets: dict[int, dict]) -> dict | None:
    """One process's facts, or None if it is gone. Reads /proc metadata only, no file contents."""
    import psutil

    try:
        p = psutil.Process(pid)
        with p.oneshot():
            facts = {
                "pid": pid,
                "ppid": p.ppid(),
                "name": p.name(),
                "exe": _quiet(p.exe),
                "cmdline": _quiet(p.cmdline) or [],
                "uid": p.uids().real,
                "start_time": p.create_time(),
                "start_ticks": start_ticks(pid),
                "cwd": _quiet(p.cwd),
            }
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None
    facts["user"] = user_name(facts["uid"])
    facts["state"] = _status_state(pid)
    facts["cgroup"] = cgroup_path(pid)
    open_files, socks = [], []
    for fd, target in fd_links(pid):
        kind = _fd_kind(target)
        entry: dict = {"fd": fd, "target": target, "kind": kind}
        if kind in ("socket", "pipe"):
            entry["inode"] = int(target[target.index("[") + 1:-1])
        open_files.append(entry)
        if kind == "socket":
            info = dict(sockets.get(entry["inode"], {"family": None}))
            info.pop("cookie", None)
            socks.append({"fd": fd, "inode": entry["inode"], **info})
    facts["open_files"] = open_files
    facts["sockets"] = socks
    if facts["state"] is None:  # exited while we read
        return None
    return facts


def _quiet(getter):
    import psutil

    try:
        return getter()
    except (psutil.Error, OSError):
        return None


def _status_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def collect_facts(pids: list[int]) -> dict:
    """Forensic snapshot of the processes: identity, state, open files (fd targets, never their
    contents) and open sockets resolved with sock_diag. Never raises for a process that is gone:
    it is listed under "gone"."""
    sockets, diag_error = _diag_dump(unix=True)
    processes, gone = [], []
    for pid in pids:
        try:
            facts = _process_facts(pid, sockets)
        except Exception as exc:  # noqa: BLE001 - a snapshot must not fail the incident
            log.debug("collect_facts %d: %s", pid, exc)
            facts = None
        if facts is None:
            gone.append(pid)
        else:
            processes.append(facts)
    result = {"collected_at": time.time(), "processes": processes, "gone": gone}
    if diag_error:
        result["socket_diag_error"] = diag_error
    return result
