"""A service's traffic split (pure): whether every InferenceService it names is there to take its
share, and whether the gateway's rollout guard halted one. The gateway does the splitting; the
status says when a share has nowhere to go.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aima.api.common import ConditionStatus, ConditionType, Keys, Reason
from aima.api.inference_service import InferenceService, InferenceServiceStatus
from aima.domain import conditions
from aima.domain.pod_health import Finding

__all__ = ["finding", "targets"]

Body = dict[str, Any]


def targets(spec: Body) -> set[str]:
    """The services a spec's traffic split names (besides, perhaps, itself)."""
    return {t["service"] for t in spec.get("traffic") or []}


def finding(service: InferenceService, *, services: Mapping[str, Body]) -> Finding | None:
    """TrafficReady from the namespace's InferenceServices by name; None without a split. A target
    that is missing or not Ready gets no requests: the gateway gives its share to the others."""
    if not service.spec.traffic:
        return None
    own = str(service.metadata.name)
    if halted := (service.metadata.annotations or {}).get(Keys.ROLLOUT_HALTED):
        return Finding(
            status=ConditionStatus.FALSE,
            reason=Reason.ROLLOUT_HALTED,
            message=f"The gateway halted {halted}; it gets no requests. service.rollback ends the split; "
            "service.rollout (or removing the annotation aima.dev/rollout-halted) tries again",
        )
    others = [t for t in service.spec.traffic if t.service != own and t.weight > 0]
    missing = [t.service for t in others if t.service not in services]
    if missing:
        return Finding(
            status=ConditionStatus.FALSE,
            reason=Reason.TRAFFIC_TARGET_NOT_FOUND,
            message=f"No InferenceService {', '.join(missing)} in namespace {service.metadata.namespace}: "
            "create it or take it out of spec.traffic; its share goes to the other targets meanwhile",
        )
    waiting = [t.service for t in others if not _ready(services[t.service])]
    if waiting:
        return Finding(
            status=ConditionStatus.FALSE,
            reason=Reason.TRAFFIC_TARGET_NOT_READY,
            message=f"InferenceService {', '.join(waiting)} is not Ready: its share goes to the other "
            "targets until it is",
        )
    split = ", ".join(f"{t.service} {t.weight}%" for t in service.spec.traffic)
    return Finding(status=ConditionStatus.TRUE, reason=Reason.READY, message=f"Requests split: {split}")


def _ready(body: Body) -> bool:
    status = InferenceServiceStatus.model_validate(body.get("status") or {})
    return conditions.is_true(status.conditions, ConditionType.READY)
