"""Runs a scenario against a daemon: builds its workspace and test hosts, starts the agent under
its profile (`agent-sensor exec`), collects the agent run's alerts over gRPC, and compares what
happened with what the scenario expects. Every difference becomes a failure reason."""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..client import SensorClient
from ..kinds import action_name, rule_name
from .hosts import Host, HostNetwork, host_address, with_resolv_conf
from .own_daemon import CLI
from .spec import ExpectedAlert, Scenario

AGENT = Path(__file__).with_name("agent.py")
ALERT_DEADLINE_S = 10.0   # for alerts still on their way after the agent ended
SETTLE_S = 1.0            # then this long for alerts nobody expected
GONE_DEADLINE_S = 10.0    # for the agent's processes to be gone after a kill


@dataclass
class SeenAlert:
    rule: str
    action: str
    path: str
    resolved_path: str
    address: str
    in_kernel: bool
    reason: str

    def matches(self, want: ExpectedAlert) -> bool:
        return (self.rule == want.rule
                and (want.action is None or self.action == want.action)
                and (want.path is None or want.path in (self.path, self.resolved_path))
                and (want.address is None or self.address == want.address)
                and (want.in_kernel is None or self.in_kernel == want.in_kernel))

    def describe(self) -> str:
        return f"{self.rule}/{self.action}{' (kernel)' if self.in_kernel else ''}: {self.reason}"


@dataclass
class Result:
    scenario: Scenario
    failures: list[str] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    alerts: list[SeenAlert] = field(default_factory=list)
    end: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures


def _seen(alert) -> SeenAlert:
    detail = alert.event.WhichOneof("detail")
    file = alert.event.file if detail == "file" else None
    return SeenAlert(rule=rule_name(alert.rule.kind),
                     action=action_name(alert.action.kind),
                     path=file.path if file else (alert.event.exec.filename if detail == "exec" else ""),
                     resolved_path=file.resolved_path if file else (
                         alert.event.exec.resolved_path if detail == "exec" else ""),
                     address=alert.event.network.address if detail == "network" else "",
                     in_kernel=alert.action.in_kernel, reason=alert.reason)


def _drops(client: SensorClient) -> int:
    status = client.status()
    return sum(status.ring_buffer_drops.values()) + status.backlog_drops


def _agent_pids(client: SensorClient, root_pid: int) -> list[int]:
    """Tracked processes of this agent run (instance ids are NAME/ROOTPID.START)."""
    return [t.pid for t in client.status().tracked if t.instance_id.rsplit("/", 1)[-1].split(".")[0] == str(root_pid)]


class Run:
    def __init__(self, scenario: Scenario, server: str):
        self.s = scenario
        self.server = server
        self.result = Result(scenario)
        self.workspace = Path()  # set by prepare
        self.digests: dict[str, str] = {}  # files that must not change, before the agent ran

    def fail(self, reason: str) -> None:
        self.result.failures.append(reason)

    # --- before ---------------------------------------------------------------------------
    def prepare(self, workspace: Path) -> None:
        self.workspace = workspace
        if workspace.exists():
            shutil.rmtree(workspace)
        (workspace / "home").mkdir(parents=True)
        for host in self.s.hosts:
            (workspace / "hosts" / host.name).mkdir(parents=True)
        shutil.copy(AGENT, workspace / "agent.py")
        if self.s.setup:
            done = subprocess.run([sys.executable, "-c", self.s.setup], cwd=workspace, capture_output=True,
                                  text=True, timeout=300)
            if done.returncode != 0:
                raise RuntimeError(f"setup failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        self.digests = {n.argument: _digest(n.argument) for n in self.s.never if n.kind == "file_changed"}

    def hosts(self, net: HostNetwork) -> dict[str, Host]:
        out: dict[str, Host] = {}
        order = [h.name for h in self.s.hosts]
        for spec in self.s.hosts:
            # A name resolves to the host of that name, whose address its place fixes.
            zone = {name: host_address(order.index(target) + 1) for name, target in spec.dns.items()} or None
            out[spec.name] = net.add_host(spec.name, dns_zone=zone,
                                          http_dir=self.workspace / "hosts" / spec.name if spec.http else None)
        return out

    # --- the agent ------------------------------------------------------------------------
    def agent(self, hosts: dict[str, Host], background: list[subprocess.Popen]) -> int:
        steps = [{"name": s.name, "python": s.python, "exec": list(s.exec)} for s in self.s.steps]
        read_end, write_end = os.pipe()
        # The same small environment on every host: what the tester's shell has (a PATH with
        # ~/.cargo/bin, say) must not change what the agent runs.
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(self.workspace / "home"),
               "SCENARIO_BACKGROUND_PIDS": " ".join(str(p.pid) for p in background)}
        argv = [CLI, "exec", "--server", self.server, "--profile", self.s.profile, "--",
                "/usr/bin/python3", str(self.workspace / "agent.py"), json.dumps(steps), str(write_end)]
        if self.s.resolver:
            conf = self.workspace / "resolv.conf"
            conf.write_text(f"nameserver {hosts[self.s.resolver].address}\noptions timeout:2 attempts:1\n")
            argv = with_resolv_conf(conf, argv)
        proc = subprocess.Popen(argv, cwd=self.workspace, env=env, pass_fds=(write_end,),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.close(write_end)
        try:
            _, err = proc.communicate(timeout=self.s.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            self.fail(f"the agent did not end within {self.s.timeout:.0f}s")
        self._read_steps(read_end)
        code = proc.returncode
        self.result.end = "killed" if code == -9 else "exited" if code >= 0 else f"signal {-code}"
        if code == 1 and not self.result.steps:
            self.fail(f"the agent did not start: {err.decode(errors='replace').strip()[-500:]}")
        return proc.pid

    def _read_steps(self, fd: int) -> None:
        """What the agent reported (escaped children may hold the pipe open: read what is there)."""
        data = b""
        while select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
        os.close(fd)
        finished = {}
        for line in data.decode(errors="replace").splitlines():
            report = json.loads(line)
            finished[report["step"]] = report if "ok" in report else finished.get(report["step"], report)
        self.result.steps = [finished.get(s.name, {"step": s.name}) for s in self.s.steps]

    # --- after ----------------------------------------------------------------------------
    def collect_alerts(self, client: SensorClient, root_pid: int) -> None:
        deadline = time.monotonic() + ALERT_DEADLINE_S
        while True:
            seen = [_seen(a) for a in client.alerts(backlog=10000) if a.agent.root_pid == root_pid]
            if _unmatched(self.s.alerts, seen) == [] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        time.sleep(SETTLE_S)
        self.result.alerts = [_seen(a) for a in client.alerts(backlog=10000) if a.agent.root_pid == root_pid]

    def judge(self, client: SensorClient, root_pid: int, hosts: dict[str, Host], drops_before: int) -> None:
        s, r = self.s, self.result
        if s.end != "any" and r.end != s.end:
            self.fail(f"the agent {r.end}, expected {s.end}")
        for step, spec in zip(r.steps, s.steps):
            if spec.must_succeed and not step.get("ok"):
                self.fail(f"benign step {spec.name!r} failed: {step.get('detail', 'never ran')}")
        for want in _unmatched(s.alerts, r.alerts):
            self.fail(f"no alert {want.describe()} (scenario line {want.line})")
        if s.only_these_alerts:
            for extra in r.alerts:
                if not any(extra.matches(w) for w in s.alerts):
                    self.fail(f"unexpected alert {extra.describe()}")
        for never in s.never:
            if never.kind == "host_received" and hosts[never.argument].received():
                self.fail(f"{never.describe()}: it received {len(hosts[never.argument].received())} bytes")
            elif never.kind == "path_exists" and Path(never.argument).exists():
                self.fail(never.describe())
            elif never.kind == "file_changed" and _digest(never.argument) != self.digests[never.argument]:
                self.fail(never.describe())
            elif never.kind == "agent_process_left":
                left = _wait_gone(client, root_pid)
                if left:
                    self.fail(f"{never.describe()}: pids {left}")
            elif never.kind == "events_dropped" and _drops(client) != drops_before:
                self.fail(f"{never.describe()}: {_drops(client) - drops_before} lost to a full ring buffer")


def _unmatched(wanted, seen: list[SeenAlert]) -> list[ExpectedAlert]:
    """Expected alerts without a distinct seen alert matching them."""
    free = list(seen)
    missing = []
    for want in wanted:
        hit = next((a for a in free if a.matches(want)), None)
        if hit is None:
            missing.append(want)
        else:
            free.remove(hit)
    return missing


def _digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def _wait_gone(client: SensorClient, root_pid: int) -> list[int]:
    deadline = time.monotonic() + GONE_DEADLINE_S
    while (left := _agent_pids(client, root_pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def run_scenario(scenario: Scenario, server: str, workdir: Path) -> Result:
    """Run one scenario against the daemon at `server` (which must have its profiles loaded)."""
    started = time.monotonic()
    run = Run(scenario, server)
    with SensorClient(server) as client:
        loaded = {p.name for p in client.profiles()}
        if scenario.profile not in loaded:
            run.fail(f"profile {scenario.profile!r} is not loaded by the daemon at {server}: start it with "
                     f"the scenario profiles (agent-sensor scenario profiles --out DIR; agent-sensor run --profiles DIR)")
            return run.result
        background: list[subprocess.Popen] = []
        root_pid = 0
        try:
            run.prepare(workdir / scenario.name)
            with HostNetwork(run.workspace) as net:
                hosts = run.hosts(net)
                background = [subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                              for argv in scenario.background]
                drops_before = _drops(client)
                root_pid = run.agent(hosts, background)
                run.collect_alerts(client, root_pid)
                run.judge(client, root_pid, hosts, drops_before)
        except Exception as exc:  # noqa: BLE001 - a broken scenario is a failed scenario, with the reason
            run.fail(f"{type(exc).__name__}: {exc}")
        finally:
            for proc in background:
                proc.kill()
                proc.wait()
            if root_pid:  # nothing of a failed scenario keeps running
                for pid in _agent_pids(client, root_pid):
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass
    run.result.seconds = time.monotonic() - started
    return run.result
