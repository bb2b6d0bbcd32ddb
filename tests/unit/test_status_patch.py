"""The one status writer (`aima.domain.objects.status_patch`): a merge patch over the status read that
clears what went away, leaves another writer's fields alone, and is None in a steady state."""

from __future__ import annotations

import pytest

from aima.api.model import ModelStatus
from aima.domain import model as planning
from aima.domain.objects import status_patch

pytestmark = pytest.mark.unit

OBSERVED = {
    "conditions": [],
    "phase": "Downloading",
    "loaderJob": "tiny-loader-1",
    "path": "/models/tiny",
    "progress": {"phase": "Downloading", "bytesDone": 10},
}


def test_a_field_that_went_away_is_cleared_and_the_loaders_are_left_alone() -> None:
    status = ModelStatus.model_validate({"conditions": [], "phase": "Ready", "path": "/models/tiny"})
    patch = status_patch(status, observed=OBSERVED, others=planning.LOADER_FIELDS)
    assert patch == {"loaderJob": None, "conditions": [], "phase": "Ready", "path": "/models/tiny"}


def test_the_same_status_writes_nothing() -> None:
    status = ModelStatus.model_validate(OBSERVED | {"progress": {"phase": "Ready"}})
    assert status_patch(status, observed=OBSERVED, others=planning.LOADER_FIELDS) is None


def test_without_another_writer_every_field_is_compared() -> None:
    status = ModelStatus.model_validate(OBSERVED | {"progress": {"phase": "Ready"}})
    patch = status_patch(status, observed=OBSERVED)
    assert patch is not None and patch["progress"]["phase"] == "Ready"
