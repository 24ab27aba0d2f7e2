"""Build hook (pyproject [tool.setuptools.cmdclass]): a wheel carries the gRPC code generated
from proto/, so `pip install` of a checkout gives working clients without `make proto`.
Not imported at run time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from setuptools.command.build_py import build_py

PROTO = "agent_sensor/v1/sensor.proto"


class BuildPyWithProto(build_py):
    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parents[1]
        out = Path(self.build_lib)
        # The same virtual path as the Makefile's: generated imports read sensor._proto.agent_sensor.v1.
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-Isensor/_proto={root / 'proto'}",
                        f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}",
                        f"sensor/_proto/{PROTO}"], check=True, cwd=root)
        for package in ("sensor/_proto", "sensor/_proto/agent_sensor", "sensor/_proto/agent_sensor/v1"):
            (out / package / "__init__.py").touch()
