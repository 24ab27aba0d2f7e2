"""Ring-buffer bytes -> typed events. Pure: works the same on live and recorded bytes."""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
from functools import lru_cache
from typing import Callable, NamedTuple

from . import abi
from .compiled import _decode

HEADER_SIZE = ctypes.sizeof(abi.EventHeader)
AT_FDCWD = -100
# Open flags that make an open a write (fcntl.h values, the same on every Linux architecture
# the sensor supports).
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class DecodeError(ValueError):
    pass


class Header(NamedTuple):  # sensor/_decode.c builds it for opens: fields in this order
    ktime_ns: int
    cgroup_id: int
    pid: int
    tid: int
    uid: int
    gid: int
    slot: int | None
    comm: str
    kernel_action: abi.KernelAction = abi.KernelAction.NONE


class ExecEvent(NamedTuple):
    hdr: Header
    old_tid: int
    flags: abi.ExecFlags
    dirfd: int
    filename: str
    argv: tuple[str, ...]
    matched_slot: int | None
    kind = "exec"

    @property
    def agent_start(self) -> bool:
        return bool(self.flags & abi.ExecFlags.AGENT_START)


class ForkEvent(NamedTuple):
    hdr: Header
    child_pid: int
    parent_pid: int
    kind = "fork"


class ExitEvent(NamedTuple):
    hdr: Header
    kind = "exit"


class OpenEvent(NamedTuple):  # built by sensor/_decode.c: fields in this order
    hdr: Header
    dirfd: int
    flags: int
    mode: int
    syscall: abi.OpenSyscall
    path: str
    truncated: bool
    names_gen: int = 0        # the kernel's name-change count at entry (repeats.py)
    read_at_exit: bool = False
    result: int | None = None  # the new fd or -errno; None: sent before the open returned
    kind = "open"

    @property
    def is_write(self) -> bool:
        return bool(self.flags & WRITE_FLAGS)


def open_result(result: int) -> str:
    """An open's result for people: `fd 3`, or the error's name (`ENOENT`)."""
    return f"fd {result}" if result >= 0 else errno.errorcode.get(-result, f"error {-result}")


class EventLoss(NamedTuple):
    """Not from the ring buffer but about it: events of an agent run it had no room for."""
    hdr: Header        # pid: the agent run's root; ktime_ns: when user space noticed
    lost: int
    kind = "event_loss"


class OpenedEvent(NamedTuple):
    """The fd an open returned, when its OpenEvent was sent before (the thread's last one with
    result None). Every other open's event carries its result."""
    hdr: Header
    fd: int
    kind = "opened"


class CwdEvent(NamedTuple):
    """A successful chdir (path, relative to the old cwd) or fchdir (fd, path empty)."""
    hdr: Header
    fd: int
    path: str
    kind = "cwd"


class ConnectEvent(NamedTuple):
    hdr: Header
    fd: int
    family: int
    address: str          # IP text, unix path, "@name" for abstract unix sockets, "" if unknown
    port: int | None
    call: abi.NetCall = abi.NetCall.CONNECT
    refused: bool = False  # the kernel refused the call (EPERM): nothing was sent
    kind = "connect"

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """None for other families, and for an inet sockaddr too short to hold an address (the
        kernel rejects that connect, but the attempt was traced at syscall entry)."""
        if self.family not in (socket.AF_INET, socket.AF_INET6) or not self.address:
            return None
        return ipaddress.ip_address(self.address)


class FileChangeEvent(NamedTuple):
    hdr: Header
    op: abi.FileOp
    dirfd: int
    dirfd2: int
    fd: int          # fchmod/fchown/ftruncate: the file's descriptor (path is then empty)
    mode: int
    uid: int
    gid: int
    path: str        # the file changed; for a symlink, its target as written
    path2: str       # rename/link: the new name; symlink: the link's name
    kind = "file_change"


class InterfaceEvent(NamedTuple):
    hdr: Header
    interface: abi.Interface
    allowed: bool      # the profile lists it (the kernel knew)
    target_pid: int    # ptrace, process_vm_*, pidfd_getfd, a signal: the other process; -1 otherwise
    signal: int = 0    # SENSOR by kill/tkill/tgkill: the signal (0 for pidfd_open)
    kind = "interface"

    @property
    def name(self) -> str:
        return self.interface.name.lower()


class DnsEvent(NamedTuple):
    """A DNS message on a socket the agent pointed at port 53; parsed by sensor/dns_names.py."""
    hdr: Header
    fd: int
    direction: abi.DnsDirection
    pending: int       # an answer for a name network.connect allows: addresses the kernel left to user space
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address  # the resolver
    peer_port: int
    payload: bytes     # the message as sent or received, cut at abi.DNS_MAX bytes
    total: int         # bytes the syscall moved
    kind = "dns"

    @property
    def resolver(self) -> str:
        return endpoint(self.peer, self.peer_port)


Event = ExecEvent | ForkEvent | ExitEvent | OpenEvent | ConnectEvent | FileChangeEvent | InterfaceEvent | DnsEvent | CwdEvent | OpenedEvent


def _text(raw: bytes) -> str:
    """Kernel strings are bytes; file names need not be UTF-8. surrogateescape keeps every byte
    (round-trips to os.fsencode) instead of losing or rejecting it."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def wire_text(text: str) -> str:
    """A name as protobuf can carry it (the API, the spool, JSON): UTF-8, each byte that was not
    written \\xNN. A name is the agent's to choose: one protobuf refused would cost its alert."""
    if text.isascii():
        return text  # nearly every name: one test
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no undecodable byte became (not from a name read here)
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def wire_texts(texts) -> list[str]:
    return [wire_text(t) for t in texts]


_INT_CODES = {ctypes.c_uint64: "Q", ctypes.c_int64: "q", ctypes.c_uint32: "I", ctypes.c_int32: "i",
              ctypes.c_uint16: "H", ctypes.c_int16: "h", ctypes.c_uint8: "B", ctypes.c_int8: "b"}


def layout(struct_type, first: str, stop: str | None = None) -> struct.Struct:
    """A struct.Struct that reads a ctypes mirror's fields from `first` up to (not including)
    `stop`, at their offsets in the event (char arrays as bytes). One C call per event: a ctypes
    object per event, and an attribute read per field, cost more than judging the event."""
    names = [name for name, _ in struct_type._fields_]
    chosen = struct_type._fields_[names.index(first) : names.index(stop) if stop else None]
    start = getattr(struct_type, first).offset
    fmt, at = ["=", "x" * start], start
    for name, ctype in chosen:
        offset = getattr(struct_type, name).offset
        fmt.append("x" * (offset - at))
        if issubclass(ctype, ctypes.Array):
            fmt.append(f"{ctypes.sizeof(ctype)}s")
        else:
            fmt.append(_INT_CODES[ctype])  # KeyError: a field type this mirror does not read yet
        at = offset + ctypes.sizeof(ctype)
    return struct.Struct("".join(fmt))


_HEADER = layout(abi.EventHeader, "ktime_ns")
_SLOT = layout(abi.EventHeader, "slot", "kernel_action")


def from_agent(data: bytes) -> bool:
    """A tracked process's event (it has a slot), not another process's exec, which is sent
    only so user space can match agents by selectors. Read without decoding the event."""
    return len(data) >= HEADER_SIZE and _SLOT.unpack_from(data)[0] != abi.NO_SLOT


@lru_cache(maxsize=1024)  # a few dozen commands make most events
def _comm(raw: bytes) -> str:
    return _text(raw)


def _header(data: bytes) -> Header:
    ktime_ns, cgroup_id, _, pid, tid, uid, gid, slot, action, _, comm = _HEADER.unpack_from(data)
    return Header(ktime_ns, cgroup_id, pid, tid, uid, gid, None if slot == abi.NO_SLOT else slot, _comm(comm),
                  _enum(abi.KernelAction, action, "kernel_action"))


def _enum(kind, value: int, what: str):
    member = kind._value2member_map_.get(value)  # every event pays this: skip the enum's slow call
    if member is not None:
        return member
    try:
        return kind(value)
    except ValueError as exc:
        raise DecodeError(f"unknown {what} {value}") from exc


def _need(data: bytes, size: int, name: str) -> None:
    if len(data) < size:
        raise DecodeError(f"{name}: {len(data)} bytes, need at least {size}")


def _field_bytes(data: bytes, field, length: int) -> bytes:
    """An array field's bytes, as many as the kernel says it filled (never past the field)."""
    return data[field.offset : field.offset + min(length, field.size)]


# Each event's fields after its header; variable-length events (the kernel sends only the bytes
# of the path or message it read) up to that last array, which is sliced from the event.
_EXEC = layout(abi.ExecEvent, "old_tid", "filename")
_FORK = layout(abi.ForkEvent, "child_pid")
_OPENED = layout(abi.OpenedEvent, "fd", "reserved")
_CWD = layout(abi.CwdEvent, "fd", "path")
_CONNECT = layout(abi.ConnectEvent, "fd")
_CHANGE = layout(abi.FileChangeEvent, "op", "path")
_INTERFACE = layout(abi.InterfaceEvent, "interface")
_DNS = layout(abi.DnsEvent, "fd", "data")


def _decode_exec(data: bytes) -> ExecEvent:
    _need(data, ctypes.sizeof(abi.ExecEvent), "ExecEvent")
    old_tid, flags, dirfd, argc, matched_slot, filename_len, argv_len = _EXEC.unpack_from(data)
    argv_bytes = _field_bytes(data, abi.ExecEvent.argv, argv_len)
    argv = tuple(a.decode("utf-8", "surrogateescape") for a in argv_bytes.split(b"\0")[:argc])
    return ExecEvent(
        hdr=_header(data), old_tid=old_tid, flags=abi.ExecFlags(flags), dirfd=dirfd,
        filename=_text(_field_bytes(data, abi.ExecEvent.filename, filename_len)), argv=argv,
        matched_slot=None if matched_slot == abi.NO_SLOT else matched_slot,
    )


def _decode_fork(data: bytes) -> ForkEvent:
    _need(data, ctypes.sizeof(abi.ForkEvent), "ForkEvent")
    child_pid, parent_pid = _FORK.unpack_from(data)
    return ForkEvent(_header(data), child_pid, parent_pid)


def _decode_exit(data: bytes) -> ExitEvent:
    _need(data, ctypes.sizeof(abi.ExitEvent), "ExitEvent")
    return ExitEvent(_header(data))


def _decode_opened(data: bytes) -> OpenedEvent:
    _need(data, ctypes.sizeof(abi.OpenedEvent), "OpenedEvent")
    (fd,) = _OPENED.unpack_from(data)
    return OpenedEvent(_header(data), fd)


def _decode_cwd(data: bytes) -> CwdEvent:
    _need(data, abi.CwdEvent.path.offset, "cwd_event")
    fd, path_len, _ = _CWD.unpack_from(data)
    return CwdEvent(_header(data), fd, _text(_field_bytes(data, abi.CwdEvent.path, path_len)))


def endpoint(address, port) -> str:
    """ADDRESS:PORT as written in profiles and alerts: an IPv6 address in brackets."""
    return f"[{address}]:{port}" if ":" in str(address) else f"{address}:{port}"


def decode_sockaddr(addr: bytes, addrlen: int) -> tuple[int, str, int | None]:
    """(family, address text, port) from a raw sockaddr as the caller passed it."""
    addr = addr[: min(addrlen, len(addr))]
    if len(addr) < 2:
        return 0, "", None
    family = struct.unpack_from("=H", addr)[0]
    if family == socket.AF_INET and len(addr) >= 8:
        port = struct.unpack_from("!H", addr, 2)[0]
        return family, str(ipaddress.IPv4Address(addr[4:8])), port
    if family == socket.AF_INET6 and len(addr) >= 24:
        port = struct.unpack_from("!H", addr, 2)[0]
        return family, str(ipaddress.IPv6Address(addr[8:24])), port
    if family == socket.AF_UNIX:
        path = addr[2:]
        if path[:1] == b"\0":  # abstract namespace: the name is every byte after the NUL
            return family, "@" + path[1:].decode("utf-8", "surrogateescape"), None
        return family, _text(path), None
    return family, "", None


def _decode_connect(data: bytes) -> ConnectEvent:
    _need(data, ctypes.sizeof(abi.ConnectEvent), "ConnectEvent")
    fd, addrlen, call, refused, addr = _CONNECT.unpack_from(data)
    family, address, port = decode_sockaddr(addr, addrlen)
    return ConnectEvent(_header(data), fd, family, address, port, _enum(abi.NetCall, call, "network call"),
                        bool(refused))


def _decode_change(data: bytes) -> FileChangeEvent:
    _need(data, ctypes.sizeof(abi.FileChangeEvent), "FileChangeEvent")
    op, dirfd, dirfd2, fd, mode, uid, gid, path_len, path2_len = _CHANGE.unpack_from(data)
    return FileChangeEvent(
        _header(data), _enum(abi.FileOp, op, "file op"), dirfd, dirfd2, fd, mode, uid, gid,
        _text(_field_bytes(data, abi.FileChangeEvent.path, path_len)),
        _text(_field_bytes(data, abi.FileChangeEvent.path2, path2_len)),
    )


def _decode_interface(data: bytes) -> InterfaceEvent:
    _need(data, ctypes.sizeof(abi.InterfaceEvent), "InterfaceEvent")
    interface, allowed, target_pid, signal = _INTERFACE.unpack_from(data)
    return InterfaceEvent(_header(data), _enum(abi.Interface, interface, "interface"), bool(allowed), target_pid, signal)


def _decode_dns(data: bytes) -> DnsEvent:
    _need(data, abi.DnsEvent.data.offset, "dns_event")  # like an open: only the bytes captured are sent
    fd, direction, pending, _, peer, peer_port, length, total = _DNS.unpack_from(data)
    peer = ipaddress.IPv6Address(peer)
    return DnsEvent(_header(data), fd, _enum(abi.DnsDirection, direction, "DNS direction"), pending,
                    peer.ipv4_mapped or peer, peer_port, _field_bytes(data, abi.DnsEvent.data, length), total)


# Opens, most of all events, are decoded in C from bpf/events.h (sensor/_decode.c), into the
# same named tuples; the C dispatch by type calls these for the others.
_decode.set_types(Header, OpenEvent, {m.value: m for m in abi.KernelAction}, {m.value: m for m in abi.OpenSyscall},
                  DecodeError, {
                      abi.EventType.EXEC.value: _decode_exec,
                      abi.EventType.FORK.value: _decode_fork,
                      abi.EventType.EXIT.value: _decode_exit,
                      abi.EventType.CWD.value: _decode_cwd,
                      abi.EventType.OPENED.value: _decode_opened,
                      abi.EventType.CONNECT.value: _decode_connect,
                      abi.EventType.FILE_CHANGE.value: _decode_change,
                      abi.EventType.INTERFACE.value: _decode_interface,
                      abi.EventType.DNS.value: _decode_dns,
                  })

decode: Callable[[bytes], Event] = _decode.decode
"""The event a ring-buffer record holds; DecodeError if it cannot be one (too short, an unknown
type, a field out of range)."""
