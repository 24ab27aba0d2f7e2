"""The bpf(2) and perf_event_open(2) calls the daemon makes, through ctypes: create maps, read
and write them, load programs, attach them to tracepoints and cgroups.

Why not bcc for this: importing bcc maps its LLVM and clang libraries into the process (about
60 MB resident before compiling anything). The daemon loads programs bcc compiled ahead of time
(sensor/bpf_object.py) and needs none of that. Layouts follow include/uapi/linux/bpf.h and
perf_event.h; only the leading fields each command needs are passed (the kernel zero-extends)."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
from pathlib import Path

from .probes import TRACEFS

# (bpf, perf_event_open) syscall numbers.
SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241), "riscv64": (280, 241)}

MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY, PROG_LOAD = range(6)
PROG_ATTACH, PROG_DETACH, PROG_GET_FD_BY_ID = 8, 9, 13
PROG_TYPE_TRACEPOINT, PROG_TYPE_CGROUP_SKB, PROG_TYPE_CGROUP_SOCK_ADDR = 5, 8, 18
OBJ_NAME_LEN = 16
PERF_TYPE_TRACEPOINT = 2
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
PERF_FLAG_FD_CLOEXEC = 8
VERIFIER_LOG_BYTES = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    pass


class _MapCreate(ctypes.Structure):
    _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32), ("inner_map_fd", ctypes.c_uint32),
                ("numa_node", ctypes.c_uint32), ("map_name", ctypes.c_char * OBJ_NAME_LEN)]


class _MapElem(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("key", ctypes.c_uint64), ("value", ctypes.c_uint64),
                ("flags", ctypes.c_uint64)]


class _ProgLoad(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32), ("insns", ctypes.c_uint64),
                ("license", ctypes.c_uint64), ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
                ("prog_name", ctypes.c_char * OBJ_NAME_LEN), ("prog_ifindex", ctypes.c_uint32),
                ("expected_attach_type", ctypes.c_uint32)]


class _ProgAttach(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_bpf_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32)]


class _GetFdById(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]


class _PerfEventAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32), ("config", ctypes.c_uint64),
                ("sample_period", ctypes.c_uint64), ("sample_type", ctypes.c_uint64),
                ("read_format", ctypes.c_uint64), ("flags", ctypes.c_uint64), ("wakeup_events", ctypes.c_uint32),
                ("bp_type", ctypes.c_uint32), ("config1", ctypes.c_uint64)]


def _numbers() -> tuple[int, int]:
    machine = platform.machine()
    if machine not in SYSCALLS:
        raise BpfError(errno.ENOSYS, f"no bpf(2) syscall number known for {machine} (known: {', '.join(SYSCALLS)})")
    return SYSCALLS[machine]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    ret = _libc.syscall(ctypes.c_long(_numbers()[0]), ctypes.c_long(cmd), ctypes.byref(attr),
                        ctypes.c_long(ctypes.sizeof(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, os.strerror(err))
    return ret


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, flags: int, name: str) -> int:
    attr = _MapCreate(map_type=map_type, key_size=key_size, value_size=value_size, max_entries=max_entries,
                      map_flags=flags, map_name=name.encode()[:OBJ_NAME_LEN - 1])
    try:
        return _bpf(MAP_CREATE, attr)
    except BpfError as exc:
        raise BpfError(exc.errno, f"creating map {name} (type {map_type}): {exc.strerror}") from None


def _elem(cmd: int, fd: int, key, value=None) -> bool:
    """One element command (flags 0: an update creates or replaces); False when the kernel
    answers ENOENT (no such key / no next key)."""
    attr = _MapElem(map_fd=fd, key=0 if key is None else ctypes.addressof(key),
                    value=0 if value is None else ctypes.addressof(value))
    try:
        _bpf(cmd, attr)
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def map_lookup(fd: int, key, value) -> bool:
    return _elem(MAP_LOOKUP_ELEM, fd, key, value)


def map_update(fd: int, key, value) -> None:
    """Raises BpfError (E2BIG) when a hash map is full."""
    _elem(MAP_UPDATE_ELEM, fd, key, value)


def map_delete(fd: int, key) -> bool:
    return _elem(MAP_DELETE_ELEM, fd, key)


def map_next_key(fd: int, key, next_key) -> bool:
    """The key after `key` (the first with key None) into next_key; False past the last."""
    return _elem(MAP_GET_NEXT_KEY, fd, key, next_key)


def prog_load(prog_type: int, insns: bytes, license: str, name: str, expected_attach_type: int = 0) -> int:
    """Load one program. A refusal is retried with the verifier's log, whose end goes into the
    error: it says which instruction the verifier rejected and why."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())

    def attempt(log) -> int:
        attr = _ProgLoad(prog_type=prog_type, insn_cnt=len(insns) // 8, insns=ctypes.addressof(code),
                         license=ctypes.addressof(lic), prog_name=name.encode()[:OBJ_NAME_LEN - 1],
                         expected_attach_type=expected_attach_type)
        if log is not None:
            attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
        return _bpf(PROG_LOAD, attr)

    try:
        return attempt(None)
    except BpfError as exc:
        log = ctypes.create_string_buffer(VERIFIER_LOG_BYTES)
        try:
            return attempt(log)  # loads after all (a transient failure): keep it
        except BpfError:
            pass
        tail = "\n".join(log.value.decode(errors="replace").splitlines()[-12:])
        raise BpfError(exc.errno, f"the kernel refused program {name}: {exc.strerror}\n{tail}") from None


def prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int) -> None:
    _bpf(PROG_ATTACH, _ProgAttach(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type,
                                  attach_flags=flags))


def prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    _bpf(PROG_DETACH, _ProgAttach(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type))


def prog_fd_by_id(prog_id: int) -> int:
    return _bpf(PROG_GET_FD_BY_ID, _GetFdById(id=prog_id))


def attach_tracepoint(prog_fd: int, category: str, event: str) -> int:
    """Run prog_fd at every hit of the tracepoint, on every CPU: the perf event fd that holds
    the attachment (closing it detaches)."""
    tp_id = int((Path(TRACEFS) / "events" / category / event / "id").read_text())
    attr = _PerfEventAttr(type=PERF_TYPE_TRACEPOINT, size=ctypes.sizeof(_PerfEventAttr), config=tp_id,
                          sample_period=1, wakeup_events=1)
    fd = _libc.syscall(ctypes.c_long(_numbers()[1]), ctypes.byref(attr), ctypes.c_long(-1), ctypes.c_long(0),
                       ctypes.c_long(-1), ctypes.c_long(PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"perf_event_open for tracepoint {category}:{event}: {os.strerror(err)}")
    try:
        fcntl.ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
        fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
    except OSError as exc:
        os.close(fd)
        raise BpfError(exc.errno, f"attaching a program to tracepoint {category}:{event}: {exc.strerror}") from None
    return fd
