"""AlertRule: a condition over GPUs, InferenceServices or Models that notifies channels when it
holds for a while, evaluated by the operator.

Acknowledging and resolving are people's acts, not desired state: `alert.acknowledge` and
`alert.resolve` set the annotations `aima.dev/acknowledged-at` and `aima.dev/resolved-at` (a time;
alerts that fired at or before it are acknowledged or resolved), which GitOps tools leave alone,
and the controller records the outcome in `status`. Webhook URLs and signing keys come from
Secrets named here; neither ever appears in status, Events or logs.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Final, Literal

from pydantic import ConfigDict, Field

from aima.api.common import (
    ApiModel,
    Condition,
    CustomResource,
    PrinterColumn,
    StoredObject,
    cel,
    conditions_field,
    ready_columns,
)

__all__ = [
    "ACKNOWLEDGED_AT",
    "ACKNOWLEDGED_BY",
    "CRD",
    "RESOLVED_AT",
    "ActiveAlert",
    "AlertCondition",
    "AlertRecord",
    "AlertRule",
    "AlertRuleSpec",
    "AlertRuleStatus",
    "AlertState",
    "Channel",
    "ChannelType",
    "GpuCondition",
    "GpuMetric",
    "NamedCondition",
    "SecretKeyRef",
    "Severity",
]

ACKNOWLEDGED_AT: Final = "aima.dev/acknowledged-at"
"""Annotation: alerts of the rule that fired at or before this RFC 3339 time are acknowledged."""
ACKNOWLEDGED_BY: Final = "aima.dev/acknowledged-by"
"""Annotation: who acknowledged them, as recorded in the history."""
RESOLVED_AT: Final = "aima.dev/resolved-at"
"""Annotation: alerts that fired at or before this time are resolved by hand."""

DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"


class Severity(StrEnum):
    """How urgent an alert is."""

    INFO = "Info"
    WARNING = "Warning"
    CRITICAL = "Critical"


class GpuMetric(StrEnum):
    """A figure of each GPU, as the device agent reports it."""

    TEMPERATURE_CELSIUS = "TemperatureCelsius"
    UTILIZATION_PERCENT = "UtilizationPercent"
    MEMORY_USED_PERCENT = "MemoryUsedPercent"
    POWER_WATTS = "PowerWatts"
    ECC_UNCORRECTED_ERRORS = "EccUncorrectedErrors"
    UNHEALTHY = "Unhealthy"
    """1 for an Unhealthy GPU (ECC, XID, lost), 0 for a healthy one: alert with `above: 0`."""


class AlertState(StrEnum):
    """Where an alert stands; the rule's `state` is its most urgent alert's."""

    INACTIVE = "Inactive"
    PENDING = "Pending"
    """The condition holds, not yet for `for`."""
    FIRING = "Firing"
    ACKNOWLEDGED = "Acknowledged"
    """Firing, and someone said they are on it."""
    RESOLVED = "Resolved"


class ChannelType(StrEnum):
    """How a channel is notified."""

    WEBHOOK = "Webhook"
    """JSON POST, signed with HMAC-SHA256 when signingSecretRef is set."""
    SLACK = "Slack"
    """A Slack-compatible incoming webhook (also Mattermost, Rocket.Chat): `{"text": ...}`."""


class SecretKeyRef(ApiModel):
    """One key of a Secret in the AlertRule's namespace."""

    name: str = Field(min_length=1, max_length=253)
    """Name of the Secret."""
    key: str = Field(min_length=1, max_length=253)
    """Key inside the Secret."""


class Channel(ApiModel):
    """Where notifications go."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.url) != has(self.urlSecretRef)", "set exactly one of url and urlSecretRef"),
                cel(
                    "!has(self.signingSecretRef) || self.type == 'Webhook'",
                    "signingSecretRef is for Webhook channels; Slack webhooks are not signed",
                ),
            ]
        }
    )

    name: str = Field(min_length=1, max_length=63)
    """Name of the channel, unique in the rule; used in status messages instead of the URL."""
    type: ChannelType = ChannelType.WEBHOOK
    """Webhook (signed JSON) or Slack (a Slack-compatible incoming webhook)."""
    url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")
    """The URL, when it is not a secret; Slack webhook URLs are secrets: use urlSecretRef."""
    url_secret_ref: SecretKeyRef | None = None
    """A Secret key holding the URL."""
    signing_secret_ref: SecretKeyRef | None = None
    """A Secret key holding the HMAC-SHA256 key; requests then carry `X-AIMA-Timestamp: <Unix
    seconds when sent>` and `X-AIMA-Signature: sha256=<hex of HMAC-SHA256(key, timestamp + "." +
    body)>` over the exact body bytes. Receivers should compare in constant time and refuse
    timestamps more than a few minutes old (replays); retries of one notification keep their
    `X-AIMA-Alert-Id`, so duplicates can be dropped."""


class GpuCondition(ApiModel):
    """A GPU figure beyond a threshold, on any GPU (or those of one node)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.above) != has(self.below)", "set exactly one of above and below"),
            ]
        }
    )

    metric: GpuMetric
    """The figure: TemperatureCelsius, UtilizationPercent, MemoryUsedPercent, PowerWatts,
    EccUncorrectedErrors or Unhealthy."""
    above: float | None = None
    """Holds when the figure is above this."""
    below: float | None = None
    """Holds when the figure is below this."""
    node: str | None = Field(default=None, max_length=253)
    """Only GPUs of this node; every GPU node when empty."""


class NamedCondition(ApiModel):
    """Objects of one kind in the rule's namespace: one by name, or all of them."""

    name: str | None = Field(default=None, max_length=253)
    """Only the object of this name; every one in the namespace when empty."""


class AlertCondition(ApiModel):
    """What to watch; set exactly one member."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.gpu), has(self.serviceNotReady), has(self.modelFailed)]"
                    ".filter(x, x).size() == 1",
                    "set exactly one of gpu, serviceNotReady and modelFailed",
                ),
            ]
        }
    )

    gpu: GpuCondition | None = None
    """A GPU figure beyond a threshold."""
    service_not_ready: NamedCondition | None = None
    """An InferenceService whose Ready condition is not True."""
    model_failed: NamedCondition | None = None
    """A Model whose download or verification failed (Ready False with DownloadFailed or
    ChecksumMismatch)."""


class AlertRuleSpec(ApiModel):
    """When to alert, how loudly, and whom."""

    condition: AlertCondition
    """What to watch."""
    for_: str = Field(default="0s", alias="for", min_length=2, max_length=16, pattern=DURATION_PATTERN)
    """How long the condition must hold before the alert fires, such as 30s, 5m or 1h30m."""
    severity: Severity = Severity.WARNING
    """Info, Warning or Critical; carried in every notification."""
    cooldown: str = Field(default="15m", min_length=2, max_length=16, pattern=DURATION_PATTERN)
    """The least time between two firing notifications of this rule; alerts that fire sooner are
    recorded at once and notified when the cooldown ends, if they still fire."""
    description: str | None = Field(default=None, max_length=1024)
    """What the alert means and what to do, sent with every notification."""
    channels: list[Channel] = Field(
        default_factory=list,
        max_length=8,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Where notifications go; none records alerts in status and Events only."""
    suspend: bool = False
    """Stop evaluating; active alerts are kept as they are."""


class ActiveAlert(ApiModel):
    """One subject (a GPU, a service, a model) for which the condition holds."""

    subject: str = Field(max_length=512)
    """What the alert is about, such as gpu-node-0/GPU-5fb3... or InferenceService/chat."""
    state: AlertState
    """Pending, Firing, Acknowledged, or Resolved (by hand, while the condition still holds: it fires
    again once the condition clears and returns)."""
    value: str | None = Field(default=None, max_length=64)
    """The figure that made the condition hold, for GPU conditions."""
    message: str = Field(default="", max_length=1024)
    """Why the condition holds, in words."""
    since: datetime
    """When the condition began to hold."""
    fired_at: datetime | None = None
    """When the alert fired (the condition had held for `for`)."""
    notified_at: datetime | None = None
    """When the channels were told it fired; empty while a cooldown or a failing channel delays it."""
    acknowledged_by: str | None = Field(default=None, max_length=253)
    """Who acknowledged it."""


class AlertRecord(ApiModel):
    """One transition in the rule's history."""

    time: datetime
    """When it happened."""
    subject: str = Field(max_length=512)
    """What the alert is about."""
    state: AlertState
    """Firing, Acknowledged or Resolved."""
    message: str = Field(default="", max_length=1024)
    """Why, in words."""


class AlertRuleStatus(ApiModel):
    """Observed state, written only by the operator."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the status was computed from."""
    conditions: list[Condition] = conditions_field()
    """Ready: the rule is evaluated and its channels answer (reasons Evaluating, Suspended,
    DeliveryFailed, ChannelSecretMissing). Stalled while a channel needs a person (its Secret is
    missing, its receiver refuses the request); Reconciling while a failing channel is retried."""
    state: AlertState = AlertState.INACTIVE
    """The most urgent state of its alerts, for display."""
    firing: int = Field(default=0, ge=0)
    """Alerts firing now, acknowledged or not."""
    alerts: list[ActiveAlert] = Field(default_factory=list, max_length=64)
    """Alerts pending, firing or acknowledged now."""
    last_notification_time: datetime | None = None
    """When a firing notification was last sent; the cooldown counts from here."""
    history: list[AlertRecord] = Field(default_factory=list, max_length=50)
    """The latest transitions, oldest first; bounded by the operator's alert_history_limit. Every
    transition is also an Event on the rule."""


class AlertRule(StoredObject[AlertRuleSpec, AlertRuleStatus]):
    """An AlertRule object as stored in the API server."""

    kind: Literal["AlertRule"] = "AlertRule"


CRD = CustomResource(
    kind="AlertRule",
    plural="alertrules",
    description="An AlertRule watches a GPU figure, an InferenceService's readiness or a Model's "
    "download, fires when its condition holds for a while, and notifies webhook or Slack channels.",
    spec=AlertRuleSpec,
    status=AlertRuleStatus,
    short_names=("alert",),
    printer_columns=(
        PrinterColumn(name="Severity", json_path=".spec.severity", description="How urgent."),
        PrinterColumn(name="State", json_path=".status.state", description="Most urgent alert state."),
        PrinterColumn(
            name="Firing", json_path=".status.firing", type="integer", description="Alerts firing now."
        ),
        *ready_columns(),
        PrinterColumn(name="Age", json_path=".metadata.creationTimestamp", type="date", description="Age."),
    ),
)
