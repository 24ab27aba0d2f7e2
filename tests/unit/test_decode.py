"""sensor/decode.py without root: real bytes recorded on a kernel (tests/data/events.rec, made by
tests/data/record_events.py, expected values in events.json), and events built by hand with the
ctypes mirror of bpf/events.h for the cases a live kernel does not produce on demand."""

from __future__ import annotations

import ctypes
import json
import os
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor import abi
from sensor.decode import (
    HEADER_SIZE, ConnectEvent, DecodeError, ExecEvent, ExitEvent, ForkEvent, OpenEvent, decode,
    decode_sockaddr, from_agent, layout, wire_text,
)
from sensor.source import read_recording

DATA = Path(__file__).resolve().parents[1] / "data"
RECORDING = DATA / "events.rec"
EXPECTED = json.loads((DATA / "events.json").read_text())
AT_FDCWD = -100

CLASSES = {"exec": ExecEvent, "fork": ForkEvent, "exit": ExitEvent, "open": OpenEvent,
           "connect": ConnectEvent}


# -- the recording -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def recorded() -> list:
    return [decode(raw) for raw in read_recording(RECORDING)]


def test_recording_is_small():
    assert RECORDING.stat().st_size < 64 * 1024


def test_recording_has_the_recorded_sequence(recorded):
    assert [e.kind for e in recorded] == [x["kind"] for x in EXPECTED["events"]]
    assert [type(e) for e in recorded] == [CLASSES[x["kind"]] for x in EXPECTED["events"]]


@pytest.mark.parametrize("index", range(len(EXPECTED["events"])),
                         ids=[f"{i}-{x['kind']}" for i, x in enumerate(EXPECTED["events"])])
def test_recorded_event(recorded, index):
    exp = EXPECTED["events"][index]
    ev = recorded[index]
    assert ev.kind == exp["kind"]
    assert (ev.hdr.pid, ev.hdr.tid, ev.hdr.slot) == (exp["pid"], exp["pid"], exp["slot"])
    assert (ev.hdr.uid, ev.hdr.gid) == (EXPECTED["uid"], EXPECTED["gid"])
    assert ev.hdr.ktime_ns > 0
    if "comm" in exp:
        assert ev.hdr.comm == exp["comm"]
    if ev.kind == "fork":
        assert (ev.child_pid, ev.parent_pid) == (exp["child_pid"], exp["parent_pid"])
    elif ev.kind == "exec":
        assert ev.filename == exp["filename"]
        assert ev.flags == abi.ExecFlags(exp["flags"])
        assert (ev.dirfd, ev.old_tid, ev.matched_slot) == (exp["dirfd"], exp["old_tid"], exp["matched_slot"])
        assert ev.argv == tuple(exp["argv"])
        assert ev.agent_start == bool(exp["flags"] & abi.ExecFlags.AGENT_START)
    elif ev.kind == "open":
        if "path_hex" in exp:
            assert os.fsencode(ev.path) == bytes.fromhex(exp["path_hex"])
        else:
            assert ev.path == exp["path"]
        assert ev.flags == exp["flags"]
        if "mode" in exp:
            assert ev.mode == exp["mode"]
        assert ev.is_write is exp["is_write"]
        assert ev.syscall == abi.OpenSyscall[exp["syscall"]]
        assert (ev.dirfd, ev.truncated, ev.result) == (exp["dirfd"], exp["truncated"], exp["result"])
    elif ev.kind == "connect":
        assert (ev.fd, ev.family, ev.address, ev.port) == (
            exp["fd"], exp["family"], exp["address"], exp["port"])


def test_recorded_opens_are_variable_length():
    """The kernel sends only the bytes of the path it read: check the recording is that."""
    fixed = abi.OpenEvent.path.offset
    for raw in read_recording(RECORDING):
        ev = decode(raw)
        if ev.kind == "open":
            assert len(raw) == fixed + len(os.fsencode(ev.path)) + 1


# -- hand-built events ---------------------------------------------------------------------------

def build(struct_type, type_: abi.EventType, slot: int = abi.NO_SLOT, **fields) -> ctypes.Structure:
    ev = struct_type()
    ev.hdr.ktime_ns, ev.hdr.cgroup_id = 123, 456
    ev.hdr.type, ev.hdr.pid, ev.hdr.tid = type_, 1000, 1001
    ev.hdr.uid, ev.hdr.gid, ev.hdr.slot = 1, 2, slot
    ev.hdr.comm = b"agent"
    for name, value in fields.items():
        setattr(ev, name, value)
    return ev


def put(ev: ctypes.Structure, field: str, data: bytes) -> None:
    ctypes.memmove(ctypes.addressof(ev) + getattr(type(ev), field).offset, data, len(data))


def open_bytes(path: bytes, path_len: int | None = None, **fields) -> bytes:
    """An open event as the kernel sends it: fixed part + path_len bytes of path."""
    ev = build(abi.OpenEvent, abi.EventType.OPEN,
               **{"syscall": abi.OpenSyscall.OPENAT, "dirfd": AT_FDCWD, **fields})
    n = len(path) + 1 if path_len is None else path_len
    ev.path_len = n
    put(ev, "path", path[: abi.PATH_MAX])
    return bytes(ev)[: abi.OpenEvent.path.offset + n]


def connect_bytes(addr: bytes, addrlen: int | None = None) -> bytes:
    ev = build(abi.ConnectEvent, abi.EventType.CONNECT, fd=7, call=abi.NetCall.CONNECT,
               addrlen=len(addr) if addrlen is None else addrlen)
    put(ev, "addr", addr[: abi.SOCKADDR_MAX])
    return bytes(ev)


def test_header_fields_and_no_slot():
    ev = decode(bytes(build(abi.ExitEvent, abi.EventType.EXIT)))
    assert isinstance(ev, ExitEvent)
    h = ev.hdr
    assert (h.ktime_ns, h.cgroup_id, h.pid, h.tid, h.uid, h.gid, h.slot, h.comm) == (
        123, 456, 1000, 1001, 1, 2, None, "agent")
    assert decode(bytes(build(abi.ExitEvent, abi.EventType.EXIT, slot=0))).hdr.slot == 0


def test_fork_event():
    ev = decode(bytes(build(abi.ForkEvent, abi.EventType.FORK, slot=5, child_pid=77, parent_pid=1000)))
    assert (ev.kind, ev.child_pid, ev.parent_pid, ev.hdr.slot) == ("fork", 77, 1000, 5)


def test_exec_event_fields():
    ev = build(abi.ExecEvent, abi.EventType.EXEC, slot=2, old_tid=1001,
               flags=abi.ExecFlags.AGENT_START | abi.ExecFlags.KERNEL_MATCHED, dirfd=AT_FDCWD,
               matched_slot=2, argc=1, argv_len=4, filename_len=len(b"/bin/x") + 1)
    put(ev, "filename", b"/bin/x\0")
    put(ev, "argv", b"abc\0")
    got = decode(bytes(ev))
    assert isinstance(got, ExecEvent)
    assert (got.filename, got.argv, got.old_tid, got.dirfd, got.matched_slot) == (
        "/bin/x", ("abc",), 1001, AT_FDCWD, 2)
    assert got.flags == abi.ExecFlags.AGENT_START | abi.ExecFlags.KERNEL_MATCHED and got.agent_start


def test_exec_without_args_and_no_matched_slot():
    ev = build(abi.ExecEvent, abi.EventType.EXEC, flags=abi.ExecFlags.NO_ARGS,
               matched_slot=abi.NO_SLOT, dirfd=AT_FDCWD)
    got = decode(bytes(ev))
    assert (got.filename, got.argv, got.matched_slot) == ("", (), None)
    assert got.flags == abi.ExecFlags.NO_ARGS and not got.agent_start


def test_exec_argv_entries():
    data = b"/usr/bin/python3\0-c\0\0print(1)\0ignored-beyond-argc\0"
    ev = build(abi.ExecEvent, abi.EventType.EXEC, argc=4, argv_len=len(data) - len(b"ignored-beyond-argc\0"))
    put(ev, "argv", data)
    assert decode(bytes(ev)).argv == ("/usr/bin/python3", "-c", "", "print(1)")


def test_exec_non_utf8_filename():
    name = b"/opt/caf\xe9"
    ev = build(abi.ExecEvent, abi.EventType.EXEC, filename_len=len(name) + 1)
    put(ev, "filename", name + b"\0")
    assert os.fsencode(decode(bytes(ev)).filename) == name


def test_open_event_variable_length():
    ev = decode(open_bytes(b"/etc/passwd", flags=os.O_RDONLY, mode=0))
    assert isinstance(ev, OpenEvent)
    assert (ev.path, ev.truncated, ev.is_write, ev.dirfd) == ("/etc/passwd", False, False, AT_FDCWD)
    assert ev.syscall == abi.OpenSyscall.OPENAT


@pytest.mark.parametrize("flags, is_write", [
    (os.O_RDONLY, False), (os.O_RDONLY | os.O_CLOEXEC, False), (os.O_WRONLY, True),
    (os.O_RDWR, True), (os.O_RDONLY | os.O_CREAT, True), (os.O_RDONLY | os.O_TRUNC, True),
    (os.O_RDONLY | os.O_APPEND, True),
])
def test_open_is_write(flags, is_write):
    assert decode(open_bytes(b"/f", flags=flags)).is_write is is_write


def test_open_non_utf8_path_round_trips():
    raw = b"/tmp/caf\xe9/\xff\xfe"
    ev = decode(open_bytes(raw))
    assert os.fsencode(ev.path) == raw
    assert not ev.truncated


def test_open_truncation_comes_from_the_kernel_flag_not_the_length():
    path = b"/" + b"a" * (abi.PATH_MAX - 2) + b"\0"  # a full buffer: complete or cut, only the kernel knows
    assert len(path) == abi.PATH_MAX
    complete = decode(open_bytes(path, path_len=abi.PATH_MAX))
    assert not complete.truncated and complete.path == path[:-1].decode()
    cut = decode(open_bytes(path, path_len=abi.PATH_MAX, info=abi.OpenInfo.PATH_TRUNCATED))
    assert cut.truncated


def test_open_empty_path():
    ev = decode(open_bytes(b"", path_len=0))
    assert ev.path == "" and not ev.truncated


def test_open_unknown_syscall_is_an_error():
    ev = build(abi.OpenEvent, abi.EventType.OPEN, syscall=9, path_len=0)
    with pytest.raises(DecodeError):
        decode(bytes(ev)[: abi.OpenEvent.path.offset])


@pytest.mark.parametrize("syscall", list(abi.OpenSyscall))
def test_open_every_syscall(syscall):
    assert decode(open_bytes(b"/x", syscall=syscall)).syscall == syscall


# -- truncated and unknown input -----------------------------------------------------------------

@pytest.mark.parametrize("struct_type", [abi.EventHeader, abi.ExecEvent, abi.ForkEvent, abi.OpenEvent, abi.OpenedEvent,
                                         abi.CwdEvent, abi.ConnectEvent, abi.FileChangeEvent, abi.DnsEvent,
                                         abi.InterfaceEvent])
def test_layout_reads_each_field_at_its_offset(struct_type):
    """The decoders read fields with struct.Struct formats derived from the ctypes mirror: every
    integer field set to a distinct value must come back in its place, arrays as their bytes."""
    ev, expected = struct_type(), []
    fields = [f for f in struct_type._fields_ if f[0] != "hdr"]
    for i, (name, ctype) in enumerate(fields, start=1):
        if issubclass(ctype, ctypes.Array):
            value = bytes([i]) * ctypes.sizeof(ctype)
            put(ev, name, value)
        else:
            value = i * 3 + 1
            setattr(ev, name, value)
        expected.append(value)
    assert list(layout(struct_type, fields[0][0]).unpack_from(bytes(ev))) == expected


def test_opened_and_cwd_events():
    opened = decode(bytes(build(abi.OpenedEvent, abi.EventType.OPENED, fd=-13)))
    assert (opened.kind, opened.fd, opened.hdr.tid) == ("opened", -13, 1001)
    cwd = build(abi.CwdEvent, abi.EventType.CWD, fd=-1, path_len=5)
    put(cwd, "path", b"/srv\0")
    event = decode(bytes(cwd)[: abi.CwdEvent.path.offset + 5])
    assert (event.kind, event.fd, event.path) == ("cwd", -1, "/srv")


def test_from_agent_reads_the_slot_alone():
    assert from_agent(bytes(build(abi.ExecEvent, abi.EventType.EXEC, slot=3)))
    assert not from_agent(bytes(build(abi.ExecEvent, abi.EventType.EXEC)))  # another process's exec
    assert not from_agent(bytes(build(abi.ExecEvent, abi.EventType.EXEC, slot=3))[: HEADER_SIZE - 1])


def test_an_open_carries_its_result_unless_sent_at_entry():
    """An open sent at exit has what the syscall returned, an fd or -errno; one the kernel sent
    before it returned (OPEN_SENT_AT_ENTRY) has none: its fd comes as an OpenedEvent."""
    assert decode(open_bytes(b"/x", result=7)).result == 7
    assert decode(open_bytes(b"/x", result=-2)).result == -2
    assert decode(open_bytes(b"/x", result=7, info=abi.OpenInfo.SENT_AT_ENTRY)).result is None


@pytest.mark.parametrize("size", [0, 1, HEADER_SIZE - 1])
def test_shorter_than_header(size):
    data = bytes(build(abi.ExitEvent, abi.EventType.EXIT))[:size]
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize("struct_type, type_, fields", [
    (abi.ExecEvent, abi.EventType.EXEC, {}), (abi.ForkEvent, abi.EventType.FORK, {}),
    (abi.ExitEvent, abi.EventType.EXIT, {}),
    (abi.ConnectEvent, abi.EventType.CONNECT, {"call": abi.NetCall.CONNECT}),
    (abi.FileChangeEvent, abi.EventType.FILE_CHANGE, {"op": abi.FileOp.UNLINK}),
])
def test_fixed_size_events_cut_short(struct_type, type_, fields):
    data = bytes(build(struct_type, type_, **fields))
    decode(data)
    with pytest.raises(DecodeError):
        decode(data[:-1])


def test_open_cut_inside_fixed_part():
    data = open_bytes(b"/x")
    with pytest.raises(DecodeError):
        decode(data[: abi.OpenEvent.path.offset - 1])


@pytest.mark.parametrize("type_", [0, max(abi.EventType) + 1, abi.EVENT_TYPE_MAX, 0xFFFFFFFF])
def test_unknown_event_type(type_):
    ev = build(abi.ExitEvent, abi.EventType.EXIT)
    ev.hdr.type = type_
    with pytest.raises(DecodeError, match="unknown event type"):
        decode(bytes(ev) + bytes(8192))


def test_decode_error_is_a_value_error():
    assert issubclass(DecodeError, ValueError)


# -- sockaddrs -----------------------------------------------------------------------------------

def sockaddr_in(ip: str, port: int) -> bytes:
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(ip) + bytes(8)


def sockaddr_in6(ip: str, port: int) -> bytes:
    return (struct.pack("=H", socket.AF_INET6) + struct.pack("!H", port) + bytes(4)
            + socket.inet_pton(socket.AF_INET6, ip) + bytes(4))


def sockaddr_un(path: bytes) -> bytes:
    return struct.pack("=H", socket.AF_UNIX) + path


def test_connect_inet():
    ev = decode(connect_bytes(sockaddr_in("10.1.2.3", 443)))
    assert isinstance(ev, ConnectEvent)
    assert (ev.fd, ev.family, ev.address, ev.port) == (7, socket.AF_INET, "10.1.2.3", 443)
    assert str(ev.ip) == "10.1.2.3"


def test_connect_inet6_and_v4_mapped():
    ev = decode(connect_bytes(sockaddr_in6("2001:db8::1", 8080)))
    assert (ev.family, ev.address, ev.port) == (socket.AF_INET6, "2001:db8::1", 8080)
    mapped = decode(connect_bytes(sockaddr_in6("::ffff:192.0.2.1", 53)))
    assert str(mapped.ip.ipv4_mapped) == "192.0.2.1" and mapped.port == 53


def test_connect_unix_path_and_abstract():
    ev = decode(connect_bytes(sockaddr_un(b"/run/agent.sock\0")))
    assert (ev.family, ev.address, ev.port, ev.ip) == (socket.AF_UNIX, "/run/agent.sock", None, None)
    # addrlen bounds the path: bytes after it are not part of the address
    ev = decode(connect_bytes(sockaddr_un(b"/run/a.sock") + b"garbage", addrlen=2 + len(b"/run/a.sock")))
    assert ev.address == "/run/a.sock"
    ev = decode(connect_bytes(sockaddr_un(b"\0hidden-name")))
    assert ev.address == "@hidden-name"


def test_connect_unix_non_utf8_path():
    ev = decode(connect_bytes(sockaddr_un(b"/tmp/s\xe9ck\0")))
    assert os.fsencode(ev.address) == b"/tmp/s\xe9ck"


@pytest.mark.parametrize("family", [socket.AF_NETLINK, socket.AF_PACKET, 0xBEEF])
def test_connect_unknown_family_has_no_address(family):
    ev = decode(connect_bytes(struct.pack("=H", family) + b"\x01" * 30))
    assert (ev.family, ev.address, ev.port, ev.ip) == (family, "", None, None)


def test_sockaddr_shorter_than_its_family_needs():
    assert decode_sockaddr(b"\x02", 1) == (0, "", None)
    assert decode_sockaddr(sockaddr_in("1.2.3.4", 80), 6) == (socket.AF_INET, "", None)
    assert decode_sockaddr(sockaddr_in6("::1", 80), 20) == (socket.AF_INET6, "", None)
    ev = decode(connect_bytes(sockaddr_in("1.2.3.4", 80), addrlen=4))
    assert (ev.family, ev.address, ev.port, ev.ip) == (socket.AF_INET, "", None, None)


def test_sockaddr_addrlen_larger_than_capture():
    addr = sockaddr_in("127.0.0.1", 22)
    assert decode_sockaddr(addr, 1 << 20) == (socket.AF_INET, "127.0.0.1", 22)
    ev = decode(connect_bytes(addr, addrlen=0xFFFFFFFF))
    assert (ev.address, ev.port) == ("127.0.0.1", 22)


# -- the open event, decoded in C (sensor/_decode.c) ----------------------------------------------

u32 = st.integers(0, 2**32 - 1)
s32 = st.integers(-2**31, 2**31 - 1)


@st.composite
def headers(draw) -> abi.EventHeader:
    hdr = abi.EventHeader(ktime_ns=draw(st.integers(0, 2**64 - 1)), cgroup_id=draw(st.integers(0, 2**64 - 1)),
                          pid=draw(u32), tid=draw(u32), uid=draw(u32), gid=draw(u32),
                          slot=draw(st.one_of(st.integers(0, abi.MAX_SLOTS - 1), st.just(abi.NO_SLOT))),
                          kernel_action=draw(st.sampled_from(list(abi.KernelAction))))
    comm = draw(st.binary(max_size=abi.COMM_LEN))
    ctypes.memmove(ctypes.addressof(hdr) + abi.EventHeader.comm.offset, comm, len(comm))
    return hdr


@settings(max_examples=300, deadline=None)
@given(hdr=headers(), dirfd=s32, flags=u32, mode=u32, syscall=st.sampled_from(list(abi.OpenSyscall)),
       path=st.binary(max_size=300), info=st.integers(0, 7), names_gen=u32, result=s32)
def test_an_open_decodes_to_the_fields_it_was_built_with(hdr, dirfd, flags, mode, syscall, path, info, names_gen,
                                                          result):
    """Against the ctypes mirror of bpf/events.h: every field as built, a name that is not UTF-8
    kept byte for byte, and the header exactly as decode.py reads it for every other event."""
    ev = abi.OpenEvent(hdr=hdr, dirfd=dirfd, flags=flags, mode=mode, syscall=syscall, path_len=len(path) + 1,
                       info=info, names_gen=names_gen, result=result)
    ev.hdr.type = abi.EventType.OPEN
    put(ev, "path", path)
    got = decode(bytes(ev)[: abi.OpenEvent.path.offset + len(path) + 1])
    exit_event = abi.ExitEvent(hdr=hdr)
    exit_event.hdr.type = abi.EventType.EXIT
    assert type(got) is OpenEvent and got.hdr == decode(bytes(exit_event)).hdr
    assert (got.dirfd, got.flags, got.mode, got.syscall, got.names_gen) == (dirfd, flags, mode, syscall, names_gen)
    assert got.path == os.fsdecode(path.split(b"\0")[0])
    assert (got.truncated, got.read_at_exit) == (bool(info & abi.OpenInfo.PATH_TRUNCATED),
                                                 bool(info & abi.OpenInfo.READ_AT_EXIT))
    assert got.result == (None if info & abi.OpenInfo.SENT_AT_ENTRY else result)


def test_an_open_with_an_unknown_kernel_action_is_an_error():
    ev = build(abi.OpenEvent, abi.EventType.OPEN, syscall=abi.OpenSyscall.OPENAT, path_len=0)
    ev.hdr.kernel_action = 9
    with pytest.raises(DecodeError, match="unknown kernel_action 9"):
        decode(bytes(ev)[: abi.OpenEvent.path.offset])


@given(st.binary(max_size=64))
def test_wire_text_keeps_utf8_and_writes_every_other_byte(raw):
    """Any name read from the kernel (decoded with surrogateescape) can be put in a protobuf:
    valid UTF-8 as it was, each byte that is not as \\xNN."""
    shown = wire_text(raw.decode("utf-8", "surrogateescape"))
    shown.encode("utf-8")  # protobuf's strings: raises for a surrogate left in
    assert shown == raw.decode("utf-8", "backslashreplace")


def test_wire_text_of_a_surrogate_no_byte_became():
    assert wire_text("a\ud800b") == "a\\xed\\xa0\\x80b"
