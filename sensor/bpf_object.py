"""BPF programs compiled ahead of time: what bcc built from bpf/*.c, kept so the daemon loads it
in a fraction of a second instead of compiling at every start, and without bcc's LLVM in its
memory.

An object is the maps (type, sizes, flags) and the programs (instructions, and which instruction
refers to which map). bcc writes the map fds of the compiling process into the instructions;
the object records each such instruction's map by name, and the loader writes its own fds there.

The cache is one file per build, named by a digest of everything that decides the instructions:
the source text, the compiler flags, the running kernel's release and build, and the kernel
headers bcc compiled against. Another kernel, other headers or changed sources find no file, and
the programs are compiled again (in a child process: sensor/bpf_compile.py). The programs go into
the kernel as root, so a cache file is used only if this user owns it and its directory and no
one else may write either; otherwise the daemon compiles and says why."""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from . import bpf_syscall

FORMAT = 1
DEFAULT_CACHE = Path("/var/cache/agent-sensor/bpf")
KEEP_BUILDS = 4  # per object: the current build and a few to switch back to
LD_IMM64 = 0x18
PSEUDO_MAP_FD = 1
_INSN = struct.Struct("<BBhi")


class ObjectError(RuntimeError):
    pass


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@dataclass(frozen=True)
class ProgramSpec:
    name: str
    insns: bytes
    relocs: tuple[tuple[int, str], ...]  # (instruction index, map name) of each map reference


@dataclass(frozen=True)
class BpfObject:
    license: str
    maps: tuple[MapSpec, ...]
    programs: dict[str, ProgramSpec]

    def to_bytes(self) -> bytes:
        return orjson.dumps({
            "format": FORMAT, "license": self.license,
            "maps": [m.__dict__ for m in self.maps],
            "programs": [{"name": p.name, "insns": base64.b64encode(p.insns).decode(), "relocs": p.relocs}
                         for p in self.programs.values()]})

    @classmethod
    def from_bytes(cls, data: bytes) -> BpfObject:
        raw = orjson.loads(data)
        if raw.get("format") != FORMAT:
            raise ObjectError(f"object format {raw.get('format')}, this sensor reads format {FORMAT}")
        programs = {p["name"]: ProgramSpec(p["name"], base64.b64decode(p["insns"]),
                                           tuple((i, m) for i, m in p["relocs"])) for p in raw["programs"]}
        return cls(raw["license"], tuple(MapSpec(**m) for m in raw["maps"]), programs)


def map_references(insns: bytes, fd_names: dict[int, str], program: str) -> tuple[tuple[int, str], ...]:
    """(index, map name) of every instruction loading a map fd. Any other pseudo load (map
    values, BTF ids) is refused: the loader could not relocate it."""
    relocs = []
    for index in range(len(insns) // 8):
        code, regs, _, imm = _INSN.unpack_from(insns, index * 8)
        if code != LD_IMM64 or regs >> 4 == 0:
            continue
        if regs >> 4 != PSEUDO_MAP_FD or imm not in fd_names:
            raise ObjectError(f"{program}: instruction {index} loads pseudo value kind {regs >> 4} "
                              f"({imm}); only map fds can be relocated")
        relocs.append((index, fd_names[imm]))
    return tuple(relocs)


def with_map_fds(program: ProgramSpec, fds: dict[str, int]) -> bytes:
    """The program's instructions with the loader's map fds written in."""
    insns = bytearray(program.insns)
    for index, name in program.relocs:
        code, regs, off, _ = _INSN.unpack_from(insns, index * 8)
        _INSN.pack_into(insns, index * 8, code, regs, off, fds[name])
    return bytes(insns)


def load_program(obj: BpfObject, fds: dict[str, int], name: str, prog_type: int, attach_type: int = 0) -> int:
    """Load one of obj's programs into the kernel, its maps being `fds` (sensor/bpf_maps.Maps):
    the program's fd. Raises ObjectError or bpf_syscall.BpfError (the verifier's words)."""
    spec = obj.programs.get(name)
    if spec is None:
        raise ObjectError(f"no program {name} in the compiled object")
    return bpf_syscall.prog_load(prog_type, with_map_fds(spec, fds), obj.license, name, attach_type)


def cache_key(text: str, cflags: list[str]) -> str:
    """The digest naming a build: sources, flags, kernel and the headers compiled against."""
    uname = os.uname()
    headers = os.path.realpath(f"/lib/modules/{uname.release}/build")
    digest = hashlib.sha256()
    for part in (str(FORMAT), text, "\0".join(cflags), uname.release, uname.version, platform.machine(), headers):
        digest.update(part.encode(errors="surrogateescape") + b"\0")
    return digest.hexdigest()[:32]


def untrusted(path: Path) -> str | None:
    """Why a cache file or directory must not be used (None: it may)."""
    st = path.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return (f"{path} must be owned by uid {os.geteuid()} and writable by no one else "
                f"(fix with chown {os.geteuid()} {path}; chmod go-w {path})")
    return None


def compile_in_child(text: str, cflags: list[str]) -> BpfObject:
    """bcc compiles in a child process, so its LLVM never enters the daemon's memory."""
    request = orjson.dumps({"text": text, "cflags": cflags})
    proc = subprocess.run([sys.executable, "-m", "sensor.bpf_compile"], input=request, capture_output=True,
                          cwd=Path(__file__).resolve().parent.parent, check=False)
    if proc.returncode != 0:
        raise ObjectError(proc.stderr.decode(errors="replace").strip()[-4000:] or f"exit status {proc.returncode}")
    return BpfObject.from_bytes(proc.stdout)


def obtain(name: str, text: str, cflags: list[str], cache_dir: Path | None) -> tuple[BpfObject, str]:
    """The compiled object `name` for these sources and flags, from the cache when it holds a
    trusted build; else compiled now and stored. Also a sentence saying which, for `status`."""
    if cache_dir is None:
        start = time.monotonic()
        return compile_in_child(text, cflags), f"compiled in {time.monotonic() - start:.1f} s (no cache)"
    path = cache_dir / f"{name}-{cache_key(text, cflags)}.json"
    why_not, note = None, ""
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        why_not = untrusted(cache_dir) or (untrusted(path) if path.exists() else None)
        if why_not is None and path.exists():
            return BpfObject.from_bytes(path.read_bytes()), f"loaded the compiled programs from {path}"
    except (ValueError, KeyError, TypeError, ObjectError) as exc:
        note = f" (the cached {path} was unreadable: {exc})"  # replaced below
    except OSError as exc:
        why_not = f"{cache_dir}: {exc.strerror}"
    start = time.monotonic()
    obj = compile_in_child(text, cflags)
    took = f"compiled in {time.monotonic() - start:.1f} s{note}"
    if why_not is not None:
        return obj, f"{took}, not cached: {why_not}"
    try:
        with tempfile.NamedTemporaryFile(dir=cache_dir, prefix=".tmp-", delete=False) as tmp:
            tmp.write(obj.to_bytes())
        os.replace(tmp.name, path)  # whole or not at all, also with two daemons starting at once
    except OSError as exc:
        return obj, f"{took}, not cached: writing {path} failed: {exc.strerror}"
    prune(cache_dir, name)
    return obj, f"{took} and cached at {path}"


def prune(cache_dir: Path, name: str, keep: int = KEEP_BUILDS) -> None:
    """Remove all but the `keep` newest builds of `name`: each kernel upgrade or sensor update
    leaves one behind, and a host may switch back (a rollback, two kernels in turn)."""
    builds = sorted(cache_dir.glob(f"{name}-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in builds[keep:]:
        old.unlink(missing_ok=True)
