"""An alert as an OCSF 1.1 Detection Finding (class 2004, category Findings), for SIEMs that speak
OCSF. The mapping is documented in the README ("Outputs and formats")."""

from __future__ import annotations

from .._proto.agent_sensor.v1 import sensor_pb2 as pb
from .. import __version__
from ..kinds import rule_name

OCSF_VERSION = "1.1.0"
CLASS_UID = 2004       # Detection Finding
CATEGORY_UID = 2       # Findings
ACTIVITY_CREATE = 1
SEVERITY = {pb.ACTION_KIND_ALERT: (3, "Medium"), pb.ACTION_KIND_KILL: (4, "High"),
            pb.ACTION_KIND_QUARANTINE: (4, "High")}
DISPOSITION = {pb.ACTION_KIND_ALERT: (15, "Detected"), pb.ACTION_KIND_KILL: (2, "Blocked"),
               pb.ACTION_KIND_QUARANTINE: (3, "Quarantined")}


def _ms(ts) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def _process(p: pb.Process) -> dict:
    out = {"pid": p.pid, "name": p.exe.rsplit("/", 1)[-1], "cmd_line": " ".join(p.cmdline),
           "file": {"path": p.exe, "name": p.exe.rsplit("/", 1)[-1]},
           "user": {"name": p.user, "uid": str(p.uid)}}
    if p.ppid:
        out["parent_process"] = {"pid": p.ppid}
    return out


def _evidence(event: pb.Event) -> dict:
    detail = event.WhichOneof("detail")
    if detail == "file":
        path = event.file.resolved_path or event.file.path
        return {"file": {"path": path, "name": path.rsplit("/", 1)[-1]}}
    if detail == "network":
        n = event.network
        if n.family == "unix":
            return {"dst_endpoint": {"name": n.address}}
        endpoint = {"ip": n.address, "port": n.port}
        if n.dns_names:
            endpoint["hostname"] = n.dns_names[-1]
        return {"dst_endpoint": endpoint}
    if detail == "exec":
        return {"process": {"file": {"path": event.exec.resolved_path or event.exec.filename},
                            "cmd_line": " ".join(event.exec.argv)}}
    return {}


def to_ocsf(alert: pb.Alert) -> dict:
    rule = rule_name(alert.rule.kind)
    severity_id, severity = SEVERITY.get(alert.action.kind, (3, "Medium"))
    disposition_id, disposition = DISPOSITION.get(alert.action.kind, (15, "Detected"))
    evidence = _evidence(alert.event)
    return {
        "class_uid": CLASS_UID, "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID, "category_name": "Findings",
        "activity_id": ACTIVITY_CREATE, "activity_name": "Create",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
        "severity_id": severity_id, "severity": severity,
        "status_id": 1, "status": "New",
        "time": _ms(alert.timing.event_time),
        "message": alert.reason,
        "disposition_id": disposition_id, "disposition": disposition,
        "metadata": {"version": OCSF_VERSION, "uid": str(alert.id),
                     "product": {"name": "agent-sensor", "vendor_name": "agent-sensor", "version": __version__}},
        "finding_info": {"uid": f"{alert.hostname}/{alert.id}", "title": f"{rule}: {alert.agent.name}",
                         "desc": alert.reason, "types": [rule],
                         "analytic": {"name": alert.rule.name, "type_id": 1, "type": "Rule",
                                      "uid": alert.rule.pattern or alert.rule.name}},
        "device": {"hostname": alert.hostname, "type_id": 0},
        "actor": {"process": _process(alert.process), "app_name": alert.agent.name,
                  "session": {"uid": alert.agent.instance_id}},
        "evidences": [evidence] if evidence else [],
        "unmapped": {"action": {"completed": alert.action.completed, "result": alert.action.result,
                                "in_kernel": alert.action.in_kernel},
                     "profile_file": alert.agent.profile_file},
    }
