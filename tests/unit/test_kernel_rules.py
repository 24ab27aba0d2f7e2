"""What the kernel is given to enforce (sensor/kernel_rules.py): pure, no BPF needed."""

import ipaddress
import textwrap

import pytest

from sensor import abi
from sensor.kernel_rules import V4_MAPPED, compile_policy
from sensor.profiles import ProfileError, load_profile_file


def load(tmp_path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\n" + textwrap.dedent(text))
    return load_profile_file(path, homes=["/root", "/home/alice"])


def test_secrets_compile_to_exact_paths_and_directory_prefixes(tmp_path):
    policy = compile_policy(load(tmp_path, """\
        secrets: ["/etc/shadow", "~/.aws/**", "/home/*/.ssh/**", "/srv/k?y"]
        on_violation: kill
    """))
    assert {(s.path, s.exact) for s in policy.secrets} == {
        (b"/etc/shadow\0", True),
        (b"/root/.aws\0", True), (b"/root/.aws/", False),
        (b"/home/alice/.aws\0", True), (b"/home/alice/.aws/", False),
    }
    # No `network` key means no connect is allowed: in kill mode the kernel enforces that too.
    # and in kill mode every bypassing interface is denied (none is listed).
    assert policy.flags == abi.EnforceFlags.SECRETS | abi.EnforceFlags.CONNECT | abi.EnforceFlags.INTERFACES | abi.EnforceFlags.LISTEN
    assert policy.secret_action == abi.KernelAction.KILL
    # Wildcards before the end cannot be a kernel prefix: user space keeps them, and says so.
    assert [r.split(":")[0] for r in policy.user_space_only] == ["secrets /home/*/.ssh/**", "secrets /srv/k?y"]
    assert policy.secrets[0].prefix_bits == 32 + 8 * len(b"/etc/shadow\0")


def test_destinations_push_covering_ports_down_and_keep_families_apart(tmp_path):
    policy = compile_policy(load(tmp_path, """\
        network:
          connect: ["10.0.0.0/8:443", "10.1.0.0/16:80", "[::/0]:22", "[2001:db8::/32]:8000-8100", "unix:/run/x.sock"]
        on_violation: kill
    """))
    by_net = {str(d.network): d.ports for d in policy.destinations}
    assert by_net == {
        str(V4_MAPPED): (),                              # all of IPv4: nothing unless a rule says so
        "::ffff:a00:0/104": ((443, 443),),
        "::ffff:a01:0/112": ((80, 80), (443, 443)),      # 10.1/16 is inside 10/8: both ports
        "::/0": ((22, 22),),
        "2001:db8::/32": ((22, 22), (8000, 8100)),       # inside ::/0
    }
    # SECRETS even without secrets: another process's memory is one in every profile.
    assert policy.flags == (abi.EnforceFlags.SECRETS | abi.EnforceFlags.CONNECT | abi.EnforceFlags.INTERFACES
                            | abi.EnforceFlags.LISTEN)
    assert policy.destinations[0].prefix_bits == 32 + policy.destinations[0].network.prefixlen


def test_no_connect_rules_still_enforce_deny_all(tmp_path):
    policy = compile_policy(load(tmp_path, "on_violation: kill\n"))
    assert [(str(d.network), d.ports) for d in policy.destinations] == [(str(V4_MAPPED), ())]
    # SECRETS even without secrets: another process's memory is one in every profile.
    assert policy.flags == (abi.EnforceFlags.SECRETS | abi.EnforceFlags.CONNECT | abi.EnforceFlags.INTERFACES
                            | abi.EnforceFlags.LISTEN)


def test_too_many_port_ranges_leave_connect_to_user_space(tmp_path):
    rules = ", ".join(f'"127.0.0.1:{p}"' for p in range(1000, 1000 + abi.PORT_RANGES + 1))
    policy = compile_policy(load(tmp_path, f"network:\n  connect: [{rules}]\non_violation: kill\n"))
    assert not policy.flags & abi.EnforceFlags.CONNECT
    assert any("port ranges" in r for r in policy.user_space_only)


@pytest.mark.parametrize("actions, flags, secret_action, connect_action", [
    ("on_violation: alert", 0, abi.KernelAction.NONE, abi.KernelAction.NONE),
    ("on_violation: quarantine", 27, abi.KernelAction.STOP, abi.KernelAction.STOP),
    ("on_violation: alert\nactions:\n  secrets: kill", 1, abi.KernelAction.KILL, abi.KernelAction.NONE),
    ("on_violation: kill\nactions:\n  network.connect: alert", 25, abi.KernelAction.KILL, abi.KernelAction.NONE),
])
def test_actions_decide_what_the_kernel_enforces(tmp_path, actions, flags, secret_action, connect_action):
    policy = compile_policy(load(tmp_path, f'secrets: ["/etc/shadow"]\n{actions}\n'))
    assert policy.flags == flags
    assert (policy.secret_action, policy.connect_action) == (secret_action, connect_action)


def test_audit_only_enforces_nothing_in_the_kernel(tmp_path):
    profile = load(tmp_path, 'secrets: ["/etc/shadow"]\non_violation: kill\n')
    assert compile_policy(profile).flags == (abi.EnforceFlags.SECRETS | abi.EnforceFlags.CONNECT
                                             | abi.EnforceFlags.INTERFACES | abi.EnforceFlags.LISTEN)
    assert compile_policy(profile, audit_only=True).flags == 0


def test_actions_key_is_validated_with_lines(tmp_path):
    profile = load(tmp_path, "actions:\n  secrets: kill\n  exec: quarantine\n")
    assert profile.action_for("secrets") == "kill" and profile.action_for("exec") == "quarantine"
    assert profile.action_for("files.read") == "alert"
    with pytest.raises(ProfileError) as err:
        load(tmp_path, "actions:\n  secretz: kill\n  exec: explode\n")
    messages = [(p.line, p.message) for p in err.value.problems]
    assert messages[0][0] == 3 and "unknown key 'secretz'" in messages[0][1]
    assert messages[1] == (4, "bad actions.exec 'explode' (accepted: alert, kill, quarantine)")


def test_ipv4_sentinel_is_the_v4_mapped_range():
    assert V4_MAPPED == ipaddress.IPv6Network("::ffff:0:0/96")


def test_exec_deny_compiles_for_the_kernel_and_wins_over_exec(tmp_path):
    profile = load(tmp_path, """\
        exec: ["/usr/bin/**"]
        exec_deny: ["/usr/bin/nc*", "/usr/bin/curl", "/opt/tools/**"]
        actions:
          exec: kill
    """)
    policy = compile_policy(profile)
    assert {p.path for p in policy.denied_execs} == {b"/usr/bin/curl\0", b"/opt/tools\0", b"/opt/tools/"}
    assert any(r.startswith("exec_deny /usr/bin/nc*") for r in policy.user_space_only)
    assert policy.flags & abi.EnforceFlags.EXEC and policy.exec_action == abi.KernelAction.KILL
    assert profile.may_exec("/usr/bin/git") and not profile.may_exec("/usr/bin/curl")
    assert not profile.may_exec("/usr/bin/ncat")  # user space judges the wildcard entry


def test_interfaces_allowed_by_name(tmp_path):
    policy = compile_policy(load(tmp_path, "interfaces: [io_uring, ptrace]\non_violation: kill\n"))
    assert policy.interfaces_allowed == abi.Interface.IO_URING | abi.Interface.PTRACE
    assert policy.interface_action == abi.KernelAction.KILL and policy.flags & abi.EnforceFlags.INTERFACES | abi.EnforceFlags.LISTEN
    with pytest.raises(ProfileError) as err:
        load(tmp_path, "interfaces: [io_uring, telepathy]\n")
    assert err.value.problems[0].line == 2 and "unknown interface 'telepathy'" in err.value.problems[0].message


def test_brokers_get_a_bit_each_and_their_secrets_carry_it(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text('name: b\nsecrets: ["/etc/shadow"]\nbrokers:\n  "/opt/a": ["/srv/a/**"]\n'
                    '  "/opt/b": ["/srv/a/**", "/srv/b/key"]\n')
    policy = compile_policy(load_profile_file(path, homes=["/root"]))
    assert [p.path for p in policy.brokers] == [b"/opt/a\0", b"/opt/b\0"]
    by_path = {p.path: policy.brokers_of(p) for p in policy.secrets}
    assert by_path == {b"/etc/shadow\0": 0, b"/srv/a\0": 0b11, b"/srv/a/": 0b11, b"/srv/b/key\0": 0b10}
