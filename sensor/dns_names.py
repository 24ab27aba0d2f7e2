"""DNS messages agents send and receive (bpf/dns.c) parsed with dnspython, and what the answers
taught: the names each address was resolved from, per profile slot. Pure: no I/O.

A connect is judged by those names (correlate.py), so `api.example.com:443` in a profile allows
the addresses the agent's own resolver was told, and an alert shows the name behind an address."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from .profiles.schema import IPAddress, unmap_ipv4

LEARNED_PER_SLOT = 4096  # addresses remembered per profile; the oldest are forgotten first


@dataclass(frozen=True)
class DnsMessage:
    question: str                   # lower case, no trailing dot; "" if the message asks nothing
    qtype: str                      # A, AAAA, ...
    is_response: bool
    rcode: str                      # NOERROR, NXDOMAIN, ...
    addresses: tuple[IPAddress, ...]  # A and AAAA records of the answer section

    def describe(self) -> str:
        if not self.is_response:
            return f"query {self.question} {self.qtype}"
        found = ", ".join(map(str, self.addresses)) or self.rcode
        return f"answer {self.question} {self.qtype}: {found}"


def parse(payload: bytes) -> DnsMessage | None:
    """The message in a captured payload, or None if it is not one DNS message (cut at the
    capture limit, or not DNS at all). Over TCP a message is preceded by its 2-byte length."""
    framed = payload[2:] if len(payload) > 2 and int.from_bytes(payload[:2], "big") == len(payload) - 2 else None
    for wire in (payload, framed):
        if wire is None:
            continue
        try:
            message = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError):
            continue
        return _summary(message)
    return None


def _summary(message: dns.message.Message) -> DnsMessage:
    question = message.question[0] if message.question else None
    addresses = []
    # Every address in the answer belongs to the name asked: CNAME hops are the resolver's
    # business, the agent asked for (and a profile names) the question's name.
    for rrset in message.answer:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            addresses.extend(unmap_ipv4(ipaddress.ip_address(r.address)) for r in rrset)
    return DnsMessage(
        question=question.name.to_text(omit_final_dot=True).lower() if question is not None else "",
        qtype=dns.rdatatype.to_text(question.rdtype) if question is not None else "",
        is_response=bool(message.flags & dns.flags.QR),
        rcode=dns.rcode.to_text(message.rcode()),
        addresses=tuple(dict.fromkeys(addresses)))


class ResolvedNames:
    """slot -> address -> the names it was resolved from, newest last; bounded per slot."""

    def __init__(self, per_slot: int = LEARNED_PER_SLOT):
        self.per_slot = per_slot
        self._slots: dict[int, OrderedDict[IPAddress, tuple[str, ...]]] = {}

    def learn(self, slot: int, name: str, addresses) -> None:
        table = self._slots.setdefault(slot, OrderedDict())
        for address in addresses:
            names = tuple(n for n in table.pop(address, ()) if n != name) + (name,)
            table[address] = names
            while len(table) > self.per_slot:
                table.popitem(last=False)

    def forget(self, slot: int) -> None:
        self._slots.pop(slot, None)

    def names_of(self, slot: int, address: IPAddress | None) -> tuple[str, ...]:
        if address is None:
            return ()
        return self._slots.get(slot, {}).get(unmap_ipv4(address), ())

    def count(self) -> int:
        return sum(len(t) for t in self._slots.values())
