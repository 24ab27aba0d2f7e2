"""The daemon's threads under their own names in the kernel (`top -H`, `ps -L`,
/proc/PID/task/TID/comm), so which thread spends the CPU is seen: the judge is the main thread
(`agent-sensor`), the others are named after their Python threads."""

from __future__ import annotations

import threading

COMM_MAX = 15  # bytes: the kernel's TASK_COMM_LEN, less the NUL


def name_os_thread() -> None:
    """Give the calling thread's kernel name its Python name (cut to COMM_MAX bytes)."""
    try:
        with open("/proc/thread-self/comm", "wb") as f:
            f.write(threading.current_thread().name.encode()[:COMM_MAX])
    except OSError:
        pass  # only a name, for people reading top: without it the thread shows the process's
