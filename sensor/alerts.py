"""Alerts: built from a verdict and its context, published on a bus that fans out to consumers.

The protobuf Alert (proto/agent_sensor/v1/sensor.proto) is the one alert schema: the gRPC stream
sends it, `--json` prints its canonical JSON mapping, the log line summarises it. An alert never
carries file contents: only names, addresses and process metadata."""

from __future__ import annotations

import queue
import socket
import threading
import time

from google.protobuf.json_format import MessageToDict

from ._proto.agent_sensor.v1 import sensor_pb2 as pb
from .correlate import RuleKind, Target, Verdict
from .kinds import action_name, rule_name
from .decode import (ConnectEvent, Event, ExecEvent, FileChangeEvent, InterfaceEvent, OpenEvent, wire_text,
                     wire_texts)
from .processes import AgentInstance, ProcessInfo

RULE_KINDS = {
    RuleKind.SECRET_ACCESS: pb.RULE_KIND_SECRET_ACCESS,
    RuleKind.SECRET_TAMPER: pb.RULE_KIND_SECRET_TAMPER,
    RuleKind.FILE_READ: pb.RULE_KIND_FILE_READ,
    RuleKind.FILE_WRITE: pb.RULE_KIND_FILE_WRITE,
    RuleKind.NETWORK_CONNECT: pb.RULE_KIND_NETWORK_CONNECT,
    RuleKind.NETWORK_LISTEN: pb.RULE_KIND_NETWORK_LISTEN,
    RuleKind.EXEC: pb.RULE_KIND_EXEC,
    RuleKind.INTERFACE: pb.RULE_KIND_INTERFACE,
    RuleKind.CONTAINER_RUNTIME: pb.RULE_KIND_CONTAINER_RUNTIME,
    RuleKind.SENSOR_TAMPER: pb.RULE_KIND_SENSOR_TAMPER,
    RuleKind.EVENT_LOSS: pb.RULE_KIND_EVENT_LOSS,
}
ACTION_KINDS = {"alert": pb.ACTION_KIND_ALERT, "kill": pb.ACTION_KIND_KILL,
                "quarantine": pb.ACTION_KIND_QUARANTINE}
FAMILIES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6", socket.AF_UNIX: "unix"}
HISTORY = 10000
CONSUMER_QUEUE = 4096


def wall_ns(ktime_ns: int) -> int:
    """Kernel CLOCK_MONOTONIC stamp -> wall clock, with the offset taken now (follows NTP steps)."""
    return ktime_ns + time.time_ns() - time.monotonic_ns()


def _stamp(ts, ns: int) -> None:
    ts.seconds, ts.nanos = divmod(ns, 1_000_000_000)


def process_message(info: ProcessInfo) -> pb.Process:
    return pb.Process(pid=info.pid, ppid=info.ppid or 0, exe=wire_text(info.exe), cmdline=wire_texts(info.cmdline),
                      user=wire_text(info.user or ""), uid=info.uid or 0, start_ticks=info.start_ticks or 0)


def event_message(event: Event, target: Target | None, target2: Target | None = None,
                  names: tuple[str, ...] = ()) -> pb.Event:
    """What the event names, each name as wire_text writes it (the agent chose its bytes)."""
    if isinstance(event, OpenEvent):
        return pb.Event(type="open", file=pb.FileAccess(
            path=wire_text(event.path), resolved_path=wire_text(target.canonical) if target else "",
            write=event.is_write, flags=event.flags, syscall=event.syscall.name.lower(), truncated=event.truncated,
            result=event.result))
    if isinstance(event, FileChangeEvent):
        return pb.Event(type="file_change", file=pb.FileAccess(
            path=wire_text(event.path), resolved_path=wire_text(target.canonical) if target else "", write=True,
            syscall=event.op.name.lower(), operation=event.op.name.lower(), path2=wire_text(event.path2),
            resolved_path2=wire_text(target2.canonical) if target2 else "", fd=event.fd))
    if isinstance(event, InterfaceEvent):
        return pb.Event(type="interface", interface=pb.InterfaceUse(name=wire_text(event.name),
                                                                    target_pid=event.target_pid))
    if isinstance(event, ConnectEvent):
        return pb.Event(type="connect", network=pb.NetworkConnect(
            family=FAMILIES.get(event.family, str(event.family)), address=wire_text(event.address),
            port=event.port or 0, call=event.call.name.lower(), refused=event.refused, dns_names=wire_texts(names)))
    if isinstance(event, ExecEvent):
        return pb.Event(type="exec", exec=pb.ProgramExec(
            filename=wire_text(event.filename), resolved_path=wire_text(target.canonical) if target else "",
            argv=wire_texts(event.argv)))
    return pb.Event(type=event.kind)


def build_alert(alert_id: int, verdict: Verdict, event: Event, target: Target | None,
                agent: AgentInstance, process: ProcessInfo, target2: Target | None = None) -> pb.Alert:
    """The alert as decided; its ancestry is added after the action (add_ancestry)."""
    alert = pb.Alert(
        id=alert_id, hostname=socket.gethostname(),
        agent=pb.Agent(name=agent.profile.name, instance_id=agent.id, root_pid=agent.root_pid,
                       profile_file=agent.profile.source),
        rule=pb.Rule(kind=RULE_KINDS[verdict.kind], name=verdict.rule, pattern=verdict.pattern),
        reason=wire_text(verdict.reason),
        action=pb.Action(kind=ACTION_KINDS[verdict.action]),
        process=process_message(process),
        event=event_message(event, target, target2, verdict.names),
    )
    alert.timing.kernel_ktime_ns = event.hdr.ktime_ns
    _stamp(alert.timing.event_time, wall_ns(event.hdr.ktime_ns))
    _stamp(alert.timing.decided_time, time.time_ns())
    return alert


def add_ancestry(alert: pb.Alert, ancestry: list[ProcessInfo]) -> None:
    alert.ancestry.extend(process_message(p) for p in ancestry)


def complete_action(alert: pb.Alert, completed: bool, result: str, pids=(), in_kernel: bool = False) -> None:
    alert.action.completed = completed
    alert.action.result = result
    alert.action.signalled_pids.extend(pids)
    alert.action.in_kernel = in_kernel
    _stamp(alert.timing.action_time, time.time_ns())


def alert_to_dict(alert: pb.Alert) -> dict:
    return MessageToDict(alert, preserving_proto_field_name=True)


def log_line(alert: pb.Alert) -> str:
    return (f"ALERT #{alert.id} agent={alert.agent.name} pid={alert.process.pid} rule={rule_name(alert.rule.kind)} "
            f"action={action_name(alert.action.kind)} ({alert.action.result or 'pending'}): {alert.reason}")


class Subscription:
    """One consumer's bounded queue: a slow consumer never slows the sensor or other consumers.
    When its queue overflows it is marked, and its stream catches up from the spool."""

    def __init__(self, wants):
        self.wants = wants
        self.queue: queue.Queue[pb.Alert] = queue.Queue(maxsize=CONSUMER_QUEUE)
        self.overflowed = False
        self.overflows = 0  # times it fell behind (and caught up from the spool)

    def offer(self, alert: pb.Alert) -> None:
        if not self.wants(alert) or self.overflowed:
            return
        try:
            self.queue.put_nowait(alert)
        except queue.Full:
            self.overflowed = True
            self.overflows += 1


class AlertBus:
    """Alerts get their id from the spool (sensor/export/spool.py), are stored there before the
    action (and again after it), and only then are offered to consumers."""

    def __init__(self, spool) -> None:
        self.spool = spool
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []
        self.published = 0
        self.catch_ups = 0
        self.observers: list = []  # called with each published alert (metrics)
        self.last_published = spool.last_id()

    def next_id(self) -> int:
        return self.spool.reserve()

    def stage(self, alert: pb.Alert) -> None:
        """Stored before the action is taken: a daemon killed mid-action still has the alert."""
        self.spool.store(alert)

    def publish(self, alert: pb.Alert) -> None:
        self.spool.store(alert)
        with self._lock:
            self.published += 1
            self.last_published = max(self.last_published, alert.id)
            for sub in self._subscribers:
                sub.offer(alert)
        for observe in self.observers:
            observe(alert)

    @property
    def consumers(self) -> int:
        return len(self._subscribers)

    def subscribe(self, wants, backlog: int, since_id: int | None = None) -> tuple[Subscription, list[pb.Alert]]:
        """Atomically: the alerts already published that the consumer wants (after since_id; or
        the last `backlog` of them), and a subscription for every later one."""
        with self._lock:
            sub = Subscription(wants)
            self._subscribers.append(sub)
            until = self.last_published
        if since_id is not None:
            return sub, [a for a in self.spool.after(since_id, until) if wants(a)]
        recent = [a for a in self.spool.after(max(0, until - HISTORY), until) if wants(a)]
        return sub, recent[-backlog:] if backlog else []

    def catch_up(self, sub: Subscription, last_sent: int) -> list[pb.Alert]:
        """An overflowed subscription's missed alerts, from the spool; it is live again after."""
        with self._lock:
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.overflowed = False
            self.catch_ups += 1
            until = self.last_published
        return [a for a in self.spool.after(last_sent, until) if sub.wants(a)]

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)
