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

.PHONY: setup system-deps kernel-headers venv proto run test test-unit bench clean

setup: system-deps kernel-headers venv proto

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

kernel-headers:
	@bash bpf/setup-kernel-headers.sh

$(VENV)/.installed: pyproject.toml
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

run: setup
	$(VENV)/bin/agent-sensor run --profiles $(PROFILES) $(if $(LISTEN),--listen $(LISTEN))

test: setup
	$(PY) -m pytest -ra $(PYTEST_ARGS)

test-unit: venv proto
	$(PY) -m pytest -ra tests/unit $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(GEN) .pytest_cache

bench: setup
	$(PY) tests/bench/enforcement.py
