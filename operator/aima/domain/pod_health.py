"""Why an InferenceService's pods are not serving, in words (pure).

Reads what the scheduler and the kubelet already wrote on the pods: the PodScheduled condition
(`0/3 nodes are available: 2 Insufficient nvidia.com/gpu ...`), container waiting reasons
(ImagePullBackOff, CrashLoopBackOff), the last termination (OOMKilled, exit code and, with
terminationMessagePolicy FallbackToLogsOnError, the last log lines) and readiness. Free GPUs per
node come from the capacity model (aima.domain.capacity, which resource.status uses too), so an
`Insufficient nvidia.com/gpu` message can say how many GPUs are free and where, in the same figures.

Some failures leave no pod to read: a ResourceQuota or an admission webhook refuses the pod, or a
rollout never finishes. The Deployment controller records those in the Deployment's own conditions
(ReplicaFailure, Progressing=False with ProgressDeadlineExceeded), which `creation_failure` and
`stuck_rollout` put in words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aima.api.common import ConditionStatus, Reason
from aima.domain import capacity
from aima.domain.capacity import GPU, NodeGpus

Body = dict[str, Any]

_PULL_FAILURES = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
_STARTING_UP = frozenset({"ContainerCreating", "PodInitializing"})
# Most severe first: the one a person should fix first is the one the Ready condition shows.
_SEVERITY = (
    Reason.IMAGE_PULL_BACK_OFF,
    Reason.OOM_KILLED,
    Reason.CRASH_LOOP_BACK_OFF,
    Reason.HEALTH_CHECK_FAILING,
    Reason.STARTING,
)
_MAX_LOG_CHARS = 1024
# The API server's wording of a refused create; the pod's generated name means nothing to a person.
_FORBIDDEN_POD = re.compile(r'^pods? "[^"]*" is forbidden: ')


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One condition's worth of diagnosis."""

    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True, kw_only=True)
class Probe:
    """The engine's health check, as the pods are probed."""

    path: str
    port: int
    startup_seconds: int


def unscheduled(pods: Sequence[Body]) -> bool:
    """Whether any pod waits for a node, so free GPUs are worth computing."""
    return any(_unschedulable_condition(p) is not None for p in pods)


def scheduling(
    pods: Sequence[Body],
    *,
    gpus: int,
    free: Mapping[str, int] | None,
    nodes: Sequence[NodeGpus] | None = None,
) -> Finding:
    """The Scheduled condition: True when every live pod has a node, else the scheduler's reason.

    ``free`` is the free GPUs per node, when known. ``nodes`` (the GPU nodes the pods may land on)
    tell a pod that waits for GPUs to be freed apart from one that asks more than any node has,
    which no amount of waiting or freeing helps."""
    live = _live(pods)
    for pod in live:
        condition = _unschedulable_condition(pod)
        if condition is None:
            continue
        said = str(condition.get("message", "")).strip()
        name = pod["metadata"]["name"]
        if f"Insufficient {GPU}" in said and nodes is not None and capacity.never_fits(nodes, gpus=gpus):
            return _false(Reason.NO_NODE_LARGE_ENOUGH, _never_fits(name, gpus=gpus, nodes=nodes, said=said))
        if f"Insufficient {GPU}" in said:
            return Finding(
                status=ConditionStatus.FALSE,
                reason=Reason.INSUFFICIENT_GPU,
                message=f"Pod {name} needs {gpus} {GPU} on one node, but no node has that many "
                f"free ({_describe_free(free)}); lower spec.resources.gpus or free GPUs. "
                f"Scheduler: {said}",
            )
        return Finding(
            status=ConditionStatus.FALSE,
            reason=Reason.UNSCHEDULABLE,
            message=f"Pod {name} cannot be scheduled: {said}",
        )
    if not live:
        return Finding(status=ConditionStatus.UNKNOWN, reason=Reason.PENDING, message="No pods yet")
    nodes = sorted({p["spec"]["nodeName"] for p in live if p.get("spec", {}).get("nodeName")})
    if len(nodes) == 0:
        return Finding(status=ConditionStatus.UNKNOWN, reason=Reason.PENDING, message="Pods wait for a node")
    return Finding(
        status=ConditionStatus.TRUE,
        reason=Reason.SCHEDULED,
        message=f"{len(live)} pod(s) scheduled on {', '.join(nodes)}",
    )


def creation_failure(deployment: Body | None) -> Finding | None:
    """Why the Deployment's pods cannot be created (quota, admission), or None when they can (pure)."""
    failure = _deployment_condition(deployment, "ReplicaFailure")
    if failure is None or failure.get("status") != "True":
        return None
    said = _FORBIDDEN_POD.sub("", str(failure.get("message", "")).strip())
    text = f"Pods cannot be created: {said}"
    if "exceeded quota" in said:
        text += "; raise the namespace's ResourceQuota or lower spec.replicas or spec.resources"
    return _false(Reason.FAILED_CREATE, text)


def stuck_rollout(deployment: Body | None) -> Finding | None:
    """The rollout's deadline passed without progress, or None (pure)."""
    progressing = _deployment_condition(deployment, "Progressing")
    if deployment is None or progressing is None or progressing.get("reason") != "ProgressDeadlineExceeded":
        return None
    name = deployment.get("metadata", {}).get("name", "")
    seconds = deployment.get("spec", {}).get("progressDeadlineSeconds")
    within = f"within {seconds}s" if seconds else "within its deadline"
    said = str(progressing.get("message", "")).strip()
    return _false(
        Reason.PROGRESS_DEADLINE_EXCEEDED,
        f"Deployment {name} made no progress {within} (ProgressDeadlineExceeded): {said}".rstrip(": "),
    )


def problem(pods: Sequence[Body], *, probe: Probe, now: datetime) -> Finding | None:
    """The most severe reason a pod's engine is not ready, or None when none is found (pure)."""
    findings = [f for pod in sorted(_live(pods), key=_name) for f in _pod_findings(pod, probe=probe, now=now)]
    if not findings:
        return None
    return min(findings, key=lambda f: _SEVERITY.index(Reason(f.reason)))


def _pod_findings(pod: Body, *, probe: Probe, now: datetime) -> list[Finding]:
    name = pod["metadata"]["name"]
    found = []
    for container in pod.get("status", {}).get("containerStatuses", []):
        finding = _container_finding(container, pod=name, probe=probe, now=now)
        if finding is not None:
            found.append(finding)
    return found


def _container_finding(container: Body, *, pod: str, probe: Probe, now: datetime) -> Finding | None:
    state = container.get("state", {})
    waiting = state.get("waiting") or {}
    last = (container.get("lastState") or {}).get("terminated") or state.get("terminated") or {}
    restarts = container.get("restartCount", 0)
    if waiting.get("reason") in _PULL_FAILURES:
        return _pull_failure(container, pod=pod)
    if last.get("reason") == "OOMKilled":
        return _false(
            Reason.OOM_KILLED,
            f"The engine in pod {pod} ran out of memory and was killed (OOMKilled, {restarts} restarts); "
            "raise spec.resources.limits.memory",
        )
    if waiting.get("reason") == "CrashLoopBackOff":
        return _false(
            Reason.CRASH_LOOP_BACK_OFF,
            f"The engine in pod {pod} keeps crashing ({restarts} restarts); {_last_exit(last)}",
        )
    running = state.get("running")
    if running is None or container.get("ready"):
        return None
    check = f"GET {probe.path} on port {probe.port}"
    started_at = _time(running.get("startedAt"))
    over_budget = started_at is not None and now - started_at > timedelta(seconds=probe.startup_seconds)
    if container.get("started") or over_budget:
        return _false(
            Reason.HEALTH_CHECK_FAILING,
            f"The engine in pod {pod} runs but its health check {check} does not pass",
        )
    text = (
        f"The engine in pod {pod} is loading the model; waiting for {check} "
        f"(startup budget {probe.startup_seconds}s)"
    )
    if restarts and last:
        # Between two crashes the engine looks as if it were loading: say that it is not the first try.
        text += f"; it has exited {restarts} times already, {_last_exit(last)}"
    return _false(Reason.STARTING, text)


def _last_exit(last: Body) -> str:
    """The last termination in words: exit code, reason and the log lines the kubelet kept."""
    text = f"last exit code {last.get('exitCode', 'unknown')} ({last.get('reason', 'Error')})"
    if logs := str(last.get("message", "")).strip():
        text += f"; last log lines:\n{logs[-_MAX_LOG_CHARS:]}"
    return text


def waiting(pods: Sequence[Body]) -> Finding | None:
    """Why a pod that has a node does not run its containers (a pull that fails, a Secret or
    ConfigMap it names that is missing), or None when none is stuck (pure). Containers still being
    created are not stuck."""
    for pod in sorted(_live(pods), key=_name):
        for container in pod.get("status", {}).get("containerStatuses", []):
            why = (container.get("state", {}).get("waiting") or {}).get("reason")
            if why in _PULL_FAILURES:
                return _pull_failure(container, pod=_name(pod))
            if why and why not in _STARTING_UP:
                said = container["state"]["waiting"].get("message", "")
                text = f"Container {container.get('name')} of pod {_name(pod)} cannot start ({why}): {said}"
                return _false(Reason.CONTAINER_WAITING, text.rstrip(": "))
    return None


def _pull_failure(container: Body, *, pod: str) -> Finding:
    waiting = container["state"]["waiting"]
    return _false(
        Reason.IMAGE_PULL_BACK_OFF,
        f"Pod {pod} cannot pull image {container.get('image')} ({waiting['reason']}): "
        f"{waiting.get('message', '')}".rstrip(": "),
    )


def _false(reason: str, message: str) -> Finding:
    return Finding(status=ConditionStatus.FALSE, reason=reason, message=message)


def _unschedulable_condition(pod: Body) -> Body | None:
    return next(
        (
            c
            for c in pod.get("status", {}).get("conditions", [])
            if c.get("type") == "PodScheduled" and c.get("status") == "False"
        ),
        None,
    )


def _deployment_condition(deployment: Body | None, type_: str) -> Body | None:
    """A condition of the Deployment, unless the Deployment controller has not seen its spec yet:
    conditions about an older spec would blame the new one for the old one's trouble."""
    if deployment is None:
        return None
    status = deployment.get("status", {})
    if status.get("observedGeneration", 0) < deployment.get("metadata", {}).get("generation", 0):
        return None
    return next((c for c in status.get("conditions", []) if c.get("type") == type_), None)


def _never_fits(pod: str, *, gpus: int, nodes: Sequence[NodeGpus], said: str) -> str:
    largest = capacity.largest_node(nodes)
    if largest is None:
        return (
            f"Pod {pod} needs {gpus} {GPU} on one node, but no node offers {GPU}: it can "
            f"never be scheduled, and waiting does not help; add GPU nodes or set spec.resources.gpus to 0. "
            f"Scheduler: {said}"
        )
    offered = ", ".join(f"{n.name} {n.allocatable}" for n in sorted(nodes, key=lambda n: n.name))
    return (
        f"Pod {pod} needs {gpus} {GPU} on one node, but the largest node has {largest.allocatable} "
        f"({offered}): it can never be scheduled, and freeing GPUs does not help; lower "
        f"spec.resources.gpus to {largest.allocatable} or fewer, or add a node with {gpus} GPUs. "
        f"Scheduler: {said}"
    )


def _describe_free(free: Mapping[str, int] | None) -> str:
    if not free:
        return f"no node offers {GPU}"
    return "free now: " + ", ".join(f"{node} {count}" for node, count in sorted(free.items()))


def _live(pods: Sequence[Body]) -> list[Body]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp") and not capacity.finished(p)]


def _name(pod: Body) -> str:
    return str(pod["metadata"]["name"])


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
