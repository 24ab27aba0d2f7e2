"""Putting scenarios in front of a daemon: their profiles written out, a daemon of the runner's
own when none is given, and the scenarios run one after another."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from .own_daemon import DaemonError, start_daemon, stop_daemon
from .runner import Result, run_scenario
from .spec import Scenario


def write_profiles(scenarios: list[Scenario], out: Path) -> list[Path]:
    """SCENARIO-N.yaml per profile; files of earlier runs of these scenarios are replaced."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for s in scenarios:
        for old in out.glob(f"scenario-{s.name}-*.yaml"):
            old.unlink()
        for n, text in enumerate(s.profiles, start=1):
            path = out / f"scenario-{s.name}-{n}.yaml"
            path.write_text(f"# Rendered from {s.file} by `agent-sensor scenario profiles`.\n{text}")
            written.append(path)
    return written


def run_scenarios(chosen: list[Scenario], every: list[Scenario], server: str | None, workdir: Path,
                  progress: Callable[[Result], None]) -> list[Result]:
    """Run `chosen` against `server`, or against a daemon started with every scenario's
    profiles (raises RuntimeError, with its log, if that daemon fails)."""
    if server is not None:
        return [_report(run_scenario(s, server, workdir), progress) for s in chosen]
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="daemon-", dir=workdir) as tmp:
        run_dir = Path(tmp)
        write_profiles(every, run_dir / "profiles")
        try:
            proc, own_server, log = start_daemon(run_dir, run_dir / "profiles")
        except DaemonError as exc:
            raise RuntimeError(f"could not start a daemon for the scenarios: {exc}") from None
        try:
            results = [_report(run_scenario(s, own_server, workdir), progress) for s in chosen]
        finally:
            code = stop_daemon(proc, log)
        if code != 0:
            raise RuntimeError(f"the scenario daemon exited with {code}:\n{log.read_text()[-3000:]}")
        return results


def _report(result: Result, progress: Callable[[Result], None]) -> Result:
    progress(result)
    return result
