"""The fake nodes of the local cluster (pure: manifests only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
KWOK_SELECTOR = "type=kwok"
"""The label kwok manages nodes by: the fake nodes carry it, the real node does not."""
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}


@dataclass(frozen=True)
class GpuModel:
    """What NVIDIA GPU feature discovery would label a node with."""

    product: str
    memory_mib: int
    family: str
    compute_major: int
    compute_minor: int


H100 = GpuModel(
    product="NVIDIA-H100-80GB-HBM3", memory_mib=81559, family="hopper", compute_major=9, compute_minor=0
)


@dataclass(frozen=True)
class NodeSpec:
    """One fake node: its name, its size and, for GPU nodes, its GPUs."""

    name: str
    cpu: str = "64"
    memory: str = "512Gi"
    gpus: int = 0
    gpu_model: GpuModel | None = None


GPU_NODES = (
    NodeSpec(name="gpu-node-0", cpu="96", memory="1Ti", gpus=8, gpu_model=H100),
    NodeSpec(name="gpu-node-1", cpu="96", memory="1Ti", gpus=8, gpu_model=H100),
)
"""The fake GPU nodes a cluster with a real node keeps (its real node takes the untainted pods)."""
DEFAULT_NODES = (*GPU_NODES, NodeSpec(name="cpu-node-0", cpu="32", memory="128Gi"))


def node_manifest(spec: NodeSpec) -> dict[str, Any]:
    """A Node with its capacity set at creation, managed by kwok (``type: kwok``)."""
    capacity: dict[str, str] = {"cpu": spec.cpu, "memory": spec.memory, "pods": "110"}
    labels = {
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    taints: list[dict[str, str]] = []
    if spec.gpus and spec.gpu_model:
        capacity[GPU_RESOURCE] = str(spec.gpus)
        labels |= gpu_feature_labels(spec.gpu_model, count=spec.gpus)
        taints.append(GPU_TAINT)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "labels": labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": taints},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }


def gpu_feature_labels(model: GpuModel, *, count: int) -> dict[str, str]:
    """The node labels NVIDIA GPU feature discovery sets for ``count`` GPUs of ``model``."""
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": model.product,
        "nvidia.com/gpu.memory": str(model.memory_mib),
        "nvidia.com/gpu.count": str(count),
        "nvidia.com/gpu.family": model.family,
        "nvidia.com/gpu.compute.major": str(model.compute_major),
        "nvidia.com/gpu.compute.minor": str(model.compute_minor),
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/mig.capable": "true",
        "nvidia.com/cuda.driver-version.major": "580",
    }
