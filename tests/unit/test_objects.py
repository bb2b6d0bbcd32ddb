"""Whether an observed child already holds what the planner wants (no write needed)."""

from __future__ import annotations

from typing import Any

import pytest

from aima.domain import objects

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("desired", "observed", "satisfied"),
    [
        ({"a": 1}, {"a": 1, "added": "by server"}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"labels": {}}, {}, True),
        ({"items": []}, {}, True),
        ({"cpu": 4}, {"cpu": "4"}, True),
        ({"list": [{"x": 1}]}, {"list": [{"x": 1, "y": 2}]}, True),
        ({"list": [{"x": 1}]}, {"list": [{"x": 1}, {"x": 2}]}, False),
        ({"flag": True}, {"flag": "True"}, False),
        ({"missing": "x"}, {}, False),
    ],
    ids=[
        "server adds fields",
        "changed value",
        "empty map omitted",
        "empty list omitted",
        "quantity as string",
        "list items compared as subsets",
        "list length differs",
        "booleans are not strings",
        "missing field",
    ],
)
def test_is_satisfied(desired: dict[str, Any], observed: dict[str, Any], satisfied: bool) -> None:
    assert objects.is_satisfied(desired, observed) is satisfied
