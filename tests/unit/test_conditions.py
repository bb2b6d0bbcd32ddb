"""Condition helpers (pure): Reconciling and Stalled as GitOps tools read them (kstatus)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aima.api.common import Condition, ConditionStatus
from aima.domain import conditions

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)


def ready(status: ConditionStatus) -> list[Condition]:
    return conditions.set_condition(
        [], type_="Ready", status=status, reason="Starting", message="m", generation=1, now=NOW
    )


def types(found: list[Condition]) -> list[tuple[str, str]]:
    return [(c.type, c.status) for c in found]


def test_at_most_one_of_reconciling_and_stalled_is_present_and_only_while_true() -> None:
    working = conditions.set_progress(
        ready(ConditionStatus.FALSE),
        conditions.RECONCILING,
        reason="Starting",
        message="m",
        generation=1,
        now=NOW,
    )
    assert types(working) == [("Ready", "False"), ("Reconciling", "True")]
    stuck = conditions.set_progress(
        working, conditions.STALLED, reason="CrashLoopBackOff", message="crashing", generation=2, now=LATER
    )
    assert types(stuck) == [("Ready", "False"), ("Stalled", "True")]
    assert stuck[1].observed_generation == 2
    done = conditions.set_progress(stuck, None, generation=2, now=LATER)
    assert types(done) == [("Ready", "False")]


def test_a_condition_that_stays_true_keeps_its_transition_time() -> None:
    first = conditions.set_progress(
        ready(ConditionStatus.FALSE),
        conditions.RECONCILING,
        reason="Starting",
        message="a",
        generation=1,
        now=NOW,
    )
    again = conditions.set_progress(
        first, conditions.RECONCILING, reason="Reconciling", message="b", generation=1, now=LATER
    )
    found = conditions.find(again, conditions.RECONCILING)
    assert found is not None
    assert (found.reason, found.message, found.last_transition_time) == ("Reconciling", "b", NOW)
