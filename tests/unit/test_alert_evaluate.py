"""AlertRule evaluation (pure): pending, firing, cooldown, acknowledge, resolve, bounded history,
and the signed notifications."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aima.api.alert import (
    AlertRuleSpec,
    AlertRuleStatus,
    AlertState,
    ChannelType,
    GpuCondition,
    NamedCondition,
    Severity,
)
from aima.api.device import Gpu, GpuHealth, NodeDevices
from aima.domain import alert_channels
from aima.domain.alert import (
    Observation,
    Requests,
    delivered,
    evaluate,
    gpu_observations,
    model_observations,
    parse_duration,
    service_observations,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOT = [Observation(subject="n/GPU-a", message="GPU 0 on n: TemperatureCelsius 91 above 85", value="91")]
SPEC = AlertRuleSpec.model_validate(
    {"condition": {"gpu": {"metric": "TemperatureCelsius", "above": 85}}, "for": "2m", "cooldown": "10m"}
)


def step(
    status: AlertRuleStatus | None,
    observations: list[Observation],
    at: timedelta,
    *,
    requests: Requests | None = None,
    spec: AlertRuleSpec = SPEC,
    history_limit: int = 20,
) -> tuple[AlertRuleStatus, Any]:
    """One pass whose notifications all get through."""
    now = T0 + at
    result = evaluate(
        spec,
        status,
        observations,
        requests=requests or Requests(),
        generation=1,
        history_limit=history_limit,
        now=now,
    )
    return delivered(result.status, result.notifications, now=now), result


def test_durations() -> None:
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("45s") == timedelta(seconds=45)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("5 minutes")


def test_fires_after_holding_for_its_duration_then_resolves() -> None:
    status, result = step(None, HOT, timedelta(0))
    assert (status.state, result.notifications, result.wake_after) == (AlertState.PENDING, [], 120.0)
    status, result = step(status, HOT, timedelta(minutes=1))
    assert status.state is AlertState.PENDING and not result.notifications
    status, result = step(status, HOT, timedelta(minutes=2))
    assert (status.state, status.firing) == (AlertState.FIRING, 1)
    assert [(n.subject, n.state) for n in result.notifications] == [("n/GPU-a", AlertState.FIRING)]
    assert status.alerts[0].notified_at == T0 + timedelta(minutes=2)
    status, result = step(status, [], timedelta(minutes=3))
    assert (status.state, status.alerts) == (AlertState.INACTIVE, [])
    assert [(n.state, n.message) for n in result.notifications] == [
        (AlertState.RESOLVED, "the condition no longer holds")
    ]
    assert [r.state for r in status.history] == [AlertState.FIRING, AlertState.RESOLVED]


def test_a_condition_that_clears_before_its_duration_never_fires() -> None:
    status, _ = step(None, HOT, timedelta(0))
    status, result = step(status, [], timedelta(minutes=1))
    assert (status.alerts, status.history, result.notifications) == ([], [], [])


def test_cooldown_delays_the_next_notification_and_does_not_drop_it() -> None:
    spec = SPEC.model_copy(update={"for_": "0s"})
    status, result = step(None, HOT, timedelta(0), spec=spec)
    assert len(result.notifications) == 1
    status, _ = step(status, [], timedelta(minutes=1), spec=spec)
    status, result = step(status, HOT, timedelta(minutes=2), spec=spec)
    assert status.state is AlertState.FIRING and status.alerts[0].notified_at is None
    assert result.notifications == [] and result.wake_after == 8 * 60  # the cooldown ends at minute 10
    status, result = step(status, HOT, timedelta(minutes=10), spec=spec)
    assert [n.state for n in result.notifications] == [AlertState.FIRING]
    assert status.last_notification_time == T0 + timedelta(minutes=10)


def test_acknowledge_and_resolve_by_hand() -> None:
    spec = SPEC.model_copy(update={"for_": "0s"})
    status, _ = step(None, HOT, timedelta(0), spec=spec)
    ack = Requests(acknowledged_at=T0 + timedelta(minutes=1), acknowledged_by="oncall")
    status, result = step(status, HOT, timedelta(minutes=1), spec=spec, requests=ack)
    assert (status.state, status.alerts[0].acknowledged_by, status.firing) == (
        AlertState.ACKNOWLEDGED,
        "oncall",
        1,
    )
    assert status.history[-1].message == "acknowledged by oncall" and not result.notifications
    resolve = Requests(resolved_at=T0 + timedelta(minutes=2))
    status, result = step(status, HOT, timedelta(minutes=2), spec=spec, requests=resolve)
    # Closed by hand while the condition still holds: quiet until it clears and comes back.
    assert (status.state, status.firing, status.alerts[0].state) == (
        AlertState.INACTIVE,
        0,
        AlertState.RESOLVED,
    )
    assert [n.message for n in result.notifications] == ["resolved by hand"]
    status, result = step(status, HOT, timedelta(minutes=3), spec=spec, requests=resolve)
    assert status.alerts[0].state is AlertState.RESOLVED and not result.notifications
    status, _ = step(status, [], timedelta(minutes=4), spec=spec, requests=resolve)
    status, _ = step(status, HOT, timedelta(minutes=5), spec=spec, requests=resolve)
    assert status.state is AlertState.FIRING  # it came back after clearing: a new alert


def test_history_is_bounded() -> None:
    spec = SPEC.model_copy(update={"for_": "0s", "cooldown": "0s"})
    status = None
    for minute in range(10):
        status, _ = step(
            status, HOT if minute % 2 == 0 else [], timedelta(minutes=minute), spec=spec, history_limit=4
        )
    assert status is not None and len(status.history) == 4
    assert status.history[-1].time == T0 + timedelta(minutes=9)


def _node(name: str, *gpus: Gpu) -> NodeDevices:
    return NodeDevices.model_validate(
        {
            "metadata": {"name": name},
            "spec": {"nodeName": name},
            "status": {"gpus": [g.model_dump() for g in gpus]},
        }
    )


def test_gpu_observations_pick_gpus_beyond_the_threshold() -> None:
    hot = Gpu(
        index=0, uuid="GPU-a", name="H100", temperature_celsius=91, memory_total_mib=100, memory_used_mib=97
    )
    cool = Gpu(index=1, uuid="GPU-b", name="H100", temperature_celsius=60, health=GpuHealth.UNHEALTHY)
    nodes = [_node("n1", hot, cool), _node("n2", hot)]
    above = gpu_observations(GpuCondition(metric="TemperatureCelsius", above=85), nodes)
    assert [o.subject for o in above] == ["n1/GPU-a", "n2/GPU-a"]
    assert above[0].message == "GPU 0 on n1 (H100): TemperatureCelsius 91 above 85"
    only_n2 = gpu_observations(GpuCondition(metric="MemoryUsedPercent", above=95, node="n2"), nodes)
    assert [(o.subject, o.value) for o in only_n2] == [("n2/GPU-a", "97")]
    unhealthy = gpu_observations(GpuCondition(metric="Unhealthy", above=0), nodes)
    assert [o.subject for o in unhealthy] == ["n1/GPU-b"]


def test_service_and_model_observations() -> None:
    def obj(name: str, status: str, reason: str) -> dict[str, Any]:
        ready = {"type": "Ready", "status": status, "reason": reason, "message": "m"}
        return {"metadata": {"name": name}, "status": {"conditions": [ready]}}

    services = [
        obj("up", "True", "Ready"),
        obj("down", "False", "ModelNotFound"),
        {"metadata": {"name": "new"}},
    ]
    found = service_observations(NamedCondition(), services)
    assert [(o.subject, o.message) for o in found] == [
        ("InferenceService/down", "ModelNotFound: m"),
        ("InferenceService/new", "no Ready condition yet"),
    ]
    models = [
        obj("ok", "True", "Ready"),
        obj("bad", "False", "ChecksumMismatch"),
        obj("busy", "False", "Downloading"),
    ]
    failed = model_observations(NamedCondition(name="bad"), models)
    assert [o.subject for o in failed] == ["Model/bad"]


def test_webhook_requests_are_signed_and_slack_requests_are_text() -> None:
    _, result = step(None, HOT, timedelta(0), spec=SPEC.model_copy(update={"for_": "0s"}))
    (notification,) = result.notifications
    body, headers = alert_channels.request_for(
        ChannelType.WEBHOOK, notification, rule="hot", namespace="ops", severity=Severity.CRITICAL,
        description="Check the fans", signing_key=b"k3y", now=T0,
    )  # fmt: skip
    assert alert_channels.verify(
        b"k3y", timestamp=headers["X-AIMA-Timestamp"], body=body, signature=headers["X-AIMA-Signature"]
    )
    assert not alert_channels.verify(
        b"other", timestamp=headers["X-AIMA-Timestamp"], body=body, signature=headers["X-AIMA-Signature"]
    )
    payload = json.loads(body)
    assert (payload["state"], payload["severity"], payload["subject"]) == ("Firing", "Critical", "n/GPU-a")
    slack, slack_headers = alert_channels.request_for(
        ChannelType.SLACK, notification, rule="hot", namespace="ops", severity=Severity.CRITICAL,
        description=None, signing_key=None, now=T0,
    )  # fmt: skip
    assert json.loads(slack)["text"].startswith(":rotating_light: [Critical] n/GPU-a (AlertRule ops/hot)")
    assert "X-AIMA-Signature" not in slack_headers
