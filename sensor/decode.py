"""Ring-buffer bytes -> typed events. Pure: works the same on live and recorded bytes."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass, field
from functools import cache

from . import abi

HEADER_SIZE = ctypes.sizeof(abi.EventHeader)
_TYPE = struct.Struct("=I")  # the header's type field, read alone to pick the decoder
# Plain ints: `int & IntFlag` goes through the enum machinery, on every open.
_TRUNCATED, _READ_AT_EXIT = int(abi.OpenInfo.PATH_TRUNCATED), int(abi.OpenInfo.READ_AT_EXIT)
AT_FDCWD = -100
# Open flags that make an open a write (fcntl.h values, the same on every Linux architecture
# the sensor supports).
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class DecodeError(ValueError):
    pass


@dataclass(frozen=True)
class Header:
    ktime_ns: int
    cgroup_id: int
    pid: int
    tid: int
    uid: int
    gid: int
    slot: int | None
    comm: str
    kernel_action: abi.KernelAction = abi.KernelAction.NONE


@dataclass(frozen=True)
class ExecEvent:
    hdr: Header
    old_tid: int
    flags: abi.ExecFlags
    dirfd: int
    filename: str
    argv: tuple[str, ...]
    matched_slot: int | None
    kind: str = field(default="exec", init=False)

    @property
    def agent_start(self) -> bool:
        return bool(self.flags & abi.ExecFlags.AGENT_START)


@dataclass(frozen=True)
class ForkEvent:
    hdr: Header
    child_pid: int
    parent_pid: int
    kind: str = field(default="fork", init=False)


@dataclass(frozen=True)
class ExitEvent:
    hdr: Header
    kind: str = field(default="exit", init=False)


@dataclass(frozen=True)
class OpenEvent:
    hdr: Header
    dirfd: int
    flags: int
    mode: int
    syscall: abi.OpenSyscall
    path: str
    truncated: bool
    names_gen: int = 0        # the kernel's name-change count at entry (repeats.py)
    read_at_exit: bool = False
    kind: str = field(default="open", init=False)

    @property
    def is_write(self) -> bool:
        return bool(self.flags & WRITE_FLAGS)


@dataclass(frozen=True)
class EventLoss:
    """Not from the ring buffer but about it: events of an agent run it had no room for."""
    hdr: Header        # pid: the agent run's root; ktime_ns: when user space noticed
    lost: int
    kind: str = field(default="event_loss", init=False)


@dataclass(frozen=True)
class OpenedEvent:
    """The fd an open returned; the open is the thread's last OpenEvent."""
    hdr: Header
    fd: int
    kind: str = field(default="opened", init=False)


@dataclass(frozen=True)
class CwdEvent:
    """A successful chdir (path, relative to the old cwd) or fchdir (fd, path empty)."""
    hdr: Header
    fd: int
    path: str
    kind: str = field(default="cwd", init=False)


@dataclass(frozen=True)
class ConnectEvent:
    hdr: Header
    fd: int
    family: int
    address: str          # IP text, unix path, "@name" for abstract unix sockets, "" if unknown
    port: int | None
    call: abi.NetCall = abi.NetCall.CONNECT
    refused: bool = False  # the kernel refused the call (EPERM): nothing was sent
    kind: str = field(default="connect", init=False)

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """None for other families, and for an inet sockaddr too short to hold an address (the
        kernel rejects that connect, but the attempt was traced at syscall entry)."""
        if self.family not in (socket.AF_INET, socket.AF_INET6) or not self.address:
            return None
        return ipaddress.ip_address(self.address)


@dataclass(frozen=True)
class FileChangeEvent:
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
    kind: str = field(default="file_change", init=False)


@dataclass(frozen=True)
class InterfaceEvent:
    hdr: Header
    interface: abi.Interface
    allowed: bool      # the profile lists it (the kernel knew)
    target_pid: int    # ptrace, process_vm_*, pidfd_getfd, a signal: the other process; -1 otherwise
    signal: int = 0    # SENSOR by kill/tkill/tgkill: the signal (0 for pidfd_open)
    kind: str = field(default="interface", init=False)

    @property
    def name(self) -> str:
        return self.interface.name.lower()


@dataclass(frozen=True)
class DnsEvent:
    """A DNS message on a socket the agent pointed at port 53; parsed by sensor/dns_names.py."""
    hdr: Header
    fd: int
    direction: abi.DnsDirection
    pending: int       # an answer for a name network.connect allows: addresses the kernel left to user space
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address  # the resolver
    peer_port: int
    payload: bytes     # the message as sent or received, cut at abi.DNS_MAX bytes
    total: int         # bytes the syscall moved
    kind: str = field(default="dns", init=False)

    @property
    def resolver(self) -> str:
        return endpoint(self.peer, self.peer_port)


Event = ExecEvent | ForkEvent | ExitEvent | OpenEvent | ConnectEvent | FileChangeEvent | InterfaceEvent | DnsEvent | CwdEvent | OpenedEvent


def _text(raw: bytes) -> str:
    """Kernel strings are bytes; file names need not be UTF-8. surrogateescape keeps every byte
    (round-trips to os.fsencode) instead of losing or rejecting it."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _header(raw: abi.EventHeader) -> Header:
    return Header(
        ktime_ns=raw.ktime_ns, cgroup_id=raw.cgroup_id, pid=raw.pid, tid=raw.tid, uid=raw.uid,
        gid=raw.gid, slot=None if raw.slot == abi.NO_SLOT else raw.slot, comm=_text(raw.comm),
        kernel_action=_enum(abi.KernelAction, raw.kernel_action, "kernel_action"),
    )


def _enum(kind, value: int, what: str):
    member = kind._value2member_map_.get(value)  # every event pays this: skip the enum's slow call
    if member is not None:
        return member
    try:
        return kind(value)
    except ValueError as exc:
        raise DecodeError(f"unknown {what} {value}") from exc


def _fixed(struct_type, data: bytes):
    size = ctypes.sizeof(struct_type)
    if len(data) < size:
        raise DecodeError(f"{struct_type.__name__}: {len(data)} bytes, need {size}")
    return struct_type.from_buffer_copy(data)  # copies the first `size` bytes


def _field_bytes(data: bytes, field, length: int) -> bytes:
    """A char array field's raw bytes, sliced from the event itself: ctypes would cut the value
    at the first NUL, and argv is a run of NUL-separated strings."""
    return data[field.offset : field.offset + min(length, field.size)]


def _decode_exec(data: bytes) -> ExecEvent:
    raw = _fixed(abi.ExecEvent, data)
    argv_bytes = _field_bytes(data, abi.ExecEvent.argv, raw.argv_len)
    argv = tuple(a.decode("utf-8", "surrogateescape") for a in argv_bytes.split(b"\0")[: raw.argc])
    return ExecEvent(
        hdr=_header(raw.hdr), old_tid=raw.old_tid, flags=abi.ExecFlags(raw.flags), dirfd=raw.dirfd,
        filename=_text(_field_bytes(data, abi.ExecEvent.filename, raw.filename_len)), argv=argv,
        matched_slot=None if raw.matched_slot == abi.NO_SLOT else raw.matched_slot,
    )


def _decode_fork(data: bytes) -> ForkEvent:
    raw = _fixed(abi.ForkEvent, data)
    return ForkEvent(hdr=_header(raw.hdr), child_pid=raw.child_pid, parent_pid=raw.parent_pid)


def _decode_exit(data: bytes) -> ExitEvent:
    return ExitEvent(hdr=_header(_fixed(abi.ExitEvent, data).hdr))


def _with_path(struct, name: str, data: bytes):
    """A variable-length event (the kernel sends only the path bytes it read): the fixed part
    and the path's bytes."""
    fixed = struct.path.offset
    if len(data) < fixed:
        raise DecodeError(f"{name}: {len(data)} bytes, need at least {fixed}")
    head = _head_of(struct)
    raw = head.from_buffer_copy(data[:fixed].ljust(ctypes.sizeof(head), b"\0"))
    return raw, data[fixed : fixed + raw.path_len]


@cache
def _head_of(struct):
    """The struct without its path array, the part always sent: padding a short event to the
    whole struct (4 KiB of path) for every open cost more than decoding it."""
    return type(f"{struct.__name__}Head", (ctypes.Structure,),
                {"_fields_": [f for f in struct._fields_ if f[0] != "path"]})


def _decode_open(data: bytes) -> OpenEvent:
    raw, path_bytes = _with_path(abi.OpenEvent, "open_event", data)
    syscall = _enum(abi.OpenSyscall, raw.syscall, "open syscall")
    return OpenEvent(
        hdr=_header(raw.hdr), dirfd=raw.dirfd, flags=raw.flags, mode=raw.mode, syscall=syscall,
        path=_text(path_bytes), truncated=bool(raw.info & _TRUNCATED), names_gen=raw.names_gen,
        read_at_exit=bool(raw.info & _READ_AT_EXIT),
    )


def _decode_opened(data: bytes) -> OpenedEvent:
    raw = _fixed(abi.OpenedEvent, data)
    return OpenedEvent(hdr=_header(raw.hdr), fd=raw.fd)


def _decode_cwd(data: bytes) -> CwdEvent:
    raw, path_bytes = _with_path(abi.CwdEvent, "cwd_event", data)
    return CwdEvent(hdr=_header(raw.hdr), fd=raw.fd, path=_text(path_bytes))


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
    raw = _fixed(abi.ConnectEvent, data)
    family, address, port = decode_sockaddr(bytes(raw.addr), raw.addrlen)
    return ConnectEvent(hdr=_header(raw.hdr), fd=raw.fd, family=family, address=address, port=port,
                        call=_enum(abi.NetCall, raw.call, "network call"), refused=bool(raw.refused))


def _decode_change(data: bytes) -> FileChangeEvent:
    raw = _fixed(abi.FileChangeEvent, data)
    return FileChangeEvent(
        hdr=_header(raw.hdr), op=_enum(abi.FileOp, raw.op, "file op"), dirfd=raw.dirfd, dirfd2=raw.dirfd2,
        fd=raw.fd, mode=raw.mode, uid=raw.uid, gid=raw.gid,
        path=_text(_field_bytes(data, abi.FileChangeEvent.path, raw.path_len)),
        path2=_text(_field_bytes(data, abi.FileChangeEvent.path2, raw.path2_len)),
    )


def _decode_interface(data: bytes) -> InterfaceEvent:
    raw = _fixed(abi.InterfaceEvent, data)
    return InterfaceEvent(hdr=_header(raw.hdr), interface=_enum(abi.Interface, raw.interface, "interface"),
                          allowed=bool(raw.allowed), target_pid=raw.target_pid, signal=raw.signal)


_DNS_FIXED = abi.DnsEvent.data.offset


def _decode_dns(data: bytes) -> DnsEvent:
    # Variable length, like an open: only the bytes captured are sent.
    if len(data) < _DNS_FIXED:
        raise DecodeError(f"dns_event: {len(data)} bytes, need at least {_DNS_FIXED}")
    raw = abi.DnsEvent.from_buffer_copy(data[:_DNS_FIXED].ljust(ctypes.sizeof(abi.DnsEvent), b"\0"))
    peer = ipaddress.IPv6Address(bytes(raw.peer))
    return DnsEvent(hdr=_header(raw.hdr), fd=raw.fd, direction=_enum(abi.DnsDirection, raw.direction, "DNS direction"),
                    pending=raw.pending, peer=peer.ipv4_mapped or peer, peer_port=raw.peer_port,
                    payload=data[_DNS_FIXED : _DNS_FIXED + raw.len], total=raw.total)


_DECODERS = {
    abi.EventType.EXEC: _decode_exec,
    abi.EventType.FORK: _decode_fork,
    abi.EventType.EXIT: _decode_exit,
    abi.EventType.OPEN: _decode_open,
    abi.EventType.CWD: _decode_cwd,
    abi.EventType.OPENED: _decode_opened,
    abi.EventType.CONNECT: _decode_connect,
    abi.EventType.FILE_CHANGE: _decode_change,
    abi.EventType.INTERFACE: _decode_interface,
    abi.EventType.DNS: _decode_dns,
}


def decode(data: bytes) -> Event:
    if len(data) < HEADER_SIZE:
        raise DecodeError(f"event of {len(data)} bytes is shorter than its header ({HEADER_SIZE})")
    (kind,) = _TYPE.unpack_from(data, abi.EventHeader.type.offset)
    return _DECODERS[_enum(abi.EventType, kind, "event type")](data)
