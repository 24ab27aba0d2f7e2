"""DNS-aware policy without a kernel: parsing captured messages, remembering what answers
resolved, judging connects by name, and the kernel forms (name hashes, learned prefixes)."""

from __future__ import annotations

import ipaddress

import dns.message
import dns.rrset

from sensor import abi, dns_names
from sensor.correlate import RuleKind, decide
from sensor.decode import ConnectEvent, Header
from sensor.kernel_rules import compile_policy, learned_destination, name_hash
from sensor.profiles.schema import Destination, Profile


def answer(name: str, *addresses: str) -> bytes:
    query = dns.message.make_query(name, "A")
    response = dns.message.make_response(query)
    if addresses:
        response.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "A", *addresses))
    return response.to_wire()


def test_answers_queries_tcp_framing_and_garbage():
    wire = answer("Api.Example.com", "10.0.0.1", "10.0.0.2")
    parsed = dns_names.parse(wire)
    assert (parsed.question, parsed.qtype, parsed.is_response) == ("api.example.com", "A", True)
    assert set(parsed.addresses) == {ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.2")}
    assert dns_names.parse(len(wire).to_bytes(2, "big") + wire) == parsed   # DNS over TCP
    query = dns_names.parse(dns.message.make_query("x.test", "AAAA").to_wire())
    assert (query.question, query.qtype, query.is_response, query.addresses) == ("x.test", "AAAA", False, ())
    assert dns_names.parse(wire[:20]) is None        # cut at the capture limit
    assert dns_names.parse(b"GET / HTTP/1.1\r\n") is None


def test_resolved_names_are_per_slot_and_bounded():
    names = dns_names.ResolvedNames(per_slot=2)
    a, b, c = (ipaddress.ip_address(f"10.0.0.{i}") for i in (1, 2, 3))
    names.learn(0, "api.test", [a])
    names.learn(0, "alias.test", [a, b])
    assert names.names_of(0, a) == ("api.test", "alias.test")
    assert names.names_of(1, a) == ()
    names.learn(0, "new.test", [c])            # a is the oldest: forgotten
    assert names.names_of(0, a) == () and names.names_of(0, c) == ("new.test",)
    assert names.names_of(0, ipaddress.ip_address("::ffff:10.0.0.3")) == ("new.test",)


PROFILE = Profile(name="p", description=None, source="p.yaml", line=1, on_violation="kill",
                  network_connect=(Destination.parse("10.9.9.9:53"), Destination.parse("api.test:443"),
                                   Destination.parse("*.corp.test:*"), Destination.parse("10.0.0.0/8:22")))


def connect(address: str, port: int) -> ConnectEvent:
    hdr = Header(ktime_ns=1, cgroup_id=1, pid=10, tid=10, uid=0, gid=0, slot=0, comm="agent")
    return ConnectEvent(hdr=hdr, fd=3, family=2, address=address, port=port)


def test_connects_are_judged_by_the_name_they_were_resolved_from():
    assert decide(connect("192.0.2.1", 443), PROFILE, names=("api.test",)) is None
    assert decide(connect("192.0.2.1", 8443), PROFILE, names=("git.corp.test",)) is None
    wrong_port = decide(connect("192.0.2.1", 80), PROFILE, names=("api.test",))
    assert wrong_port.kind == RuleKind.NETWORK_CONNECT
    unlisted = decide(connect("192.0.2.7", 443), PROFILE, names=("evil.test",))
    assert unlisted.names == ("evil.test",) and "(evil.test)" in unlisted.reason
    assert decide(connect("192.0.2.1", 443), PROFILE) is not None   # no name known: not allowed


def test_name_hashes_match_the_kernel_walk():
    # bpf/dns.c hashes the wire form back to front, every byte | 0x20: case does not matter
    assert name_hash("api.test") == name_hash("API.Test")
    assert name_hash("api.test") != name_hash("test") != name_hash("api.test.evil")
    policy = compile_policy(PROFILE)
    assert policy.flags & abi.EnforceFlags.DNS_NAMES
    assert dict(policy.names) == {name_hash("api.test"): abi.DnsNameMatch.EXACT,
                                  name_hash("corp.test"): abi.DnsNameMatch.SUBDOMAINS}


def test_learned_addresses_keep_the_ports_of_covering_prefixes():
    policy = compile_policy(PROFILE)
    learned = learned_destination(policy, ipaddress.ip_address("10.1.2.3"), {(443, 443)})
    assert learned.network == ipaddress.ip_network("::ffff:10.1.2.3/128")
    assert learned.ports == ((22, 22), (443, 443))   # 10.0.0.0/8:22 still applies there
    too_many = {(p, p) for p in range(1, 10)}
    assert learned_destination(policy, ipaddress.ip_address("192.0.2.1"), too_many) is None
