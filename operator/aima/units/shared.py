"""Small pieces several domains share."""

from __future__ import annotations

from collections.abc import Sequence

from aima.api.common import ApiModel, Condition, ConditionType

__all__ = ["Deleted", "ready"]


class Deleted(ApiModel):
    """What was deleted (in the background: dependents follow by garbage collection)."""

    kind: str
    name: str
    namespace: str | None = None


def ready(conditions: Sequence[Condition]) -> Condition | None:
    """The Ready condition among `conditions`, or None."""
    return next((c for c in conditions if c.type == ConditionType.READY), None)
