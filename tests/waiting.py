"""Bounded waits shared by the BPF tests: deadlines only bound waiting, they are never asserted."""

from __future__ import annotations

import time

import psutil


def gone(pid: int, deadline_s: float = 10) -> bool:
    """True once pid is dead: exited, or a zombie waiting for its (new) parent to reap it."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False
