"""Compile a profile's hard rules into what the kernel can enforce by itself (pure, no I/O).

Only rules whose kernel-side match is conclusive are compiled:
- secrets and exec_deny: an absolute path equal to a literal entry, or under a literal directory
  (`dir/**`), is denied whatever else is true. Globs with wildcards elsewhere stay in user space.
- network.connect (inet): an address and port are exactly what the kernel will use, so the
  allow-list is decided in the kernel in full. Host names are compiled as they resolve: user
  space adds each address an agent's DNS answer gave an allowed name (learned_destination).
File and exec allow-lists are not compiled: the kernel sees a name as passed, and `/lib/x.so`
is allowed as `/usr/lib/x.so` only after symlinks are resolved, so a kernel verdict could kill
an agent for an allowed access. User space judges every rule in any case, so an event the
kernel cannot decide is still alerted and acted on there."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from . import abi
from .profiles import Profile
from .profiles.globs import GLOB_METACHARACTERS

KERNEL_ACTIONS = {"alert": abi.KernelAction.NONE, "kill": abi.KernelAction.KILL,
                  "quarantine": abi.KernelAction.STOP}


@dataclass(frozen=True)
class SecretPrefix:
    path: bytes   # what the kernel compares; an exact path ends with its NUL
    exact: bool

    @property
    def prefix_bits(self) -> int:
        return 32 + 8 * len(self.path)


@dataclass(frozen=True)
class DestinationPrefix:
    network: ipaddress.IPv6Network          # IPv4 as ::ffff:0:0/96 + prefix
    ports: tuple[tuple[int, int], ...]      # allowed here, including every covering prefix's

    @property
    def prefix_bits(self) -> int:
        return 32 + self.network.prefixlen


FNV_OFFSET, FNV_PRIME, U64 = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def name_hash(name: str) -> int:
    """The kernel's key for a host name (bpf/events.h, struct dns_name_key): FNV-1a 64 over its
    wire form from the last byte back, each byte | 0x20 (lower case, as bpf/dns.c does)."""
    wire = b"".join(bytes([len(label)]) + label for label in name.encode().split(b"."))
    value = FNV_OFFSET
    for byte in reversed(wire):
        value = ((value ^ (byte | 0x20)) * FNV_PRIME) & U64
    return value


@dataclass(frozen=True)
class KernelPolicy:
    flags: abi.EnforceFlags
    secret_action: abi.KernelAction
    connect_action: abi.KernelAction
    exec_action: abi.KernelAction
    interface_action: abi.KernelAction
    interfaces_allowed: abi.Interface
    listen_action: abi.KernelAction
    secrets: tuple[SecretPrefix, ...]
    denied_execs: tuple[SecretPrefix, ...]
    destinations: tuple[DestinationPrefix, ...]
    listen: tuple[DestinationPrefix, ...]   # local addresses binds may use
    names: tuple[tuple[int, abi.DnsNameMatch], ...]  # host names in network.connect: (name_hash, how)
    user_space_only: tuple[str, ...]  # what was not compiled, and why: for status and docs
    brokers: tuple[SecretPrefix, ...] = ()  # broker i's program (exact path): bit 1 << i
    secret_brokers: tuple[tuple[SecretPrefix, int], ...] = ()  # secret prefix -> brokers that may open it

    def brokers_of(self, secret: SecretPrefix) -> int:
        """The secret_paths value: bits of the brokers that may open it (0: nobody)."""
        return dict(self.secret_brokers).get(secret, 0)


def path_prefixes(pattern: str) -> list[SecretPrefix] | None:
    """The kernel form (LPM prefixes) of one path or `dir/**`, or None if it needs user space."""
    if not GLOB_METACHARACTERS.intersection(pattern):
        raw = pattern.encode() + b"\0"
        return [SecretPrefix(raw, True)] if len(raw) <= abi.LPM_PATH_MAX else None
    if pattern.endswith("/**") and not GLOB_METACHARACTERS.intersection(pattern[:-3]):
        base = pattern[:-3].encode()
        if len(base) + 2 > abi.LPM_PATH_MAX:
            return None
        return [SecretPrefix(base + b"\0", True), SecretPrefix(base + b"/", False)]
    return None


def _path_prefixes(globs, rule: str, user_space_only: list[str]) -> tuple[SecretPrefix, ...]:
    out: list[SecretPrefix] = []
    for glob in globs:
        for pattern in glob.expanded:
            compiled = path_prefixes(pattern)
            if compiled is None:
                user_space_only.append(f"{rule} {pattern}: wildcard before the end, or too long")
            else:
                out.extend(compiled)
    return tuple(dict.fromkeys(out))


def _as_v6(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> ipaddress.IPv6Network:
    if network.version == 6:
        return network
    mapped = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + network.network_address.packed)
    return ipaddress.IPv6Network((mapped, 96 + network.prefixlen))


V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def kernel_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """The 16 bytes the kernel keys an address by (IPv4 as ::ffff:a.b.c.d)."""
    return _as_v6(ipaddress.ip_network(ip)).network_address.packed


def _destinations(entries) -> tuple[DestinationPrefix, ...] | None:
    """One entry per prefix. IPv4 lives in the trie as ::ffff:a.b.c.d; its /96 sentinel is
    always present, so an IPv6 rule such as [::/0] is never the longest match for an IPv4
    address (profiles say an IPv6 rule never covers IPv4)."""
    v4: dict[ipaddress.IPv6Network, set[tuple[int, int]]] = {V4_MAPPED: set()}
    v6: dict[ipaddress.IPv6Network, set[tuple[int, int]]] = {}
    for dest in entries:
        if dest.network is None:  # unix sockets; host names are added as they resolve
            continue
        family = v4 if dest.network.version == 4 else v6
        family.setdefault(_as_v6(dest.network), set()).add((dest.port_low, dest.port_high))
    # The longest prefix decides alone in the kernel, so give it the ports of every shorter
    # prefix of its family that contains it.
    out = []
    for family in (v4, v6):
        for net in family:
            ports = set().union(*(p for other, p in family.items() if net.subnet_of(other)))
            if len(ports) > abi.PORT_RANGES:
                return None
            out.append(DestinationPrefix(net, tuple(sorted(ports))))
    return tuple(sorted(out, key=lambda d: (d.network.prefixlen, d.network.network_address)))


def _compiled_destinations(entries, rule: str, user_space_only: list[str]) -> tuple[DestinationPrefix, ...] | None:
    """The kernel form of a destination list, or None (noted) when it does not fit the kernel."""
    compiled = _destinations(entries)
    if compiled is None:
        user_space_only.append(f"{rule}: more than {abi.PORT_RANGES} port ranges for one prefix")
    return compiled


def learned_destination(policy: KernelPolicy, ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
                        ports: set[tuple[int, int]]) -> DestinationPrefix | None:
    """The allowed_dests entry for an address a DNS answer gave an allowed name: the name's
    ports plus those of every compiled prefix of its family that contains it (the longest
    match decides alone), or None if that is more ranges than the kernel holds."""
    address = ipaddress.ip_network(ip)
    network = _as_v6(address)
    mapped = address.version == 4
    covering = set().union(*(d.ports for d in policy.destinations
                             if network.subnet_of(d.network) and d.network.subnet_of(V4_MAPPED) == mapped))
    merged = covering | ports
    if len(merged) > abi.PORT_RANGES:
        return None
    return DestinationPrefix(network, tuple(sorted(merged)))


def compile_policy(profile: Profile, audit_only: bool = False) -> KernelPolicy:
    flags = abi.EnforceFlags(0)
    user_space_only = []
    secret_action = KERNEL_ACTIONS[profile.action_for("secrets")]
    connect_action = KERNEL_ACTIONS[profile.action_for("network.connect")]

    exec_action = KERNEL_ACTIONS[profile.action_for("exec")]
    interface_action = KERNEL_ACTIONS[profile.action_for("interfaces")]
    interfaces_allowed = abi.Interface(0)
    for name in profile.interfaces:
        interfaces_allowed |= abi.Interface[name.upper()]
    if interface_action != abi.KernelAction.NONE:
        flags |= abi.EnforceFlags.INTERFACES
    secrets = _path_prefixes(profile.secrets, "secrets", user_space_only)
    brokers, secret_brokers = _brokers(profile, user_space_only)
    if secret_action != abi.KernelAction.NONE:  # another process's memory is a secret in every profile
        flags |= abi.EnforceFlags.SECRETS
    denied_execs = _path_prefixes(profile.exec_deny, "exec_deny", user_space_only)
    if denied_execs and exec_action != abi.KernelAction.NONE:
        flags |= abi.EnforceFlags.EXEC

    destinations = _compiled_destinations(profile.network_connect, "network.connect", user_space_only)
    if destinations is not None and connect_action != abi.KernelAction.NONE:
        flags |= abi.EnforceFlags.CONNECT
        if profile.allows_names:
            flags |= abi.EnforceFlags.DNS_NAMES

    listen_action = KERNEL_ACTIONS[profile.action_for("network.listen")]
    listen = _compiled_destinations(profile.network_listen, "network.listen", user_space_only)
    if listen is not None and listen_action != abi.KernelAction.NONE:
        flags |= abi.EnforceFlags.LISTEN

    names: dict[int, abi.DnsNameMatch] = {}
    for dest in profile.network_connect:
        if dest.host is not None:
            how = abi.DnsNameMatch.SUBDOMAINS if dest.host.wildcard else abi.DnsNameMatch.EXACT
            key = name_hash(dest.host.name)
            names[key] = names.get(key, abi.DnsNameMatch(0)) | how

    if audit_only:
        flags = abi.EnforceFlags(0)
    return KernelPolicy(flags=flags, secret_action=secret_action, connect_action=connect_action,
                        exec_action=exec_action, interface_action=interface_action,
                        interfaces_allowed=interfaces_allowed, secrets=secrets, denied_execs=denied_execs,
                        destinations=destinations or (), listen=listen or (), listen_action=listen_action,
                        names=tuple(names.items()), brokers=brokers, secret_brokers=secret_brokers,
                        user_space_only=tuple(user_space_only))


MAX_BROKERS = 32  # bits of tracked_proc.brokers


def _brokers(profile: Profile, user_space_only: list[str]):
    """Broker programs (bit i for the i-th) and, per secret prefix, the bits of its brokers. A
    broker the kernel cannot hold is left out: its reads are refused in the kernel (fail closed)."""
    programs: list[SecretPrefix] = []
    masks: dict[SecretPrefix, int] = {}
    for broker in profile.brokers:
        program = path_prefixes(broker.program)
        if not program or len(programs) >= MAX_BROKERS:
            user_space_only.append(f"brokers {broker.program}: too long or more than {MAX_BROKERS} brokers: "
                                   "the kernel refuses its reads")
            continue
        bit = 1 << len(programs)
        programs.append(program[0])
        for prefix in _path_prefixes(broker.secrets, "brokers", user_space_only):
            masks[prefix] = masks.get(prefix, 0) | bit
    return tuple(programs), tuple(masks.items())
