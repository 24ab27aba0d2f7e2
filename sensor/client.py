"""A small client for the agent-sensor gRPC API, used by the CLI and usable by SIEM consumers:

    from sensor.client import SensorClient
    with SensorClient("unix:///run/agent-sensor/sensor.sock") as client:
        for alert in client.alerts(follow=True):
            print(alert.agent.name, alert.reason)
"""

from __future__ import annotations

from typing import Iterator

import os
from pathlib import Path


from ._proto.agent_sensor.v1 import sensor_pb2 as pb
from ._proto.agent_sensor.v1 import sensor_pb2_grpc as pb_grpc
from .export.security import client_channel, read_secret_file

DEFAULT_SERVER = "unix:///run/agent-sensor/sensor.sock"


class RecordStream:
    """The records of a StreamEventBatches call, one at a time; cancel() ends the call."""

    def __init__(self, call):
        self._call = call

    def __iter__(self) -> Iterator[pb.EventRecord]:
        for batch in self._call:
            yield from batch.records

    def cancel(self) -> None:
        self._call.cancel()


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


class SensorClient:
    def __init__(self, server: str = DEFAULT_SERVER, timeout: float = 10.0, ca: Path | None = None,
                 cert: Path | None = None, key: Path | None = None, token: str | None = None):
        """TCP servers are reached over TLS: `ca` checks the server (default: $AGENT_SENSOR_TLS_CA,
        else the system's roots); `cert`/`key` are a client certificate ($AGENT_SENSOR_TLS_CERT,
        $AGENT_SENSOR_TLS_KEY); `token` is sent on every call (default: the contents of
        $AGENT_SENSOR_TOKEN_FILE)."""
        self.server = server
        self.timeout = timeout
        env = os.environ.get
        if token is None and env("AGENT_SENSOR_TOKEN_FILE"):
            token = read_secret_file(Path(env("AGENT_SENSOR_TOKEN_FILE")), "token file").decode().strip()
        self._channel = client_channel(server, ca or _env_path("AGENT_SENSOR_TLS_CA"),
                                       cert or _env_path("AGENT_SENSOR_TLS_CERT"),
                                       key or _env_path("AGENT_SENSOR_TLS_KEY"), token)
        self._stub = pb_grpc.SensorServiceStub(self._channel)

    def __enter__(self) -> SensorClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def status(self) -> pb.Status:
        return self._stub.GetStatus(pb.GetStatusRequest(), timeout=self.timeout)

    def profiles(self) -> list[pb.ProfileSummary]:
        return list(self._stub.ListProfiles(pb.ListProfilesRequest(), timeout=self.timeout).profiles)

    def track(self, pid: int, profile: str, pending_exec: bool = True) -> str:
        request = pb.TrackProcessRequest(pid=pid, profile=profile, pending_exec=pending_exec)
        return self._stub.TrackProcess(request, timeout=self.timeout).instance_id

    def events(self, agents=()) -> "RecordStream":
        """Every event of the agents judged from now on (not stored: see EventRecord.dropped),
        received in batches, given one record at a time."""
        return RecordStream(self._stub.StreamEventBatches(pb.StreamEventsRequest(agents=list(agents)), timeout=None))

    def reload_profiles(self) -> pb.ReloadProfilesResponse:
        return self._stub.ReloadProfiles(pb.ReloadProfilesRequest(), timeout=self.timeout)

    def incidents(self) -> list[pb.Incident]:
        return list(self._stub.ListIncidents(pb.ListIncidentsRequest(), timeout=self.timeout).incidents)

    def incident(self, incident_id: str) -> pb.Incident:
        return self._stub.GetIncident(pb.IncidentRequest(id=incident_id), timeout=self.timeout)

    def release_incident(self, incident_id: str) -> pb.Incident:
        return self._stub.ReleaseIncident(pb.IncidentRequest(id=incident_id), timeout=self.timeout)

    def kill_incident(self, incident_id: str) -> pb.Incident:
        return self._stub.KillIncident(pb.IncidentRequest(id=incident_id), timeout=self.timeout)

    def alerts(self, follow: bool = False, backlog: int = 1000, agents=(), rule_kinds=(),
               since_id: int | None = None) -> Iterator[pb.Alert]:
        """Recent alerts (or, with since_id, every stored alert after it, in order, once), then
        new ones with follow. A consumer that reconnects with the last id it saw misses nothing."""
        request = pb.StreamAlertsRequest(agents=list(agents), rule_kinds=list(rule_kinds),
                                         follow=follow, backlog=backlog, since_id=since_id)
        return self._stub.StreamAlerts(request, timeout=None if follow else self.timeout)
