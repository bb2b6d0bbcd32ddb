"""alert.*: AlertRules and their alerts: list, get, acknowledge and resolve.

Acknowledging and resolving write an annotation with the time (`aima.dev/acknowledged-at`,
`aima.dev/resolved-at`), never `spec` or `status`: the operator reads it on its next pass and records
the outcome in the rule's status and history, so the units return once the operator has done so.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable

from pydantic import Field

from aima.api.alert import ACKNOWLEDGED_AT, ACKNOWLEDGED_BY, RESOLVED_AT, AlertRule, AlertState
from aima.api.common import ApiModel
from aima.kube import KubeError, resources
from aima.units.core import Context, Example, Input, command, query
from aima.units.errors import ErrorCode, UnitError

__all__ = ["UNITS", "AlertSummary"]

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_POLL_SECONDS = 0.5


class RuleRef(Input):
    """Names one AlertRule."""

    name: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN)
    """Name of the AlertRule."""
    namespace: str | None = Field(default=None, max_length=63)
    """Namespace of the AlertRule; the default namespace when empty."""


class AcknowledgeInput(RuleRef):
    """Who acknowledges the rule's firing alerts."""

    by: str | None = Field(default=None, max_length=253)
    """Who is on it, recorded in the history, such as a person's or an agent's name."""
    wait_seconds: float = Field(default=10.0, ge=0, le=120)
    """How long to wait for the operator to record it; 0 returns at once."""


class ResolveInput(RuleRef):
    """Close the rule's firing alerts by hand."""

    wait_seconds: float = Field(default=10.0, ge=0, le=120)
    """How long to wait for the operator to record it; 0 returns at once."""


class AlertListInput(Input):
    """Which AlertRules to list."""

    namespace: str | None = Field(default=None, max_length=63)
    """Namespace to list; the default namespace when empty."""
    all_namespaces: bool = False
    """List the rules of every namespace."""
    firing_only: bool = False
    """Only rules with alerts firing now."""


class AlertSummary(ApiModel):
    """One rule: how urgent, what fires, why."""

    name: str
    namespace: str
    severity: str
    state: str
    """Inactive, Pending, Firing or Acknowledged (the most urgent of its alerts)."""
    firing: int
    subjects: list[str]
    """What its active alerts are about."""
    ready: bool
    message: str
    """The rule's Ready message: its evaluation, or why its channels fail."""


class AlertRuleList(ApiModel):
    """AlertRules."""

    items: list[AlertSummary]


class AlertAction(ApiModel):
    """What acknowledge or resolve did."""

    name: str
    namespace: str
    recorded: bool
    """Whether the operator has recorded it in the rule's status already."""
    state: str
    """The rule's state afterwards."""
    message: str


@query(
    "alert.list",
    description="AlertRules with their state (Inactive, Pending, Firing, Acknowledged), what fires and why.",
    examples=[
        Example(description="Rules of the default namespace", input={}),
        Example(description="Firing rules anywhere", input={"allNamespaces": True, "firingOnly": True}),
    ],
)
async def list_rules(context: Context, request: AlertListInput) -> AlertRuleList:
    namespace = None if request.all_namespaces else context.namespace_of(request.namespace)
    try:
        bodies = await context.kube.list(resources.ALERT_RULES, namespace=namespace)
    except KubeError as error:
        if error.status == 404:
            return AlertRuleList(items=[])  # the AlertRule CRD is not installed: no rules
        raise
    items = [_summary(AlertRule.model_validate(b)) for b in bodies]
    return AlertRuleList(items=[i for i in items if i.firing or not request.firing_only])


@query(
    "alert.get",
    description="One AlertRule in full: spec, active alerts and the latest history.",
    examples=[Example(description="A rule", input={"name": "gpu-hot"})],
)
async def get(context: Context, request: RuleRef) -> AlertRule:
    return await _rule(context, request)


@command(
    "alert.acknowledge",
    description="Acknowledge a rule's firing alerts (someone is on it); they stay firing without "
    "further notifications until they resolve.",
    examples=[Example(description="Acknowledge", input={"name": "gpu-hot", "by": "oncall-agent"})],
    idempotent=True,
)
async def acknowledge(context: Context, request: AcknowledgeInput) -> AlertAction:
    rule = await _rule(context, request)
    if _none_firing(rule):
        return _action(rule, recorded=True, message="Nothing to acknowledge: no alert of this rule is firing")
    now = _now()
    annotations = (
        {ACKNOWLEDGED_AT: now, ACKNOWLEDGED_BY: request.by} if request.by else {ACKNOWLEDGED_AT: now}
    )
    await _annotate(context, rule, annotations)
    return await _await(context, request, wait=request.wait_seconds, done=_none_firing, what="acknowledged")


@command(
    "alert.resolve",
    description="Resolve a rule's firing alerts by hand; an alert whose condition still holds stays "
    "quiet until the condition clears, and fires again if it comes back.",
    examples=[Example(description="Resolve", input={"name": "gpu-hot"})],
    idempotent=True,
)
async def resolve(context: Context, request: ResolveInput) -> AlertAction:
    rule = await _rule(context, request)
    if not (rule.status and rule.status.firing):
        return _action(rule, recorded=True, message="Nothing to resolve: no alert of this rule is firing")
    await _annotate(context, rule, {RESOLVED_AT: _now()})
    return await _await(context, request, wait=request.wait_seconds, done=_nothing_active, what="resolved")


def _summary(rule: AlertRule) -> AlertSummary:
    status = rule.status
    ready = next((c for c in status.conditions if c.type == "Ready"), None) if status else None
    return AlertSummary(
        name=rule.metadata.name or "",
        namespace=rule.metadata.namespace or "",
        severity=str(rule.spec.severity),
        state=str(status.state if status else AlertState.INACTIVE),
        firing=status.firing if status else 0,
        subjects=[a.subject for a in status.alerts if a.state is not AlertState.RESOLVED] if status else [],
        ready=ready is not None and ready.status == "True",
        message=ready.message if ready else "Not evaluated yet",
    )


def _none_firing(rule: AlertRule) -> bool:
    return not any(a.state is AlertState.FIRING for a in (rule.status.alerts if rule.status else []))


def _nothing_active(rule: AlertRule) -> bool:
    return not (rule.status and rule.status.firing)


async def _await(
    context: Context, request: RuleRef, *, wait: float, done: Callable[[AlertRule], bool], what: str
) -> AlertAction:
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        rule = await _rule(context, request)
        if done(rule):
            return _action(rule, recorded=True, message=f"The operator recorded the alerts as {what}")
        if asyncio.get_running_loop().time() >= deadline:
            return _action(
                rule, recorded=False, message=f"Requested; the operator records them as {what} shortly"
            )
        await asyncio.sleep(_POLL_SECONDS)


def _action(rule: AlertRule, *, recorded: bool, message: str) -> AlertAction:
    return AlertAction(
        name=rule.metadata.name or "",
        namespace=rule.metadata.namespace or "",
        recorded=recorded,
        state=str(rule.status.state if rule.status else AlertState.INACTIVE),
        message=message,
    )


async def _annotate(context: Context, rule: AlertRule, annotations: dict[str, str]) -> None:
    await context.kube.patch(
        resources.ALERT_RULES,
        name=rule.metadata.name or "",
        namespace=rule.metadata.namespace,
        patch={"metadata": {"annotations": annotations}},
    )


async def _rule(context: Context, request: RuleRef) -> AlertRule:
    namespace = context.namespace_of(request.namespace)
    body = await context.kube.get(resources.ALERT_RULES, name=request.name, namespace=namespace)
    if body is None:
        raise UnitError(ErrorCode.NOT_FOUND, f"AlertRule {namespace}/{request.name} not found")
    return AlertRule.model_validate(body)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


UNITS = (list_rules, get, acknowledge, resolve)
