"""Event sources: the live ring buffer, and recordings of it for tests and replay.

A recording is a sequence of records, each a little-endian u32 length followed by the event's
bytes exactly as the kernel sent them."""

from __future__ import annotations

import struct
from collections import deque
from pathlib import Path
from typing import BinaryIO, Iterator

_LEN = struct.Struct("<I")


class RingBufferSource:
    """Raw events from the kernel, in the order the ring buffer holds them."""

    def __init__(self, sensor_bpf):
        self._bpf = sensor_bpf
        self._pending: deque[bytes] = deque()
        sensor_bpf.open_events(self._pending.append)

    def read(self, timeout_ms: int) -> list[bytes]:
        self._bpf.poll(timeout_ms)
        batch = list(self._pending)
        self._pending.clear()
        return batch


class Recorder:
    def __init__(self, out: BinaryIO):
        self._out = out

    def write(self, data: bytes) -> None:
        self._out.write(_LEN.pack(len(data)) + data)


def read_recording(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while header := f.read(_LEN.size):
            if len(header) < _LEN.size:
                raise ValueError(f"{path}: truncated record header")
            (length,) = _LEN.unpack(header)
            data = f.read(length)
            if len(data) != length:
                raise ValueError(f"{path}: truncated record ({len(data)} of {length} bytes)")
            yield data
