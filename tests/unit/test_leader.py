"""When a leader Lease counts as abandoned."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from aima.kube import leader

pytestmark = pytest.mark.unit

NOW = datetime.datetime(2026, 11, 22, 12, 0, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("spec", "is_expired"),
    [
        (
            {"holderIdentity": "a", "renewTime": "2026-11-22T11:59:50.000000Z", "leaseDurationSeconds": 15},
            False,
        ),
        (
            {"holderIdentity": "a", "renewTime": "2026-11-22T11:59:40.000000Z", "leaseDurationSeconds": 15},
            True,
        ),
        ({"renewTime": "2026-11-22T11:59:59.000000Z", "leaseDurationSeconds": 15}, True),
        ({"holderIdentity": "a"}, True),
    ],
    ids=["renewed recently", "renewal overdue", "released", "never renewed"],
)
def test_expired(spec: dict[str, Any], is_expired: bool) -> None:
    assert leader.expired({"spec": spec}, now=NOW) is is_expired
