"""Status of Pipelines and PipelineRuns from what was found (pure; the clock is passed in).

A Pipeline has `Valid` (the definition fits the units) and `Ready` (valid, and every InferenceService
its steps' models need is Ready). A PipelineRun has `Succeeded`: Unknown while pending or running,
True when done, False with the reason it is not (StepFailed, Cancelled, TimedOut, InvalidSpec,
PipelineNotFound, Interrupted); `Ready` mirrors it, and `phase` is derived from it for display only.

Both report progress as GitOps tools read it (kstatus, see `aima.domain.conditions`): an invalid
Pipeline is `Stalled` (only an edit helps), one waiting for its services is `Reconciling` (they are
likely still starting, or not yet applied); a run is `Reconciling` until it ends, and `Stalled` once
it ended without succeeding, as nothing more will happen to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from aima.api.common import Condition, ConditionStatus, ConditionType, Reason
from aima.api.pipeline import (
    PipelineProblem,
    PipelineRunPhase,
    PipelineRunStatus,
    PipelineStatus,
    StepService,
)
from aima.domain.conditions import RECONCILING, STALLED, Progress, find, set_condition, set_progress

__all__ = [
    "INTERRUPTED",
    "RUNNING",
    "SERVICES_NOT_READY",
    "blocking",
    "finished",
    "pipeline_status",
    "problems_text",
    "run_condition",
    "services_text",
    "with_generation",
]

RUNNING: Final = "Running"
SERVICES_NOT_READY: Final = "ServicesNotReady"
INTERRUPTED: Final = "Interrupted"
"""The operator stopped while the run was executing; its steps cannot be resumed."""
_RUN_PROGRESS: Final[dict[ConditionStatus, Progress]] = {
    ConditionStatus.UNKNOWN: RECONCILING,  # pending, waiting for services, or running
    ConditionStatus.FALSE: STALLED,  # ended without succeeding: nothing more will happen
}


def problems_text(problems: Sequence[PipelineProblem], *, limit: int = 5) -> str:
    """Problems as one message: `step 'chat' inputs.model: ...; ...`."""
    parts = [
        " ".join(filter(None, [f"step {p.step!r}" if p.step else None, p.field])) + f": {p.message}"
        for p in problems[:limit]
    ]
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(parts) + more


def blocking(services: Sequence[StepService], *, require_services: bool) -> list[StepService]:
    """The services a run must wait for: every InferenceService that exists and is not Ready (the
    gateway would refuse its model), and, when `require_services`, models no InferenceService serves
    (off when the gateway also routes to models served elsewhere)."""
    return [s for s in services if not s.ready and (s.service is not None or require_services)]


def services_text(services: Sequence[StepService]) -> str:
    """The services that are not ready, as one message."""
    return "; ".join(f"step {s.step!r} (model {s.model}): {s.message}" for s in services if not s.ready)


def pipeline_status(
    *,
    generation: int | None,
    previous: Sequence[Condition],
    problems: Sequence[PipelineProblem],
    services: Sequence[StepService],
    require_services: bool,
    now: datetime,
) -> PipelineStatus:
    """The status of a Pipeline from its problems and its services' readiness."""
    valid: tuple[ConditionStatus, str, str] = (
        (
            ConditionStatus.TRUE,
            Reason.SUCCEEDED,
            "Every step names a registered unit and every reference resolves",
        )
        if not problems
        else (ConditionStatus.FALSE, Reason.INVALID_SPEC, problems_text(problems))
    )
    ready: tuple[ConditionStatus, str, str]
    progress: Progress | None = None
    if problems:
        ready, progress = (ConditionStatus.FALSE, Reason.INVALID_SPEC, valid[2]), STALLED
    elif waiting := blocking(services, require_services=require_services):
        ready, progress = (ConditionStatus.FALSE, SERVICES_NOT_READY, services_text(waiting)), RECONCILING
    else:
        ready = (ConditionStatus.TRUE, Reason.READY, "The pipeline is valid and its services are ready")
    conditions = list(previous)
    for type_, (status, reason, message) in ((ConditionType.VALID, valid), (ConditionType.READY, ready)):
        conditions = set_condition(
            conditions,
            type_=type_,
            status=status,
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        )
    conditions = set_progress(
        conditions, progress, reason=ready[1], message=ready[2], generation=generation, now=now
    )
    return PipelineStatus(
        observed_generation=generation,
        conditions=conditions,
        problems=list(problems[:32]),
        services=list(services[:32]),
    )


def run_condition(
    status: PipelineRunStatus,
    *,
    state: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> PipelineRunStatus:
    """`status` with its Succeeded condition set, and what follows from it: Ready (the same), the
    progress (Reconciling until the run ends, Stalled when it ended without succeeding) and the phase."""
    conditions = list(status.conditions)
    for type_ in (ConditionType.SUCCEEDED, ConditionType.READY):
        conditions = set_condition(
            conditions,
            type_=type_,
            status=state,
            reason=reason,
            message=message[:32768],
            generation=generation,
            now=now,
        )
    progress = _RUN_PROGRESS.get(state)
    conditions = set_progress(
        conditions, progress, reason=reason, message=message[:32768], generation=generation, now=now
    )
    return status.model_copy(
        update={"conditions": conditions, "phase": _phase(state, reason), "observed_generation": generation}
    )


def with_generation(status: PipelineRunStatus, generation: int | None) -> PipelineRunStatus:
    """A finished run's status as the answer to spec ``generation`` (a `cancel` set after the end, or
    during the run, changes nothing of the outcome but must not leave the status looking stale)."""
    conditions = [c.model_copy(update={"observed_generation": generation}) for c in status.conditions]
    return status.model_copy(update={"conditions": conditions, "observed_generation": generation})


def finished(status: PipelineRunStatus | None) -> bool:
    """Whether the run has ended (its Succeeded condition is True or False)."""
    condition = find(status.conditions, ConditionType.SUCCEEDED) if status else None
    return condition is not None and condition.status is not ConditionStatus.UNKNOWN


def _phase(state: ConditionStatus, reason: str) -> PipelineRunPhase:
    if state is ConditionStatus.TRUE:
        return PipelineRunPhase.SUCCEEDED
    if state is ConditionStatus.FALSE:
        return PipelineRunPhase.CANCELLED if reason == Reason.CANCELLED else PipelineRunPhase.FAILED
    return PipelineRunPhase.RUNNING if reason == RUNNING else PipelineRunPhase.PENDING
