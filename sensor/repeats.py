"""Repeated opens, counted by the kernel instead of sent (bpf/files.c, counted_as_repeat).

A process that opens the same file again and again (a config re-read, a missing file probed in
a loop, a lock file) would push every one of those opens through the ring buffer and Python. On
the second sighting of an open judged allowed within WINDOW_NS, user space hands it to the
kernel: for WINDOW_NS the kernel counts that process's identical opens instead of sending them.
`collect` reads the counts (each second, from the daemon loop) so every repeat is still
reported, as one event record with its count; once an entry expires the next open is sent and
judged again.

What keeps a counted open from hiding something a sent one would have shown:
- only absolute names shorter than abi.REPEAT_PATH_MAX, read whole at syscall entry;
- only opens no rule fired on and the kernel did not act on, and a reload forgets every entry;
- only names that resolved without a symlink, to a file that is not a directory or to nothing:
  so the counted open's fd, which user space never learns, is never a directory later names
  are resolved against;
- any name change by a tracked process (rename, unlink, link, symlink, chmod, ...) makes every
  entry miss at once, in the kernel (names_gen); a change by a process that is not an agent is
  seen when the entry expires, at most WINDOW_NS later.

`cache_key` decides what may be counted and is pure; RepeatCache keeps the entries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple

from . import abi
from .correlate import Target
from .decode import OpenEvent

WINDOW_NS = 1_000_000_000
# A count read this long after its entry expired is final: the kernel checks the expiry
# immediately before it counts, never this long before.
GRACE_NS = 50_000_000
# First sightings remembered, then all forgotten at once: an OrderedDict that forgot the oldest
# one at a time cost the judge 4%, and a plain dict emptied from its front is slower still.
SEEN_MAX = 4096
MAX_ENTRIES = 8192  # SENSOR_MAX_REPEATS in bpf/maps.h


class RepeatKey(NamedTuple):
    tgid: int
    slot: int
    flags: int
    names_gen: int
    path: str


_KEY_BYTES = abi.REPEAT_PATH_MAX - 1  # the kernel's key holds the name's bytes and a NUL
_NOT_ACTED = abi.KernelAction.NONE


def cache_key(event: OpenEvent, target: Target | None) -> RepeatKey | None:
    """The kernel's key for an open judged allowed, or None if its repeats must still be sent.
    Runs for every such open: the cheapest tests first."""
    path = event.path
    if (target is None or target.canonical != path or not target.resolved or target.is_dir
            or event.truncated or event.read_at_exit):
        return None
    hdr = event.hdr
    if hdr.slot is None or hdr.kernel_action != _NOT_ACTED or path[:1] != "/":
        return None
    # A character is at most 4 bytes: most names need no encoding to know they fit.
    if 4 * len(path) >= _KEY_BYTES and len(path.encode(errors="surrogateescape")) >= _KEY_BYTES:
        return None
    return sighting(event)


def sighting(event: OpenEvent) -> RepeatKey:
    """The open as the kernel's key names it, whether or not it may be counted."""
    hdr = event.hdr
    # Without the named tuple's Python-level __new__: half the cost of building the key.
    return tuple.__new__(RepeatKey, (hdr.pid, hdr.slot, event.flags, event.names_gen, event.path))


@dataclass
class Entry:
    agent: object  # processes.AgentInstance, for the report
    expires_ns: int
    reported: int = 0


class Counted(NamedTuple):
    key: RepeatKey
    agent: object
    count: int    # repeats since the last report
    last_ns: int  # ktime of the last of them


class RepeatCache:
    """The entries the kernel counts for, and the first sightings that may become entries."""

    def __init__(self, bpf, window_ns: int = WINDOW_NS):
        self._bpf = bpf
        self.window_ns = window_ns
        self._seen: dict[RepeatKey, int] = {}  # key -> ktime of its first sighting
        self._entries: dict[RepeatKey, Entry] = {}
        self.counted = 0  # repeats reported so far
        self.full = 0     # entries the kernel map had no room for (those repeats were sent)

    def __len__(self) -> int:
        return len(self._entries)

    def allowed(self, event: OpenEvent, target: Target | None, agent) -> None:
        """An open was judged allowed with nothing to report. A first sighting is only
        remembered; at the second within the window, cache_key says whether the kernel may count
        the rest (asked then, not for every open: most are never seen again)."""
        key = sighting(event)
        now = event.hdr.ktime_ns
        first = self._seen.pop(key, None)
        if first is None or now - first > self.window_ns:
            if len(self._seen) >= SEEN_MAX:
                self._seen.clear()
            self._seen[key] = now
            return
        if key in self._entries or cache_key(event, target) is None:
            return
        if len(self._entries) >= MAX_ENTRIES or not self._bpf.count_repeats(key, now + self.window_ns):
            self.full += 1
            return
        self._entries[key] = Entry(agent, now + self.window_ns)

    def collect(self, now_ns: int) -> Iterator[Counted]:
        """Repeats counted since the last call; entries expired by now are removed (their last
        count read first)."""
        for key, entry in list(self._entries.items()):
            count, last_ns = self._bpf.repeat_count(key)
            if count > entry.reported:
                self.counted += count - entry.reported
                yield Counted(key, entry.agent, count - entry.reported, last_ns)
                entry.reported = count
            if now_ns > entry.expires_ns + GRACE_NS:
                self._bpf.forget_repeat(key)
                del self._entries[key]

    def forget(self, pid: int | None = None) -> Iterator[Counted]:
        """Remove the entries of process pid (it exited: its pid may be reused), or all of them
        (profiles reloaded), reporting what they counted."""
        for key in [k for k in self._entries if pid is None or k.tgid == pid]:
            entry = self._entries.pop(key)
            count, last_ns = self._bpf.repeat_count(key)
            self._bpf.forget_repeat(key)
            if count > entry.reported:
                self.counted += count - entry.reported
                yield Counted(key, entry.agent, count - entry.reported, last_ns)
        if pid is None:
            self._seen.clear()
