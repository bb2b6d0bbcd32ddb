"""AlertRule evaluation (pure): which subjects the condition holds for, and how each alert moves
through Pending, Firing, Acknowledged and Resolved, with the notifications that are due.

`evaluate` never assumes a notification got through: it lists what is due, the controller sends it,
and `delivered` stamps only what was sent. A failing channel is therefore tried again on the next
pass, and a cooldown delays notifications rather than dropping them.

`with_outcome` reports the pass as GitOps tools read it (kstatus): a channel only a person can fix
(its Secret missing, its receiver refusing the request) makes the rule `Stalled`; one that fails in
a way that may pass (a timeout, a 5xx) makes it `Reconciling` while the next passes retry it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aima.api.alert import (
    ACKNOWLEDGED_AT,
    ACKNOWLEDGED_BY,
    RESOLVED_AT,
    ActiveAlert,
    AlertRecord,
    AlertRuleSpec,
    AlertRuleStatus,
    AlertState,
    GpuCondition,
    GpuMetric,
    NamedCondition,
)
from aima.api.common import ConditionStatus, ConditionType
from aima.api.device import Gpu, GpuHealth, NodeDevices
from aima.domain.conditions import RECONCILING, STALLED, Progress, set_condition, set_progress

__all__ = [
    "CHANNEL_SECRET_MISSING",
    "DELIVERY_FAILED",
    "ChannelProblem",
    "Evaluation",
    "Notification",
    "Observation",
    "Requests",
    "delivered",
    "evaluate",
    "gpu_observations",
    "model_observations",
    "parse_duration",
    "service_observations",
    "with_outcome",
]

CHANNEL_SECRET_MISSING = "ChannelSecretMissing"  # noqa: S105 - a condition reason, not a secret
DELIVERY_FAILED = "DeliveryFailed"
_EVALUATING = "Evaluating"
_SUSPENDED = "Suspended"
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_FAILED_DOWNLOAD_REASONS = frozenset({"DownloadFailed", "ChecksumMismatch"})
_URGENCY = (AlertState.FIRING, AlertState.ACKNOWLEDGED, AlertState.PENDING)
_ACTIVE = frozenset({AlertState.FIRING, AlertState.ACKNOWLEDGED})

Body = dict[str, Any]


def parse_duration(text: str) -> timedelta:
    """`1h30m`, `5m`, `30s` as a timedelta (the CRD's pattern has checked the shape)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


@dataclass(frozen=True, kw_only=True)
class Observation:
    """A subject for which the condition holds now."""

    subject: str
    message: str
    value: str | None = None


@dataclass(frozen=True, kw_only=True)
class Requests:
    """What people asked through the rule's annotations."""

    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> Requests:
        """Read the acknowledge and resolve annotations; unreadable times are ignored."""
        return cls(
            acknowledged_at=_time(annotations.get(ACKNOWLEDGED_AT)),
            acknowledged_by=annotations.get(ACKNOWLEDGED_BY),
            resolved_at=_time(annotations.get(RESOLVED_AT)),
        )


@dataclass(frozen=True, kw_only=True)
class Notification:
    """One message due to every channel of the rule."""

    subject: str
    state: AlertState
    """Firing or Resolved."""
    message: str
    value: str | None
    since: datetime
    fired_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class ChannelProblem:
    """Why a channel cannot take notifications, by its name and an HTTP status or error type only:
    its URL may be a secret."""

    channel: str
    problem: str
    reason: str = DELIVERY_FAILED
    """ChannelSecretMissing or DeliveryFailed."""
    lasting: bool = False
    """Only a person can fix it (a missing Secret, a request the receiver refuses); otherwise the
    next pass may well get through."""

    def __str__(self) -> str:
        return f"channel {self.channel}: {self.problem}"


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """The rule's next status, the notifications due, and when to look again."""

    status: AlertRuleStatus
    notifications: list[Notification] = field(default_factory=list)
    recorded: list[AlertRecord] = field(default_factory=list)
    """Transitions of this pass (each becomes an Event)."""
    wake_after: float | None = None
    """Seconds until a pending alert may fire or a cooldown ends; None when nothing waits."""


def gpu_observations(condition: GpuCondition, nodes: Iterable[NodeDevices]) -> list[Observation]:
    """GPUs whose figure is beyond the threshold."""
    found = []
    for node in nodes:
        if node.status is None or (condition.node and node.spec.node_name != condition.node):
            continue
        for gpu in node.status.gpus:
            value = _metric(gpu, condition.metric)
            if value is None or not _beyond(value, condition):
                continue
            limit = (
                f"above {condition.above:g}" if condition.above is not None else f"below {condition.below:g}"
            )
            found.append(
                Observation(
                    subject=f"{node.spec.node_name}/{gpu.uuid}",
                    message=f"GPU {gpu.index} on {node.spec.node_name} ({gpu.name}): "
                    f"{condition.metric} {value:g} {limit}",
                    value=f"{value:g}",
                )
            )
    return found


def service_observations(condition: NamedCondition, services: Iterable[Body]) -> list[Observation]:
    """InferenceServices whose Ready condition is not True."""
    found = []
    for service in _named(services, condition):
        ready = _ready_condition(service)
        if ready is not None and ready.get("status") == "True":
            continue
        why = f"{ready.get('reason')}: {ready.get('message')}" if ready else "no Ready condition yet"
        found.append(Observation(subject=f"InferenceService/{service['metadata']['name']}", message=why))
    return found


def model_observations(condition: NamedCondition, models: Iterable[Body]) -> list[Observation]:
    """Models whose download or verification failed."""
    found = []
    for model in _named(models, condition):
        ready = _ready_condition(model)
        if ready is None or ready.get("reason") not in _FAILED_DOWNLOAD_REASONS:
            continue
        found.append(
            Observation(
                subject=f"Model/{model['metadata']['name']}",
                message=f"{ready['reason']}: {ready.get('message')}",
            )
        )
    return found


def evaluate(
    spec: AlertRuleSpec,
    status: AlertRuleStatus | None,
    observations: Sequence[Observation],
    *,
    requests: Requests,
    generation: int | None,
    history_limit: int,
    now: datetime,
) -> Evaluation:
    """One pass of the rule: move every alert on, and list the notifications now due."""
    before = status or AlertRuleStatus()
    hold, cooldown = parse_duration(spec.for_), parse_duration(spec.cooldown)
    holding = {o.subject: o for o in observations}
    alerts: list[ActiveAlert] = []
    records: list[AlertRecord] = []
    notifications: list[Notification] = []
    for alert in before.alerts:
        observation = holding.pop(alert.subject, None)
        if observation is None:
            if alert.state in _ACTIVE:
                records.append(_record(alert, AlertState.RESOLVED, "the condition no longer holds", now=now))
                notifications += _resolution(alert, "the condition no longer holds")
        elif alert.state is AlertState.RESOLVED:
            alerts.append(_refresh(alert, observation))  # closed by hand; fires again once it clears
        elif _resolved_by_hand(alert, requests):
            records.append(_record(alert, AlertState.RESOLVED, "resolved by hand", now=now))
            notifications += _resolution(alert, "resolved by hand")
            alerts.append(_refresh(alert, observation).model_copy(update={"state": AlertState.RESOLVED}))
        else:
            alerts.append(_carry(alert, observation, requests=requests, records=records, now=now))
    alerts += [_pending(o, since=now) for o in holding.values()]
    alerts = [_maybe_fire(a, hold=hold, now=now, records=records) for a in alerts]
    due = [a for a in alerts if a.state is AlertState.FIRING and a.notified_at is None]
    cooldown_ends = before.last_notification_time + cooldown if before.last_notification_time else None
    cooling = cooldown_ends is not None and now < cooldown_ends
    if due and not cooling:
        notifications += [_notification(a, AlertState.FIRING, a.message) for a in due]
    next_status = AlertRuleStatus(
        observed_generation=generation,
        conditions=before.conditions,
        state=next((s for s in _URGENCY if any(a.state is s for a in alerts)), AlertState.INACTIVE),
        firing=sum(1 for a in alerts if a.state in _ACTIVE),
        alerts=sorted(alerts, key=lambda a: a.subject)[:64],
        last_notification_time=before.last_notification_time,
        history=(before.history + records)[-history_limit:],
    )
    wake = _wake_after(alerts, hold=hold, cooldown_ends=cooldown_ends if due and cooling else None, now=now)
    return Evaluation(status=next_status, notifications=notifications, recorded=records, wake_after=wake)


def delivered(status: AlertRuleStatus, sent: Sequence[Notification], *, now: datetime) -> AlertRuleStatus:
    """``status`` with the firing notifications that got through stamped, and the cooldown started."""
    fired = {n.subject for n in sent if n.state is AlertState.FIRING}
    if not fired:
        return status
    alerts = [a.model_copy(update={"notified_at": now}) if a.subject in fired else a for a in status.alerts]
    return status.model_copy(update={"alerts": alerts, "last_notification_time": now})


def with_outcome(
    status: AlertRuleStatus,
    problems: Sequence[ChannelProblem],
    *,
    suspended: bool,
    generation: int | None,
    now: datetime,
) -> AlertRuleStatus:
    """``status`` as the answer to spec ``generation``, with Ready (evaluated, and every channel
    took what it was sent) and the progress its channels' ``problems`` call for."""
    ready: tuple[ConditionStatus, str, str]
    progress: Progress | None = None
    if suspended:
        ready = (ConditionStatus.FALSE, _SUSPENDED, "Evaluation is suspended")
    elif problems:
        lasting = [p for p in problems if p.lasting]
        reason = lasting[0].reason if lasting else DELIVERY_FAILED
        ready = (ConditionStatus.FALSE, reason, "; ".join(dict.fromkeys(str(p) for p in problems)))
        progress = STALLED if lasting else RECONCILING
    else:
        ready = (ConditionStatus.TRUE, _EVALUATING, _summary(status))
    conditions = set_condition(
        status.conditions,
        type_=ConditionType.READY,
        status=ready[0],
        reason=ready[1],
        message=ready[2],
        generation=generation,
        now=now,
    )
    conditions = set_progress(
        conditions, progress, reason=ready[1], message=ready[2], generation=generation, now=now
    )
    return status.model_copy(update={"conditions": conditions, "observed_generation": generation})


def _summary(status: AlertRuleStatus) -> str:
    if not status.alerts:
        return "Evaluated: the condition holds for nothing"
    pending = sum(1 for a in status.alerts if a.state is AlertState.PENDING)
    return f"Evaluated: {status.firing} firing, {pending} pending"


def _carry(
    alert: ActiveAlert,
    observation: Observation,
    *,
    requests: Requests,
    records: list[AlertRecord],
    now: datetime,
) -> ActiveAlert:
    """An alert whose condition still holds: new figures, and an acknowledgement if one came."""
    update: dict[str, Any] = {"message": observation.message[:1024], "value": observation.value}
    acknowledged = (
        alert.state is AlertState.FIRING
        and alert.fired_at is not None
        and requests.acknowledged_at is not None
        and alert.fired_at <= requests.acknowledged_at
    )
    if acknowledged:
        update |= {"state": AlertState.ACKNOWLEDGED, "acknowledged_by": requests.acknowledged_by}
        by = f" by {requests.acknowledged_by}" if requests.acknowledged_by else ""
        records.append(
            AlertRecord(
                time=now, subject=alert.subject, state=AlertState.ACKNOWLEDGED, message=f"acknowledged{by}"
            )
        )
    return alert.model_copy(update=update)


def _maybe_fire(
    alert: ActiveAlert, *, hold: timedelta, now: datetime, records: list[AlertRecord]
) -> ActiveAlert:
    if alert.state is not AlertState.PENDING or now < alert.since + hold:
        return alert
    records.append(
        AlertRecord(time=now, subject=alert.subject, state=AlertState.FIRING, message=alert.message)
    )
    return alert.model_copy(update={"state": AlertState.FIRING, "fired_at": now})


def _pending(observation: Observation, *, since: datetime) -> ActiveAlert:
    return ActiveAlert(
        subject=observation.subject,
        state=AlertState.PENDING,
        value=observation.value,
        message=observation.message[:1024],
        since=since,
    )


def _refresh(alert: ActiveAlert, observation: Observation) -> ActiveAlert:
    return alert.model_copy(update={"message": observation.message[:1024], "value": observation.value})


def _record(alert: ActiveAlert, state: AlertState, message: str, *, now: datetime) -> AlertRecord:
    return AlertRecord(time=now, subject=alert.subject, state=state, message=message)


def _resolution(alert: ActiveAlert, why: str) -> list[Notification]:
    """A resolved notice, only where the channels had heard of the alert firing."""
    return [_notification(alert, AlertState.RESOLVED, why)] if alert.notified_at is not None else []


def _resolved_by_hand(alert: ActiveAlert, requests: Requests) -> bool:
    return (
        alert.state is not AlertState.PENDING
        and alert.fired_at is not None
        and requests.resolved_at is not None
        and alert.fired_at <= requests.resolved_at
    )


def _notification(alert: ActiveAlert, state: AlertState, message: str) -> Notification:
    return Notification(
        subject=alert.subject,
        state=state,
        message=message,
        value=alert.value,
        since=alert.since,
        fired_at=alert.fired_at,
    )


def _wake_after(
    alerts: Sequence[ActiveAlert], *, hold: timedelta, cooldown_ends: datetime | None, now: datetime
) -> float | None:
    moments = [a.since + hold for a in alerts if a.state is AlertState.PENDING]
    if cooldown_ends is not None:
        moments.append(cooldown_ends)
    if not moments:
        return None
    return max(0.0, (min(moments) - now).total_seconds())


def _metric(gpu: Gpu, metric: GpuMetric) -> float | None:
    if metric is GpuMetric.MEMORY_USED_PERCENT:
        if not gpu.memory_total_mib or gpu.memory_used_mib is None:
            return None
        return round(100 * gpu.memory_used_mib / gpu.memory_total_mib, 1)
    values: dict[GpuMetric, float | None] = {
        GpuMetric.TEMPERATURE_CELSIUS: gpu.temperature_celsius,
        GpuMetric.UTILIZATION_PERCENT: gpu.utilization_percent,
        GpuMetric.POWER_WATTS: gpu.power_watts,
        GpuMetric.ECC_UNCORRECTED_ERRORS: gpu.ecc_uncorrected_errors,
        GpuMetric.UNHEALTHY: float(gpu.health is GpuHealth.UNHEALTHY),
    }
    return values[metric]


def _beyond(value: float, condition: GpuCondition) -> bool:
    if condition.above is not None:
        return value > condition.above
    return condition.below is not None and value < condition.below


def _named(objects: Iterable[Body], condition: NamedCondition) -> list[Body]:
    return [o for o in objects if condition.name is None or o["metadata"]["name"] == condition.name]


def _ready_condition(body: Body) -> Body | None:
    conditions = body.get("status", {}).get("conditions", [])
    return next((c for c in conditions if c.get("type") == "Ready"), None)


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
