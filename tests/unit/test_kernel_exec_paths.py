"""Which profiles the kernel can match at exec by exact path (sensor.pipeline.kernel_exec_paths), and
when it must send every process's exec to user space."""

from __future__ import annotations

import textwrap

import pytest

from sensor import abi
from sensor.alerts import AlertBus
from sensor.export.spool import AlertSpool
from sensor.pipeline import Pipeline, kernel_exec_paths
from sensor.profiles import load_profile_file

HOMES = ["/root", "/home/alice"]


def load(tmp_path, match: str):
    file = tmp_path / "p.yaml"
    file.write_text("name: p\n" + textwrap.dedent(match))
    return load_profile_file(file, homes=HOMES)


def test_literal_exe_paths(tmp_path):
    profile = load(tmp_path, """\
        match:
          exe: ["/usr/bin/python3.11", "/opt/agent/bin/run"]
    """)
    assert kernel_exec_paths(profile) == ["/usr/bin/python3.11", "/opt/agent/bin/run"]


def test_single_string_exe(tmp_path):
    assert kernel_exec_paths(load(tmp_path, "match:\n  exe: /opt/agent/bin/run\n")) == ["/opt/agent/bin/run"]


@pytest.mark.parametrize("exe", [
    '["/usr/bin/python3*"]',
    '["/opt/agent/bin/run", "/usr/bin/python3*"]',  # one glob spoils the lot
    '["/opt/agent/bin/ru?"]',
    '["/opt/agent/bin/[rs]un"]',
    '["/opt/**/run"]',
    '["~/bin/agent"]',  # ~ means several homes: not one exact path
])
def test_any_glob_in_exe(tmp_path, exe):
    assert kernel_exec_paths(load(tmp_path, f"match:\n  exe: {exe}\n")) == []


@pytest.mark.parametrize("extra", [
    'cmdline: ["*crm_agent.py*"]',
    "user: [1001]",
    "user: svc-crm",
    'cgroup: ["/system.slice/crm.service"]',
])
def test_other_selectors_need_user_space(tmp_path, extra):
    profile = load(tmp_path, f"""\
        match:
          exe: ["/opt/agent/bin/run"]
          {extra}
    """)
    assert kernel_exec_paths(profile) == []


@pytest.mark.parametrize("match", [
    "",                                    # no match key
    "match:\n",                            # empty match
    "match: {}\n",
    'match:\n  cmdline: ["*agent*"]\n',    # selectors without exe
    "match:\n  user: [0]\n",
    'match:\n  cgroup: ["/system.slice/a.service"]\n',
])
def test_no_exe_selector(tmp_path, match):
    assert kernel_exec_paths(load(tmp_path, match)) == []


def test_long_paths_are_excluded(tmp_path):
    assert abi.EXEC_KEY_LEN == 256
    fits = "/" + "a" * 253                 # 254 bytes + NUL: the longest the kernel can match
    full = "/" + "f" * 254                 # 255 bytes + NUL fills the key: indistinguishable from a cut name
    too_long = "/" + "b" * 255             # 256 bytes: no room for the NUL
    much_too_long = "/" + "c/" * 300 + "x"
    multibyte = "/" + "é" * 128            # 129 characters, but 257 bytes
    assert len(multibyte) < abi.EXEC_KEY_LEN <= len(multibyte.encode())
    profile = load(tmp_path, f"""\
        match:
          exe: ["{fits}", "{full}", "{too_long}", "{much_too_long}", "{multibyte}", "/usr/bin/agent"]
    """)
    assert kernel_exec_paths(profile) == [fits, "/usr/bin/agent"]


def test_only_long_paths(tmp_path):
    profile = load(tmp_path, f'match:\n  exe: ["/{"x" * 300}"]\n')
    assert kernel_exec_paths(profile) == []


def test_the_exec_launcher_is_never_matched_by_selectors():
    from sensor.decode import ExecEvent, Header
    from sensor.abi import ExecFlags
    from sensor.pipeline import is_launcher

    def exec_event(*argv):
        hdr = Header(ktime_ns=1, cgroup_id=1, pid=10, tid=10, uid=0, gid=0, slot=None, comm="x")
        return ExecEvent(hdr=hdr, old_tid=10, flags=ExecFlags(0), dirfd=-100, filename=argv[0],
                         argv=argv, matched_slot=None)

    assert is_launcher(exec_event("/opt/venv/bin/agent-sensor", "exec", "--profile", "p", "--", "python3", "a.py"))
    assert not is_launcher(exec_event("/opt/venv/bin/agent-sensor", "status"))
    assert not is_launcher(exec_event("/usr/bin/python3", "agent.py", "exec"))


class ExecMaps:
    """What Pipeline.install_exec_matches tells the kernel (sensor.bpf_loader.SensorBPF's calls)."""

    def __init__(self):
        self.all_execs, self.paths = None, None

    def send_all_execs(self, on: bool) -> None:
        self.all_execs = on

    def set_exec_matches(self, paths: dict[str, int]) -> None:
        self.paths = paths


@pytest.mark.parametrize("match, all_execs", [
    ("", False),                                   # agents only by `agent-sensor exec`: other execs stay in the kernel
    ("match:\n  exe: /opt/agent/bin/run\n", True),  # user space also matches the other spellings of the path
    ("match:\n  cmdline: '*agent*'\n", True),
])
def test_every_exec_is_sent_only_while_a_profile_matches_processes(tmp_path, match, all_execs):
    kernel = ExecMaps()
    Pipeline([load(tmp_path, match)], kernel, AlertBus(AlertSpool(tmp_path / "alerts.db"))).install_exec_matches()
    assert kernel.all_execs is all_execs
    assert kernel.paths == ({"/opt/agent/bin/run": 0} if "exe" in match else {})
