"""The alert bus (ids, backlog, fan-out, slow consumers) and the alert a verdict becomes."""

from __future__ import annotations

import json
import os
import socket
import textwrap
import threading
import time

import pytest

import sensor.alerts as alerts_mod
from sensor._proto.agent_sensor.v1 import sensor_pb2 as pb
from sensor.abi import ExecFlags, OpenSyscall
from sensor.alerts import AlertBus, add_ancestry, alert_to_dict, build_alert, complete_action, log_line
from sensor.export.spool import AlertSpool, Retention
from sensor.correlate import Target, decide
from sensor.decode import ConnectEvent, ExecEvent, Header, OpenEvent
from sensor.processes import AgentInstance, ProcessInfo
from sensor.profiles import load_profile_file

HOMES = ["/root", "/home/alice"]


# --- the bus and its spool ---------------------------------------------------------------------


@pytest.fixture
def spool(tmp_path):
    store = AlertSpool(tmp_path / "alerts.db")
    yield store
    store.close()


@pytest.fixture
def bus(spool):
    return AlertBus(spool)


def alert(agent: str = "a", kind=pb.RULE_KIND_FILE_READ, reason: str = "") -> pb.Alert:
    return pb.Alert(agent=pb.Agent(name=agent), rule=pb.Rule(kind=kind), reason=reason)


def publish(bus, agent: str = "a", kind=pb.RULE_KIND_FILE_READ, reason: str = "") -> pb.Alert:
    made = alert(agent, kind, reason)
    made.id = bus.next_id()
    bus.publish(made)
    return made


def drain(sub) -> list[pb.Alert]:
    out = []
    while not sub.queue.empty():
        out.append(sub.queue.get_nowait())
    return out


def everything(_alert) -> bool:
    return True


def test_ids_increase_from_one_and_never_repeat_across_restarts_or_pruning(tmp_path):
    spool = AlertSpool(tmp_path / "a.db")
    bus = AlertBus(spool)
    assert [publish(bus).id for _ in range(5)] == [1, 2, 3, 4, 5]
    spool.close()
    # A restart: the next id follows the last, even once every stored alert is pruned.
    pruned = AlertSpool(tmp_path / "a.db", Retention(max_bytes=1))
    pruned.prune()
    assert pruned.oldest_id() == 0
    assert AlertBus(pruned).next_id() == 6
    pruned.close()


def test_ids_are_unique_across_threads(bus):
    ids: list[int] = []
    lock = threading.Lock()

    def take():
        got = [bus.next_id() for _ in range(200)]
        with lock:
            ids.extend(got)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == list(range(1, 801))


def test_backlog_then_live(bus):
    for i in range(1, 6):
        publish(bus, reason=f"r{i}")
    assert bus.published == 5
    sub, recent = bus.subscribe(everything, backlog=3)
    assert [a.reason for a in recent] == ["r3", "r4", "r5"]
    assert drain(sub) == []  # the backlog is returned, not queued twice
    publish(bus, reason="r6")
    assert [a.reason for a in drain(sub)] == ["r6"]


def test_backlog_zero_gives_no_history(bus):
    for i in range(3):
        publish(bus, reason=f"r{i}")
    sub, recent = bus.subscribe(everything, backlog=0)
    assert recent == []
    publish(bus, reason="later")
    assert [a.reason for a in drain(sub)] == ["later"]


def test_since_id_gives_every_later_alert_once_in_order(bus):
    for i in range(1, 8):
        publish(bus, reason=f"r{i}")
    sub, missed = bus.subscribe(everything, backlog=0, since_id=4)
    assert [a.id for a in missed] == [5, 6, 7]
    publish(bus, reason="r8")
    assert [a.id for a in drain(sub)] == [8]


def test_an_alert_reserved_but_never_stored_is_skipped(bus):
    """A daemon killed between taking an id and storing the alert leaves an empty row."""
    publish(bus, reason="r1")
    bus.next_id()  # id 2: never stored
    publish(bus, reason="r3")
    _, missed = bus.subscribe(everything, backlog=0, since_id=0)
    assert [a.id for a in missed] == [1, 3]


def test_staged_alerts_are_durable_before_they_are_published(tmp_path):
    spool = AlertSpool(tmp_path / "a.db")
    staged = alert(reason="acting")
    staged.id = AlertBus(spool).next_id()
    AlertBus(spool).stage(staged)
    spool.close()
    reopened = AlertSpool(tmp_path / "a.db")
    assert [a.reason for a in reopened.after(0)] == ["acting"]
    reopened.close()


def test_filters_apply_to_backlog_and_live(bus):
    publish(bus, "crm", reason="c1")
    publish(bus, "coder", reason="x1")
    publish(bus, "crm", pb.RULE_KIND_EXEC, reason="c2")
    publish(bus, "coder", reason="x2")
    only_crm, recent = bus.subscribe(lambda a: a.agent.name == "crm", backlog=10)
    assert [a.reason for a in recent] == ["c1", "c2"]
    # The backlog counts matching alerts only: the last 1 crm alert, not the last alert overall.
    _, last = bus.subscribe(lambda a: a.agent.name == "crm", backlog=1)
    assert [a.reason for a in last] == ["c2"]
    only_exec, recent = bus.subscribe(lambda a: a.rule.kind == pb.RULE_KIND_EXEC, backlog=10)
    assert [a.reason for a in recent] == ["c2"]
    publish(bus, "coder", reason="x3")
    publish(bus, "crm", reason="c3")
    assert [a.reason for a in drain(only_crm)] == ["c3"]
    assert drain(only_exec) == []


def test_a_slow_consumer_never_blocks_and_catches_up_from_the_spool(bus, monkeypatch):
    monkeypatch.setattr(alerts_mod, "CONSUMER_QUEUE", 3)
    slow, _ = bus.subscribe(everything, backlog=0)
    fast, _ = bus.subscribe(everything, backlog=0)
    received: list[str] = []
    done = threading.Event()

    def publish_all():
        for i in range(10):
            publish(bus, reason=f"r{i}")
            received.extend(a.reason for a in drain(fast))  # the fast consumer keeps up
        done.set()

    threading.Thread(target=publish_all, daemon=True).start()
    assert done.wait(30), "publish blocked on a full subscriber queue"
    assert received == [f"r{i}" for i in range(10)] and not fast.overflowed
    assert slow.overflowed and slow.overflows == 1
    # The stream sent r0..r1, say; it catches up from the spool from there, each alert once.
    first = drain(slow)[:2]
    rest = bus.catch_up(slow, first[-1].id)
    assert [a.reason for a in first + rest] == [f"r{i}" for i in range(10)]
    assert not slow.overflowed and bus.catch_ups == 1
    publish(bus, reason="r10")
    assert [a.reason for a in drain(slow)] == ["r10"]


def test_filtered_out_alerts_do_not_fill_a_queue(bus, monkeypatch):
    monkeypatch.setattr(alerts_mod, "CONSUMER_QUEUE", 1)
    sub, _ = bus.subscribe(lambda a: a.agent.name == "crm", backlog=0)
    for _ in range(5):
        publish(bus, "coder")
    assert not sub.overflowed and sub.queue.empty()


def test_unsubscribe_stops_delivery(bus):
    sub, _ = bus.subscribe(everything, backlog=0)
    other, _ = bus.subscribe(everything, backlog=0)
    publish(bus, reason="before")
    bus.unsubscribe(sub)
    publish(bus, reason="after")
    assert [a.reason for a in drain(sub)] == ["before"]
    assert [a.reason for a in drain(other)] == ["before", "after"]
    bus.unsubscribe(sub)  # twice: harmless


def test_retention_prunes_the_oldest_by_age_and_by_size(tmp_path):
    now = [1000.0]
    spool = AlertSpool(tmp_path / "a.db", Retention(max_bytes=10**6, max_age_s=100), clock=lambda: now[0])
    bus = AlertBus(spool)
    publish(bus, reason="old")
    now[0] += 150
    publish(bus, reason="new")
    spool.prune()
    assert [a.reason for a in spool.after(0)] == ["new"]
    size = len(spool.after(0).__next__().SerializeToString())
    spool.retention = Retention(max_bytes=2 * size, max_age_s=100)
    for i in range(3):
        publish(bus, reason="new")
    spool.prune()
    assert [a.id for a in spool.after(0)] == [4, 5]  # the newest that fit
    spool.close()


# --- building alerts -------------------------------------------------------------------------


@pytest.fixture
def profile(tmp_path):
    file = tmp_path / "crm.yaml"
    file.write_text(textwrap.dedent("""\
        name: crm
        files:
          read: ["/usr/**"]
        secrets: ["~/.aws/**"]
        network:
          connect: ["127.0.0.1:8443"]
        exec: ["/usr/bin/git"]
        on_violation: kill
    """))
    return load_profile_file(file, homes=HOMES)


def header(pid: int, ktime_ns: int | None = None) -> Header:
    return Header(ktime_ns=time.monotonic_ns() if ktime_ns is None else ktime_ns, cgroup_id=7,
                  pid=pid, tid=pid, uid=os.getuid(), gid=os.getgid(), slot=0, comm="python3")


def context(profile):
    agent = AgentInstance(profile=profile, slot=0, root_pid=4000, start_ticks=12345, how="exec")
    process = ProcessInfo(pid=4001, ppid=4000, exe="/usr/bin/python3.11",
                          cmdline=("python3", "crm_agent.py", "--queue", "eu"), uid=os.getuid(),
                          start_ticks=12400, cwd="/srv/crm", agent=agent)
    parent = ProcessInfo(pid=4000, ppid=1, exe="/usr/bin/bash", cmdline=("bash",), uid=os.getuid(),
                         start_ticks=12345, agent=agent)
    init = ProcessInfo(pid=1, ppid=0, exe="/sbin/init", cmdline=("/sbin/init",), uid=0, start_ticks=1)
    return agent, process, [parent, init]


def ts_ns(ts) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


def test_build_alert_for_an_open(profile, tmp_path):
    agent, process, ancestry = context(profile)
    event = OpenEvent(hdr=header(4001), dirfd=-100, flags=os.O_RDONLY, mode=0,
                      syscall=OpenSyscall.OPENAT, path="../../root/.aws/credentials", truncated=False)
    target = Target("/root/.aws/credentials", "/root/.aws/credentials")
    verdict = decide(event, profile, target)
    before = time.time_ns()
    a = build_alert(17, verdict, event, target, agent, process)
    add_ancestry(a, ancestry)
    complete_action(a, True, "killed 2 process(es): 4000, 4001", [4000, 4001])
    after = time.time_ns()

    assert a.id == 17
    assert a.hostname == socket.gethostname()
    assert (a.agent.name, a.agent.instance_id, a.agent.root_pid) == ("crm", "crm/4000.12345", 4000)
    assert a.agent.profile_file == profile.source == str(tmp_path / "crm.yaml")
    assert a.rule.kind == pb.RULE_KIND_SECRET_ACCESS
    assert (a.rule.name, a.rule.pattern) == ("secrets", "~/.aws/**")
    assert a.reason == verdict.reason and "/root/.aws/credentials" in a.reason

    assert a.process.pid == 4001 and a.process.ppid == 4000
    assert a.process.exe == "/usr/bin/python3.11"
    assert list(a.process.cmdline) == ["python3", "crm_agent.py", "--queue", "eu"]
    assert a.process.uid == os.getuid() and a.process.start_ticks == 12400
    assert a.process.user == (process.user or "")
    assert [p.pid for p in a.ancestry] == [4000, 1]
    assert a.ancestry[0].exe == "/usr/bin/bash" and a.ancestry[1].user == "root"

    assert a.event.type == "open" and a.event.WhichOneof("detail") == "file"
    f = a.event.file
    assert f.path == "../../root/.aws/credentials"
    assert f.resolved_path == "/root/.aws/credentials"
    assert not f.write and f.flags == os.O_RDONLY and f.syscall == "openat" and not f.truncated

    assert a.action.kind == pb.ACTION_KIND_KILL
    assert a.action.completed and a.action.result == "killed 2 process(es): 4000, 4001"
    assert list(a.action.signalled_pids) == [4000, 4001]

    assert a.timing.kernel_ktime_ns == event.hdr.ktime_ns
    event_t, decided_t, action_t = (ts_ns(a.timing.event_time), ts_ns(a.timing.decided_time),
                                    ts_ns(a.timing.action_time))
    assert event_t <= decided_t <= action_t
    assert before - 5_000_000_000 < event_t <= before + 1_000_000  # wall clock, not monotonic
    assert before <= decided_t <= after and action_t <= after


def test_event_time_is_the_kernel_stamp_in_wall_clock(profile):
    agent, process, _ = context(profile)
    two_seconds_ago = time.monotonic_ns() - 2_000_000_000
    event = ConnectEvent(hdr=header(4001, two_seconds_ago), fd=3, family=socket.AF_INET,
                         address="127.0.0.1", port=9)
    a = build_alert(1, decide(event, profile), event, None, agent, process)
    lag = ts_ns(a.timing.decided_time) - ts_ns(a.timing.event_time)
    assert 1_900_000_000 < lag < 3_000_000_000


def test_build_alert_for_a_write(profile):
    agent, process, _ = context(profile)
    event = OpenEvent(hdr=header(4001), dirfd=-100, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode=0o644,
                      syscall=OpenSyscall.CREAT, path="/etc/cron.d/x", truncated=False)
    target = Target("/etc/cron.d/x", "/etc/cron.d/x")
    a = build_alert(2, decide(event, profile, target), event, target, agent, process)
    assert a.rule.kind == pb.RULE_KIND_FILE_WRITE and a.rule.name == "files.write" and a.rule.pattern == ""
    assert a.event.file.write and a.event.file.syscall == "creat"
    assert a.action.result == "" and not a.action.completed  # pending until complete_action
    assert not a.HasField("timing") or ts_ns(a.timing.action_time) == 0


@pytest.mark.parametrize("family, address, port, shown", [
    (socket.AF_INET, "127.0.0.1", 9, "inet"),
    (socket.AF_INET6, "::1", 22, "inet6"),
    (socket.AF_UNIX, "/run/other.sock", None, "unix"),
    (socket.AF_UNIX, "@abstract", None, "unix"),
])
def test_build_alert_for_a_connect(profile, family, address, port, shown):
    agent, process, _ = context(profile)
    event = ConnectEvent(hdr=header(4001), fd=3, family=family, address=address, port=port)
    a = build_alert(3, decide(event, profile), event, None, agent, process)
    assert a.rule.kind == pb.RULE_KIND_NETWORK_CONNECT and a.rule.name == "network.connect"
    assert a.event.type == "connect" and a.event.WhichOneof("detail") == "network"
    assert (a.event.network.family, a.event.network.address, a.event.network.port) == (shown, address, port or 0)


def test_build_alert_for_an_exec(profile):
    agent, process, _ = context(profile)
    event = ExecEvent(hdr=header(4001), old_tid=4001, flags=ExecFlags(0), dirfd=-100, filename="/bin/sh",
                      argv=("sh", "-c", "curl evil"), matched_slot=None)
    target = Target("/bin/sh", "/usr/bin/dash")
    a = build_alert(4, decide(event, profile, target), event, target, agent, process)
    assert a.rule.kind == pb.RULE_KIND_EXEC and a.rule.name == "exec"
    assert a.event.type == "exec" and a.event.WhichOneof("detail") == "exec"
    assert a.event.exec.filename == "/bin/sh" and a.event.exec.resolved_path == "/usr/bin/dash"
    assert list(a.event.exec.argv) == ["sh", "-c", "curl evil"]


def test_names_that_are_not_utf8_are_written_with_their_bytes(profile):
    """The agent chooses a name's bytes; protobuf strings are UTF-8. Every name in the alert
    (the event's, the process's program and arguments, the reason) shows an undecodable byte
    as \\xNN, and the alert is built: a refused string would have cost the alert and its kill."""
    agent, process, _ = context(profile)
    process.exe, process.cmdline = "/opt/\udcffbin", ("python3", "--name=\udcfe", "caf\u00e9")
    event = ExecEvent(hdr=header(4001), old_tid=4001, flags=ExecFlags(0), dirfd=-100, filename="./\udcff",
                      argv=("\udcff", "-c", "x"), matched_slot=None)
    target = Target("/srv/crm/\udcff", "/srv/crm/\udcff")
    a = build_alert(6, decide(event, profile, target), event, target, agent, process)
    assert (a.event.exec.filename, a.event.exec.resolved_path) == ("./\\xff", "/srv/crm/\\xff")
    assert list(a.event.exec.argv) == ["\\xff", "-c", "x"]
    assert a.process.exe == "/opt/\\xffbin" and list(a.process.cmdline) == ["python3", "--name=\\xfe", "caf\u00e9"]
    assert "/srv/crm/\\xff" in a.reason and "\udcff" not in a.reason
    assert pb.Alert.FromString(a.SerializeToString()) == a


def test_alert_action_kind_follows_profile(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_text("name: quiet\non_violation: alert\n")
    quiet = load_profile_file(file, homes=HOMES)
    agent, process, _ = context(quiet)
    event = ConnectEvent(hdr=header(4001), fd=3, family=socket.AF_INET, address="1.1.1.1", port=53)
    a = build_alert(5, decide(event, quiet), event, None, agent, process)
    complete_action(a, True, "alert only")
    assert a.action.kind == pb.ACTION_KIND_ALERT and list(a.action.signalled_pids) == []


def test_alert_to_dict_is_json_with_proto_field_names(profile):
    agent, process, _ = context(profile)
    event = OpenEvent(hdr=header(4001), dirfd=-100, flags=os.O_RDONLY, mode=0,
                      syscall=OpenSyscall.OPENAT, path="/var/log/syslog", truncated=False)
    target = Target("/var/log/syslog", "/var/log/syslog")
    a = build_alert(9, decide(event, profile, target), event, target, agent, process)
    complete_action(a, False, "signalled 4001; still alive", [4001])
    d = alert_to_dict(a)
    assert json.loads(json.dumps(d)) == d
    assert d["agent"]["instance_id"] == "crm/4000.12345"
    assert d["agent"]["root_pid"] == 4000
    assert d["agent"]["profile_file"] == profile.source
    assert d["rule"]["kind"] == "RULE_KIND_FILE_READ"
    assert d["event"]["file"]["resolved_path"] == "/var/log/syslog"
    assert d["action"]["signalled_pids"] == [4001]
    assert d["action"]["kind"] == "ACTION_KIND_KILL"
    assert int(d["timing"]["kernel_ktime_ns"]) == event.hdr.ktime_ns
    assert {"event_time", "decided_time", "action_time"} <= set(d["timing"])
    assert int(d["process"]["start_ticks"]) == 12400
    assert int(d["id"]) == 9

    def keys(obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield k
                yield from keys(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from keys(v)

    all_keys = set(keys(d))
    assert not any(k != k.lower() for k in all_keys), all_keys  # proto names, not lowerCamelCase
    assert "instanceId" not in all_keys and "resolvedPath" not in all_keys


def test_an_opens_result_is_in_its_alert_and_its_reason(profile):
    """What the open returned: -ENOENT for an attempt at a file that is not there, an fd for one
    that opened it; nothing for an open the kernel sent at entry (result None)."""
    agent, process, _ = context(profile)
    target = Target("/root/.aws/credentials", "/root/.aws/credentials")
    for result, reason in ((-2, "tried to open secret /root/.aws/credentials for reading (ENOENT)"),
                           (5, "opened secret /root/.aws/credentials for reading"),
                           (None, "opened secret /root/.aws/credentials for reading")):
        event = OpenEvent(hdr=header(4001), dirfd=-100, flags=os.O_RDONLY, mode=0, syscall=OpenSyscall.OPENAT,
                          path="/root/.aws/credentials", truncated=False, result=result)
        a = build_alert(1, decide(event, profile, target), event, target, agent, process)
        assert a.event.file.HasField("result") is (result is not None)
        assert a.event.file.result == (result or 0)
        assert a.reason == reason and log_line(a).endswith(reason)


def test_log_line(profile):
    agent, process, _ = context(profile)
    event = ConnectEvent(hdr=header(4001), fd=3, family=socket.AF_INET, address="127.0.0.1", port=9)
    a = build_alert(12, decide(event, profile), event, None, agent, process)
    pending = log_line(a)
    assert "pending" in pending
    complete_action(a, True, "killed 1 process(es): 4001", [4001])
    line = log_line(a)
    assert "#12" in line
    assert "agent=crm" in line
    assert "pid=4001" in line
    assert "rule=network_connect" in line
    assert "action=kill" in line
    assert "killed 1 process(es): 4001" in line
    assert a.reason in line and "127.0.0.1:9" in line
    assert "\n" not in line


def test_no_file_content_in_alerts(profile, tmp_path):
    """An alert names the file; it never carries what the file holds."""
    content = "AKIA-SECRET-CONTENT-7f3e9c1b"
    secret = tmp_path / "credentials"
    secret.write_text(content + "\n")
    agent, process, _ = context(profile)
    path = str(secret)
    event = OpenEvent(hdr=header(4001), dirfd=-100, flags=os.O_RDONLY, mode=0,
                      syscall=OpenSyscall.OPENAT, path=path, truncated=False)
    target = Target(path, os.path.realpath(path))
    verdict = decide(event, profile, target)
    assert verdict is not None
    a = build_alert(1, verdict, event, target, agent, process)
    complete_action(a, True, "alert only")
    assert path in a.event.file.path
    serialized = [a.SerializeToString().decode("latin-1"), json.dumps(alert_to_dict(a)), log_line(a), str(a)]
    for text in serialized:
        assert content not in text
        assert "AKIA" not in text
