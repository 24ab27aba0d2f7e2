"""Event sources: the live ring buffer, and recordings of it for tests and replay.

A recording is a sequence of records, each a little-endian u32 length followed by the event's
bytes exactly as the kernel sent them."""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque
from pathlib import Path
from typing import BinaryIO, Iterator

from .decode import from_agent
from .thread_names import name_os_thread

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


BACKLOG_MAX = 2_000_000  # events (a few hundred MB at most) held while judging falls behind
COALESCE_S = 0.001  # the most a busy ring buffer's next pass waits: fewer, larger passes under load
log = logging.getLogger(__name__)


class DrainedRingBuffer:
    """The live ring buffer, emptied by a thread of its own into a queue in user memory, so a
    burst the judge cannot keep up with waits here instead of overflowing the kernel's buffer
    (where it would be lost). Past BACKLOG_MAX events the oldest are dropped and counted."""

    def __init__(self, sensor_bpf, poll_ms: int = 100):
        self._bpf = sensor_bpf
        self._queue: deque[bytes] = deque()
        self._ready = threading.Condition()
        self._stopping = threading.Event()
        self.drops = 0
        sensor_bpf.open_events(self._queue.append)
        self._thread = threading.Thread(target=self._drain, args=(poll_ms,), name="ring-buffer", daemon=True)
        self._thread.start()

    def _drain(self, poll_ms: int) -> None:
        name_os_thread()
        busy = False
        while not self._stopping.is_set():
            if busy:  # under load, a millisecond gathers a batch: fewer, larger passes (and GIL takes)
                time.sleep(COALESCE_S)
            busy = self._bpf.poll(0 if busy else poll_ms) > 0 and self._agents_sending()
            overflow = len(self._queue) - BACKLOG_MAX
            if overflow > 0:
                for _ in range(overflow):
                    self._queue.popleft()
                self.drops += overflow
                log.error("event backlog full: %d events dropped (%d in all); judging cannot keep up",
                          overflow, self.drops)
            if self._queue:
                with self._ready:
                    self._ready.notify()

    def _agents_sending(self) -> bool:
        """Whether the newest record is an agent's. Their events come with a wakeup each unless
        the reader is behind, so a busy reader spares them; other processes' execs come without
        one, and a host's steady trickle of them (a few a millisecond) is read each poll
        interval, not with a pass every millisecond that slowed every exec on the host."""
        try:
            return from_agent(self._queue[-1])
        except IndexError:  # the judge has taken them all already
            return True

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def read(self, timeout_ms: int) -> list[bytes]:
        """What has been drained so far (waiting up to timeout_ms for something)."""
        with self._ready:  # checked under the lock: a notify cannot slip in between
            if not self._queue and timeout_ms > 0:
                self._ready.wait(timeout_ms / 1000)
        batch = []
        while self._queue and len(batch) < 4096:  # the judge reports progress in bounded steps
            batch.append(self._queue.popleft())
        return batch

    def close(self) -> None:
        self._stopping.set()
        self._thread.join()


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
