"""Traffic splits: the gateway's weighted choice among a split's targets, and the TrafficReady
condition that says when a target cannot take its share."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from test_gateway_routes import endpoint_slice, isvc
from test_inference_service_plan import NOW, observed, planned, service

from aima.api.inference_service import InferenceService
from aima.domain import inference_service as service_planning
from aima.domain import traffic
from aima.gateway.rollout_guard import Judge
from aima.gateway.routes import build_table, pick, service_view, slice_view

pytestmark = pytest.mark.unit

CANARY = [{"service": "chat", "weight": 90}, {"service": "chat-v2", "weight": 10}]


def table(*, canary_ready: bool = True) -> dict[str, Any]:
    services = [
        service_view(isvc("chat", servedName="assistant", traffic=CANARY)),
        service_view(isvc("chat-v2")),
    ]
    slices = [endpoint_slice("chat", "10.0.0.1"), endpoint_slice("chat-v2", "10.0.0.2", ready=canary_ready)]
    return build_table(services, [s for s in map(slice_view, slices) if s], home="ns")


def shares(backend: Any, draws: int = 1000) -> Counter[str]:
    return Counter(pick(backend, (i + 0.5) / draws).service.name for i in range(draws))


def test_a_split_sends_each_target_its_weight_under_the_name_and_the_alias() -> None:
    routes = table()
    assert routes["assistant"] is routes["chat"]
    assert shares(routes["assistant"]) == {"chat": 900, "chat-v2": 100}
    canary = pick(routes["assistant"], 0.95)
    # The canary's own replicas and model: the engine is asked for what it serves.
    assert (canary.endpoints, canary.upstream_model) == (("http://10.0.0.2:8000",), "chat-v2")


def test_a_target_is_still_asked_for_by_its_own_name_without_the_split() -> None:
    assert shares(table()["chat-v2"]) == {"chat-v2": 1000}


def test_a_target_without_ready_replicas_gives_its_share_to_the_others() -> None:
    assert shares(table(canary_ready=False)["assistant"]) == {"chat": 1000}


def test_a_target_that_does_not_exist_takes_nothing_and_weight_zero_takes_nothing() -> None:
    split = [
        {"service": "chat", "weight": 0},
        {"service": "gone", "weight": 50},
        {"service": "b", "weight": 50},
    ]
    services = [service_view(isvc("chat", traffic=split)), service_view(isvc("b"))]
    slices = [slice_view(endpoint_slice(name, "10.0.0.1")) for name in ("chat", "b")]
    routes = build_table(services, [s for s in slices if s], home="ns")
    assert shares(routes["chat"]) == {"b": 1000}


def target(name: str, *, ready: bool) -> dict[str, Any]:
    body = service(traffic=[]) | {"metadata": {"name": name, "namespace": "team"}}
    condition = {"type": "Ready", "status": "True" if ready else "False", "reason": "R", "message": "m"}
    body["status"] = {"conditions": [condition | {"lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    return body


def splitting(*targets: tuple[str, int]) -> InferenceService:
    split = [{"service": name, "weight": weight} for name, weight in targets]
    return InferenceService.model_validate(service(traffic=split))


def test_traffic_ready_names_a_missing_target_and_what_to_do() -> None:
    found = traffic.finding(splitting(("chat", 90), ("chat-v3", 10)), services={})
    assert found is not None and (found.status, found.reason) == ("False", "TrafficTargetNotFound")
    assert "No InferenceService chat-v3 in namespace team" in found.message
    assert "take it out of spec.traffic" in found.message


def test_traffic_ready_waits_for_a_target_that_is_not_ready_and_passes_when_all_are() -> None:
    split = splitting(("chat", 90), ("chat-v2", 10))
    waiting = traffic.finding(split, services={"chat-v2": target("chat-v2", ready=False)})
    assert waiting is not None and (waiting.status, waiting.reason) == ("False", "TrafficTargetNotReady")
    ready = traffic.finding(split, services={"chat-v2": target("chat-v2", ready=True)})
    assert ready is not None and (ready.status, ready.message) == (
        "True",
        "Requests split: chat 90%, chat-v2 10%",
    )
    assert traffic.finding(InferenceService.model_validate(service()), services={}) is None


def test_the_condition_is_there_only_while_the_spec_splits() -> None:
    body = service(traffic=[{"service": "chat", "weight": 100}])
    plan = planned(body, observed=observed())
    split = traffic.finding(InferenceService.model_validate(body), services={})
    status = service_planning.compute_status(body, plan=plan, observed=observed(), now=NOW, traffic=split)
    assert [c.status for c in status.conditions if c.type == "TrafficReady"] == ["True"]
    body["status"] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"].pop("traffic")
    after = service_planning.compute_status(body, plan=plan, observed=observed(), now=NOW)
    assert not [c for c in after.conditions if c.type == "TrafficReady"]


def test_the_split_targets_are_read_from_a_spec() -> None:
    assert traffic.targets({"traffic": CANARY}) == {"chat", "chat-v2"} and traffic.targets({}) == set()


GUARD = {"maxErrorPercent": 10, "maxTimeToFirstTokenSeconds": 0.5, "windowRequests": 10}


def guarded(*, halted: str | None = None) -> dict[str, Any]:
    routes_for = [isvc("chat", traffic=CANARY, rolloutGuard=GUARD), isvc("chat-v2")]
    if halted is not None:
        routes_for[0]["metadata"]["annotations"] = {"aima.dev/rollout-halted": halted}  # type: ignore[index]
    slices = [slice_view(endpoint_slice(name, "10.0.0.1")) for name in ("chat", "chat-v2")]
    return build_table([service_view(s) for s in routes_for], [s for s in slices if s], home="ns")


def test_a_target_that_fails_past_its_guard_is_halted_once_its_window_is_full() -> None:
    judge, split = Judge(), guarded()["chat"]
    canary, own = pick(split, 0.95), pick(split, 0.05)
    outcomes = [judge.record(split, canary, failed=i % 5 == 0, first_byte=0.1) for i in range(9)]
    assert outcomes == [None] * 9  # judged only on a whole window
    assert (
        judge.record(split, own, failed=True, first_byte=None) is None
    )  # the service's own replicas are not judged
    found = judge.record(split, canary, failed=False, first_byte=0.1)
    assert found is not None and (found.namespace, found.service, found.target) == ("ns", "chat", "chat-v2")
    assert found.reason == "2 of its last 10 requests failed (20 % > 10 %)"
    assert found.annotation.startswith("chat-v2: 2 of its last 10")
    assert judge.record(split, canary, failed=True, first_byte=0.1) is None  # a new window after a halt


def test_a_target_slower_than_its_guard_is_halted() -> None:
    judge, split = Judge(), guarded()["chat"]
    canary = pick(split, 0.95)
    found = [judge.record(split, canary, failed=False, first_byte=0.8) for _ in range(10)][-1]
    assert (
        found is not None
        and found.reason == "median time to first token 0.800 s over its last 10 streams > 0.5 s"
    )


def test_a_halted_target_gets_nothing_and_the_condition_says_what_to_do() -> None:
    routes = guarded(halted="chat-v2: 2 of its last 10 requests failed (20 % > 10 %)")
    assert shares(routes["chat"]) == {"chat": 1000}
    body = service(traffic=[{"service": "chat", "weight": 90}, {"service": "chat-v2", "weight": 10}])
    body["metadata"]["annotations"] = {"aima.dev/rollout-halted": "chat-v2: 2 of its last 10 requests failed"}
    found = traffic.finding(
        InferenceService.model_validate(body), services={"chat-v2": target("chat-v2", ready=True)}
    )
    assert found is not None and (found.status, found.reason) == ("False", "RolloutHalted")
    assert found.message.startswith("The gateway halted chat-v2: 2 of its last 10 requests failed")
    assert "service.rollback" in found.message and "service.rollout" in found.message


def test_an_unguarded_split_is_never_judged() -> None:
    judge, split = Judge(), table()["assistant"]
    assert all(
        judge.record(split, pick(split, 0.95), failed=True, first_byte=None) is None for _ in range(100)
    )
