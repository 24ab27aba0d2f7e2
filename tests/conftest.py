"""Markers and the SENSOR_REQUIRE_BPF rule.

Tests that need root and BPF carry `@pytest.mark.bpf` (or live under tests/kernel or tests/e2e,
which are marked automatically). When they cannot run they skip, unless SENSOR_REQUIRE_BPF=1
(set by .ci/run): then the skip becomes a failure, so CI cannot pass without having run them.
A test of a kernel feature this machine lacks calls `skip_missing_feature("BPF-LSM")` instead:
that skip names the feature and is allowed even under SENSOR_REQUIRE_BPF."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# This process forks children that run a few lines of Python or exec (the kernel tests' spawn,
# the end-to-end agents), after gRPC threads exist (every daemon readiness check is a gRPC call).
# gRPC's fork handlers are for children that go on using gRPC, and are a known source of hangs
# in fork-then-exec (grpc/grpc#13998, #22624); set before gRPC loads, they are not installed.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

REQUIRE_BPF = os.environ.get("SENSOR_REQUIRE_BPF") == "1"
FEATURE_SKIP_PREFIX = "kernel lacks feature: "
ROOT = Path(__file__).resolve().parent.parent


def skip_missing_feature(feature: str, detail: str = "") -> None:
    pytest.skip(f"{FEATURE_SKIP_PREFIX}{feature}" + (f" ({detail})" if detail else ""))


def bpf_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc (python3-bpfcc) is not importable"
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "kernel" in parts or "e2e" in parts:
            item.add_marker(pytest.mark.bpf)


def pytest_runtest_setup(item):
    if item.get_closest_marker("bpf"):
        reason = bpf_unavailable_reason()
        if reason:
            pytest.skip(f"BPF test: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (REQUIRE_BPF and report.skipped and item.get_closest_marker("bpf")):
        return
    if hasattr(report, "wasxfail"):
        return  # pytest reports an expected failure as skipped: it ran, it is not a skip
    reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if FEATURE_SKIP_PREFIX in reason:
        return
    report.outcome = "failed"
    report.longrepr = f"SENSOR_REQUIRE_BPF=1 but this BPF test was skipped: {reason}"


def pytest_sessionfinish(session, exitstatus):
    """cgroup-attached programs outlive the process that attached them: a test that loads the
    sensor and does not close it leaves hooks on every connect of the host. Fail the run if any
    hook of ours is attached with no process holding it."""
    if os.geteuid() != 0 or bpf_unavailable_reason():
        return
    from sensor.bpf_loader import EGRESS_HOOKS
    from sensor.cgroup_bpf import cgroup_programs, held_prog_ids
    from sensor.probes import cgroup_v2_root
    root = cgroup_v2_root()
    names = {fn for fn, _, _ in EGRESS_HOOKS}
    held = held_prog_ids()
    leaked = [p for p in (cgroup_programs(root) or []) if root and p.get("name") in names and p.get("id") not in held]
    if leaked:
        session.exitstatus = 1
        print(f"\nFAILED: cgroup hooks left attached to {root} by a test: "
              + ", ".join(f"{p['name']} (id {p['id']})" for p in leaked))
