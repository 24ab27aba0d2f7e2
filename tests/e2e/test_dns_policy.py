"""Destinations by name: the profile allows `api.test` and `*.corp.test`; a DNS server in its
own network namespace (sensor/scenarios/hosts.py) answers the agent's resolver. A connect is judged by the
name its address was resolved from, whichever way the agent resolves it, and a name the profile
does not list is refused in the kernel even though the agent resolved it itself."""

from __future__ import annotations

import pytest

from sensor.scenarios.hosts import HostNetwork

from .conftest import Daemon, host_network_daemon


@pytest.fixture
def network(tmp_path):
    with HostNetwork(tmp_path) as net:
        api = net.add_host("api")
        attacker = net.add_host("attacker")
        resolver = net.add_host("dns", dns_zone={"api.test": api.address, "build.corp.test": api.address,
                                                 "evil.test": attacker.address})
        yield api, attacker, resolver


@pytest.fixture
def daemon_for(tmp_path, network):
    api, _, resolver = network
    (tmp_path / "resolv.conf").write_text(f"nameserver {resolver.address}\noptions timeout:2 attempts:1\n")
    # glibc asks nscd first (absent here: the connect fails) before its own resolver
    yield from host_network_daemon(tmp_path, f"""network:
  connect: ["unix:/run/nscd/socket", "{resolver.address}:53", "api.test:{api.port}", "*.corp.test:{api.port}"]""",
                                   api.port)


def run(daemon: Daemon, tmp_path, *actions: str):
    return daemon.run_agent("e2e-hosts", *actions, resolv_conf=tmp_path / "resolv.conf")


def test_allowed_names_are_reached_through_the_system_resolver(daemon_for, network, tmp_path):
    api, _, resolver = network
    result = run(daemon_for, tmp_path, f"tcp:api.test:{api.port}", f"tcp:build.corp.test:{api.port}")
    assert result.returncode == 0, result.stderr
    assert b"payload for api.test" in api.received()
    assert b"payload for build.corp.test" in api.received()
    assert {"api.test A", "build.corp.test A"} <= set(resolver.questions())
    assert daemon_for.alerts_for(result.pid, expect=0) == []


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_a_name_not_in_the_profile_is_refused_in_the_kernel_and_named_in_the_alert(daemon_for, network, tmp_path,
                                                                                   proto):
    _, attacker, resolver = network
    result = run(daemon_for, tmp_path, f"{proto}:evil.test:{attacker.port}")
    assert result.returncode == -9
    assert "evil.test A" in resolver.questions()  # the agent did resolve it
    assert attacker.received() == b""
    alert = daemon_for.alerts_for(result.pid)[0]
    assert alert["rule"]["kind"] == "RULE_KIND_NETWORK_CONNECT"
    assert alert["event"]["network"]["address"] == attacker.address
    assert alert["event"]["network"]["dns_names"] == ["evil.test"]
    assert "(evil.test)" in alert["reason"]
    assert alert["action"]["in_kernel"] is True


@pytest.mark.parametrize("mode", ["sendto", "write"])
def test_other_resolvers_are_seen_too(daemon_for, network, tmp_path, mode):
    """Resolvers that send unconnected datagrams (musl, dnspython) or write/read a connected
    socket (Go): the answer is learned all the same, and an unlisted name is refused."""
    api, attacker, resolver = network
    allowed = run(daemon_for, tmp_path, f"lookup:{mode}:{resolver.address}:api.test:{api.port}")
    assert allowed.returncode == 0, allowed.stderr
    assert b"payload for api.test" in api.received()
    assert daemon_for.alerts_for(allowed.pid, expect=0) == []

    denied = run(daemon_for, tmp_path, f"lookup:{mode}:{resolver.address}:evil.test:{attacker.port}")
    assert denied.returncode == -9
    assert attacker.received() == b""
    alert = daemon_for.alerts_for(denied.pid)[0]
    assert alert["event"]["network"]["dns_names"] == ["evil.test"]


def test_another_address_the_moment_an_allowed_answer_is_in_is_refused_in_the_kernel(daemon_for, network, tmp_path):
    """The answer for api.test leaves only api.test's address to user space's judgement until it
    has learned it: a connect straight to another address, before the daemon can have read the
    answer, is refused in the kernel all the same."""
    api, attacker, resolver = network
    result = run(daemon_for, tmp_path, f"lookup:sendto:{resolver.address}:api.test:{attacker.port}:{attacker.address}")
    assert result.returncode == -9
    assert "api.test A" in resolver.questions()
    assert attacker.received() == b""
    alert = daemon_for.alerts_for(result.pid)[0]
    assert alert["rule"]["kind"] == "RULE_KIND_NETWORK_CONNECT"
    assert alert["event"]["network"]["address"] == attacker.address
    assert alert["action"]["in_kernel"] is True
