"""Throughput benchmark (`make bench`; not a test).

No open is a repeat the kernel would count instead of sending (sensor/repeats.py: a second
open of a name within a second): the judge alone sees distinct files, and a paced agent comes
back to a file only every REVISIT_S seconds. Each open is decoded, judged and delivered.

1. The judge alone: a tracked agent opens N distinct files and waits; its events are captured
   from the ring buffer first, then fed to the pipeline (the daemon's own code) with the clock
   running, JUDGE_RUNS times, each time by a fresh pipeline tracking the agent anew: the rate
   one core decodes and judges (median and spread of the runs).
2. Delivery: a real daemon, one StreamEvents consumer, and a tracked agent (a C loop,
   `workload paced`: a Python one took most of a CPU at these rates) opening files at a fixed
   rate for some seconds, rate after rate: what reaches the consumer, and what is lost
   (ring buffer, backlog, the consumer's queue) at each rate.

    sudo .venv/bin/python tests/bench/throughput.py [--opens N] [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sensor.alerts import AlertBus  # noqa: E402
from sensor.correlate import decide_open  # noqa: E402
from sensor.decode import OpenEvent, decode  # noqa: E402
from sensor.export.event_feed import EventFeed  # noqa: E402
from sensor.repeats import RepeatCache  # noqa: E402
from sensor.bpf_loader import SensorBPF  # noqa: E402
from sensor.export.spool import AlertSpool  # noqa: E402
from sensor.pipeline import Pipeline  # noqa: E402
from sensor.profiles import load_profile_file  # noqa: E402
from sensor.source import RingBufferSource  # noqa: E402
from sensor.client import SensorClient  # noqa: E402
from sensor.scenarios.own_daemon import CLI, start_daemon, stop_daemon  # noqa: E402
from tests.bench.overhead import build_workload  # noqa: E402
from tests.bench.report import daemon_cpu, write_section  # noqa: E402

REVISIT_S = 3  # > repeats.WINDOW_NS: every open is a first sighting
JUDGE_RUNS = 15  # single runs of the judge spread by a third on this shared VM
SUSTAIN_TRIES = 3  # rates tried for the 60 s run, highest first
# Everything allowed, and the default secrets catalogue (`secrets: [default]`): each open is
# checked against all of them, in every home of the host, as a careful profile's opens are.
PROFILE = ('name: bench-throughput\nfiles:\n  read: ["/**"]\n  write: ["/**"]\nsecrets: [default]\nexec: ["/**"]\n'
           'on_violation: alert\n')


@contextmanager
def paused_agent(bpf: SensorBPF, pipeline: Pipeline, tree: Path, opens: int) -> Iterator[tuple[int, list[bytes]]]:
    """A child tracked by pipeline that opens `opens` distinct files and then waits, alive, so
    other pipelines can track it again and judge its events: (its pid, its raw events, drained
    as they came). It exits when the block ends."""
    source = RingBufferSource(bpf)
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(go_w)
        os.read(go_r, 1)
        for i in range(opens):
            os.close(os.open(tree / f"f{i}", os.O_RDONLY))
        os.close(done_w)  # done: the parent's read returns
        os.read(go_r, 1)  # until the parent closes its end
        os._exit(0)
    os.close(done_w)
    try:
        pipeline.track(pid, "bench-throughput", pending_exec=False)
        os.write(go_w, b"g")
        os.read(done_r, 1)
        raw: list[bytes] = []
        while batch := source.read(100):
            raw += batch
        yield pid, raw
    finally:
        os.close(go_w)
        os.waitpid(pid, 0)
        os.close(go_r)
        os.close(done_r)


def delivery(work: Path, tree: Path, runs: list[tuple[int, float]]) -> list[tuple]:
    """One run per (rate, seconds), rate in opens/s (one kernel event each): (rate,
    seconds, opens made, opens the consumer got, lost in the sensor, lost by the consumer,
    repeats the kernel counted (0 unless the agent opened a name twice within a second), the
    daemon's CPU over the run and its tail as a share of one core: all, and by thread, see
    report.daemon_cpu)."""
    import threading
    (work / "profiles").mkdir()
    (work / "profiles" / "p.yaml").write_text(PROFILE)
    agent = build_workload(work)  # `workload paced`: the agent's own cost kept small (it shares the CPUs)
    proc, server, log = start_daemon(work, work / "profiles")
    rows = []
    try:
        for rate, seconds in runs:
            got, dropped, streams = [0], [0], []

            def consume():
                with SensorClient(server) as client:
                    streams.append(client.events())
                    try:
                        for record in streams[0]:
                            got[0] += record.repeats or 1
                            dropped[0] = record.dropped
                    except Exception:  # noqa: BLE001 - cancelled at the end of the run
                        pass

            thread = threading.Thread(target=consume, daemon=True)
            thread.start()
            time.sleep(0.5)
            with SensorClient(server) as client:
                before = client.status()
            cpu0, wall0 = daemon_cpu(proc.pid), time.monotonic()
            opens = int(subprocess.run([CLI, "exec", "--server", server, "--profile", "bench-throughput", "--",
                                        str(agent), "paced", str(rate), str(seconds), str(tree),
                                        str(rate * REVISIT_S)],
                                       capture_output=True, text=True, check=True).stdout)
            time.sleep(2)  # the tail still in flight
            with SensorClient(server) as client:
                after = client.status()
            cpu1, wall = daemon_cpu(proc.pid), time.monotonic() - wall0
            cpu = {role: (cpu1[role] - cpu0[role]) / wall for role in cpu1}
            streams[0].cancel()
            thread.join(10)
            lost = (sum(after.ring_buffer_drops.values()) - sum(before.ring_buffer_drops.values())
                    + after.backlog_drops - before.backlog_drops)
            rows.append((rate, seconds, opens, got[0], lost, dropped[0], after.repeats_counted - before.repeats_counted,
                         cpu))
            if lost:
                print("lost by type:", {k: v - before.ring_buffer_drops.get(k, 0) for k, v in after.ring_buffer_drops.items()
                                        if v != before.ring_buffer_drops.get(k, 0)},
                      "backlog:", after.backlog_drops - before.backlog_drops, flush=True)
            print(row(*rows[-1]), flush=True)
    finally:
        stop_daemon(proc, log)
    return rows


def plot(rows: list[tuple], path: Path) -> None:
    """Offered against delivered opens/s: where the judge stops keeping up reads at a glance."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    rates = [r[0] for r in rows]
    fig, ax = pyplot.subplots(figsize=(6, 4), dpi=100)
    ax.plot(rates, rates, linestyle=":", color="grey", label="every open delivered")
    ax.plot(rates, [r[3] / r[1] for r in rows], marker="o", label="delivered to one consumer")
    ax.set_xlabel("agent's opens/s (one event each)")
    ax.set_ylabel("opens/s delivered (no loss at any rate)")
    ax.set_title(f"agent-sensor delivery, {os.cpu_count()} cores, kernel {os.uname().release}", fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


PART_RUNS = 9  # each part's cost: the fastest of these passes over the opens


def judge_parts(pipeline: Pipeline, raw: list[bytes]) -> list[tuple[str, float]]:
    """(part, ns per open): each part of judging an open, the daemon's own function called alone
    on the same opens, fastest of PART_RUNS passes; pipeline has judged them before (its process
    table warm, as for a running agent). A profiler's view without a profiler's distortion:
    cProfile charges each Python call its own overhead and does not see C called through
    functools.partial (the glob walks, the statx)."""
    events = [decode(data) for data in raw]
    opens = [(data, e) for data, e in zip(raw, events) if isinstance(e, OpenEvent)]
    process = pipeline.table.get(opens[0][1].hdr.pid)
    agent, table = process.agent, pipeline.table
    targets = [table.resolve(e.hdr.pid, e.path, e.dirfd) for _, e in opens]
    secrets = pipeline._secret_files(agent, targets[0])  # the same for every one of these opens
    feed = EventFeed()
    feed.subscribe(set())

    def resolve(data, e, target):
        table.resolve(e.hdr.pid, e.path, e.dirfd, names_seen=(e.names_gen, e.hdr.ktime_ns))

    def bookkeeping(data, e, target):
        table.note_open(e, target, process)
        pipeline._remember_text(agent, e, target.canonical)

    parts = [
        ("decode (C)", lambda data, e, target: decode(data)),
        ("its process and agent run (`_agent_process`)", lambda data, e, target: pipeline._agent_process(e)),
        ("path resolution (`resolve`)", resolve),
        ("of which the C call that finds the directory canonical, makes the `statx` and builds the `Target` "
         "(`known_name`)",
         lambda data, e, target: table._canonical_dirs.target(e.path, e.names_gen, e.hdr.ktime_ns)),
        ("its fd and the run's recent events (`note_open`, `_remember_text`)", bookkeeping),
        ("the secrets' identities (`_secret_files`)", lambda data, e, target: pipeline._secret_files(agent, target)),
        ("the rules (`decide_open`: secrets, then `files.read`)",
         lambda data, e, target: decide_open(e, agent.profile, target, secrets, process.exe, pipeline.sensor_files)),
        ("first sightings for the kernel's repeat counting (`repeats.allowed`)",
         lambda data, e, target: repeats.allowed(e, target, agent)),
        ("publishing to one stream consumer (`EventFeed.publish`; not in the judge's rate)",
         lambda data, e, target: feed.publish("bench", "bench/1", e.hdr.pid, "open", target.canonical, False,
                                              e.hdr.ktime_ns, result=e.result)),
    ]
    costs = []
    for name, part in parts:
        best = float("inf")
        for _ in range(PART_RUNS):
            repeats = RepeatCache(pipeline.bpf)  # each pass's opens first sightings, as in the judge's runs
            start = time.perf_counter()
            for (data, e), target in zip(opens, targets):
                part(data, e, target)
            best = min(best, time.perf_counter() - start)
            for consumer in feed._consumers:
                consumer.take(1 << 30, 0)  # emptied, not kept
        costs.append((name, best / len(opens) * 1e9))
    return costs


def in_full(run: tuple) -> bool:
    """Every open reached the consumer by the end of the run's tail, and nothing was lost."""
    _, _, opens, got, lost, dropped, *_ = run
    return got >= opens and lost == 0 and dropped == 0


def row(rate: int, seconds: float, opens: int, got: int, lost: int, dropped: int, counted: int,
        cpu: dict[str, float]) -> str:
    return (f"| {rate:,} opens/s | {seconds:.0f} | {opens:,} | {got:,} | "
            f"{got / seconds:,.0f} | {lost:,} | {dropped:,} | {counted:,} | "
            f"{cpu['all']:.0%} ({cpu['judge']:.0%} / {cpu['reader']:.0%} / {cpu['API']:.0%}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opens", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=10.0, help="per rate of the sweep")
    parser.add_argument("--rates", type=int, nargs="+",
                        default=[10000, 20000, 40000, 60000, 80000, 90000, 100000, 110000, 120000],
                        help="opens/s of the sweep")
    parser.add_argument("--sustain", type=float, default=60.0,
                        help="seconds of the final run, at the highest rate the sweep delivered in full")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="agent-sensor-bench-"))
    tree = work / "tree"
    tree.mkdir()
    rates = args.rates
    for i in range(max(args.opens, max(rates) * REVISIT_S)):
        os.close(os.open(tree / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
    (work / "p.yaml").write_text(PROFILE)
    bpf = SensorBPF()
    bpf.load()
    try:
        def fresh_pipeline(name: str) -> Pipeline:
            pipeline = Pipeline([load_profile_file(work / "p.yaml")], bpf, AlertBus(AlertSpool(work / name)))
            pipeline.install_kernel_policies()
            return pipeline

        def tracking(name: str, agent: int) -> Pipeline:
            """A fresh pipeline (its caches empty) that tracks the agent from now on."""
            pipeline = fresh_pipeline(name)
            bpf.untrack(agent)
            pipeline.track(agent, "bench-throughput", pending_exec=False)
            return pipeline

        judged = []  # (events, CPU seconds, wall seconds) of each run
        with paused_agent(bpf, fresh_pipeline("capture.db"), tree, args.opens) as (agent, raw):
            for run in range(JUDGE_RUNS):
                pipeline = tracking(f"alerts-{run}.db", agent)
                start, cpu = time.perf_counter(), time.process_time()
                pipeline.handle(raw)
                judged.append((len(raw), time.process_time() - cpu, time.perf_counter() - start))
            # Where the time goes: each part of it alone, and the statx syscall in a C loop.
            parts = judge_parts(pipeline, raw)
            statx_ns = float(subprocess.run([str(build_workload(work)), "statx", str(tree), str(args.opens)],
                                            capture_output=True, text=True, check=True).stdout)
        _, dropped = bpf.counters()
        bpf.clear_policy(pipeline.slots["bench-throughput"])
    finally:
        bpf.close()
    rates_judged = sorted(events / cpu for events, cpu, _ in judged)
    rate = statistics.median(rates_judged)
    wall = statistics.median(w for _, _, w in judged)
    (work / "delivery").mkdir()
    rows = delivery(work / "delivery", tree, [(rate, args.seconds) for rate in rates])
    # 60 s at the highest rate delivered in full for 10 s, then a rate lower until one is
    # delivered in full for 60 s too: a backlog can grow too slowly to show in 10 s.
    sustained = []
    for offered in sorted((r[0] for r in rows if in_full(r)), reverse=True)[:SUSTAIN_TRIES]:
        (work / f"sustained-{offered}").mkdir()
        sustained += delivery(work / f"sustained-{offered}", tree, [(offered, args.sustain)])
        if in_full(sustained[-1]):
            break
    shutil.rmtree(work, ignore_errors=True)
    table = "\n".join([
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, kernel {os.uname().release}.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| events judged per run (a tracked agent's opens of {args.opens} distinct files, each one event with its "
        f"result; the same events judged in each of {JUDGE_RUNS} runs by a fresh pipeline) | "
        f"{judged[0][0]} | |",
        f"| decode + judge, one core (events/s of CPU time; median of {JUDGE_RUNS} runs, lowest-highest) | "
        f"{rate:,.0f} ({rates_judged[0]:,.0f}-{rates_judged[-1]:,.0f}) | >= 200,000 "
        f"({'met' if rate >= 200_000 else f'missed, by {200_000 / rate:.1f}x'}) |",
        f"| wall time for them (s, median) | {wall:.2f} | |",
        f"| ring-buffer losses while capturing | {sum(dropped.values())} | 0 |",
        "",
        f"Delivery to one consumer of `StreamEventBatches` (what `agent-sensor events` uses), {args.seconds:.0f} s "
        f"per rate, then {args.sustain:.0f} s at the highest rate delivered in full, and at the next lower ones "
        f"until one is delivered in full for {args.sustain:.0f} s too (at most {SUSTAIN_TRIES}); counted 2 s after "
        "the agent stopped (target: 100,000 events/s sustained with zero loss). An open is one kernel event (with its "
        "result) and one record to the consumer; every open is of a distinct file, made by a C loop "
        "(`workload paced`) tracked as the agent. Fewer records than "
        "opens means the judge is behind (its backlog), not that anything was lost:",
        "",
        "| agent's rate | seconds | opens made | opens the consumer got | opens/s delivered | lost in the sensor "
        "| lost by the consumer's queue | repeats counted in the kernel | daemon CPU, of one core: all (judge / "
        "ring-buffer reader / gRPC workers) |",
        "|---|---|---|---|---|---|---|---|---|",
        *(row(*r) for r in rows + sustained),
        "",
        "![delivered against offered opens/s](throughput.png)",
        "",
        f"Where the judge's time goes: each part of judging an open, the daemon's own function called alone on "
        f"the same {args.opens} opens after a pipeline judged them, fastest of {PART_RUNS} passes (ns per open; the "
        f"whole, from the median rate above: {1e9 / rate:,.0f} ns; the target's budget: 5,000 ns):",
        "",
        "| part | ns per open |",
        "|---|---|",
        *(f"| {name} | {ns:,.0f} |" for name, ns in parts),
        f"| the `statx` syscall alone, in a C loop over the same names (`workload statx`) | {statx_ns:,.0f} |",
        "",
        "Reproduce: `make bench` (root)."])
    print(table)
    write_section(ROOT / "docs" / "BENCHMARKS.md", "throughput", table)
    plot(rows, ROOT / "docs" / "throughput.png")


if __name__ == "__main__":
    main()
