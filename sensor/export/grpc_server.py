"""The gRPC API (proto/agent_sensor/v1/sensor.proto), with standard health checking and server
reflection so generic clients (grpcurl, grpc_cli) can discover and call it.

The default address is a unix socket in a root-only directory: the socket file itself is 0600."""

from __future__ import annotations

import os
import queue
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .._proto.agent_sensor.v1 import sensor_pb2 as pb
from .._proto.agent_sensor.v1 import sensor_pb2_grpc as pb_grpc
from ..decode import endpoint, wire_text, wire_texts
from ..pipeline import TrackError
from ..thread_names import name_os_thread
from .security import TcpSecurity

SERVICE = pb.DESCRIPTOR.services_by_name["SensorService"].full_name
MAX_BACKLOG = 10000
STREAM_POLL_S = 0.5  # how often a follower notices that its client went away or the server stops
# Records per StreamEventBatches message, at most (event_feed.BATCH_BYTES bounds its size too).
# A stream sends a batch event_feed.GATHER_S after its first record came, so at a high rate,
# rather than sending a full batch at once and coming straight back for the GIL the judge holds
# (1000 here did that at 100,000 events/s and fell behind, the consumer's queue dropping
# records), it lets go of the GIL while the next batch gathers.
EVENT_BATCH_MAX = 8192


class Servicer(pb_grpc.SensorServiceServicer):
    def __init__(self, daemon):
        self.daemon = daemon

    def _agent_names(self, agents, context) -> set[str]:
        """A stream's agent filter: loaded profile names, else INVALID_ARGUMENT."""
        names = set(agents)
        loaded = {p.name for p in self.daemon.pipeline.profiles}
        if names - loaded:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"no loaded profile named {', '.join(sorted(names - loaded))} "
                          f"(loaded: {', '.join(sorted(loaded)) or 'none'})")
        return names

    def StreamAlerts(self, request, context):
        kinds = set(request.rule_kinds)
        known_kinds = set(pb.RuleKind.values()) - {pb.RULE_KIND_UNSPECIFIED}
        if kinds - known_kinds:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unknown rule kinds {sorted(kinds - known_kinds)}; known: "
                          f"{', '.join(pb.RuleKind.Name(k) for k in sorted(known_kinds))}")
        names = self._agent_names(request.agents, context)
        if request.backlog > MAX_BACKLOG:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"backlog is at most {MAX_BACKLOG}")

        def wants(alert: pb.Alert) -> bool:
            return (not names or alert.agent.name in names) and (not kinds or alert.rule.kind in kinds)

        since = request.since_id if request.HasField("since_id") else None
        bus = self.daemon.bus
        sub, recent = bus.subscribe(wants, request.backlog, since)
        last = since or 0
        try:
            for alert in recent:
                yield alert
                last = alert.id
            while request.follow and context.is_active() and not self.daemon.stopping.is_set():
                if sub.overflowed:  # this consumer fell behind: serve what it missed from the spool
                    for alert in bus.catch_up(sub, last):
                        yield alert
                        last = alert.id
                    continue
                try:
                    alert = sub.queue.get(timeout=STREAM_POLL_S)
                except queue.Empty:
                    continue
                if alert.id > last:  # never twice, whatever the order of catch-up and queue
                    yield alert
                    last = alert.id
        finally:
            bus.unsubscribe(sub)

    # The two event streams send the bytes the event feed wrote (PRE_ENCODED): no message objects.

    def StreamEvents(self, request, context):
        yield from self._event_messages(request, context, 1, bare=True)

    def StreamEventBatches(self, request, context):
        yield from self._event_messages(request, context, EVENT_BATCH_MAX)

    def _event_messages(self, request, context, most: int, bare: bool = False):
        """EventBatches' bytes, of up to `most` records (bare: EventRecords'): the first waited
        for, the rest whatever is ready."""
        names = self._agent_names(request.agents, context)
        feed = self.daemon.pipeline.feed
        consumer = feed.subscribe(names)
        try:
            while context.is_active() and not self.daemon.stopping.is_set():
                message = consumer.take(most, STREAM_POLL_S, bare)
                if message is not None:
                    yield message
        finally:
            feed.unsubscribe(consumer)

    def ReloadProfiles(self, request, context):
        return self.daemon.reload()

    def GetStatus(self, request, context):
        return self.daemon.status()

    def ListProfiles(self, request, context):
        return pb.ListProfilesResponse(profiles=self.daemon.profile_summaries())

    def ListIncidents(self, request, context):
        return pb.ListIncidentsResponse(incidents=[incident_message(i) for i in self.daemon.pipeline.incidents.all()])

    def GetIncident(self, request, context):
        incident = self.daemon.pipeline.incidents.get(request.id)
        if incident is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no incident {request.id!r}")
        return incident_message(incident)

    def ReleaseIncident(self, request, context):
        return self._incident_action(self.daemon.pipeline.release_incident, request, context)

    def KillIncident(self, request, context):
        return self._incident_action(self.daemon.pipeline.kill_incident, request, context)

    def _incident_action(self, action, request, context):
        try:
            return incident_message(action(request.id))
        except TrackError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def TrackProcess(self, request, context):
        if request.pid <= 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "pid must be a positive process id")
        try:
            agent = self.daemon.pipeline.track(request.pid, request.profile, request.pending_exec)
        except TrackError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.TrackProcessResponse(instance_id=agent.id)


def _endpoint(end: dict | None) -> str:
    if not end:
        return ""
    return endpoint(end.get("address", ""), end.get("port"))


def _incident_process(facts: dict) -> pb.IncidentProcess:
    process = pb.Process(pid=facts["pid"], ppid=facts.get("ppid") or 0, exe=wire_text(facts.get("exe") or ""),
                         cmdline=wire_texts(facts.get("cmdline") or ()), user=wire_text(facts.get("user") or ""),
                         uid=facts.get("uid") or 0, start_ticks=facts.get("start_ticks") or 0)
    files = [pb.OpenFile(fd=f["fd"], target=wire_text(f["target"])) for f in facts.get("open_files", [])]
    sockets = [pb.OpenSocket(family=s.get("family") or "", protocol=s.get("protocol") or "",
                             state=str(s.get("state") or ""),
                             local=wire_text(_endpoint(s.get("local")) or s.get("path") or ""),
                             remote=_endpoint(s.get("remote")), inode=s.get("inode") or 0)
               for s in facts.get("sockets", [])]
    return pb.IncidentProcess(process=process, state=facts.get("state") or "", files=files, sockets=sockets)


def incident_message(incident) -> pb.Incident:
    iso = incident.isolation
    message = pb.Incident(
        id=incident.id, agent=incident.agent, instance_id=incident.instance_id, root_pid=incident.root_pid,
        rule=incident.rule, reason=incident.reason, alert_id=incident.alert_id, state=incident.state,
        method=iso.method, cgroup=iso.cgroup or "", frozen=iso.frozen, network_cut=iso.network_cut,
        detail=iso.detail, processes=[_incident_process(p) for p in incident.facts.get("processes", [])],
        last_events=wire_texts(incident.last_events), history=wire_texts(incident.history))
    message.created.FromNanoseconds(incident.created_ns)
    return message


def _prepare_unix_socket(address: str) -> None:
    path = Path(address.removeprefix("unix://").removeprefix("unix:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    if path.exists() or path.is_symlink():
        path.unlink()  # left by a daemon that did not stop cleanly


def _restrict_unix_socket(address: str) -> None:
    os.chmod(address.removeprefix("unix://").removeprefix("unix:"), 0o600)


class Servers:
    """The API's servers: one for unix sockets (root-only by permissions), one for TCP (TLS,
    and the token if configured). Stopped together."""

    def __init__(self, servers: list[grpc.Server]):
        self.servers = servers

    def stop(self, grace: float) -> None:
        for server in self.servers:
            server.stop(grace).wait()


# Methods whose handlers yield the message's bytes, already encoded (sensor/_event_wire.c).
PRE_ENCODED = ("StreamEvents", "StreamEventBatches")


class _Registration:
    """Stands in for the server while the generated code registers the service: keeps its
    method handlers, for _add_sensor_service to register them changed."""

    def add_generic_rpc_handlers(self, generic_handlers) -> None:
        pass  # the same handlers as below, for the generic lookup

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.handlers = handlers


def _add_sensor_service(servicer: Servicer, server: grpc.Server) -> None:
    """The generated registration (sensor_pb2_grpc), except that PRE_ENCODED methods' messages
    are sent as they are: no serializer."""
    registration = _Registration()
    pb_grpc.add_SensorServiceServicer_to_server(servicer, registration)
    handlers = {name: handler._replace(response_serializer=None) if name in PRE_ENCODED else handler
                for name, handler in registration.handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def _serve(daemon, interceptors=()) -> tuple[grpc.Server, health.HealthServicer]:
    executor = futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="grpc", initializer=name_os_thread)
    server = grpc.server(executor, interceptors=list(interceptors))
    _add_sensor_service(Servicer(daemon), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    return server, health_servicer


def start_server(daemon, addresses: list[str], tcp_security: TcpSecurity | None = None) -> Servers:
    """Serve the API on every address; a TCP address needs tcp_security (TLS)."""
    unix = [a for a in addresses if a.startswith("unix:")]
    tcp = [a for a in addresses if not a.startswith("unix:")]
    if tcp and tcp_security is None:
        raise OSError(f"{', '.join(tcp)}: TCP is served only with TLS: give --tls-cert and --tls-key "
                      "(and --tls-client-ca and/or --token-file to authenticate clients)")
    started = []
    for group, secure in ((unix, False), (tcp, True)):
        if not group:
            continue
        server, health_servicer = _serve(daemon, tcp_security.interceptors() if secure else ())
        for address in group:
            if not secure:
                _prepare_unix_socket(address)
            port = server.add_secure_port(address, tcp_security.credentials()) if secure \
                else server.add_insecure_port(address)
            if port == 0:
                raise OSError(f"cannot listen on {address}")
        server.start()
        for address in group:
            if not secure:
                _restrict_unix_socket(address)
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
        started.append(server)
    return Servers(started)
