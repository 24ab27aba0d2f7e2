"""sensor/repeats.py without a kernel: which opens may be counted instead of sent, and the
bookkeeping that reports every counted repeat. The kernel map is stood in for by a dict with the
loader's three calls; tests/e2e/test_repeats.py runs the real one."""

from __future__ import annotations

import pytest

from sensor import abi
from sensor.correlate import Target
from sensor.decode import Header, OpenEvent
from sensor.repeats import GRACE_NS, SEEN_MAX, WINDOW_NS, RepeatCache, cache_key

PATH = "/srv/app/config.toml"


def open_event(path: str = PATH, t: int = 0, pid: int = 10, **changes) -> OpenEvent:
    hdr = Header(ktime_ns=t, cgroup_id=1, pid=pid, tid=pid, uid=0, gid=0, slot=2, comm="agent")
    event = OpenEvent(hdr=hdr, dirfd=-100, flags=0, mode=0, syscall=abi.OpenSyscall.OPENAT, path=path,
                      truncated=False, names_gen=7)
    return event._replace(**changes)


def target(path: str = PATH, **changes) -> Target:
    return Target(path, path, True, (1, 2))._replace(**changes)


class KernelMap:
    def __init__(self, room: int = 100):
        self.entries: dict = {}
        self.room = room

    def count_repeats(self, key, expires_ns) -> bool:
        if len(self.entries) >= self.room:
            return False
        self.entries[key] = [expires_ns, 0, 0]
        return True

    def repeat_count(self, key):
        _, count, last = self.entries.get(key, (0, 0, 0))
        return count, last

    def forget_repeat(self, key) -> None:
        self.entries.pop(key, None)

    def counts(self, key, n: int, last: int) -> None:
        """The kernel counting n more repeats."""
        self.entries[key][1] += n
        self.entries[key][2] = last


def test_an_allowed_absolute_open_of_a_plain_file_has_a_key():
    key = cache_key(open_event(), target())
    assert (key.tgid, key.slot, key.names_gen, key.path) == (10, 2, 7, PATH)


def test_a_missing_file_has_a_key_too():
    assert cache_key(open_event(), target(file_id=None)) is not None


LONG_IN_BYTES = "/" + "é" * (abi.REPEAT_PATH_MAX // 2)


def test_a_name_of_many_bytes_that_fits_the_key_has_one():
    fits = "/" + "é" * ((abi.REPEAT_PATH_MAX - 3) // 2)  # 2 bytes each, then the NUL
    assert cache_key(open_event(fits), target(fits)) is not None


@pytest.mark.parametrize("event, tgt", [
    (open_event("config.toml"), target()),                                # relative: depends on the cwd
    (open_event(), target(canonical="/etc/secret")),                      # through a symlink
    (open_event("/srv//app/config.toml"), target()),                      # not the canonical spelling
    (open_event(), target(is_dir=True)),                                  # its fd could be a dirfd
    (open_event(), target(resolved=False)),
    (open_event(truncated=True), target()),
    (open_event(read_at_exit=True), target()),                           # the kernel could not read it at entry
    (open_event(hdr=Header(0, 1, 10, 10, 0, 0, 2, "a", abi.KernelAction.KILL)), target()),
    (open_event("/" + "x" * abi.REPEAT_PATH_MAX), target("/" + "x" * abi.REPEAT_PATH_MAX)),  # longer than the key
    (open_event(LONG_IN_BYTES), target(LONG_IN_BYTES)),                  # fewer characters than the key, more bytes
    (open_event(), None),
])
def test_opens_whose_repeats_must_be_sent(event, tgt):
    assert cache_key(event, tgt) is None
    # Seen again within the window, such an open is still not handed to the kernel.
    kernel = KernelMap()
    cache = RepeatCache(kernel)
    for t in (0, 1, 2):
        cache.allowed(event._replace(hdr=event.hdr._replace(ktime_ns=t)), tgt, "agent")
    assert not kernel.entries and len(cache) == 0


def test_the_kernel_counts_from_the_second_sighting_within_the_window():
    kernel = KernelMap()
    cache = RepeatCache(kernel)
    cache.allowed(open_event(t=0), target(), "agent")
    assert not kernel.entries
    cache.allowed(open_event(t=WINDOW_NS + 1), target(), "agent")  # too late: a new first sighting
    assert not kernel.entries
    cache.allowed(open_event(t=WINDOW_NS + 2), target(), "agent")
    assert [e[0] for e in kernel.entries.values()] == [2 * WINDOW_NS + 2]
    assert len(cache) == 1


def test_every_counted_repeat_is_reported_once_and_expired_entries_go():
    kernel = KernelMap()
    cache = RepeatCache(kernel)
    for t in (0, 1):
        cache.allowed(open_event(t=t), target(), "agent")
    (key,) = kernel.entries
    kernel.counts(key, 5, last=100)
    assert [(c.count, c.last_ns, c.agent) for c in cache.collect(now_ns=200)] == [(5, 100, "agent")]
    kernel.counts(key, 3, last=300)
    assert [c.count for c in cache.collect(now_ns=WINDOW_NS + 1 + GRACE_NS)] == [3]
    assert key in kernel.entries  # expired, but maybe still counting: not yet final
    assert list(cache.collect(now_ns=WINDOW_NS + 2 + GRACE_NS)) == []
    assert not kernel.entries and len(cache) == 0
    assert cache.counted == 8


def test_an_exit_reports_and_removes_only_that_processes_entries():
    kernel = KernelMap()
    cache = RepeatCache(kernel)
    for pid in (10, 11):
        for t in (0, 1):
            cache.allowed(open_event(t=t, pid=pid), target(), "agent")
    for key in kernel.entries:
        kernel.counts(key, key.tgid, last=5)
    assert [(c.key.tgid, c.count) for c in cache.forget(10)] == [(10, 10)]
    assert [k.tgid for k in kernel.entries] == [11]
    assert [c.count for c in cache.forget()] == [11]  # a reload: all of them
    assert not kernel.entries


def test_a_full_kernel_map_means_sent_not_lost():
    kernel = KernelMap(room=0)
    cache = RepeatCache(kernel)
    for t in (0, 1):
        cache.allowed(open_event(t=t), target(), "agent")
    assert len(cache) == 0 and cache.full == 1


def test_first_sightings_are_bounded_and_forgotten_all_at_once():
    """SEEN_MAX first sightings are remembered; the next one forgets them all (the kernel is
    then handed an open at its next two sightings, not lost)."""
    kernel = KernelMap()
    cache = RepeatCache(kernel)
    for i in range(SEEN_MAX):
        cache.allowed(open_event(f"/srv/f{i}", t=i), target(f"/srv/f{i}"), agent=None)
    assert len(cache._seen) == SEEN_MAX
    cache.allowed(open_event("/srv/new", t=SEEN_MAX), target("/srv/new"), agent=None)
    assert len(cache._seen) == 1  # only the newest
    cache.allowed(open_event("/srv/f0", t=SEEN_MAX + 1), target("/srv/f0"), agent=None)
    assert len(cache) == 0  # f0's first sighting was forgotten: this is a first sighting again
    cache.allowed(open_event("/srv/new", t=SEEN_MAX + 2), target("/srv/new"), agent=None)
    assert len(cache) == 1 and len(kernel.entries) == 1  # the second sighting within the window
