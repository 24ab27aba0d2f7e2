"""Short names of the API's rule and action kinds (`secret_access`, `kill`): the one spelling the
log line, metrics, OCSF, the CLI's --rule and the scenarios use."""

from __future__ import annotations

from ._proto.agent_sensor.v1 import sensor_pb2 as pb


def rule_name(kind: int) -> str:
    return pb.RuleKind.Name(kind).removeprefix("RULE_KIND_").lower()


def action_name(kind: int) -> str:
    return pb.ActionKind.Name(kind).removeprefix("ACTION_KIND_").lower()


RULE_KIND_NAMES = {rule_name(v): v for v in pb.RuleKind.values() if v != pb.RULE_KIND_UNSPECIFIED}
