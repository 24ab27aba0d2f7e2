"""Compile BPF C with bcc and print the object (sensor/bpf_object.py) on stdout.

Run by the daemon as a child process (`python -m sensor.bpf_compile`, the request as JSON on
stdin: {"text": ..., "cflags": [...]}), so bcc's compiler lives and dies here. bcc creates the
maps while compiling; their fds in this process are what the instructions refer to, and the
object names each by the map it belongs to. Compile errors go to stderr, exit status 1."""

from __future__ import annotations

import ctypes
import sys

import orjson

from .bpf_object import BpfObject, MapSpec, ObjectError, ProgramSpec, map_references
from .probes import ensure_tracefs


def _bind(lib) -> None:
    """Signatures of the libbcc calls bcc's Python module does not declare."""
    for name, restype, argtypes in (
            ("bpf_num_tables", ctypes.c_size_t, [ctypes.c_void_p]),
            ("bpf_table_name", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_size_t]),
            ("bpf_table_fd_id", ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t]),
            ("bpf_table_key_size_id", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_size_t]),
            ("bpf_table_leaf_size_id", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_size_t])):
        getattr(lib, name).restype = restype
        getattr(lib, name).argtypes = argtypes


def compile_object(text: str, cflags: list[str]) -> BpfObject:
    ensure_tracefs()  # bcc reads tracepoint formats from it and picks its path at import
    from bcc import BPF
    from bcc.libbcc import lib

    _bind(lib)
    bpf = BPF(text=text.encode(), cflags=cflags)
    module = bpf.module
    maps, fd_names = [], {}
    for i in range(lib.bpf_num_tables(module)):
        name = lib.bpf_table_name(module, i).decode()
        fd_names[lib.bpf_table_fd_id(module, i)] = name
        maps.append(MapSpec(name=name, type=lib.bpf_table_type_id(module, i),
                            key_size=lib.bpf_table_key_size_id(module, i),
                            value_size=lib.bpf_table_leaf_size_id(module, i),
                            max_entries=lib.bpf_table_max_entries_id(module, i),
                            flags=lib.bpf_table_flags_id(module, i)))
    programs = {}
    for i in range(lib.bpf_num_functions(module)):
        name = lib.bpf_function_name(module, i).decode()
        insns = bpf.dump_func(name.encode())
        programs[name] = ProgramSpec(name, insns, map_references(insns, fd_names, name))
    return BpfObject(lib.bpf_module_license(module).decode(), tuple(maps), programs)


def main() -> int:
    request = orjson.loads(sys.stdin.buffer.read())
    try:
        obj = compile_object(request["text"], request["cflags"])
    except ObjectError as exc:
        print(exc, file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception on compile errors
        print(f"bcc: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(obj.to_bytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
