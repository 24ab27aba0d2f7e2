"""Scenarios: attack stories replayed as tracked agents against a real daemon.

spec (scenario files) -> hosts (test network) -> runner (one run, judged) -> report (table, JUnit);
setup puts them in front of a daemon (`agent-sensor scenario ...`)."""
