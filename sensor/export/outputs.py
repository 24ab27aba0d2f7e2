"""Alert outputs besides gRPC, any number together (`--output`, repeatable):

    stdout[,format=F]
    jsonl:PATH[,format=F][,max_mb=N][,keep=K]   JSON lines, rotated by size (PATH.1 ... PATH.K)
    syslog:udp://HOST:PORT | syslog:tcp://HOST:PORT | syslog:unix:/dev/log [,format=F]   RFC 5424

F is `native` (the proto's JSON mapping, as `alerts --json`) or `ocsf` (OCSF Detection Finding).
Each output has its own thread and bounded queue: a slow one never holds up the sensor. What
an output could not take is counted and logged; every alert is in the spool anyway."""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from pathlib import Path

import orjson

from .._proto.agent_sensor.v1 import sensor_pb2 as pb
from ..alerts import alert_to_dict
from ..thread_names import name_os_thread
from .ocsf import to_ocsf

log = logging.getLogger("agent-sensor")
QUEUE = 10000
FORMATS = {"native": alert_to_dict, "ocsf": to_ocsf}
SYSLOG_FACILITY = 16  # local0
SYSLOG_SEVERITY = {pb.ACTION_KIND_ALERT: 4, pb.ACTION_KIND_KILL: 3, pb.ACTION_KIND_QUARANTINE: 3}  # warning, err


class OutputError(ValueError):
    pass


class Output:
    def __init__(self, name: str, fmt: str):
        if fmt not in FORMATS:
            raise OutputError(f"{name}: format {fmt!r}: one of {', '.join(FORMATS)}")
        self.name, self.format = name, FORMATS[fmt]
        self.dropped = 0
        self._queue: queue.Queue[pb.Alert | None] = queue.Queue(QUEUE)
        self._thread = threading.Thread(target=self._run, name=f"output {name}", daemon=True)
        self._thread.start()

    def __call__(self, alert: pb.Alert) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.dropped += 1
            log.error("output %s: queue full, alert #%d not written (%d in all; it is in the spool)",
                      self.name, alert.id, self.dropped)

    def _run(self) -> None:
        name_os_thread()
        while (alert := self._queue.get()) is not None:
            try:
                self.write(alert, orjson.dumps(self.format(alert)))
            except OSError as exc:
                self.dropped += 1
                log.error("output %s: alert #%d not written: %s", self.name, alert.id, exc)

    def write(self, alert: pb.Alert, record: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(10)


class Stdout(Output):
    def write(self, alert, record):
        os.write(1, record + b"\n")


class JsonLines(Output):
    def __init__(self, path: Path, fmt: str, max_bytes: int, keep: int):
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(f"jsonl:{path}", fmt)

    def write(self, alert, record):
        line = record + b"\n"
        if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
            self._rotate()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        """PATH -> PATH.1 -> ... -> PATH.keep (the oldest is removed)."""
        for n in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.rename(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))


class Syslog(Output):
    """RFC 5424 messages, the record as MSG: UDP datagrams, TCP with octet counting (RFC 6587),
    or datagrams to a unix socket."""

    def __init__(self, target: str, fmt: str):
        self.target = target
        if target.startswith("unix:"):
            self.family, self.kind, self.address = socket.AF_UNIX, socket.SOCK_DGRAM, target[len("unix:"):]
        elif target.startswith(("udp://", "tcp://")):
            host, _, port = target[6:].rpartition(":")
            if not host or not port.isdigit():
                raise OutputError(f"syslog:{target}: write syslog:udp://HOST:PORT or syslog:tcp://HOST:PORT")
            self.family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
            self.kind = socket.SOCK_DGRAM if target.startswith("udp") else socket.SOCK_STREAM
            self.address = (host.strip("[]"), int(port))
        else:
            raise OutputError(f"syslog:{target}: udp://HOST:PORT, tcp://HOST:PORT or unix:PATH")
        self._sock: socket.socket | None = None
        self._hostname = socket.gethostname()
        super().__init__(f"syslog:{target}", fmt)

    def _message(self, alert: pb.Alert, record: bytes) -> bytes:
        pri = SYSLOG_FACILITY * 8 + SYSLOG_SEVERITY.get(alert.action.kind, 4)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(alert.timing.event_time.seconds)) + \
            f".{alert.timing.event_time.nanos // 1000:06d}Z"
        return f"<{pri}>1 {stamp} {self._hostname} agent-sensor {os.getpid()} alert - ".encode() + record

    def write(self, alert, record):
        message = self._message(alert, record)
        for attempt in (1, 2):  # a TCP peer that went away gets one reconnect
            try:
                if self._sock is None:
                    self._sock = socket.socket(self.family, self.kind)
                    if self.kind == socket.SOCK_STREAM:
                        self._sock.connect(self.address)
                if self.kind == socket.SOCK_STREAM:
                    self._sock.sendall(f"{len(message)} ".encode() + message)
                else:
                    self._sock.sendto(message, self.address)
                return
            except OSError:
                if self._sock is not None:
                    self._sock.close()
                self._sock = None
                if attempt == 2:
                    raise


def parse_output(spec: str) -> Output:
    """One --output value (see the module doc)."""
    head, *options = spec.split(",")
    opts = dict(o.split("=", 1) if "=" in o else (o, "") for o in options)
    fmt = opts.pop("format", "native")
    if head == "stdout":
        make = lambda: Stdout("stdout", fmt)  # noqa: E731
    elif head.startswith("jsonl:"):
        try:
            max_bytes = int(float(opts.pop("max_mb", "100")) * 1024 * 1024)
            keep = int(opts.pop("keep", "5"))
        except ValueError:
            raise OutputError(f"{spec}: max_mb and keep are numbers") from None
        make = lambda: JsonLines(Path(head[len("jsonl:"):]), fmt, max_bytes, max(1, keep))  # noqa: E731
    elif head.startswith("syslog:"):
        make = lambda: Syslog(head[len("syslog:"):], fmt)  # noqa: E731
    else:
        raise OutputError(f"{spec}: an output is stdout, jsonl:PATH or syslog:udp|tcp://HOST:PORT|unix:PATH")
    if opts:
        raise OutputError(f"{spec}: unknown option {', '.join(opts)} (format, and for jsonl max_mb and keep)")
    return make()
