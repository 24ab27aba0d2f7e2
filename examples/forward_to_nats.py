"""Forward one host's alerts into a NATS JetStream stream, nothing lost, nothing twice
(docs/FLEET.md). Run one per host, next to the daemon:

    python forward_to_nats.py --server unix:///run/agent-sensor/sensor.sock \\
        --nats nats://nats.example:4222 --stream AGENT_SENSOR

Each alert is published to `agent-sensor.alerts.HOSTNAME` as its JSON (the `alerts --json`
schema), with the message id HOSTNAME/ID: JetStream drops a repeat within its duplicate window.
On start the forwarder asks the stream for this host's last alert and resumes the daemon's
spool right after it (`since_id`), so a restart of either side loses nothing.
Needs `pip install nats-py` and the agent-sensor client (`pip install` of the checkout)."""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading

import nats
import orjson
from nats.js.errors import NotFoundError

from sensor.alerts import alert_to_dict
from sensor.client import SensorClient


async def last_forwarded_id(js, stream: str, subject: str) -> int:
    try:
        message = await js.get_last_msg(stream, subject)
    except NotFoundError:
        return 0
    return int(orjson.loads(message.data)["id"])


def stream_alerts(server: str, since_id: int, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
    """In a thread: the daemon's alerts after since_id, then every new one, onto the queue."""
    try:
        with SensorClient(server) as client:
            for alert in client.alerts(follow=True, since_id=since_id):
                asyncio.run_coroutine_threadsafe(queue.put(alert), loop).result()
    finally:
        asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()


async def forward(server: str, nats_url: str, stream: str, host: str) -> None:
    connection = await nats.connect(nats_url)
    js = connection.jetstream()
    subject = f"agent-sensor.alerts.{host}"
    await js.add_stream(name=stream, subjects=["agent-sensor.alerts.>"])  # idempotent
    since = await last_forwarded_id(js, stream, subject)
    print(f"forwarding alerts after #{since} to {stream}/{subject}", flush=True)
    queue: asyncio.Queue = asyncio.Queue(maxsize=1000)
    threading.Thread(target=stream_alerts, args=(server, since, asyncio.get_running_loop(), queue),
                     daemon=True).start()
    while (alert := await queue.get()) is not None:
        await js.publish(subject, orjson.dumps(alert_to_dict(alert)), headers={"Nats-Msg-Id": f"{host}/{alert.id}"})
    await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="unix:///run/agent-sensor/sensor.sock", help="the daemon's API")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--stream", default="AGENT_SENSOR")
    parser.add_argument("--host", default=socket.gethostname(), help="this host's name in the subject")
    args = parser.parse_args()
    asyncio.run(forward(args.server, args.nats, args.stream, args.host))


if __name__ == "__main__":
    main()
