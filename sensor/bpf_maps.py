"""The maps of a loaded object (sensor/bpf_object.py), created here and read and written as
dicts of ctypes keys and values. The C side declares each map (bpf/maps.h and the program
files); user space names the ctypes mirror (sensor/abi.py) of the maps it touches, and a
mirror whose size differs from the compiled map's stops the start, naming both."""

from __future__ import annotations

import ctypes
import mmap
import os

from . import bpf_syscall
from .bpf_object import MapSpec

ARRAY, PROG_ARRAY, PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH, RINGBUF = 2, 3, 5, 6, 10, 27
PER_CPU = {PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH}
ARRAYS = {ARRAY, PROG_ARRAY, PERCPU_ARRAY}  # fixed slots: cleared by zeroing, not deleting
F_MMAPABLE = 1 << 10


def possible_cpus() -> int:
    """How many values a per-CPU map holds per key (kernel: num_possible_cpus)."""
    text = open("/sys/devices/system/cpu/possible").read().strip()
    return sum(int(hi) - int(lo) + 1 if "-" in part else 1
               for part in text.split(",") for lo, _, hi in [part.partition("-")])


class BpfMap:
    """One map by fd. Per-CPU maps read as a ctypes array of one value per possible CPU."""

    def __init__(self, fd: int, spec: MapSpec, key_type, value_type):
        self.map_fd = fd
        self.name = spec.name
        self.max_entries = spec.max_entries
        self._type = spec.type
        self.Key = key_type
        self.Leaf = value_type
        if spec.type in PER_CPU:
            if ctypes.sizeof(value_type) % 8:
                raise TypeError(f"map {spec.name}: per-CPU values of {ctypes.sizeof(value_type)} bytes are "
                                "padded to 8 by the kernel; read them as 8-byte values")
            self._value = value_type * possible_cpus()
        else:
            self._value = value_type

    def _key(self, key):
        if isinstance(key, self.Key):
            return key
        if isinstance(key, (int, ctypes._SimpleCData)):
            return self.Key(getattr(key, "value", key))
        return self.Key.from_buffer_copy(bytes(key))  # a struct of the same layout

    def get(self, key, default=None):
        value = self._value()
        return value if bpf_syscall.map_lookup(self.map_fd, self._key(key), value) else default

    def __getitem__(self, key):
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value) -> None:
        if ctypes.sizeof(value) != ctypes.sizeof(self._value):
            raise TypeError(f"map {self.name}: a {ctypes.sizeof(value)}-byte value where "
                            f"{ctypes.sizeof(self._value)} bytes go")
        bpf_syscall.map_update(self.map_fd, self._key(key), value)

    def __delitem__(self, key) -> None:
        if not bpf_syscall.map_delete(self.map_fd, self._key(key)):
            raise KeyError(key)

    def keys(self) -> list:
        """Every key now in the map, read before the caller deletes any."""
        out, key = [], None
        while True:
            following = self.Key()
            if not bpf_syscall.map_next_key(self.map_fd, key, following):
                return out
            out.append(following)
            key = following

    def items(self) -> list:
        """(key, value) of every key still present when its value is read."""
        return [(key, value) for key in self.keys() if (value := self.get(key)) is not None]

    def clear(self) -> None:
        for key in self.keys():
            if self._type in ARRAYS:
                self[key] = self._value()
            else:
                bpf_syscall.map_delete(self.map_fd, key)


class Maps:
    """Every map of an object, created in the kernel; typed access to those user space declares
    in `types` (name -> (key ctype, value ctype))."""

    def __init__(self, specs: tuple[MapSpec, ...], types: dict[str, tuple]):
        self.fds: dict[str, int] = {}
        self._typed: dict[bytes, BpfMap] = {}
        self._specs = {spec.name: spec for spec in specs}
        self._mappings: list[mmap.mmap] = []
        try:
            for spec in specs:
                self.fds[spec.name] = bpf_syscall.map_create(spec.type, spec.key_size, spec.value_size,
                                                             spec.max_entries, spec.flags, spec.name)
            for name, (key_type, value_type) in types.items():
                spec = self._specs.get(name)
                if spec is None:
                    raise TypeError(f"no map {name} in the compiled programs")
                sizes = (ctypes.sizeof(key_type), ctypes.sizeof(value_type))
                if spec.type != RINGBUF and sizes != (spec.key_size, spec.value_size):
                    raise TypeError(f"map {name}: the C side has {spec.key_size}-byte keys and {spec.value_size}-"
                                    f"byte values, user space's mirror {sizes[0]} and {sizes[1]} (sensor/abi.py)")
                self._typed[name.encode()] = BpfMap(self.fds[name], spec, key_type, value_type)
        except Exception:
            self.close()
            raise

    def __getitem__(self, name: bytes) -> BpfMap:
        try:
            return self._typed[name]
        except KeyError:
            raise KeyError(f"map {name.decode()} is not declared to user space "
                           "(sensor/bpf_loader.py MAP_TYPES)") from None

    def shared(self, name: str) -> mmap.mmap:
        """An array map created with BPF_F_MMAPABLE, mapped writable into this process: its
        values in key order, as bytes the kernel reads and writes too."""
        spec = self._specs[name]
        if spec.type != ARRAY or not spec.flags & F_MMAPABLE:
            raise TypeError(f"map {name} is not an array created with BPF_F_MMAPABLE")
        mapping = mmap.mmap(self.fds[name], spec.max_entries * spec.value_size, mmap.MAP_SHARED,
                            mmap.PROT_READ | mmap.PROT_WRITE)
        self._mappings.append(mapping)
        return mapping

    def close(self) -> None:
        for mapping in self._mappings:
            mapping.close()
        self._mappings.clear()
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        self._typed.clear()
