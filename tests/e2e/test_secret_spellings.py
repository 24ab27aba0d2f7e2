"""Every spelling that reaches a secret is that secret (issue: secrets that cannot be
sidestepped). Each test runs a tracked agent that reaches the same secret file another way and
checks the alert: rule, the secret's glob, the path the agent really opened."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest


@pytest.fixture(scope="module")
def vault(daemon):
    """The profile's secret directory ({workspace}/vault/** in every e2e profile) and its key."""
    d = daemon.workspace / "vault"
    d.mkdir(exist_ok=True)
    (d / "key").write_text("top secret\n")
    return d


def secret_alert(daemon, *actions: str) -> dict:
    run = daemon.run_agent("e2e-alert", *actions)
    assert run.returncode == 0, run.stderr
    alerts = [a for a in daemon.alerts_for(run.pid) if a["rule"]["kind"] == "RULE_KIND_SECRET_ACCESS"]
    assert len(alerts) == 1, alerts
    return alerts[0]


def test_relative_path(daemon, vault):
    alert = secret_alert(daemon, f"chdir:{vault}", "open:key")
    assert alert["event"]["file"]["path"] == "key"
    assert alert["event"]["file"]["resolved_path"] == str(vault / "key")
    assert alert["event"]["file"]["result"] >= 0  # it was opened: the fd the open returned


def test_an_attempt_that_failed_says_so(daemon, vault):
    alert = secret_alert(daemon, f"open:{vault}/no-such-key")
    assert alert["event"]["file"]["result"] == -errno.ENOENT
    assert alert["reason"] == f"tried to open secret {vault}/no-such-key for reading (ENOENT)"


@pytest.mark.parametrize("spelling", ["{w}/out/../vault/key", "{w}//vault///key", "{w}/./vault/./key"])
def test_dots_and_repeated_slashes(daemon, vault, spelling):
    alert = secret_alert(daemon, "open:" + spelling.format(w=daemon.workspace))
    assert alert["event"]["file"]["resolved_path"] == str(vault / "key")


def test_symlink(daemon, vault):
    link = daemon.workspace / "innocent-link"
    link.unlink(missing_ok=True)
    link.symlink_to(vault / "key")
    alert = secret_alert(daemon, f"open:{link}")
    assert alert["event"]["file"]["resolved_path"] == str(vault / "key")
    assert "via" in alert["reason"]


def test_hard_link(daemon, vault):
    link = daemon.workspace / "out" / "innocent-hardlink"
    link.parent.mkdir(exist_ok=True)
    link.unlink(missing_ok=True)
    os.link(vault / "key", link)  # made before the daemon reads... no: the daemon knows the inode
    alert = secret_alert(daemon, f"open:{link}")
    assert alert["event"]["file"]["resolved_path"] == str(link)
    assert "same file as secret" in alert["reason"]


def test_bind_mount(daemon, vault):
    mnt = daemon.workspace / "mnt"
    mnt.mkdir(exist_ok=True)
    subprocess.run(["mount", "--bind", str(vault), str(mnt)], check=True)
    try:
        alert = secret_alert(daemon, f"open:{mnt}/key")
        assert "same file as secret" in alert["reason"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("prefix", ["/proc/self/root", "/proc/self/cwd/.."])
def test_proc_magic_links(daemon, vault, prefix):
    actions = (f"chdir:{daemon.workspace}/out",) if "cwd" in prefix else ()
    (daemon.workspace / "out").mkdir(exist_ok=True)
    target = f"{prefix}{vault}/key" if "root" in prefix else f"{prefix}/vault/key"
    alert = secret_alert(daemon, *actions, f"open:{target}")
    assert alert["event"]["file"]["resolved_path"] == str(vault / "key")


def test_another_process_environment(daemon):
    other = subprocess.Popen(["sleep", "30"])
    try:
        alert = secret_alert(daemon, f"open:/proc/{other.pid}/environ")
        assert alert["rule"]["pattern"] == "/proc/PID/environ"
        assert "another process's environ" in alert["reason"]
    finally:
        other.kill()
        other.wait()


def test_a_name_that_is_not_utf8(daemon, vault):
    """A file name is bytes, not necessarily UTF-8; protobuf's strings are. A symlink whose name
    has the byte 0xff still reaches the secret: the alert comes, with \\xff written for the byte
    wherever the name appears (the path, the agent's command line)."""
    link = daemon.workspace / "link-\udcff"  # surrogateescape: the byte 0xff, as os.fsencode writes it
    link.unlink(missing_ok=True)
    link.symlink_to(vault / "key")
    alert = secret_alert(daemon, f"open:{link}")
    shown = f"{daemon.workspace}/link-\\xff"
    assert alert["event"]["file"]["path"] == shown
    assert alert["event"]["file"]["resolved_path"] == str(vault / "key")
    assert alert["reason"] == f"opened secret {vault}/key (via {shown}) for reading"
    assert alert["process"]["cmdline"][-1] == f"open:{shown}"
