"""sensor/thread_names.py: a thread's kernel name is its Python name, cut to what the kernel holds."""

from __future__ import annotations

import threading

from sensor.thread_names import COMM_MAX, name_os_thread


def kernel_name_of(python_name: str) -> str:
    seen = []

    def run():
        name_os_thread()
        with open("/proc/thread-self/comm") as f:
            seen.append(f.read().rstrip("\n"))

    thread = threading.Thread(target=run, name=python_name)
    thread.start()
    thread.join()
    return seen[0]


def test_a_thread_is_named_in_the_kernel_after_its_python_name():
    assert kernel_name_of("ring-buffer") == "ring-buffer"


def test_a_long_name_is_cut_to_what_the_kernel_holds():
    assert kernel_name_of("output jsonl:/var/log/alerts.jsonl") == "output jsonl:/var/log/alerts.jsonl"[:COMM_MAX]
