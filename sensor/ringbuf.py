"""The kernel's BPF ring buffer, read in place through mmap, the way libbpf's consumer reads it.

Why not bcc's reader: it calls back into Python once per event, and each call takes the GIL
anew. The thread draining the buffer then waits for the judge to hand the GIL over at every
event; under load it fell behind and the kernel's buffer overflowed. Here one pass takes every
record that is ready under one hold of the GIL.

Layout (kernel/bpf/ringbuf.c): page 0, the consumer position (ours to write); page 1, the
producer position; then the data area, mapped twice in a row so a record that wraps around the
end reads as one piece. Each record: a u32 length (BUSY bit: still being written; DISCARD bit:
to be skipped), a u32 page offset, the data, padded to 8 bytes.

The producer publishes a record's length with a store-release after writing its data; this
reader's plain loads are ordered the same way only on x86 (total store order), so elsewhere
SensorBPF uses libbpf's reader, as libbcc exports it (see IN_PLACE, LibbpfRingBuffer)."""

from __future__ import annotations

import ctypes
import mmap
import platform
import select
import struct
from typing import Callable

BUSY = 1 << 31
DISCARD = 1 << 30
HEADER = 8
_LEN = struct.Struct("@I")
IN_PLACE = platform.machine() in ("x86_64", "i686", "i386")
PUBLISH_EVERY = 4096  # records between consumer-position stores: the kernel reuses the space sooner


def take_ready(consumer_pos, producer_pos, data, data_offset: int, mask: int,
               sink: Callable[[bytes], None]) -> int:
    """Hand every ready record to sink, oldest first, and advance the consumer position; the
    number of records taken. consumer_pos, producer_pos: one-item memoryviews of format "Q" on
    the two position pages; data: the mapping whose data area (doubled) starts at data_offset.

    The positions go through memoryviews because those read and write the 8 bytes whole:
    struct.pack_into zeroes its target before writing, and the kernel, reading a consumer
    position of 0, took the buffer for full and refused events."""
    cons = consumer_pos[0]
    taken = 0
    while (prod := producer_pos[0]) > cons:
        while cons < prod:
            at = data_offset + (cons & mask)
            (length,) = _LEN.unpack_from(data, at)
            if length & BUSY:  # reserved, not yet committed: it and what follows wait
                consumer_pos[0] = cons
                return taken
            size = length & ~(BUSY | DISCARD)
            if not length & DISCARD:
                sink(data[at + HEADER : at + HEADER + size])
                taken += 1
                if taken % PUBLISH_EVERY == 0:
                    consumer_pos[0] = cons
            cons += (size + HEADER + 7) & ~7
        consumer_pos[0] = cons
    return taken


class RingBufferMap:
    """A BPF_MAP_TYPE_RINGBUF map (its fd and data size) mapped into this process; take()
    hands what is ready to sink."""

    def __init__(self, fd: int, size: int, sink: Callable[[bytes], None]):
        self._sink = sink
        self._page = mmap.PAGESIZE
        self._mask = size - 1
        self._consumer = mmap.mmap(fd, self._page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._data = mmap.mmap(fd, self._page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=self._page)
        self._consumer_pos = memoryview(self._consumer)[:8].cast("Q")
        self._producer_pos = memoryview(self._data)[:8].cast("Q")
        self._poll = select.epoll()
        self._poll.register(fd, select.EPOLLIN)

    def wait(self, timeout_ms: int) -> None:
        """Until the kernel signals data (a record sent with a wakeup) or timeout_ms passed;
        at once if records are waiting."""
        self._poll.poll(timeout_ms / 1000)

    def take(self) -> int:
        return take_ready(self._consumer_pos, self._producer_pos, self._data, self._page, self._mask, self._sink)

    def close(self) -> None:
        self._consumer_pos.release()
        self._producer_pos.release()
        self._poll.close()
        self._consumer.close()
        self._data.close()


class LibbpfRingBuffer:
    """The same, through libbpf's consumer in libbcc (correct on every CPU, one Python call per
    record): what SensorBPF uses where IN_PLACE is false. Imports bcc's library, and with it
    LLVM's, only here."""

    def __init__(self, fd: int, size: int, sink: Callable[[bytes], None]):
        from bcc.libbcc import _RINGBUF_CB_TYPE, lib

        self._lib, self._sink, self._taken = lib, sink, 0
        self._callback = _RINGBUF_CB_TYPE(self._on_record)  # libbpf holds only the pointer
        self._rb = lib.bpf_new_ringbuf(fd, self._callback, None)
        if not self._rb:
            raise OSError(f"libbpf could not open ring buffer map fd {fd} ({size} bytes)")

    def _on_record(self, _ctx, data, size) -> int:
        self._taken += 1
        self._sink(ctypes.string_at(data, size))
        return 0

    def wait(self, timeout_ms: int) -> None:
        self._lib.bpf_poll_ringbuf(self._rb, timeout_ms)  # also takes what is ready

    def take(self) -> int:
        self._lib.bpf_consume_ringbuf(self._rb)
        taken, self._taken = self._taken, 0
        return taken

    def close(self) -> None:
        self._lib.bpf_free_ringbuf(self._rb)
