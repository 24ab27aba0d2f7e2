"""The sensor's data path, one event at a time:

    ring buffer bytes -> decode -> process table -> correlate -> enforce -> alert bus

Also where agents begin: `agent-sensor exec` (TrackProcess), an exact exec path matched by the
kernel, match selectors checked here at exec, and the rescan of processes already running."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from collections import deque
from typing import Iterator, Mapping
from dataclasses import dataclass

import psutil

from . import enforce
from .alerts import AlertBus, add_ancestry, build_alert, complete_action, log_line
from .correlate import Target, Verdict, decide, decide_open
from .decode import (ConnectEvent, CwdEvent, DecodeError, DnsEvent, Event, EventLoss, ExecEvent, ExitEvent,
                     FileChangeEvent, ForkEvent, Header, InterfaceEvent, OpenEvent, OpenedEvent, decode)
from . import dns_names
from .incidents import Incident, IncidentStore
from .export.event_feed import EventFeed
from .kernel_rules import KernelPolicy, compile_policy, kernel_address, learned_destination, path_prefixes
from .secret_files import SecretFiles
from .processes import AgentInstance, ProcessInfo, ProcessTable, cgroup_path, start_ticks, user_name
from .repeats import Counted, RepeatCache
from .profiles import Profile, ProcessFacts, find_profile
from . import abi

log = logging.getLogger("agent-sensor")


RECENT_EVENTS = 50  # per agent run, for the incident record


class TrackError(ValueError):
    """A request about agents or incidents that cannot be honoured; the message says why."""


def is_launcher(event: ExecEvent) -> bool:
    """`agent-sensor exec ... -- CMD`: the launcher registers itself over the API and becomes CMD.
    Its command line names CMD, so selectors would match it too early, while it is still the
    launcher, and judge its own start-up."""
    program = event.argv[0] if event.argv else event.filename
    return os.path.basename(program) == "agent-sensor" and event.argv[1:2] == ("exec",)


def kernel_exec_paths(profile: Profile) -> list[str]:
    """Exact executable paths the kernel can match at exec: only for profiles whose every
    selector is a literal exe path (cmdline, user and cgroup need user space)."""
    m = profile.match
    if m.is_empty or m.cmdline or m.user or m.cgroup or not all(g.is_literal for g in m.exe):
        return []
    return [g.text for g in m.exe if len(g.text.encode()) < abi.EXEC_KEY_LEN - 1]


@dataclass
class Counters:
    events: int = 0
    decode_errors: int = 0
    handler_errors: int = 0
    dns_unparsed: int = 0        # captured on a resolver socket but not one whole DNS message
    dns_untrusted: int = 0       # answers from a resolver the profile does not allow: not learned from
    dns_not_compiled: int = 0    # learned addresses whose ports did not fit the kernel: user space judges them


LOCK_SPAN = 256  # records judged per hold of the pipeline's lock (a few milliseconds at most)


class ReloadError(Exception):
    pass


class Pipeline:
    def __init__(self, profiles: list[Profile], sensor_bpf, bus: AlertBus, audit_only: bool = False,
                 quarantine=None, kernel_enforcement: bool = True):
        self.audit_only = audit_only
        self.kernel_enforcement = kernel_enforcement and not audit_only
        self.quarantine = quarantine  # quarantine.Quarantine, or None: quarantine acts as kill
        self.incidents = IncidentStore()
        # root pid -> the agent's last events (pid, kind, what), for incidents: written out only then
        self.recent: dict[int, deque[tuple[int, str, str]]] = {}
        self.slots: dict[str, int] = {}
        self._set_profiles(profiles)
        self.bpf = sensor_bpf
        self.repeats = RepeatCache(sensor_bpf)  # opens the kernel counts instead of sending
        self.bus = bus
        self.table = ProcessTable()
        self.instances: dict[int, AgentInstance] = {}  # root pid -> the agent run it started
        self.counters = Counters()
        self.names = dns_names.ResolvedNames()  # what agents' DNS answers resolved, per slot
        self.policies: dict[int, KernelPolicy] = {}
        self.lost: dict[int, int] = {}  # root pid -> its lost events already reported
        self.feed = EventFeed()  # StreamEvents
        self.sensor_files: tuple[str, ...] = ()  # set by protect_sensor_files
        self.lock = threading.RLock()  # the event loop and gRPC threads share the table
        self._handlers = {ExecEvent: self._on_exec, ForkEvent: self.table.on_fork, CwdEvent: self.table.on_cwd,
                          OpenedEvent: self.table.on_opened, ExitEvent: self._on_exit, DnsEvent: self._on_dns,
                          OpenEvent: self._judge_open,
                          **dict.fromkeys((ConnectEvent, FileChangeEvent, InterfaceEvent), self._judge)}

    def assign_slots(self, profiles: list[Profile]) -> dict[str, int]:
        """A profile keeps its slot (the kernel's name for it) for as long as its name is loaded;
        a new one takes the lowest free slot. Raises ReloadError past the kernel's slots."""
        slots = {p.name: self.slots[p.name] for p in profiles if p.name in self.slots}
        free = (i for i in range(abi.MAX_SLOTS) if i not in slots.values())
        for p in profiles:
            if p.name not in slots:
                slot = next(free, None)
                if slot is None:
                    raise ReloadError(f"at most {abi.MAX_SLOTS} profiles can be loaded")
                slots[p.name] = slot
        return slots

    def _set_profiles(self, profiles: list[Profile], slots: dict[str, int] | None = None) -> None:
        self.slots = slots = slots if slots is not None else self.assign_slots(profiles)
        self.profiles = profiles
        self.by_slot = {slots[p.name]: p for p in profiles}
        # (device, inode) of each profile's secret files: other names of the same file are secrets too
        self.secret_files = SecretFiles(profiles)
        self._matching = any(not p.match.is_empty for p in profiles)

    # -- start-up --------------------------------------------------------------------------
    def install_kernel_policies(self) -> dict[str, KernelPolicy]:
        """Each profile's conclusive rules, enforced by the kernel at the syscall (a reload
        replaces a slot's rules without a moment of none)."""
        policies = {}
        for profile in self.profiles:
            slot = self.slots[profile.name]
            policies[profile.name] = compile_policy(profile, audit_only=not self.kernel_enforcement)
            previous = self.policies.get(slot)
            if previous is not None and previous.names != policies[profile.name].names:
                self.names.forget(slot)  # what names resolved to is learned again, for the new names
            self.bpf.set_policy(slot, policies[profile.name], previous=previous)
            self.policies[slot] = policies[profile.name]
        return policies

    def reload(self, profiles: list[Profile]) -> tuple[list[str], list[str], list[str]]:
        """Switch to a new, already validated, set of profiles: (added, changed or kept, removed)
        names. Runs of a kept profile go on under its new rules; runs of a removed one are no
        longer tracked (their processes keep running, unwatched, which the log says)."""
        with self.lock:
            before = dict(self.slots)
            self._set_profiles(profiles, self.assign_slots(profiles))  # raises before anything changes
            removed = sorted(set(before) - set(self.slots))
            for name in removed:
                slot = before[name]
                self.bpf.clear_policy(slot)
                self.policies.pop(slot, None)
                self.names.forget(slot)
                for pid, entry in self.bpf.tracked().items():
                    if entry.slot == slot:
                        self.bpf.untrack(pid)
                for root, agent in list(self.instances.items()):
                    if agent.slot == slot:
                        self.table.forget_agent(agent)
                        del self.instances[root]
                        log.warning("agent %s: its profile was removed by a reload: no longer watched", agent.id)
            self._report_repeats(self.repeats.forget())  # judged under the old rules
            self.install_kernel_policies()
            for agent in self.instances.values():
                agent.profile = self.by_slot[agent.slot]
            self.install_exec_matches()
            return (sorted(set(self.slots) - set(before)), sorted(set(self.slots) & set(before)), removed)

    def install_exec_matches(self) -> dict[str, int]:
        """What the kernel needs to start agents at exec: the literal paths it matches itself,
        and whether user space matches selectors (then it must see every process's exec)."""
        paths = {path: self.slots[p.name] for p in self.profiles for path in kernel_exec_paths(p)}
        self.bpf.send_all_execs(self._matching)
        self.bpf.set_exec_matches(paths)
        return paths

    def rescan(self) -> list[AgentInstance]:
        """Track agents that were running before the daemon started, with their children."""
        found = []
        own = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
        for proc in psutil.process_iter(["pid", "exe", "cmdline", "uids"]):
            pid = proc.info["pid"]
            if pid in own or not self._matching:
                continue
            facts = ProcessFacts(
                exe_paths=tuple(x for x in (proc.info["exe"],) if x),
                cmdline=" ".join(proc.info["cmdline"] or ()),
                uid=proc.info["uids"].real if proc.info["uids"] else -1,
                username=user_name(proc.info["uids"].real) if proc.info["uids"] else None,
                cgroup=cgroup_path(pid))
            profile = find_profile(self.profiles, facts)
            if profile is None or self._agent_of(pid) is not None:
                continue
            found.append(self._start_agent(pid, profile, how="rescan"))
        return found

    # -- agents ----------------------------------------------------------------------------
    def track(self, pid: int, profile_name: str, pending_exec: bool) -> AgentInstance:
        with self.lock:
            if profile_name not in self.slots:
                raise TrackError(f"no profile named {profile_name!r} (loaded: {', '.join(self.slots) or 'none'})")
            if not psutil.pid_exists(pid):
                raise TrackError(f"no process {pid}")
            if pid in self.bpf.tracked():
                raise TrackError(f"process {pid} is already tracked")
            profile = self.by_slot[self.slots[profile_name]]
            return self._start_agent(pid, profile, how="exec" if pending_exec else "track",
                                     flags=abi.TrackedFlags.PENDING_EXEC if pending_exec else 0)

    def _start_agent(self, pid: int, profile: Profile, how: str, flags: int = 0,
                     in_kernel: bool = False) -> AgentInstance:
        agent = AgentInstance(profile=profile, slot=self.slots[profile.name], root_pid=pid,
                              start_ticks=start_ticks(pid), how=how)
        self.instances[pid] = agent
        if not in_kernel:
            self.bpf.track(pid, agent.slot, pid, flags)
        self.table.attach(pid, agent)
        # Children that existed before tracking began do not inherit it: add them now. Later
        # forks inherit in the kernel.
        if how in ("rescan", "match", "track"):
            try:
                for child in psutil.Process(pid).children(recursive=True):
                    self.bpf.track(child.pid, agent.slot, pid, flags)
                    self.table.attach(child.pid, agent)
            except psutil.NoSuchProcess:
                pass
        log.info("tracking %s (pid %d) as agent %s [%s]", self.table.lookup(pid).exe or "?", pid,
                 profile.name, how)
        return agent

    def _agent_of(self, pid: int) -> AgentInstance | None:
        info = self.table.get(pid)
        return info.agent if info else None

    def _agent_process(self, event: Event) -> ProcessInfo | None:
        """The process an event of a tracked process came from, with the agent run it belongs to
        (its .agent); None for a process of no agent run. The event is counted as the run's, for
        status and `top`: every event the judge looks at passes here."""
        info = self.table.get(event.hdr.pid)
        if info is None or info.agent is None:
            entry = self.bpf.tracked().get(event.hdr.pid)
            if entry is None or event.hdr.slot not in self.by_slot:
                return None
            agent = self.instances.get(entry.root_pid)
            if agent is None:
                agent = AgentInstance(profile=self.by_slot[event.hdr.slot], slot=event.hdr.slot,
                                      root_pid=entry.root_pid, start_ticks=start_ticks(entry.root_pid), how="kernel")
                self.instances[entry.root_pid] = agent
            info = self.table.attach(event.hdr.pid, agent)
        info.agent.events += 1
        return info

    # -- events ----------------------------------------------------------------------------
    def handle(self, records: list[bytes]) -> None:
        """Decode and judge ring-buffer records, in order, taking the lock once per LOCK_SPAN of
        them: once per record was a twentieth of an open's cost, and a longer hold would keep the
        API's calls (an agent's start) waiting."""
        handlers = self._handlers
        for start in range(0, len(records), LOCK_SPAN):
            span = records[start:start + LOCK_SPAN]
            with self.lock:
                self.counters.events += len(span)
                for data in span:
                    try:
                        event = decode(data)
                    except DecodeError as exc:
                        self.counters.decode_errors += 1
                        log.warning("dropped an undecodable event: %s", exc)
                        continue
                    handler = handlers.get(type(event))
                    if handler is None:
                        continue
                    try:
                        handler(event)
                    except Exception:  # noqa: BLE001 - one bad event must not stop the sensor
                        self.counters.handler_errors += 1
                        log.exception("error handling %s event of pid %d (counted in status)", event.kind,
                                      event.hdr.pid)

    def _on_exec(self, event: ExecEvent) -> None:
        pid = event.hdr.pid
        if event.hdr.slot is None:
            if not self._matching or is_launcher(event):
                return
            profile = find_profile(self.profiles, self.table.facts(event))
            if profile is not None:
                self.table.on_exec(event)
                self._start_agent(pid, profile, how="match")
            return
        if event.flags & abi.ExecFlags.KERNEL_MATCHED and pid not in self.instances:
            self._start_agent(pid, self.by_slot[event.hdr.slot], how="kernel-match", in_kernel=True)
        if not event.flags & abi.ExecFlags.DENIED:  # a denied exec never completed
            self.table.on_exec(event)
        self._judge(event)

    def _on_exit(self, event: ExitEvent) -> None:
        self._report_repeats(self.repeats.forget(event.hdr.pid))  # before its pid is reused
        info = self.table.on_exit(event.hdr.pid)
        agent = info.agent if info else None
        if agent is not None and not self.table.agent_processes(agent):
            self.instances.pop(agent.root_pid, None)
            self.recent.pop(agent.root_pid, None)
            self.bpf.forget_doomed(agent.root_pid)
            self.bpf.forget_dns(agent.root_pid)
            self.bpf.forget_lost(agent.root_pid)
            self.lost.pop(agent.root_pid, None)
            log.info("agent %s ended", agent.id)

    def _on_dns(self, event: DnsEvent) -> None:
        """Learn from an answer which addresses a name has, for the agent's profile; then tell
        the kernel this answer is learned, so it refuses unknown destinations again."""
        process = self._agent_process(event)
        if process is None:
            return
        agent = process.agent
        message = dns_names.parse(event.payload)
        if message is None:
            self.counters.dns_unparsed += 1
            return
        seen = f"{message.describe()} via {event.resolver}"
        self._remember_text(agent, event, seen)
        log.debug("agent %s pid %d: dns %s%s", agent.id, event.hdr.pid, seen,
                  f" ({event.pending} addresses left to user space)" if event.pending else "")
        if event.direction == abi.DnsDirection.ANSWER and message.question and message.addresses:
            self._learn(agent, event, message)
        if event.pending:  # learned (or not believed): the kernel's allow-list decides again
            self.bpf.dns_judged(agent.root_pid, map(kernel_address, message.addresses))

    def _learn(self, agent: AgentInstance, event: DnsEvent, message: dns_names.DnsMessage) -> None:
        profile = agent.profile
        # Only a resolver the profile lets the agent reach is believed: an answer from anywhere
        # else could name any address.
        if profile.allowed_destination_inet(event.peer, event.peer_port) is None:
            self.counters.dns_untrusted += 1
            log.warning("agent %s: DNS answer for %s from %s, a resolver network.connect does not allow: "
                        "not learned from", agent.id, message.question, event.resolver)
            return
        self.names.learn(agent.slot, message.question, message.addresses)
        policy = self.policies.get(agent.slot)
        if policy is None or not policy.flags & abi.EnforceFlags.DNS_NAMES:
            return
        for address in message.addresses:
            names = self.names.names_of(agent.slot, address)
            ports = {(d.port_low, d.port_high) for d in profile.network_connect
                     if d.host is not None and any(d.host.matches(n) for n in names)}
            if not ports:
                continue
            dest = learned_destination(policy, address, ports)
            if dest is None:
                self.counters.dns_not_compiled += 1
                log.warning("agent %s: %s (%s) has more port ranges than the kernel holds: judged in user space",
                            agent.id, address, message.question)
                continue
            self.bpf.allow_learned(agent.slot, dest)

    def protect_sensor_files(self, paths: list[Path]) -> None:
        """The sensor's code, profiles and spool: no agent may change them (kernel and user space)."""
        files = tuple(os.path.realpath(p) + ("/" if p.is_dir() else "") for p in paths)
        self.sensor_files = files
        prefixes = []
        for f in files:
            compiled = path_prefixes(f + "**" if f.endswith("/") else f)
            if compiled is None:
                log.warning("%s: the kernel cannot hold this name; user space judges changes to it", f)
            prefixes += compiled or []
        self.bpf.protect_files(prefixes)

    def check_event_loss(self) -> None:
        """Agent runs whose events the ring buffer had no room for since the last check: an
        event_loss alert each, acted on as the profile's on_event_loss says."""
        with self.lock:
            for root, total in self.bpf.lost_by_run().items():
                new = total - self.lost.get(root, 0)
                agent = self.instances.get(root)
                if new <= 0 or agent is None:
                    continue
                self.lost[root] = total
                hdr = Header(ktime_ns=time.monotonic_ns(), cgroup_id=0, pid=root, tid=root, uid=0, gid=0,
                             slot=agent.slot, comm="")
                event = EventLoss(hdr=hdr, lost=new)
                verdict = decide(event, agent.profile)
                self._alert(verdict, event, agent, self.table.lookup(root))

    def report_repeats(self, final: bool = False) -> None:
        """What the kernel counted instead of sending since the last call (each second; final:
        at the stop, every entry removed)."""
        with self.lock:
            self._report_repeats(self.repeats.forget() if final else self.repeats.collect(time.monotonic_ns()))

    def _report_repeats(self, counted: Iterator[Counted]) -> None:
        for c in counted:
            agent = c.agent
            agent.events += c.count
            if self.feed.listening:
                self.feed.publish(agent.profile.name, agent.id, c.key.tgid, "open", c.key.path, False, c.last_ns,
                                  repeats=c.count)

    def _judge(self, event: Event) -> None:
        """An agent's event of any kind but an open (_judge_open)."""
        process = self._agent_process(event)
        if process is None:
            return
        agent = process.agent
        target, target2 = self.table.change_targets(event) if isinstance(event, FileChangeEvent) else (
            self._target(event, process), None)
        self._remember(agent, event, target)
        names = self.names.names_of(agent.slot, event.ip) if isinstance(event, ConnectEvent) else ()
        verdict = decide(event, agent.profile, target, self._secret_files(agent, target), target2, names, process.exe,
                         self.sensor_files)
        self._conclude(verdict, event, agent, process, target, target2)

    def _judge_open(self, event: OpenEvent) -> None:
        """_judge for an open, nearly every event an agent sends: the same steps, its type known."""
        process = self._agent_process(event)
        if process is None:
            return
        agent = process.agent
        target = None
        if event.path:
            target = self.table.resolve(event.hdr.pid, event.path, event.dirfd,
                                        names_seen=(event.names_gen, event.hdr.ktime_ns))
            self.table.note_open(event, target, process)
        self._remember_text(agent, event, target.canonical if target else "")
        verdict = decide_open(event, agent.profile, target, self._secret_files(agent, target), process.exe,
                              self.sensor_files)
        if verdict is None:
            self.repeats.allowed(event, target, agent)
        self._conclude(verdict, event, agent, process, target)

    def _secret_files(self, agent: AgentInstance, target: Target | None) -> Mapping[tuple[int, int], str]:
        """The identities of the agent's secrets, read again first if the target may be a new one."""
        return self.secret_files.of(agent.profile.name, target.file_id if target else None,
                                    target.links if target else 1)

    def _conclude(self, verdict: Verdict | None, event: Event, agent: AgentInstance, process: ProcessInfo,
                  target: Target | None, target2: Target | None = None) -> None:
        if verdict is not None:
            self._alert(verdict, event, agent, process, target, target2)
        elif event.hdr.kernel_action:
            log.error("the kernel acted on %s event of pid %d but no rule fires in user space: "
                      "kernel and user-space rules disagree", event.kind, event.hdr.pid)

    def _alert(self, verdict: Verdict, event: Event, agent: AgentInstance, process: ProcessInfo,
               target: Target | None = None, target2: Target | None = None) -> None:
        alert = build_alert(self.bus.next_id(), verdict, event, target, agent, process, target2=target2)
        self.bus.stage(alert)  # durable before the action, which takes time
        self._act(verdict.action, event, agent, alert)
        # The ancestry after the action: its processes outside the agent are read from /proc, a
        # few milliseconds the kill would otherwise wait for (the agent's own are in the table).
        add_ancestry(alert, self.table.ancestry(event.hdr.pid))
        self.bus.publish(alert)
        log.warning("%s", log_line(alert))

    def _remember(self, agent: AgentInstance, event: Event, target: Target | None) -> None:
        what = target.canonical if target else getattr(event, "filename", "") or (
            f"{getattr(event, 'address', '')}:{getattr(event, 'port', '')}")
        self._remember_text(agent, event, what)

    def _remember_text(self, agent: AgentInstance, event: Event, what: str) -> None:
        recent = self.recent.get(agent.root_pid)
        if recent is None:  # not setdefault: that would build a deque for every event
            recent = self.recent[agent.root_pid] = deque(maxlen=RECENT_EVENTS)
        recent.append((event.hdr.pid, event.kind, what))
        if self.feed.listening:
            self.feed.publish(agent.profile.name, agent.id, event.hdr.pid, event.kind, what,
                              event.hdr.kernel_action != abi.KernelAction.NONE, event.hdr.ktime_ns,
                              result=getattr(event, "result", None))

    def _quarantine(self, event: Event, agent: AgentInstance, alert) -> None:
        """Hold the whole agent run for forensics: the kernel stops every member at its next
        traced syscall, the mechanism freezes the tree in its own cgroup and cuts its network."""
        self.bpf.doom(agent.root_pid, abi.KernelAction.STOP)
        members = sorted(pid for pid, t in self.bpf.tracked().items() if t.root_pid == agent.root_pid)
        incident_id = self.incidents.new_id()
        isolation = self.quarantine.isolate(incident_id, members)
        from .quarantine import collect_facts  # psutil/pyroute2 walk, only when it is needed
        self.incidents.add(Incident(
            id=incident_id, agent=agent.profile.name, instance_id=agent.id, root_pid=agent.root_pid,
            rule=alert.rule.name, reason=alert.reason, alert_id=alert.id, created_ns=time.time_ns(),
            isolation=isolation, facts=collect_facts(isolation.pids or members),
            last_events=[f"pid {pid} {kind} {what}" for pid, kind, what in self.recent.get(agent.root_pid, ())]))
        alert.action.incident_id = incident_id
        complete_action(alert, isolation.frozen or isolation.method == "sigstop",
                        f"incident {incident_id}: {isolation.detail}", isolation.pids,
                        event.hdr.kernel_action != abi.KernelAction.NONE)

    def release_incident(self, incident_id: str) -> Incident:
        with self.lock:
            incident = self._open_incident(incident_id)
            self.bpf.forget_doomed(incident.root_pid)  # before the thaw, or members stop again
            result = self.quarantine.release(incident.isolation)
            incident.state = "released"
            incident.history.append(f"released: {result}")
            return incident

    def kill_incident(self, incident_id: str) -> Incident:
        with self.lock:
            incident = self._open_incident(incident_id)
            self.bpf.doom(incident.root_pid, abi.KernelAction.KILL)
            result = self.quarantine.kill(incident.isolation)
            incident.state = "killed"
            incident.history.append(f"killed: {result}")
            return incident

    def _open_incident(self, incident_id: str) -> Incident:
        incident = self.incidents.get(incident_id)
        if incident is None:
            raise TrackError(f"no incident {incident_id!r}")
        if incident.state != "quarantined":
            raise TrackError(f"incident {incident_id} is already {incident.state}")
        return incident

    def _act(self, action: str, event: Event, agent: AgentInstance, alert) -> None:
        in_kernel = event.hdr.kernel_action != abi.KernelAction.NONE
        if self.audit_only and action != "alert":
            alert.action.audit_only = True
            complete_action(alert, True, f"audit-only: would have {'killed' if action == 'kill' else 'quarantined'} "
                                         f"the agent's process tree")
        elif action == "quarantine" and self.incidents.open_for(agent.root_pid) is not None:
            incident = self.incidents.open_for(agent.root_pid)
            alert.action.incident_id = incident.id
            complete_action(alert, True, f"already quarantined as incident {incident.id}")
        elif action == "quarantine" and self.quarantine is not None:
            self._quarantine(event, agent, alert)
        elif action in ("kill", "quarantine"):
            ticks = {p.pid: p.start_ticks for p in self.table.agent_processes(agent)}
            result = enforce.kill_tree(self.bpf, agent.root_pid, ticks)
            if in_kernel:
                signalled = (event.hdr.pid, *(p for p in result.signalled if p != event.hdr.pid))
                complete_action(alert, result.complete, f"killed pid {event.hdr.pid} in the kernel at the syscall; "
                                + result.describe(), signalled, in_kernel)
            else:
                complete_action(alert, result.complete, result.describe(), result.signalled)
        else:
            complete_action(alert, True, "alert only")

    def _target(self, event: Event, process: ProcessInfo) -> Target | None:
        if isinstance(event, ExecEvent):
            if event.filename:
                return self.table.resolve(event.hdr.pid, event.filename, event.dirfd)
            # Not readable at execve entry (README, Known limits): the program that runs, as /proc
            # showed it after the exec (ProcessTable.on_exec), judged like a name the kernel read.
            return Target(process.exe, process.exe) if process.exe else None
        if isinstance(event, ConnectEvent) and event.family == socket.AF_UNIX and event.address[:1] not in ("", "@"):
            return self.table.resolve(event.hdr.pid, event.address)
        return None
