"""The in-memory form of an agent profile, and the rules' decision helpers.

Pure: no I/O. ``loader`` turns YAML files into these objects; everything here can
also be built directly (handy in tests and for the daemon's built-in defaults).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Iterable, Union

from .globs import GlobError, GlobList, PathGlob, TextGlob

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
ON_VIOLATION_CHOICES = ("alert", "kill", "quarantine")
# The rules a profile defines, by the key that holds them: `actions` may set one per rule.
RULE_NAMES = ("secrets", "files.read", "files.write", "network.connect", "network.listen", "exec", "interfaces")
# Kernel interfaces that bypass the traced syscalls (bpf/events.h, enum interface): denied to an
# agent unless its profile's `interfaces` lists them.
INTERFACE_NAMES = ("io_uring", "file_handles", "process_vm", "ptrace", "pidfd_getfd", "bpf")
# exec_deny violations are `exec` violations: one rule kind, one action.
DEFAULT_ON_VIOLATION = "alert"

# Every IPv4 address also exists as ::ffff:a.b.c.d; rules and events are compared as IPv4.
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
# A DNS name with at least one letter (so it cannot be an IPv4 address); `*.` may lead it.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"(?:\*\.)?(?=[^:]*[A-Za-z])(?:{_LABEL}\.)*{_LABEL}\.?")


# --- problems ------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a profile file, pinned to a 1-based line."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class ProfileError(Exception):
    """Raised with every problem found, so an operator can fix them all in one go."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems: list[Problem] = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


# --- network destinations ------------------------------------------------------------


class DestinationError(ValueError):
    """A ``network.connect`` entry that cannot be parsed; message is for the profile author."""


def unmap_ipv4(ip: IPAddress) -> IPAddress:
    """Return the IPv4 address behind an IPv4-mapped IPv6 address, else ``ip`` unchanged."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _unmap_network(network: IPNetwork) -> IPNetwork:
    if (
        isinstance(network, ipaddress.IPv6Network)
        and network.prefixlen >= 96
        and network.subnet_of(_V4_MAPPED)
    ):
        low32 = int(network.network_address) & 0xFFFFFFFF
        return ipaddress.IPv4Network((low32, network.prefixlen - 96))
    return network


def _parse_port(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise DestinationError(
            f"bad port '{text}' (expected a number 1-65535, a range LO-HI, or * for any port)"
        )
    if len(text) > 5 or not 0 <= int(text) <= 65535:
        raise DestinationError(f"port {text} is out of range (1-65535; 0 only in network.listen)")
    return int(text)


def _parse_ports(text: str) -> tuple[int, int]:
    if text == "":
        raise DestinationError("missing port after ':' (a number 1-65535, a range LO-HI, or *)")
    if text == "*":
        return 0, 65535
    if "-" in text:
        low_text, high_text = text.split("-", 1)
        low, high = _parse_port(low_text), _parse_port(high_text)
        if low > high:
            raise DestinationError(f"bad port range '{text}': {low} is greater than {high}")
        return low, high
    port = _parse_port(text)
    return port, port


def _parse_address(host: str, bracketed: bool) -> IPNetwork:
    """Parse an address or CIDR into a network (a single address becomes a /32 or /128)."""
    if host == "":
        raise DestinationError("missing address before the port")
    if "%" in host:
        raise DestinationError(f"'{host}': IPv6 zone ids (%...) are not supported")
    if "/" in host:
        try:
            network = ipaddress.ip_network(host, strict=True)
        except ValueError:
            try:
                loose = ipaddress.ip_network(host, strict=False)
            except ValueError:
                raise DestinationError(f"bad CIDR '{host}'") from None
            raise DestinationError(
                f"bad CIDR '{host}': host bits are set (did you mean {loose}?)"
            ) from None
    else:
        try:
            network = ipaddress.ip_network(ipaddress.ip_address(host))
        except ValueError:
            named = not bracketed and re.search("[A-Za-z]", host)
            raise DestinationError(f"bad IP address{' or host name' if named else ''} '{host}'") from None
    if bracketed and network.version == 4:
        raise DestinationError(f"'[{host}]': brackets are only for IPv6 addresses")
    return _unmap_network(network)


def _parse_inet(text: str) -> tuple[IPNetwork, int, int]:
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise DestinationError("missing ']' after the IPv6 address")
        host, rest = text[1:close], text[close + 1 :]
        if not rest.startswith(":"):
            raise DestinationError("missing ':PORT' after ']' (write [IPv6]:PORT)")
        network = _parse_address(host, bracketed=True)
        return (network, *_parse_ports(rest[1:]))
    if text.count(":") > 1:
        raise DestinationError("write IPv6 addresses in brackets, e.g. [::1]:443")
    if ":" not in text:
        raise DestinationError(
            "missing port: write ADDRESS:PORT (PORT is a number, a range LO-HI, or *)"
        )
    host, port_text = text.rsplit(":", 1)
    network = _parse_address(host, bracketed=False)
    return (network, *_parse_ports(port_text))


@dataclass(frozen=True)
class HostName:
    """A destination by DNS name: `api.example.com`, or `*.corp.example` for every name under
    corp.example (any depth, not corp.example itself). Compared case-insensitively."""

    name: str        # lower case, no trailing dot; for a wildcard, the part after `*.`
    wildcard: bool

    @classmethod
    def parse(cls, text: str) -> HostName:
        if not _HOST_NAME.fullmatch(text) or len(text.rstrip(".")) > 253:
            raise DestinationError(f"bad host name '{text}'")
        wildcard = text.startswith("*.")
        return cls(text.removeprefix("*.").rstrip(".").lower(), wildcard)

    def matches(self, name: str) -> bool:
        name = name.rstrip(".").lower()
        return name.endswith("." + self.name) if self.wildcard else name == self.name

    def __str__(self) -> str:
        return f"*.{self.name}" if self.wildcard else self.name


def _parse_host(text: str) -> tuple[HostName, int, int] | None:
    """`NAME:PORT` as a host destination, or None if NAME is no host name (an address)."""
    host, colon, port_text = text.rpartition(":")
    if not colon or host.startswith("[") or not _HOST_NAME.fullmatch(host):
        if not colon and _HOST_NAME.fullmatch(text):
            raise DestinationError(
                "missing port: write NAME:PORT (PORT is a number, a range LO-HI, or * for any port)")
        return None
    return (HostName.parse(host), *_parse_ports(port_text))


@dataclass(frozen=True)
class Destination:
    """One allowed ``network.connect`` destination: an address/CIDR plus ports, a host name plus
    ports (judged by the DNS answers the agent received, sensor/dns_names.py), or a unix socket.

    Exactly one of ``network``, ``host`` and ``unix`` is set. ``port_low``/``port_high`` are
    inclusive; ``*`` is stored as 0-65535.
    """

    text: str
    line: int
    network: IPNetwork | None = None
    port_low: int = 0
    port_high: int = 0
    unix: PathGlob | TextGlob | None = None
    host: HostName | None = None

    @classmethod
    def parse(cls, text: str, line: int = 0, homes: Iterable[str] = ()) -> Destination:
        """Parse ``IP:PORT``, ``CIDR:PORT``, ``[IPv6]:PORT``, ``[IPv6CIDR]:PORT``, ``NAME:PORT``,
        ``*.DOMAIN:PORT`` or ``unix:PATH``."""
        if not isinstance(text, str):
            raise DestinationError(f"a destination must be a string, got {type(text).__name__}")
        if "\0" in text:
            raise DestinationError("destination contains a NUL byte")
        if text.startswith("unix:"):
            path = text[len("unix:") :]
            try:
                if path.startswith("@"):
                    # Abstract sockets have no file-system path; their names are plain text.
                    unix: PathGlob | TextGlob = TextGlob.parse(path, line)
                else:
                    unix = PathGlob.parse(path, line, homes)
            except GlobError as error:
                raise DestinationError(f"bad unix socket path '{path}': {error}") from None
            return cls(text, line, unix=unix)
        named = _parse_host(text)
        if named is not None:
            host, low, high = named
            return cls(text, line, port_low=low, port_high=high, host=host)
        network, low, high = _parse_inet(text)
        return cls(text, line, network=network, port_low=low, port_high=high)

    @property
    def is_unix(self) -> bool:
        return self.unix is not None

    def matches_inet(self, ip: IPAddress | str, port: int) -> bool:
        if self.network is None:
            return False
        if isinstance(ip, str):
            ip = ipaddress.ip_address(ip)
        ip = unmap_ipv4(ip)
        return (
            ip.version == self.network.version
            and ip in self.network
            and self.port_low <= port <= self.port_high
        )

    def matches_name(self, name: str, port: int) -> bool:
        return self.host is not None and self.host.matches(name) and self.port_low <= port <= self.port_high

    def matches_unix(self, path: str) -> bool:
        """Match a unix socket path; abstract sockets must be passed as ``@name``."""
        return self.unix is not None and self.unix.matches(path)


# --- profile -------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchSelectors:
    """Which processes a profile applies to: every non-empty key must match (AND),
    and within a key any entry may match (OR)."""

    exe: tuple[PathGlob, ...] = ()
    cmdline: tuple[TextGlob, ...] = ()
    user: tuple[str | int, ...] = ()
    cgroup: tuple[PathGlob, ...] = ()

    @property
    def is_empty(self) -> bool:
        """An empty selector never matches; the profile is only used via ``exec --profile``."""
        return not (self.exe or self.cmdline or self.user or self.cgroup)


@dataclass(frozen=True)
class Broker:
    """A program that may read some secrets for the agent (a vault CLI, a credential helper): a
    process running it (after its exec, and its children until they exec something else) may
    open them; any other process of the agent may not."""
    program: str                     # absolute path, as the agent executes it
    secrets: tuple[PathGlob, ...]
    line: int = 0


@dataclass(frozen=True)
class Profile:
    """One agent's allow-list. Anything a list does not allow is a violation."""

    name: str
    description: str | None
    source: str
    line: int
    match: MatchSelectors = field(default_factory=MatchSelectors)
    files_read: tuple[PathGlob, ...] = ()
    files_write: tuple[PathGlob, ...] = ()
    secrets: tuple[PathGlob, ...] = ()
    network_connect: tuple[Destination, ...] = ()
    network_listen: tuple[Destination, ...] = ()  # local addresses the agent may bind and listen on
    exec: tuple[PathGlob, ...] = ()
    exec_deny: tuple[PathGlob, ...] = ()  # never, whatever `exec` allows
    interfaces: tuple[str, ...] = ()     # INTERFACE_NAMES the agent may use
    on_violation: str = DEFAULT_ON_VIOLATION
    on_event_loss: str = DEFAULT_ON_VIOLATION  # when the kernel could not send some of the agent's events
    actions: tuple[tuple[str, str], ...] = ()  # (rule name, action) overriding on_violation
    brokers: tuple[Broker, ...] = ()     # their secrets are in `secrets` too
    # The lists above as one regular expression each (GlobList), for the judge: several per open.
    _secrets: GlobList = field(init=False, repr=False, compare=False)
    _readable: GlobList = field(init=False, repr=False, compare=False)  # files.read, then files.write
    _writable: GlobList = field(init=False, repr=False, compare=False)
    _exec: GlobList = field(init=False, repr=False, compare=False)
    _exec_deny: GlobList = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, globs in (("_secrets", self.secrets), ("_readable", self.files_read + self.files_write),
                            ("_writable", self.files_write), ("_exec", self.exec), ("_exec_deny", self.exec_deny)):
            object.__setattr__(self, name, GlobList(globs))  # frozen: set once, here

    def action_for(self, rule: str) -> str:
        """What a violation of `rule` (one of RULE_NAMES) triggers."""
        return dict(self.actions).get(rule, self.on_violation)

    def is_secret(self, path: str) -> PathGlob | None:
        """The secret glob that ``path`` falls under, if any."""
        return self._secrets.first(path)

    def brokered_by(self, program: str, path: str) -> Broker | None:
        """The broker, if `program` is one that may open the secret at `path`."""
        return next((b for b in self.brokers if b.program == program and any(g.matches(path) for g in b.secrets)),
                    None)

    # Secrets win over every allow-list: `files.read: ["/**"]` still may not read ~/.ssh.

    def may_read(self, path: str) -> bool:
        return not self.is_secret(path) and self.lists_allow_read(path)

    def may_write(self, path: str) -> bool:
        return not self.is_secret(path) and self.lists_allow_write(path)

    # The allow-lists alone, for a caller that has just found the path is no secret.

    def lists_allow_read(self, path: str) -> bool:
        return self._readable.first(path) is not None

    def lists_allow_write(self, path: str) -> bool:
        return self._writable.first(path) is not None

    @property
    def allows_every_program(self) -> bool:
        """`exec` has "/**" and `exec_deny` is empty: whatever runs is allowed, its name unseen."""
        return not self.exec_deny and any(glob.text == "/**" for glob in self.exec)

    def is_exec_denied(self, path: str) -> PathGlob | None:
        return self._exec_deny.first(path)

    def may_exec(self, path: str) -> bool:
        return (not self.is_secret(path) and not self.is_exec_denied(path)
                and self._exec.first(path) is not None)

    def allowed_destination_inet(self, ip: IPAddress | str, port: int) -> Destination | None:
        return next((d for d in self.network_connect if d.matches_inet(ip, port)), None)

    def allowed_listen_inet(self, ip: IPAddress | str, port: int) -> Destination | None:
        return next((d for d in self.network_listen if d.matches_inet(ip, port)), None)

    def allowed_destination_name(self, names: Iterable[str], port: int) -> Destination | None:
        """The host rule allowing a connect to `port` of an address resolved from one of `names`."""
        return next((d for d in self.network_connect for n in names if d.matches_name(n, port)), None)

    @property
    def allows_names(self) -> bool:
        return any(d.host is not None for d in self.network_connect)

    def allowed_destination_unix(self, path: str) -> Destination | None:
        return next((d for d in self.network_connect if d.matches_unix(path)), None)
