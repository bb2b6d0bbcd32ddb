"""The capacity model: GPUs per pod as the scheduler counts them, per node, what fits, budgets (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from aima.domain import capacity

pytestmark = pytest.mark.unit


def container(gpus: int, *, sidecar: bool = False) -> dict[str, Any]:
    found: dict[str, Any] = {"name": "c", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
    return found | ({"restartPolicy": "Always"} if sidecar else {})


def pod(*app: int, init: tuple[dict[str, Any], ...] = (), node: str | None = "gpu-0") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [container(g) for g in app], "initContainers": list(init)}
    return {"metadata": {"name": "p"}, "spec": spec | ({"nodeName": node} if node else {})}


def node(name: str, gpus: int, *, product: str = "H100", memory: str | None = None) -> dict[str, Any]:
    labels = {"nvidia.com/gpu.product": product} | ({"nvidia.com/gpu.memory": memory} if memory else {})
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


@pytest.mark.parametrize(
    ("found", "gpus"),
    [
        (pod(1, 2), 3),
        (pod(1, init=(container(4),)), 4),
        (pod(4, init=(container(2),)), 4),
        (pod(2, init=(container(1, sidecar=True),)), 3),
        (pod(1, init=(container(1, sidecar=True), container(3))), 4),
        (pod(1, init=(container(3), container(1, sidecar=True))), 3),
        (pod(), 0),
    ],
    ids=[
        "app containers add up",
        "an init container larger than the app",
        "an init container smaller than the app",
        "a sidecar runs beside the app",
        "an init container runs beside the sidecars started before it",
        "and not beside those started after it",
        "no GPUs",
    ],
)
def test_pod_gpus_follow_the_schedulers_rule(found: dict[str, Any], gpus: int) -> None:
    assert capacity.pod_gpus(found) == gpus


def test_finished_and_unbound_pods_hold_no_node() -> None:
    done = pod(2) | {"status": {"phase": "Succeeded"}}
    rows = capacity.node_gpus([node("gpu-0", 8)], [done, pod(3), pod(1, node=None)])
    assert [(r.name, r.used, r.free) for r in rows] == [("gpu-0", 3, 5)]
    assert (capacity.holding_node(done), capacity.holding_node(pod(1, node=None))) == (None, None)


def test_never_fits_counts_only_nodes_of_the_product_and_ignores_busy_gpus() -> None:
    rows = capacity.node_gpus([node("a100-0", 4, product="A100"), node("h100-0", 8)], [pod(8, node="h100-0")])
    assert not capacity.never_fits(rows, gpus=8)
    assert capacity.never_fits(rows, gpus=8, gpu_product="A100")
    assert capacity.never_fits(rows, gpus=1, gpu_product="B200")
    assert capacity.place(rows, gpus=4, replicas=2) == ["a100-0"]


def test_budget_is_the_free_gpus_within_the_tightest_quota() -> None:
    rows = capacity.node_gpus([node("gpu-0", 8), node("gpu-1", 8)], [pod(5)])
    key = "requests.nvidia.com/gpu"
    quotas = [{"status": {"hard": {key: str(hard)}, "used": {key: "4"}}} for hard in (16, 8)]
    found = capacity.budget(rows, quotas)
    assert found.quota == capacity.Quota(hard=8, used=4)
    assert (found.free, found.available, found.largest_on_one_node) == (11, 4, 4)
    assert found.largest_node is not None and found.largest_node.name == "gpu-1"


def test_largest_gpu_memory_reads_the_labels_and_falls_back_to_the_default() -> None:
    nodes = [node("a", 1, memory="40960"), node("b", 1, memory="81559"), node("c", 1, memory="n/a")]
    assert capacity.largest_gpu_memory_mib(nodes, default=24576) == 81559
    assert capacity.largest_gpu_memory_mib([node("c", 1, memory="0"), node("d", 1)], default=24576) == 24576
