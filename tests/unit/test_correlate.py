"""sensor.correlate.decide: every rule kind and decision, on events built as the decoder builds
them, against profiles loaded from YAML; then on recorded kernel bytes when a recording exists."""

from __future__ import annotations

import os
import socket
import textwrap
from pathlib import Path

import pytest

from sensor.abi import ExecFlags, OpenSyscall
from sensor.correlate import RuleKind, Target, Verdict, decide
from sensor.decode import ConnectEvent, ExecEvent, ExitEvent, ForkEvent, Header, OpenEvent
from sensor.profiles import load_profile_file

HOMES = ["/root", "/home/alice"]
RECORDING = Path(__file__).resolve().parents[1] / "data" / "events.rec"

PROFILE = """\
    name: judge
    files:
      read: ["/srv/data/**", "/usr/**", "/etc/**"]
      write: ["/srv/out/**", "/tmp/**"]
    secrets: ["~/.aws/**", "~/.ssh/**", "/etc/shadow"]
    network:
      connect:
        - 127.0.0.1:8443
        - 10.0.0.0/8:443
        - "[::1]:8443"
        - unix:/run/agent-api.sock
        - unix:@dbus-*
    exec: ["/usr/bin/python3", "/usr/bin/git"]
    on_violation: {action}
"""


@pytest.fixture(params=["alert", "kill"])
def profile(request, tmp_path):
    file = tmp_path / "judge.yaml"
    file.write_text(textwrap.dedent(PROFILE.format(action=request.param)))
    return load_profile_file(file, homes=HOMES)


def hdr(pid: int = 4242) -> Header:
    return Header(ktime_ns=123_456_789, cgroup_id=1, pid=pid, tid=pid, uid=1000, gid=1000,
                  slot=0, comm="agent")


def open_ev(path: str, flags: int = os.O_RDONLY, syscall=OpenSyscall.OPENAT) -> OpenEvent:
    return OpenEvent(hdr=hdr(), dirfd=-100, flags=flags, mode=0, syscall=syscall, path=path,
                     truncated=False)


def connect_ev(family: int, address: str, port: int | None) -> ConnectEvent:
    return ConnectEvent(hdr=hdr(), fd=3, family=family, address=address, port=port)


def exec_ev(filename: str, flags: ExecFlags = ExecFlags(0)) -> ExecEvent:
    return ExecEvent(hdr=hdr(), old_tid=4242, flags=flags, dirfd=-100, filename=filename,
                     argv=(filename,), matched_slot=None)


def assert_verdict(verdict, profile, kind, rule, target, pattern=""):
    assert isinstance(verdict, Verdict), verdict
    assert verdict.kind is kind
    assert verdict.rule == rule
    assert verdict.pattern == pattern
    assert verdict.target == target
    assert verdict.action == profile.on_violation
    assert verdict.reason


# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path, glob", [
    ("/root/.aws/credentials", "~/.aws/**"),
    ("/home/alice/.ssh/id_ed25519", "~/.ssh/**"),
    ("/etc/shadow", "/etc/shadow"),
])
def test_secret_read_by_absolute_path(profile, path, glob):
    verdict = decide(open_ev(path), profile, Target(path, path))
    assert_verdict(verdict, profile, RuleKind.SECRET_ACCESS, "secrets", path, pattern=glob)
    assert "for reading" in verdict.reason
    assert "via" not in verdict.reason


def test_secret_wins_over_files_read(profile):
    # /etc/** is readable, /etc/shadow is a secret.
    assert decide(open_ev("/etc/passwd"), profile, Target("/etc/passwd", "/etc/passwd")) is None
    verdict = decide(open_ev("/etc/shadow"), profile, Target("/etc/shadow", "/etc/shadow"))
    assert verdict.kind is RuleKind.SECRET_ACCESS


def test_secret_reached_through_symlink(profile):
    # The literal name is in an allowed directory; the file it resolves to is a secret.
    target = Target("/srv/data/innocent", "/root/.aws/credentials")
    verdict = decide(open_ev("/srv/data/innocent"), profile, target)
    assert_verdict(verdict, profile, RuleKind.SECRET_ACCESS, "secrets", "/root/.aws/credentials",
                   pattern="~/.aws/**")
    assert "via" in verdict.reason and "/srv/data/innocent" in verdict.reason


def test_secret_named_literally_but_resolving_elsewhere(profile):
    # A secret's spelling is a secret even if it is a symlink to an allowed file.
    target = Target("/home/alice/.ssh/config", "/srv/data/config")
    verdict = decide(open_ev("/home/alice/.ssh/config"), profile, target)
    assert_verdict(verdict, profile, RuleKind.SECRET_ACCESS, "secrets", "/home/alice/.ssh/config",
                   pattern="~/.ssh/**")


def test_secret_opened_for_writing(profile):
    path = "/home/alice/.ssh/authorized_keys"
    verdict = decide(open_ev(path, os.O_WRONLY | os.O_APPEND), profile, Target(path, path))
    assert_verdict(verdict, profile, RuleKind.SECRET_ACCESS, "secrets", path, pattern="~/.ssh/**")
    assert "for writing" in verdict.reason


# --- files -----------------------------------------------------------------------------------


def test_read_inside_files_read(profile):
    assert decide(open_ev("/srv/data/a.csv"), profile, Target("/srv/data/a.csv", "/srv/data/a.csv")) is None
    assert decide(open_ev("/srv/data"), profile, Target("/srv/data", "/srv/data")) is None


def test_read_outside_files_read(profile):
    verdict = decide(open_ev("/var/log/syslog"), profile, Target("/var/log/syslog", "/var/log/syslog"))
    assert_verdict(verdict, profile, RuleKind.FILE_READ, "files.read", "/var/log/syslog")
    assert "/var/log/syslog" in verdict.reason and "files.read" in verdict.reason


def test_a_failed_open_is_reported_as_an_attempt_with_its_error(profile):
    """Still a violation (the agent tried), but the reason does not say the file was opened."""
    target = Target("/var/log/nothing-here", "/var/log/nothing-here")
    failed = decide(open_ev("/var/log/nothing-here")._replace(result=-2), profile, target)
    assert failed.reason == "tried to open /var/log/nothing-here for reading, outside files.read (ENOENT)"
    denied = decide(open_ev("/var/log/nothing-here")._replace(result=-13), profile, target)
    assert denied.reason.startswith("tried to open") and denied.reason.endswith("(EACCES)")
    opened = decide(open_ev("/var/log/nothing-here")._replace(result=3), profile, target)
    assert opened.reason == "opened /var/log/nothing-here for reading, outside files.read"


def test_write_inside_files_write(profile):
    path = "/srv/out/report.txt"
    assert decide(open_ev(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), profile, Target(path, path)) is None


def test_write_outside_files_write(profile):
    # Readable is not writable.
    path = "/srv/data/a.csv"
    verdict = decide(open_ev(path, os.O_WRONLY), profile, Target(path, path))
    assert_verdict(verdict, profile, RuleKind.FILE_WRITE, "files.write", path)
    assert "for writing" in verdict.reason


def test_read_of_writable_path(profile):
    path = "/tmp/scratch/x"
    assert decide(open_ev(path), profile, Target(path, path)) is None


@pytest.mark.parametrize("flag", [os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND])
def test_write_flags(profile, flag):
    path = "/srv/data/a.csv"  # readable, not writable
    event = open_ev(path, os.O_RDONLY | flag | os.O_CLOEXEC)
    assert event.is_write
    verdict = decide(event, profile, Target(path, path))
    assert_verdict(verdict, profile, RuleKind.FILE_WRITE, "files.write", path)


def test_read_only_flags_are_reads(profile):
    event = open_ev("/var/x", os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_DIRECTORY)
    assert not event.is_write
    assert decide(event, profile, Target("/var/x", "/var/x")).kind is RuleKind.FILE_READ


def test_creat_syscall_is_a_write(profile):
    # creat(2) is reported with the flags it implies.
    event = open_ev("/srv/data/new", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, syscall=OpenSyscall.CREAT)
    assert decide(event, profile, Target("/srv/data/new", "/srv/data/new")).kind is RuleKind.FILE_WRITE


def test_symlink_out_of_allowed_directory(profile):
    # Allow-lists judge the canonical path: a link in /srv/data to /var/secret-ish is not readable.
    target = Target("/srv/data/link", "/var/lib/private/db")
    verdict = decide(open_ev("/srv/data/link"), profile, target)
    assert_verdict(verdict, profile, RuleKind.FILE_READ, "files.read", "/var/lib/private/db")
    write_target = Target("/tmp/link", "/var/lib/private/db")
    verdict = decide(open_ev("/tmp/link", os.O_WRONLY), profile, write_target)
    assert_verdict(verdict, profile, RuleKind.FILE_WRITE, "files.write", "/var/lib/private/db")


def test_symlink_into_allowed_directory(profile):
    # The other way round: the literal name is outside, the file is inside.
    assert decide(open_ev("/opt/link"), profile, Target("/opt/link", "/srv/data/a.csv")) is None


def test_unresolved_relative_path(profile):
    verdict = decide(open_ev("notes.txt"), profile, Target("notes.txt", "notes.txt", resolved=False))
    assert_verdict(verdict, profile, RuleKind.FILE_READ, "files.read", "notes.txt")
    assert "directory was unknown" in verdict.reason
    # Without a target at all, the path is judged as given, unresolved.
    verdict = decide(open_ev("notes.txt", os.O_WRONLY), profile)
    assert_verdict(verdict, profile, RuleKind.FILE_WRITE, "files.write", "notes.txt")
    assert "directory was unknown" in verdict.reason


def test_resolved_violation_does_not_claim_unknown_directory(profile):
    verdict = decide(open_ev("/var/x"), profile, Target("/var/x", "/var/x"))
    assert "unknown" not in verdict.reason


@pytest.mark.parametrize("flags, kind, rule", [
    (os.O_RDONLY, RuleKind.FILE_READ, "files.read"),
    (os.O_WRONLY | os.O_CREAT, RuleKind.FILE_WRITE, "files.write"),
])
def test_unreadable_name_fails_closed(profile, flags, kind, rule):
    verdict = decide(open_ev("", flags), profile, None)
    assert_verdict(verdict, profile, kind, rule, "")
    assert "could not be read" in verdict.reason


# --- network ---------------------------------------------------------------------------------


def test_connect_allowed_ipv4(profile):
    assert decide(connect_ev(socket.AF_INET, "127.0.0.1", 8443), profile) is None


def test_connect_disallowed_port(profile):
    verdict = decide(connect_ev(socket.AF_INET, "127.0.0.1", 9), profile)
    assert_verdict(verdict, profile, RuleKind.NETWORK_CONNECT, "network.connect", "127.0.0.1:9")
    assert "127.0.0.1:9" in verdict.reason


def test_connect_ipv6(profile):
    assert decide(connect_ev(socket.AF_INET6, "::1", 8443), profile) is None
    verdict = decide(connect_ev(socket.AF_INET6, "::1", 22), profile)
    assert_verdict(verdict, profile, RuleKind.NETWORK_CONNECT, "network.connect", "[::1]:22")
    verdict = decide(connect_ev(socket.AF_INET6, "2001:db8::1", 8443), profile)
    assert verdict.target == "[2001:db8::1]:8443"


def test_connect_v4_mapped(profile):
    assert decide(connect_ev(socket.AF_INET6, "::ffff:127.0.0.1", 8443), profile) is None
    assert decide(connect_ev(socket.AF_INET6, "::ffff:10.1.2.3", 443), profile) is None
    verdict = decide(connect_ev(socket.AF_INET6, "::ffff:127.0.0.1", 9), profile)
    assert verdict.kind is RuleKind.NETWORK_CONNECT


def test_connect_cidr(profile):
    assert decide(connect_ev(socket.AF_INET, "10.200.3.4", 443), profile) is None
    assert decide(connect_ev(socket.AF_INET, "10.200.3.4", 80), profile).target == "10.200.3.4:80"
    assert decide(connect_ev(socket.AF_INET, "11.0.0.1", 443), profile).target == "11.0.0.1:443"


def test_connect_unix_path(profile):
    assert decide(connect_ev(socket.AF_UNIX, "/run/agent-api.sock", None), profile) is None
    verdict = decide(connect_ev(socket.AF_UNIX, "/run/other.sock", None), profile)
    assert_verdict(verdict, profile, RuleKind.NETWORK_CONNECT, "network.connect", "unix:/run/other.sock")


def test_connect_unix_abstract(profile):
    assert decide(connect_ev(socket.AF_UNIX, "@dbus-abc/def", None), profile) is None
    verdict = decide(connect_ev(socket.AF_UNIX, "@other", None), profile)
    assert_verdict(verdict, profile, RuleKind.NETWORK_CONNECT, "network.connect", "unix:@other")
    # An abstract name is not the file of the same name.
    assert decide(connect_ev(socket.AF_UNIX, "@/run/agent-api.sock", None), profile) is not None


def test_connect_unspec_is_not_judged(profile):
    assert decide(connect_ev(socket.AF_UNSPEC, "", None), profile) is None
    assert decide(connect_ev(0, "", None), profile) is None


# --- exec ------------------------------------------------------------------------------------


def test_exec_allowed(profile):
    assert decide(exec_ev("/usr/bin/git"), profile, Target("/usr/bin/git", "/usr/bin/git")) is None


def test_exec_allowed_by_literal_spelling(profile):
    target = Target("/usr/bin/python3", "/usr/bin/python3.11")
    assert decide(exec_ev("/usr/bin/python3"), profile, target) is None


def test_exec_allowed_by_canonical_spelling(profile):
    target = Target("/opt/bin/git", "/usr/bin/git")
    assert decide(exec_ev("/opt/bin/git"), profile, target) is None


def test_exec_not_allowed(profile):
    target = Target("/usr/bin/sh", "/usr/bin/dash")
    verdict = decide(exec_ev("/usr/bin/sh"), profile, target)
    assert_verdict(verdict, profile, RuleKind.EXEC, "exec", "/usr/bin/dash")
    assert "/usr/bin/dash" in verdict.reason


def test_exec_without_target_judges_filename(profile):
    verdict = decide(exec_ev("/usr/bin/curl"), profile)
    assert_verdict(verdict, profile, RuleKind.EXEC, "exec", "/usr/bin/curl")


@pytest.mark.parametrize("lists, violation", [
    ('exec: ["/usr/**"]', True),
    ('exec: ["/**"]\nexec_deny: ["/usr/bin/curl"]', True),
    ('exec: ["/**"]', False),
])
def test_an_exec_whose_program_is_unknown_is_allowed_only_where_every_program_is(tmp_path, lists, violation):
    """No name in the event (unreadable at execve entry) and none from /proc (the process was
    gone): nothing shows what ran, so it is allowed only where any program would be."""
    (tmp_path / "p.yaml").write_text(f"name: p\n{lists}\n")
    profile = load_profile_file(tmp_path / "p.yaml", homes=["/root"])
    verdict = decide(exec_ev(""), profile)
    if not violation:
        assert verdict is None
        return
    assert_verdict(verdict, profile, RuleKind.EXEC, "exec", "")
    assert "could not be read" in verdict.reason


@pytest.mark.parametrize("program", ["/usr/bin/curl", "/usr/bin/git", ""])
def test_agent_start_is_never_judged(profile, program):
    event = exec_ev(program, ExecFlags.AGENT_START | ExecFlags.KERNEL_MATCHED)
    assert event.agent_start
    assert decide(event, profile, Target(program, program) if program else None) is None


# --- other events ----------------------------------------------------------------------------


def test_fork_and_exit_are_never_judged(profile):
    assert decide(ForkEvent(hdr=hdr(), child_pid=4243, parent_pid=4242), profile) is None
    assert decide(ExitEvent(hdr=hdr()), profile) is None


def test_verdict_action_follows_profile(tmp_path):
    for action in ("alert", "kill"):
        file = tmp_path / f"{action}.yaml"
        file.write_text(f"name: p-{action}\non_violation: {action}\n")
        empty = load_profile_file(file, homes=HOMES)
        for event in (open_ev("/x"), connect_ev(socket.AF_INET, "1.2.3.4", 80), exec_ev("/bin/true")):
            assert decide(event, empty, None).action == action
    # on_violation left out: alert.
    file = tmp_path / "default.yaml"
    file.write_text("name: p-default\n")
    assert decide(open_ev("/x"), load_profile_file(file, homes=HOMES)).action == "alert"


# --- recorded events -------------------------------------------------------------------------


def _recorded_events():
    if not RECORDING.exists():
        pytest.skip(f"no recording at {RECORDING}")
    from sensor.decode import decode
    from sensor.source import read_recording
    events = [decode(data) for data in read_recording(RECORDING)]
    assert events, "the recording holds no events"
    return events


def test_recorded_events_decide(profile):
    """Every recorded event decides without error, with the invariants of the live path."""
    events = _recorded_events()
    kinds = set()
    for event in events:
        kinds.add(event.kind)
        target = None
        if isinstance(event, OpenEvent) and event.path.startswith("/"):
            target = Target(os.path.normpath(event.path), os.path.normpath(event.path))
        verdict = decide(event, profile, target)
        if isinstance(event, (ForkEvent, ExitEvent)):
            assert verdict is None
        elif isinstance(event, ExecEvent) and event.agent_start:
            assert verdict is None
        if verdict is not None:
            assert verdict.action == profile.on_violation
            assert verdict.reason
        if isinstance(event, OpenEvent) and target is not None and profile.is_secret(target.canonical):
            assert verdict is not None and verdict.kind is RuleKind.SECRET_ACCESS
        if isinstance(event, ConnectEvent) and event.family in (socket.AF_INET, socket.AF_INET6):
            allowed = profile.allowed_destination_inet(event.ip, event.port) is not None
            assert (verdict is None) == allowed
    assert kinds & {"open", "connect", "exec"}, kinds


def test_recorded_events_against_an_empty_profile(tmp_path):
    """With nothing allowed, every judged event with a name is a violation."""
    events = _recorded_events()
    file = tmp_path / "nothing.yaml"
    file.write_text("name: nothing\non_violation: kill\n")
    nothing = load_profile_file(file, homes=HOMES)
    for event in events:
        verdict = decide(event, nothing)
        if isinstance(event, OpenEvent):
            assert verdict is not None and verdict.kind in (RuleKind.FILE_READ, RuleKind.FILE_WRITE)
            assert verdict.kind is (RuleKind.FILE_WRITE if event.is_write else RuleKind.FILE_READ)
        elif isinstance(event, ExecEvent) and not event.agent_start:
            assert verdict is not None and verdict.kind is RuleKind.EXEC
        elif isinstance(event, ConnectEvent) and event.family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            assert verdict is not None and verdict.kind is RuleKind.NETWORK_CONNECT
        else:
            assert verdict is None
        if verdict is not None:
            assert verdict.action == "kill"


# --- malformed destinations ------------------------------------------------------------------


@pytest.mark.parametrize("family, addrlen", [(socket.AF_INET, 4), (socket.AF_INET6, 8)])
def test_connect_with_short_sockaddr_does_not_raise(profile, family, addrlen):
    import struct
    from sensor.decode import decode_sockaddr
    raw = struct.pack("=H", family) + bytes(126)
    fam, address, port = decode_sockaddr(raw, addrlen)
    assert (fam, address, port) == (family, "", None)
    event = ConnectEvent(hdr=hdr(), fd=3, family=fam, address=address, port=port)
    verdict = decide(event, profile)
    # Nothing shows the destination was allowed: fail closed, as for an unreadable file name.
    assert verdict is not None and verdict.kind is RuleKind.NETWORK_CONNECT


def test_exec_deny_wins_over_an_allowed_program(tmp_path):
    path = tmp_path / "deny.yaml"
    path.write_text('name: d\nexec: ["/usr/bin/**"]\nexec_deny: ["/usr/bin/curl"]\non_violation: kill\n')
    profile = load_profile_file(path, homes=["/root"])
    event = ExecEvent(hdr=hdr(), old_tid=1, flags=ExecFlags(0), dirfd=-100, filename="/usr/bin/curl",
                      argv=("curl",), matched_slot=None)
    verdict = decide(event, profile, Target("/usr/bin/curl", "/usr/bin/curl"))
    assert verdict.kind is RuleKind.EXEC and verdict.pattern == "/usr/bin/curl"
    assert "exec_deny" in verdict.reason and verdict.action == "kill"


def test_same_file_under_another_name_is_the_secret(tmp_path):
    """A hard link (or bind mount) to a secret has another path but the same (device, inode)."""
    from sensor.secret_files import secret_file_ids
    secret = tmp_path / "vault" / "key"
    secret.parent.mkdir()
    secret.write_text("k")
    link = tmp_path / "public" / "innocent.txt"
    link.parent.mkdir()
    os.link(secret, link)
    path = tmp_path / "p.yaml"
    path.write_text(f'name: h\nfiles:\n  read: ["{tmp_path}/public/**"]\nsecrets: ["{tmp_path}/vault/**"]\n')
    profile = load_profile_file(path, homes=["/root"])
    ids = secret_file_ids(profile)
    st = os.stat(link)
    event = OpenEvent(hdr=hdr(), dirfd=-100, flags=os.O_RDONLY, mode=0, syscall=OpenSyscall.OPENAT,
                      path=str(link), truncated=False)
    target = Target(str(link), str(link), file_id=(st.st_dev, st.st_ino))
    verdict = decide(event, profile, target, ids)
    assert verdict.kind is RuleKind.SECRET_ACCESS and verdict.pattern == f"{tmp_path}/vault/**"
    assert "same file as secret" in verdict.reason
    assert decide(event, profile, target) is None  # by name alone the link is an allowed read


@pytest.mark.parametrize("path, secret", [
    ("/proc/4242/environ", True), ("/proc/4242/mem", True), ("/proc/4242/task/4243/maps", True),
    ("/proc/77/environ", False),  # its own
    ("/proc/4242/status", False), ("/proc/4242/environ-x", False),
])
def test_another_process_memory_is_secret(tmp_path, path, secret):
    p = tmp_path / "p.yaml"
    p.write_text('name: m\nfiles:\n  read: ["/proc/**"]\n')
    profile = load_profile_file(p, homes=["/root"])
    event = OpenEvent(hdr=hdr(pid=77), dirfd=-100, flags=os.O_RDONLY, mode=0, syscall=OpenSyscall.OPENAT,
                      path=path, truncated=False)
    verdict = decide(event, profile, Target(path, path))
    assert (verdict is not None and verdict.kind is RuleKind.SECRET_ACCESS) is secret


@pytest.mark.parametrize("path, kind", [
    ("/var/run/docker.sock", RuleKind.CONTAINER_RUNTIME), ("/run/containerd/containerd.sock", RuleKind.CONTAINER_RUNTIME),
    ("/run/user/1000/podman/podman.sock", RuleKind.CONTAINER_RUNTIME), ("/run/other.sock", RuleKind.NETWORK_CONNECT),
])
def test_container_runtime_sockets_are_a_named_rule(tmp_path, path, kind):
    p = tmp_path / "p.yaml"
    p.write_text('name: c\nnetwork:\n  connect: ["unix:/run/allowed.sock"]\n')
    profile = load_profile_file(p, homes=["/root"])
    event = ConnectEvent(hdr=hdr(), fd=3, family=socket.AF_UNIX, address=path, port=None)
    assert decide(event, profile).kind is kind


def test_unix_sockets_are_judged_by_every_spelling(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text('name: c\nnetwork:\n  connect: ["unix:/run/docker.sock"]\n')
    profile = load_profile_file(p, homes=["/root"])
    event = ConnectEvent(hdr=hdr(), fd=3, family=socket.AF_UNIX, address="/var/run/docker.sock", port=None)
    assert decide(event, profile, Target("/var/run/docker.sock", "/run/docker.sock")) is None  # explicitly allowed
    relative = ConnectEvent(hdr=hdr(), fd=3, family=socket.AF_UNIX, address="docker.sock", port=None)
    nothing_allowed = load_profile_file(_write(tmp_path, "name: d\n"), homes=["/root"])
    verdict = decide(relative, nothing_allowed, Target("/run/docker.sock", "/run/docker.sock"))
    assert verdict.kind is RuleKind.CONTAINER_RUNTIME and verdict.target == "unix:/run/docker.sock"


def _write(tmp_path, text):
    path = tmp_path / "q.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("call, family, address, port, listen, violation", [
    ("BIND", socket.AF_INET, "127.0.0.1", 8080, ["127.0.0.1:8080"], False),
    ("BIND", socket.AF_INET, "0.0.0.0", 8080, ["127.0.0.1:8080"], True),    # all interfaces: not listed
    ("BIND", socket.AF_INET6, "::1", 9000, ["127.0.0.1:8080"], True),
    ("BIND", socket.AF_INET, "127.0.0.1", 0, ["127.0.0.1:*"], False),      # ephemeral port, if allowed
    ("BIND", socket.AF_UNIX, "/tmp/x.sock", None, [], False),              # local IPC: judged as a file
    ("LISTEN", 0, "", None, [], True),
    ("LISTEN", 0, "", None, ["127.0.0.1:8080"], False),                     # its bind was judged
])
def test_listeners(tmp_path, call, family, address, port, listen, violation):
    from sensor.abi import NetCall
    p = tmp_path / "p.yaml"
    p.write_text(f"name: l\nnetwork:\n  listen: {listen!r}\n".replace("'", '"'))
    profile = load_profile_file(p, homes=["/root"])
    event = ConnectEvent(hdr=hdr(), fd=5, family=family, address=address, port=port, call=NetCall[call])
    verdict = decide(event, profile)
    assert (verdict is not None) is violation
    if verdict:
        assert verdict.kind is RuleKind.NETWORK_LISTEN and verdict.rule == "network.listen"


def test_a_broker_may_open_its_secret_and_nobody_else(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(f'name: b\nfiles:\n  read: ["/**"]\nbrokers:\n  "/opt/vault/bin/vault": ["{tmp_path}/vault/**"]\n')
    profile = load_profile_file(path, homes=["/root"])
    token = f"{tmp_path}/vault/token"
    event = OpenEvent(hdr=hdr(), dirfd=-100, flags=os.O_RDONLY, mode=0, syscall=OpenSyscall.OPENAT, path=token,
                      truncated=False)
    assert decide(event, profile, Target(token, token), program="/opt/vault/bin/vault") is None
    for program in ("/usr/bin/python3", "/opt/vault/bin/vault-other", ""):
        verdict = decide(event, profile, Target(token, token), program=program)
        assert verdict.kind is RuleKind.SECRET_ACCESS and verdict.pattern == f"{tmp_path}/vault/**"


def test_lost_events_are_judged_by_on_event_loss(tmp_path):
    from sensor.decode import EventLoss
    path = tmp_path / "p.yaml"
    path.write_text("name: l\non_violation: kill\non_event_loss: quarantine\n")
    profile = load_profile_file(path, homes=["/root"])
    verdict = decide(EventLoss(hdr=hdr(), lost=12), profile)
    assert verdict.kind is RuleKind.EVENT_LOSS and verdict.action == "quarantine"
    assert verdict.reason.startswith("12 event(s) of this agent run were lost")
    path.write_text("name: l\n")
    assert decide(EventLoss(hdr=hdr(), lost=1), load_profile_file(path, homes=["/root"])).action == "alert"
