"""GPU arithmetic of resource.*: capacity from nodes, use from pods, placement (pure)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from aima.api.device import Gpu, GpuHealth, NodeDevices, NodeDevicesSpec, NodeDevicesStatus
from aima.api.inference_service import InferenceServiceSpec, ServiceResources
from aima.units.device import AgentState
from aima.units.errors import ErrorCode
from aima.units.resource import allocations_of, budget_of, never_fits, place, pod_gpus, status_of
from aima.units.service import capacity_warning, replica_gpus, runs_after

pytestmark = pytest.mark.unit


def node(name: str, gpus: int, *, ready: bool = True, cordoned: bool = False) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"nvidia.com/gpu.product": "H100", "nvidia.com/gpu.memory": "81559"},
        },
        "spec": {"unschedulable": cordoned},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus)} if gpus else {},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pod(
    name: str, gpus: int, *, node: str | None, phase: str = "Running", limits_only: bool = False
) -> dict[str, Any]:
    amount = {"nvidia.com/gpu": str(gpus)}
    resources = {"limits": amount} if limits_only else {"requests": amount, "limits": amount}
    return {
        "metadata": {"name": name, "namespace": "ns", "labels": {"aima.dev/inference-service": "svc"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "resources": resources}]},
        "status": {"phase": phase},
    }


NODES = [node("gpu-node-0", 8), node("gpu-node-1", 8), node("cpu-node-0", 0)]


def test_pod_gpus_count_limits_only_and_init_containers() -> None:
    assert pod_gpus(pod("a", 2, node=None, limits_only=True)) == 2
    with_init = pod("b", 1, node=None)
    with_init["spec"]["initContainers"] = [{"resources": {"limits": {"nvidia.com/gpu": "3"}}}]
    assert pod_gpus(with_init) == 3
    assert pod_gpus({"spec": {"containers": [{"name": "cpu"}]}}) == 0


def test_status_counts_running_pods_and_skips_finished_ones() -> None:
    pods = [
        pod("a", 7, node="gpu-node-0"),
        pod("b", 7, node="gpu-node-1"),
        pod("done", 1, node="gpu-node-1", phase="Succeeded"),
        pod("waiting", 4, node=None, phase="Pending"),
    ]
    status = status_of(NODES, pods)
    assert (status.total, status.used, status.free, status.pending_pods) == (16, 14, 2, 1)
    assert [n.name for n in status.nodes] == ["gpu-node-0", "gpu-node-1"]
    assert status.summary == "2 of 16 GPUs free: gpu-node-0 has 1, gpu-node-1 has 1"
    assert status.nodes[0].memory_mib == 81559
    assert [a.pod for a in allocations_of(pods)] == ["a", "b", "waiting"]
    assert allocations_of(pods)[0].service == "svc"


@pytest.mark.parametrize(
    ("used", "gpus", "replicas", "fits", "nodes", "verdict"),
    [
        (
            (0, 0),
            8,
            2,
            True,
            ["gpu-node-0", "gpu-node-1"],
            "2 replicas of 8 GPUs fit: on gpu-node-0, gpu-node-1",
        ),
        ((7, 7), 2, 1, False, [], "1 replica of 2 GPUs needs 2 on one node: not schedulable"),
        ((7, 6), 2, 2, False, ["gpu-node-1"], "2 replicas of 2 GPUs need 2 on one node each: only 1 fit"),
        ((4, 0), 4, 3, True, ["gpu-node-1", "gpu-node-0", "gpu-node-1"], "3 replicas of 4 GPUs fit"),
    ],
    ids=["two whole nodes", "fragmented", "partly", "most free first"],
)
def test_placement_keeps_a_replicas_gpus_on_one_node(
    used: tuple[int, int], gpus: int, replicas: int, fits: bool, nodes: list[str], verdict: str
) -> None:
    pods = [pod("a", used[0], node="gpu-node-0"), pod("b", used[1], node="gpu-node-1")]
    placement = place(status_of(NODES, pods), gpus=gpus, replicas=replicas)
    assert placement.fits is fits
    assert placement.nodes == nodes
    assert verdict in placement.message


def test_cordoned_and_not_ready_nodes_offer_no_free_gpus() -> None:
    status = status_of([node("a", 8, cordoned=True), node("b", 8, ready=False), node("c", 2)], [])
    assert status.total == 18
    assert status.free == 2
    assert "a has 8 (not schedulable)" in status.summary
    assert place(status, gpus=4, replicas=1).fits is False


NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def report(node: str, *healths: GpuHealth, age_seconds: float = 10) -> NodeDevices:
    gpus = [
        Gpu(
            index=i,
            uuid=f"GPU-{node}-{i}",
            name="H100",
            memory_total_mib=81559,
            memory_used_mib=1000,
            health=h,
        )
        for i, h in enumerate(healths)
    ]
    return NodeDevices(
        metadata={"name": node},
        spec=NodeDevicesSpec(node_name=node),
        status=NodeDevicesStatus(
            nvml=True,
            gpus=gpus,
            gpu_count=len(gpus),
            updated_at=NOW - datetime.timedelta(seconds=age_seconds),
        ),
    )


def test_agents_figures_join_in_and_unhealthy_gpus_are_not_free() -> None:
    healths = [GpuHealth.HEALTHY] * 7 + [GpuHealth.UNHEALTHY]
    devices = {
        "gpu-node-0": report("gpu-node-0", *healths),
        "gpu-node-1": report("gpu-node-1", *healths, age_seconds=3600),
    }
    status = status_of(NODES, [pod("a", 6, node="gpu-node-0")], devices=devices, now=NOW, stale_seconds=900)
    first, second = status.nodes
    assert (first.agent, first.unhealthy, first.free, first.memory_used_mib) == (
        AgentState.REPORTING,
        1,
        1,
        8000,
    )
    # A stale report says nothing about now: the node counts as the scheduler sees it.
    assert (second.agent, second.unhealthy, second.free) == (AgentState.STALE, 0, 8)
    assert status.summary == "9 of 16 GPUs free: gpu-node-0 has 1 (1 unhealthy), gpu-node-1 has 8"


def quota(hard: int, used: int) -> dict[str, Any]:
    key = "requests.nvidia.com/gpu"
    return {"metadata": {"name": "gpus"}, "status": {"hard": {key: str(hard)}, "used": {key: str(used)}}}


def test_budget_is_the_free_gpus_within_the_namespaces_quota() -> None:
    status = status_of(NODES, [pod("a", 5, node="gpu-node-0"), pod("b", 2, node="gpu-node-1")])
    unlimited = budget_of(status, [], namespace="team-a")
    assert (unlimited.available, unlimited.largest_on_one_node, unlimited.largest_node) == (
        9,
        6,
        "gpu-node-1",
    )
    assert unlimited.summary == (
        "team-a may start 9 GPUs now: 9 free in the cluster, no GPU quota; at most 6 on one node (gpu-node-1)"
    )
    limited = budget_of(status, [quota(8, 4), quota(16, 4)], namespace="team-a")
    assert (limited.quota_hard, limited.quota_used, limited.available, limited.largest_on_one_node) == (
        8,
        4,
        4,
        4,
    )
    assert "its quota leaves 4 (4 of 8 used)" in limited.summary
    spent = budget_of(status, [quota(4, 4)], namespace="team-a")
    assert (spent.available, spent.largest_node) == (0, None)


# ---- a replica that can never fit: what service.create, scale and start refuse ----------------------


@pytest.mark.parametrize(
    ("gpus", "product", "busy"),
    [(8, None, 0), (8, None, 8), (1, "H100", 16)],
    ids=["a whole node", "busy now: the service waits", "all busy: still no refusal"],
)
def test_a_replica_that_fits_some_node_is_never_refused(gpus: int, product: str | None, busy: int) -> None:
    pods = [pod("a", min(busy, 8), node="gpu-node-0"), pod("b", max(busy - 8, 0), node="gpu-node-1")]
    assert never_fits(status_of(NODES, pods), gpus=gpus, gpu_product=product) is None


def test_more_gpus_than_the_largest_node_has_are_refused_with_the_figures() -> None:
    pods = [pod("a", 3, node="gpu-node-1")]
    refusal = never_fits(status_of([*NODES, node("gpu-node-2", 4)], pods), gpus=16, gpu_product=None)
    assert refusal is not None
    assert refusal.code is ErrorCode.INSUFFICIENT_RESOURCES
    assert refusal.message.startswith(
        "A replica needs 16 GPUs on one node, but the largest GPU node (gpu-node-0) has 8: it can never be "
        "scheduled; lower resources.gpus to at most 8."
    )
    assert "17 of 20 GPUs free: gpu-node-0 has 8, gpu-node-1 has 5, gpu-node-2 has 4" in refusal.message
    assert refusal.details == {
        "gpusPerReplica": 16,
        "gpuProduct": None,
        "largestNode": "gpu-node-0",
        "largestNodeCapacity": 8,
        "freeByNode": {"gpu-node-0": 8, "gpu-node-1": 5, "gpu-node-2": 4},
    }


def test_a_gpu_product_no_node_has_is_refused() -> None:
    refusal = never_fits(status_of(NODES, []), gpus=1, gpu_product="NVIDIA-A100")
    assert refusal is not None
    assert refusal.code is ErrorCode.INSUFFICIENT_RESOURCES
    assert refusal.message.startswith("No node has GPU product NVIDIA-A100")
    assert "products in the cluster: H100" in refusal.message
    assert refusal.details is not None
    assert (refusal.details["largestNode"], refusal.details["freeByNode"]) == (None, {})


def test_gpus_on_a_cluster_without_gpu_nodes_are_refused() -> None:
    refusal = never_fits(status_of([node("cpu-node-0", 0)], []), gpus=1, gpu_product=None)
    assert refusal is not None
    assert "no node offers nvidia.com/gpu" in refusal.message


@pytest.mark.parametrize(
    ("wanted", "resolved", "gpus"),
    [
        ({"gpus": 4}, 2, 4),
        ({}, 2, 2),
        ({"gpuProduct": "H100"}, None, 1),
        ({}, None, 0),
        ({"gpus": 0}, None, 0),
    ],
    ids=["the spec's count", "the operator's resolved count", "a product: at least one", "unknown", "cpu"],
)
def test_replica_gpus(wanted: dict[str, Any], resolved: int | None, gpus: int) -> None:
    assert replica_gpus(ServiceResources.model_validate(wanted), resolved=resolved) == gpus


@pytest.mark.parametrize(
    ("spec", "change", "runs"),
    [
        ({}, {}, True),
        ({"replicas": 0}, {}, False),
        ({"replicas": 0}, {"replicas": 2}, True),
        ({}, {"replicas": 0}, False),
        ({"suspend": True}, {"suspend": False}, True),
        ({"suspend": True}, {"replicas": 3}, False),
        ({}, {"suspend": True}, False),
    ],
)
def test_runs_after(spec: dict[str, Any], change: dict[str, Any], runs: bool) -> None:
    body = InferenceServiceSpec.model_validate({"modelRef": {"name": "m"}} | spec)
    assert runs_after(body, change=change) is runs


@pytest.mark.parametrize(
    ("replicas", "placed", "warning"),
    [
        (16, 0, None),
        (20, 0, "Only 16 of the 20 replicas to start fit in the free GPUs now"),
        (20, 4, "Only 12 of the 16 replicas to start fit in the free GPUs now"),
        (3, 4, None),
    ],
    ids=["all fit", "beyond the cluster", "some run already", "scaling down"],
)
def test_a_change_beyond_the_free_gpus_says_how_many_wait_and_what_to_do(
    replicas: int, placed: int, warning: str | None
) -> None:
    busy = [pod(f"p{i}", 1, node="gpu-node-0") for i in range(placed)]
    said = capacity_warning(status_of(NODES, busy), gpus=1, replicas=replicas, placed=placed)
    if warning is None:
        assert said is None
        return
    assert said is not None and said.startswith(warning)
    assert "resource_can_allocate" in said and f"service_scale to {16}" in said
