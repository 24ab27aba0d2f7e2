"""The scenario catalogue (sensor/scenarios/catalogue) on this kernel: one daemon with every
scenario's profiles, each scenario one test. Also the CLI's contract: the table, JUnit XML, the
exit status, and a scenario whose expectation is wrong failing with the reason."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from sensor.scenarios.runner import run_scenario
from sensor.scenarios.setup import write_profiles
from sensor.scenarios.spec import catalogue

from .conftest import CLI, start_daemon, stop_daemon

SCENARIOS = catalogue()


@pytest.fixture(scope="module")
def scenario_daemon(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("scenarios")
    write_profiles(SCENARIOS, run_dir / "profiles")
    proc, server, log = start_daemon(run_dir, run_dir / "profiles")
    yield server
    assert stop_daemon(proc, log) == 0, log.read_text()


def test_the_catalogue_has_every_story_of_the_issue():
    assert len(SCENARIOS) >= 10
    assert {"crm-export", "coding-assistant-exfiltration", "secret-broker", "mcp-filesystem", "second-stage",
            "reverse-shell", "escape-tree", "steal-environment", "honest-day", "needle-in-noise"} <= {
        s.name for s in SCENARIOS}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario_daemon, scenario):
    from sensor.scenarios.spec import DEFAULT_WORKDIR
    result = run_scenario(scenario, scenario_daemon, DEFAULT_WORKDIR)
    assert result.passed, "\n".join(result.failures)


def test_a_wrong_expectation_fails_with_its_reason_and_junit(tmp_path):
    """The runner can fail: a scenario expecting an alert that never comes, run by the CLI with a
    daemon of its own."""
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "wrong.yaml").write_text("""\
name: wrong-expectation
title: expects an alert for a harmless read
story: The agent reads /etc/hostname, which its profile allows.
profiles:
  - |
    name: scenario-wrong
    files:
      read: ["/usr/**", "/etc/**", "/proc/**", "/dev/null", "${workspace}/**"]
    exec: ["/usr/bin/python3*"]
    on_violation: kill
agent:
  profile: scenario-wrong
  steps:
    - name: read the hostname
      python: open("/etc/hostname").read()
expect:
  end: killed
  alerts:
    - rule: file_read
      path: /etc/hostname
""")
    junit = tmp_path / "out.xml"
    done = subprocess.run([CLI, "scenario", "run", "--dir", str(tmp_path / "scenarios"), "--workdir",
                           str(tmp_path / "work"), "--junit", str(junit), "--all"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "wrong-expectation  FAIL" in done.stdout
    assert "the agent exited, expected killed" in done.stdout
    assert "no alert file_read path=/etc/hostname" in done.stdout
    case = ET.parse(junit).getroot().find("testcase")
    assert case.get("name") == "wrong-expectation"
    assert "no alert file_read" in case.find("failure").get("message")
