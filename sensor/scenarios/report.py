"""Scenario results for people (a pass/fail table with every failure's reason) and for CI
systems (JUnit XML: one testcase per scenario)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .runner import Result


def table(results: list[Result]) -> str:
    width = max((len(r.scenario.name) for r in results), default=8)
    lines = [f"{'SCENARIO':<{width}}  RESULT  SECONDS  ALERTS  AGENT"]
    for r in results:
        lines.append(f"{r.scenario.name:<{width}}  {'pass' if r.passed else 'FAIL':<6}  {r.seconds:7.1f}  "
                     f"{len(r.alerts):6d}  {r.end or '-'}")
        for reason in r.failures:
            lines.append(f"{'':<{width}}    - {reason}")
    passed = sum(r.passed for r in results)
    lines.append(f"{passed}/{len(results)} scenarios passed")
    return "\n".join(lines)


def details(r: Result) -> str:
    """Steps and alerts of one run: what a tester reads to see why."""
    out = [f"{r.scenario.name}: {r.scenario.title}"]
    for step in r.steps:
        state = "ok" if step.get("ok") else "failed" if "ok" in step else "cut short" if step.get("started") \
            else "never ran"
        out.append(f"  step {step['step']!r}: {state} {step.get('detail', '')}".rstrip())
    out += [f"  alert {a.describe()}" for a in r.alerts]
    return "\n".join(out)


def junit(results: list[Result], path: Path) -> None:
    suite = ET.Element("testsuite", name="agent-sensor scenarios", tests=str(len(results)),
                       failures=str(sum(not r.passed for r in results)),
                       time=f"{sum(r.seconds for r in results):.3f}")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname="scenarios", name=r.scenario.name, time=f"{r.seconds:.3f}")
        if not r.passed:
            failure = ET.SubElement(case, "failure", message="; ".join(r.failures))
            failure.text = details(r)
        ET.SubElement(case, "system-out").text = details(r)
    ET.ElementTree(suite).write(path, encoding="unicode", xml_declaration=True)
