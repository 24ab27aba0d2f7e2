"""Prometheus metrics: a violation shows up as an alert by agent and rule, an action, and a
decision and action latency; the kernel's event counters are there."""

from __future__ import annotations

import urllib.request

from .conftest import free_port, started_kill_daemon, stop_daemon


def scrape(address: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_metrics_count_alerts_actions_and_latency(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    daemon = started_kill_daemon(tmp_path, "e2e-metrics", "--metrics", address)
    try:
        result = daemon.run_agent("e2e-metrics", "secret")
        assert result.returncode == -9
        assert len(daemon.alerts_for(result.pid)) == 1
        m = scrape(address)
        assert m['agent_sensor_alerts_total{agent="e2e-metrics",rule="secret_access"}'] == 1
        assert m['agent_sensor_actions_total{action="kill",in_kernel="true"}'] == 1
        assert m["agent_sensor_decision_seconds_count"] == 1 and m["agent_sensor_action_seconds_count"] == 1
        assert m['agent_sensor_kernel_events_total{type="open"}'] > 0
        assert m['agent_sensor_ring_buffer_lost_total{type="open"}'] == 0
        assert m["agent_sensor_consumers"] == 0
    finally:
        assert stop_daemon(daemon.proc, daemon.log) == 0, daemon.log.read_text()
