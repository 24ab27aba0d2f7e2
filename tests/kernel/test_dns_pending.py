"""The kernel side of DNS-aware policy, with no user space learning anything: an answer for a
name the profile allows leaves exactly its own addresses to user space's judgement
(dns_pending); a connect to any other address is refused in the kernel even right after the
answer. Before this, the whole agent run's unknown destinations waited for user space."""

from __future__ import annotations

import ipaddress
import socket
import threading

import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from sensor import abi

from .conftest import KILLED, received_bytes

RESOLVER = "127.0.0.2"
ANSWERS = {dns.rdatatype.A: ("127.0.0.3", "127.0.0.4"), dns.rdatatype.AAAA: ("fd00::3",)}


@pytest.fixture
def resolver():
    """Answers api.test through a CNAME hop, as recursive resolvers do: A and AAAA records."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((RESOLVER, 53))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                wire, client = server.recvfrom(4096)
            except socket.timeout:
                continue
            query = dns.message.from_wire(wire)
            question = query.question[0]
            response = dns.message.make_response(query)
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "CNAME", "edge.api.test."))
            response.answer.append(dns.rrset.from_text("edge.api.test.", 60, "IN",
                                                       dns.rdatatype.to_text(question.rdtype),
                                                       *ANSWERS[question.rdtype]))
            server.sendto(response.to_wire(), client)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()
    server.close()


@pytest.fixture
def listener_on():
    socks = []

    def listen(address: str) -> socket.socket:
        sock = socket.socket()
        sock.bind((address, 0))
        sock.listen(8)
        socks.append(sock)
        return sock

    yield listen
    for sock in socks:
        sock.close()


def resolve_then_send(address: str, port: int):
    """The child: asks for api.test's A and AAAA records, then sends to address:port at once."""
    def action(ch):
        for rdtype in ("A", "AAAA"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(5)
                s.sendto(dns.message.make_query("api.test", rdtype).to_wire(), (RESOLVER, 53))
                s.recvfrom(512)
        with socket.create_connection((address, port), timeout=5) as c:
            c.sendall(b"exfiltrated data")
    return action


def pending_addresses(sensor_bpf, root_pid: int) -> set[ipaddress.IPv6Address]:
    return {ipaddress.IPv6Address(bytes(k.addr)) for k in sensor_bpf.bpf[b"dns_pending"].keys()
            if k.root_pid == root_pid}


@pytest.fixture
def dns_policy(policy):
    def install(port: int) -> int:
        return policy(f"""\
name: by-name
network:
  connect: ["{RESOLVER}:53", "api.test:{port}"]
on_violation: kill
""")
    return install


@pytest.fixture
def agent_sending_to(tracker, spawn, dns_policy, resolver, listener_on):
    """The tracked child resolving api.test, then sending to address:port at once; started, not awaited."""
    def start(address: str):
        listener = listener_on(address)
        port = listener.getsockname()[1]
        child = spawn(resolve_then_send(address, port))
        tracker.track(child.pid, dns_policy(port))
        child.go()
        return child, listener, port
    return start


def test_an_answer_leaves_only_its_own_addresses_to_user_space(sensor_bpf, events, agent_sending_to):
    child, target, port = agent_sending_to("127.0.0.3")
    assert child.wait() == 0
    # The kernel let the connect through for user space to judge by name (none runs here).
    assert received_bytes(target) == len(b"exfiltrated data")
    seen = events.wait_for([child.pid], lambda evs: any(e.kind == "connect" and e.port == port for e in evs))
    answers = [e for e in seen if e.kind == "dns" and e.direction == abi.DnsDirection.ANSWER]
    assert sorted(e.pending for e in answers) == [1, 2]
    connect = [e for e in seen if e.kind == "connect" and e.port == port][0]
    assert connect.hdr.kernel_action == abi.KernelAction.NONE
    assert pending_addresses(sensor_bpf, child.pid) == {
        ipaddress.IPv6Address("::ffff:127.0.0.3"), ipaddress.IPv6Address("::ffff:127.0.0.4"),
        ipaddress.IPv6Address("fd00::3")}
    sensor_bpf.forget_dns(child.pid)
    assert pending_addresses(sensor_bpf, child.pid) == set()


def test_another_address_right_after_an_allowed_answer_is_refused(sensor_bpf, events, agent_sending_to):
    child, attacker, _ = agent_sending_to("127.0.0.5")
    assert child.wait() == KILLED
    assert received_bytes(attacker) == 0
    seen = events.wait_for([child.pid], lambda evs: any(e.kind == "connect" for e in evs))
    connect = [e for e in seen if e.kind == "connect"][0]
    assert connect.hdr.kernel_action == abi.KernelAction.KILL
    sensor_bpf.forget_dns(child.pid)
    sensor_bpf.forget_doomed(child.pid)
