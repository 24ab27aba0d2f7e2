"""Egress across real hosts: an 'allowed API' and an 'attacker' in their own network namespaces
(sensor/scenarios/hosts.py). The agent may talk to the API; whatever it tries towards the attacker, by TCP
or UDP, the attacker receives nothing."""

from __future__ import annotations

import pytest
from pyroute2 import IPRoute

from sensor.scenarios.hosts import HostNetwork

from .conftest import host_network_daemon


@pytest.fixture
def network(tmp_path):
    with HostNetwork(tmp_path) as net:
        yield net.add_host("api"), net.add_host("attacker")


@pytest.fixture
def daemon_for(tmp_path, network):
    api, _ = network
    yield from host_network_daemon(tmp_path, f'network:\n  connect: ["{api.address}:{api.port}"]', api.port)


def test_the_api_gets_its_data(daemon_for, network):
    api, attacker = network
    run = daemon_for.run_agent("e2e-hosts", f"tcp:{api.address}:{api.port}", f"udp:{api.address}:{api.port}")
    assert run.returncode == 0, run.stderr
    assert api.received().count(f"payload for {api.address}".encode()) == 2
    assert daemon_for.alerts_for(run.pid, expect=0) == []


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_the_attacker_receives_nothing(daemon_for, network, proto):
    api, attacker = network
    run = daemon_for.run_agent("e2e-hosts", f"tcp:{api.address}:{api.port}",
                               f"{proto}:{attacker.address}:{attacker.port}")
    assert run.returncode == -9
    assert attacker.received() == b""
    alert = daemon_for.alerts_for(run.pid)[0]
    assert alert["rule"]["kind"] == "RULE_KIND_NETWORK_CONNECT"
    assert alert["event"]["network"]["address"] == attacker.address
    assert alert["action"]["in_kernel"] is True


def test_a_test_network_left_behind_is_named_instead_of_stealing_the_traffic(tmp_path):
    """A run killed mid-test leaves its host-side link (and address) behind; a new test network
    on the same address would send the agent's traffic there, so it refuses and names the link."""
    with IPRoute() as ipr:
        # a veth pair, not a dummy link: some kernels (this one) lack the dummy module
        ipr.link("add", ifname="as-stale", kind="veth", peer="as-stale-p")
        try:
            ipr.addr("add", index=ipr.link_lookup(ifname="as-stale")[0], address="10.77.1.1", prefixlen=24)
            with HostNetwork(tmp_path) as net, pytest.raises(RuntimeError, match="10.77.1.1 is already on as-stale"):
                net.add_host("api")
            assert net.hosts == []
        finally:
            ipr.link("del", ifname="as-stale")
