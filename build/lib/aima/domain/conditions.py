"""Conditions as `metav1.Condition` lists, computed purely (no clock reads inside planners).

Besides each kind's own conditions (Ready as the summary), every kind reports where its
reconciliation stands the way GitOps tools read it (kstatus, used by Argo CD health checks, Flux
and kpt): `Reconciling` while work is in progress (downloading, rolling out, waiting for a
dependency), `Stalled` when it cannot go on until a person acts (a failed download, an invalid
spec, a crash loop, not enough GPUs). Each is present only while True, as Flux writes them, so an
object that is done carries neither; `observedGeneration` says which spec the status is about.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final, Literal

from aima.api.common import Condition, ConditionStatus, ConditionType

RECONCILING: Final = ConditionType.RECONCILING.value
STALLED: Final = ConditionType.STALLED.value
Progress = Literal["Reconciling", "Stalled"]
"""Where a reconciliation that is not done stands: still working, or stuck."""


def set_condition(
    conditions: Sequence[Condition],
    *,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """``conditions`` with one condition set; its transition time moves only when its status does,
    so recomputing an unchanged state yields an identical list (and no status write)."""
    previous = next((c for c in conditions if c.type == type_), None)
    changed = previous is None or previous.status != status
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now if changed or previous is None else previous.last_transition_time,
        observed_generation=generation,
    )
    return [c for c in conditions if c.type != type_] + [updated]


def find(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of ``type_``, if present."""
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    """Whether the condition of ``type_`` is present and True."""
    condition = find(conditions, type_)
    return condition is not None and condition.status is ConditionStatus.TRUE


def transition(before: Sequence[Condition], after: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of ``type_`` in ``after`` when its status or reason differs from ``before``:
    the moments worth an Event. Repeated reconciles of the same state yield None."""
    old, new = find(before, type_), find(after, type_)
    if new is None or (old is not None and (old.status, old.reason) == (new.status, new.reason)):
        return None
    return new


def set_progress(
    conditions: Sequence[Condition],
    progress: Progress | None,
    *,
    reason: str = "",
    message: str = "",
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """``conditions`` with `Reconciling` or `Stalled` True (with ``reason`` and ``message``) as
    ``progress`` says, and the other removed; both removed when ``progress`` is None (done)."""
    others = [c for c in conditions if c.type not in (RECONCILING, STALLED)]
    if progress is None:
        return others
    kept = [c for c in conditions if c.type == progress]  # keeps its transition time
    updated = set_condition(
        kept,
        type_=progress,
        status=ConditionStatus.TRUE,
        reason=reason,
        message=message,
        generation=generation,
        now=now,
    )
    return others + updated
