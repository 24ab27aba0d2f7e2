"""Pure decision: (event, resolved target, profile) -> verdict or None. No I/O, no clock: it can
be fed recorded events (tests/unit/test_correlate.py) exactly as live ones.

Rule kinds, checked in this order for an open: a secret is a violation whatever `files` allows;
then writes against files.write, reads against files.read (a writable path is also readable)."""

from __future__ import annotations

import enum
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from .decode import (ConnectEvent, Event, EventLoss, ExecEvent, FileChangeEvent, InterfaceEvent, OpenEvent, endpoint,
                     open_result)
from .abi import FileOp, NetCall
from .profiles import Profile


class RuleKind(str, enum.Enum):
    SECRET_ACCESS = "secret_access"
    SECRET_TAMPER = "secret_tamper"
    FILE_READ = "file_read"
    FILE_WRITE = "file_write"
    NETWORK_CONNECT = "network_connect"
    NETWORK_LISTEN = "network_listen"
    EXEC = "exec"
    INTERFACE = "interface"
    CONTAINER_RUNTIME = "container_runtime"
    SENSOR_TAMPER = "sensor_tamper"
    EVENT_LOSS = "event_loss"


class Target(NamedTuple):  # a tuple: built for every open, and a frozen dataclass is slow to build
    """The spellings of a path an event names: `literal` made absolute against the process's
    cwd or dirfd, `canonical` with symlinks resolved. `resolved` is False when neither cwd nor
    dirfd could be read (the process was gone): the path is then judged as given."""
    literal: str
    canonical: str
    resolved: bool = True
    file_id: tuple[int, int] | None = None  # (device, inode) of the file opened, if it exists
    links: int = 1       # its hard links (another name of a secret may be one of them)
    is_dir: bool = False

    @property
    def spellings(self) -> tuple[str, ...]:
        return (self.literal,) if self.literal == self.canonical else (self.literal, self.canonical)


@dataclass(frozen=True)
class Verdict:
    kind: RuleKind
    rule: str          # the profile key that decided: "secrets", "files.write", ...
    pattern: str       # the glob that matched (secrets), or "" when nothing allowed the access
    reason: str
    action: str        # alert, kill or quarantine: the profile's action for this rule
    target: str        # canonical path, "address:port", unix path, or program
    names: tuple[str, ...] = ()  # connects: the DNS names the address was resolved from


# Another process's environment or memory: secrets whatever the profile lists (tokens live there).
PROCESS_MEMORY = re.compile(r"/proc/(\d+)(?:/task/\d+)?/(environ|mem|maps|smaps|pagemap|auxv|stack|cmdline)")
NO_FILES: Mapping[tuple[int, int], str] = {}


def decide(event: Event, profile: Profile, target: Target | None = None,
           secret_files: Mapping[tuple[int, int], str] = NO_FILES, target2: Target | None = None,
           names: tuple[str, ...] = (), program: str = "", sensor_files: tuple[str, ...] = ()) -> Verdict | None:
    """secret_files: (device, inode) -> secret glob, for the profile (sensor/secret_files.py).
    target2: the second name of a rename, link or symlink.
    names: for a connect, the DNS names its address was resolved from (sensor/dns_names.py).
    program: what the process runs (canonical path): a broker may open its secrets.
    sensor_files: the sensor's own files and directories (a directory ends with "/"): no agent
    changes them, whatever its profile."""
    if isinstance(event, OpenEvent):
        return decide_open(event, profile, target, secret_files, program, sensor_files)
    if isinstance(event, FileChangeEvent):
        changed = (target2,) if event.op == FileOp.SYMLINK else (target, target2)
        return _changes_sensor_file(changed, sensor_files) or _decide_change(event, profile, target, target2,
                                                                             secret_files)
    if isinstance(event, InterfaceEvent):
        return _decide_interface(event, profile)
    if isinstance(event, ConnectEvent):
        return _decide_connect(event, profile, target, names)
    if isinstance(event, ExecEvent):
        return _decide_exec(event, profile, target)
    if isinstance(event, EventLoss):
        # What the agent did in those events is unknown: the profile says how much to trust it.
        return Verdict(kind=RuleKind.EVENT_LOSS, rule="on_event_loss", pattern="",
                       reason=f"{event.lost} event(s) of this agent run were lost (the ring buffer was full): "
                              "what it did then is not known", action=profile.on_event_loss, target="")
    return None


def _verdict(profile: Profile, kind: RuleKind, rule: str, pattern: str, reason: str, target: str,
             names: tuple[str, ...] = ()) -> Verdict:
    return Verdict(kind=kind, rule=rule, pattern=pattern, reason=reason, action=profile.action_for(rule),
                   target=target, names=names)


def _open_words(event: OpenEvent) -> tuple[str, str]:
    """The reason's verb, and what follows it, for an open that succeeded (or whose result is not
    known: the kernel acted at entry) and one that failed: a failed attempt is no access."""
    if event.result is not None and event.result < 0:
        return "tried to open", f" ({open_result(event.result)})"
    return "opened", ""


def decide_open(event: OpenEvent, profile: Profile, target: Target | None = None,
                secret_files: Mapping[tuple[int, int], str] = NO_FILES, program: str = "",
                sensor_files: tuple[str, ...] = ()) -> Verdict | None:
    """decide() for an open, nearly every event an agent sends: called directly, its type known.
    Most opens are allowed: the words of a verdict are found only for one."""
    writing = event.is_write
    if writing:
        tamper = _changes_sensor_file((target,), sensor_files)
        if tamper is not None:
            return tamper
    if not event.path:
        # The kernel could not read the name even after the syscall (a bad or unmapped pointer):
        # nothing can show the file was allowed, so it is not (fail closed).
        opened, outcome = _open_words(event)
        kind, rule = (RuleKind.FILE_WRITE, "files.write") if writing else (RuleKind.FILE_READ, "files.read")
        return _verdict(profile, kind, rule, "", f"{opened} a file whose name could not be read{outcome}", "")
    target = target or Target(event.path, event.path, resolved=False)
    # A secret is matched under any spelling: a symlink into ~/.aws is still ~/.aws.
    for spelling in target.spellings:
        glob = profile.is_secret(spelling)
        if glob is None:
            continue
        if program and profile.brokered_by(program, target.canonical):
            return None  # the secret's broker, reading it for the agent
        opened, outcome = _open_words(event)
        how = "" if spelling == target.literal else f" (via {target.literal})"
        return _verdict(profile, RuleKind.SECRET_ACCESS, "secrets", glob.text,
                        f"{opened} secret {spelling}{how} for {'writing' if writing else 'reading'}{outcome}",
                        spelling)
    # The same file under another name: a hard link, a bind mount, /proc/PID/root/...
    if target.file_id is not None and target.file_id in secret_files:
        glob = secret_files[target.file_id]
        opened, outcome = _open_words(event)
        return _verdict(profile, RuleKind.SECRET_ACCESS, "secrets", glob,
                        f"{opened} {target.canonical}, which is the same file as secret {glob} "
                        f"(hard link, bind mount or another path to it){outcome}", target.canonical)
    memory = target.canonical.startswith("/proc/") and PROCESS_MEMORY.fullmatch(target.canonical)
    if memory and int(memory.group(1)) != event.hdr.pid:
        return _verdict(profile, RuleKind.SECRET_ACCESS, "secrets", "/proc/PID/" + memory.group(2),
                        f"read another process's {memory.group(2)} ({target.canonical})", target.canonical)
    # Allow-lists judge the canonical path only: a symlink placed in an allowed directory must
    # not open the door to the file it points at. It is one of the spellings found no secret above.
    path = target.canonical
    if profile.lists_allow_write(path) if writing else profile.lists_allow_read(path):
        return None
    opened, outcome = _open_words(event)
    unresolved = "" if target.resolved else " (relative path; the process's directory was unknown)"
    kind, rule, purpose = ((RuleKind.FILE_WRITE, "files.write", "writing") if writing
                           else (RuleKind.FILE_READ, "files.read", "reading"))
    return _verdict(profile, kind, rule, "", f"{opened} {path} for {purpose}, outside {rule}{unresolved}{outcome}",
                    path)


def _secret_of(profile: Profile, target: Target, secret_files: Mapping[tuple[int, int], str]) -> str | None:
    """The secret glob a path is, under any of its spellings or by file identity."""
    for spelling in target.spellings:
        glob = profile.is_secret(spelling)
        if glob is not None:
            return glob.text
    if target.file_id is not None:
        return secret_files.get(target.file_id)
    return None


# What each operation does to its names: (verb for the changed name, verb for the second name).
CHANGE_VERBS = {
    FileOp.RENAME: ("renamed", "renamed a file onto"), FileOp.UNLINK: ("deleted", ""),
    FileOp.CHMOD: ("changed the mode of", ""), FileOp.CHOWN: ("changed the owner of", ""),
    FileOp.TRUNCATE: ("truncated", ""), FileOp.LINK: ("made a hard link to", "made a hard link named"),
    FileOp.SYMLINK: ("made a symlink pointing at", "made a symlink named"),
}


def _changes_sensor_file(changed: tuple[Target | None, ...], sensor_files: tuple[str, ...]) -> Verdict | None:
    """A tamper verdict if one of the names an open for writing or a file change acts on is one
    of the sensor's own files."""
    for t in changed:
        for spelling in t.spellings if t else ():
            if any(spelling == f or (f.endswith("/") and (spelling + "/").startswith(f)) for f in sensor_files):
                return Verdict(kind=RuleKind.SENSOR_TAMPER, rule="sensor", pattern="",
                               reason=f"changed {spelling}, one of the sensor's own files", action="kill",
                               target=spelling)
    return None


def _decide_change(event: FileChangeEvent, profile: Profile, target: Target | None, target2: Target | None,
                   secret_files: Mapping[tuple[int, int], str]) -> Verdict | None:
    verb, verb2 = CHANGE_VERBS[event.op]
    # Tampering: changing a secret, renaming onto one, or linking to one (a link is a new name for
    # the secret, placed where the allow-lists may let the agent read it).
    for t, how in ((target, verb), (target2, verb2) if event.op == FileOp.RENAME else (None, "")):
        glob = _secret_of(profile, t, secret_files) if t else None
        if glob is not None:
            return _verdict(profile, RuleKind.SECRET_TAMPER, "secrets", glob, f"{how} secret {t.canonical}",
                            t.canonical)
    # Every name the operation creates, removes or alters must be writable.
    changed = {FileOp.RENAME: (target, target2), FileOp.LINK: (target2,), FileOp.SYMLINK: (target2,)}.get(
        event.op, (target,))
    for t in changed:
        if t is None:
            return _verdict(profile, RuleKind.FILE_WRITE, "files.write", "",
                            f"{verb} a file whose name could not be read", "")
        if not profile.may_write(t.canonical):
            unresolved = "" if t.resolved else " (relative path; the process's directory was unknown)"
            how = verb2 if t is target2 and verb2 else verb
            return _verdict(profile, RuleKind.FILE_WRITE, "files.write", "",
                            f"{how} {t.canonical}, outside files.write{unresolved}", t.canonical)
    return None


INTERFACE_WHY = {
    "io_uring": "does file and network I/O through a ring, without the syscalls the sensor traces",
    "file_handles": "opens files by handle, without a path the rules could judge",
    "process_vm": "reads or writes another process's memory",
    "ptrace": "controls another process and reads its memory",
    "pidfd_getfd": "takes another process's open files and sockets",
    "bpf": "loads, attaches or detaches BPF programs (the sensor's own machinery)",
}


def _decide_interface(event: InterfaceEvent, profile: Profile) -> Verdict | None:
    if event.name == "sensor":
        # Whatever the profile says: an agent that can switch the sensor off is not watched.
        how = f"sent signal {event.signal} to" if event.signal else "opened a pidfd of"
        whom = "every process" if event.target_pid == -1 else f"pid {event.target_pid}"
        return Verdict(kind=RuleKind.SENSOR_TAMPER, rule="sensor", pattern="",
                       reason=f"{how} {whom}, the sensor itself", action="kill", target=whom)
    if event.name in profile.interfaces:
        return None
    other = f" (pid {event.target_pid})" if event.target_pid > 0 else ""
    return _verdict(profile, RuleKind.INTERFACE, "interfaces", "",
                    f"used {event.name}{other}, which {INTERFACE_WHY[event.name]}; not in interfaces", event.name)


# Sockets that give whoever connects control of the host's containers (and so of the host).
CONTAINER_RUNTIME_SOCKETS = re.compile(
    r"/(var/)?run/(docker\.sock|docker/.*\.sock|containerd/containerd\.sock|crio/crio\.sock|podman/podman\.sock"
    r"|buildkit/buildkitd\.sock|cri-dockerd\.sock|user/\d+/(podman/podman|docker)\.sock)")


def _decide_listen(event: ConnectEvent, profile: Profile) -> Verdict | None:
    """bind(2) to a local inet address, and listen(2), against network.listen."""
    if event.call == NetCall.LISTEN:
        if profile.network_listen:
            return None  # its address was judged at bind
        return _verdict(profile, RuleKind.NETWORK_LISTEN, "network.listen", "",
                        f"listened on a socket (fd {event.fd}); network.listen allows none", f"fd {event.fd}")
    if event.family not in (socket.AF_INET, socket.AF_INET6):
        return None  # unix sockets are local IPC: their paths are judged as files are
    ip = event.ip
    if ip is not None and profile.allowed_listen_inet(ip, event.port) is not None:
        return None
    shown = endpoint(ip, event.port)
    return _verdict(profile, RuleKind.NETWORK_LISTEN, "network.listen", "",
                    f"bound {shown}, not in network.listen", shown)


def _decide_connect(event: ConnectEvent, profile: Profile, target: Target | None,
                    names: tuple[str, ...]) -> Verdict | None:
    if event.call in (NetCall.BIND, NetCall.LISTEN):
        return _decide_listen(event, profile)
    if event.family in (socket.AF_INET, socket.AF_INET6):
        ip = event.ip
        if ip is None:
            return _verdict(profile, RuleKind.NETWORK_CONNECT, "network.connect", "",
                            "connect with a malformed address (too short for its family)", "")
        if profile.allowed_destination_inet(ip, event.port) is not None:
            return None
        # Judged by the name the agent resolved, not by whatever else shares the address.
        if profile.allowed_destination_name(names, event.port) is not None:
            return None
        shown = endpoint(ip, event.port)
        named = f" ({', '.join(names)})" if names else ""
        return _verdict(profile, RuleKind.NETWORK_CONNECT, "network.connect", "",
                        f"connect to {shown}{named}, not in network.connect", shown, names)
    if event.family == socket.AF_UNIX:
        # Abstract names (@...) have no filesystem spelling; paths are judged as resolved too.
        spellings = target.spellings if target else (event.address,)
        if any(profile.allowed_destination_unix(s) is not None for s in spellings):
            return None
        shown = f"unix:{spellings[-1]}"
        if any(CONTAINER_RUNTIME_SOCKETS.fullmatch(s) for s in spellings):
            return _verdict(profile, RuleKind.CONTAINER_RUNTIME, "network.connect", "",
                            f"connect to the container runtime socket {spellings[-1]}: control of the host's "
                            "containers; not in network.connect", shown)
        return _verdict(profile, RuleKind.NETWORK_CONNECT, "network.connect", "",
                        f"connect to {shown}, not in network.connect", shown)
    # AF_UNSPEC dissolves a UDP association and other families carry no destination rules yet.
    return None


def _decide_exec(event: ExecEvent, profile: Profile, target: Target | None) -> Verdict | None:
    if event.agent_start:
        return None  # the agent's own launch: it is what the profile describes, not an action of it
    target = target or Target(event.filename, event.filename, resolved=False)
    if not target.canonical:
        # Neither the kernel (at execve entry) nor /proc (the process was gone) showed what runs:
        # nothing shows it was allowed, so it is not (fail closed, as for an open's name), unless
        # the profile allows every program.
        if profile.allows_every_program:
            return None
        return _verdict(profile, RuleKind.EXEC, "exec", "", "executed a program whose name could not be read", "")
    for spelling in target.spellings:
        denied = profile.is_exec_denied(spelling)
        if denied is not None:
            return _verdict(profile, RuleKind.EXEC, "exec", denied.text,
                            f"executed {spelling}, which exec_deny forbids", spelling)
    # Either spelling may allow it: the literal path (e.g. /usr/bin/python3) is what the user
    # wrote in the profile, the canonical one (python3.11) is the file that runs.
    if any(profile.may_exec(s) for s in target.spellings):
        return None
    return _verdict(profile, RuleKind.EXEC, "exec", "",
                    f"executed {target.canonical}, not in exec", target.canonical)
