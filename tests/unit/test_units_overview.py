"""resource.overview from observed objects (pure): counts what is fine, lists what is not and why."""

from __future__ import annotations

from typing import Any

import pytest

from aima.api.inference_service import InferenceService
from aima.api.model import Model
from aima.api.pipeline import PipelineRun
from aima.units.overview import overview_of

pytestmark = pytest.mark.unit

T = "2026-01-01T00:00:00Z"


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": T}


def isvc(name: str, *, ready: str, message: str = "", suspend: bool = False) -> InferenceService:
    return InferenceService.model_validate(
        {
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"modelRef": {"name": "m"}, "suspend": suspend},
            "status": {
                "conditions": [condition("Ready", ready, "Ready" if ready == "True" else "Waiting", message)]
            },
        }
    )


def test_what_is_not_as_asked_is_listed_with_why_and_the_rest_counted() -> None:
    stalled = Model.model_validate(
        {
            "metadata": {"name": "gone", "namespace": "team"},
            "spec": {"source": "pvc://missing/m", "type": "LLM"},
            "status": {"conditions": [condition("Stalled", "True", "ClaimNotFound", "no claim missing")]},
        }
    )
    waiting = PipelineRun.model_validate(
        {
            "metadata": {"name": "voice-1", "namespace": "team"},
            "spec": {"pipelineRef": {"name": "voice"}},
            "status": {"conditions": [condition("Succeeded", "Unknown", "ServicesNotReady", "no service")]},
        }
    )
    seen = overview_of(
        gpus="15 of 16 GPUs free",
        namespaces=["default", "team"],
        services=[
            isvc("up", ready="True"),
            isvc("big", ready="False", message="needs 8 GPUs on one node"),
            isvc("off", ready="False", suspend=True),
        ],
        models=[stalled],
        runs=[waiting],
    )
    assert seen.services == {"ready": 1, "notReady": 1, "stopped": 1}
    assert [(a.kind, a.name, a.reason) for a in seen.attention] == [
        ("InferenceService", "big", "Waiting"),
        ("Model", "gone", "ClaimNotFound"),
        ("PipelineRun", "voice-1", "ServicesNotReady"),
    ]
    assert seen.attention[0].message == "needs 8 GPUs on one node"
    assert seen.namespaces == ["default", "team"] and seen.more == 0
