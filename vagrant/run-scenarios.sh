#!/usr/bin/env bash
# Run inside a VM as root (`make vagrant-scenarios` does it over `vagrant ssh`): the whole scenario
# catalogue against the agent-sensor service that provision.sh installed.
#
# JUnit goes to /var/lib/agent-sensor/results/MACHINE.xml. The synced folder is rsync, one way
# (host -> guest), so nothing written in the guest comes back by itself: the host fetches the
# file with `vagrant ssh MACHINE --no-tty -c 'sudo cat ...'` into vagrant/results/MACHINE.xml.
set -euo pipefail

machine=${1:-$(hostname -s)}
dir=${AGENT_SENSOR_DIR:-/opt/agent-sensor}
results=${AGENT_SENSOR_RESULTS:-/var/lib/agent-sensor/results}
server=unix:///run/agent-sensor/sensor.sock

if ! systemctl is-active --quiet agent-sensor.service; then
  echo "run-scenarios: agent-sensor.service is not running; provision first (vagrant provision $machine)" >&2
  systemctl status --no-pager agent-sensor.service >&2 || true
  exit 1
fi

install -d -m 755 "$results"
rm -f "$results/$machine.xml"  # never hand back a previous run's results
cd "$dir"
exec .venv/bin/agent-sensor scenario run --all --server "$server" --junit "$results/$machine.xml"
