"""The pydantic models speak camelCase on the wire, fill defaults, and parse what kubectl returns."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aima import api
from aima.api.common import Condition, ConditionStatus, ConditionType, Reason
from aima.api.engine import EngineArgsStyle
from aima.api.inference_service import InferenceService, InferenceServiceStatus
from aima.api.model import Model, ReclaimPolicy
from aima.api.pipeline import PipelineRun
from aima.domain.sources import parse_source

pytestmark = pytest.mark.unit


def test_package_exports_are_importable() -> None:
    assert len(set(api.__all__)) == len(api.__all__)
    assert all(hasattr(api, name) for name in api.__all__)


def test_inference_service_round_trips_in_camel_case() -> None:
    body = {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "chat", "namespace": "ns", "generation": 3, "uid": "u", "extra": "kept"},
        "spec": {
            "modelRef": {"name": "qwen"},
            "engineArgs": {"max-model-len": 8192},
            "resources": {"gpus": 2},
        },
    }
    isvc = InferenceService.model_validate(body)
    assert isvc.spec.model_ref.name == "qwen"
    assert isvc.spec.replicas == 1 and isvc.spec.suspend is False
    dumped = isvc.model_dump(exclude_none=True)
    assert dumped["spec"]["modelRef"] == {"name": "qwen"}
    assert dumped["spec"]["engineArgs"] == {"max-model-len": 8192}
    assert dumped["apiVersion"] == "aima.dev/v1alpha1"


def test_snake_case_names_also_work_in_python() -> None:
    model = Model.model_validate({"metadata": {"name": "m"}, "spec": {"source": "hf://a/b", "type": "LLM"}})
    assert model.spec.cache is None
    status = InferenceServiceStatus(ready_replicas=2, observed_generation=4)
    assert status.model_dump(exclude_none=True)["readyReplicas"] == 2


def test_condition_serializes_like_metav1() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    condition = Condition(
        type=ConditionType.READY,
        status=ConditionStatus.FALSE,
        reason=Reason.INSUFFICIENT_GPU,
        message="0/3 nodes have a free nvidia.com/gpu",
        last_transition_time=when,
        observed_generation=2,
    )
    assert condition.model_dump(mode="json") == {
        "type": "Ready",
        "status": "False",
        "reason": "InsufficientGPU",
        "message": "0/3 nodes have a free nvidia.com/gpu",
        "lastTransitionTime": "2026-01-02T03:04:05Z",
        "observedGeneration": 2,
    }


def test_enums_are_str_enums() -> None:
    assert str(ReclaimPolicy.RETAIN) == "Retain"
    assert f"{EngineArgsStyle.FLAG_AND_VALUE}" == "FlagAndValue"


def test_pipeline_run_defaults() -> None:
    run = PipelineRun.model_validate({"metadata": {"name": "r"}, "spec": {"pipelineRef": {"name": "p"}}})
    assert run.spec.cancel is False and run.spec.inputs == {}


@pytest.mark.parametrize(
    ("source", "parts"),
    [
        ("hf://Qwen/Qwen3-8B", ("hf", "Qwen/Qwen3-8B", None, None, None)),
        ("hf://Qwen/Qwen3-8B@abc123", ("hf", "Qwen/Qwen3-8B", "abc123", None, None)),
        ("modelscope://qwen/Qwen3-8B@v1", ("modelscope", "qwen/Qwen3-8B", "v1", None, None)),
        ("ollama://llama3.2:1b", ("ollama", "llama3.2:1b", None, None, None)),
        ("pvc://weights/llama/8b", ("pvc", None, None, "weights", "llama/8b")),
        ("pvc://weights", ("pvc", None, None, "weights", None)),
        ("s3://bucket/prefix", ("s3", None, None, None, None)),
    ],
)
def test_parse_source(source: str, parts: tuple[str | None, ...]) -> None:
    parsed = parse_source(source)
    assert (parsed.scheme, parsed.repo, parsed.revision, parsed.claim, parsed.path) == parts


def test_parse_source_without_scheme() -> None:
    with pytest.raises(ValueError, match="no scheme"):
        parse_source("Qwen/Qwen3-8B")
