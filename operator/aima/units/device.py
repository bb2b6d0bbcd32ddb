"""device.*: the GPUs of the cluster as the device agents report them (NodeDevices objects), next to
what the nodes advertise (`nvidia.com/gpu` capacity), and power limits through the agents.

A node with GPU capacity but no NodeDevices has no agent; one whose report is older than the
operator's `device_stale_seconds` has a silent agent; units say so instead of showing old figures
as current.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from aima.api.common import ApiModel
from aima.api.device import Gpu, GpuHealth, NodeDevices, PowerLimitState
from aima.domain import capacity
from aima.domain.capacity import AgentState, agent_state
from aima.kube import KubeClient, KubeError, resources
from aima.units.core import Context, Example, Input, command, query
from aima.units.errors import ErrorCode, UnitError

__all__ = ["UNITS", "AgentState", "NodeReport", "agent_state", "node_devices", "reports_of"]

_POLL_SECONDS = 0.5


class NodeReport(ApiModel):
    """One node: what it advertises to the scheduler and what its agent saw."""

    node: str
    capacity: int
    """nvidia.com/gpu the node advertises."""
    product: str | None = None
    """GPU model from the nvidia.com/gpu.product label."""
    agent: AgentState
    message: str | None = None
    """Why NVML is unavailable, or how old a stale report is."""
    driver_version: str | None = None
    cuda_version: str | None = None
    updated_at: datetime.datetime | None = None
    gpus: list[Gpu] = Field(default_factory=list)
    """The GPUs the agent reported (empty when it did not)."""


class NodeFilter(Input):
    """Which nodes to report."""

    node: str | None = Field(default=None, max_length=253)
    """Only this node; every GPU node when empty."""


class DetectOutput(ApiModel):
    """GPU nodes and their agents."""

    nodes: list[NodeReport]
    summary: str


class GpuInfo(ApiModel):
    """What a GPU is (identity and limits), not how busy it is."""

    node: str
    index: int
    uuid: str
    name: str
    memory: str
    """Dedicated, or Unified (system memory shared with the CPU)."""
    memory_total_mib: int | None = None
    mig_enabled: bool | None = None
    power_limit_watts: float | None = None
    power_limit_min_watts: float | None = None
    power_limit_max_watts: float | None = None
    driver_version: str | None = None
    cuda_version: str | None = None


class InfoOutput(ApiModel):
    """GPUs of the reporting agents."""

    gpus: list[GpuInfo]
    message: str | None = None
    """Why GPUs of some nodes are not listed: their agents do not report, and why."""


class GpuMetrics(ApiModel):
    """How busy a GPU is, as of the agent's last report."""

    node: str
    index: int
    uuid: str
    utilization_percent: int | None = None
    memory_used_mib: int | None = None
    memory_reserved_mib: int | None = None
    """Held by the driver itself, apart from memory_used_mib (NVML memory info v2)."""
    memory_total_mib: int | None = None
    temperature_celsius: int | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    age_seconds: float | None = None
    """How old the figures are."""


class MetricsOutput(ApiModel):
    """Figures of the GPUs of the reporting agents."""

    gpus: list[GpuMetrics]
    message: str | None = None
    """Why GPUs of some nodes are not listed: their agents do not report, and why."""


class GpuProblem(ApiModel):
    """A GPU, or a node, that needs attention."""

    node: str
    gpu: str | None = None
    """UUID of the GPU; empty for a problem of the node's agent."""
    message: str


class HealthOutput(ApiModel):
    """Healthy and unhealthy GPUs, and agents that do not report."""

    healthy: int
    unhealthy: int
    problems: list[GpuProblem]
    summary: str


class PowerLimitInput(Input):
    """A power limit for one GPU."""

    node: str = Field(min_length=1, max_length=253)
    """The node of the GPU."""
    gpu: str = Field(min_length=1, max_length=96)
    """The GPU's UUID, or its index on the node, such as 0."""
    watts: int = Field(ge=1, le=5000)
    """The power limit in watts, within the GPU's range (device.info shows it)."""
    wait_seconds: float = Field(default=30.0, ge=0, le=300)
    """How long to wait for the agent's answer; 0 returns at once with state Pending."""


class PowerLimitOutput(ApiModel):
    """What became of a power limit request."""

    node: str
    gpu: str
    """UUID of the GPU."""
    watts: int
    state: str
    """Applied, Refused or Pending (the agent has not answered yet)."""
    message: str


def reports_of(
    nodes: Sequence[dict[str, Any]],
    devices: Sequence[NodeDevices],
    *,
    now: datetime.datetime,
    stale_seconds: float,
) -> list[NodeReport]:
    """One report per node that advertises GPUs or has an agent (pure)."""
    by_node = {d.spec.node_name: d for d in devices}
    reports = []
    for node in nodes:
        name = node["metadata"]["name"]
        advertised = capacity.advertised_gpus(node)
        report = by_node.pop(name, None)
        if advertised or report is not None:
            reports.append(_report(name, advertised, node, report, now=now, stale_seconds=stale_seconds))
    return sorted(reports, key=lambda r: r.node)


def _report(
    name: str,
    advertised: int,
    node: dict[str, Any],
    report: NodeDevices | None,
    *,
    now: datetime.datetime,
    stale_seconds: float,
) -> NodeReport:
    state = agent_state(report, now=now, stale_seconds=stale_seconds)
    status = report.status if report is not None else None
    message = status.message if status is not None else None
    if state is AgentState.STALE and status is not None and status.updated_at is not None:
        message = f"last report {int((now - status.updated_at).total_seconds())} s ago"
    elif state is AgentState.MISSING:
        message = "no device agent reports for this node; is the aima-device-agent DaemonSet running here?"
    return NodeReport(
        node=name,
        capacity=advertised,
        product=capacity.gpu_product(node),
        agent=state,
        message=message,
        driver_version=status.driver_version if status else None,
        cuda_version=status.cuda_version if status else None,
        updated_at=status.updated_at if status else None,
        gpus=list(status.gpus) if status else [],
    )


@query(
    "device.detect",
    description="GPU nodes: GPUs advertised to the scheduler, and whether each node's device agent "
    "reports (Reporting, Stale, NoNvml with the reason, Missing).",
    examples=[Example(description="Every GPU node", input={})],
)
async def detect(context: Context, request: NodeFilter) -> DetectOutput:
    reports = await _reports(context, request.node)
    reporting = sum(len(r.gpus) for r in reports if r.agent is AgentState.REPORTING)
    advertised = sum(r.capacity for r in reports)
    others = [f"{r.node}: {r.agent}" for r in reports if r.agent is not AgentState.REPORTING]
    summary = f"{advertised} GPUs advertised on {len(reports)} nodes; agents report {reporting}"
    return DetectOutput(nodes=reports, summary=summary + (f" ({', '.join(others)})" if others else ""))


@query(
    "device.info",
    description="Each GPU's identity and limits: name, UUID, memory (dedicated or unified), MIG, power "
    "limit range, driver and CUDA versions.",
    examples=[
        Example(description="Every GPU", input={}),
        Example(description="One node", input={"node": "gpu-node-0"}),
    ],
)
async def info(context: Context, request: NodeFilter) -> InfoOutput:
    reports = await _reports(context, request.node)
    return InfoOutput(
        message=unlisted(reports),
        gpus=[
            GpuInfo(
                node=r.node,
                index=g.index,
                uuid=g.uuid,
                name=g.name,
                memory=str(g.memory),
                memory_total_mib=g.memory_total_mib,
                mig_enabled=g.mig_enabled,
                power_limit_watts=g.power_limit_watts,
                power_limit_min_watts=g.power_limit_min_watts,
                power_limit_max_watts=g.power_limit_max_watts,
                driver_version=r.driver_version,
                cuda_version=r.cuda_version,
            )
            for r in reports
            for g in r.gpus
        ],
    )


def unlisted(reports: list[NodeReport]) -> str | None:
    """Why some GPU nodes' GPUs are not listed, in one message (pure); None when every agent reports."""
    silent = [f"{r.node} ({r.agent}: {r.message})" for r in reports if r.agent is not AgentState.REPORTING]
    if not silent:
        return None if reports else "No node advertises nvidia.com/gpu; device.detect shows every node"
    return f"Not listed, their device agents do not report: {'; '.join(silent)}"


@query(
    "device.metrics",
    description="Each GPU's utilisation, memory, temperature and power from the agents' last reports, "
    "with their age.",
    examples=[
        Example(description="Every GPU", input={}),
        Example(description="One node", input={"node": "gpu-node-0"}),
    ],
)
async def metrics(context: Context, request: NodeFilter) -> MetricsOutput:
    now = datetime.datetime.now(datetime.UTC)
    reports = await _reports(context, request.node)
    return MetricsOutput(
        message=unlisted(reports),
        gpus=[
            GpuMetrics(
                node=r.node,
                index=g.index,
                uuid=g.uuid,
                utilization_percent=g.utilization_percent,
                memory_used_mib=g.memory_used_mib,
                memory_reserved_mib=g.memory_reserved_mib,
                memory_total_mib=g.memory_total_mib,
                temperature_celsius=g.temperature_celsius,
                power_watts=g.power_watts,
                power_limit_watts=g.power_limit_watts,
                age_seconds=round((now - r.updated_at).total_seconds(), 1) if r.updated_at else None,
            )
            for r in reports
            for g in r.gpus
        ],
    )


@query(
    "device.health",
    description="Unhealthy GPUs (uncorrectable ECC errors, critical XIDs, lost GPUs) and nodes whose "
    "agent is missing, stale or without NVML, with reasons.",
    examples=[Example(description="Every GPU node", input={})],
)
async def health(context: Context, request: NodeFilter) -> HealthOutput:
    reports = await _reports(context, request.node)
    problems = [
        GpuProblem(node=r.node, message=f"agent {r.agent}: {r.message}")
        for r in reports
        if r.agent is not AgentState.REPORTING
    ]
    problems += [
        GpuProblem(node=r.node, gpu=g.uuid, message=f"GPU {g.index}: {g.health_message}")
        for r in reports
        for g in r.gpus
        if g.health is GpuHealth.UNHEALTHY
    ]
    gpus = [g for r in reports if r.agent is AgentState.REPORTING for g in r.gpus]
    unhealthy = sum(1 for g in gpus if g.health is GpuHealth.UNHEALTHY)
    summary = f"{len(gpus) - unhealthy} of {len(gpus)} reported GPUs healthy"
    if problems:
        summary += "; " + "; ".join(f"{p.node}: {p.message}" for p in problems)
    return HealthOutput(
        healthy=len(gpus) - unhealthy, unhealthy=unhealthy, problems=problems, summary=summary
    )


@command(
    "device.set_power_limit",
    description="Ask a node's device agent to set a GPU's power limit; answers Applied, Refused with "
    "why, or Pending if the agent is slow.",
    examples=[
        Example(
            description="Cap GPU 0 of gpu-node-0 at 450 W",
            input={"node": "gpu-node-0", "gpu": "0", "watts": 450},
        )
    ],
    idempotent=True,
)
async def set_power_limit(context: Context, request: PowerLimitInput) -> PowerLimitOutput:
    report = await _node_devices(context, request.node)
    status = report.status
    if status is None or not status.nvml:
        raise UnitError(
            ErrorCode.UNAVAILABLE, f"{request.node}'s agent reports no GPUs: {status and status.message}"
        )
    gpu = next((g for g in status.gpus if request.gpu in (g.uuid, str(g.index))), None)
    if gpu is None:
        raise UnitError(ErrorCode.NOT_FOUND, f"{request.node} has no GPU {request.gpu}")
    _check_permitted(request, gpu, allowed=status.power_limits_allowed)
    limits = [r.model_dump(mode="json", by_alias=True) for r in report.spec.power_limits if r.gpu != gpu.uuid]
    patch = {"spec": {"powerLimits": [*limits, {"gpu": gpu.uuid, "watts": request.watts}]}}
    await context.kube.patch(resources.NODE_DEVICES, name=request.node, namespace=None, patch=patch)
    return await _await_answer(context, request, uuid=gpu.uuid)


def _check_permitted(request: PowerLimitInput, gpu: Gpu, *, allowed: bool) -> None:
    """Refuse at once what the agent would refuse, with the same reasons."""
    if not allowed:
        raise UnitError(
            ErrorCode.FORBIDDEN,
            f"{request.node}'s device agent does not change power limits; an administrator enables it "
            "with the chart value deviceAgent.powerLimits (AIMA_DEVICE_POWER_LIMITS_ALLOWED=true)",
        )
    low, high = gpu.power_limit_min_watts, gpu.power_limit_max_watts
    if low is None or high is None:
        raise UnitError(
            ErrorCode.INVALID_INPUT, f"GPU {gpu.index} of {request.node} has no adjustable power limit"
        )
    if not low <= request.watts <= high:
        raise UnitError(
            ErrorCode.INVALID_INPUT,
            f"{request.watts} W is outside GPU {gpu.index}'s range, {low:g}-{high:g} W",
        )


async def _await_answer(context: Context, request: PowerLimitInput, *, uuid: str) -> PowerLimitOutput:
    deadline = asyncio.get_running_loop().time() + request.wait_seconds
    while True:
        report = await _node_devices(context, request.node)
        results = report.status.power_limits if report.status else []
        result = next((r for r in results if r.gpu == uuid and r.watts == request.watts), None)
        if result is not None:
            if result.state is PowerLimitState.REFUSED:
                raise UnitError(ErrorCode.FORBIDDEN, f"The agent on {request.node} refused: {result.message}")
            return PowerLimitOutput(
                node=request.node, gpu=uuid, watts=request.watts, state=str(result.state), message="Applied"
            )
        if asyncio.get_running_loop().time() >= deadline:
            return PowerLimitOutput(
                node=request.node,
                gpu=uuid,
                watts=request.watts,
                state="Pending",
                message="Requested; the agent applies it at its next sample (device.info shows the limit)",
            )
        await asyncio.sleep(_POLL_SECONDS)


async def _node_devices(context: Context, node: str) -> NodeDevices:
    body = await context.kube.get(resources.NODE_DEVICES, name=node)
    if body is None:
        raise UnitError(ErrorCode.NOT_FOUND, f"No device agent reports for node {node}")
    return NodeDevices.model_validate(body)


async def _reports(context: Context, node: str | None) -> list[NodeReport]:
    nodes, devices = await asyncio.gather(context.kube.list(resources.NODES), node_devices(context.kube))
    reports = reports_of(
        nodes,
        devices,
        now=datetime.datetime.now(datetime.UTC),
        stale_seconds=context.settings.device_stale_seconds,
    )
    return [r for r in reports if node is None or r.node == node]


async def node_devices(kube: KubeClient) -> list[NodeDevices]:
    """Every agent's report; none where the NodeDevices CRD is not installed (no agents run)."""
    try:
        return [NodeDevices.model_validate(d) for d in await kube.list(resources.NODE_DEVICES)]
    except KubeError as error:
        if error.status == 404:
            return []
        raise


UNITS = (detect, info, metrics, health, set_power_limit)
