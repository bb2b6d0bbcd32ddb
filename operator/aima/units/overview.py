"""resource.overview: the cluster in one call: GPUs, namespaces, and what runs, waits or fails.

An agent's first question ("what is here, what is free, what is wrong?") took a call per domain and
still missed the namespaces (a namespace that does not exist read as an empty one). The overview
reuses each domain's own summary (resource.status, service.list, model.list, pipeline runs) and
lists in full only what needs attention; what is fine is counted.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from pydantic import Field

from aima.api.common import ApiModel, ConditionStatus, ConditionType, Reason
from aima.api.inference_service import InferenceService
from aima.api.model import Model
from aima.api.pipeline import PipelineRun
from aima.domain import conditions
from aima.domain.pipeline_status import SERVICES_NOT_READY
from aima.kube import resources
from aima.units import model, pipeline, resource, service
from aima.units.core import Context, Example, Input, query

__all__ = ["UNITS", "Overview", "overview_of"]

_ATTENTION_LIMIT = 20
"""Items that need attention listed at most; the rest are counted."""


class OverviewInput(Input):
    """Which namespaces the overview covers."""

    namespace: str | None = Field(default=None, max_length=63)
    """Only this namespace; every namespace the caller may see when empty."""


class Attention(ApiModel):
    """Something that is not as asked, and why."""

    kind: str
    name: str
    namespace: str
    reason: str | None = None
    message: str | None = None


class Overview(ApiModel):
    """The cluster at a glance."""

    gpus: str
    """Free GPUs per node, in one sentence."""
    namespaces: list[str]
    """Namespaces that exist (and that the caller may use)."""
    services: dict[str, int]
    """InferenceServices by state: ready, not ready, stopped."""
    models: dict[str, int]
    """Models by phase."""
    runs: dict[str, int]
    """PipelineRuns by phase."""
    attention: list[Attention]
    """What is not as asked: services not ready, models failed or waiting, runs failed or waiting."""
    more: int = 0
    """Items needing attention beyond those listed."""


@query(
    "resource.overview",
    description="The cluster in one call: free GPUs, namespaces, counts of services, models and "
    "pipeline runs by state, and what is not as asked with why.",
    examples=[Example(description="Everything", input={})],
)
async def overview(context: Context, request: OverviewInput) -> Overview:
    scope = context.namespace_of(request.namespace) if request.namespace else None
    gpus, namespaces, services, models, runs = await asyncio.gather(
        resource.observe(context),
        context.kube.list(resources.NAMESPACES),
        context.kube.list(resources.INFERENCE_SERVICES, namespace=scope),
        context.kube.list(resources.MODELS, namespace=scope),
        context.kube.list(resources.PIPELINE_RUNS, namespace=scope),
    )
    seen = [body for body in (*services, *models, *runs) if context.allows(body["metadata"]["namespace"])]
    return overview_of(
        gpus=gpus.summary,
        namespaces=sorted(n["metadata"]["name"] for n in namespaces if context.allows(n["metadata"]["name"])),
        services=[InferenceService.model_validate(b) for b in seen if b["kind"] == "InferenceService"],
        models=[Model.model_validate(b) for b in seen if b["kind"] == "Model"],
        runs=[PipelineRun.model_validate(b) for b in seen if b["kind"] == "PipelineRun"],
    )


def overview_of(
    *,
    gpus: str,
    namespaces: list[str],
    services: list[InferenceService],
    models: list[Model],
    runs: list[PipelineRun],
) -> Overview:
    """The overview of what was observed (pure)."""
    lines = [service.summarize(s) for s in services]
    waiting = (
        Attention(
            kind="InferenceService", name=s.name, namespace=s.namespace, reason=s.reason, message=s.message
        )
        for s in lines
        if not s.suspend and s.ready is not ConditionStatus.TRUE
    )
    found = [*waiting, *map(_stalled, models), *map(_stuck, runs)]
    attention = [a for a in found if a is not None]
    return Overview(
        gpus=gpus,
        namespaces=namespaces,
        services=dict(Counter(_service_state(s) for s in lines)),
        models=dict(Counter(str(model.summarize(m).phase or "Unknown") for m in models)),
        runs=dict(Counter(str(pipeline.summarize(r).phase) for r in runs)),
        attention=attention[:_ATTENTION_LIMIT],
        more=max(len(attention) - _ATTENTION_LIMIT, 0),
    )


def _stalled(found: Model) -> Attention | None:
    """A Model that will not get Ready without someone acting (kstatus's Stalled), and why."""
    stalled = conditions.find(found.status.conditions, conditions.STALLED) if found.status else None
    if stalled is None or stalled.status is not ConditionStatus.TRUE:
        return None
    meta = found.metadata
    return Attention(
        kind="Model",
        name=meta.name or "",
        namespace=meta.namespace or "",
        reason=stalled.reason,
        message=stalled.message,
    )


def _stuck(run: PipelineRun) -> Attention | None:
    """A run that failed, or waits for services: one that runs or ended well needs nobody."""
    succeeded = conditions.find(run.status.conditions, ConditionType.SUCCEEDED) if run.status else None
    if succeeded is None:
        return None
    failed = succeeded.status is ConditionStatus.FALSE and succeeded.reason != Reason.CANCELLED
    if not failed and succeeded.reason != SERVICES_NOT_READY:
        return None
    meta = run.metadata
    return Attention(
        kind="PipelineRun", name=meta.name or "", namespace=meta.namespace or "", reason=succeeded.reason,
        message=succeeded.message,
    )  # fmt: skip


def _service_state(line: service.ServiceSummary) -> str:
    if line.suspend:
        return "stopped"
    return "ready" if line.ready is ConditionStatus.TRUE else "notReady"


UNITS = (overview,)
