"""Test hosts on this machine, for scenarios and the end-to-end tests: network namespaces joined
to the host by veth pairs (pyroute2), each with its own address and a sink that records every
byte reaching it over TCP or UDP, and optionally a DNS server (dns_server.py) on port 53 and an
HTTP server for a directory on port 80. Host n (in the order added) is 10.77.n.2, so scenario
profiles can name hosts before they exist. No traffic goes anywhere else."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

SINK = """
import socket, sys, threading
host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()
def record(data):
    with lock, open(out, "ab") as f:
        f.write(data)
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port)); s.listen(16)
    while True:
        c, _ = s.accept()
        threading.Thread(target=lambda c=c: [record(d) for d in iter(lambda: c.recv(65536), b"")], daemon=True).start()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((host, port))
    while True:
        record(s.recv(65536))
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
tcp()
"""


@dataclass
class Host:
    name: str        # the namespace
    address: str     # its address, reachable from the host
    port: int        # TCP and UDP sink port
    received_file: Path
    sink: subprocess.Popen
    veth: str        # host-side interface
    dns: subprocess.Popen | None = None  # DNS server on address:53
    dns_log: Path | None = None          # one line per question it was asked: "name TYPE"
    http: subprocess.Popen | None = None  # HTTP server for a directory on address:HTTP_PORT

    def questions(self) -> list[str]:
        return self.dns_log.read_text().splitlines() if self.dns_log and self.dns_log.exists() else []

    def received(self) -> bytes:
        return self.received_file.read_bytes() if self.received_file.exists() else b""


HTTP_PORT = 80


def host_address(n: int) -> str:
    """The address of the n-th host (from 1) of a HostNetwork."""
    return f"10.77.{n}.2"


def with_resolv_conf(path: Path, argv: list[str]) -> list[str]:
    """argv run in a private mount namespace with `path` over /etc/resolv.conf, so its resolver
    asks a test DNS server and nothing else on the machine changes. unshare and sh exec in
    place, so the process keeps the pid Popen reports. (A preexec_fn would do this with a plain
    fork, which runs gRPC's fork handlers in a test process that has gRPC threads and can hang.)"""
    return ["unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(path), *argv]


def _refuse_address_in_use(ipr: IPRoute, address: str) -> None:
    """Two links with one test address would send the agent's traffic to the wrong one."""
    for found in ipr.get_addr(address=address):
        link = ipr.get_links(found["index"])[0].get_attr("IFLA_IFNAME")
        raise RuntimeError(f"{address} is already on {link}: another test network is running or one was left "
                           f"behind by a run that was killed; if none runs, remove it with `ip link del {link}` "
                           f"and its namespaces (`ip netns list`) with `ip netns del NAME`")


class HostNetwork:
    """with HostNetwork(tmp_path) as net: api = net.add_host("api"); ..."""

    def __init__(self, workdir: Path, port: int = 8080):
        self.workdir = workdir
        self.port = port
        self.hosts: list[Host] = []
        self._tag = f"as{os.getpid() % 10000}"

    def add_host(self, role: str, dns_zone: dict[str, str] | None = None, http_dir: Path | None = None) -> Host:
        """A host; with dns_zone (name -> IPv4 address) it also answers DNS queries for those
        names, with http_dir it serves that directory over HTTP."""
        n = len(self.hosts) + 1
        ns, veth, peer = f"{self._tag}-{role}", f"{self._tag}h{n}", f"{self._tag}p{n}"
        host_ip, ns_ip = f"10.77.{n}.1", host_address(n)
        with IPRoute() as ipr:
            _refuse_address_in_use(ipr, host_ip)
        netns.create(ns)
        with IPRoute() as ipr:
            ipr.link("add", ifname=veth, kind="veth", peer={"ifname": peer, "net_ns_fd": ns})
            idx = ipr.link_lookup(ifname=veth)[0]
            ipr.addr("add", index=idx, address=host_ip, prefixlen=24)
            ipr.link("set", index=idx, state="up")
        with NetNS(ns) as nsr:
            idx = nsr.link_lookup(ifname=peer)[0]
            nsr.addr("add", index=idx, address=ns_ip, prefixlen=24)
            nsr.link("set", index=idx, state="up")
            nsr.link("set", index=nsr.link_lookup(ifname="lo")[0], state="up")
        received = self.workdir / f"{role}.received"
        sink = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SINK, ns_ip, str(self.port),
                                 str(received)], stdout=subprocess.PIPE, text=True)
        host = Host(role, ns_ip, self.port, received, sink, veth)
        self.hosts.append(host)
        assert sink.stdout.readline().strip() == "ready", f"sink in {ns} did not start"
        if dns_zone is not None:
            host.dns_log = self.workdir / f"{role}.questions"
            host.dns = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, str(Path(__file__).with_name("dns_server.py")), ns_ip,
                 str(host.dns_log), *(f"{name}={ip}" for name, ip in dns_zone.items())],
                stdout=subprocess.PIPE, text=True)
            assert host.dns.stdout.readline().strip() == "ready", f"DNS server in {ns} did not start"
        if http_dir is not None:
            host.http = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", ns_ip,
                 "--directory", str(http_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            # It says "Serving HTTP on ..." once it listens.
            assert "Serving HTTP" in host.http.stdout.readline(), f"HTTP server in {ns} did not start"
        return host

    def __enter__(self) -> HostNetwork:
        return self

    def __exit__(self, *exc) -> None:
        for host in self.hosts:
            for server in filter(None, (host.sink, host.dns, host.http)):
                server.kill()
                server.wait()
                server.stdout.close()
            # The host end first: deleting it takes the pair at once. Removing the namespace first
            # left the pair to the kernel's cleanup, which raced the delete (ENODEV), and the
            # rest of the network stayed behind for the next test to trip over.
            with IPRoute() as ipr:
                for idx in ipr.link_lookup(ifname=host.veth):
                    try:
                        ipr.link("del", index=idx)
                    except NetlinkError as err:
                        if err.code != errno.ENODEV:  # ENODEV: already gone, as wanted
                            raise
            netns.remove(f"{self._tag}-{host.name}")
