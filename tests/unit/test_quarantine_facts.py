"""The pure parts of sensor/quarantine.py: which processes an isolation covers, how fd targets
are classified, which incident ids may name a cgroup, where the v2 hierarchy root is."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensor.quarantine import INCIDENT_ID, _family, _fd_kind, _hierarchy_root, _Proc, _socket_inode


def table(*rows):
    return {pid: _Proc(pid, ppid, state, kthread) for pid, ppid, state, kthread in rows}


PROCS = table(
    (1, 0, "S", False),
    (2, 0, "S", True),
    (3, 2, "I", True),          # a kernel thread
    (10, 1, "S", False),        # the agent
    (11, 10, "S", False),
    (12, 10, "Z", False),       # zombie child: listed, the caller skips it
    (13, 11, "S", False),       # grandchild
    (20, 1, "S", False),        # unrelated
    (30, 11, "S", False),
)


def test_family_is_the_seeds_and_their_descendants_parents_first():
    order = _family([10], PROCS, set())
    assert set(order) == {10, 11, 12, 13, 30}
    assert order.index(10) < order.index(11) < order.index(13)
    assert order.index(11) < order.index(30)


def test_family_skips_gone_seeds_and_duplicates():
    assert _family([11, 13, 999], PROCS, set()) == [11, 13, 30]


def test_family_never_includes_protected_or_kernel_threads_nor_descends_into_them():
    assert _family([1], PROCS, {1}) == []
    assert _family([2, 3], PROCS, set()) == []
    assert _family([10], PROCS, {11}) == [10, 12]


@pytest.mark.parametrize("target, kind", [
    ("/tmp/counter.txt", "file"),
    ("/home/a/b (deleted)", "file"),
    ("socket:[123]", "socket"),
    ("pipe:[77]", "pipe"),
    ("anon_inode:[eventfd]", "anon_inode"),
    ("anon_inode:bpf-prog", "anon_inode"),
    ("net:[4026531840]", "other"),
])
def test_fd_kind(target, kind):
    assert _fd_kind(target) == kind


def test_socket_inode():
    assert _socket_inode("socket:[4242]") == 4242
    assert _socket_inode("pipe:[4242]") is None


@pytest.mark.parametrize("ident, ok", [
    ("net", True), ("agent-1/2", False), ("..", False), ("", False), (".hidden", False),
    ("codex_3f2a.1", True), ("a" * 128, True), ("a" * 129, False), ("x y", False),
])
def test_incident_ids_that_may_name_a_cgroup(ident, ok):
    assert bool(INCIDENT_ID.match(ident)) is ok


def test_hierarchy_root_is_the_first_ancestor_without_cgroup_type(tmp_path: Path):
    root = tmp_path / "unified"
    leaf = root / "agent-sensor" / "incident-x"
    leaf.mkdir(parents=True)
    for d in (root / "agent-sensor", leaf):
        (d / "cgroup.type").write_text("domain\n")
    assert _hierarchy_root(leaf) == root
    assert _hierarchy_root(root) == root


def test_an_incident_with_names_that_are_not_utf8_is_sent_with_their_bytes_written():
    """An incident's record holds what the agent named (its command line, open files, last
    events): bytes of its choosing, shown as \\xNN where not UTF-8, never a refused message."""
    from sensor.export.grpc_server import incident_message
    from sensor.incidents import Incident
    from sensor.quarantine import Isolation
    isolation = Isolation("i-1", "cgroup", "/sys/fs/cgroup/agent-sensor/i-1", True, True, [10], {10: "/"}, "frozen")
    facts = {"processes": [{"pid": 10, "exe": "/opt/\udcff", "cmdline": ["a", "\udcfe"],
                            "open_files": [{"fd": 3, "target": "/tmp/\udcff"}],
                            "sockets": [{"family": "unix", "path": "/run/\udcff.sock"}]}]}
    incident = Incident("i-1", "crm", "crm/10.1", 10, "secrets", "opened secret", 7, 1, isolation, facts,
                        ["pid 10 open /tmp/\udcff"])
    message = incident_message(incident)
    process = message.processes[0]
    assert (process.process.exe, list(process.process.cmdline)) == ("/opt/\\xff", ["a", "\\xfe"])
    assert process.files[0].target == "/tmp/\\xff" and process.sockets[0].local == "/run/\\xff.sock"
    assert list(message.last_events) == ["pid 10 open /tmp/\\xff"]
