"""Scenario files: an attack story as data. Read from YAML with every problem reported as
FILE:LINE, and rendered: `${workspace}`, `${home}`, `${hosts.NAME.address}` and friends are
filled in (see `variables`). Profiles are rendered before any host exists (host n is always
10.77.n.2), so a daemon can be started with them in advance (`agent-sensor scenario profiles`)."""

from __future__ import annotations

import re
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .hosts import HTTP_PORT, host_address

CATALOGUE = Path(__file__).with_name("catalogue")
DEFAULT_WORKDIR = Path("/var/tmp/agent-sensor-scenarios")
SINK_PORT = 8080
END_STATES = ("killed", "exited", "any")
NEVER_KINDS = ("host_received", "path_exists", "file_changed", "agent_process_left", "events_dropped")
RULES = ("secret_access", "file_read", "file_write", "network_connect", "exec", "secret_tamper", "interface",
         "container_runtime", "network_listen")
ACTIONS = ("alert", "kill", "quarantine")


class ScenarioError(Exception):
    """A scenario file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class HostSpec:
    name: str
    dns: dict[str, str] = field(default_factory=dict)  # name -> host name whose address it resolves to
    http: bool = False  # serve WORKSPACE/hosts/NAME/ over HTTP


@dataclass(frozen=True)
class Step:
    name: str
    python: str | None = None        # code run inside the agent process itself
    exec: tuple[str, ...] = ()       # a program the agent starts (and waits for)
    must_succeed: bool = False       # a benign step: failing it fails the scenario


@dataclass(frozen=True)
class ExpectedAlert:
    rule: str
    action: str | None = None
    path: str | None = None          # the file's resolved path, or the path as passed
    address: str | None = None       # network destination
    in_kernel: bool | None = None
    line: int = 0

    def describe(self) -> str:
        parts = [self.rule] + [f"{k}={v}" for k, v in (("action", self.action), ("path", self.path),
                                                        ("address", self.address), ("in_kernel", self.in_kernel))
                               if v is not None]
        return " ".join(parts)


@dataclass(frozen=True)
class Never:
    kind: str                        # NEVER_KINDS
    argument: str = ""               # host name or path

    def describe(self) -> str:
        return {"host_received": f"host {self.argument} receives a byte",
                "path_exists": f"{self.argument} exists",
                "file_changed": f"{self.argument} changes",
                "agent_process_left": "a process of the agent is left running",
                "events_dropped": "the sensor drops an event"}[self.kind]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    story: str
    file: Path
    hosts: tuple[HostSpec, ...]
    profiles: tuple[str, ...]        # profile YAML documents, rendered
    profile: str                     # the one the agent runs under
    setup: str                       # Python run by the runner (untracked) before the agent
    background: tuple[tuple[str, ...], ...]  # programs started (untracked) before the agent; ${background.N.pid}
    steps: tuple[Step, ...]
    end: str
    alerts: tuple[ExpectedAlert, ...]
    only_these_alerts: bool
    never: tuple[Never, ...]
    resolver: str | None             # host whose DNS server the agent's /etc/resolv.conf names
    timeout: float


class _Template(string.Template):
    idpattern = r"[a-z][a-z0-9_]*(?:\.[a-z0-9_-]+)*"
    braceidpattern = idpattern


def variables(name: str, hosts: list[str], workdir: Path = DEFAULT_WORKDIR) -> dict[str, str]:
    """What `${...}` can name in a scenario, before it runs."""
    workspace = workdir / name
    out = {"workspace": str(workspace), "home": str(workspace / "home"), "python": "/usr/bin/python3",
           "venv_python": sys.executable, "repo": str(Path(__file__).resolve().parents[2]),
           "sink_port": str(SINK_PORT), "http_port": str(HTTP_PORT)}
    for n, host in enumerate(hosts, start=1):
        out[f"hosts.{host}.address"] = host_address(n)
    return out


def render(text: str, values: dict[str, str], where: str) -> str:
    try:
        return _Template(text).substitute(values)
    except KeyError as exc:
        raise ScenarioError(f"{where}: ${{{exc.args[0]}}} is not a scenario variable; "
                            f"known: {', '.join(sorted(values))}") from None
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc} (write $$ for a literal $)") from None


# --- reading --------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """Mappings remember their line, so errors can name it."""


class _Map(dict):
    line = 0


def _construct_map(loader, node):
    m = _Map(loader.construct_mapping(node, deep=True))
    m.line = node.start_mark.line + 1
    return m


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)


class _Reader:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, line: int, message: str) -> ScenarioError:
        return ScenarioError(f"{self.path}:{line}: {message}")

    def keys(self, m: _Map, allowed: tuple[str, ...], required: tuple[str, ...], what: str) -> None:
        for key in m:
            if key not in allowed:
                raise self.fail(m.line, f"{what}: unknown key {key!r}; allowed: {', '.join(allowed)}")
        for key in required:
            if key not in m:
                raise self.fail(m.line, f"{what}: {key!r} is required")

    def text(self, m: _Map, key: str, what: str, default: str | None = None) -> str:
        value = m.get(key, default)
        if not isinstance(value, str):
            raise self.fail(m.line, f"{what}.{key} must be text")
        return value


def load_scenario(path: Path, workdir: Path = DEFAULT_WORKDIR) -> Scenario:
    r = _Reader(path)
    try:
        doc = yaml.load(path.read_text(), Loader=_Loader)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ScenarioError(f"{path}:{mark.line + 1 if mark else 0}: not valid YAML: {exc}") from None
    if not isinstance(doc, _Map):
        raise r.fail(1, "a scenario is a mapping with name, story, profiles, agent and expect")
    r.keys(doc, ("name", "title", "story", "hosts", "setup", "profiles", "agent", "expect"),
           ("name", "title", "story", "profiles", "agent", "expect"), "scenario")
    name = r.text(doc, "name", "scenario")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise r.fail(doc.line, f"name {name!r}: use lower-case letters, digits and '-'")
    hosts = _hosts(r, doc.get("hosts") or _Map())
    values = variables(name, [h.name for h in hosts], workdir)

    def fill(text: str, line: int) -> str:
        return render(text, values, f"{path}:{line}")

    if not isinstance(doc["profiles"], list) or not all(isinstance(p, str) for p in doc["profiles"]):
        raise r.fail(doc.line, "profiles: a list of profile YAML documents (use `- |` blocks)")
    agent = doc["agent"]
    if not isinstance(agent, _Map):
        raise r.fail(doc.line, "agent: a mapping with profile and steps")
    r.keys(agent, ("profile", "steps", "background", "resolver", "timeout"), ("profile", "steps"), "agent")
    resolver = agent.get("resolver")
    if resolver is not None and resolver not in {h.name for h in hosts if h.dns}:
        raise r.fail(agent.line, f"agent.resolver {resolver!r}: not a host with a dns: zone")
    background = agent.get("background") or []
    if not isinstance(background, list) or not all(isinstance(b, list) for b in background):
        raise r.fail(agent.line, "agent.background: a list of argument lists")
    steps = tuple(_step(r, s, fill) for s in agent["steps"] or [])
    if not steps:
        raise r.fail(agent.line, "agent.steps: at least one step")
    expect = doc["expect"]
    if not isinstance(expect, _Map):
        raise r.fail(doc.line, "expect: a mapping with end, alerts and never")
    r.keys(expect, ("end", "alerts", "only_these_alerts", "never"), ("end",), "expect")
    if expect["end"] not in END_STATES:
        raise r.fail(expect.line, f"expect.end {expect['end']!r}: one of {', '.join(END_STATES)}")
    return Scenario(
        name=name, title=r.text(doc, "title", "scenario"), story=r.text(doc, "story", "scenario").strip(),
        file=path, hosts=hosts, profiles=tuple(fill(p, doc.line) for p in doc["profiles"]),
        profile=r.text(agent, "profile", "agent"), setup=fill(doc.get("setup") or "", doc.line),
        background=tuple(tuple(fill(str(a), agent.line) for a in b) for b in background),
        steps=steps, end=expect["end"],
        alerts=tuple(_alert(r, a, fill) for a in expect.get("alerts") or []),
        only_these_alerts=bool(expect.get("only_these_alerts", False)),
        never=tuple(_never(r, n, fill, hosts, expect.line) for n in expect.get("never") or []),
        resolver=resolver, timeout=float(agent.get("timeout", 60)))


def _hosts(r: _Reader, m) -> tuple[HostSpec, ...]:
    if not isinstance(m, _Map):
        raise r.fail(1, "hosts: a mapping of host name to options (dns:, http:)")
    out = []
    for name, options in m.items():
        options = options or _Map()
        r.keys(options, ("dns", "http"), (), f"hosts.{name}")
        out.append(HostSpec(name, dict(options.get("dns") or {}), bool(options.get("http", False))))
    names = {h.name for h in out}
    for h in out:
        for dns_name, target in h.dns.items():
            if target not in names:
                raise r.fail(m.line, f"hosts.{h.name}.dns: {dns_name} -> {target!r} is not a host")
    return tuple(out)


def _step(r: _Reader, s, fill) -> Step:
    if not isinstance(s, _Map):
        raise r.fail(0, f"agent.steps: each step is a mapping with name and python or exec, not {s!r}")
    r.keys(s, ("name", "python", "exec", "must_succeed"), ("name",), "step")
    if ("python" in s) == ("exec" in s):
        raise r.fail(s.line, f"step {s['name']!r}: give exactly one of python or exec")
    argv = s.get("exec") or []
    if not isinstance(argv, list):
        raise r.fail(s.line, f"step {s['name']!r}: exec is an argument list")
    return Step(name=str(s["name"]), python=fill(s["python"], s.line) if "python" in s else None,
                exec=tuple(fill(str(a), s.line) for a in argv), must_succeed=bool(s.get("must_succeed", False)))


def _alert(r: _Reader, a, fill) -> ExpectedAlert:
    if not isinstance(a, _Map):
        raise r.fail(0, f"expect.alerts: each alert is a mapping with rule, not {a!r}")
    r.keys(a, ("rule", "action", "path", "address", "in_kernel"), ("rule",), "expected alert")
    if a["rule"] not in RULES:
        raise r.fail(a.line, f"rule {a['rule']!r}: one of {', '.join(RULES)}")
    if a.get("action") is not None and a["action"] not in ACTIONS:
        raise r.fail(a.line, f"action {a['action']!r}: one of {', '.join(ACTIONS)}")
    return ExpectedAlert(rule=a["rule"], action=a.get("action"),
                         path=fill(a["path"], a.line) if "path" in a else None,
                         address=fill(a["address"], a.line) if "address" in a else None,
                         in_kernel=a.get("in_kernel"), line=a.line)


def _never(r: _Reader, n, fill, hosts, line: int) -> Never:
    if isinstance(n, str) and n in ("agent_process_left", "events_dropped"):
        return Never(n)
    if isinstance(n, _Map) and len(n) == 1:
        kind, argument = next(iter(n.items()))
        if kind == "host_received" and argument in {h.name for h in hosts}:
            return Never(kind, argument)
        if kind in ("path_exists", "file_changed"):
            return Never(kind, fill(str(argument), n.line))
    raise r.fail(line, f"expect.never: {n!r}: one of `host_received: HOST`, `path_exists: PATH`, `file_changed: PATH`, "
                       "`agent_process_left`, `events_dropped`")


def catalogue(directory: Path = CATALOGUE, workdir: Path = DEFAULT_WORKDIR) -> list[Scenario]:
    """Every scenario in a directory, by file name; names must be unique."""
    out: dict[str, Scenario] = {}
    for path in sorted(directory.glob("*.yaml")):
        scenario = load_scenario(path, workdir)
        if scenario.name in out:
            raise ScenarioError(f"{path}: scenario name {scenario.name!r} is also used by {out[scenario.name].file}")
        out[scenario.name] = scenario
    return list(out.values())
