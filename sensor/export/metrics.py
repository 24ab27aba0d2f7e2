"""Prometheus metrics (`agent-sensor run --metrics HOST:PORT`, GET /metrics): what the kernel
sent and lost, what user space judged, alerts by agent and rule, actions, how long decisions
and actions took from the syscall, and who is listening."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .._proto.agent_sensor.v1 import sensor_pb2 as pb
from ..kinds import action_name, rule_name

# Seconds from the syscall: in-kernel actions are microseconds, user-space ones milliseconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def _seconds(ts) -> float:
    return ts.seconds + ts.nanos / 1e9


class _DaemonCollector:
    """Read at each scrape: the kernel's counters and the daemon's gauges."""

    def __init__(self, daemon):
        self.daemon = daemon

    def collect(self):
        emitted, lost = self.daemon.bpf.counters()
        sent = CounterMetricFamily("agent_sensor_kernel_events", "Events the kernel sent, by type", labels=["type"])
        dropped = CounterMetricFamily("agent_sensor_ring_buffer_lost",
                                      "Events the ring buffer had no room for, by type", labels=["type"])
        for kind in emitted:
            sent.add_metric([kind], emitted[kind])
            dropped.add_metric([kind], lost[kind])
        yield sent
        yield dropped
        pipeline, source = self.daemon.pipeline, self.daemon.source
        yield CounterMetricFamily("agent_sensor_events_processed", "Events user space decoded and judged",
                                  value=pipeline.counters.events)
        yield CounterMetricFamily("agent_sensor_open_repeats_counted",
                                  "Repeated opens the kernel counted instead of sending", value=pipeline.repeats.counted)
        yield CounterMetricFamily("agent_sensor_backlog_dropped",
                                  "Events dropped because the user-space backlog was full", value=source.drops)
        yield GaugeMetricFamily("agent_sensor_backlog_events", "Events read from the ring buffer, not yet judged",
                                value=source.backlog)
        yield GaugeMetricFamily("agent_sensor_consumers", "gRPC alert streams connected",
                                value=self.daemon.bus.consumers)
        yield GaugeMetricFamily("agent_sensor_agent_runs", "Agent runs being watched", value=len(pipeline.instances))


class Metrics:
    def __init__(self, daemon):
        self.registry = CollectorRegistry()
        self.registry.register(_DaemonCollector(daemon))
        self.alerts = Counter("agent_sensor_alerts", "Alerts raised, by agent (profile) and rule kind",
                              ["agent", "rule"], registry=self.registry)
        self.actions = Counter("agent_sensor_actions", "Actions taken, by kind and whether the kernel acted",
                               ["action", "in_kernel"], registry=self.registry)
        self.decision = Histogram("agent_sensor_decision_seconds", "From the syscall to user space's verdict",
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self.action = Histogram("agent_sensor_action_seconds", "From the syscall to the action completed",
                                buckets=LATENCY_BUCKETS, registry=self.registry)

    def observe(self, alert: pb.Alert) -> None:
        """An alert as published (its action done)."""
        self.alerts.labels(alert.agent.name, rule_name(alert.rule.kind)).inc()
        self.actions.labels(action_name(alert.action.kind), str(alert.action.in_kernel).lower()).inc()
        event = _seconds(alert.timing.event_time)
        if alert.timing.HasField("decided_time"):
            self.decision.observe(max(0.0, _seconds(alert.timing.decided_time) - event))
        if alert.timing.HasField("action_time"):
            self.action.observe(max(0.0, _seconds(alert.timing.action_time) - event))

    def serve(self, address: str):
        """HOST:PORT; returns the HTTP server (stop it with shutdown())."""
        host, _, port = address.rpartition(":")
        server, _ = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=self.registry)
        return server
