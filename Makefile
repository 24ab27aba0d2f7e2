# The two commands of the README's contract: `make run` and `make test`. Both set up everything a
# fresh Debian/Ubuntu host lacks (run as root: BPF needs it).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# bcc is Debian's python3-bpfcc, built for the distro Python: the venv must use that interpreter
# and see its dist-packages.
SYSTEM_PYTHON := /usr/bin/python3
APT_PACKAGES := bpfcc-tools python3-bpfcc python3-venv python3-dev gcc libc6-dev make bpftool iproute2
GEN := sensor/_proto
PROTO := proto/agent_sensor/v1/sensor.proto
PROFILES ?= examples/profiles
LISTEN ?=

# install-service: profile directory and unit directory as the running system sees them.
# SERVICE_ROOT prefixes both (like DESTDIR), so the install can be exercised without touching /etc;
# with a SERVICE_ROOT nothing is started unless START_SERVICE=yes is asked for (and refused).
SERVICE_ROOT ?=
SERVICE_PROFILES ?= /etc/agent-sensor/profiles
SERVICE_UNIT_DIR ?= /etc/systemd/system
START_SERVICE ?= $(if $(SERVICE_ROOT),no,yes)
# Tools the tests use: vagrant/ checks (tests/unit/test_vagrant.py), the NATS server of docs/FLEET.md's
# example (tests/e2e/test_fleet_nats.py); not needed to run the sensor,
# so not in `setup`, which also provisions the VMs.
CHECK_APT_PACKAGES := vagrant shellcheck nats-server
VAGRANT_MACHINES := ubuntu2404 debian12
# Debian's vagrant ships no checkpoint call-home, but make sure: no network beyond the mirrors.
export VAGRANT_CHECKPOINT_DISABLE := 1

.PHONY: setup system-deps kernel-headers venv proto scenario-deps run test test-unit bench clean \
	check-tools install-service service-preflight vagrant-scenarios vagrant-check

setup: system-deps kernel-headers venv proto

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

kernel-headers:
	@bash bpf/setup-kernel-headers.sh

$(VENV)/.installed: pyproject.toml sensor/_paths.c sensor/_decode.c sensor/_event_wire.c sensor/_named_tuple.h \
		bpf/events.h
	$(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@$(PY) -c 'import bcc' || { echo "bcc is not importable from $(VENV): is python3-bpfcc installed?"; exit 1; }
	touch $@

venv: $(VENV)/.installed

# Generated gRPC code is never edited by hand nor committed. The virtual path makes the generated
# imports read `sensor._proto.agent_sensor.v1`, while the proto package stays agent_sensor.v1.
$(GEN)/agent_sensor/v1/sensor_pb2.py: $(PROTO) $(VENV)/.installed
	mkdir -p $(GEN)
	$(PY) -m grpc_tools.protoc -I$(GEN)=proto --python_out=. --pyi_out=. --grpc_python_out=. \
	  $(GEN)/agent_sensor/v1/sensor.proto
	touch $(GEN)/__init__.py $(GEN)/agent_sensor/__init__.py $(GEN)/agent_sensor/v1/__init__.py

proto: $(GEN)/agent_sensor/v1/sensor_pb2.py

# The MCP scenario (sensor/scenarios/agents/mcp_read.py) drives the real filesystem MCP server from
# npm, run by node itself (never npx: no network at run time). Its Python client, the `mcp` SDK, is
# in the venv's dev extras. 2026.8.31 is the newest server, and it runs on Debian 12's node 18.20:
# its own package.json has no engines field; a few of its dependencies declare node 20 (npm only
# warns: EBADENGINE), but the code it loads runs on 18, which was checked by running the server
# and its glob/minimatch on 18.20.4.
MCP_FS_VERSION := 2026.8.31
SCENARIO_NODE := .scenario-deps/node
MCP_FS_SERVER := $(SCENARIO_NODE)/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js
MCP_FS_STAMP := $(SCENARIO_NODE)/.installed-server-filesystem-$(MCP_FS_VERSION)

# Idempotent: apt only for a missing node or npm, npm only when that exact version is not there yet;
# offline after the first run.
scenario-deps:
	@missing=""; command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@if [ ! -f $(MCP_FS_STAMP) ] || [ ! -f $(MCP_FS_SERVER) ]; then \
	  echo "installing @modelcontextprotocol/server-filesystem@$(MCP_FS_VERSION) into $(SCENARIO_NODE)"; \
	  rm -f $(SCENARIO_NODE)/.installed-server-filesystem-*; \
	  npm install --prefix $(SCENARIO_NODE) --no-audit --no-fund --save-exact \
	    @modelcontextprotocol/server-filesystem@$(MCP_FS_VERSION) && touch $(MCP_FS_STAMP); \
	fi

# The daemon loads only profiles root owns and nobody else may write; a checkout may belong to a
# user, so the profiles are copied (root:root, 0644) to a directory of the daemon's first.
RUN_PROFILES := /var/lib/agent-sensor/profiles.make-run
run: setup
	@install -d -m 755 -o root -g root $(RUN_PROFILES) && rm -f $(RUN_PROFILES)/*.yaml $(RUN_PROFILES)/*.yml && \
	  install -m 644 -o root -g root $(wildcard $(PROFILES)/*.yaml $(PROFILES)/*.yml) $(RUN_PROFILES)/ && \
	  echo "profiles from $(PROFILES), copied to $(RUN_PROFILES)"
	$(VENV)/bin/agent-sensor run --profiles $(RUN_PROFILES) $(if $(LISTEN),--listen $(LISTEN))

test: setup check-tools scenario-deps
	$(PY) -m pytest -ra $(PYTEST_ARGS)

test-unit: venv proto
	$(PY) -m pytest -ra tests/unit $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(GEN) .pytest_cache

# auditd is the peer the overhead benchmark compares against (started only for its runs).
bench: setup
	@dpkg -s auditd >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends auditd; }
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install -q -e '.[dev,bench]'
	PYTHONPATH=. $(PY) tests/bench/enforcement.py
	PYTHONPATH=. $(PY) tests/bench/overhead.py
	PYTHONPATH=. $(PY) tests/bench/agents.py
	PYTHONPATH=. $(PY) tests/bench/throughput.py

check-tools:
	@missing=""; for p in $(CHECK_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The daemon as a systemd service (what vagrant/provision.sh runs in each VM). Profiles: every
# scenario's, rendered, plus examples/profiles. The unit template gets absolute paths.
install-service: service-preflight setup
	@set -euo pipefail; \
	profiles='$(SERVICE_ROOT)$(SERVICE_PROFILES)'; units='$(SERVICE_ROOT)$(SERVICE_UNIT_DIR)'; \
	install -d -m 755 "$$profiles" "$$units"; \
	$(VENV)/bin/agent-sensor scenario profiles --out "$$profiles"; \
	install -m 644 examples/profiles/*.yaml "$$profiles/"; \
	sed -e 's|@AGENT_SENSOR@|$(CURDIR)/$(VENV)/bin/agent-sensor|g' -e 's|@PROFILES@|$(SERVICE_PROFILES)|g' \
	  vagrant/agent-sensor.service >"$$units/agent-sensor.service.tmp"; \
	chmod 644 "$$units/agent-sensor.service.tmp"; mv "$$units/agent-sensor.service.tmp" "$$units/agent-sensor.service"; \
	echo "installed $$units/agent-sensor.service and profiles in $$profiles"; \
	if [ "$(START_SERVICE)" = yes ]; then \
	  systemctl daemon-reload; systemctl enable agent-sensor.service; \
	  systemctl restart agent-sensor.service; \
	  echo "agent-sensor.service enabled and (re)started"; \
	fi

# Before `setup` (prerequisites run in order): refuse early what cannot work.
service-preflight:
	@if [ "$(START_SERVICE)" = yes ]; then \
	  if [ -n "$(SERVICE_ROOT)" ]; then \
	    echo "install-service: START_SERVICE=yes with SERVICE_ROOT=$(SERVICE_ROOT): a unit under a prefix cannot be started" >&2; exit 1; fi; \
	  if [ ! -d /run/systemd/system ]; then \
	    echo "install-service: systemd is not running as PID 1 here (a container?): cannot install a service." >&2; \
	    echo "  Run the daemon with 'make run', or check the install with: make install-service SERVICE_ROOT=/tmp/x" >&2; \
	    exit 1; fi; \
	  if [ "$$(id -u)" -ne 0 ]; then echo "install-service: needs root" >&2; exit 1; fi; \
	fi

# On a host with Vagrant and a provider (VirtualBox or libvirt): provision each VM, run the
# scenario catalogue in it, and fetch its JUnit file to vagrant/results/MACHINE.xml (the rsync
# synced folder is one way). Every machine is tried; non-zero if any failed.
vagrant-scenarios:
	@cd vagrant && mkdir -p results && failed=""; \
	for m in $(VAGRANT_MACHINES); do \
	  echo "== $$m: provision"; rm -f results/$$m.xml; \
	  if ! vagrant up --provision $$m; then failed="$$failed $$m(provision)"; continue; fi; \
	  echo "== $$m: scenarios"; \
	  vagrant ssh $$m -c "sudo bash /opt/agent-sensor/vagrant/run-scenarios.sh $$m" || failed="$$failed $$m(scenarios)"; \
	  if vagrant ssh $$m --no-tty -c "sudo cat /var/lib/agent-sensor/results/$$m.xml" >results/$$m.xml.tmp; then \
	    mv results/$$m.xml.tmp results/$$m.xml; echo "== $$m: results in vagrant/results/$$m.xml"; \
	  else rm -f results/$$m.xml.tmp; failed="$$failed $$m(no JUnit file)"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "vagrant-scenarios failed:$$failed" >&2; exit 1; fi; \
	echo "vagrant-scenarios: all machines passed"

# What can be checked without booting a VM: the Vagrantfile (--ignore-provider: no VirtualBox or
# libvirt needed) and the shell scripts, vagrant/'s at every severity, the others for warnings
# and errors (SC2012-style suggestions in them are not failures).
SHELL_SCRIPTS := .ci/run bpf/setup-kernel-headers.sh
vagrant-check: check-tools
	cd vagrant && vagrant validate --ignore-provider
	shellcheck vagrant/*.sh
	shellcheck --severity=warning $(SHELL_SCRIPTS)
