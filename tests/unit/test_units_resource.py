"""GPU arithmetic of resource.*: capacity from nodes, use from pods, placement (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from aima.units.resource import allocations_of, place, pod_gpus, status_of

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
