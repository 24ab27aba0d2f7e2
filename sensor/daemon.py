"""`agent-sensor run`: ordered start-up, the event loop, and teardown.

Start-up order matters: profiles are validated before anything touches the kernel; BPF is
attached before the rescan, so a process forked during the rescan inherits tracking in the kernel;
the API opens last, when status has something true to say."""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from . import __version__, probes
from ._proto.agent_sensor.v1 import sensor_pb2 as pb
from .alerts import AlertBus
from .bpf_loader import LoadError, SensorBPF
from .bpf_object import DEFAULT_CACHE
from .decode import wire_text
from .export.security import SecurityError, TcpSecurity
from .export.spool import AlertSpool, Retention, SpoolError
from .pipeline import Pipeline, ReloadError, kernel_exec_paths
from .profiles import ProfileError, load_profiles, ownership_problems
from .source import DrainedRingBuffer

log = logging.getLogger("agent-sensor")
DEFAULT_LISTEN = "unix:///run/agent-sensor/sensor.sock"
DEFAULT_SPOOL = Path("/var/lib/agent-sensor/alerts.db")
POLL_MS = 100
DRAIN_MS = 20  # the longest an event sent without a wakeup (another process's exec) waits
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
RELOAD_SIGNAL = signal.SIGHUP
PROTECT_REFRESH_S = 5.0
LOSS_CHECK_S = 1.0  # how soon an event_loss alert follows the loss, and counted repeats are reported


def block_stop_signals() -> None:
    """Before any thread starts: stop and reload signals stay pending until Daemon.run takes them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS | {RELOAD_SIGNAL})


class StartupError(RuntimeError):
    """A reason the daemon cannot start, worded for the operator."""


class Daemon:
    def __init__(self, profile_paths: list[str], listen: list[str], audit_only: bool = False,
                 spool_path: Path = DEFAULT_SPOOL, retention: Retention = Retention(),
                 tcp_security: TcpSecurity | None = None, metrics_address: str | None = None,
                 outputs: list[str] = (), bpf_cache: Path | None = DEFAULT_CACHE):
        self.profile_paths = profile_paths
        self.bpf_cache = bpf_cache
        self.audit_only = audit_only
        self.listen = listen or [DEFAULT_LISTEN]
        self.spool_path = spool_path
        self.tcp_security = tcp_security
        self.metrics_address = metrics_address
        self.output_specs = list(outputs)
        self.outputs: list = []
        self.metrics_server = None
        self.retention = retention
        self.bus: AlertBus | None = None
        self.stopping = threading.Event()
        self.started = time.time_ns()
        self.capabilities: list[probes.Capability] = []
        self.bpf: SensorBPF | None = None
        self.quarantine = None
        self.pipeline: Pipeline | None = None
        self.source: DrainedRingBuffer | None = None
        self.server = None

    # -- start-up --------------------------------------------------------------------------
    def start(self) -> None:
        unsafe = ownership_problems(self.profile_paths)
        if unsafe:
            raise StartupError("profiles others could change, nothing started:\n" + "\n".join(map(str, unsafe)))
        try:
            profiles = load_profiles(self.profile_paths)
        except ProfileError as exc:
            raise StartupError(f"invalid profiles, nothing started:\n{exc}") from exc
        try:
            self.bus = AlertBus(AlertSpool(self.spool_path, self.retention))
        except SpoolError as exc:
            raise StartupError(f"{exc}: give another place with --spool") from exc
        self.capabilities = probes.probe_all()
        missing = [c for c in self.capabilities if c.name in ("root", "bcc", "tracefs", "kernel_headers", "ring_buffer")
                   and not c.available]
        for cap in self.capabilities:
            (log.info if cap.available else log.warning)("capability %-20s %s: %s", cap.name,
                                                         "yes" if cap.available else "NO", cap.detail)
        if missing:
            raise StartupError("cannot start: " + "; ".join(f"{c.name}: {c.detail}" for c in missing))
        send_signal = next(c.available for c in self.capabilities if c.name == "bpf_send_signal")
        if not send_signal:
            log.warning("no bpf_send_signal: nothing is enforced in the kernel; kills and quarantines "
                        "come from user space, after the syscall")
        self.bpf = SensorBPF(send_signal=send_signal, cache_dir=self.bpf_cache)
        try:
            self.capabilities += self.bpf.load()
        except LoadError as exc:
            raise StartupError(str(exc)) from exc
        self.bpf.protect_self(enforce=not self.audit_only)
        for cap in self.capabilities:
            if cap.name.startswith("tracepoint") and not cap.available:
                log.warning("%s: %s", cap.name, cap.detail)
        from .quarantine import Quarantine
        self.quarantine = Quarantine(bpf_cache=self.bpf_cache)
        available, why = self.quarantine.available
        if available:
            available, why = self.quarantine.prepare()  # compile now, not during the first incident
        if not available:
            log.warning("quarantine degraded: %s", why)
        # Without bpf_send_signal the kernel cannot act: policies compile as audit-only there.
        self.pipeline = Pipeline(profiles, self.bpf, self.bus, self.audit_only, self.quarantine,
                                 kernel_enforcement=send_signal)
        self.source = DrainedRingBuffer(self.bpf, DRAIN_MS)
        spool = self.spool_path
        self.pipeline.protect_sensor_files(
            [Path(__file__).parent, self.bpf.bpf_dir, Path(sys.prefix) / "bin" / "agent-sensor",
             *(Path(p) for p in self.profile_paths), *([self.bpf_cache] if self.bpf_cache else []),
             *(spool.with_name(spool.name + suffix) for suffix in ("", "-wal", "-shm", "-journal"))])
        try:
            policies = self.pipeline.install_kernel_policies()
        except LoadError as exc:
            raise StartupError(str(exc)) from exc
        for name, policy in policies.items():
            log.info("profile %s: the kernel enforces %s", name,
                     ", ".join(f.name.lower() for f in type(policy.flags) if f in policy.flags) or "nothing"
                     + (" (audit-only)" if self.audit_only else ""))
            for reason in policy.user_space_only:
                log.info("profile %s: user space only: %s", name, reason)
        if self.audit_only:
            log.warning("audit-only: every action is reported as what would have been done; nothing is enforced")
        paths = self.pipeline.install_exec_matches()
        log.info("loaded %d profile(s) from %s; kernel exec matches: %s", len(profiles),
                 ", ".join(self.profile_paths), ", ".join(paths) or "none")
        for agent in self.pipeline.rescan():
            log.info("rescan: agent %s already running", agent.id)
        from .export.grpc_server import start_server  # grpc is heavy; the CLI's check path skips it
        try:
            self.server = start_server(self, self.listen, self.tcp_security)
        except (OSError, RuntimeError, SecurityError) as exc:
            raise StartupError(f"cannot open the API on {', '.join(self.listen)}: {exc}") from exc
        security = self.tcp_security
        if security is not None and security.client_ca is None and security.token_file is None and any(
                not a.startswith("unix:") for a in self.listen):
            log.warning("API on TCP with TLS but no client authentication (no --tls-client-ca, no --token-file): "
                        "anyone who reaches the port can read alerts and track processes")
        from .export.outputs import OutputError, parse_output
        try:
            self.outputs = [parse_output(spec) for spec in self.output_specs]
        except (OutputError, OSError) as exc:
            raise StartupError(f"--output {exc}") from exc
        self.bus.observers.extend(self.outputs)
        if self.metrics_address:
            from .export.metrics import Metrics  # prometheus-client: only when asked for
            metrics = Metrics(self)
            self.bus.observers.append(metrics.observe)
            try:
                self.metrics_server = metrics.serve(self.metrics_address)
            except (OSError, ValueError) as exc:
                raise StartupError(f"cannot serve metrics on {self.metrics_address}: {exc}") from exc
            log.info("Prometheus metrics on http://%s/metrics", self.metrics_address)
        self.bpf.protect_self(enforce=not self.audit_only)  # the API's threads too
        log.info("agent-sensor %s running; API on %s", __version__, ", ".join(self.listen))

    def run(self) -> None:
        """Judge events until a stop signal (blocked in every thread by block_stop_signals, so it
        is taken here with its sender: an agent's SIGTERM does not stop the sensor)."""
        protected_at = loss_checked_at = time.monotonic()
        while not self.stopping.is_set():
            self.pipeline.handle(self.source.read(POLL_MS))
            info = signal.sigtimedwait(STOP_SIGNALS | {RELOAD_SIGNAL}, 0)
            if info is not None:
                if self.bpf.aimed_at_sensor(info.si_pid):
                    log.warning("pid %d, a tracked agent, sent signal %d to the sensor: ignored", info.si_pid,
                                info.si_signo)
                elif info.si_signo == RELOAD_SIGNAL:
                    self.reload()
                else:
                    log.info("signal %d from pid %d: stopping", info.si_signo, info.si_pid)
                    self.stopping.set()
            if time.monotonic() - protected_at > PROTECT_REFRESH_S:  # threads come and go
                self.bpf.protect_self(enforce=not self.audit_only)
                protected_at = time.monotonic()
            if time.monotonic() - loss_checked_at > LOSS_CHECK_S:  # map walks: not after every batch
                self.pipeline.check_event_loss()
                self.pipeline.report_repeats()
                loss_checked_at = time.monotonic()
        while batch := self.source.read(0):  # what was read before the stop is still judged
            self.pipeline.handle(batch)
        self.pipeline.report_repeats(final=True)

    def reload(self) -> pb.ReloadProfilesResponse:
        """Load the profile paths again; switch to them only if every one is valid (and safe)."""
        unsafe = ownership_problems(self.profile_paths)
        if unsafe:
            errors = "profiles others could change:\n" + "\n".join(map(str, unsafe))
        else:
            try:
                profiles = load_profiles(self.profile_paths)
                added, kept, removed = self.pipeline.reload(profiles)
            except (ProfileError, ReloadError, LoadError) as exc:
                errors = str(exc)
            else:
                log.info("profiles reloaded: added %s; kept %s; removed %s", ", ".join(added) or "none",
                         ", ".join(kept) or "none", ", ".join(removed) or "none")
                return pb.ReloadProfilesResponse(reloaded=True, added=added, kept=kept, removed=removed)
        log.error("profiles not reloaded, the loaded ones stay:\n%s", errors)
        return pb.ReloadProfilesResponse(reloaded=False, errors=errors)

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.stop(grace=1)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        for output in self.outputs:
            output.close()
        if self.source is not None:
            self.source.close()
        if self.quarantine is not None:
            self.quarantine.close()  # quarantined trees stay frozen: forensics outlive the daemon
        if self.bpf is not None:
            self.bpf.close()
        for address in self.listen:
            if address.startswith("unix:"):
                Path(address.removeprefix("unix://").removeprefix("unix:")).unlink(missing_ok=True)
        log.info("agent-sensor stopped")

    # -- what the API reports --------------------------------------------------------------
    def profile_summaries(self) -> list[pb.ProfileSummary]:
        out = []
        for p in self.pipeline.profiles:
            slot = self.pipeline.slots[p.name]
            m = p.match
            selectors = ([f"exe={g.text}" for g in m.exe] + [f"cmdline={g.text}" for g in m.cmdline]
                         + [f"user={u}" for u in m.user] + [f"cgroup={g.text}" for g in m.cgroup])
            out.append(pb.ProfileSummary(name=p.name, file=p.source, description=p.description or "",
                                         on_violation=p.on_violation, slot=slot, match=selectors,
                                         kernel_exec_match=kernel_exec_paths(p)))
        return out

    def status(self) -> pb.Status:
        started = Timestamp()
        started.FromNanoseconds(self.started)
        with self.pipeline.lock:
            emitted, dropped = self.bpf.counters()
            tracked = []
            for pid, entry in sorted(self.bpf.tracked().items()):
                agent = self.pipeline.instances.get(entry.root_pid)
                info = self.pipeline.table.get(pid)
                tracked.append(pb.TrackedProcess(
                    pid=pid, agent=self.pipeline.profiles[entry.slot].name if entry.slot < len(self.pipeline.profiles) else "",
                    instance_id=agent.id if agent else "", exe=wire_text(info.exe) if info else ""))
            return pb.Status(
                version=__version__, hostname=socket.gethostname(), started=started,
                capabilities=[pb.Capability(name=c.name, available=c.available, detail=c.detail)
                              for c in self.capabilities],
                profiles=self.profile_summaries(), tracked=tracked, events=emitted, ring_buffer_drops=dropped,
                events_processed=self.pipeline.counters.events, decode_errors=self.pipeline.counters.decode_errors,
                handler_errors=self.pipeline.counters.handler_errors,
                events_backlog=self.source.backlog, backlog_drops=self.source.drops,
                lost_by_agent={a.id: self.pipeline.lost.get(root, 0) for root, a in self.pipeline.instances.items()
                               if self.pipeline.lost.get(root)},
                events_by_agent={a.id: a.events for a in self.pipeline.instances.values()},
                repeats_counted=self.pipeline.repeats.counted, repeats_cached=len(self.pipeline.repeats),
                spool=pb.AlertSpool(path=str(self.spool_path), oldest_id=self.bus.spool.oldest_id(),
                                    last_id=self.bus.last_published, consumer_catch_ups=self.bus.catch_ups),
                dns=pb.DnsCounters(addresses_learned=self.pipeline.names.count(),
                                   unparsed=self.pipeline.counters.dns_unparsed,
                                   untrusted=self.pipeline.counters.dns_untrusted,
                                   not_compiled=self.pipeline.counters.dns_not_compiled),
                alerts=self.bus.published, listen=self.listen)
