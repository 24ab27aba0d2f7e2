"""The command line: `profiles check`, every --help, and clients with no daemon to talk to."""

from __future__ import annotations

import inspect
import os
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sensor.cli import main
from sensor.profiles import load_profile_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "profiles").glob("*.yaml"))
CLIENT_COMMANDS = [["alerts"], ["status"], ["exec"], ["profiles", "list"]]


def runner() -> CliRunner:
    """stdout and stderr kept apart, whichever click API this is (mix_stderr left in 8.2)."""
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)
    return CliRunner()


def run(*args: str):
    return runner().invoke(main, list(args), catch_exceptions=True)


def stderr_of(result) -> str:
    return result.stderr


# --- profiles check --------------------------------------------------------------------------


def test_check_examples():
    assert EXAMPLES, "examples/profiles/*.yaml"
    result = run("profiles", "check", *map(str, EXAMPLES))
    assert result.exit_code == 0, result.output + stderr_of(result)
    lines = result.stdout.splitlines()
    assert len(lines) == len(EXAMPLES)
    for file in EXAMPLES:
        name = load_profile_file(file, homes=["/root"]).name
        assert any(line.startswith(f"ok: {name} ") and str(file) in line for line in lines), lines
    assert stderr_of(result) == ""


def test_check_a_directory():
    result = run("profiles", "check", str(ROOT / "examples" / "profiles"))
    assert result.exit_code == 0
    assert sum(line.startswith("ok: ") for line in result.stdout.splitlines()) == len(EXAMPLES)


def test_check_bad_file_reports_every_problem_with_its_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        name: crm
        description: broken on purpose
        netwrk:
          connect: ["127.0.0.1:8443"]
        files:
          read: ["/srv/crm/[a-z"]
        network:
          connect:
            - 127.0.0.1:8443
            - api.example.com
        on_violation: explode
    """))
    result = run("profiles", "check", str(bad))
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = stderr_of(result).splitlines()
    assert lines[0].startswith(f"{bad}:3: unknown key 'netwrk'")
    assert lines[1].startswith(f"{bad}:6: bad glob '/srv/crm/[a-z' in files.read")
    assert lines[2].startswith(f"{bad}:10: bad destination 'api.example.com' in network.connect: missing port")
    assert lines[3].startswith(f"{bad}:11: bad on_violation 'explode'")
    assert len(lines) == 4
    assert "Traceback" not in result.output + stderr_of(result)


def test_check_reports_problems_of_every_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("name: good\n")
    syntax = tmp_path / "syntax.yaml"
    syntax.write_text("name: s\nfiles: [unclosed\n")
    nameless = tmp_path / "nameless.yaml"
    nameless.write_text("description: no name\n")
    result = run("profiles", "check", str(good), str(syntax), str(nameless))
    assert result.exit_code == 1
    err = stderr_of(result)
    assert f"{syntax}:" in err and "YAML syntax error" in err
    assert f"{nameless}:1: missing required key 'name'" in err
    assert str(good) not in err
    for line in err.splitlines():
        file, lineno, message = line.split(":", 2)
        assert Path(file).exists() and int(lineno) >= 1 and message.strip()


def test_check_same_name_twice(tmp_path):
    first = tmp_path / "a.yaml"
    second = tmp_path / "b.yaml"
    first.write_text("name: dup\n")
    second.write_text("# the same agent again\nname: dup\n")
    result = run("profiles", "check", str(first), str(second))
    assert result.exit_code == 1
    err = stderr_of(result)
    assert f"{second}:2: duplicate profile name 'dup' (first defined in {first}:1)" in err


def test_check_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    result = run("profiles", "check", str(missing))
    assert result.exit_code == 1
    assert f"{missing}:1: no such file or directory" in stderr_of(result)
    assert "Traceback" not in result.output + stderr_of(result)


def test_check_needs_a_file():
    result = run("profiles", "check")
    assert result.exit_code == 2  # click usage error
    assert "FILES" in stderr_of(result)


# --- help ------------------------------------------------------------------------------------


def all_commands():
    """(argv prefix, command) for every command and group under main."""
    out = [([], main)]
    stack = [([], main)]
    while stack:
        prefix, group = stack.pop()
        for name, cmd in group.commands.items():
            out.append((prefix + [name], cmd))
            if isinstance(cmd, click.Group):
                stack.append((prefix + [name], cmd))
    return out


@pytest.mark.parametrize("argv, command", all_commands(),
                         ids=[" ".join(argv) or "main" for argv, _ in all_commands()])
def test_help_describes_every_option(argv, command):
    result = run(*argv, "--help")
    assert result.exit_code == 0, stderr_of(result)
    text = result.stdout
    assert "Usage:" in text
    assert command.help and command.help.split("\n")[0].strip()[:30] in " ".join(text.split())
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        for opt in param.opts + param.secondary_opts:
            assert opt in text, f"{' '.join(argv)} --help does not show {opt}"
        assert param.help, f"{' '.join(argv)}: option {param.opts} has no help text"
        words = " ".join(param.help.split()[:3])
        assert words in " ".join(text.split()), f"{' '.join(argv)}: help of {param.opts} not shown"


def test_main_help_lists_commands():
    result = run("--help")
    assert result.exit_code == 0
    for name in ("run", "exec", "alerts", "status", "profiles"):
        assert f"  {name}" in result.stdout
    assert run("-h").exit_code == 0
    result = run("profiles", "--help")
    assert "check" in result.stdout and "list" in result.stdout


@pytest.mark.parametrize("argv", CLIENT_COMMANDS, ids=" ".join)
def test_every_client_command_takes_server(argv):
    result = run(*argv, "--help")
    assert result.exit_code == 0
    assert "--server" in result.stdout
    assert "unix:///run/agent-sensor/sensor.sock" in result.stdout  # the default is shown


# --- clients without a daemon ----------------------------------------------------------------


@pytest.fixture
def nowhere(tmp_path) -> str:
    return f"unix://{tmp_path}/none.sock"


@pytest.fixture
def no_exec(monkeypatch):
    """If `exec` ever got past the daemon, it must not replace the test process."""
    calls = []
    monkeypatch.setattr(os, "execv", lambda *args: calls.append(args))
    return calls


@pytest.mark.parametrize("argv", [
    ["alerts"], ["alerts", "--follow"], ["alerts", "--json"], ["status"], ["status", "--json"],
    ["profiles", "list"], ["exec", "--profile", "crm", "--", "/bin/true"],
], ids=" ".join)
def test_client_without_daemon(argv, nowhere, no_exec):
    args = argv[:1] + ["--server", nowhere] + argv[1:] if argv[0] != "profiles" else argv + ["--server", nowhere]
    result = run(*args)
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception
    err = stderr_of(result)
    assert "no agent-sensor daemon answers" in err
    assert nowhere in err
    assert "agent-sensor run" in err
    assert "Traceback" not in err + result.stdout
    assert no_exec == []  # the command was never started untracked


def test_client_server_from_environment(nowhere, no_exec):
    result = runner().invoke(main, ["status"], env={"AGENT_SENSOR_SERVER": nowhere})
    assert result.exit_code != 0
    assert nowhere in stderr_of(result) and "agent-sensor run" in stderr_of(result)


def test_client_tcp_without_daemon():
    # Port 1 on loopback: nothing listens there (tcpmux is long gone).
    result = run("status", "--server", "127.0.0.1:1")
    assert result.exit_code != 0
    assert "no agent-sensor daemon answers at 127.0.0.1:1" in stderr_of(result)
    assert "Traceback" not in stderr_of(result)


def test_exec_unknown_command(no_exec, nowhere):
    result = run("exec", "--profile", "crm", "--server", nowhere, "--", "no-such-program-xyz")
    assert result.exit_code == 1
    assert "no-such-program-xyz: command not found" in stderr_of(result)
    assert no_exec == []
