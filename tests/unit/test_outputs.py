"""Alert outputs (JSON lines with rotation, syslog RFC 5424, stdout) and the OCSF mapping, on
alerts built here; the daemon's use of them is in tests/e2e/test_outputs.py."""

from __future__ import annotations

import socket

import orjson
import pytest

from sensor._proto.agent_sensor.v1 import sensor_pb2 as pb
from sensor.export.ocsf import to_ocsf
from sensor.export.outputs import OutputError, parse_output


def alert(n: int = 1, kind=pb.ACTION_KIND_KILL) -> pb.Alert:
    a = pb.Alert(id=n, hostname="h", reason=f"opened secret /root/.aws/credentials #{n}",
                 agent=pb.Agent(name="crm", instance_id="crm/10.5", root_pid=10, profile_file="/p.yaml"),
                 rule=pb.Rule(kind=pb.RULE_KIND_SECRET_ACCESS, name="secrets", pattern="~/.aws/**"),
                 action=pb.Action(kind=kind, completed=True, result="killed", in_kernel=True),
                 process=pb.Process(pid=11, ppid=10, exe="/usr/bin/python3.11", cmdline=["python3", "a.py"],
                                    user="root", uid=0),
                 event=pb.Event(type="open", file=pb.FileAccess(path="creds", resolved_path="/root/.aws/credentials")))
    a.timing.event_time.FromNanoseconds(1_700_000_000_123_456_789)
    return a


def test_ocsf_detection_finding_carries_process_file_and_rule():
    f = to_ocsf(alert())
    assert (f["class_uid"], f["category_uid"], f["type_uid"]) == (2004, 2, 200401)
    assert f["time"] == 1_700_000_000_123 and f["message"] == "opened secret /root/.aws/credentials #1"
    assert (f["severity"], f["disposition"]) == ("High", "Blocked")
    assert f["finding_info"]["types"] == ["secret_access"] and f["finding_info"]["analytic"]["uid"] == "~/.aws/**"
    assert f["actor"]["process"]["pid"] == 11 and f["actor"]["process"]["parent_process"] == {"pid": 10}
    assert f["actor"]["process"]["file"]["path"] == "/usr/bin/python3.11"
    assert f["evidences"] == [{"file": {"path": "/root/.aws/credentials", "name": "credentials"}}]
    net = alert()
    net.event.CopyFrom(pb.Event(type="connect", network=pb.NetworkConnect(family="inet", address="10.0.0.9", port=443,
                                                                        dns_names=["evil.test"])))
    assert to_ocsf(net)["evidences"] == [{"dst_endpoint": {"ip": "10.0.0.9", "port": 443, "hostname": "evil.test"}}]


def test_jsonl_rotates_by_size_and_keeps_k_files(tmp_path):
    path = tmp_path / "out" / "alerts.jsonl"
    line = len(orjson.dumps(to_ocsf(alert()))) + 1
    out = parse_output(f"jsonl:{path},format=ocsf,max_mb={2.5 * line / 1024 / 1024},keep=2")
    for n in range(1, 8):
        out(alert(n))
    out.close()
    ids = [[orjson.loads(x)["metadata"]["uid"] for x in p.read_text().splitlines()]
           for p in (path.with_name("alerts.jsonl.2"), path.with_name("alerts.jsonl.1"), path)]
    assert ids == [["3", "4"], ["5", "6"], ["7"]]  # two lines a file, the oldest (1, 2) rotated away
    assert not path.with_name("alerts.jsonl.3").exists()
    assert path.stat().st_mode & 0o777 == 0o600


def test_syslog_udp_and_tcp_are_rfc5424_with_the_record_as_message():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    out = parse_output(f"syslog:udp://127.0.0.1:{udp.getsockname()[1]}")
    out(alert(kind=pb.ACTION_KIND_ALERT))
    message = udp.recv(65536)
    out.close()
    header, record = message.split(b" - ", 1)
    assert header.startswith(b"<132>1 2023-11-14T22:13:20.123456Z ") and b" agent-sensor " in header  # local0.warning
    assert orjson.loads(record)["reason"] == "opened secret /root/.aws/credentials #1"

    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(1)
    tcp.settimeout(5)
    out = parse_output(f"syslog:tcp://127.0.0.1:{tcp.getsockname()[1]},format=ocsf")
    out(alert())
    conn, _ = tcp.accept()
    conn.settimeout(5)
    data = b""
    while b" - {" not in data or not data.endswith(b"}"):
        data += conn.recv(65536)
    out.close()
    length, framed = data.split(b" ", 1)
    assert int(length) == len(framed) and framed.startswith(b"<131>1 ")  # octet counting; local0.err
    assert orjson.loads(framed.split(b" - ", 1)[1])["class_uid"] == 2004


@pytest.mark.parametrize("spec, message", [
    ("kafka:x", "an output is stdout"), ("stdout,format=xml", "format 'xml'"),
    ("jsonl:/tmp/x,max_mb=big", "max_mb and keep are numbers"), ("syslog:udp://nohost", "syslog:udp://HOST:PORT"),
    ("stdout,colour=1", "unknown option colour"),
])
def test_bad_output_specs_say_what_is_wrong(spec, message):
    with pytest.raises(OutputError, match=message):
        parse_output(spec).close()
