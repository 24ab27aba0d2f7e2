"""Which profile applies to a process, and what a loaded profile allows."""

import ipaddress
import textwrap
from pathlib import Path

import pytest

from sensor.profiles import (
    ProcessFacts,
    Profile,
    find_profile,
    load_profile_file,
    profile_matches,
)

HOMES = ["/root", "/home/alice"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "profiles"


def load(tmp_path, body, name="p.yaml"):
    file = tmp_path / name
    file.write_text(textwrap.dedent(body))
    return load_profile_file(file, homes=HOMES)


def facts(exe=("/usr/bin/python3.11",), cmdline="python3 crm_agent.py", uid=1000,
          username="alice", cgroup="/system.slice/crm.service"):
    return ProcessFacts(tuple(exe), cmdline, uid, username, cgroup)


# --- selectors -------------------------------------------------------------------------


def test_all_keys_must_match(tmp_path):
    profile = load(tmp_path, """\
        name: p
        match:
          exe: ["/usr/bin/python3*"]
          cmdline: ["*crm_agent.py*"]
          user: [alice]
          cgroup: ["/system.slice/*.service"]
        """)
    assert profile_matches(profile, facts())
    assert not profile_matches(profile, facts(exe=("/usr/bin/node",)))
    assert not profile_matches(profile, facts(cmdline="python3 other.py"))
    assert not profile_matches(profile, facts(username="bob"))
    assert not profile_matches(profile, facts(cgroup="/user.slice/user-1000.slice"))
    assert not profile_matches(profile, facts(cgroup=None))


def test_any_entry_of_a_key_may_match(tmp_path):
    profile = load(tmp_path, """\
        name: p
        match:
          cmdline: ["*crm_agent.py*", "*ticket_bot*"]
        """)
    assert profile_matches(profile, facts(cmdline="python3 crm_agent.py"))
    assert profile_matches(profile, facts(cmdline="node ticket_bot.js"))
    assert not profile_matches(profile, facts(cmdline="node other.js"))


def test_any_exe_spelling_may_match(tmp_path):
    # exec("/usr/bin/python3") resolves to /usr/bin/python3.11: a rule may name either.
    profile = load(tmp_path, 'name: p\nmatch: {exe: "/usr/bin/python3"}\n')
    assert profile.match.exe[0].text == "/usr/bin/python3"  # a single string is a one-element list
    assert profile_matches(profile, facts(exe=("/usr/bin/python3", "/usr/bin/python3.11")))
    assert not profile_matches(profile, facts(exe=("/usr/bin/python3.11",)))


def test_user_by_uid_or_name(tmp_path):
    profile = load(tmp_path, 'name: p\nmatch: {user: [0, "1001", svc-crm]}\n')
    assert profile.match.user == (0, 1001, "svc-crm")
    assert profile_matches(profile, facts(uid=0, username="root"))
    assert profile_matches(profile, facts(uid=1001, username=None))
    assert profile_matches(profile, facts(uid=999, username="svc-crm"))
    assert not profile_matches(profile, facts(uid=1000, username="alice"))
    # A name never matches a process whose user name could not be resolved.
    assert not profile_matches(profile, facts(uid=998, username=None))


def test_user_name_is_not_compared_with_uid(tmp_path):
    profile = load(tmp_path, "name: p\nmatch: {user: root}\n")
    assert profile.match.user == ("root",)
    assert not profile_matches(profile, facts(uid=0, username=None))
    assert profile_matches(profile, facts(uid=0, username="root"))


def test_cgroup(tmp_path):
    profile = load(tmp_path, 'name: p\nmatch: {cgroup: "/system.slice/agent.service"}\n')
    assert profile_matches(profile, facts(cgroup="/system.slice/agent.service"))
    assert not profile_matches(profile, facts(cgroup="/system.slice/agent.service/sub"))
    assert not profile_matches(profile, facts(cgroup=None))


@pytest.mark.parametrize("match", ["", "match:\n", "match: {}\n", "match: {exe: []}\n"])
def test_empty_match_never_matches(tmp_path, match):
    profile = load(tmp_path, "name: p\n" + match)
    assert profile.match.is_empty
    assert not profile_matches(profile, facts())
    assert not profile_matches(profile, ProcessFacts((), "", 0, None, None))


def test_find_profile_takes_the_first_match_in_order(tmp_path):
    broad = load(tmp_path, 'name: broad\nmatch: {cmdline: "*"}\n', "a.yaml")
    narrow = load(tmp_path, 'name: narrow\nmatch: {cmdline: "*crm*"}\n', "b.yaml")
    manual = load(tmp_path, "name: manual\n", "c.yaml")
    assert find_profile([narrow, broad], facts(cmdline="crm")) is narrow
    assert find_profile([broad, narrow], facts(cmdline="crm")) is broad
    assert find_profile([manual, narrow], facts(cmdline="other")) is None
    assert find_profile([], facts()) is None


def test_example_profiles_select_their_agents():
    crm = load_profile_file(EXAMPLES / "crm-reply-agent.yaml", homes=HOMES)
    coding = load_profile_file(EXAMPLES / "coding-assistant.yaml", homes=HOMES)
    profiles = [crm, coding]
    crm_process = facts(exe=("/usr/bin/python3", "/usr/bin/python3.11"),
                        cmdline="/usr/bin/python3 /opt/crm/crm_agent.py --queue=eu")
    coding_process = facts(exe=("/usr/bin/python3.11",), cmdline="python3 -m coding_agent serve")
    assert find_profile(profiles, crm_process) is crm
    assert find_profile(profiles, coding_process) is coding
    assert find_profile(profiles, facts(exe=("/usr/bin/node",), cmdline="node crm_agent.py")) is None


# --- what a profile allows -----------------------------------------------------------


@pytest.fixture
def crm() -> Profile:
    return load_profile_file(EXAMPLES / "crm-reply-agent.yaml", homes=HOMES)


def test_secrets_win_over_files(crm):
    assert crm.is_secret("/root/.aws/credentials").text == "~/.aws/**"
    assert crm.is_secret("/home/alice/.ssh/id_ed25519").text == "~/.ssh/**"
    assert crm.is_secret("/etc/shadow").text == "/etc/shadow"
    assert crm.is_secret("/etc/passwd") is None
    # /etc/** is readable, but /etc/shadow is a secret.
    assert crm.may_read("/etc/passwd")
    assert not crm.may_read("/etc/shadow")


def test_write_implies_read(crm):
    assert crm.may_write("/tmp/crm/x")
    assert crm.may_read("/tmp/crm/x")
    assert crm.may_read("/tmp/other")
    assert not crm.may_write("/tmp/other")
    assert crm.may_read("/srv/crm/tickets/1.json")
    assert not crm.may_read("/srv/other")
    assert not crm.may_write("/srv/crm/tickets/1.json")


def test_exec(crm):
    assert crm.may_exec("/usr/bin/git")
    assert crm.may_exec("/usr/bin/python3.11")
    assert not crm.may_exec("/usr/bin/curl")
    assert not crm.may_exec("/usr/bin/git-upload-pack")


def test_destinations(crm):
    ip = ipaddress.ip_address
    assert crm.allowed_destination_inet(ip("127.0.0.1"), 8443).text == "127.0.0.1:8443"
    assert crm.allowed_destination_inet(ip("127.0.0.1"), 8444) is None
    assert crm.allowed_destination_inet(ip("10.1.2.3"), 443).text == "10.0.0.0/8:443"
    assert crm.allowed_destination_inet(ip("::ffff:10.1.2.3"), 443).text == "10.0.0.0/8:443"
    assert crm.allowed_destination_inet(ip("11.0.0.1"), 443) is None
    assert crm.allowed_destination_inet(ip("::1"), 8443).text == "[::1]:8443"
    assert crm.allowed_destination_inet(ip("::2"), 8443) is None
    assert crm.allowed_destination_unix("/run/agent-api.sock") is None


def test_nothing_is_allowed_by_default(tmp_path):
    profile = load(tmp_path, "name: bare\n")
    assert profile.on_violation == "alert"
    assert profile.description is None
    assert not profile.may_read("/etc/passwd")
    assert not profile.may_write("/tmp/x")
    assert not profile.may_exec("/bin/sh")
    assert profile.allowed_destination_inet(ipaddress.ip_address("127.0.0.1"), 80) is None
    assert profile.allowed_destination_unix("/run/x.sock") is None
