"""GPU capacity as the scheduler counts it: the one model the controllers and the units share (pure).

A node offers `status.allocatable["nvidia.com/gpu"]` to the scheduler (it advertises
`status.capacity`, of which the device plugin may withhold some). A pod bound to a node holds its
effective request there until it finishes (Succeeded or Failed). The effective request follows the
scheduler's rule for init containers: the app containers run beside every sidecar (an init container
with restartPolicy Always), each other init container runs alone beside the sidecars started before
it, and the pod needs the larger of the two, plus its overhead.

A node's free GPUs are its allocatable ones less what its pods hold; where its device agent reports
(NodeDevices), GPUs found Unhealthy are not free either, whether or not the device plugin has
withdrawn them yet. A replica's GPUs must share one node, so a replica larger than every node (of
the GPU product it asks for) never fits, however many GPUs free up; one that only finds them busy
waits. A namespace's budget is the free GPUs within its ResourceQuota on `requests.nvidia.com/gpu`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from aima.api.common import ApiModel
from aima.api.device import Gpu, GpuHealth, NodeDevices

__all__ = [
    "GPU",
    "GPU_PRODUCT_LABEL",
    "AgentReports",
    "AgentState",
    "GpuBudget",
    "NodeGpus",
    "Quota",
    "advertised_gpus",
    "agent_state",
    "allocatable_gpus",
    "budget",
    "finished",
    "free_by_node",
    "gpu_memory_mib",
    "gpu_product",
    "holding_node",
    "largest_gpu_memory_mib",
    "largest_node",
    "never_fits",
    "node_gpus",
    "nodes_with_product",
    "place",
    "pod_gpus",
    "rows_with_product",
    "schedulable",
    "tightest_quota",
    "total_allocatable",
    "total_free",
]

Body = dict[str, Any]

GPU = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
"""Memory per GPU in MiB, as GPU feature discovery labels a node."""
QUOTA_KEY = f"requests.{GPU}"
_FINISHED = frozenset({"Succeeded", "Failed"})
_SIDECAR = "Always"
"""The restartPolicy that makes an init container a sidecar: it keeps running beside the app."""


class AgentState(StrEnum):
    """What is known of a node's device agent."""

    REPORTING = "Reporting"
    STALE = "Stale"
    """It reported, but not lately: its figures are old."""
    NO_NVML = "NoNvml"
    """It runs, and NVML is not available on the node (the message says why)."""
    MISSING = "Missing"
    """The node advertises GPUs and no agent reports for it."""


class NodeGpus(ApiModel):
    """GPUs of one node."""

    name: str
    product: str | None = None
    """GPU model, from the nvidia.com/gpu.product label."""
    memory_mib: int | None = None
    """Memory per GPU, from the nvidia.com/gpu.memory label."""
    allocatable: int
    used: int
    free: int
    schedulable: bool
    """Ready and not cordoned; new pods can land here."""
    agent: AgentState = AgentState.MISSING
    """Whether the node's device agent reports (Reporting, Stale, NoNvml, Missing)."""
    unhealthy: int = 0
    """GPUs the agent reports Unhealthy; they are not counted free."""
    memory_used_mib: int | None = None
    """GPU memory in use on the node, from the agent."""
    memory_total_mib: int | None = None
    """GPU memory of the node, from the agent."""


@dataclass(frozen=True, kw_only=True)
class AgentReports:
    """The device agents' reports by node name, read at ``now``; older than ``stale_seconds``, a
    report says nothing about now."""

    by_node: Mapping[str, NodeDevices]
    now: datetime
    stale_seconds: float


@dataclass(frozen=True, kw_only=True)
class Quota:
    """A ResourceQuota's figures for requests.nvidia.com/gpu."""

    hard: int
    used: int

    @property
    def left(self) -> int:
        """GPUs the quota still allows."""
        return max(0, self.hard - self.used)


@dataclass(frozen=True, kw_only=True)
class GpuBudget:
    """How many GPUs a namespace may start now."""

    free: int
    """Free GPUs on schedulable nodes."""
    quota: Quota | None
    """The namespace's tightest GPU quota; None when it has none."""
    available: int
    """The free GPUs, within what the quota leaves."""
    largest_on_one_node: int
    """The most GPUs one pod can get now, within the quota; 0 when none."""
    largest_node: NodeGpus | None
    """Where that is; None when no pod can get one."""


# ---- pods -------------------------------------------------------------------------------------


def pod_gpus(pod: Body) -> int:
    """GPUs a pod requests, as the scheduler counts them (see the module's docstring)."""
    spec = pod.get("spec", {})
    app = sum(_container_gpus(c) for c in spec.get("containers", []))
    sidecars = 0
    init_peak = 0
    for init in spec.get("initContainers", []):
        gpus = _container_gpus(init)
        if init.get("restartPolicy") == _SIDECAR:
            sidecars += gpus
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, sidecars + gpus)
    return max(app + sidecars, init_peak) + _quantity(spec.get("overhead", {}).get(GPU))


def finished(pod: Body) -> bool:
    """Whether the pod has finished (Succeeded or Failed) and so holds nothing any more."""
    return pod.get("status", {}).get("phase") in _FINISHED


def holding_node(pod: Body) -> str | None:
    """The node whose GPUs the pod holds: the one it is bound to, until it finishes; else None."""
    node: str | None = pod.get("spec", {}).get("nodeName")
    return node if node and not finished(pod) else None


def _used_by_node(pods: Iterable[Body]) -> dict[str, int]:
    used: dict[str, int] = {}
    for pod in pods:
        if node := holding_node(pod):
            used[node] = used.get(node, 0) + pod_gpus(pod)
    return used


def _container_gpus(container: Body) -> int:
    # Extended resources may be given as limits only; requests then default to them.
    wanted = container.get("resources", {})
    return _quantity(wanted.get("requests", {}).get(GPU) or wanted.get("limits", {}).get(GPU))


# ---- nodes ------------------------------------------------------------------------------------


def allocatable_gpus(node: Body) -> int:
    """GPUs the node offers the scheduler."""
    return _quantity(node.get("status", {}).get("allocatable", {}).get(GPU))


def advertised_gpus(node: Body) -> int:
    """GPUs the node advertises in its capacity, whether or not all are offered."""
    return _quantity(node.get("status", {}).get("capacity", {}).get(GPU))


def gpu_product(node: Body) -> str | None:
    """The node's GPU model, from its nvidia.com/gpu.product label."""
    product: str | None = _labels(node).get(GPU_PRODUCT_LABEL)
    return product


def gpu_memory_mib(node: Body) -> int | None:
    """Memory per GPU of the node, from its nvidia.com/gpu.memory label; None when unlabelled."""
    label = str(_labels(node).get(GPU_MEMORY_LABEL, ""))
    return int(label) if label.isdigit() else None


def largest_gpu_memory_mib(nodes: Iterable[Body], *, default: int) -> int:
    """The most memory one GPU of the cluster has, by the nodes' labels; ``default`` when no node
    says (a label of 0 says nothing)."""
    return max((gpu_memory_mib(n) or 0 for n in nodes), default=0) or default


def schedulable(node: Body) -> bool:
    """Whether new pods can land on the node: Ready and not cordoned."""
    if node.get("spec", {}).get("unschedulable"):
        return False
    conditions = node.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def nodes_with_product(nodes: Sequence[Body], product: str | None) -> list[Body]:
    """The Node objects with GPU model ``product``; all of them when it is None."""
    return [n for n in nodes if product is None or gpu_product(n) == product]


def agent_state(report: NodeDevices | None, *, now: datetime, stale_seconds: float) -> AgentState:
    """The agent's state from its NodeDevices object."""
    if report is None or report.status is None or report.status.updated_at is None:
        return AgentState.MISSING
    if (now - report.status.updated_at).total_seconds() > stale_seconds:
        return AgentState.STALE
    return AgentState.REPORTING if report.status.nvml else AgentState.NO_NVML


def node_gpus(
    nodes: Sequence[Body], pods: Iterable[Body], *, agents: AgentReports | None = None
) -> list[NodeGpus]:
    """Each node that offers GPUs, by name, with what ``pods`` (every pod of the cluster) hold there
    and, where ``agents`` report, what they found."""
    used = _used_by_node(pods)
    rows = [
        _node_row(node, used=used.get(node["metadata"]["name"], 0), agents=agents)
        for node in nodes
        if allocatable_gpus(node)
    ]
    return sorted(rows, key=lambda r: r.name)


def _node_row(node: Body, *, used: int, agents: AgentReports | None) -> NodeGpus:
    name = node["metadata"]["name"]
    allocatable = allocatable_gpus(node)
    report = agents.by_node.get(name) if agents else None
    state = agent_state(report, now=agents.now, stale_seconds=agents.stale_seconds) if agents else None
    gpus: Sequence[Gpu] = (
        report.status.gpus if report and report.status and state is AgentState.REPORTING else []
    )
    unhealthy = sum(1 for g in gpus if g.health is GpuHealth.UNHEALTHY)
    # An unhealthy GPU the device plugin still offers would be handed to a pod: not free.
    healthy = min(allocatable, len(gpus) - unhealthy) if gpus else allocatable
    return NodeGpus(
        name=name,
        product=gpu_product(node),
        memory_mib=gpu_memory_mib(node) or _first_memory(gpus),
        allocatable=allocatable,
        used=used,
        free=max(0, healthy - used),
        schedulable=schedulable(node),
        agent=state or AgentState.MISSING,
        unhealthy=unhealthy,
        memory_used_mib=_sum_or_none(g.memory_used_mib for g in gpus),
        memory_total_mib=_sum_or_none(g.memory_total_mib for g in gpus),
    )


def _first_memory(gpus: Sequence[Gpu]) -> int | None:
    return next((g.memory_total_mib for g in gpus if g.memory_total_mib), None)


def _sum_or_none(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


# ---- what fits --------------------------------------------------------------------------------


def rows_with_product(rows: Sequence[NodeGpus], product: str | None) -> list[NodeGpus]:
    """The GPU nodes with GPU model ``product``; all of them when it is None."""
    return [r for r in rows if product is None or r.product == product]


def total_allocatable(rows: Iterable[NodeGpus]) -> int:
    """GPUs the nodes offer, busy or not."""
    return sum(r.allocatable for r in rows)


def total_free(rows: Iterable[NodeGpus]) -> int:
    """Free GPUs where new pods can land (schedulable nodes)."""
    return sum(r.free for r in rows if r.schedulable)


def free_by_node(rows: Iterable[NodeGpus]) -> dict[str, int]:
    """Free GPUs per node, schedulable or not."""
    return {r.name: r.free for r in rows}


def largest_node(rows: Sequence[NodeGpus], *, gpu_product: str | None = None) -> NodeGpus | None:
    """The node (with ``gpu_product``, if given) that offers the most GPUs, busy or not; ties go to
    the first by name. None when there is no such node."""
    ordered = sorted(rows_with_product(rows, gpu_product), key=lambda r: r.name)
    return max(ordered, key=lambda r: r.allocatable, default=None)


def never_fits(rows: Sequence[NodeGpus], *, gpus: int, gpu_product: str | None = None) -> bool:
    """Whether a replica of ``gpus`` can never be scheduled: no node (with ``gpu_product``) has that
    many GPUs in all. GPUs that are only busy, cordoned or unhealthy now count, as they come back."""
    largest = largest_node(rows, gpu_product=gpu_product)
    return largest is None or largest.allocatable < gpus


def place(rows: Sequence[NodeGpus], *, gpus: int, replicas: int) -> list[str]:
    """The node for each replica that fits in the free GPUs now, in order: each goes to the
    schedulable node with the most free GPUs that holds it whole (ties: the first name)."""
    free = {r.name: r.free for r in rows if r.schedulable}
    chosen: list[str] = []
    for _ in range(replicas):
        fitting = sorted(name for name, left in free.items() if left >= gpus)
        if not fitting:
            break
        best = max(fitting, key=lambda name: free[name])
        free[best] -= gpus
        chosen.append(best)
    return chosen


# ---- budgets ----------------------------------------------------------------------------------


def tightest_quota(quotas: Iterable[Body]) -> Quota | None:
    """Of the ResourceQuotas that limit requests.nvidia.com/gpu, the one that leaves the fewest."""
    limits = [
        Quota(hard=_quantity(hard.get(QUOTA_KEY)), used=_quantity(q["status"].get("used", {}).get(QUOTA_KEY)))
        for q in quotas
        if QUOTA_KEY in (hard := q.get("status", {}).get("hard", {}))
    ]
    return min(limits, key=lambda q: q.hard - q.used, default=None)


def budget(rows: Sequence[NodeGpus], quotas: Iterable[Body]) -> GpuBudget:
    """What a namespace with ``quotas`` may start on the GPU nodes ``rows`` now."""
    free = total_free(rows)
    quota = tightest_quota(quotas)
    available = free if quota is None else min(free, quota.left)
    roomiest = max((r for r in rows if r.schedulable), key=lambda r: (r.free, r.name), default=None)
    largest = min(roomiest.free, available) if roomiest else 0
    return GpuBudget(
        free=free,
        quota=quota,
        available=available,
        largest_on_one_node=largest,
        largest_node=roomiest if largest else None,
    )


def _labels(node: Body) -> dict[str, Any]:
    labels: dict[str, Any] = node.get("metadata", {}).get("labels", {})
    return labels


def _quantity(value: Any) -> int:
    try:
        return int(value) if value is not None else 0
    except (TypeError, ValueError):
        return 0
