"""vagrant/: what can be checked without booting a VM. The Vagrantfile validates, the shell scripts
are shellcheck-clean, and the provisioning path itself (`make install-service`, which
vagrant/provision.sh runs in each VM) installs into a prefix on this host: a unit whose ExecStart
is this checkout's agent-sensor, and every profile the VMs' daemon is started with.

`make test` installs vagrant and shellcheck (`check-tools`); elsewhere a missing tool skips,
except under SENSOR_REQUIRE_BPF=1 (CI), where it fails."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VAGRANT_DIR = ROOT / "vagrant"
AGENT_SENSOR = ROOT / ".venv" / "bin" / "agent-sensor"
MACHINES = ("ubuntu2404", "debian12")
# Needed for BPF, cgroups, /proc of other users, secrets in private homes (README, vagrant/agent-sensor.service).
CAPABILITIES = {"CAP_SYS_ADMIN", "CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_KILL", "CAP_SYS_PTRACE",
                "CAP_DAC_READ_SEARCH"}


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (`make check-tools` installs it; `make test` does so itself)"
    if os.environ.get("SENSOR_REQUIRE_BPF") == "1":
        pytest.fail(message + "; SENSOR_REQUIRE_BPF=1 forbids skipping this check")
    pytest.skip(message)


def vagrant_env(tmp_path: Path) -> dict[str, str]:
    # Vagrant's state goes to tmp_path, not into the checkout or $HOME; no call-home.
    return {**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1", "VAGRANT_HOME": str(tmp_path / "vagrant.d"),
            "VAGRANT_DOTFILE_PATH": str(tmp_path / "dotfile")}


def make_env() -> dict[str, str]:
    # Run as a fresh make, not as a sub-make of `make test` (its flags and variables stay out).
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)


def test_vagrantfile_validates_with_both_machines(tmp_path):
    vagrant = require_tool("vagrant")
    # --ignore-provider: no VirtualBox or libvirt here, and the provider blocks are not ours to check.
    result = run([vagrant, "validate", "--ignore-provider"], cwd=VAGRANT_DIR, env=vagrant_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    for machine in MACHINES:
        assert f"{machine}:" in result.stdout, result.stdout


def test_vagrant_validate_catches_a_broken_vagrantfile(tmp_path):
    """The check above is not vacuous: a machine without a box, or a missing provisioning script, fails."""
    vagrant = require_tool("vagrant")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Vagrantfile").write_text((VAGRANT_DIR / "Vagrantfile").read_text().replace(
        "machine.vm.box = box", "machine.vm.boxx = box"))
    result = run([vagrant, "validate", "--ignore-provider"], cwd=broken, env=vagrant_env(tmp_path))
    assert result.returncode != 0
    assert "provision.sh" in result.stderr and "box" in result.stderr, result.stderr


@pytest.mark.parametrize("script,severity", [
    *[(f"vagrant/{p.name}", "style") for p in sorted(VAGRANT_DIR.glob("*.sh"))],
    # Not vagrant/'s: checked for warnings and errors, as `make vagrant-check` does.
    (".ci/run", "warning"),
    ("bpf/setup-kernel-headers.sh", "warning"),
])
def test_shell_scripts_are_shellcheck_clean(script, severity):
    shellcheck = require_tool("shellcheck")
    result = run([shellcheck, f"--severity={severity}", script], cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def install_service(prefix: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = ["make", "--no-print-directory", "install-service", f"SERVICE_ROOT={prefix}", *args]
    if os.geteuid() != 0:
        # Unit tests need no root: take the venv and generated code as they are, skip the apt steps.
        cmd[1:1] = ["-o", "system-deps", "-o", "kernel-headers"]
    return run(cmd, cwd=ROOT, env=make_env())


def unit_directives(text: str) -> dict[str, str]:
    directives = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            directives[key.strip()] = value.strip()
    return directives


def test_install_service_into_a_prefix(tmp_path):
    prefix = tmp_path / "root"
    result = install_service(prefix, "START_SERVICE=no")
    assert result.returncode == 0, result.stdout + result.stderr

    unit = prefix / "etc/systemd/system/agent-sensor.service"
    assert unit.is_file(), result.stdout
    text = unit.read_text()
    assert "@AGENT_SENSOR@" not in text and "@PROFILES@" not in text, "a template placeholder was left"
    directives = unit_directives(text)
    argv = shlex.split(directives["ExecStart"])
    exe = Path(argv[0])
    assert exe.is_absolute() and exe == AGENT_SENSOR, argv
    assert exe.is_file() and os.access(exe, os.X_OK), f"{exe} is not an executable"
    # The unit names the profile directory as the running system sees it, not the prefix.
    assert argv[1:] == ["run", "--profiles", "/etc/agent-sensor/profiles",
                        "--listen", "unix:///run/agent-sensor/sensor.sock"], argv
    assert directives["Restart"] == "on-failure"
    assert directives["RuntimeDirectory"] == "agent-sensor"
    assert set(directives["CapabilityBoundingSet"].split()) == CAPABILITIES

    profiles = prefix / "etc/agent-sensor/profiles"
    installed = {p.name for p in profiles.glob("*.yaml")}
    shipped = {p.name for p in (ROOT / "examples/profiles").glob("*.yaml")}
    rendered_dir = tmp_path / "rendered"
    rendered = run([str(AGENT_SENSOR), "scenario", "profiles", "--out", str(rendered_dir)])
    assert rendered.returncode == 0, rendered.stderr
    scenario_profiles = {p.name for p in rendered_dir.glob("*.yaml")}
    assert scenario_profiles, "the scenario catalogue rendered no profile"
    assert installed == shipped | scenario_profiles
    check = run([str(AGENT_SENSOR), "profiles", "check", *sorted(str(p) for p in profiles.glob("*.yaml"))])
    assert check.returncode == 0, check.stdout + check.stderr

    # Installing again (re-provisioning a VM) works over the previous install.
    again = install_service(prefix, "START_SERVICE=no")
    assert again.returncode == 0, again.stdout + again.stderr


def test_installed_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (no systemd on this host)")
    prefix = tmp_path / "root"
    assert install_service(prefix).returncode == 0
    # verify exits 0 on unknown keys and bad values, only saying so: any output is a finding.
    result = run([analyze, "verify", str(prefix / "etc/systemd/system/agent-sensor.service")])
    if "Failed to setup working directory" in result.stderr:
        # It makes its scratch directory in /tmp, whatever TMPDIR says: a /tmp this user cannot write.
        pytest.skip(f"systemd-analyze cannot run here: {result.stderr.strip()}")
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_install_service_refuses_to_start_a_unit_under_a_prefix(tmp_path):
    result = install_service(tmp_path / "root", "START_SERVICE=yes")
    assert result.returncode != 0
    assert "cannot be started" in result.stderr
    assert not (tmp_path / "root").exists(), "nothing may be installed when the install is refused"


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="systemd is PID 1 here: this checks its absence")
def test_install_service_without_systemd_says_so(tmp_path):
    # No SERVICE_ROOT, so it would start the service; the directories still point into tmp_path in
    # case the refusal ever broke.
    cmd = ["make", "--no-print-directory", "install-service", f"SERVICE_PROFILES={tmp_path}/profiles",
           f"SERVICE_UNIT_DIR={tmp_path}/units"]
    result = run(cmd, cwd=ROOT, env=make_env())
    assert result.returncode != 0
    assert "systemd is not running as PID 1" in result.stderr
    assert not any(tmp_path.iterdir())
