"""The gRPC surface as a generic client sees it: health, reflection, status, profiles, and
INVALID_ARGUMENT (never a crash) for bad requests; the socket is root-only; a stopped daemon
leaves no BPF program behind."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sensor._proto.agent_sensor.v1 import sensor_pb2 as pb
from sensor._proto.agent_sensor.v1 import sensor_pb2_grpc as pb_grpc

from .conftest import start_daemon, stop_daemon, profile_yaml


@pytest.fixture
def channel(daemon):
    with grpc.insecure_channel(daemon.server) as ch:
        yield ch


def test_health_and_reflection(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "agent_sensor.v1.SensorService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                timeout=5)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"agent_sensor.v1.SensorService", "grpc.health.v1.Health"} <= names


@pytest.mark.parametrize("request_, detail", [
    (pb.StreamAlertsRequest(rule_kinds=[99]), "unknown rule kinds"),
    (pb.StreamAlertsRequest(agents=["nobody"]), "no loaded profile named nobody"),
    (pb.StreamAlertsRequest(backlog=10**6), "backlog is at most"),
])
def test_bad_alert_filters_are_invalid_argument(channel, request_, detail):
    stub = pb_grpc.SensorServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        list(stub.StreamAlerts(request_, timeout=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert detail in err.value.details()


@pytest.mark.parametrize("request_, detail", [
    (pb.TrackProcessRequest(pid=0, profile="e2e-kill"), "positive"),
    (pb.TrackProcessRequest(pid=2**31 - 2, profile="e2e-kill"), "no process"),
    (pb.TrackProcessRequest(pid=os.getpid(), profile="nope"), "no profile named"),
])
def test_bad_track_requests_are_invalid_argument(channel, request_, detail):
    stub = pb_grpc.SensorServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.TrackProcess(request_, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert detail in err.value.details()


def test_status_reports_capabilities_profiles_and_counters(daemon):
    st = json.loads(daemon.cli("status", "--json").stdout)
    caps = {c["name"]: c for c in st["capabilities"]}
    for name in ("root", "bcc", "ring_buffer", "bpf_send_signal", "bpf_lsm", "cgroup_v2",
                 "kernel_memory_reads", "tracepoint syscalls:sys_enter_openat"):
        assert name in caps, name
    assert caps["tracepoint syscalls:sys_enter_openat"]["available"] is True
    assert {p["name"] for p in st["profiles"]} == {"e2e-kill", "e2e-alert", "e2e-match", "e2e-quarantine"}
    assert st["version"] and st["listen"] == [daemon.server]
    assert "open" in st["events"] and "open" in st["ring_buffer_drops"]
    text = daemon.cli("status").stdout
    assert "capabilities:" in text and "ring-buffer drops:" in text


def test_the_daemon_loads_compiled_programs_without_bccs_compiler_in_its_memory(daemon):
    """Programs come from the compiled-programs cache (or a compiling child process): neither
    libbcc nor LLVM or clang is mapped into the daemon (sensor/bpf_object.py)."""
    caps = {c["name"]: c for c in json.loads(daemon.cli("status", "--json").stdout)["capabilities"]}
    assert caps["bpf_programs"]["available"] is True
    assert caps["bpf_programs"]["detail"].startswith(("loaded the compiled programs from", "compiled in"))
    mapped = {line.split()[-1] for line in Path(f"/proc/{daemon.proc.pid}/maps").read_text().splitlines()
              if line.count(" ") >= 5 and "/" in line}
    compiler = [path for path in mapped if re.search(r"lib(bcc|LLVM|clang)", path)]
    assert compiler == [] and any("python" in path for path in mapped)


def test_socket_is_root_only(daemon):
    path = Path(daemon.server.removeprefix("unix://"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def _programs_held_by(pid: int) -> set[int]:
    """BPF program ids a process holds open (fdinfo), so other BPF users on the host do not count."""
    ids = set()
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = fdinfo.read_text()
        except OSError:
            continue
        ids.update(int(line.split()[1]) for line in text.splitlines() if line.startswith("prog_id:"))
    return ids


def _loaded_programs() -> set[int]:
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True).stdout
    return {p["id"] for p in json.loads(out)}


def test_stop_detaches_every_program_and_removes_the_socket(tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "p.yaml").write_text(profile_yaml("e2e-teardown", tmp_path, 1, "alert"))
    proc, server, log = start_daemon(tmp_path, profiles)
    try:
        held = _programs_held_by(proc.pid)
        assert len(held) >= 10, "the daemon holds its tracepoint programs"
    finally:
        assert stop_daemon(proc, log) == 0
    assert not held & _loaded_programs(), "programs still loaded after the daemon stopped"
    assert not Path(server.removeprefix("unix://")).exists()


def test_invalid_profiles_stop_the_start_with_file_and_line(tmp_path):
    from .conftest import CLI
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "bad.yaml").write_text("name: bad\non_violation: explode\n")
    r = subprocess.run([CLI, "run", "--profiles", str(profiles), "--listen", f"unix://{tmp_path}/s.sock"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"{profiles / 'bad.yaml'}:2:" in r.stderr


def test_the_daemons_threads_are_named_in_the_kernel(daemon, channel):
    """`top -H` shows which thread spends the CPU: the judge is the main thread."""
    pb_grpc.SensorServiceStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)  # a gRPC thread has served
    pid = daemon.proc.pid
    names = {Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip() for tid in os.listdir(f"/proc/{pid}/task")}
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "agent-sensor"
    assert "ring-buffer" in names
    assert any(re.fullmatch(r"grpc_\d+", n) for n in names), names
