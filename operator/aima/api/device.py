"""NodeDevices: what the device agent saw on one node's GPUs, published for the operator and units.

Why a custom object and not node annotations: the agent writes every `publishSeconds` on every GPU
node, and every write to a Node fans out to everything that watches Nodes (the scheduler, every
DaemonSet controller, monitoring), which is why Kubernetes moved node heartbeats to Leases. Only AIMA
watches NodeDevices; the agent needs no write access to Nodes (whose labels and taints steer
scheduling); and the figures are typed and validated by the API server.

One object per node, cluster-scoped, named after the node and owned by it (deleted with it). The
agent writes `status`; `spec.powerLimits` is what people (through `device.set_power_limit`) ask the
agent to apply, and the agent answers in `status.powerLimits`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field

from aima.api.common import (
    ApiModel,
    Condition,
    CustomResource,
    PrinterColumn,
    Scope,
    StoredObject,
    cel,
    conditions_field,
    ready_columns,
)

__all__ = [
    "CRD",
    "Gpu",
    "GpuHealth",
    "MemoryKind",
    "NodeDevices",
    "NodeDevicesSpec",
    "NodeDevicesStatus",
    "PowerLimitRequest",
    "PowerLimitResult",
    "PowerLimitState",
]


class GpuHealth(StrEnum):
    """Whether a GPU can be trusted with work."""

    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"


class MemoryKind(StrEnum):
    """Where a GPU's memory figures come from."""

    DEDICATED = "Dedicated"
    """The GPU's own memory, as NVML reports it."""
    UNIFIED = "Unified"
    """System memory shared with the CPU (GB10, Jetson): NVML has no figure, so these are the
    node's MemTotal and MemTotal - MemAvailable, and the CPU's processes use the same bytes."""


class PowerLimitState(StrEnum):
    """What became of a requested power limit."""

    APPLIED = "Applied"
    REFUSED = "Refused"


class Gpu(ApiModel):
    """One GPU as NVML reports it; a figure NVML does not offer on this GPU is left out."""

    index: int = Field(ge=0)
    """NVML index of the GPU on its node."""
    uuid: str = Field(max_length=96)
    """The GPU's UUID, such as GPU-5fb3c4e0-...; stable across reboots."""
    name: str = Field(max_length=96)
    """Product name, such as NVIDIA H100 80GB HBM3."""
    memory: MemoryKind = MemoryKind.DEDICATED
    """Dedicated GPU memory, or Unified system memory shared with the CPU."""
    memory_total_mib: int | None = Field(default=None, ge=0)
    """Total memory in MiB (for Unified memory: the node's system memory)."""
    memory_used_mib: int | None = Field(default=None, ge=0)
    """Memory in use in MiB (for Unified memory: used by anything on the node); without what the
    driver reserves for itself where the driver tells them apart."""
    memory_reserved_mib: int | None = Field(default=None, ge=0)
    """Memory the driver reserves for itself in MiB (NVML's memory info v2); not free for models."""
    utilization_percent: int | None = Field(default=None, ge=0, le=100)
    """Share of the last sample period in which a kernel ran."""
    temperature_celsius: int | None = Field(default=None, ge=0)
    """Core temperature."""
    power_watts: float | None = Field(default=None, ge=0)
    """Power drawn now."""
    power_limit_watts: float | None = Field(default=None, ge=0)
    """Power limit enforced now."""
    power_limit_min_watts: float | None = Field(default=None, ge=0)
    """Lowest power limit the GPU accepts."""
    power_limit_max_watts: float | None = Field(default=None, ge=0)
    """Highest power limit the GPU accepts."""
    ecc_uncorrected_errors: int | None = Field(default=None, ge=0)
    """Uncorrectable ECC errors since the driver loaded (volatile counter)."""
    last_xid: int | None = Field(default=None, ge=0)
    """The last critical XID event the agent saw since it started."""
    mig_enabled: bool | None = None
    """Whether MIG (multi-instance GPU) mode is on."""
    health: GpuHealth = GpuHealth.HEALTHY
    """Healthy, or Unhealthy with the reason in healthMessage."""
    health_message: str | None = Field(default=None, max_length=512)
    """Why the GPU is unhealthy, such as `XID 79: the GPU fell off the bus`."""


class PowerLimitRequest(ApiModel):
    """A power limit to apply to one GPU of the node."""

    gpu: str = Field(min_length=1, max_length=96)
    """UUID of the GPU."""
    watts: int = Field(ge=1, le=5000)
    """The limit in watts; it must lie within the GPU's power limit range."""


class PowerLimitResult(ApiModel):
    """What the agent did with one requested power limit."""

    gpu: str = Field(max_length=96)
    """UUID of the GPU."""
    watts: int = Field(ge=0)
    """The limit that was requested."""
    state: PowerLimitState
    """Applied, or Refused with the reason in message."""
    message: str = Field(default="", max_length=1024)
    """Why it was refused, in words a person can act on."""


class NodeDevicesSpec(ApiModel):
    """Desired state: which node, and power limits people asked for."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.nodeName == oldSelf.nodeName", "nodeName cannot change", field_path=".nodeName"),
            ]
        }
    )

    node_name: str = Field(min_length=1, max_length=253)
    """The node the GPUs are in; the object has the same name."""
    power_limits: list[PowerLimitRequest] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["gpu"]},
    )
    """Power limits to apply, one per GPU; the agent applies them only where its settings allow."""


class NodeDevicesStatus(ApiModel):
    """Observed state, written only by the device agent on the node."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the status was computed from."""
    conditions: list[Condition] = conditions_field()
    """Ready: NVML answered and every GPU is healthy (reasons NvmlUnavailable, GpuUnhealthy)."""
    nvml: bool = False
    """Whether NVML could be loaded and initialized on the node."""
    message: str | None = Field(default=None, max_length=1024)
    """Why NVML is not available, when it is not."""
    driver_version: str | None = Field(default=None, max_length=64)
    """NVIDIA driver version."""
    cuda_version: str | None = Field(default=None, max_length=16)
    """Highest CUDA version the driver supports, such as 13.0."""
    gpu_count: int = Field(default=0, ge=0)
    """GPUs NVML found."""
    unhealthy: int = Field(default=0, ge=0)
    """GPUs that are Unhealthy."""
    gpus: list[Gpu] = Field(default_factory=list, max_length=64)
    """The GPUs, by index."""
    power_limits_allowed: bool = False
    """Whether this agent may change power limits (its setting; NVML also needs root)."""
    power_limits: list[PowerLimitResult] = Field(default_factory=list, max_length=64)
    """The outcome of each requested power limit."""
    agent_version: str | None = Field(default=None, max_length=64)
    """Version of the agent that wrote this status."""
    updated_at: datetime | None = None
    """When the agent last wrote this status; older than a few publish periods means a silent agent."""


class NodeDevices(StoredObject[NodeDevicesSpec, NodeDevicesStatus]):
    """A NodeDevices object as stored in the API server."""

    kind: Literal["NodeDevices"] = "NodeDevices"


CRD = CustomResource(
    kind="NodeDevices",
    plural="nodedevices",
    description="NodeDevices holds what AIMA's device agent saw on one node's GPUs (name, memory, "
    "utilisation, temperature, power, ECC and XID health, MIG) and the power limits asked of it.",
    spec=NodeDevicesSpec,
    status=NodeDevicesStatus,
    scope=Scope.CLUSTER,
    short_names=("ndev",),
    printer_columns=(
        PrinterColumn(name="GPUs", json_path=".status.gpuCount", type="integer", description="GPUs found."),
        PrinterColumn(
            name="Unhealthy", json_path=".status.unhealthy", type="integer", description="Unhealthy GPUs."
        ),
        PrinterColumn(name="Driver", json_path=".status.driverVersion", description="NVIDIA driver version."),
        *ready_columns(),
        PrinterColumn(
            name="Updated",
            json_path=".status.updatedAt",
            type="date",
            description="Last report of the agent.",
        ),
    ),
    validations=(
        cel("self.metadata.name == self.spec.nodeName", "a NodeDevices object is named after its node"),
    ),
)
