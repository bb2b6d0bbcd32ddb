"""AlertRule controller: evaluate each rule when what it watches changes (NodeDevices for GPU
conditions, InferenceServices, Models), when a pending alert may fire or a cooldown ends, and on
the resync; then notify its channels and record the outcome in status and Events.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from aima.api.alert import AlertRecord, AlertRule, AlertRuleStatus, AlertState, Channel, SecretKeyRef
from aima.api.device import NodeDevices
from aima.controllers.runtime import ClusterView, Key, Reconciler, when_gone, write_status
from aima.domain import alert as evaluation
from aima.domain import alert_channels
from aima.kube import KubeClient, resources
from aima.kube.cache import WatchedList
from aima.settings import Settings

__all__ = ["AlertController", "register"]

logger = logging.getLogger("aima.controllers.alert")
_COALESCE_SECONDS = 1.0  # a burst of NodeDevices writes wakes each GPU rule once

_RETRIABLE = frozenset({408, 425, 429})
"""Client errors that say "later", not "never"."""

Body = dict[str, Any]


@dataclass(frozen=True)
class _Target:
    """A channel with its URL and signing key, read from its Secrets."""

    channel: Channel
    url: str
    key: bytes | None


@dataclass
class AlertController:
    """The reconcile of one AlertRule, and the index of which rules watch what."""

    kube: KubeClient
    settings: Settings
    cluster: ClusterView
    reconciler: Reconciler | None = None
    watches: dict[Key, str] = field(default_factory=dict)
    """Rule -> what its condition watches: gpu, serviceNotReady or modelFailed."""
    _timers: dict[Key, tuple[float, asyncio.TimerHandle]] = field(default_factory=dict)

    async def reconcile(self, body: Body) -> None:
        """One read-evaluate-notify-write pass of one rule."""
        rule = AlertRule.model_validate(body)
        key = (rule.metadata.namespace or "", rule.metadata.name or "")
        condition = rule.spec.condition
        self.watches[key] = (
            "gpu" if condition.gpu else "serviceNotReady" if condition.service_not_ready else "modelFailed"
        )
        now = datetime.datetime.now(datetime.UTC)
        generation = rule.metadata.generation
        before = rule.status or AlertRuleStatus()
        if rule.spec.suspend:
            status = evaluation.with_outcome(before, [], suspended=True, generation=generation, now=now)
            await write_status(self.kube, self.cluster.alert_rules, body, status)
            return
        targets, problems = await self._targets(rule)
        result = evaluation.evaluate(
            rule.spec,
            before,
            self._observe(rule),
            requests=evaluation.Requests.from_annotations(rule.metadata.annotations),
            generation=generation,
            history_limit=self.settings.alert_history_limit,
            now=now,
        )
        sent, failures = await self._notify(
            rule, targets, result.notifications, complete=not problems, now=now
        )
        status = evaluation.delivered(result.status, sent, now=now)
        problems += failures
        status = evaluation.with_outcome(status, problems, suspended=False, generation=generation, now=now)
        await write_status(self.kube, self.cluster.alert_rules, body, status)
        await self._record(body, result.recorded)
        # Failing channels are retried, and Secrets (not watched) looked for again, each interval.
        self._wake_later(key, result.wake_after, retry=bool(problems), active=status.firing > 0)

    def wake(self, key: Key, delay: float) -> None:
        """Reconcile rule ``key`` in ``delay`` seconds, unless it is already due sooner."""
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        if (scheduled := self._timers.get(key)) is not None:
            if scheduled[0] <= when:
                return
            scheduled[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def forget(self, key: Key) -> None:
        """The rule is gone: drop it from the index and cancel its timer."""
        self.watches.pop(key, None)
        if (scheduled := self._timers.pop(key, None)) is not None:
            scheduled[1].cancel()

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        if self.reconciler is not None:
            self.reconciler.enqueue(namespace=key[0], name=key[1])

    def _wake_later(self, key: Key, wake_after: float | None, *, retry: bool, active: bool) -> None:
        delays = [wake_after] if wake_after is not None else []
        if retry or active:
            delays.append(self.settings.alert_interval_seconds)  # retry channels; re-check firing alerts
        if delays:
            self.wake(
                key, min(delays) + 0.05
            )  # just past the moment, so it has come when the pass reads the clock

    def _observe(self, rule: AlertRule) -> list[evaluation.Observation]:
        condition, namespace = rule.spec.condition, rule.metadata.namespace or ""
        if condition.gpu is not None:
            nodes = [NodeDevices.model_validate(b) for b in self.cluster.node_devices.items()]
            return evaluation.gpu_observations(condition.gpu, nodes)
        if condition.service_not_ready is not None:
            named = condition.service_not_ready
            services = _named(self.cluster.inference_services, namespace, named.name)
            return evaluation.service_observations(named, services)
        assert condition.model_failed is not None  # the CRD requires exactly one member
        models = _named(self.cluster.models, namespace, condition.model_failed.name)
        return evaluation.model_observations(condition.model_failed, models)

    async def _targets(self, rule: AlertRule) -> tuple[list[_Target], list[evaluation.ChannelProblem]]:
        """Every channel with its URL and signing key read from its Secrets, and the channels whose
        Secrets are missing (read on every pass, so that a missing one shows before an alert fires)."""
        namespace = rule.metadata.namespace or ""
        targets, problems = [], []
        for channel in rule.spec.channels:
            try:
                url = channel.url or await self._secret(namespace, channel.url_secret_ref)
                ref = channel.signing_secret_ref
                key = (await self._secret(namespace, ref)).encode() if ref else None
            except LookupError as missing:
                problems.append(
                    evaluation.ChannelProblem(
                        channel=channel.name,
                        problem=str(missing),
                        reason=evaluation.CHANNEL_SECRET_MISSING,
                        lasting=True,
                    )
                )
            else:
                targets.append(_Target(channel=channel, url=url, key=key))
        return targets, problems

    async def _notify(
        self,
        rule: AlertRule,
        targets: Sequence[_Target],
        notifications: Sequence[evaluation.Notification],
        *,
        complete: bool,
        now: datetime.datetime,
    ) -> tuple[list[evaluation.Notification], list[evaluation.ChannelProblem]]:
        """Send each notification to every target; it counts as sent when every channel took it
        (``complete``: every channel is a target)."""
        if not notifications or not rule.spec.channels:
            return list(notifications), []
        problems: list[evaluation.ChannelProblem] = []
        timeout = aiohttp.ClientTimeout(total=self.settings.alert_webhook_timeout_seconds)
        sent = []
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for notification in notifications:
                failed = [
                    p
                    for target in targets
                    if (p := await self._send(session, rule, target, notification, now=now)) is not None
                ]
                problems += [p for p in failed if p not in problems]
                if complete and not failed:
                    sent.append(notification)
        return sent, problems

    async def _send(
        self,
        session: aiohttp.ClientSession,
        rule: AlertRule,
        target: _Target,
        notification: evaluation.Notification,
        *,
        now: datetime.datetime,
    ) -> evaluation.ChannelProblem | None:
        """None when the channel took the notification, else what went wrong (no URL, no secret)."""
        body, headers = alert_channels.request_for(
            target.channel.type,
            notification,
            rule=rule.metadata.name or "",
            namespace=rule.metadata.namespace or "",
            severity=rule.spec.severity,
            description=rule.spec.description,
            signing_key=target.key,
            now=now,
        )
        name = target.channel.name
        try:
            async with session.post(target.url, data=body, headers=dict(headers)) as response:
                if response.status >= 300:
                    refused = response.status < 500 and response.status not in _RETRIABLE
                    return evaluation.ChannelProblem(
                        channel=name, problem=f"HTTP {response.status}", lasting=refused
                    )
        except aiohttp.InvalidURL:
            return evaluation.ChannelProblem(channel=name, problem="the URL is not valid", lasting=True)
        except (aiohttp.ClientError, TimeoutError) as error:
            return evaluation.ChannelProblem(channel=name, problem=type(error).__name__)
        return None

    async def _secret(self, namespace: str, ref: SecretKeyRef | None) -> str:
        if ref is None:
            raise LookupError("no URL")
        secret = await self.kube.get(resources.SECRETS, name=ref.name, namespace=namespace)
        if secret is None:
            raise LookupError(f"Secret {ref.name} not found")
        value = secret.get("data", {}).get(ref.key)
        if value is None:
            raise LookupError(f"Secret {ref.name} has no key {ref.key}")
        return base64.b64decode(value).decode().strip()

    async def _record(self, body: Body, records: Sequence[AlertRecord]) -> None:
        """Every transition as an Event, which outlives the bounded history for the Event TTL."""
        for record in records:
            await self.kube.event(
                regarding=body,
                type_="Warning" if record.state is AlertState.FIRING else "Normal",
                reason=f"Alert{record.state}",
                message=f"{record.subject}: {record.message}",
            )


def register(*, kube: KubeClient, settings: Settings, cluster: ClusterView) -> Reconciler:
    """Wake AlertRules from the caches: a rule when it changes, and the rules watching GPUs, services
    or Models when a NodeDevices, an InferenceService or a Model changes; return the reconciler,
    which the runner starts and resyncs."""
    controller = AlertController(kube=kube, settings=settings, cluster=cluster)
    reconciler = Reconciler(
        cache=cluster.alert_rules, reconcile=controller.reconcile, retry_seconds=settings.retry_seconds
    )
    controller.reconciler = reconciler
    when_gone(cluster.alert_rules, controller.forget)

    def wake_watchers(watching: str, *, namespace: str | None) -> None:
        for key, watched in list(controller.watches.items()):
            if watched == watching and (namespace is None or key[0] == namespace):
                controller.wake(key, _COALESCE_SECONDS)

    cluster.node_devices.subscribe(lambda _: wake_watchers("gpu", namespace=None))
    cluster.inference_services.subscribe(
        lambda body: wake_watchers("serviceNotReady", namespace=body["metadata"].get("namespace"))
    )
    cluster.models.subscribe(
        lambda body: wake_watchers("modelFailed", namespace=body["metadata"].get("namespace"))
    )
    return reconciler


def _named(cache: WatchedList, namespace: str, name: str | None) -> list[Body]:
    """The object ``name`` of ``namespace``, or (no name) every one there."""
    if name is None:
        return cache.items(namespace)
    found = cache.get(namespace, name)
    return [found] if found is not None else []
