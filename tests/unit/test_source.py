"""sensor/source.py without root: the recording format (u32 little-endian length + bytes), its
errors on truncated files, and RingBufferSource's batching over a stand-in for SensorBPF."""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import pytest

import sensor.source as source_mod
from sensor import abi
from sensor.source import Recorder, RingBufferSource, read_recording

RECORDING = Path(__file__).resolve().parents[1] / "data" / "events.rec"


def record(path: Path, items: list[bytes]) -> None:
    with open(path, "wb") as f:
        recorder = Recorder(f)
        for item in items:
            recorder.write(item)


def test_round_trip(tmp_path):
    items = [b"\x01" * 40, b"", b"\0\xff" * 3000, bytes(range(256))]
    path = tmp_path / "r.rec"
    record(path, items)
    assert list(read_recording(path)) == items


def test_format_is_little_endian_length_then_bytes():
    buf = io.BytesIO()
    Recorder(buf).write(b"abc")
    Recorder(buf).write(b"")
    assert buf.getvalue() == b"\x03\0\0\0abc" + b"\0\0\0\0"


def test_empty_recording(tmp_path):
    path = tmp_path / "empty.rec"
    path.write_bytes(b"")
    assert list(read_recording(path)) == []


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_truncated_record_header(tmp_path, cut):
    path = tmp_path / "r.rec"
    record(path, [b"first", b"second"])
    data = path.read_bytes()
    path.write_bytes(data[: 4 + 5 + cut])
    records = read_recording(path)
    assert next(records) == b"first"
    with pytest.raises(ValueError, match="truncated record header"):
        next(records)


@pytest.mark.parametrize("keep", [0, 1, 5])
def test_truncated_record_body(tmp_path, keep):
    path = tmp_path / "r.rec"
    path.write_bytes(struct.pack("<I", 6) + b"second"[:keep])
    with pytest.raises(ValueError, match=rf"truncated record \({keep} of 6 bytes\)"):
        list(read_recording(path))


def test_recording_error_names_the_file(tmp_path):
    path = tmp_path / "named.rec"
    path.write_bytes(b"\x01")
    with pytest.raises(ValueError, match="named.rec"):
        list(read_recording(path))


def test_checked_in_recording_reads_whole():
    data = RECORDING.read_bytes()
    records = list(read_recording(RECORDING))
    assert records and all(records)
    assert sum(4 + len(r) for r in records) == len(data)


class FakeSensor:
    """What RingBufferSource uses of SensorBPF: open_events(callback) and poll(timeout_ms)."""

    def __init__(self):
        self.callback = None
        self.polls: list[int] = []
        self.arriving: list[list[bytes]] = []

    def open_events(self, callback):
        self.callback = callback

    def poll(self, timeout_ms):
        self.polls.append(timeout_ms)
        batch = self.arriving.pop(0) if self.arriving else []
        for data in batch:
            self.callback(data)
        return len(batch)


def test_ring_buffer_source_batches_in_order():
    sensor = FakeSensor()
    source = RingBufferSource(sensor)
    assert sensor.callback is not None
    sensor.arriving = [[b"a", b"b"], [], [b"c"]]
    assert source.read(100) == [b"a", b"b"]
    assert source.read(0) == []
    assert source.read(7) == [b"c"]
    assert source.read(0) == []
    assert sensor.polls == [100, 0, 7, 0]


def test_ring_buffer_source_keeps_events_that_arrived_between_reads():
    sensor = FakeSensor()
    source = RingBufferSource(sensor)
    sensor.callback(b"early")  # delivered outside a poll: still returned by the next read
    sensor.arriving = [[b"late"]]
    assert source.read(0) == [b"early", b"late"]


class _BurstyKernel:
    """Stands in for SensorBPF's ring buffer: each poll delivers the next burst of events."""

    def __init__(self, bursts):
        self._bursts = list(bursts)
        self._callback = None

    def open_events(self, callback):
        self._callback = callback

    def poll(self, timeout_ms):
        if self._bursts:
            burst = self._bursts.pop(0)
            for data in burst:
                self._callback(data)
            return len(burst)
        time.sleep(timeout_ms / 1000)
        return 0


def test_the_drained_ring_buffer_keeps_order_and_counts_what_overflows(monkeypatch):
    monkeypatch.setattr(source_mod, "BACKLOG_MAX", 5)
    kernel = _BurstyKernel([[b"%d" % i for i in range(8)]])
    drained = source_mod.DrainedRingBuffer(kernel, poll_ms=1)
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 5 and time.monotonic() < deadline:
        got += drained.read(50)
    drained.close()
    assert got == [b"3", b"4", b"5", b"6", b"7"]  # the oldest went first, in order
    assert drained.drops == 3 and drained.backlog == 0


class _TimedKernel(_BurstyKernel):
    """Also notes each poll's timeout: 0 is a busy reader's pass, poll_ms a wait for a wakeup."""

    def __init__(self, bursts):
        super().__init__(bursts)
        self.timeouts = []

    def poll(self, timeout_ms):
        self.timeouts.append(timeout_ms)
        return super().poll(timeout_ms)


def event_of(slot: int) -> bytes:
    hdr = abi.EventHeader(type=abi.EventType.EXEC, pid=7, tid=7, slot=slot)
    return bytes(hdr)


def test_an_agents_events_keep_the_reader_busy_other_processes_execs_do_not():
    """After a pass ending with an agent's event the next pass comes without waiting (sparing the
    agent a wakeup per event); after one of other processes' execs only, the reader waits."""
    kernel = _TimedKernel([[event_of(abi.NO_SLOT), event_of(3)], [event_of(abi.NO_SLOT)], []])
    drained = source_mod.DrainedRingBuffer(kernel, poll_ms=7)
    deadline = time.monotonic() + 5
    while len(kernel.timeouts) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    drained.close()
    assert kernel.timeouts[:4] == [7, 0, 7, 7]

