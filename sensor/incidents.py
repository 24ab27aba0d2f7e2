"""Quarantine incidents: one per quarantined agent run, with its forensic record, kept by the
daemon and served over gRPC (`agent-sensor quarantine list|show|release|kill`)."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Incident:
    id: str
    agent: str
    instance_id: str
    root_pid: int
    rule: str
    reason: str
    alert_id: int
    created_ns: int
    isolation: object              # quarantine.Isolation
    facts: dict                    # quarantine.collect_facts(): processes, open files, sockets
    last_events: list[str]         # the agent's most recent events, oldest first
    state: str = "quarantined"     # quarantined | released | killed
    history: list[str] = field(default_factory=list)


class IncidentStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, Incident] = {}
        self._seq = itertools.count(1)

    def new_id(self) -> str:
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{next(self._seq)}"

    def add(self, incident: Incident) -> None:
        with self._lock:
            self._by_id[incident.id] = incident

    def get(self, incident_id: str) -> Incident | None:
        with self._lock:
            return self._by_id.get(incident_id)

    def all(self) -> list[Incident]:
        with self._lock:
            return sorted(self._by_id.values(), key=lambda i: i.created_ns)

    def open_for(self, root_pid: int) -> Incident | None:
        """The quarantine still holding this agent run, if any."""
        with self._lock:
            return next((i for i in self._by_id.values() if i.root_pid == root_pid and i.state == "quarantined"),
                        None)
