"""resource.*: GPU capacity and use, read from Nodes and Pods, and whether a workload fits.

GPUs are counted as the scheduler counts them: a node offers `status.allocatable["nvidia.com/gpu"]`,
and every pod bound to it that has not finished uses its effective request (the larger of the sum over
containers and the largest init container). The pure functions below do the arithmetic; the units
only read Nodes and Pods.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import Field

from aima.api.common import ApiModel, Keys
from aima.kube import resources
from aima.units.core import Context, Example, Input, query

__all__ = [
    "UNITS",
    "Allocation",
    "NodeGpus",
    "Placement",
    "ResourceStatus",
    "allocations_of",
    "place",
    "pod_gpus",
    "status_of",
]

GPU = "nvidia.com/gpu"
_DONE = frozenset({"Succeeded", "Failed"})


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
    nodes, pods = await _observe(context)
    return status_of(_matching(nodes, request.gpu_product), pods)


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
    nodes, pods = await _observe(context)
    current = status_of(_matching(nodes, request.gpu_product), pods)
    return place(current, gpus=request.gpus, replicas=request.replicas)


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


def pod_gpus(pod: dict[str, Any]) -> int:
    """GPUs a pod requests: the larger of its containers' sum and its largest init container."""
    spec = pod.get("spec", {})
    main = sum(_container_gpus(c) for c in spec.get("containers", []))
    init = max((_container_gpus(c) for c in spec.get("initContainers", [])), default=0)
    return max(main, init)


def allocations_of(pods: Iterable[dict[str, Any]]) -> list[Allocation]:
    """The pods that request GPUs and have not finished."""
    found = []
    for pod in pods:
        gpus = pod_gpus(pod)
        phase = pod.get("status", {}).get("phase")
        if not gpus or phase in _DONE:
            continue
        meta = pod["metadata"]
        found.append(
            Allocation(
                namespace=meta.get("namespace", ""),
                pod=meta["name"],
                node=pod["spec"].get("nodeName"),
                gpus=gpus,
                phase=phase,
                service=meta.get("labels", {}).get(Keys.INFERENCE_SERVICE),
            )
        )
    return sorted(found, key=lambda a: (a.node or "~", a.namespace, a.pod))


def status_of(nodes: Sequence[dict[str, Any]], pods: Sequence[dict[str, Any]]) -> ResourceStatus:
    """GPU capacity and use of `nodes`, given every pod of the cluster (pure)."""
    held = allocations_of(pods)
    used: dict[str, int] = {}
    for allocation in held:
        if allocation.node:
            used[allocation.node] = used.get(allocation.node, 0) + allocation.gpus
    rows = []
    for node in nodes:
        allocatable = _quantity(node.get("status", {}).get("allocatable", {}).get(GPU))
        if not allocatable:
            continue
        name = node["metadata"]["name"]
        labels = node["metadata"].get("labels", {})
        taken = used.get(name, 0)
        memory = labels.get("nvidia.com/gpu.memory", "")
        rows.append(
            NodeGpus(
                name=name,
                product=labels.get("nvidia.com/gpu.product"),
                memory_mib=int(memory) if memory.isdigit() else None,
                allocatable=allocatable,
                used=taken,
                free=max(0, allocatable - taken),
                schedulable=_schedulable(node),
            )
        )
    rows.sort(key=lambda r: r.name)
    total = sum(r.allocatable for r in rows)
    free = sum(r.free for r in rows if r.schedulable)
    pending = sum(1 for a in held if a.node is None)
    return ResourceStatus(
        total=total,
        used=sum(r.used for r in rows),
        free=free,
        pending_pods=pending,
        nodes=rows,
        summary=_free_sentence(rows, free=free, total=total),
    )


def place(status: ResourceStatus, *, gpus: int, replicas: int) -> Placement:
    """Place each replica on the schedulable node with the most free GPUs that holds it whole (pure)."""
    free = {n.name: n.free for n in status.nodes if n.schedulable}
    chosen: list[str] = []
    for _ in range(replicas):
        fitting = [name for name, left in free.items() if left >= gpus]
        if not fitting:
            break
        best = max(sorted(fitting), key=lambda name: free[name])  # ties: the first name
        free[best] -= gpus
        chosen.append(best)
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


def _free_sentence(rows: Sequence[NodeGpus], *, free: int, total: int) -> str:
    if not rows:
        return "No node offers nvidia.com/gpu"
    per_node = ", ".join(
        f"{r.name} has {r.free}" + ("" if r.schedulable else " (not schedulable)") for r in rows
    )
    return f"{free} of {total} GPUs free: {per_node}"


def _container_gpus(container: dict[str, Any]) -> int:
    # Extended resources may be given as limits only; requests then default to them.
    wanted = container.get("resources", {})
    return _quantity(wanted.get("requests", {}).get(GPU) or wanted.get("limits", {}).get(GPU))


def _quantity(value: Any) -> int:
    try:
        return int(value) if value is not None else 0
    except (TypeError, ValueError):
        return 0


def _schedulable(node: dict[str, Any]) -> bool:
    if node.get("spec", {}).get("unschedulable"):
        return False
    conditions = node.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _matching(nodes: list[dict[str, Any]], product: str | None) -> list[dict[str, Any]]:
    if product is None:
        return nodes
    return [n for n in nodes if n["metadata"].get("labels", {}).get("nvidia.com/gpu.product") == product]


async def _observe(context: Context) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    nodes = await context.kube.list(resources.NODES)
    pods = await context.kube.list(resources.PODS)
    return nodes, pods


UNITS = (status, can_allocate, allocations)
