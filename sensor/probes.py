"""What this kernel can do, found at start-up and reported by `agent-sensor status`.

Every probe answers with a Capability; none raises. The daemon decides what to do without a
capability (refuse to start for the essentials, degrade with a message for the rest)."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
SECURITYFS = Path("/sys/kernel/security")
CGROUP_V2_CANDIDATES = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))


@dataclass(frozen=True)
class Capability:
    name: str
    available: bool
    detail: str


def _mount(fstype: str, target: Path) -> None:
    subprocess.run(["mount", "-t", fstype, fstype, str(target)], capture_output=True, check=False)


def ensure_tracefs() -> Capability:
    """bcc reads tracepoint formats from tracefs and picks its path when imported, so this must
    run before `import bcc`."""
    if not (TRACEFS / "events").is_dir() and os.geteuid() == 0:
        _mount("tracefs", TRACEFS)
    ok = (TRACEFS / "events").is_dir()
    return Capability("tracefs", ok, str(TRACEFS) if ok else f"not mounted at {TRACEFS}: mount -t tracefs tracefs {TRACEFS}")


def tracepoint_exists(category: str, event: str) -> bool:
    return (TRACEFS / "events" / category / event).is_dir()


def tracepoint_has_field(category: str, event: str, field: str) -> bool:
    try:
        text = (TRACEFS / "events" / category / event / "format").read_text()
    except OSError:
        return False
    return any(line.strip().startswith("field:") and f" {field};" in line for line in text.splitlines())


def probe_root() -> Capability:
    ok = os.geteuid() == 0
    return Capability("root", ok, "running as root" if ok else "BPF programs need root (or CAP_BPF + CAP_PERFMON)")


def probe_bcc() -> Capability:
    """Found, not imported: importing bcc maps its compiler into the daemon, which compiles
    in a child process (sensor/bpf_object.py)."""
    spec = importlib.util.find_spec("bcc")
    if spec is None or spec.origin is None:
        return Capability("bcc", False, "no module named 'bcc': install Debian/Ubuntu python3-bpfcc and use a venv "
                          "made with --system-site-packages (make setup does both)")
    where = Path(spec.origin).parent
    try:
        found = re.search(r"""__version__\s*=\s*['"]([^'"]+)""", (where / "version.py").read_text())
    except OSError:
        found = None
    return Capability("bcc", True, f"bcc {found.group(1) if found else '(version unknown)'} at {where}")


def probe_kernel_headers() -> Capability:
    build = Path("/lib/modules") / platform.release() / "build"
    if not build.exists():
        return Capability("kernel_headers", False,
                          f"{build} missing: run `make kernel-headers` (bpf/setup-kernel-headers.sh)")
    target = os.path.realpath(build)
    return Capability("kernel_headers", True, target)


def probe_lockdown() -> Capability:
    """Under lockdown=confidentiality reads of kernel memory return zeros: the sensor uses only
    tracepoint arguments, helpers and user-memory reads, so this is reported, not required."""
    path = SECURITYFS / "lockdown"
    if not path.exists() and os.geteuid() == 0:
        _mount("securityfs", SECURITYFS)
    try:
        text = path.read_text().strip()
    except OSError:
        return Capability("kernel_memory_reads", True, "lockdown not present: kernel memory reads allowed")
    mode = text[text.index("[") + 1 : text.index("]")] if "[" in text else text
    readable = mode != "confidentiality"
    return Capability("kernel_memory_reads", readable,
                      f"lockdown={mode}" + ("" if readable else ": kernel memory reads yield zeros; not used"))


def bpftool_features() -> dict | None:
    tool = shutil.which("bpftool")
    if not tool:
        return None
    proc = subprocess.run([tool, "feature", "probe", "kernel", "-j"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return None


def probe_bpf_features(features: dict | None) -> list[Capability]:
    if features is None:
        why = "unknown: bpftool is not installed (apt-get install bpftool) or failed"
        names = ("ring_buffer", "bpf_send_signal", "cgroup_skb", "fentry_tracing", "bpf_lsm")
        return [Capability(n, False, why) for n in names]
    progs = features.get("program_types", {})
    maps = features.get("map_types", {})
    tp_helpers = features.get("helpers", {}).get("tracepoint_available_helpers", [])

    def cap(name: str, ok: bool, yes: str, no: str) -> Capability:
        return Capability(name, bool(ok), yes if ok else no)

    return [
        cap("ring_buffer", maps.get("have_ringbuf_map_type"), "BPF_MAP_TYPE_RINGBUF",
            "no ring buffer map (kernel < 5.8): the sensor cannot run"),
        cap("bpf_send_signal", "bpf_send_signal" in tp_helpers, "bpf_send_signal from tracepoints",
            "no bpf_send_signal: kills happen from user space only"),
        cap("cgroup_skb", progs.get("have_cgroup_skb_prog_type"), "cgroup_skb programs load",
            "no cgroup_skb programs: network isolation unavailable"),
        cap("fentry_tracing", progs.get("have_tracing_prog_type"), "fentry/fexit programs load",
            "tracing (fentry/fexit) programs do not load: not used"),
        cap("bpf_lsm", progs.get("have_lsm_prog_type"), "BPF-LSM programs load",
            "BPF-LSM programs do not load: enforcement uses tracepoints + bpf_send_signal"),
    ]


def cgroup_v2_root() -> Path | None:
    for path in CGROUP_V2_CANDIDATES:
        if (path / "cgroup.controllers").exists():
            return path
    return None


def probe_cgroup_v2() -> list[Capability]:
    """cgroup v2, and whether a child cgroup offers freeze and kill (quarantine needs them),
    checked on a real, empty child cgroup that is removed again."""
    root = cgroup_v2_root()
    if root is None:
        why = "no cgroup v2 hierarchy mounted: quarantine falls back to SIGSTOP, without network isolation"
        return [Capability(n, False, why) for n in ("cgroup_v2", "cgroup_freeze", "cgroup_kill")]
    probe = root / f"agent-sensor-probe-{os.getpid()}"
    try:
        probe.mkdir(exist_ok=True)
        freeze, kill = (probe / "cgroup.freeze").exists(), (probe / "cgroup.kill").exists()
    except OSError as exc:
        why = f"cannot create a cgroup under {root}: {exc.strerror}"
        return [Capability("cgroup_v2", True, str(root)), Capability("cgroup_freeze", False, why),
                Capability("cgroup_kill", False, why)]
    finally:
        try:
            probe.rmdir()
        except OSError:
            pass
    return [
        Capability("cgroup_v2", True, str(root)),
        Capability("cgroup_freeze", freeze, "cgroup.freeze in child cgroups" if freeze else
                   "no cgroup.freeze (kernel < 5.2): quarantine falls back to SIGSTOP"),
        Capability("cgroup_kill", kill, "cgroup.kill in child cgroups" if kill else
                   "no cgroup.kill (kernel < 5.14): quarantined trees are killed process by process"),
    ]


def probe_all() -> list[Capability]:
    """Everything except the tracepoints, which the loader reports as it attaches them."""
    return [
        probe_root(),
        ensure_tracefs(),
        probe_bcc(),
        probe_kernel_headers(),
        probe_lockdown(),
        *probe_bpf_features(bpftool_features()),
        *probe_cgroup_v2(),
    ]
