"""resource.*: GPU capacity and use, read from Nodes and Pods, and whether a workload fits.

GPUs are counted as the scheduler counts them (aima.domain.capacity, which the InferenceService
controller's scheduling explanations use too): a node offers `status.allocatable["nvidia.com/gpu"]`,
and every pod bound to it that has not finished uses its effective request (init containers and
sidecars included). Where a node's device agent reports (NodeDevices), its figures join in: GPUs it
finds Unhealthy are not counted free, and memory in use is shown. Namespaces with a ResourceQuota on
`requests.nvidia.com/gpu` get their quota's word in `resource.budget`. `never_fits` is what
`service.create`, `service.scale` and `service.start` refuse with: a replica larger than any node.
The units only read Nodes, Pods, NodeDevices and ResourceQuotas; the functions below put the
capacity model's figures in words.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import Field

from aima.api.common import ApiModel, Keys
from aima.api.device import NodeDevices
from aima.domain import capacity
from aima.domain.capacity import GPU, GPU_PRODUCT_LABEL, NodeGpus, pod_gpus
from aima.kube import KubeError, resources
from aima.kube.resources import Resource
from aima.units.core import Context, Example, Input, query
from aima.units.device import node_devices
from aima.units.errors import ErrorCode, UnitError

__all__ = [
    "UNITS",
    "Allocation",
    "Budget",
    "NodeGpus",
    "Placement",
    "ResourceStatus",
    "allocations_of",
    "budget_of",
    "never_fits",
    "observe",
    "place",
    "pod_gpus",
    "status_of",
]

RESOURCE_QUOTAS = Resource("", "v1", "resourcequotas", "ResourceQuota")
logger = logging.getLogger("aima.units.resource")


class ResourceStatus(ApiModel):
    """GPU capacity and use of the cluster."""

    total: int
    """Allocatable GPUs on all nodes."""
    used: int
    free: int
    """Free GPUs on schedulable nodes."""
    pending_pods: int = 0
    """Pods that request GPUs and wait for a node."""
    nodes: list[NodeGpus]
    summary: str
    """The same in one sentence."""


class Allocation(ApiModel):
    """One pod that holds or waits for GPUs."""

    namespace: str
    pod: str
    node: str | None = None
    """Where it runs; empty while it waits for a node."""
    gpus: int
    phase: str | None = None
    service: str | None = None
    """The InferenceService it belongs to, if any."""


class AllocationList(ApiModel):
    """Pods that hold or wait for GPUs."""

    items: list[Allocation]


class AllocationsInput(Input):
    """Whose GPU pods to list."""

    namespace: str | None = Field(default=None, max_length=63)
    """Only pods of this namespace; every namespace when empty."""
    node: str | None = Field(default=None, max_length=253)
    """Only pods on this node."""


class StatusInput(Input):
    """Which GPUs to report."""

    gpu_product: str | None = Field(default=None, max_length=128)
    """Only nodes with this GPU model (nvidia.com/gpu.product), such as NVIDIA-H100-80GB-HBM3."""


class CanAllocateInput(Input):
    """A workload: replicas of some GPUs each, all GPUs of a replica on one node."""

    gpus: int = Field(default=1, ge=1, le=64)
    """GPUs per replica."""
    replicas: int = Field(default=1, ge=1, le=1000)
    """Replicas to place."""
    gpu_product: str | None = Field(default=None, max_length=128)
    """Only nodes with this GPU model."""


class BudgetInput(Input):
    """Whose GPU budget to report."""

    namespace: str | None = Field(default=None, max_length=63)
    """The namespace whose ResourceQuota counts; the default namespace when empty."""
    gpu_product: str | None = Field(default=None, max_length=128)
    """Only nodes with this GPU model."""


class Budget(ApiModel):
    """How many GPUs a namespace may start now: the cluster's free GPUs within its quota."""

    namespace: str
    free: int
    """Free GPUs in the cluster (healthy, on schedulable nodes)."""
    quota_hard: int | None = None
    """The namespace's ResourceQuota on requests.nvidia.com/gpu (the tightest, if several); empty
    when it has none."""
    quota_used: int | None = None
    """GPUs the quota counts as requested."""
    available: int
    """GPUs the namespace may start now: the free GPUs, within what the quota leaves."""
    largest_on_one_node: int
    """The most GPUs one pod can get now (a replica's GPUs must share a node), within the quota."""
    largest_node: str | None = None
    """Where that is."""
    gpu_memory_mib: int | None = None
    """Memory per GPU on that node, from the GFD label or the agent."""
    summary: str


class Placement(ApiModel):
    """Whether a workload fits in the free GPUs now, and where."""

    fits: bool
    nodes: list[str]
    """The node for each replica that fits, in order."""
    free: int
    needed: int
    message: str


@query(
    "resource.status",
    description="GPUs per node: allocatable, used by running pods, free; with a one-sentence summary.",
    examples=[
        Example(description="Every GPU node", input={}),
        Example(description="H100 nodes only", input={"gpuProduct": "NVIDIA-H100-80GB-HBM3"}),
    ],
)
async def status(context: Context, request: StatusInput) -> ResourceStatus:
    return await observe(context, gpu_product=request.gpu_product)


@query(
    "resource.can_allocate",
    description="Whether replicas of N GPUs each fit in the free GPUs now (a replica's GPUs on one "
    "node), where they would go, and why not.",
    examples=[
        Example(description="One replica of two GPUs", input={"gpus": 2}),
        Example(
            description="Four single-GPU replicas on H100s",
            input={"replicas": 4, "gpuProduct": "NVIDIA-H100-80GB-HBM3"},
        ),
    ],
)
async def can_allocate(context: Context, request: CanAllocateInput) -> Placement:
    current = await observe(context, gpu_product=request.gpu_product)
    return place(current, gpus=request.gpus, replicas=request.replicas)


@query(
    "resource.budget",
    description="How many GPUs a namespace may start now: free GPUs in the cluster within its "
    "ResourceQuota on requests.nvidia.com/gpu, and the most one replica can get on one node.",
    examples=[
        Example(description="The default namespace", input={}),
        Example(description="On H100s only", input={"gpuProduct": "NVIDIA-H100-80GB-HBM3"}),
    ],
)
async def budget(context: Context, request: BudgetInput) -> Budget:
    namespace = context.namespace_of(request.namespace)
    (nodes, pods, devices), quotas = await asyncio.gather(
        _observe(context), context.kube.list(RESOURCE_QUOTAS, namespace=namespace)
    )
    current = _status(context, capacity.nodes_with_product(nodes, request.gpu_product), pods, devices)
    return budget_of(current, quotas, namespace=namespace)


@query(
    "resource.allocations",
    description="Pods that hold GPUs (or wait for them): namespace, node, GPUs and InferenceService.",
    examples=[
        Example(description="Every GPU pod", input={}),
        Example(description="On one node", input={"node": "gpu-node-0"}),
    ],
)
async def allocations(context: Context, request: AllocationsInput) -> AllocationList:
    pods = await context.kube.list(resources.PODS, namespace=request.namespace)
    items = [a for a in allocations_of(pods) if request.node is None or a.node == request.node]
    return AllocationList(items=items)


def allocations_of(pods: Iterable[dict[str, Any]]) -> list[Allocation]:
    """The pods that request GPUs and have not finished."""
    found = []
    for pod in pods:
        gpus = pod_gpus(pod)
        if not gpus or capacity.finished(pod):
            continue
        meta = pod["metadata"]
        found.append(
            Allocation(
                namespace=meta.get("namespace", ""),
                pod=meta["name"],
                node=pod["spec"].get("nodeName"),
                gpus=gpus,
                phase=pod.get("status", {}).get("phase"),
                service=meta.get("labels", {}).get(Keys.INFERENCE_SERVICE),
            )
        )
    return sorted(found, key=lambda a: (a.node or "~", a.namespace, a.pod))


def status_of(
    nodes: Sequence[dict[str, Any]],
    pods: Sequence[dict[str, Any]],
    *,
    devices: Mapping[str, NodeDevices] | None = None,
    now: datetime.datetime | None = None,
    stale_seconds: float = 900.0,
) -> ResourceStatus:
    """GPU capacity and use of `nodes`, given every pod of the cluster and the device agents'
    reports by node name (reports older than ``stale_seconds`` before ``now`` are ignored)."""
    agents = capacity.AgentReports(
        by_node=devices or {},
        now=now or datetime.datetime.now(datetime.UTC),
        stale_seconds=stale_seconds,
    )
    rows = capacity.node_gpus(nodes, pods, agents=agents)
    return ResourceStatus(
        total=capacity.total_allocatable(rows),
        used=sum(r.used for r in rows),
        free=capacity.total_free(rows),
        pending_pods=sum(1 for a in allocations_of(pods) if a.node is None),
        nodes=rows,
        summary=_free_sentence(rows),
    )


def place(status: ResourceStatus, *, gpus: int, replicas: int) -> Placement:
    """Where replicas of ``gpus`` each go in the free GPUs now (see capacity.place), in words (pure)."""
    chosen = capacity.place(status.nodes, gpus=gpus, replicas=replicas)
    fits = len(chosen) == replicas
    want = f"{replicas} replica{'s' if replicas > 1 else ''} of {gpus} GPU{'s' if gpus > 1 else ''}"
    need = "needs" if replicas == 1 else "need"
    if fits:
        verdict = f"{want} {'fits' if replicas == 1 else 'fit'}: on {', '.join(chosen)}"
    elif chosen:
        verdict = f"{want} {need} {gpus} on one node each: only {len(chosen)} fit"
    else:
        verdict = f"{want} {need} {gpus} on one node: not schedulable"
    return Placement(
        fits=fits,
        nodes=chosen,
        free=status.free,
        needed=gpus * replicas,
        message=f"{status.summary}; {verdict}",
    )


def never_fits(status: ResourceStatus, *, gpus: int, gpu_product: str | None) -> UnitError | None:
    """INSUFFICIENT_RESOURCES when a replica of ``gpus`` can never be scheduled: no node (with
    ``gpu_product``, if given) has that many GPUs in all, busy or not; else None (pure).

    GPUs that are only busy now are no reason to refuse: they free up, and the service's status
    explains the wait. Cordoned or unhealthy GPUs count as capacity for the same reason.
    """
    if not capacity.never_fits(status.nodes, gpus=gpus, gpu_product=gpu_product):
        return None
    rows = capacity.rows_with_product(status.nodes, gpu_product)
    largest = capacity.largest_node(rows)
    message = _never_fits_message(status, rows=rows, largest=largest, gpus=gpus, gpu_product=gpu_product)
    details = {
        "gpusPerReplica": gpus,
        "gpuProduct": gpu_product,
        "largestNode": largest.name if largest else None,
        "largestNodeCapacity": largest.allocatable if largest else 0,
        "freeByNode": capacity.free_by_node(rows),
    }
    return UnitError(ErrorCode.INSUFFICIENT_RESOURCES, message, details)


def _never_fits_message(
    status: ResourceStatus,
    *,
    rows: Sequence[NodeGpus],
    largest: NodeGpus | None,
    gpus: int,
    gpu_product: str | None,
) -> str:
    want = f"A replica needs {gpus} GPU{'s' if gpus > 1 else ''} on one node"
    if largest is None and gpu_product is not None:
        products = ", ".join(sorted({n.product for n in status.nodes if n.product})) or "none"
        return (
            f"No node has GPU product {gpu_product} (label {GPU_PRODUCT_LABEL}); products in the "
            f"cluster: {products}. Choose one of those in resources.gpuProduct, or leave it empty"
        )
    if largest is None:
        return f"{want}, but no node offers {GPU}; set resources.gpus to 0 to run on CPU, or add GPU nodes"
    kind = f"{gpu_product} node" if gpu_product else "GPU node"
    return (
        f"{want}, but the largest {kind} ({largest.name}) has {largest.allocatable}: it can never be "
        f"scheduled; lower resources.gpus to at most {largest.allocatable}. {_free_sentence(rows)}"
    )


def budget_of(status: ResourceStatus, quotas: Sequence[dict[str, Any]], *, namespace: str) -> Budget:
    """What ``namespace`` may start now, from the cluster's GPUs and its ResourceQuotas (pure)."""
    found = capacity.budget(status.nodes, quotas)
    quota, node = found.quota, found.largest_node
    said = (
        "no GPU quota"
        if quota is None
        else f"its quota leaves {quota.left} ({quota.used} of {quota.hard} used)"
    )
    where = f"; at most {found.largest_on_one_node} on one node ({node.name})" if node else ""
    return Budget(
        namespace=namespace,
        free=found.free,
        quota_hard=quota.hard if quota else None,
        quota_used=quota.used if quota else None,
        available=found.available,
        largest_on_one_node=found.largest_on_one_node,
        largest_node=node.name if node else None,
        gpu_memory_mib=node.memory_mib if node else None,
        summary=f"{namespace} may start {found.available} GPUs now: {found.free} free in the cluster, "
        f"{said}{where}",
    )


def _free_sentence(rows: Sequence[NodeGpus]) -> str:
    if not rows:
        return f"No node offers {GPU}"
    per_node = ", ".join(f"{r.name} has {r.free}" + _remarks(r) for r in rows)
    return f"{capacity.total_free(rows)} of {capacity.total_allocatable(rows)} GPUs free: {per_node}"


def _remarks(row: NodeGpus) -> str:
    remarks = [] if row.schedulable else ["not schedulable"]
    if row.unhealthy:
        remarks.append(f"{row.unhealthy} unhealthy")
    return f" ({', '.join(remarks)})" if remarks else ""


async def observe(context: Context, *, gpu_product: str | None = None) -> ResourceStatus:
    """The cluster's GPUs now, as resource.status reports them (only nodes with ``gpu_product``)."""
    nodes, pods, devices = await _observe(context)
    return _status(context, capacity.nodes_with_product(nodes, gpu_product), pods, devices)


def _status(
    context: Context, nodes: Sequence[dict[str, Any]], pods: list[dict[str, Any]], devices: list[NodeDevices]
) -> ResourceStatus:
    return status_of(
        nodes,
        pods,
        devices={d.spec.node_name: d for d in devices},
        stale_seconds=context.settings.device_stale_seconds,
    )


async def _observe(
    context: Context,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[NodeDevices]]:
    return await asyncio.gather(
        context.kube.list(resources.NODES), context.kube.list(resources.PODS), _agent_reports(context)
    )


async def _agent_reports(context: Context) -> list[NodeDevices]:
    """The agents' reports, or none when they cannot be read (no RBAC, CRD still starting): GPU
    accounting still answers from nodes and pods, and every node then shows agent Missing."""
    try:
        return await node_devices(context.kube)
    except KubeError as error:
        logger.warning("Device agents' reports unavailable, counting from nodes and pods: %s", error)
        return []


UNITS = (status, can_allocate, allocations, budget)
