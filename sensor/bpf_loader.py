"""Loads the sensor's BPF programs (bpf/*.c, compiled by bcc ahead of time: sensor/bpf_object.py),
attaches the tracepoints this kernel has, and gives user space its handles on the maps: tracked
processes, exec-time matches, counters and the ring buffer.

Only tracepoints are used (see README, "Kernel requirements"). A probe the kernel lacks is
skipped and reported; a missing required probe stops the start with a message naming it."""

from __future__ import annotations

import ctypes
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import abi, bpf_syscall
from .bpf_maps import Maps
from .bpf_object import DEFAULT_CACHE, ObjectError, load_program, obtain
from .probes import Capability, ensure_tracefs, tracepoint_exists, tracepoint_has_field
from .ringbuf import IN_PLACE, LibbpfRingBuffer, RingBufferMap

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
log = logging.getLogger("agent-sensor")
# The maps and one program file per event family. bcc rewrites map method calls and generates
# tracepoint argument structs only in its main source text, so the files are joined into one text
# rather than #included; events.h, plain C, is included normally.
PROGRAM_FILES = ("maps.h", "process.c", "files.c", "changes.c", "dns.c", "network.c", "egress.c", "listeners.c",
                 "interfaces.c")
# cgroup sock_addr hooks (egress.c, listeners.c): (function, BPF attach type, name bpftool shows).
EGRESS_HOOKS = (
    ("egress_connect4", 10, "cgroup_inet4_connect"), ("egress_connect6", 11, "cgroup_inet6_connect"),
    ("egress_sendmsg4", 14, "cgroup_udp4_sendmsg"), ("egress_sendmsg6", 15, "cgroup_udp6_sendmsg"),
    ("listen_bind4", 8, "cgroup_inet4_bind"), ("listen_bind6", 9, "cgroup_inet6_bind"),
)
BPF_F_ALLOW_MULTI = 2  # share the root cgroup with other users' programs (systemd, ...)
PRELUDE = """#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include <linux/fcntl.h>
#include <linux/socket.h>
"""


@dataclass(frozen=True)
class TracepointProbe:
    category: str
    event: str
    required: bool

    @property
    def fn_name(self) -> str:
        return f"on_{self.event}"

    @property
    def name(self) -> str:
        return f"{self.category}:{self.event}"


PROBES = (
    TracepointProbe("sched", "sched_process_exec", True),
    TracepointProbe("sched", "sched_process_fork", True),
    TracepointProbe("sched", "sched_process_exit", True),
    TracepointProbe("syscalls", "sys_enter_execve", True),
    TracepointProbe("syscalls", "sys_exit_execve", True),
    TracepointProbe("syscalls", "sys_enter_execveat", False),
    TracepointProbe("syscalls", "sys_exit_execveat", False),
    TracepointProbe("syscalls", "sys_enter_clone", True),
    TracepointProbe("syscalls", "sys_enter_clone3", False),
    TracepointProbe("syscalls", "sys_enter_fork", False),
    TracepointProbe("syscalls", "sys_enter_vfork", False),
    TracepointProbe("syscalls", "sys_enter_openat", True),
    TracepointProbe("syscalls", "sys_exit_openat", True),
    TracepointProbe("syscalls", "sys_enter_openat2", False),
    TracepointProbe("syscalls", "sys_exit_openat2", False),
    TracepointProbe("syscalls", "sys_enter_open", False),
    TracepointProbe("syscalls", "sys_exit_open", False),
    TracepointProbe("syscalls", "sys_enter_creat", False),
    TracepointProbe("syscalls", "sys_exit_creat", False),
    # The working directory, so relative names resolve as the process meant them (files.c).
    *(TracepointProbe("syscalls", f"sys_{half}_{name}", True) for name in ("chdir", "fchdir")
      for half in ("enter", "exit")),
    TracepointProbe("syscalls", "sys_enter_connect", True),
    TracepointProbe("syscalls", "sys_enter_bind", True),
    TracepointProbe("syscalls", "sys_enter_listen", True),
    # DNS on resolver sockets (dns.c): every kernel with syscall tracepoints has these.
    *(TracepointProbe("syscalls", f"sys_{half}_{name}", True) for name, halves in (
        ("sendto", ("enter",)), ("sendmsg", ("enter",)), ("sendmmsg", ("enter",)), ("write", ("enter",)),
        ("recvfrom", ("enter", "exit")), ("recvmsg", ("enter", "exit")), ("read", ("enter", "exit")),
        ("close", ("enter",))) for half in halves),
    *(TracepointProbe("syscalls", f"sys_enter_{name}", False) for name in (
        "rename", "renameat", "renameat2", "unlink", "unlinkat", "chmod", "fchmodat", "fchmodat2", "fchmod",
        "chown", "lchown", "fchownat", "fchown", "truncate", "ftruncate", "link", "linkat", "symlink",
        "symlinkat", "io_uring_setup", "io_uring_enter", "io_uring_register", "name_to_handle_at",
        "open_by_handle_at", "process_vm_readv", "process_vm_writev", "ptrace", "pidfd_getfd", "bpf", "pidfd_open")),
    # Signals aimed at the sensor (interfaces.c).
    *(TracepointProbe("syscalls", f"sys_enter_{name}", True) for name in ("kill", "tkill", "tgkill")),
)
# Optional probes are compiled only when present (bcc generates the argument struct from the
# tracepoint's format file, which a kernel without the tracepoint does not have).
OPTIONAL_DEFINES = {p: f"-DHAVE_{p.event}" for p in PROBES if not p.required}
# The maps user space reads or writes: (key, value) as sensor/abi.py mirrors them.
u32, u64 = ctypes.c_uint32, ctypes.c_uint64
MAP_TYPES = {
    "tracked": (u32, abi.TrackedProc), "exec_match": (abi.ExecKey, u32), "all_execs": (ctypes.c_int, u32),
    "slot_policy": (ctypes.c_int, abi.SlotPolicy),
    **{name: (abi.PathLpmKey, u32) for name in ("secret_paths", "broker_execs", "denied_execs", "protected_paths")},
    "allowed_dests": (abi.AddrLpmKey, abi.PortRanges), "allowed_binds": (abi.AddrLpmKey, abi.PortRanges),
    "doomed": (u32, u32), "exec_stash": (u32, abi.ExecEvent), "open_stash": (u32, abi.OpenEvent),
    "open_repeats": (abi.RepeatKey, abi.RepeatCount),
    "counters": (ctypes.c_int, u64), "events": (u32, u32), "lost_by_run": (u32, u64),
    "sensor_self_map": (ctypes.c_int, abi.SensorSelf), "sensor_tasks": (u32, u32), "sensor_attackers": (u32, u32),
    "dns_pending": (abi.DnsPendingKey, u32), "allowed_names": (abi.DnsNameKey, u32),
    "dns_tail": (ctypes.c_int, ctypes.c_int),
}


class LoadError(RuntimeError):
    pass


def _write_field(struct, field, data: bytes) -> None:
    """Raw bytes into an array field. Through the address: reading a c_char array field
    gives a bytes copy, and writing into that would corrupt memory."""
    if len(data) > field.size:
        raise ValueError(f"{len(data)} bytes do not fit a {field.size}-byte field")
    ctypes.memmove(ctypes.addressof(struct) + field.offset, data, len(data))


def _path_key(slot: int, prefix) -> abi.PathLpmKey:
    """The LPM key of a kernel_rules.SecretPrefix in a slot's path trie."""
    key = abi.PathLpmKey(prefixlen=prefix.prefix_bits, slot=slot)
    _write_field(key, abi.PathLpmKey.path, prefix.path)
    return key


def _repeat_key(key) -> abi.RepeatKey:
    """A repeats.RepeatKey as the kernel's struct repeat_key (the path NUL-padded)."""
    raw = abi.RepeatKey(tgid=key.tgid, slot=key.slot, flags=key.flags, names_gen=key.names_gen)
    _write_field(raw, abi.RepeatKey.path, key.path.encode(errors="surrogateescape"))
    return raw


def _destination_entry(slot: int, dest):
    """The allowed_dests/allowed_binds key and value of a DestinationPrefix."""
    key = abi.AddrLpmKey(prefixlen=dest.prefix_bits, slot=slot)
    _write_field(key, abi.AddrLpmKey.addr, dest.network.network_address.packed)
    ranges = abi.PortRanges(count=len(dest.ports))
    for i, (lo, hi) in enumerate(dest.ports):
        ranges.lo[i], ranges.hi[i] = lo, hi
    return key, ranges


class SensorBPF:
    def __init__(self, bpf_dir: Path = BPF_DIR, send_signal: bool = True, cache_dir: Path | None = DEFAULT_CACHE,
                 in_place: bool = IN_PLACE):
        self.bpf_dir = bpf_dir
        self.send_signal = send_signal  # without it the kernel observes and user space acts
        self.cache_dir = cache_dir  # None: compile at every start
        self.in_place = in_place  # read the ring buffer in place (sensor/ringbuf.py)
        self._obj = None
        self._maps: Maps | None = None
        self._maybe_tracked = None  # the maybe_tracked map's bytes (mmap), once loaded
        self._prog_fds: list[int] = []
        self._links: list[int] = []  # perf event fds holding the tracepoint attachments
        self._ring = None
        self.capabilities: list[Capability] = []

    # -- start-up -------------------------------------------------------------------------
    def load(self) -> list[Capability]:
        ensure_tracefs()
        present = [p for p in PROBES if tracepoint_exists(p.category, p.event)]
        missing = [p for p in PROBES if p not in present]
        required_missing = [p.name for p in missing if p.required]
        if required_missing:
            raise LoadError(f"this kernel lacks required tracepoints {', '.join(required_missing)} "
                            f"(CONFIG_FTRACE_SYSCALLS and sched tracepoints are needed)")
        # -w: the nearest packaged headers may not match the running kernel exactly, and their
        # warnings say nothing about the sensor's own code.
        cflags = [f"-I{self.bpf_dir}", "-w"]
        cflags += [flag for p, flag in OPTIONAL_DEFINES.items() if p in present]
        if self.send_signal:
            cflags.append("-DSENSOR_SEND_SIGNAL")
        if tracepoint_has_field("sched", "sched_process_exit", "group_dead"):
            cflags.append("-DHAVE_FIELD_sched_process_exit_group_dead")
        text = PRELUDE + "".join(f'#line 1 "{name}"\n' + (self.bpf_dir / name).read_text()
                                 for name in PROGRAM_FILES)
        try:
            self._obj, how = obtain("sensor", text, cflags, self.cache_dir)
        except ObjectError as exc:
            raise LoadError(f"compiling {', '.join(PROGRAM_FILES)} in {self.bpf_dir} failed: {exc}\n"
                            "Check kernel headers (make kernel-headers) and the compiler output above.") from None
        try:
            self._maps = Maps(self._obj.maps, MAP_TYPES)
            self._maybe_tracked = self._maps.shared("maybe_tracked")
            # Before the receive tracepoints: until it is in place, answers note no addresses.
            self._maps[b"dns_tail"][0] = ctypes.c_int(
                self._load_program("dns_answer_to_policy", bpf_syscall.PROG_TYPE_TRACEPOINT))
            for probe in present:
                fd = self._load_program(probe.fn_name, bpf_syscall.PROG_TYPE_TRACEPOINT)
                self._links.append(bpf_syscall.attach_tracepoint(fd, probe.category, probe.event))
        except (OSError, TypeError, ObjectError) as exc:
            self.close()
            raise LoadError(f"loading the sensor's programs failed: {exc}") from None
        self.capabilities = [Capability("bpf_programs", True, how)]
        self.capabilities += [Capability(f"tracepoint {p.name}", p in present,
                                         "attached" if p in present else "absent in this kernel: skipped")
                              for p in PROBES]
        self.capabilities.append(self._attach_egress_hooks())
        return self.capabilities

    def _load_program(self, name: str, prog_type: int, attach_type: int = 0) -> int:
        fd = load_program(self._obj, self._maps.fds, name, prog_type, attach_type)
        self._prog_fds.append(fd)
        return fd

    def _attach_egress_hooks(self) -> Capability:
        """Refuse forbidden connects and datagrams inside the syscall, for every process in the
        cgroup v2 hierarchy (on hybrid hosts too: every process has a v2 cgroup)."""
        from .cgroup_bpf import Program, detach_stale
        from .probes import cgroup_v2_root
        root = cgroup_v2_root()
        if root is None:
            return Capability("egress_refusal", False, "no cgroup v2: forbidden connects are killed at the "
                              "syscall, and a forbidden datagram may leave before the kill")
        for note in detach_stale(root, tuple(fn for fn, _, _ in EGRESS_HOOKS),
                                 {name: atype for _, atype, name in EGRESS_HOOKS}, set()):
            log.info("egress: %s", note)
        self._egress_root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        self._egress = []
        try:
            for fn_name, atype, _ in EGRESS_HOOKS:
                fn = Program(fn_name, self._load_program(fn_name, bpf_syscall.PROG_TYPE_CGROUP_SOCK_ADDR, atype))
                bpf_syscall.prog_attach(self._egress_root_fd, fn.fd, atype, BPF_F_ALLOW_MULTI)
                self._egress.append((fn, atype))
        except (OSError, ObjectError) as exc:
            self._detach_egress_hooks()
            return Capability("egress_refusal", False, f"cgroup sock_addr hooks did not attach at {root} ({exc}): "
                              "forbidden connects are killed at the syscall, datagrams may leave first")
        return Capability("egress_refusal", True, f"connect/sendmsg hooks on {root}: forbidden destinations get EPERM")

    def _detach_egress_hooks(self) -> None:
        from .cgroup_bpf import detach_each
        for error in detach_each(getattr(self, "_egress_root_fd", None), getattr(self, "_egress", []),
                                 "the cgroup v2 root"):
            log.warning("egress: %s", error)
        self._egress = []
        if getattr(self, "_egress_root_fd", None) is not None:
            os.close(self._egress_root_fd)
            self._egress_root_fd = None

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        # cgroup attachments outlive the process: detach them explicitly. Closing the rest
        # detaches and unloads. Each tracepoint detach waits out a grace period in the kernel
        # (about 60 ms here; 5 s for all in a row): closed from threads, they overlap.
        self._detach_egress_hooks()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(os.close, self._links))
        for fd in self._prog_fds:
            os.close(fd)
        self._links, self._prog_fds = [], []
        if self._maps is not None:
            self._maps.close()
            self._maps = None
            self._maybe_tracked = None

    @property
    def bpf(self) -> Maps:
        """The maps, by name (bytes)."""
        if self._maps is None:
            raise LoadError("BPF programs are not loaded")
        return self._maps

    # -- tracked processes -----------------------------------------------------------------
    def track(self, pid: int, slot: int, root_pid: int, flags: int = 0) -> None:
        table = self.bpf[b"tracked"]
        if pid < len(self._maybe_tracked):
            self._maybe_tracked[pid] = 1  # before the entry, and never cleared here (bpf/maps.h)
        table[ctypes.c_uint32(pid)] = abi.TrackedProc(slot=slot, root_pid=root_pid, flags=flags)

    def lost_by_run(self) -> dict[int, int]:
        """Events the ring buffer had no room for, by agent run (root pid): running totals."""
        return {k.value: v.value for k, v in self.bpf[b"lost_by_run"].items()}

    def forget_lost(self, root_pid: int) -> None:
        try:
            del self.bpf[b"lost_by_run"][ctypes.c_uint32(root_pid)]
        except KeyError:
            pass

    def aimed_at_sensor(self, pid: int) -> bool:
        """Did tracked process pid aim a signal or pidfd at the sensor (bpf/interfaces.c)? Asked
        once per signal taken: the note is removed."""
        try:
            del self.bpf[b"sensor_attackers"][ctypes.c_uint32(pid)]
            return True
        except KeyError:
            return False

    def untrack(self, pid: int) -> None:
        try:
            del self.bpf[b"tracked"][ctypes.c_uint32(pid)]
        except KeyError:
            pass

    # -- repeated opens (sensor/repeats.py) --------------------------------------------------
    def count_repeats(self, key, expires_ns: int) -> bool:
        """Until expires_ns the kernel counts the open `key` instead of sending it. False if the
        map is full (the open is then sent each time)."""
        try:
            self.bpf[b"open_repeats"][_repeat_key(key)] = abi.RepeatCount(expires_ns=expires_ns)
            return True
        except OSError:  # E2BIG: the map is full
            return False

    def repeat_count(self, key) -> tuple[int, int]:
        """(repeats counted so far, ktime of the last) for an entry of count_repeats."""
        value = self.bpf[b"open_repeats"].get(_repeat_key(key))
        return (value.count, value.last_ns) if value is not None else (0, 0)

    def forget_repeat(self, key) -> None:
        try:
            del self.bpf[b"open_repeats"][_repeat_key(key)]
        except KeyError:
            pass

    def tracked(self) -> dict[int, abi.TrackedProc]:
        return {k.value: abi.TrackedProc.from_buffer_copy(v) for k, v in self.bpf[b"tracked"].items()}

    def send_all_execs(self, on: bool) -> None:
        """Every process's exec to user space (profiles match by selectors), or only agents'."""
        self.bpf[b"all_execs"][ctypes.c_int(0)] = u32(int(on))

    def set_exec_matches(self, paths: dict[str, int]) -> None:
        """Exact executable paths that start an agent (path -> slot), matched by the kernel at exec."""
        table = self.bpf[b"exec_match"]
        table.clear()
        for path, slot in paths.items():
            raw = path.encode()
            if len(raw) >= abi.EXEC_KEY_LEN - 1:
                continue  # the kernel cannot tell it from a longer, cut name: user space matches it
            table[abi.ExecKey(raw)] = ctypes.c_uint32(slot)

    # -- in-kernel enforcement -------------------------------------------------------------
    def set_policy(self, slot: int, policy, previous=None) -> None:
        """Load one slot's compiled rules (sensor/kernel_rules.py) into the enforcement maps.
        With `previous` (a reload), rules only it had are removed once the new ones are in: the
        slot is never without rules in between."""
        if slot >= abi.MAX_SLOTS:
            raise LoadError(f"at most {abi.MAX_SLOTS} profiles can be enforced in the kernel")
        entries = self._policy_entries(slot, policy)
        for (name, _), (key, value) in entries.items():
            self.bpf[name][key] = value
        # Rules first, then the switch: the kernel never enforces a half-loaded slot.
        self.bpf[b"slot_policy"][ctypes.c_int(slot)] = abi.SlotPolicy(
            flags=policy.flags, secret_action=policy.secret_action, connect_action=policy.connect_action,
            exec_action=policy.exec_action, interface_action=policy.interface_action,
            interfaces_allowed=policy.interfaces_allowed, listen_action=policy.listen_action)
        if previous is not None:
            stale = [(name, key) for (name, ident), (key, _) in self._policy_entries(slot, previous).items()
                     if (name, ident) not in entries]
            if previous.names != policy.names:  # addresses learned for names may no longer be allowed
                stale += [(b"allowed_dests", key) for key in self.bpf[b"allowed_dests"].keys()
                          if key.slot == slot and (b"allowed_dests", bytes(key)) not in entries]
            for name, key in stale:
                try:
                    del self.bpf[name][key]
                except KeyError:
                    pass

    def _policy_entries(self, slot: int, policy) -> dict:
        """(map name, key bytes) -> (key, value) of every rule entry of a compiled policy."""
        out = {}

        def put(name: bytes, key, value) -> None:
            out[(name, bytes(key))] = (key, value)

        for name, entries in ((b"secret_paths", [(p, policy.brokers_of(p)) for p in policy.secrets]),
                              (b"denied_execs", [(p, 1) for p in policy.denied_execs]),
                              (b"broker_execs", [(p, 1 << i) for i, p in enumerate(policy.brokers)])):
            for prefix, value in entries:
                put(name, _path_key(slot, prefix), ctypes.c_uint32(value))
        for name, prefixes in ((b"allowed_dests", policy.destinations), (b"allowed_binds", policy.listen)):
            for dest in prefixes:
                put(name, *_destination_entry(slot, dest))
        for name_hash, how in policy.names:
            put(b"allowed_names", abi.DnsNameKey(slot=slot, hash=name_hash), ctypes.c_uint32(how))
        return out

    def allow_learned(self, slot: int, dest) -> None:
        """An address a DNS answer gave an allowed name (kernel_rules.learned_destination)."""
        key, ranges = _destination_entry(slot, dest)
        self.bpf[b"allowed_dests"][key] = ranges

    def dns_judged(self, root_pid: int, addresses) -> None:
        """User space has judged an answer for an allowed name (bpf/dns.c): a connect to one of
        its addresses (16-byte kernel form) is decided by the kernel's allow-list again."""
        pending = self.bpf[b"dns_pending"]
        for address in addresses:
            key = abi.DnsPendingKey(root_pid=root_pid)
            _write_field(key, abi.DnsPendingKey.addr, address)
            try:
                del pending[key]
            except KeyError:
                pass

    def forget_dns(self, root_pid: int) -> None:
        """The agent run ended: drop what its answers left pending, matches inside other data too."""
        self.dns_judged(root_pid, [bytes(k.addr) for k in self.bpf[b"dns_pending"].keys() if k.root_pid == root_pid])

    def protect_self(self, enforce: bool) -> None:
        """Tell the kernel which process is the sensor (and its threads now: call again as
        threads come and go), so tracked agents aiming at it are caught (interfaces.c)."""
        pid = os.getpid()
        self.bpf[b"sensor_self_map"][ctypes.c_int(0)] = abi.SensorSelf(tgid=pid, pgid=os.getpgid(0),
                                                                         enforce=int(enforce))
        tasks = self.bpf[b"sensor_tasks"]
        now = {int(t) for t in os.listdir("/proc/self/task")}
        for old in [k.value for k in tasks.keys()]:
            if old not in now:
                del tasks[ctypes.c_uint32(old)]
        for tid in now:
            tasks[ctypes.c_uint32(tid)] = ctypes.c_uint32(1)

    def protect_files(self, prefixes) -> None:
        """The sensor's files (kernel_rules.path_prefixes): writes and changes by any tracked
        agent are refused in the kernel (files.c, changes.c)."""
        trie = self.bpf[b"protected_paths"]
        trie.clear()
        for prefix in prefixes:
            trie[_path_key(abi.NO_SLOT, prefix)] = ctypes.c_uint32(1)

    def clear_policy(self, slot: int) -> None:
        """Stop enforcing for a slot and drop its rules (switch first, then the rules)."""
        self.bpf[b"slot_policy"][ctypes.c_int(slot)] = abi.SlotPolicy()
        for name in (b"secret_paths", b"denied_execs", b"broker_execs", b"allowed_dests", b"allowed_binds",
                     b"allowed_names"):
            table = self.bpf[name]
            for key in [k for k in table.keys() if k.slot == slot]:
                del table[key]

    def doom(self, root_pid: int, action: int) -> None:
        """From now on the kernel acts on every member of this agent run at its next traced
        syscall: no child forked during a user-space kill gets to do anything."""
        self.bpf[b"doomed"][ctypes.c_uint32(root_pid)] = ctypes.c_uint32(action)

    def forget_doomed(self, root_pid: int) -> None:
        """The agent run rooted here is over (or released): its pid may be reused."""
        try:
            del self.bpf[b"doomed"][ctypes.c_uint32(root_pid)]
        except KeyError:
            pass

    # -- counters and events ---------------------------------------------------------------
    def counters(self) -> tuple[dict[str, int], dict[str, int]]:
        """(events emitted by type, ring-buffer drops by type), summed over CPUs."""
        table = self.bpf[b"counters"]
        emitted, dropped = {}, {}
        for kind in abi.EventType:
            emitted[kind.name.lower()] = sum(table[ctypes.c_int(kind.value)])
            dropped[kind.name.lower()] = sum(table[ctypes.c_int(abi.COUNTER_DROP_BASE + kind.value)])
        return emitted, dropped

    def open_events(self, callback: Callable[[bytes], None]) -> None:
        """Every event the kernel sends, from poll() on, goes to callback (the ring buffer read
        in place where the CPU allows it, see sensor/ringbuf.py; else by libbpf's reader)."""
        table = self.bpf[b"events"]
        reader = RingBufferMap if self.in_place else LibbpfRingBuffer
        self._ring = reader(table.map_fd, table.max_entries, callback)

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms for an urgent event, then take everything there is (events sent
        without a wakeup are collected here): how many events were taken. With timeout_ms 0 no
        wait at all: a poll that cannot wait would only hand the GIL to another thread."""
        if timeout_ms > 0:
            self._ring.wait(timeout_ms)
        return self._ring.take()
