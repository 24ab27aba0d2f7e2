"""sensor/bpf_object.py with bcc and the kernel: programs compiled once (in a child process) and
then loaded from the cache; a cache others may write, or a damaged file, is not used; and a
program the verifier refuses is reported with the verifier's reason."""

from __future__ import annotations

import ctypes
import os

import pytest

from sensor import bpf_syscall
from sensor.bpf_maps import Maps
from sensor.bpf_object import BpfObject, ObjectError, load_program, obtain
from sensor.quarantine import BPF_SOURCE

CFLAGS = ["-w"]


@pytest.fixture(scope="module")
def isolate_text() -> str:
    return BPF_SOURCE.read_text()


def cached_files(cache):
    return sorted(p.name for p in cache.iterdir())


def test_a_build_is_compiled_once_then_loaded_from_the_cache(tmp_path, isolate_text):
    cache = tmp_path / "cache"
    first, how_first = obtain("isolate", isolate_text, CFLAGS, cache)
    assert how_first.startswith("compiled in") and "cached at" in how_first
    assert (cache.stat().st_mode & 0o777, len(cached_files(cache))) == (0o700, 1)
    again, how_again = obtain("isolate", isolate_text, CFLAGS, cache)
    assert how_again.startswith("loaded the compiled programs from") and again == first
    # The one map reference of as_isolate_sock is named, so any loader can give it its own fd.
    assert [name for _, name in first.programs["as_isolate_sock"].relocs] == ["isolated_sockets"]


def test_a_cache_directory_others_may_write_is_not_used(tmp_path, isolate_text):
    cache = tmp_path / "open"
    cache.mkdir()
    os.chmod(cache, 0o777)
    _, how = obtain("isolate", isolate_text, CFLAGS, cache)
    assert "not cached" in how and f"chmod go-w {cache}" in how
    assert cached_files(cache) == []


def test_a_damaged_cache_file_is_compiled_again_and_replaced(tmp_path, isolate_text):
    cache = tmp_path / "cache"
    good, _ = obtain("isolate", isolate_text, CFLAGS, cache)
    (path,) = cache.iterdir()
    path.write_bytes(b"{not json")
    again, how = obtain("isolate", isolate_text, CFLAGS, cache)
    assert "unreadable" in how and again == good
    assert BpfObject.from_bytes(path.read_bytes()) == good


def test_loaded_programs_use_the_loaders_maps(tmp_path, isolate_text):
    """The relocated program runs against this process's map: a socket cookie put in the map is
    what as_isolate_sock looks up (shown by the verifier accepting the fd as that map)."""
    obj, _ = obtain("isolate", isolate_text, CFLAGS, tmp_path / "cache")
    maps = Maps(obj.maps, {"isolated_sockets": (ctypes.c_uint64, ctypes.c_uint64)})
    try:
        fd = load_program(obj, maps.fds, "as_isolate_sock", bpf_syscall.PROG_TYPE_CGROUP_SKB)
        os.close(fd)
        table = maps[b"isolated_sockets"]
        table[7] = ctypes.c_uint64(99)
        assert [(k.value, v.value) for k, v in table.items()] == [(7, 99)]
    finally:
        maps.close()


def test_a_program_the_verifier_refuses_is_reported_with_its_reason(tmp_path):
    text = "int reads_anywhere(void *ctx) { return *(int *)(long)bpf_get_prandom_u32(); }\n"
    obj, _ = obtain("refused", text, CFLAGS, tmp_path / "cache")
    with pytest.raises(bpf_syscall.BpfError) as refused:
        load_program(obj, {}, "reads_anywhere", bpf_syscall.PROG_TYPE_TRACEPOINT)
    message = str(refused.value)
    assert "the kernel refused program reads_anywhere" in message
    assert "invalid mem access 'scalar'" in message  # the verifier's own words


def test_a_compile_error_names_the_file_and_line(tmp_path):
    """bcc's message from the compiling child reaches the caller: file, line and what is wrong."""
    text = '#line 1 "broken.c"\nint on_nothing(void *ctx)\n{\n\treturn undeclared_name;\n}\n'
    with pytest.raises(ObjectError, match=r"broken\.c:3:\d+: error: use of undeclared identifier 'undeclared_name'"):
        obtain("broken", text, CFLAGS, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # nothing cached
