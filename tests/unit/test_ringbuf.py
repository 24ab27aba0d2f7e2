"""sensor/ringbuf.py's record walk on buffers laid out as the kernel lays out a BPF ring buffer
(kernel/bpf/ringbuf.c): committed, discarded, still-busy and wrapped records. The live mapping
is exercised by every test that runs the daemon."""

from __future__ import annotations

import struct

from sensor.ringbuf import BUSY, DISCARD, HEADER, take_ready

SIZE = 64  # data area bytes (a power of two, as the kernel's)
PAGE = 16  # where the data area starts in the test's "producer" buffer


class Ring:
    def __init__(self, start: int = 0):
        self.consumer = bytearray(8)
        struct.pack_into("=Q", self.consumer, 0, start)
        self.area = bytearray(SIZE)
        self.prod = start

    def put(self, payload: bytes, flags: int = 0) -> None:
        record = struct.pack("=II", len(payload) | flags, 0) + payload
        record += b"\0" * (-len(record) % 8)
        for i, byte in enumerate(record):
            self.area[(self.prod + i) % SIZE] = byte
        self.prod += len(record)

    def producer_view(self) -> bytes:
        """Producer position, then the data area twice over (the kernel's double mapping)."""
        return struct.pack("=Q", self.prod).ljust(PAGE, b"\0") + bytes(self.area) * 2

    def take(self) -> tuple[list[bytes], int]:
        got: list[bytes] = []
        view = bytearray(self.producer_view())
        take_ready(memoryview(self.consumer).cast("Q"), memoryview(view)[:8].cast("Q"), view, PAGE, SIZE - 1,
                   got.append)
        return got, struct.unpack_from("=Q", self.consumer, 0)[0]


def test_committed_records_are_taken_in_order_and_discarded_ones_skipped():
    ring = Ring()
    ring.put(b"first")
    ring.put(b"dropped", DISCARD)
    ring.put(b"second!!")
    got, cons = ring.take()
    assert got == [b"first", b"second!!"]
    assert cons == ring.prod


def test_a_busy_record_stops_the_walk_until_it_is_committed():
    ring = Ring()
    ring.put(b"ready")
    busy_at = ring.prod
    ring.put(b"in progress", BUSY)
    ring.put(b"after")
    got, cons = ring.take()
    assert got == [b"ready"] and cons == busy_at
    struct.pack_into("=I", ring.area, busy_at % SIZE, len(b"in progress"))  # committed now
    got, cons = ring.take()
    assert got == [b"in progress", b"after"] and cons == ring.prod


def test_a_record_that_wraps_around_the_end_reads_whole():
    ring = Ring(start=SIZE - HEADER - 8)  # the header fits before the end, the payload does not
    ring.put(b"wraps around the end")
    got, cons = ring.take()
    assert got == [b"wraps around the end"]
    assert cons == ring.prod > SIZE


def test_nothing_ready_takes_nothing():
    ring = Ring(start=40)
    assert ring.take() == ([], 40)
