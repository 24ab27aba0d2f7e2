"""Writes and tampering on protected paths are events with their own rule kind: a secret
renamed, deleted, chmod'ed, truncated, hard-linked or symlinked to is secret_tamper (for literal
names the kernel kills the agent at the syscall: it never continues, though the change itself
has happened); changing a name outside files.write is a file_write violation."""

from __future__ import annotations

import pytest


@pytest.fixture
def vault(daemon):
    d = daemon.workspace / "vault"
    d.mkdir(exist_ok=True)
    key = d / "key"
    key.write_text("top secret\n")
    (daemon.workspace / "out").mkdir(exist_ok=True)
    return d


def only_alert(daemon, profile: str, *actions: str) -> tuple[dict, object]:
    run = daemon.run_agent(profile, *actions)
    alerts = daemon.alerts_for(run.pid)
    assert len(alerts) == 1, alerts
    return alerts[0], run


@pytest.mark.parametrize("change, op", [
    ("rename:{v}/key:{w}/out/stolen", "rename"), ("unlink:{v}/key", "unlink"), ("chmod:{v}/key", "chmod"),
    ("truncate:{v}/key", "truncate"), ("link:{v}/key:{w}/out/hardlink", "link"),
    ("rename:{w}/out/decoy:{v}/key", "rename"),  # overwriting the secret
])
def test_changing_a_secret_kills_the_agent_at_the_syscall(daemon, vault, change, op):
    (daemon.workspace / "out" / "decoy").write_text("decoy\n")
    action = change.format(v=vault, w=daemon.workspace)
    alert, run = only_alert(daemon, "e2e-kill", action, "secret")
    assert run.returncode == -9
    assert "did " + action not in run.stdout, "the agent never returned from the syscall"
    assert alert["rule"]["kind"] == "RULE_KIND_SECRET_TAMPER"
    assert alert["rule"]["pattern"] == f"{daemon.workspace}/vault/**"
    assert alert["event"]["file"]["operation"] == op
    assert alert["action"]["in_kernel"] is True


def test_a_kernel_kill_does_not_undo_the_change_itself(daemon, vault):
    """The documented limit: the kill at syscall entry stops the agent before the result reaches
    it, but the syscall still runs. Only an LSM hook could refuse it (BPF-LSM is not available
    on this kernel), so a deleted secret is deleted."""
    alert, run = only_alert(daemon, "e2e-kill", f"unlink:{vault}/key")
    assert run.returncode == -9 and alert["action"]["in_kernel"] is True
    assert not (vault / "key").exists()


def test_symlink_to_a_secret_is_tampering(daemon, vault):
    link = daemon.workspace / "out" / "innocent"
    link.unlink(missing_ok=True)
    alert, run = only_alert(daemon, "e2e-alert", f"symlink:../vault/key:{link}")
    assert alert["rule"]["kind"] == "RULE_KIND_SECRET_TAMPER"
    assert alert["event"]["file"]["resolved_path"] == str(vault / "key")  # relative to the link's directory
    assert alert["event"]["file"]["resolved_path2"] == str(link)
    assert "symlink pointing at secret" in alert["reason"]


def test_deleting_a_symlink_to_a_secret_is_not_deleting_the_secret(daemon, vault):
    link = daemon.workspace / "out" / "pointer"
    link.unlink(missing_ok=True)
    link.symlink_to(vault / "key")
    run = daemon.run_agent("e2e-alert", f"unlink:{link}")
    assert run.returncode == 0
    assert daemon.alerts_for(run.pid, expect=0) == []
    assert (vault / "key").exists()


@pytest.mark.parametrize("change", ["rename:{w}/data.txt:{w}/moved.txt", "unlink:{w}/data.txt", "chmod:{w}/data.txt"])
def test_changes_outside_files_write_are_write_violations(daemon, vault, change):
    alert, run = only_alert(daemon, "e2e-alert", change.format(w=daemon.workspace))
    assert alert["rule"]["kind"] == "RULE_KIND_FILE_WRITE"
    assert "outside files.write" in alert["reason"]
    (daemon.workspace / "data.txt").write_text("customer table\n")
    (daemon.workspace / "moved.txt").unlink(missing_ok=True)


def test_changes_inside_files_write_are_fine(daemon, vault):
    out = daemon.workspace / "out"
    (out / "a").write_text("a")
    run = daemon.run_agent("e2e-alert", f"rename:{out}/a:{out}/b", f"chmod:{out}/b", f"truncate:{out}/b",
                           f"link:{out}/b:{out}/c", f"unlink:{out}/b", f"unlink:{out}/c")
    assert run.returncode == 0
    assert daemon.alerts_for(run.pid, expect=0) == []
