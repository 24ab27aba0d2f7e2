"""Acting on a verdict: kill an agent's whole process tree.

Membership comes from the kernel's tracked map, which fork keeps complete before a child runs,
so double-forked, setsid'd or renamed children are found as surely as direct ones. The run is
first marked doomed in the kernel, so a member that makes a traced syscall during the kill dies
in the kernel; rounds of pidfd kills get the ones that make none. Each target
is signalled through a pidfd that is checked after opening: a pidfd pins one process, so a pid
reused between reading the map and signalling is never hit."""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from dataclasses import dataclass

from . import abi
from .processes import start_ticks

log = logging.getLogger("agent-sensor")
KILL_ROUNDS = 2000     # repeat while members remain: children forked during the kill ...
ROUND_PAUSE_S = 0.0005  # ... checking often, so the action completes as soon as the tree is gone


@dataclass(frozen=True)
class KillResult:
    signalled: tuple[int, ...]
    survivors: tuple[int, ...]
    rounds: int

    @property
    def complete(self) -> bool:
        return not self.survivors

    def describe(self) -> str:
        pids = ", ".join(map(str, self.signalled))
        if not self.signalled and self.complete:
            return "no process of the agent was left to kill"
        if self.complete:
            return f"killed {len(self.signalled)} process(es): {pids}"
        return f"signalled {pids}; still alive after {self.rounds} rounds: {', '.join(map(str, self.survivors))}"


def _members(sensor_bpf, root_pid: int) -> set[int]:
    return {pid for pid, t in sensor_bpf.tracked().items() if t.root_pid == root_pid}


def _signal_member(sensor_bpf, pid: int, root_pid: int, expected_ticks: int | None) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return False
        raise
    try:
        # With the pidfd held, the pid cannot be reused: check that it still names a member.
        entry = sensor_bpf.tracked().get(pid)
        if entry is None or entry.root_pid != root_pid:
            log.debug("kill: %d left the agent before the signal", pid)
            return False
        ticks = start_ticks(pid)
        if expected_ticks is not None and ticks not in (expected_ticks, None):
            log.debug("kill: %d is a new process (start %s, expected %s)", pid, ticks, expected_ticks)
            return False
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def kill_tree(sensor_bpf, root_pid: int, known_ticks: dict[int, int | None] | None = None) -> KillResult:
    """SIGKILL every tracked process of the agent rooted at root_pid, until none is left."""
    known_ticks = known_ticks or {}
    sensor_bpf.doom(root_pid, abi.KernelAction.KILL)
    signalled: list[int] = []
    seen = set(known_ticks)  # every member user space knew of or found while the kill ran
    rounds = 0
    members = _members(sensor_bpf, root_pid)
    while members and rounds < KILL_ROUNDS:
        rounds += 1
        seen |= members
        for pid in sorted(members):
            if _signal_member(sensor_bpf, pid, root_pid, known_ticks.get(pid)) and pid not in signalled:
                signalled.append(pid)
        time.sleep(ROUND_PAUSE_S)
        # A killed process leaves the map when the kernel runs its exit; anything left, or forked
        # in the meantime, gets another round.
        members = _members(sensor_bpf, root_pid)
    # Members gone before this kill's signal reached them: the kernel killed them as members of
    # the doomed run, at their next traced syscall (with read/write traced, often first).
    signalled += sorted(seen - set(signalled) - members)
    return KillResult(tuple(signalled), tuple(sorted(members)), rounds)
