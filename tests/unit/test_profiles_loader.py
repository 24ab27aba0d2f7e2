"""Loading profile files: the documented example, every error path (with its line),
directories and duplicate names, destination parsing, and robustness on any input."""

import ipaddress
import os
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.profiles import (
    Destination,
    Problem,
    Profile,
    ProfileError,
    default_homes,
    load_profile_file,
    load_profiles,
)
from sensor.profiles.schema import DestinationError

HOMES = ["/root", "/home/alice"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "profiles"

SPEC_EXAMPLE = """\
name: crm-reply-agent
description: Answers CRM tickets            # optional free text
match:
  exe: ["/usr/bin/python3*"]
  cmdline: ["*crm_agent.py*"]
files:
  read: ["/srv/crm/**", "/usr/**", "/etc/**", "/tmp/**", "/proc/**"]
  write: ["/tmp/crm/**"]
secrets: ["~/.aws/**", "~/.ssh/**", "/etc/shadow"]   # never, whatever `files` allows; ~ = every home
network:
  connect: ["127.0.0.1:8443", "10.0.0.0/8:443", "[::1]:8443"]
exec: ["/usr/bin/python3*", "/usr/bin/git"]
on_violation: kill          # alert | kill
"""


def write(tmp_path, body, name="p.yaml"):
    file = tmp_path / name
    file.write_text(textwrap.dedent(body) if isinstance(body, str) else body)
    return file


def problems_of(file, homes=HOMES):
    with pytest.raises(ProfileError) as caught:
        load_profile_file(file, homes=homes)
    return caught.value.problems


# --- the documented example ----------------------------------------------------------


def texts(globs):
    return [glob.text for glob in globs]


def test_spec_example_means_what_it_says(tmp_path):
    profile = load_profile_file(write(tmp_path, SPEC_EXAMPLE), homes=HOMES)
    assert isinstance(profile, Profile)
    assert profile.name == "crm-reply-agent"
    assert profile.description == "Answers CRM tickets"
    assert profile.source == str(tmp_path / "p.yaml")
    assert profile.line == 1
    assert texts(profile.match.exe) == ["/usr/bin/python3*"]
    assert texts(profile.match.cmdline) == ["*crm_agent.py*"]
    assert profile.match.user == () and profile.match.cgroup == ()
    assert texts(profile.files_read) == ["/srv/crm/**", "/usr/**", "/etc/**", "/tmp/**", "/proc/**"]
    assert texts(profile.files_write) == ["/tmp/crm/**"]
    assert texts(profile.secrets) == ["~/.aws/**", "~/.ssh/**", "/etc/shadow"]
    assert [d.text for d in profile.network_connect] == ["127.0.0.1:8443", "10.0.0.0/8:443", "[::1]:8443"]
    assert texts(profile.exec) == ["/usr/bin/python3*", "/usr/bin/git"]
    assert profile.on_violation == "kill"
    assert [glob.line for glob in profile.secrets] == [9, 9, 9]

    assert profile.is_secret("/root/.aws/credentials") is not None
    assert profile.is_secret("/home/alice/.ssh/id_rsa") is not None
    assert not profile.may_read("/etc/shadow")
    assert profile.may_write("/tmp/crm/x")
    assert profile.may_read("/tmp/crm/x")
    assert not profile.may_write("/tmp/x")
    assert not profile.may_read("/srv/other")
    assert profile.may_read("/srv/crm")
    ip = ipaddress.ip_address
    assert profile.allowed_destination_inet(ip("127.0.0.1"), 8443) is not None
    assert profile.allowed_destination_inet(ip("127.0.0.1"), 8444) is None
    assert profile.allowed_destination_inet(ip("10.1.2.3"), 443) is not None
    assert profile.allowed_destination_inet(ip("::ffff:10.1.2.3"), 443) is not None
    assert profile.allowed_destination_inet(ip("::1"), 8443) is not None
    assert profile.may_exec("/usr/bin/python3.11")
    assert not profile.may_exec("/bin/bash")


def meaning(profile):
    """Everything a profile decides, without the source file and line numbers."""
    return (
        profile.name, profile.description,
        texts(profile.match.exe), texts(profile.match.cmdline), profile.match.user, texts(profile.match.cgroup),
        texts(profile.files_read), texts(profile.files_write), texts(profile.secrets),
        [d.text for d in profile.network_connect], texts(profile.exec), profile.on_violation,
    )


def test_example_file_equals_the_spec_example(tmp_path):
    spec = load_profile_file(write(tmp_path, SPEC_EXAMPLE), homes=HOMES)
    shipped = load_profile_file(EXAMPLES / "crm-reply-agent.yaml", homes=HOMES)
    assert meaning(shipped) == meaning(spec)


def test_all_examples_load():
    profiles = load_profiles([EXAMPLES], homes=HOMES)
    assert [p.name for p in profiles] == ["coding-assistant", "crm-reply-agent"]
    coding = profiles[0]
    assert coding.on_violation == "alert"
    assert coding.may_read("/dev/null")
    assert coding.may_write("/srv/repos/app/main.py")
    assert coding.is_secret("/home/alice/.config/gh/hosts.yml") is not None
    assert coding.allowed_destination_unix("/run/agent-api.sock") is not None
    assert coding.allowed_destination_unix("/run/docker.sock") is None
    assert coding.may_exec("/usr/bin/git")


def test_tilde_uses_default_homes_when_none_given(tmp_path):
    profile = load_profile_file(write(tmp_path, 'name: p\nsecrets: ["~/.ssh/**"]\n'))
    assert set(profile.secrets[0].expanded) == {h + "/.ssh/**" for h in default_homes()}
    assert profile.is_secret("/root/.ssh/id_rsa") is not None


def test_default_homes():
    homes = default_homes()
    assert "/root" in homes
    assert "/" not in homes
    assert all(h.startswith("/") and not h.startswith("//") for h in homes)
    assert len(homes) == len(set(homes))


def test_null_values_mean_omitted(tmp_path):
    profile = load_profile_file(write(tmp_path, """\
        name: p
        description:
        match:
        files:
          read:
        secrets:
        network:
        exec:
        on_violation:
        """), homes=HOMES)
    assert profile.description is None and profile.match.is_empty
    assert profile.files_read == profile.secrets == profile.network_connect == profile.exec == ()
    assert profile.on_violation == "alert"


def test_single_strings_are_accepted_in_match(tmp_path):
    profile = load_profile_file(write(tmp_path, """\
        name: p
        match: {exe: /usr/bin/node, cmdline: "*bot*", user: svc, cgroup: /system.slice/bot.service}
        """), homes=HOMES)
    assert texts(profile.match.exe) == ["/usr/bin/node"]
    assert texts(profile.match.cmdline) == ["*bot*"]
    assert profile.match.user == ("svc",)
    assert texts(profile.match.cgroup) == ["/system.slice/bot.service"]


# --- error paths, each with its exact line ---------------------------------------------

ERROR_CASES = {
    "yaml syntax": ("name: x\nfiles:\n  read: [a\n  b: c\n", 4, "YAML syntax error"),
    "yaml bad indentation": ("name: x\n  description: y\n", 2, "YAML syntax error"),
    "yaml control character": ("name: x\ndescription: \x07\n", 2, "YAML syntax error"),
    "yaml undefined alias": ("name: x\nexec: *nothing\n", 2, "YAML syntax error"),
    "yaml two documents": ("name: x\n---\nname: y\n", 2, "YAML syntax error"),
    "empty file": ("", 1, "empty"),
    "comments only": ("# nothing here\n", 1, "empty"),
    "top-level list": ("- name: x\n", 1, "must be a mapping"),
    "top-level string": ("\n\njust text\n", 3, "must be a mapping"),
    "unknown top-level key": (
        "name: x\nnetwrk: {}\n", 2,
        "unknown key 'netwrk' (allowed: name, description, match, files, secrets, brokers, network, exec, exec_deny, interfaces, on_violation, on_event_loss, actions)",
    ),
    "unknown match key": ("name: x\nmatch:\n  exe: [/a]\n  usr: [x]\n", 4,
                          "unknown key 'usr' in match (allowed: exe, cmdline, user, cgroup)"),
    "unknown files key": ("name: x\nfiles:\n  reed: [/a]\n", 3, "unknown key 'reed' in files (allowed: read, write)"),
    "unknown network key": ("name: x\nnetwork:\n  accept: []\n", 3, "unknown key 'accept' in network (allowed: connect, listen)"),
    "non-string key": ("name: x\n? [a]\n: b\n", 2, "keys must be strings"),
    "duplicate top-level key": ("name: x\nexec: []\nexec: []\n", 3, "duplicate key 'exec' (first at line 2)"),
    "duplicate nested key": ("name: x\nfiles:\n  read: []\n  read: []\n", 4, "duplicate key 'read' in files (first at line 3)"),
    "missing name": ("description: d\nexec: []\n", 1, "missing required key 'name'"),
    "null name": ("exec: []\nname:\n", 2, "name must be a string"),
    "name not a string": ("exec: []\nname: 123\n", 2, "name must be a string, got an integer"),
    "bad name uppercase": ("name: CRM\n", 1, "bad name 'CRM'"),
    "bad name leading dash": ("name: -x\n", 1, "bad name '-x'"),
    "bad name too long": ("name: " + "a" * 64 + "\n", 1, "bad name"),
    "bad name with space": ("\nname: crm agent\n", 2, "bad name 'crm agent'"),
    "description not a string": ("name: x\ndescription: [a]\n", 2, "description must be a string, got a list"),
    "match not a mapping": ("name: x\nmatch: [a]\n", 2, "match must be a mapping"),
    "files not a mapping": ("name: x\nfiles: /etc\n", 2, "files must be a mapping"),
    "files.read a string": ("name: x\nfiles:\n  read: /etc/**\n", 3, "files.read must be a list, got a string"),
    "files.write entry not a string": ("name: x\nfiles:\n  write:\n    - /tmp/**\n    - 3\n", 5,
                                       "entries of files.write must be strings, got an integer"),
    "secrets a mapping": ("name: x\nsecrets: {a: b}\n", 2, "secrets must be a list, got a mapping"),
    "exec entry a list": ("name: x\nexec:\n  - [/bin/sh]\n", 3, "entries of exec must be strings, got a list"),
    "network.connect not a list": ("name: x\nnetwork:\n  connect: 8443\n", 3, "network.connect must be a list"),
    "match.user a mapping": ("name: x\nmatch:\n  user: {a: 1}\n", 3, "match.user must be a list"),
    "match.exe a number": ("name: x\nmatch:\n  exe: 5\n", 3, "match.exe must be a list or a string"),
    "bad uid negative": ("name: x\nmatch:\n  user: [-1]\n", 3, "bad uid '-1'"),
    "bad uid huge": ("name: x\nmatch:\n  user: [99999999999]\n", 3, "bad uid"),
    "bad user name": ("name: x\nmatch:\n  user: ['a b']\n", 3, "bad user name 'a b'"),
    "bad user type": ("name: x\nmatch:\n  user: [yes]\n", 3, "got a boolean"),
    "unclosed class": ("name: x\nfiles:\n  read:\n    - /srv/[crm\n", 4, "bad glob '/srv/[crm' in files.read: unclosed '['"),
    "empty glob": ("name: x\nsecrets: ['']\n", 2, "bad glob '' in secrets: empty glob"),
    "relative glob": ("name: x\nexec: [bin/sh]\n", 2, "must be absolute"),
    "NUL in glob": ('name: x\nexec: ["/bin/\\0sh"]\n', 2, "NUL"),
    "bad cmdline glob": ("name: x\nmatch:\n  cmdline: ['*[x*']\n", 3, "bad glob '*[x*' in match.cmdline"),
    "tilde in cgroup": ("name: x\nmatch:\n  cgroup: ['~/x']\n", 3, "'~' is not allowed"),
    "host name without port": ("name: x\nnetwork:\n  connect:\n    - 127.0.0.1:1\n    - api.example.com\n", 5,
                               "missing port: write NAME:PORT"),
    "wildcard inside a name": ("name: x\nnetwork: {connect: ['api*.example.com:443']}\n", 2,
                               "bad IP address or host name 'api*.example.com'"),
    "host name to listen on": ("name: x\nnetwork: {listen: ['localhost:8080']}\n", 2,
                               "network.listen takes local addresses, not host names"),
    "bad CIDR prefix": ("name: x\nnetwork: {connect: ['10.0.0.0/33:443']}\n", 2, "bad CIDR '10.0.0.0/33'"),
    "bad CIDR host bits": ("name: x\nnetwork: {connect: ['10.0.0.1/8:443']}\n", 2, "did you mean 10.0.0.0/8"),
    "bad IPv6 CIDR": ("name: x\nnetwork: {connect: ['[::1/129]:443']}\n", 2, "bad CIDR"),
    "port zero": ("name: x\nnetwork: {connect: ['1.2.3.4:0']}\n", 2, "port 0 is out of range"),
    "port too big": ("name: x\nnetwork: {connect: ['1.2.3.4:65536']}\n", 2, "port 65536 is out of range"),
    "port range reversed": ("name: x\nnetwork: {connect: ['1.2.3.4:90-80']}\n", 2, "90 is greater than 80"),
    "port not numeric": ("name: x\nnetwork: {connect: ['1.2.3.4:https']}\n", 2, "bad port 'https'"),
    "port missing": ("name: x\nnetwork: {connect: ['1.2.3.4']}\n", 2, "missing port"),
    "bad IPv4": ("name: x\nnetwork: {connect: ['1.2.3.999:80']}\n", 2, "bad IP address '1.2.3.999'"),
    "bad IPv6": ("name: x\nnetwork: {connect: ['[::g]:80']}\n", 2, "bad IP address '::g'"),
    "IPv6 without brackets": ("name: x\nnetwork: {connect: ['::1:80']}\n", 2, "brackets"),
    "IPv4 in brackets": ("name: x\nnetwork: {connect: ['[1.2.3.4]:80']}\n", 2, "brackets are only for IPv6"),
    "bad unix path": ("name: x\nnetwork: {connect: ['unix:run/x.sock']}\n", 2, "bad unix socket path"),
    "bad on_violation": ("name: x\non_violation: explode\n", 2, "bad on_violation 'explode' (accepted: alert, kill, quarantine)"),
    "on_violation not a string": ("name: x\non_violation: [kill]\n", 2, "on_violation must be one of: alert, kill"),
}


@pytest.mark.parametrize("body, line, message", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_error_paths(tmp_path, body, line, message):
    file = write(tmp_path, body)
    problems = problems_of(file)
    assert [(p.file, p.line) for p in problems] == [(str(file), line)], problems
    assert message in problems[0].message, problems
    assert str(problems[0]).startswith(f"{file}:{line}: ")


def test_all_problems_of_a_file_are_reported_in_line_order(tmp_path):
    file = write(tmp_path, """\
        name: Bad Name
        netwrk: {}
        files:
          read: ["relative"]
          write: ["/ok/**", "/srv/[x"]
        network:
          connect: ["api.example.com", "127.0.0.1:8443", "1.2.3.4:0"]
        on_violation: explode
        """)
    problems = problems_of(file)
    assert [p.line for p in problems] == [1, 2, 4, 5, 7, 7, 8]
    with pytest.raises(ProfileError) as caught:
        load_profile_file(file, homes=HOMES)
    assert str(caught.value) == "\n".join(str(p) for p in problems)
    assert str(caught.value).splitlines()[1] == (
        f"{file}:2: unknown key 'netwrk' (allowed: name, description, match, files, secrets, "
        "brokers, network, exec, exec_deny, interfaces, on_violation, on_event_loss, actions)"
    )


def test_not_utf8(tmp_path):
    file = tmp_path / "p.yaml"
    file.write_bytes(b"name: x\ndescription: caf\xe9\n")
    [problem] = problems_of(file)
    assert problem.line == 1 and "UTF-8" in problem.message and "line 2" in problem.message


def test_unreadable_file(tmp_path):
    # A directory is unreadable as a file even for root, unlike chmod 000.
    [problem] = problems_of(tmp_path)
    assert problem == Problem(str(tmp_path), 1, problem.message)
    assert problem.message.startswith("cannot read file")


def test_missing_file(tmp_path):
    [problem] = problems_of(tmp_path / "nope.yaml")
    assert problem.line == 1 and "cannot read file" in problem.message


def test_problem_and_error_formatting():
    problem = Problem("a.yaml", 3, "boom")
    assert str(problem) == "a.yaml:3: boom"
    error = ProfileError([problem, Problem("b.yaml", 1, "bang")])
    assert str(error) == "a.yaml:3: boom\nb.yaml:1: bang"
    assert error.problems == [problem, Problem("b.yaml", 1, "bang")]


# --- several files -------------------------------------------------------------------


def test_directory_loads_yaml_and_yml_sorted_by_name_not_recursive(tmp_path):
    write(tmp_path, "name: zeta\n", "a.yaml")
    write(tmp_path, "name: alpha\n", "b.yml")
    write(tmp_path, "name: [ignored", "notes.txt")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "name: nested\n", "c.yaml")
    profiles = load_profiles([tmp_path], homes=HOMES)
    assert [p.name for p in profiles] == ["alpha", "zeta"]
    assert profiles[0].source == str(tmp_path / "b.yml")


def test_files_and_directories_mixed(tmp_path):
    (tmp_path / "d").mkdir()
    write(tmp_path / "d", "name: one\n", "one.yaml")
    extra = write(tmp_path, "name: two\n", "two.txt")  # explicitly named files load whatever the suffix
    profiles = load_profiles([str(tmp_path / "d"), extra], homes=HOMES)
    assert [p.name for p in profiles] == ["one", "two"]


def test_same_file_named_twice_loads_once(tmp_path):
    file = write(tmp_path, "name: one\n", "one.yaml")
    assert [p.name for p in load_profiles([tmp_path, file], homes=HOMES)] == ["one"]


def test_empty_directory_and_no_paths(tmp_path):
    assert load_profiles([tmp_path], homes=HOMES) == []
    assert load_profiles([], homes=HOMES) == []


def test_nonexistent_path(tmp_path):
    with pytest.raises(ProfileError) as caught:
        load_profiles([tmp_path / "missing"], homes=HOMES)
    [problem] = caught.value.problems
    assert str(problem) == f"{tmp_path / 'missing'}:1: no such file or directory"


def test_duplicate_names_across_files(tmp_path):
    first = write(tmp_path, "name: crm\n", "a.yaml")
    second = write(tmp_path, "# copy of a.yaml\n\nname: crm\n", "b.yaml")
    with pytest.raises(ProfileError) as caught:
        load_profiles([tmp_path], homes=HOMES)
    [problem] = caught.value.problems
    assert (problem.file, problem.line) == (str(second), 3)
    assert "duplicate profile name 'crm'" in problem.message
    assert str(first) in problem.message


def test_problems_of_all_files_are_collected(tmp_path):
    write(tmp_path, "name: ok\n", "a.yaml")
    write(tmp_path, "name: x\non_violation: nope\n", "b.yaml")
    write(tmp_path, "name: y\nexec: [sh]\n", "c.yaml")
    with pytest.raises(ProfileError) as caught:
        load_profiles([tmp_path, tmp_path / "missing.yaml"], homes=HOMES)
    got = [(Path(p.file).name, p.line) for p in caught.value.problems]
    assert got == [("missing.yaml", 1), ("b.yaml", 2), ("c.yaml", 2)]


def test_homes_must_be_absolute(tmp_path):
    with pytest.raises(ValueError):
        load_profile_file(write(tmp_path, "name: x\n"), homes=["relative"])


# --- destinations ----------------------------------------------------------------------

ip = ipaddress.ip_address


@pytest.mark.parametrize(
    "text, address, port, expected",
    [
        ("127.0.0.1:8443", "127.0.0.1", 8443, True),
        ("127.0.0.1:8443", "127.0.0.1", 8444, False),
        ("127.0.0.1:8443", "127.0.0.2", 8443, False),
        ("127.0.0.1:8443", "::ffff:127.0.0.1", 8443, True),
        ("10.0.0.0/8:443", "10.255.1.2", 443, True),
        ("10.0.0.0/8:443", "11.0.0.0", 443, False),
        ("10.0.0.0/8:8000-8099", "10.0.0.1", 8000, True),
        ("10.0.0.0/8:8000-8099", "10.0.0.1", 8099, True),
        ("10.0.0.0/8:8000-8099", "10.0.0.1", 8100, False),
        ("10.0.0.0/8:8000-8099", "10.0.0.1", 7999, False),
        ("192.168.1.1:*", "192.168.1.1", 1, True),
        ("192.168.1.1:*", "192.168.1.1", 65535, True),
        ("0.0.0.0/0:53", "8.8.8.8", 53, True),
        ("[::1]:8443", "::1", 8443, True),
        ("[::1]:8443", "127.0.0.1", 8443, False),
        ("[2001:db8::/32]:443", "2001:db8:1::5", 443, True),
        ("[2001:db8::/32]:443", "2001:db9::5", 443, False),
        ("[::/0]:*", "fe80::1", 9, True),
        ("[::/0]:*", "1.2.3.4", 9, False),  # an IPv6 rule does not cover IPv4
        # v4-mapped addresses in rules are IPv4 rules.
        ("[::ffff:10.1.2.3]:443", "10.1.2.3", 443, True),
        ("[::ffff:10.0.0.0/104]:443", "10.9.9.9", 443, True),
        ("[::ffff:10.0.0.0/104]:443", "::ffff:10.9.9.9", 443, True),
        ("[::ffff:10.0.0.0/104]:443", "11.0.0.1", 443, False),
    ],
)
def test_destination_inet(text, address, port, expected):
    destination = Destination.parse(text, 7)
    assert (destination.text, destination.line) == (text, 7)
    assert destination.matches_inet(ip(address), port) is expected
    assert not destination.matches_unix("/run/x.sock")


def test_v4_mapped_rules_are_normalised():
    assert Destination.parse("[::ffff:10.1.2.3]:443").network == ipaddress.ip_network("10.1.2.3/32")
    assert Destination.parse("[::ffff:10.0.0.0/104]:443").network == ipaddress.ip_network("10.0.0.0/8")
    star = Destination.parse("1.2.3.4:*")
    assert (star.port_low, star.port_high) == (0, 65535)


@pytest.mark.parametrize(
    "text, path, expected",
    [
        ("unix:/run/agent-api.sock", "/run/agent-api.sock", True),
        ("unix:/run/agent-api.sock", "/run/other.sock", False),
        ("unix:/run/user/*/bus", "/run/user/1000/bus", True),
        ("unix:/run/user/*/bus", "/run/user/1000/x/bus", False),
        ("unix:@dbus-*", "@dbus-abc/def", True),
        ("unix:@dbus-*", "/dbus-abc", False),
        ("unix:@name", "@name", True),
    ],
)
def test_destination_unix(text, path, expected):
    destination = Destination.parse(text)
    assert destination.is_unix
    assert destination.matches_unix(path) is expected
    assert not destination.matches_inet(ip("127.0.0.1"), 80)


def test_unix_destination_expands_tilde():
    destination = Destination.parse("unix:~/.agent.sock", homes=["/home/alice"])
    assert destination.matches_unix("/home/alice/.agent.sock")


@pytest.mark.parametrize("text, name, port, expected", [
    ("api.example.com:443", "api.example.com", 443, True),
    ("api.example.com:443", "API.Example.COM.", 443, True),     # DNS names ignore case and the root dot
    ("api.example.com:443", "api.example.com", 80, False),
    ("api.example.com:443", "evil.api.example.com", 443, False),
    ("api.example.com:443", "api.example.com.evil.test", 443, False),
    ("*.corp.example:*", "git.corp.example", 22, True),
    ("*.corp.example:*", "a.b.corp.example", 8443, True),        # any depth
    ("*.corp.example:*", "corp.example", 443, False),            # the wildcard needs a label
    ("*.corp.example:*", "evilcorp.example", 443, False),
    ("localhost:8000-8100", "localhost", 8080, True),
])
def test_destination_by_name(text, name, port, expected):
    destination = Destination.parse(text)
    assert destination.network is None and destination.unix is None
    assert destination.matches_name(name, port) is expected
    assert not destination.matches_inet(ip("127.0.0.1"), port)


@pytest.mark.parametrize(
    "text",
    ["", ":80", "1.2.3.4:", "1.2.3.4:-5", "1.2.3.4:5-", "1.2.3.4: 80", "1.2.3.4:+80", "1.2.3.4:٣",
     "[::1", "[::1]80", "[::1]", "[fe80::1%eth0]:80", "localhost", "*:80", "*.:80", "a..b:80",
     "-a.example:80", "a" * 64 + ".example:80", "api.example.com:https", "unix:", "unix:x",
     "1.2.3.4:99999999999999999999"],
)
def test_bad_destinations(text):
    with pytest.raises(DestinationError):
        Destination.parse(text)


# --- robustness ----------------------------------------------------------------------

KEYS = ["name", "description", "match", "files", "secrets", "network", "exec", "on_violation",
        "exe", "cmdline", "user", "cgroup", "read", "write", "connect"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
    st.sampled_from(["crm", "/srv/**", "~/.ssh/**", "/x[", "127.0.0.1:80", "[::1]:*", "kill",
                     "unix:@x", "10.0.0.0/8:1-2", "a.b:1", "0", "-1"]),
)
YAML_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=5)), children, max_size=5),
    max_leaves=20,
)
YAML_TEXT = st.one_of(
    st.text(),
    YAML_VALUES.map(lambda value: yaml.safe_dump(value, allow_unicode=True)),
    st.lists(st.sampled_from(["name: x\n", "match:\n", "  exe: [/a]\n", "  - a\n", "{", "[", "&a ", "*a\n",
                              "!!python/object:os.system x\n", "? ", ": ", "---\n", "  ", "\t", "'", '"']),
             max_size=12).map("".join),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=YAML_TEXT)
def test_any_text_gives_a_profile_or_a_profile_error(tmp_path, text):
    file = tmp_path / "fuzz.yaml"
    # surrogatepass: lone surrogates become invalid UTF-8, exercising that path too.
    file.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        result = load_profile_file(file, homes=HOMES)
    except ProfileError as error:
        assert error.problems
        assert all(isinstance(p, Problem) and p.line >= 1 for p in error.problems)
    else:
        assert isinstance(result, Profile)


def test_default_secrets_catalogue_and_exclusions(tmp_path):
    from sensor.profiles.catalogue import ALL_DEFAULT_SECRETS
    path = tmp_path / "cat.yaml"
    path.write_text('name: c\nsecrets:\n  - default\n  - "!~/.docker/config.json"\n  - /srv/vault/**\n')
    profile = load_profile_file(path, homes=["/root", "/home/alice"])
    texts = [g.text for g in profile.secrets]
    assert "~/.docker/config.json" not in texts and "/srv/vault/**" in texts
    assert len(texts) == len(ALL_DEFAULT_SECRETS)  # all defaults but one, plus one of its own
    for secret in ("/root/.aws/credentials", "/home/alice/.config/gh/hosts.yml", "/srv/app/.env",
                   "/srv/app/.env.production", "/home/alice/.claude/.credentials.json", "/etc/shadow",
                   "/var/run/secrets/kubernetes.io/serviceaccount/token", "/etc/ssh/ssh_host_ed25519_key",
                   "/root/.bash_history", "/root/.npmrc", "/srv/vault/key"):
        assert profile.is_secret(secret), secret
    assert not profile.is_secret("/root/.docker/config.json")
    assert not profile.is_secret("/etc/ssh/ssh_host_ed25519_key.pub")
    assert all(g.line == 3 for g in profile.secrets if g.text != "/srv/vault/**")


def test_excluding_an_entry_the_catalogue_does_not_have_is_an_error(tmp_path):
    path = tmp_path / "cat.yaml"
    path.write_text('name: c\nsecrets: [default, "!~/.not-there"]\n')
    with pytest.raises(ProfileError) as err:
        load_profile_file(path, homes=["/root"])
    assert err.value.problems[0].line == 2 and "removes nothing" in err.value.problems[0].message


def test_port_zero_is_a_bind_the_kernel_picks_the_port_for(tmp_path):
    """urllib3 probes for IPv6 by binding [::1] port 0: network.listen can allow that; a
    connect to port 0 (address or name) means nothing and is refused."""
    ok = write(tmp_path, 'name: x\nnetwork: {listen: ["[::1]:0"]}\n')
    (dest,) = load_profile_file(ok, homes=HOMES).network_listen
    assert (dest.port_low, dest.port_high) == (0, 0)
    for text in ("1.2.3.4:0", "api.example.com:0"):
        bad = write(tmp_path, f'name: x\nnetwork: {{connect: ["{text}"]}}\n')
        assert [p.message for p in problems_of(bad)] == [
            f"bad destination '{text}' in network.connect: port 0 is out of range (1-65535; 0 only in network.listen)"]


def test_brokers_name_programs_and_the_secrets_only_they_may_read(tmp_path):
    ok = write(tmp_path, 'name: x\nbrokers:\n  "/opt/vault/bin/vault": ["~/.vault-token", "/etc/app/**"]\n')
    profile = load_profile_file(ok, homes=HOMES)
    (broker,) = profile.brokers
    assert broker.program == "/opt/vault/bin/vault"
    assert {g.text for g in profile.secrets} == {"~/.vault-token", "/etc/app/**"}  # brokered files are secrets
    bad = write(tmp_path, 'name: x\nbrokers:\n  "vault": ["/etc/app/**"]\n  "/usr/bin/*": ["/x"]\n  "/opt/v": []\n')
    assert [(p.line, p.message.split(":")[0]) for p in problems_of(bad)] == [
        (3, "broker 'vault'"), (4, "broker '/usr/bin/*'"), (5, "broker '/opt/v' names no secret")]


def test_profiles_others_could_change_are_refused(tmp_path):
    from sensor.profiles import ownership_problems
    me = os.getuid()
    good = write(tmp_path, "name: x\n", "good.yaml")
    good.chmod(0o644)
    tmp_path.chmod(0o755)
    assert ownership_problems([tmp_path], owner=me) == []
    bad = write(tmp_path, "name: y\n", "bad.yaml")
    bad.chmod(0o666)
    assert [str(p) for p in ownership_problems([tmp_path], owner=me)] == [
        f"{bad}:1: writable by group and others: fix with chmod go-w {bad}"]
    bad.chmod(0o644)
    tmp_path.chmod(0o775)  # a writable directory lets others swap files in
    assert [p.message for p in ownership_problems([tmp_path], owner=me)] == [
        f"writable by group: fix with chmod go-w {tmp_path}"]
    tmp_path.chmod(0o755)
    other = me + 1
    assert f"owned by uid {me}, not {other}" in str(ownership_problems([good], owner=other)[0])
