"""Regression: argv is a run of NUL-separated strings; decoding must keep every entry, not stop
at the first NUL as a ctypes char-array value does."""

import ctypes

from sensor import abi
from sensor.decode import decode


def test_exec_argv_keeps_every_entry():
    raw = abi.ExecEvent()
    raw.hdr.type = abi.EventType.EXEC
    raw.hdr.slot = abi.NO_SLOT
    argv = b"/usr/bin/python3\0-c\0pass\0"
    ctypes.memmove(ctypes.addressof(raw) + abi.ExecEvent.argv.offset, argv, len(argv))
    raw.argv_len, raw.argc = len(argv), 3
    raw.filename = b"/usr/bin/python3"
    raw.filename_len = len(raw.filename) + 1
    event = decode(bytes(raw))
    assert event.argv == ("/usr/bin/python3", "-c", "pass")
    assert event.filename == "/usr/bin/python3"
