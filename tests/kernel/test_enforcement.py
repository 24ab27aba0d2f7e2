"""In-kernel enforcement on the real kernel: the kernel acts at the syscall, before its result
reaches the process, so nothing escapes. Each test proves it by what did NOT happen: bytes that
never reached a file or a listener."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from sensor import abi
from sensor.kernel_rules import path_prefixes
from tests.waiting import gone

from .conftest import KILLED, received_bytes


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(5)
    yield sock
    sock.close()


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "credentials"
    path.write_text("aws_secret_access_key = THIS-MUST-NOT-LEAK\n")
    return path


def kill_profile(secret, port: int, extra: str = "") -> str:
    return f"""\
name: enforced
secrets: ["{secret}", "{secret.parent}/vault/**"]
network:
  connect: ["127.0.0.1:{port}"]
on_violation: kill
{extra}"""


def test_secret_read_is_killed_before_a_byte_leaks(sensor_bpf, tracker, spawn, events, policy, secret,
                                                   tmp_path, listener):
    port = listener.getsockname()[1]
    slot = policy(kill_profile(secret, port))
    copy = tmp_path / "copy"

    def exfiltrate(ch):
        # Everything is ready before the secret is touched: only the kernel can stop the copy.
        out = os.open(copy, os.O_WRONLY | os.O_CREAT, 0o600)
        sock = socket.create_connection(("127.0.0.1", port))
        fd = os.open(secret, os.O_RDONLY)
        data = os.read(fd, 4096)
        os.write(out, data)
        sock.sendall(data)

    child = spawn(exfiltrate)
    tracker.track(child.pid, slot)
    child.go()
    assert child.wait() == KILLED
    assert copy.exists() and copy.stat().st_size == 0
    assert received_bytes(listener) == 0
    opens = events.wait_for([child.pid], lambda evs: any(getattr(e, "path", "") == str(secret) for e in evs))
    hit = [e for e in opens if getattr(e, "path", "") == str(secret)]
    assert hit and hit[0].hdr.kernel_action == abi.KernelAction.KILL
    assert hit[0].result is None  # sent at entry, as the kernel acted: not held until the open returns
    sensor_bpf.forget_doomed(child.pid)


def test_forbidden_connect_is_killed_before_data_is_sent(sensor_bpf, tracker, spawn, policy, secret, listener):
    allowed = socket.socket()
    allowed.bind(("127.0.0.1", 0))
    slot = policy(kill_profile(secret, allowed.getsockname()[1]))
    port = listener.getsockname()[1]  # not in the profile

    def send(ch):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"exfiltrated data")

    child = spawn(send)
    tracker.track(child.pid, slot)
    child.go()
    assert child.wait() == KILLED
    # The cgroup connect hook refused the connect: not even a handshake reached the listener.
    listener.settimeout(0.5)
    with pytest.raises(socket.timeout):
        listener.accept()
    allowed.close()
    sensor_bpf.forget_doomed(child.pid)


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_forbidden_datagram_never_leaves(sensor_bpf, tracker, spawn, policy, secret, events, family, host):
    """A kill at syscall entry would still let sendto() send its datagram; the cgroup sendmsg
    hook refuses the call itself (EPERM), so the receiver gets nothing."""
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    receiver.bind((host, 0))
    port = receiver.getsockname()[1]
    slot = policy(kill_profile(secret, 1))

    def exfiltrate(ch):
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.sendto(b"exfiltrated data", (host, port))

    child = spawn(exfiltrate)
    tracker.track(child.pid, slot)
    child.go()
    assert child.wait() == KILLED
    receiver.settimeout(0.5)
    with pytest.raises(socket.timeout):
        receiver.recv(100)
    receiver.close()
    evs = events.wait_for([child.pid], lambda evs: any(e.kind == "connect" for e in evs))
    sent = [e for e in evs if e.kind == "connect"][0]
    assert sent.call == abi.NetCall.SENDMSG and sent.refused and sent.port == port
    assert sent.hdr.kernel_action == abi.KernelAction.KILL
    sensor_bpf.forget_doomed(child.pid)


def test_untracked_processes_pass_the_egress_hooks(listener):
    """Only agents are judged: the test process itself connects and sends freely."""
    with socket.create_connection(listener.getsockname()) as s:
        s.sendall(b"hello")
    assert received_bytes(listener) == 5


def test_allowed_connect_and_reads_are_untouched(tracker, spawn, policy, secret, listener, tmp_path):
    port = listener.getsockname()[1]
    slot = policy(kill_profile(secret, port))
    other = tmp_path / "credentials.bak"  # exact secret entries match whole paths only
    other.write_text("not a secret\n")

    def work(ch):
        with open(other) as f:
            data = f.read().encode()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(data)

    child = spawn(work)
    tracker.track(child.pid, slot)
    child.go()
    assert child.wait() == 0
    assert received_bytes(listener) == len(b"not a secret\n")


@pytest.mark.parametrize("relative, killed", [("vault", True), ("vault/deep/key", True), ("vaultx/key", False)])
def test_directory_secrets_cover_the_directory_and_below(sensor_bpf, tracker, spawn, policy, secret, tmp_path,
                                                         relative, killed):
    slot = policy(kill_profile(secret, 1))
    target = tmp_path / relative

    def touch(ch):
        try:
            os.open(target, os.O_RDONLY)
        except FileNotFoundError:
            pass  # the attempt is what counts

    child = spawn(touch)
    tracker.track(child.pid, slot)
    child.go()
    assert child.wait() == (KILLED if killed else 0)
    sensor_bpf.forget_doomed(child.pid)


def test_ipv6_rules_never_allow_ipv4(sensor_bpf, tracker, spawn, policy, listener):
    port = listener.getsockname()[1]
    slot = policy(f'name: v6only\nnetwork:\n  connect: ["[::/0]:{port}"]\non_violation: kill\n')

    def send(ch):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"x")

    child = spawn(send)
    tracker.track(child.pid, slot)
    child.go()
    assert child.wait() == KILLED
    assert received_bytes(listener) == 0
    sensor_bpf.forget_doomed(child.pid)


def test_the_whole_agent_run_is_doomed_in_the_kernel(sensor_bpf, tracker, spawn, policy, secret, tmp_path):
    """After the kernel kills one member, every other member dies at its next traced syscall,
    even one that double-forked and called setsid, with no help from user space."""
    slot = policy(kill_profile(secret, 1))
    ready = tmp_path / "ready"

    def tree(ch):
        pid = os.fork()
        if pid == 0:
            if os.fork():
                os._exit(0)  # double fork: the grandchild is orphaned
            os.setsid()
            ch.send(str(os.getpid()).encode())
            while True:  # keeps making traced syscalls
                try:
                    os.close(os.open(ready, os.O_RDONLY))
                except FileNotFoundError:
                    pass
                time.sleep(0.01)
        os.waitpid(pid, 0)
        ch.wait_release()
        os.open(secret, os.O_RDONLY)

    child = spawn(tree)
    tracker.track(child.pid, slot)
    child.go()
    escapee = child.recv_int()
    assert sensor_bpf.tracked()[escapee].root_pid == child.pid  # inherited through both forks
    child.release()
    assert child.wait() == KILLED
    assert gone(escapee)
    sensor_bpf.forget_doomed(child.pid)


def test_alert_action_never_kills_in_the_kernel(tracker, spawn, policy, secret, events):
    slot = policy(kill_profile(secret, 1).replace("on_violation: kill", "on_violation: alert"))

    def read(ch):
        with open(secret) as f:
            f.read()

    child = spawn(read)
    tracker.track(child.pid, slot)
    child.go()
    assert child.wait() == 0
    evs = events.wait_for([child.pid], lambda evs: any(getattr(e, "path", "") == str(secret) for e in evs))
    assert all(e.hdr.kernel_action == abi.KernelAction.NONE for e in evs)


def test_without_send_signal_the_kernel_only_observes(tmp_path, secret):
    """A kernel without bpf_send_signal (< 5.3) still loads the programs; a secret hit is
    reported but not acted on (user space acts instead). Loaded separately, as that kernel
    would, with the same profile as the kill tests."""
    import subprocess
    import sys
    import textwrap
    script = tmp_path / "nosignal.py"
    script.write_text(textwrap.dedent(f"""
        import os, time
        from sensor.bpf_loader import SensorBPF
        from sensor.decode import decode
        from sensor.kernel_rules import compile_policy
        from sensor.profiles import load_profile_file
        sensor = SensorBPF(send_signal=False)
        sensor.load()
        got = []
        sensor.open_events(lambda data: got.append(decode(data)))
        open("{tmp_path}/p.yaml", "w").write('name: x\\nsecrets: ["{secret}"]\\non_violation: kill\\n')
        sensor.set_policy(1, compile_policy(load_profile_file("{tmp_path}/p.yaml", homes=["/root"])))
        pid = os.fork()
        if pid == 0:
            time.sleep(0.2)
            open("{secret}").read()
            os._exit(0)
        sensor.track(pid, 1, pid)
        _, status = os.waitpid(pid, 0)
        sensor.poll(200)
        hits = [e for e in got if getattr(e, "path", "") == "{secret}"]
        print(os.waitstatus_to_exitcode(status), len(hits), int(hits[0].hdr.kernel_action) if hits else -1)
        sensor.close()  # cgroup hooks outlive the process: detach them before leaving
        os._exit(0)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert out.stdout.split() == ["0", "1", "0"], out.stderr[-2000:]


def test_denied_program_never_runs(sensor_bpf, tracker, spawn, policy, tmp_path, events):
    """exec_deny is enforced at execve entry: the program does not run a single instruction."""
    marker = tmp_path / "ran"
    evil = tmp_path / "second-stage"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\n")
    evil.chmod(0o755)
    slot = policy(f'name: deny\nexec: ["/**"]\nexec_deny: ["{evil}"]\nactions:\n  exec: kill\n')

    def run(ch):
        os.execv(str(evil), [str(evil)])

    child = spawn(run)
    tracker.track(child.pid, slot)
    child.go()
    assert child.wait() == KILLED
    assert not marker.exists()
    evs = events.wait_for([child.pid], lambda evs: any(e.kind == "exec" for e in evs))
    denied = [e for e in evs if e.kind == "exec"]
    assert denied[0].filename == str(evil) and denied[0].flags & abi.ExecFlags.DENIED
    assert denied[0].hdr.kernel_action == abi.KernelAction.KILL
    sensor_bpf.forget_doomed(child.pid)


SYSCALLS = {"io_uring_setup": 425, "name_to_handle_at": 303, "process_vm_readv": 310, "ptrace": 101,
            "pidfd_getfd": 438, "bpf": 321, "tgkill": 234}  # x86_64


def _syscall(name: str, *args) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc.syscall(ctypes.c_long(SYSCALLS[name]), *args)


def _use_interface(name: str, other: int) -> None:
    """The smallest real use of each interface (the kernel acts at entry, success is not needed).
    other: a throwaway process to point ptrace and process_vm at (never the test process: the
    syscall still runs after a kill at entry, and an attach would stop it)."""
    import ctypes
    if name == "io_uring":
        params = ctypes.create_string_buffer(120)  # struct io_uring_params
        fd = _syscall("io_uring_setup", ctypes.c_uint(4), params)
        if fd >= 0:
            os.close(fd)
    elif name == "file_handles":
        handle = ctypes.create_string_buffer(128)
        ctypes.memmove(handle, (120).to_bytes(4, "little"), 4)  # struct file_handle.handle_bytes
        mount_id = ctypes.c_int()
        _syscall("name_to_handle_at", ctypes.c_int(-100), b"/etc/hostname", handle, ctypes.byref(mount_id),
                 ctypes.c_int(0))
    elif name == "process_vm":
        buf = ctypes.create_string_buffer(8)
        local = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), 8)
        _syscall("process_vm_readv", ctypes.c_int(other), local, ctypes.c_ulong(1), local,
                 ctypes.c_ulong(1), ctypes.c_ulong(0))
    elif name == "ptrace":
        _syscall("ptrace", ctypes.c_long(16), ctypes.c_long(other), None, None)  # PTRACE_ATTACH
    elif name == "bpf":
        attr = ctypes.create_string_buffer(128)
        _syscall("bpf", ctypes.c_int(13), attr, ctypes.c_uint(128))  # BPF_PROG_GET_NEXT_ID: the first step of a detach


@pytest.fixture
def bystander():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("interface", ["io_uring", "file_handles", "process_vm", "ptrace", "bpf"])
def test_bypassing_interfaces_are_denied_to_agents(sensor_bpf, tracker, spawn, policy, events, interface,
                                                   bystander):
    slot = policy("name: nobypass\non_violation: kill\n")

    def use(ch):
        _use_interface(interface, bystander)

    child = spawn(use)
    tracker.track(child.pid, slot)
    child.go()
    assert child.wait() == KILLED
    evs = events.wait_for([child.pid], lambda evs: any(e.kind == "interface" for e in evs))
    used = [e for e in evs if e.kind == "interface"][0]
    assert used.name == interface and not used.allowed
    assert used.hdr.kernel_action == abi.KernelAction.KILL
    sensor_bpf.forget_doomed(child.pid)


def test_a_listed_interface_is_allowed(tracker, spawn, policy, events):
    slot = policy("name: uring\ninterfaces: [io_uring]\non_violation: kill\n")

    def use(ch):
        _use_interface("io_uring", -1)

    child = spawn(use)
    tracker.track(child.pid, slot)
    child.go()
    assert child.wait() == 0
    evs = events.wait_for([child.pid], lambda evs: any(e.kind == "interface" for e in evs))
    assert [e for e in evs if e.kind == "interface"][0].allowed


def test_a_forbidden_listener_never_exists(sensor_bpf, tracker, spawn, policy, tmp_path):
    """The cgroup bind hook refuses the bind itself: nothing can connect to the backdoor."""
    allowed = socket.socket()
    allowed.bind(("127.0.0.1", 0))
    allowed_port = allowed.getsockname()[1]
    allowed.close()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    forbidden_port = probe.getsockname()[1]
    probe.close()
    slot = policy(f'name: listen\nnetwork:\n  listen: ["127.0.0.1:{allowed_port}"]\non_violation: kill\n')

    def backdoor(ch):
        ok = socket.socket()
        ok.bind(("127.0.0.1", allowed_port))  # allowed: must work
        ok.listen(1)
        ch.send(b"allowed bound")
        s = socket.socket()
        s.bind(("127.0.0.1", forbidden_port))
        s.listen(1)
        ch.send(b"forbidden bound")  # never reached
        ch.wait_release()

    child = spawn(backdoor, hold=True)
    tracker.track(child.pid, slot)
    child.go()
    assert child.recv() == b"allowed bound"
    assert child.wait() == KILLED
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", forbidden_port), timeout=2)
    sensor_bpf.forget_doomed(child.pid)


def test_bind_and_listen_are_reported(tracker, spawn, policy, events):
    slot = policy('name: listen-alert\nnetwork:\n  listen: ["127.0.0.1:*"]\n')

    def serve(ch):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)

    child = spawn(serve)
    tracker.track(child.pid, slot)
    child.go()
    assert child.wait() == 0
    evs = events.wait_for([child.pid], lambda evs: sum(e.kind == "connect" for e in evs) >= 2)
    calls = [e.call for e in evs if e.kind == "connect"]
    assert calls == [abi.NetCall.BIND, abi.NetCall.LISTEN]


@pytest.mark.parametrize("spelling, killed", [
    ("/proc/{other}/environ", True), ("/proc/{other}/task/{other}/mem", True), ("/proc/{other}/cmdline", True),
    ("/proc/{other}/status", False), ("/proc/{own}/environ", False), ("/proc/self/environ", False),
])
def test_another_process_memory_is_a_secret_in_the_kernel(tracker, spawn, policy, events, bystander,
                                                          spelling, killed):
    slot = policy("name: m\nfiles:\n  read: [\"/proc/**\"]\non_violation: kill\n")

    def read(ch):
        with open(spelling.format(other=bystander, own=os.getpid()), "rb") as f:
            ch.send(f.read(64) or b"-")

    child = spawn(read)
    tracker.track(child.pid, slot)
    child.go()
    if killed:
        assert child.wait() == KILLED
        path = spelling.format(other=bystander, own=child.pid)
        opens = events.wait_for([child.pid], lambda evs: any(getattr(e, "path", "") == path for e in evs))
        assert [e.hdr.kernel_action for e in opens if getattr(e, "path", "") == path] == [abi.KernelAction.KILL]
    else:
        assert child.recv() and child.wait() == 0


@pytest.fixture
def broker(tmp_path):
    """A vault CLI (a Python script) that prints a secret, or execs PROGRAM ARGS... after `exec`."""
    (tmp_path / "vault").mkdir()
    (tmp_path / "vault" / "token").write_text("TOKEN\n")
    cli = tmp_path / "vault-cli"
    cli.write_text("#!/usr/bin/python3\nimport os, sys\n"
                   "if sys.argv[1] == 'exec':\n    os.execv(sys.argv[2], sys.argv[2:])\n"
                   "print(open(sys.argv[1]).read().strip())\n")
    cli.chmod(0o755)
    return cli, tmp_path / "vault" / "token"


def broker_profile(cli, token) -> str:
    return f"""\
name: brokered
files:
  read: ["/**"]
brokers:
  "{cli}": ["{token.parent}/**"]
on_violation: kill
"""


@pytest.mark.parametrize("argv, ok", [
    (["{cli}", "{token}"], True),                                                # the broker reads it
    (["{cli}", "exec", "/usr/bin/cat", "{token}"], False),                       # its exec'd program may not
    (["/usr/bin/python3", "-c", "print(open('{token}').read())"], False),       # nor anyone else
])
def test_only_the_broker_program_may_open_its_secret_in_the_kernel(sensor_bpf, tracker, spawn, policy, events,
                                                                   broker, argv, ok):
    cli, token = broker
    slot = policy(broker_profile(cli, token))
    argv = [a.format(cli=cli, token=token) for a in argv]

    def run(ch):
        done = subprocess.run(argv, capture_output=True)
        ch.send(str(done.returncode).encode() + b" " + done.stdout)

    child = spawn(run)
    tracker.track(child.pid, slot)
    child.go()
    if ok:
        assert child.recv() == b"0 TOKEN\n" and child.wait() == 0
    else:
        assert child.wait() == KILLED  # the whole agent run is doomed in the kernel
        events.wait_for([], lambda _: False, timeout=0.5)  # the opener is a grandchild: take all events
        actions = [e.hdr.kernel_action for e in events.seen if getattr(e, "path", "") == str(token)]
        assert actions == [abi.KernelAction.KILL]
        sensor_bpf.forget_doomed(child.pid)



@pytest.fixture
def sensor_stand_in():
    """A process standing in for the sensor: the kernel is told it is the sensor, so an agent's
    signal to it is a real signal to a real process (never to the test process itself)."""
    proc = subprocess.Popen(["/usr/bin/sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _point_sensor_at(sensor_bpf, pid: int) -> None:
    sensor_bpf.bpf[b"sensor_self_map"][ctypes.c_int(0)] = abi.SensorSelf(tgid=pid, pgid=os.getpgid(pid), enforce=1)
    sensor_bpf.bpf[b"sensor_tasks"][ctypes.c_uint32(pid)] = ctypes.c_uint32(1)


@pytest.mark.parametrize("how", ["kill", "tgkill", "pidfd_open"])
def test_an_agent_aiming_at_the_sensor_is_killed_whatever_its_profile(sensor_bpf, tracker, spawn, policy, events,
                                                                      sensor_stand_in, how):
    slot = policy("name: lenient\nfiles:\n  read: [\"/**\"]\non_violation: alert\n")  # alert: yet killed
    target = sensor_stand_in.pid
    _point_sensor_at(sensor_bpf, target)
    try:
        def aim(ch):
            if how == "kill":
                os.kill(target, signal.SIGCONT)  # harmless to sleep, but aimed at the sensor
            elif how == "tgkill":
                _syscall("tgkill", ctypes.c_int(target), ctypes.c_int(target), ctypes.c_int(signal.SIGCONT))
            else:
                os.close(os.pidfd_open(target))

        child = spawn(aim)
        tracker.track(child.pid, slot)
        child.go()
        assert child.wait() == KILLED
        evs = events.wait_for([child.pid], lambda evs: any(e.kind == "interface" for e in evs))
        (used,) = [e for e in evs if e.kind == "interface"]
        assert used.interface == abi.Interface.SENSOR and used.target_pid == target
        assert used.signal == (0 if how == "pidfd_open" else signal.SIGCONT)
        assert used.hdr.kernel_action == abi.KernelAction.KILL
        sensor_bpf.forget_doomed(child.pid)
    finally:
        sensor_bpf.protect_self(enforce=True)  # the test process again


def test_signals_elsewhere_and_probes_are_not_tampering(sensor_bpf, tracker, spawn, policy, events, sensor_stand_in,
                                                       bystander):
    slot = policy("name: lenient\non_violation: kill\n")
    _point_sensor_at(sensor_bpf, sensor_stand_in.pid)
    try:
        def signal_others(ch):
            os.kill(bystander, signal.SIGCONT)
            os.kill(sensor_stand_in.pid, 0)  # does it exist? (no signal is sent)

        child = spawn(signal_others)
        tracker.track(child.pid, slot)
        child.go()
        assert child.wait() == 0
        assert not [e for e in events.wait_exit(child.pid) if e.kind == "interface"]
    finally:
        sensor_bpf.protect_self(enforce=True)


@pytest.mark.parametrize("change, killed", [
    (lambda d, out: open(d / "spool.db", "a").write("planted"), True),  # a write: never happens
    (lambda d, out: os.rename(out / "x", d / "x"), True),               # renamed into place
    (lambda d, out: os.unlink(d / "spool.db"), True),                   # a removal
    (lambda d, out: open(d / "spool.db").read(), False),                # reading is not changing
])
def test_an_agent_changing_the_sensors_files_is_killed_at_the_syscall(sensor_bpf, tracker, spawn, policy, tmp_path,
                                                                      change, killed):
    """Killed at the open, a writer never writes; a rename or unlink still happens before the
    kill lands (no LSM here: README, Self-protection), but the agent is gone after it."""
    own = tmp_path / "sensor"
    own.mkdir()
    (own / "spool.db").write_text("alerts")
    (tmp_path / "x").write_text("x")
    slot = policy("name: anything\nfiles:\n  read: [\"/**\"]\n  write: [\"/**\"]\non_violation: alert\n")
    sensor_bpf.protect_self(enforce=True)  # the test process plays the sensor
    sensor_bpf.protect_files(path_prefixes(f"{own}/**"))
    try:
        child = spawn(lambda ch: change(own, tmp_path))
        tracker.track(child.pid, slot)
        child.go()
        assert child.wait() == (KILLED if killed else 0)
        if killed:
            sensor_bpf.forget_doomed(child.pid)
        if (own / "spool.db").exists():
            assert (own / "spool.db").read_text() == "alerts"
    finally:
        sensor_bpf.protect_files(())
