"""A DNS server for scenarios and tests, run inside a test host's network namespace (hosts.py):
answers A queries for the names it is given, NXDOMAIN for anything else, over UDP, and appends
each question to a log so tests can see what was asked.

    python dns_server.py ADDRESS LOG NAME=IP [NAME=IP ...]
"""

import socket
import sys

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


def main() -> None:
    address, log = sys.argv[1], sys.argv[2]
    zone = dict(arg.lower().split("=", 1) for arg in sys.argv[3:])
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((address, 53))
    print("ready", flush=True)
    while True:
        wire, client = server.recvfrom(4096)
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - a test server ignores garbage
            continue
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        with open(log, "a") as f:
            f.write(f"{name} {dns.rdatatype.to_text(question.rdtype)}\n")
        if name not in zone:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", zone[name]))
        server.sendto(response.to_wire(), client)


if __name__ == "__main__":
    main()
