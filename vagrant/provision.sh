#!/usr/bin/env bash
# Vagrant provisioner, run as root inside each VM: install the sensor from the synced checkout as
# a systemd service with `make install-service` (the same target a host uses) and the scenarios'
# dependencies, then wait until the service answers on its socket.
set -euo pipefail

dir=${AGENT_SENSOR_DIR:-/opt/agent-sensor}
server=unix:///run/agent-sensor/sensor.sock
timeout=${AGENT_SENSOR_START_TIMEOUT:-300}

export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a
# A fresh box often runs apt-daily/unattended-upgrades at first boot: wait for dpkg's lock
# instead of failing on it (this applies to the apt-get calls of `make setup` too).
echo 'DPkg::Lock::Timeout "600";' >/etc/apt/apt.conf.d/90agent-sensor-lock-wait

# Minimal boxes lack make; `make setup` installs everything else.
if ! command -v make >/dev/null; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends make
fi

cd "$dir"
make install-service
# What the scenarios themselves need (node and the MCP filesystem server), while the daemon starts.
make scenario-deps

# The daemon compiles its BPF programs with bcc when it starts: give it time.
deadline=$((SECONDS + timeout))
until .venv/bin/agent-sensor status --server "$server" >/dev/null 2>&1; do
  if ((SECONDS >= deadline)); then
    echo "provision: agent-sensor did not answer on $server within ${timeout}s" >&2
    systemctl status --no-pager agent-sensor.service >&2 || true
    journalctl -u agent-sensor.service -n 60 --no-pager >&2 || true
    exit 1
  fi
  sleep 2
done
.venv/bin/agent-sensor status --server "$server"
