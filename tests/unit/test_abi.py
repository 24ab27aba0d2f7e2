"""bpf/events.h and sensor/abi.py must describe the same bytes: compile a C program against the
header that prints every size, offset and constant, and compare with the ctypes mirror."""

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sensor import abi

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "events.h"


def _c_program() -> str:
    lines = ["#include <stdio.h>", "#include <stddef.h>", f'#include "{HEADER}"', "int main(void) {"]
    for cname, struct in abi.STRUCTS.items():
        lines.append(f'printf("size {cname} %zu\\n", sizeof(struct {cname}));')
        for field, _ in struct._fields_:
            lines.append(f'printf("offset {cname}.{field} %zu\\n", offsetof(struct {cname}, {field}));')
    for name in abi.CONSTANTS:
        lines.append(f'printf("const {name} %llu\\n", (unsigned long long)({name}));')
    lines += ["return 0; }"]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory) -> dict[str, int]:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to check the ABI (make setup installs gcc)"
    work = tmp_path_factory.mktemp("abi")
    (work / "layout.c").write_text(_c_program())
    subprocess.run([cc, "-o", str(work / "layout"), str(work / "layout.c")], check=True)
    out = subprocess.run([str(work / "layout")], check=True, capture_output=True, text=True).stdout
    return {f"{kind} {name}": int(value) for kind, name, value in (l.split() for l in out.splitlines())}


@pytest.mark.parametrize("cname", sorted(abi.STRUCTS))
def test_struct_layout_matches_header(c_layout, cname):
    struct = abi.STRUCTS[cname]
    assert ctypes.sizeof(struct) == c_layout[f"size {cname}"]
    for field, _ in struct._fields_:
        assert getattr(struct, field).offset == c_layout[f"offset {cname}.{field}"], field


def test_constants_match_header(c_layout):
    for name, value in abi.CONSTANTS.items():
        assert value == c_layout[f"const {name}"], name


def test_mirror_covers_every_struct_and_enum_in_header():
    text = HEADER.read_text()
    structs = set(re.findall(r"^struct (\w+) \{", text, re.M))
    assert structs == set(abi.STRUCTS)
    enum_members = set(re.findall(r"^\s+((?:EVENT|OPEN|EXEC|TRACKED|KERNEL_ACTION|ENFORCE|FILE_OP|NET_CALL|INTERFACE|DNS)_\w+) =", text, re.M))
    assert enum_members <= set(abi.CONSTANTS)
    defines = set(re.findall(r"^#define (\w+) ", text, re.M)) - {"AGENT_SENSOR_EVENTS_H"}
    assert defines <= set(abi.CONSTANTS)
