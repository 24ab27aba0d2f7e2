"""BPF programs attached to cgroups outlive the process that attached them (and its crash):
finding them, telling which ones a live process still holds, and detaching leftovers. Used by
quarantine (isolate.c) and egress control (egress.c)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import bpf_syscall


@dataclass(frozen=True)
class Program:
    """A loaded program: its name and this process's fd of it."""
    name: str
    fd: int


def fd_links(pid: int) -> list[tuple[int, str]]:
    base = f"/proc/{pid}/fd"
    out = []
    try:
        names = os.listdir(base)
    except OSError:
        return out
    for name in names:
        try:
            out.append((int(name), os.readlink(f"{base}/{name}")))
        except (OSError, ValueError):
            continue
    return sorted(out)


def cgroup_programs(cg: Path) -> list[dict] | None:
    """Programs attached to cg (bpftool); None if bpftool is unavailable."""
    tool = shutil.which("bpftool")
    if not tool:
        return None
    proc = subprocess.run([tool, "cgroup", "show", str(cg), "-j"], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout or "[]")
    except ValueError:
        return None


def held_prog_ids() -> set[int]:
    """Ids of the BPF programs some process holds an fd of."""
    held: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        for fd, target in fd_links(int(name)):
            if target != "anon_inode:bpf-prog":
                continue
            pid_ = prog_id_of(f"/proc/{name}/fdinfo/{fd}")
            if pid_ is not None:
                held.add(pid_)
    return held


def prog_id_of(fdinfo: str) -> int | None:
    try:
        with open(fdinfo) as f:
            for line in f:
                if line.startswith("prog_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def detach_by_id(cg: Path, prog_id: int, attach_type: int) -> str | None:
    """Detach program prog_id from cg; an error text or None."""
    try:
        prog_fd = bpf_syscall.prog_fd_by_id(prog_id)
    except OSError as exc:
        return f"program {prog_id}: {exc.strerror}"
    try:
        cg_fd = os.open(cg, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        os.close(prog_fd)
        return str(exc)
    try:
        bpf_syscall.prog_detach(cg_fd, prog_fd, attach_type)
        return None
    except OSError as exc:
        return f"detach {prog_id} from {cg}: {exc.strerror}"
    finally:
        os.close(cg_fd)
        os.close(prog_fd)


def detach_stale(cg: Path, names: tuple[str, ...], attach_types: dict[str, int], keep: set[int]) -> list[str]:
    """Detach programs named `names` from cg that no process holds and `keep` does not list (left
    by a crash); one note per program."""
    held = held_prog_ids() | keep
    notes = []
    for entry in cgroup_programs(cg) or []:
        if entry.get("name") not in names:
            continue
        prog_id = entry.get("id")
        atype = attach_types.get(entry.get("attach_type", ""))
        if prog_id in held or atype is None:
            continue
        err = detach_by_id(cg, prog_id, atype)
        notes.append(err or f"detached stale {entry['name']} (id {prog_id}) from {cg}")
    return notes


def detach_each(fd: int, attachments, where: str) -> list[str]:
    """Detach every (Program, attach type) from the cgroup open as fd; one error text per
    failure, and the rest still detach."""
    errors = []
    for fn, atype in attachments:
        try:
            bpf_syscall.prog_detach(fd, fn.fd, atype)
        except OSError as exc:
            errors.append(f"detaching {fn.name} from {where}: {exc.strerror}")
    return errors
