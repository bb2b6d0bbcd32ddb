"""The autoscaler's arithmetic: the wish for a load, and the stabilization window that delays
scale-down but never scale-up."""

from __future__ import annotations

import pytest

from aima.gateway.autoscaling import Wishes, wish
from aima.gateway.routes import Autoscaling, service_view

pytestmark = pytest.mark.unit

BOUNDS = Autoscaling(min_replicas=0, max_replicas=4, target_active_requests=8, scale_down_delay_seconds=60)


@pytest.mark.parametrize(("in_flight", "replicas"), [(0, 0), (1, 1), (8, 1), (9, 2), (32, 4), (500, 4)])
def test_the_wish_is_enough_replicas_for_the_target_within_the_bounds(in_flight: int, replicas: int) -> None:
    assert wish(in_flight, BOUNDS) == replicas


def test_an_idle_service_wishes_its_minimum() -> None:
    bounds = Autoscaling(
        min_replicas=2, max_replicas=4, target_active_requests=8, scale_down_delay_seconds=60
    )
    assert wish(0, bounds) == 2


def test_replicas_go_up_at_once_and_down_only_after_the_window() -> None:
    wishes = Wishes()
    assert wishes.add(0.0, 1, window=60) == 1
    assert wishes.add(10.0, 3, window=60) == 3  # a burst: up at once
    assert wishes.add(20.0, 0, window=60) == 3  # the lull does not drain what the burst needed
    assert wishes.add(69.0, 0, window=60) == 3
    assert wishes.add(71.0, 0, window=60) == 0  # the burst's wish has left the window


def test_a_service_view_carries_its_autoscaling_bounds_with_the_apis_defaults() -> None:
    body = {
        "metadata": {"name": "chat", "namespace": "ns"},
        "spec": {"replicas": 1, "autoscaling": {"minReplicas": 0, "maxReplicas": 3}},
    }
    view = service_view(body)
    assert view.autoscaling == Autoscaling(
        min_replicas=0, max_replicas=3, target_active_requests=8, scale_down_delay_seconds=300
    )
    assert view.scale_from_zero
    assert service_view({"metadata": {"name": "fixed"}, "spec": {"replicas": 2}}).autoscaling is None
