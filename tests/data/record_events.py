#!/usr/bin/env python3
"""Record a short, real event sequence from the running kernel into tests/data/events.rec, with
the values the sequence must decode to in tests/data/events.json.

Why: tests/unit/test_decode.py decodes these bytes without root, bcc or a BPF-capable kernel, so
the decoder is checked against what the BPF programs really send (variable-length opens,
sockaddrs as the C library passes them, NUL-separated argv, ...), not only against bytes the
tests build themselves.

When: after any change to bpf/events.h or to what bpf/*.c put in an event. Then run, as root,
from the repository root:

    sudo .venv/bin/python tests/data/record_events.py

and commit both files. The expected values in events.json come from what this script did (the
paths it opened, the ports it connected to, the pids fork returned), never from sensor/decode.py,
so the test stays a real check of the decoder.

The sequence, by one tracked process C (slot 3) and two others:
    C forks G                            FORK
    G execs /bin/true recorded argv      EXEC (tracked: inherited slot), then EXIT of G
    C opens a file for reading           OPEN  openat, O_RDONLY
    C opens a file for writing           OPEN  openat, O_WRONLY|O_CREAT|O_TRUNC, mode 0644
    C opens a non-UTF-8 file name        OPEN
    C opens a 5000-byte path             OPEN  truncated
    C connects to 127.0.0.1, [::1], a unix path and an abstract unix name      4 x CONNECT
    C exits                              EXIT
    U, untracked, execs /bin/true        EXEC with no slot
Only these are kept: the opens the dynamic loader makes after each exec are left out (they
depend on the host's libraries), as is every event of other processes.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import socket
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from sensor import abi  # noqa: E402
from sensor.bpf_loader import SensorBPF  # noqa: E402
from sensor.source import Recorder, RingBufferSource  # noqa: E402

SLOT = 3
WORK = Path("/tmp/agent-sensor-recording")
TRUE = "/bin/true"
WAIT_S = 5.0


def closed_port(family: int, host: str) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def connect(family: int, address, expected: dict, out: list) -> None:
    s = socket.socket(family, socket.SOCK_STREAM)
    out.append({"kind": "connect", "pid": os.getpid(), "slot": SLOT, "fd": s.fileno(), **expected})
    try:
        s.connect(address)
    except OSError:
        pass
    s.close()


def failed_open(path) -> int:
    """-errno of an open that must fail."""
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as e:
        return -e.errno
    raise AssertionError(f"{path!r} opened")


def tracked_process(go_r: int, report_w: int) -> None:
    """C: runs in the child once tracked; reports what it did as JSON on report_w."""
    os.read(go_r, 1)
    me = os.getpid()
    did: list[dict] = []

    gpid = os.fork()
    if gpid == 0:
        try:
            os.execv(TRUE, [TRUE, "recorded", "argv"])
        finally:
            os._exit(127)
    did.append({"kind": "fork", "pid": me, "slot": SLOT, "child_pid": gpid, "parent_pid": me})
    did.append({"kind": "exec", "pid": gpid, "slot": SLOT, "filename": TRUE,
                "argv": [TRUE, "recorded", "argv"], "flags": 0, "comm": "true",
                "dirfd": -100, "old_tid": gpid, "matched_slot": None})
    did.append({"kind": "exit", "pid": gpid, "slot": SLOT, "comm": "true"})
    os.waitpid(gpid, 0)

    read_path = WORK / "read.txt"
    with open(read_path, "rb") as f:  # CPython: openat(AT_FDCWD, path, O_RDONLY|O_CLOEXEC)
        fd = f.fileno()
    did.append({"kind": "open", "pid": me, "slot": SLOT, "path": str(read_path),
                "flags": os.O_RDONLY | os.O_CLOEXEC, "is_write": False, "syscall": "OPENAT",
                "dirfd": -100, "truncated": False, "result": fd})

    write_path = WORK / "written.txt"
    fd = os.open(write_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.close(fd)
    did.append({"kind": "open", "pid": me, "slot": SLOT, "path": str(write_path),
                "flags": os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, "mode": 0o644,
                "is_write": True, "syscall": "OPENAT", "dirfd": -100, "truncated": False, "result": fd})

    raw_name = os.fsencode(WORK) + b"/caf\xe9-\xff.bin"  # no such file: the result is -ENOENT
    did.append({"kind": "open", "pid": me, "slot": SLOT, "path_hex": raw_name.hex(),
                "flags": os.O_RDONLY | os.O_CLOEXEC, "is_write": False, "syscall": "OPENAT",
                "dirfd": -100, "truncated": False, "result": failed_open(raw_name)})

    long_path = str(WORK) + "/" + "L" * 5000  # -ENAMETOOLONG
    did.append({"kind": "open", "pid": me, "slot": SLOT, "path": long_path[: abi.PATH_MAX - 1],
                "flags": os.O_RDONLY | os.O_CLOEXEC, "is_write": False, "syscall": "OPENAT",
                "dirfd": -100, "truncated": True, "result": failed_open(long_path)})

    port4 = closed_port(socket.AF_INET, "127.0.0.1")
    connect(socket.AF_INET, ("127.0.0.1", port4),
            {"family": socket.AF_INET, "address": "127.0.0.1", "port": port4}, did)
    port6 = closed_port(socket.AF_INET6, "::1")
    connect(socket.AF_INET6, ("::1", port6),
            {"family": socket.AF_INET6, "address": "::1", "port": port6}, did)
    unix_path = str(WORK / "nobody.sock")
    connect(socket.AF_UNIX, unix_path,
            {"family": socket.AF_UNIX, "address": unix_path, "port": None}, did)
    connect(socket.AF_UNIX, "\0agent-sensor-recording",
            {"family": socket.AF_UNIX, "address": "@agent-sensor-recording", "port": None}, did)

    did.append({"kind": "exit", "pid": me, "slot": SLOT})
    os.write(report_w, json.dumps(did).encode())


def fork_child(body) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)  # never the interpreter's exit: bcc's atexit would detach the probes
    return pid


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def keep(raw: bytes, pids: set[int], paths: set[bytes]) -> bool:
    hdr = abi.EventHeader.from_buffer_copy(raw[: ctypes.sizeof(abi.EventHeader)])
    if hdr.pid not in pids:  # an open's result is in its event: an OPENED here fails the recording
        return False
    if hdr.type == abi.EventType.CONNECT:  # the binds closed_port makes are not in it either
        return abi.ConnectEvent.from_buffer_copy(raw.ljust(ctypes.sizeof(abi.ConnectEvent), b"\0")).call \
            == abi.NetCall.CONNECT
    if hdr.type != abi.EventType.OPEN:
        return True
    fixed = abi.OpenEvent.path.offset
    path_len = abi.OpenEvent.from_buffer_copy(raw[:fixed].ljust(ctypes.sizeof(abi.OpenEvent), b"\0")).path_len
    return raw[fixed : fixed + path_len].split(b"\0", 1)[0] in paths


def main() -> int:
    if os.geteuid() != 0:
        print("run as root: loading BPF programs needs it", file=sys.stderr)
        return 1
    out_dir = HERE
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    (WORK / "read.txt").write_bytes(b"recorded\n")

    sensor = SensorBPF()
    sensor.load()
    sensor.send_all_execs(True)  # U's exec is in the sequence: as with profiles that match by selectors
    source = RingBufferSource(sensor)
    c = 0
    try:
        while source.read(0):
            pass
        go_r, go_w = os.pipe()
        rep_r, rep_w = os.pipe()
        c = fork_child(lambda: tracked_process(go_r, rep_w))
        os.close(go_r)
        os.close(rep_w)
        sensor.track(c, SLOT, c)
        os.write(go_w, b"g")
        did = json.loads(read_all(rep_r))
        os.waitpid(c, 0)
        with open(f"/proc/{os.getpid()}/comm") as f:
            comm = f.read().strip()  # C is a fork of this process: the same comm
        for e in did:
            if e["pid"] == c:
                e["comm"] = comm

        u = fork_child(lambda: os.execv(TRUE, [TRUE, "untracked"]))
        os.waitpid(u, 0)
        did.append({"kind": "exec", "pid": u, "slot": None, "filename": TRUE,
                    "argv": [TRUE, "untracked"], "flags": 0, "comm": "true", "dirfd": -100,
                    "old_tid": u, "matched_slot": None})

        pids = {e["pid"] for e in did}
        paths = {bytes.fromhex(e["path_hex"]) if "path_hex" in e else e["path"].encode()
                 for e in did if e["kind"] == "open"}
        kinds = [abi.EventType[e["kind"].upper()] for e in did]
        kept: list[bytes] = []
        deadline = time.monotonic() + WAIT_S
        while len(kept) < len(did) and time.monotonic() < deadline:
            kept += [raw for raw in source.read(50) if keep(raw, pids, paths)]
        got = [abi.EventHeader.from_buffer_copy(raw[: ctypes.sizeof(abi.EventHeader)]).type
               for raw in kept]
        if got != kinds:
            print(f"recorded event types {got} differ from the sequence {kinds}", file=sys.stderr)
            return 1
    finally:
        if c:
            sensor.untrack(c)
        sensor.close()
        shutil.rmtree(WORK, ignore_errors=True)

    with open(out_dir / "events.rec", "wb") as f:
        recorder = Recorder(f)
        for raw in kept:
            recorder.write(raw)
    uid, gid = os.getuid(), os.getgid()
    expected = {
        "recorded_on": {"kernel": platform.release(), "machine": platform.machine()},
        "uid": uid, "gid": gid,
        "events": did,
    }
    (out_dir / "events.json").write_text(json.dumps(expected, indent=1) + "\n")
    size = (out_dir / "events.rec").stat().st_size
    print(f"wrote {len(kept)} events ({size} bytes) to {out_dir / 'events.rec'} and the expected "
          f"values to {out_dir / 'events.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
