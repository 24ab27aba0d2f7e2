"""A stand-in AI agent for the end-to-end tests, run by /usr/bin/python3 under the sensor.

    agent_actions.py WORKSPACE ALLOWED_PORT ACTION [ACTION...]

Each ACTION is done in order; then the agent prints "done" and sleeps, so a test can tell
"killed" from "finished". Actions:
  allowed          read a workspace file, write under out/, connect to the allowed port, exec true
  secret           read /etc/shadow by its absolute path
  write-outside    open WORKSPACE/forbidden.txt for writing (outside files.write)
  connect-denied   connect to 127.0.0.1 on a port the profile does not allow
  exec-denied      run /usr/bin/sleep (not in the profile's exec list)
  exec-forbidden   run /usr/bin/id (in the profile's exec_deny list)
  io-uring         set up an io_uring (file and network I/O the sensor's syscalls do not see)
  fork-secret      fork a child that reads /etc/shadow; print "child PID"; wait for it
  hold-connection  connect to the allowed port and keep the connection open
  tcp:HOST:PORT    connect to HOST:PORT and send "payload for HOST"
  udp:HOST:PORT    send the same as one UDP datagram (HOST may be a name: the system resolver asks)
  lookup:MODE:SERVER:NAME:PORT[:ADDRESS]
                   ask SERVER for NAME's A record the way resolvers other than glibc's do
                   (MODE sendto: unconnected sendto/recvfrom; write: connected write/read), then
                   connect to the answer's address (or straight to ADDRESS, the moment the answer
                   is in) and send "payload for NAME"
  chdir:DIR        change directory (relative paths that follow resolve against it)
  open:PATH        open PATH for reading, as given (relative, with .. or //, a link, /proc/...)
  open-many:N:PATH open (and close) PATH N times in a tight loop
  rename:A:B / link:A:B / symlink:TARGET:LINK / unlink:P / chmod:P / truncate:P
                   the file change, names as given (the attempt counts even if it fails)
  signal:PID:SIG   send signal SIG to PID (the sensor, say)
  cat:PATH         read PATH whole and print it
  write:PATH       append to PATH (one of the sensor's own files, say)
  sleep:SECONDS    wait (while the test changes something, a profile say)
  fork-storm       keep forking children (some spin without syscalls, some double-fork and
                   setsid), each writing its pid to WORKSPACE/out/storm, while the parent
                   writes outside files.write (a user-space kill lands mid-storm)
"""

import os
import socket
import struct
import subprocess
import sys
import time


def allowed(workspace: str, port: int) -> None:
    with open(os.path.join(workspace, "data.txt")) as f:
        f.read()
    os.makedirs(os.path.join(workspace, "out"), exist_ok=True)
    with open(os.path.join(workspace, "out", "result.txt"), "w") as f:
        f.write("ok\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    subprocess.run(["/usr/bin/true"], check=True)


def secret() -> None:
    with open("/etc/shadow") as f:
        f.read(1)


def connect_denied(denied_port: int) -> None:
    try:
        socket.create_connection(("127.0.0.1", denied_port), timeout=2).close()
    except OSError:
        pass


def fork_secret() -> None:
    pid = os.fork()
    if pid == 0:
        time.sleep(0.2)  # let the parent report the child's pid first
        secret()
        time.sleep(30)
        os._exit(0)
    print(f"child {pid}", flush=True)
    os.waitpid(pid, 0)


def fork_storm(workspace: str) -> None:
    os.makedirs(os.path.join(workspace, "out"), exist_ok=True)
    pids = open(os.path.join(workspace, "out", "storm"), "a")

    def child(spin: bool) -> None:
        if not spin and os.fork():
            os._exit(0)  # double fork: the survivor is orphaned ...
        if not spin:
            os.setsid()  # ... and in its own session
        pids.write(f"{os.getpid()}\n")
        pids.flush()
        while spin:
            pass  # no syscalls at all: only a kill from user space can stop it
        while True:
            time.sleep(0.001)

    for i in range(40):
        if os.fork() == 0:
            child(spin=i % 2 == 0)
        if i == 20:
            open(os.path.join(workspace, "forbidden.txt"), "w").close()


CHANGES = {
    "rename": os.rename, "link": os.link, "symlink": os.symlink, "unlink": os.unlink,
    "chmod": lambda path: os.chmod(path, 0o644), "truncate": lambda path: os.truncate(path, 0),
}


def lookup(mode: str, server: str, name: str, port: int, address: str | None) -> None:
    query = (struct.pack("!6H", 0x5e17, 0x0100, 1, 0, 0, 0)
             + b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
             + struct.pack("!2H", 1, 1))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        if mode == "sendto":
            s.sendto(query, (server, 53))
            answer, _ = s.recvfrom(512)
        else:
            s.connect((server, 53))
            os.write(s.fileno(), query)
            answer = os.read(s.fileno(), 512)
    if struct.unpack_from("!H", answer, 6)[0] == 0:
        return  # no address
    address = address or socket.inet_ntoa(answer[-4:])  # the one A record's data ends the message
    with socket.create_connection((address, port), timeout=5) as c:
        c.sendall(f"payload for {name}".encode())


def main() -> None:
    workspace, port = sys.argv[1], int(sys.argv[2])
    for action in sys.argv[3:]:
        if action == "allowed":
            allowed(workspace, port)
        elif action == "secret":
            secret()
        elif action == "write-outside":
            open(os.path.join(workspace, "forbidden.txt"), "w").close()
        elif action == "connect-denied":
            connect_denied(port + 1)
        elif action == "exec-denied":
            subprocess.run(["/usr/bin/sleep", "30"], stdout=subprocess.DEVNULL)
        elif action == "fork-secret":
            fork_secret()
        elif action == "io-uring":
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.syscall(425, 4, ctypes.create_string_buffer(120))  # io_uring_setup
            if fd >= 0:
                os.close(fd)
        elif action == "exec-forbidden":
            subprocess.run(["/usr/bin/id"], stdout=subprocess.DEVNULL)
        elif action.split(":", 1)[0] in ("tcp", "udp"):
            proto, host, dport = action.split(":")
            try:
                if proto == "tcp":
                    with socket.create_connection((host, int(dport)), timeout=5) as s:
                        s.sendall(f"payload for {host}".encode())
                else:
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                        s.sendto(f"payload for {host}".encode(), (host, int(dport)))
            except OSError:
                pass  # a refused call is what the sensor does
        elif action.startswith("lookup:"):
            _, mode, server, name, dport, *address = action.split(":")
            try:
                lookup(mode, server, name, int(dport), address[0] if address else None)
            except OSError:
                pass  # a refused call is what the sensor does
        elif action.startswith("chdir:"):
            os.chdir(action[len("chdir:"):])
        elif action.startswith("open:"):
            try:
                os.close(os.open(action[len("open:"):], os.O_RDONLY))
            except OSError:
                pass  # the attempt is what counts
        elif action.startswith("open-many:"):
            _, times, path = action.split(":", 2)
            for _ in range(int(times)):
                try:
                    os.close(os.open(path, os.O_RDONLY))
                except OSError:
                    pass
        elif action.split(":", 1)[0] in CHANGES:
            op, *names = action.split(":")
            try:
                CHANGES[op](*names)
            except OSError:
                pass
        elif action == "hold-connection":
            held = socket.create_connection(("127.0.0.1", port), timeout=5)  # noqa: F841 - kept open
        elif action == "fork-storm":
            fork_storm(workspace)
        elif action.startswith("cat:"):
            with open(action[len("cat:"):]) as f:
                print(f.read(), flush=True)
        elif action.startswith("write:"):
            try:
                with open(action[len("write:"):], "a") as f:
                    f.write("name: planted\n")
            except OSError:
                pass
        elif action.startswith("sleep:"):
            time.sleep(float(action[len("sleep:"):]))
        elif action.startswith("signal:"):
            _, pid, sig = action.split(":")
            os.kill(int(pid), int(sig))
        else:
            sys.exit(f"unknown action {action}")
        print(f"did {action}", flush=True)
    print("done", flush=True)
    time.sleep(3)


if __name__ == "__main__":
    main()
