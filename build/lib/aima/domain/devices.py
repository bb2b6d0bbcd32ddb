"""Pure decisions about GPUs: health from ECC and XID, unified memory from /proc/meminfo, the status
the agent publishes, and when a new status is worth a write."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from aima.api.common import Condition, ConditionStatus, ConditionType
from aima.api.device import (
    Gpu,
    GpuHealth,
    NodeDevicesStatus,
    PowerLimitRequest,
    PowerLimitResult,
    PowerLimitState,
)
from aima.domain.conditions import set_condition

__all__ = [
    "APPLICATION_XIDS",
    "PublishPolicy",
    "Reading",
    "health_of",
    "node_status",
    "plan_power_limits",
    "should_publish",
    "unified_memory_mib",
    "xid_meaning",
]

APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})
"""XIDs caused by an application (a bad kernel, a killed process), not by the GPU; NVIDIA's device
plugin does not mark a GPU unhealthy for these, and neither do we."""

_XID_MEANINGS = {
    48: "double-bit ECC error",
    63: "row remapping pending: reset the GPU",
    64: "row remapping failed",
    74: "NVLink error",
    79: "the GPU fell off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
}


def xid_meaning(xid: int) -> str:
    """A short description of a critical XID, for messages."""
    return _XID_MEANINGS.get(xid, "see NVIDIA's XID catalog")


def health_of(*, ecc_uncorrected: int | None, last_xid: int | None) -> tuple[GpuHealth, str | None]:
    """A GPU's health from its volatile uncorrectable ECC count and the last critical XID it raised."""
    if ecc_uncorrected:
        return GpuHealth.UNHEALTHY, f"{ecc_uncorrected} uncorrectable ECC errors since the driver loaded"
    if last_xid is not None and last_xid not in APPLICATION_XIDS:
        return GpuHealth.UNHEALTHY, f"XID {last_xid}: {xid_meaning(last_xid)}"
    return GpuHealth.HEALTHY, None


def unified_memory_mib(meminfo: str) -> tuple[int, int] | None:
    """(total, used) MiB of system memory from /proc/meminfo text, used being MemTotal - MemAvailable
    (what `free` calls used); None when the text lacks either line."""
    values: dict[str, int] = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if key in ("MemTotal", "MemAvailable") and parts and parts[0].isdigit():
            values[key] = int(parts[0])  # kB
    if "MemTotal" not in values or "MemAvailable" not in values:
        return None
    total = values["MemTotal"] // 1024
    return total, max(0, total - values["MemAvailable"] // 1024)


@dataclass(frozen=True, kw_only=True)
class Reading:
    """One look at the node's GPUs through NVML."""

    nvml: bool
    """Whether NVML loaded and initialized."""
    message: str | None = None
    """Why not, when it did not."""
    driver_version: str | None = None
    cuda_version: str | None = None
    gpus: tuple[Gpu, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PublishPolicy:
    """How often the agent writes its NodeDevices status."""

    min_seconds: float = 5.0
    """Never two writes closer than this, whatever changed."""
    figures_seconds: float = 30.0
    """Changed figures (utilisation, temperature, power, memory) wait this long after the last write."""
    heartbeat_seconds: float = 300.0
    """Write even when nothing changed, so readers can tell a silent agent from an idle node."""
    volatile: frozenset[str] = field(
        default_factory=lambda: frozenset(
            {"utilizationPercent", "temperatureCelsius", "powerWatts", "memoryUsedMib"}
        )
    )
    """Fields that change with load; the others (health, identity, limits) are written promptly."""


def should_publish(
    previous: NodeDevicesStatus | None,
    current: NodeDevicesStatus,
    *,
    seconds_since: float | None,
    policy: PublishPolicy,
) -> bool:
    """Whether ``current`` is worth a write, given what was last written ``seconds_since`` ago.

    Health, GPUs appearing or vanishing and power limit answers go out within ``min_seconds``; load
    figures at most every ``figures_seconds``; an unchanged status every ``heartbeat_seconds``.
    """
    if previous is None or seconds_since is None:
        return True
    if seconds_since < policy.min_seconds:
        return False
    before, after = _comparable(previous, policy), _comparable(current, policy)
    if before != after:
        return True
    if _comparable(previous, policy, keep_volatile=True) != _comparable(current, policy, keep_volatile=True):
        return seconds_since >= policy.figures_seconds
    return seconds_since >= policy.heartbeat_seconds


def _comparable(status: NodeDevicesStatus, policy: PublishPolicy, *, keep_volatile: bool = False) -> object:
    data = status.model_dump(mode="json", by_alias=True, exclude={"updated_at", "conditions"})
    if not keep_volatile:
        for gpu in data["gpus"]:
            for name in policy.volatile:
                gpu.pop(name, None)
    return data


def node_status(
    reading: Reading,
    *,
    previous: NodeDevicesStatus | None,
    power_limits: Sequence[PowerLimitResult],
    power_limits_allowed: bool,
    generation: int | None,
    agent_version: str,
    now: datetime,
) -> NodeDevicesStatus:
    """The status the agent publishes for one reading (pure)."""
    unhealthy = [g for g in reading.gpus if g.health is GpuHealth.UNHEALTHY]
    return NodeDevicesStatus(
        observed_generation=generation,
        conditions=_ready(reading, unhealthy, previous=previous, generation=generation, now=now),
        nvml=reading.nvml,
        message=reading.message,
        driver_version=reading.driver_version,
        cuda_version=reading.cuda_version,
        gpu_count=len(reading.gpus),
        unhealthy=len(unhealthy),
        gpus=list(reading.gpus),
        power_limits_allowed=power_limits_allowed,
        power_limits=list(power_limits),
        agent_version=agent_version,
        updated_at=now,
    )


def _ready(
    reading: Reading,
    unhealthy: Sequence[Gpu],
    *,
    previous: NodeDevicesStatus | None,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    if not reading.nvml:
        status, reason = ConditionStatus.FALSE, "NvmlUnavailable"
        message = f"No GPUs reported: {reading.message}"
    elif unhealthy:
        status, reason = ConditionStatus.FALSE, "GpuUnhealthy"
        message = "; ".join(f"GPU {g.index} ({g.uuid}): {g.health_message}" for g in unhealthy)
    else:
        status, reason = ConditionStatus.TRUE, "GpusHealthy"
        message = f"{len(reading.gpus)} GPUs found, all healthy"
    return set_condition(
        previous.conditions if previous else [],
        type_=ConditionType.READY,
        status=status,
        reason=reason,
        message=message[:32768],
        generation=generation,
        now=now,
    )


def plan_power_limits(
    requests: Sequence[PowerLimitRequest],
    gpus: Sequence[Gpu],
    *,
    allowed: bool,
    refused: Mapping[tuple[str, int], str],
) -> tuple[list[PowerLimitResult], list[PowerLimitRequest]]:
    """What is known of each requested limit without acting, and the requests to try now.

    Level-triggered: a limit the GPU already enforces is Applied (also after a reboot reset it and
    it was applied again); a refusal is remembered (``refused``) so it is not retried every sample.
    """
    by_uuid = {g.uuid: g for g in gpus}
    known: list[PowerLimitResult] = []
    to_try: list[PowerLimitRequest] = []
    for request in requests:
        gpu = by_uuid.get(request.gpu)
        refusal = refused.get((request.gpu, request.watts))
        if gpu is None:
            refusal = f"no GPU with UUID {request.gpu} on this node"
        elif not allowed:
            refusal = (
                "this node's device agent does not change power limits (AIMA_DEVICE_POWER_LIMITS_ALLOWED)"
            )
        elif gpu.power_limit_watts == request.watts:
            known.append(
                PowerLimitResult(gpu=request.gpu, watts=request.watts, state=PowerLimitState.APPLIED)
            )
            continue
        if refusal is None:
            to_try.append(request)
        else:
            known.append(
                PowerLimitResult(
                    gpu=request.gpu, watts=request.watts, state=PowerLimitState.REFUSED, message=refusal
                )
            )
    return known, to_try
