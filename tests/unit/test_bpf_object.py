"""sensor/bpf_object.py without a kernel: map references found in and written into instructions
as bcc lays them out, the object's round trip through its file, what names a build, and which
cache files are trusted."""

from __future__ import annotations

import os
import struct

import pytest

from sensor.bpf_object import (BpfObject, MapSpec, ObjectError, ProgramSpec, cache_key, map_references, obtain, prune,
                               untrusted, with_map_fds)

INSN = struct.Struct("<BBhi")


def ld_map_fd(dst: int, fd: int, kind: int = 1) -> bytes:
    """BPF_LD_IMM64 with a pseudo source (1: map fd): two instruction slots."""
    return INSN.pack(0x18, (kind << 4) | dst, 0, fd) + INSN.pack(0, 0, 0, 0)


MOV_R0_0 = INSN.pack(0xB7, 0, 0, 0)
EXIT = INSN.pack(0x95, 0, 0, 0)
PLAIN_LD_IMM64 = INSN.pack(0x18, 1, 0, 7) + INSN.pack(0, 0, 0, 0)  # a constant, not a map


def test_every_map_fd_load_is_named_by_its_map():
    insns = MOV_R0_0 + ld_map_fd(1, 5) + PLAIN_LD_IMM64 + ld_map_fd(2, 9) + EXIT
    assert map_references(insns, {5: "tracked", 9: "events"}, "prog") == ((1, "tracked"), (5, "events"))


@pytest.mark.parametrize("insns, why", [
    (ld_map_fd(1, 5, kind=2), "pseudo value kind 2"),  # a map value address: not relocatable here
    (ld_map_fd(1, 6), "(6)"),  # an fd that is none of the compiled maps
])
def test_a_load_the_loader_cannot_relocate_is_refused(insns, why):
    with pytest.raises(ObjectError, match=r"prog: instruction 0 .*" + why.replace("(", r"\(").replace(")", r"\)")):
        map_references(insns + EXIT, {5: "tracked"}, "prog")


def test_the_loaders_fds_replace_the_compilers():
    insns = ld_map_fd(1, 5) + ld_map_fd(2, 9) + EXIT
    program = ProgramSpec("p", insns, map_references(insns, {5: "a", 9: "b"}, "p"))
    out = with_map_fds(program, {"a": 41, "b": 42})
    assert [INSN.unpack_from(out, i * 8)[3] for i in (0, 2)] == [41, 42]
    unchanged = [(0, 4), (8, 20), (24, len(insns))]  # all but the two immediates
    assert [out[a:b] for a, b in unchanged] == [insns[a:b] for a, b in unchanged]


def test_an_object_survives_its_file():
    insns = ld_map_fd(1, 5) + EXIT
    obj = BpfObject("GPL", (MapSpec("a", 1, 4, 8, 16, 0), MapSpec("events", 27, 0, 0, 4096, 0)),
                    {"p": ProgramSpec("p", insns, ((0, "a"),))})
    assert BpfObject.from_bytes(obj.to_bytes()) == obj


def test_an_object_of_another_format_is_refused():
    with pytest.raises(ObjectError, match="format 99"):
        BpfObject.from_bytes(b'{"format": 99}')


def test_sources_and_flags_name_the_build():
    base = cache_key("int x;", ["-w"])
    assert base == cache_key("int x;", ["-w"])
    assert len({base, cache_key("int y;", ["-w"]), cache_key("int x;", ["-w", "-DHAVE_x"])}) == 3


def test_a_trusted_cached_build_is_loaded_without_compiling(tmp_path):
    obj = BpfObject("GPL", (MapSpec("a", 1, 4, 4, 1, 0),), {"p": ProgramSpec("p", EXIT, ())})
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    (cache / f"thing-{cache_key('src', [])}.json").write_bytes(obj.to_bytes())
    loaded, how = obtain("thing", "src", [], cache)
    assert loaded == obj and how.startswith("loaded the compiled programs from")


@pytest.mark.parametrize("mode", [0o620, 0o602])
def test_a_cache_file_others_may_write_is_not_trusted(tmp_path, mode):
    path = tmp_path / "f.json"
    path.write_bytes(b"{}")
    assert untrusted(path) is None
    os.chmod(path, mode)
    assert f"chmod go-w {path}" in untrusted(path)


def test_only_the_newest_builds_of_an_object_are_kept(tmp_path):
    for age, name in enumerate(["sensor-a", "sensor-b", "sensor-c", "isolate-a", "sensor-d"]):
        path = tmp_path / f"{name}.json"
        path.write_bytes(b"{}")
        os.utime(path, (1000 + age, 1000 + age))
    prune(tmp_path, "sensor", keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["isolate-a.json", "sensor-c.json", "sensor-d.json"]
