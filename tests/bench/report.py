"""Benchmark tables into docs/BENCHMARKS.md, each between its own markers, so one benchmark
rewrites its section and leaves the others alone."""

from __future__ import annotations

import os
import re
import statistics
from pathlib import Path

from sensor.processes import proc_stat_fields


def write_section(doc: Path, name: str, table: str) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{begin}\n{table}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    doc.write_text(text)


def ratios(top: list[float], bottom: list[float]) -> tuple[float, str]:
    """Per-repetition ratios top/bottom: their median, and "median (min-max)" for a table."""
    r = sorted(t / b for t, b in zip(top, bottom))
    median = statistics.median(r)
    return median, f"{median:.3f} ({r[0]:.3f}-{r[-1]:.3f})"


def cpu_seconds(pid: int, task: int | None = None) -> float:
    """The CPU time process pid (or its thread task) has used, user and system; 0 if gone."""
    fields = proc_stat_fields(pid, task)  # from field 3 on: utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


# The daemon's threads by their kernel names (sensor/thread_names.py); its main thread judges.
THREAD_ROLES = (("reader", re.compile(r"ring-buffer")), ("API", re.compile(r"grpc_\d+")))


def daemon_cpu(pid: int) -> dict[str, float]:
    """The daemon's CPU seconds so far: "all", and by thread: "judge" (the main thread), "reader"
    and "API" (THREAD_ROLES). What the rest used (gRPC's own threads, threads gone) is in "all"."""
    used = {"all": cpu_seconds(pid), "judge": cpu_seconds(pid, pid)} | {role: 0.0 for role, _ in THREAD_ROLES}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{task}/comm").read_text().strip()
        except OSError:  # the thread ended
            continue
        for role, pattern in THREAD_ROLES:
            if pattern.fullmatch(name):
                used[role] += cpu_seconds(pid, int(task))
    return used
