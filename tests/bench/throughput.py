"""Throughput benchmark (`make bench`; not a test): how many events per second one core of the
daemon decodes and judges. A tracked agent opens N distinct files; its events are captured from
the ring buffer first, then fed to the pipeline (the same code the daemon runs) with the clock
running, so the figure is the judge's rate alone, on one core.

    sudo .venv/bin/python tests/bench/throughput.py [--opens N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sensor.alerts import AlertBus  # noqa: E402
from sensor.bpf_loader import SensorBPF  # noqa: E402
from sensor.export.spool import AlertSpool  # noqa: E402
from sensor.pipeline import Pipeline  # noqa: E402
from sensor.profiles import load_profile_file  # noqa: E402
from sensor.source import RingBufferSource  # noqa: E402
from tests.bench.report import write_section  # noqa: E402

PROFILE = 'name: bench-throughput\nfiles:\n  read: ["/**"]\n  write: ["/**"]\nexec: ["/**"]\non_violation: alert\n'


def capture(bpf: SensorBPF, pipeline: Pipeline, tree: Path, opens: int) -> list[bytes]:
    """The raw events of a tracked child opening `opens` distinct files (drained as they come)."""
    source = RingBufferSource(bpf)
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.read(go_r, 1)
        for i in range(opens):
            os.close(os.open(tree / f"f{i % 2000}", os.O_RDONLY))
        os._exit(0)
    pipeline.track(pid, "bench-throughput", pending_exec=False)
    raw: list[bytes] = []
    os.write(go_w, b"g")
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        raw += source.read(10)
    raw += source.read(100)
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opens", type=int, default=20000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="agent-sensor-bench-"))
    tree = work / "tree"
    tree.mkdir()
    for i in range(2000):
        (tree / f"f{i}").write_text("x")
    (work / "p.yaml").write_text(PROFILE)
    bpf = SensorBPF()
    bpf.load()
    try:
        pipeline = Pipeline([load_profile_file(work / "p.yaml")], bpf, AlertBus(AlertSpool(work / "alerts.db")))
        pipeline.install_kernel_policies()
        raw = capture(bpf, pipeline, tree, args.opens)
        _, dropped = bpf.counters()
        start, cpu = time.perf_counter(), time.process_time()
        for data in raw:
            pipeline.handle(data)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        bpf.clear_policy(pipeline.slots["bench-throughput"])
    finally:
        bpf.close()
    rate = len(raw) / cpu
    table = "\n".join([
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, kernel {os.uname().release}.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| events judged (a tracked agent's {args.opens} opens of 2000 distinct files, with their results) | "
        f"{len(raw)} | |",
        f"| decode + judge, one core (events/s of CPU time) | {rate:,.0f} | >= 200,000 "
        f"({'met' if rate >= 200_000 else f'missed, by {200_000 / rate:.1f}x'}) |",
        f"| wall time for them (s) | {wall:.2f} | |",
        f"| ring-buffer losses while capturing | {sum(dropped.values())} | 0 |",
        "",
        "Reproduce: `make bench` (root)."])
    print(table)
    write_section(ROOT / "docs" / "BENCHMARKS.md", "throughput", table)


if __name__ == "__main__":
    main()
