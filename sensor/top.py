"""`agent-sensor top`: a live view of a daemon, redrawn every few seconds: tracked agents with
their processes and event rates, the latest alerts, and open quarantine incidents with their
process trees. Reads only the gRPC API."""

from __future__ import annotations

import time
from collections import Counter

from ._proto.agent_sensor.v1 import sensor_pb2 as pb
from .alerts import log_line

CLEAR = "\x1b[H\x1b[2J"
ALERTS_SHOWN = 8


def frame(client, previous: dict[str, int], seconds: float) -> tuple[list[str], dict[str, int]]:
    """The lines of one view, and the per-agent event counts (for the next frame's rates)."""
    status = client.status()
    processes = Counter(t.instance_id for t in status.tracked)
    alerts = list(client.alerts(backlog=200))
    alerts_by_agent = Counter(a.agent.instance_id for a in alerts)
    lines = [f"agent-sensor {status.version} on {status.hostname}: {len(status.events_by_agent)} agent run(s), "
             f"{status.events_processed} events judged, {status.alerts} alerts, "
             f"backlog {status.events_backlog}, lost {sum(status.ring_buffer_drops.values()) + status.backlog_drops}",
             "",
             f"{'AGENT RUN':40} {'PROCS':>5} {'EVENTS':>9} {'EV/S':>8} {'LOST':>6} {'ALERTS':>6}"]
    for instance, events in sorted(status.events_by_agent.items()):
        rate = (events - previous.get(instance, events)) / seconds if seconds else 0.0
        lines.append(f"{instance:40} {processes.get(instance, 0):>5} {events:>9} {rate:>8.1f} "
                     f"{status.lost_by_agent.get(instance, 0):>6} {alerts_by_agent.get(instance, 0):>6}")
    lines += ["", "LATEST ALERTS"] + ([f"  {log_line(a)}" for a in alerts[-ALERTS_SHOWN:]] or ["  none"])
    incidents = [i for i in client.incidents() if i.state == "quarantined"]
    lines += ["", "QUARANTINED"]
    if not incidents:
        lines.append("  none")
    for summary in incidents:
        lines += incident_tree(client.incident(summary.id))
    return lines, dict(status.events_by_agent)


def process_tree(inc: pb.Incident) -> list[tuple[str, object]]:
    """The incident's processes, parents before their children: (indent, process) pairs, the
    indent four spaces plus two per level."""
    by_pid = {p.process.pid: p for p in inc.processes}
    children: dict[int, list[int]] = {}
    for p in inc.processes:
        children.setdefault(p.process.ppid if p.process.ppid in by_pid else 0, []).append(p.process.pid)
    out = []

    def walk(pid: int, depth: int) -> None:
        out.append((f"    {'  ' * depth}", by_pid[pid]))
        for child in sorted(children.get(pid, [])):
            walk(child, depth + 1)

    for root in sorted(children.get(0, [])):
        walk(root, 0)
    return out


def process_line(indent: str, p) -> str:
    return f"{indent}{p.process.pid} [{p.state}] {' '.join(p.process.cmdline) or p.process.exe}"


def incident_tree(inc: pb.Incident) -> list[str]:
    return [f"  {inc.id} {inc.agent} (root {inc.root_pid}) {inc.rule}: {inc.reason}",
            *(process_line(indent, p) for indent, p in process_tree(inc))]


def run(client, interval: float, once: bool, echo) -> None:
    previous: dict[str, int] = {}
    last = time.monotonic()
    while True:
        now = time.monotonic()
        lines, previous = frame(client, previous, now - last)
        last = now
        echo(("" if once else CLEAR) + "\n".join(lines))
        if once:
            return
        time.sleep(interval)
