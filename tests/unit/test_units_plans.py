"""Pure parts of the newer units (verify, recommend, import), URIs, the allow-list, SSE, CLI names."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from aima.api.engine import Engine
from aima.api.model import Model
from aima.api.pipeline import PipelineRun
from aima.cli.model_cmd import name_from_source
from aima.doors import watch
from aima.doors.http import create_app
from aima.kube import KubeClient
from aima.units import Context, Registry, Request, execute, query, registry
from aima.units.model import ModelImport, model_issues
from aima.units.pipeline import step_progress
from aima.units.resource import ResourceStatus, StatusInput
from aima.units.service import plan_recommendation
from aima.units.uris import resolve

pytestmark = pytest.mark.unit

DIGEST = "a" * 64


def model(*, ready: bool, files: dict[str, str], file_count: int | None = None, status: bool = True) -> Model:
    body: dict[str, Any] = {
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {"source": "hf://org/m", "type": "LLM", "format": "SafeTensors"},
    }
    if status:
        body["status"] = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "Ready" if ready else "Downloading",
                    "message": "" if ready else "40% of 2 GiB",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "manifest": {
                "sha256": DIGEST,
                "fileCount": file_count or len(files),
                "totalBytes": 2 * 1024**3,
                "files": [{"path": p, "size": 1, "sha256": d} for p, d in files.items()],
            },
            "estimate": {"gpus": 2, "gpuMemory": "30Gi"},
        }
    return Model.model_validate(body)


def test_verify_finds_nothing_wrong_with_a_ready_model_whose_digests_match() -> None:
    assert model_issues(model(ready=True, files={"a.bin": DIGEST}), expected={"a.bin": DIGEST}) == ([], 1)


def test_verify_names_each_problem() -> None:
    issues, checked = model_issues(
        model(ready=False, files={"a.bin": "b" * 64}, file_count=300),
        expected={"a.bin": DIGEST, "c.bin": DIGEST},
    )
    assert checked == 1
    assert issues[0] == "The Model is not Ready (Downloading: 40% of 2 GiB)"
    assert issues[1] == f"a.bin has sha256 {'b' * 64}, expected {DIGEST}"
    assert "c.bin is not among the 1 files listed" in issues[2]
    undone, _ = model_issues(model(ready=False, files={}, status=False), expected={})
    assert undone[-1] == "No verified manifest: the download has not completed"


@pytest.mark.parametrize("path", ["../etc", "a/../../b", "a\x00b"])
def test_import_refuses_paths_that_leave_the_claim(path: str) -> None:
    with pytest.raises(ValueError, match="inside the claim"):
        ModelImport.model_validate({"name": "m", "claim": "c", "path": path, "type": "LLM"})


def engine(name: str, *, priority: int = 0, gpus: int = 1) -> Engine:
    return Engine.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "variants": [{"name": "cuda", "accelerator": "NvidiaGPU", "image": "e:1"}],
                "modelTypes": ["LLM"],
                "modelFormats": ["SafeTensors"],
                "endpoints": ["/v1/chat/completions"],
                "priority": priority,
                "resources": {"gpus": gpus},
            },
        }
    )


def node(name: str, gpus: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "H100"}},
        "spec": {},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def test_recommend_uses_the_models_estimate_and_says_where_it_fits() -> None:
    advice = plan_recommendation(
        model(ready=True, files={}),
        engines=[engine("slow"), engine("vllm", priority=10)],
        nodes=[node("gpu-0", 1), node("gpu-1", 4)],
        pods=[],
        gpu_product=None,
        replicas=2,
    )
    assert (advice.engine, advice.gpus, advice.gpu_memory) == ("vllm", 2, "30Gi")
    assert advice.fits is True
    assert advice.nodes == ["gpu-1", "gpu-1"]
    assert advice.service == {
        "name": "m", "modelRef": {"name": "m"}, "engineRef": {"name": "vllm"}, "replicas": 2,
        "resources": {"gpus": 2},
    }  # fmt: skip
    too_many = plan_recommendation(
        model(ready=True, files={}), engines=[engine("vllm")], nodes=[node("gpu-0", 1)], pods=[],
        gpu_product=None, replicas=1,
    )  # fmt: skip
    assert too_many.fits is False
    assert "not schedulable" in too_many.message


def test_recommend_without_an_engine_says_so() -> None:
    advice = plan_recommendation(
        model(ready=True, files={}),
        engines=[],
        nodes=[node("gpu-0", 8)],
        pods=[],
        gpu_product=None,
        replicas=1,
    )
    assert advice.engine is None
    assert advice.fits is False
    assert "No Engine serves LLM models" in advice.message


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("hf://Qwen/Qwen3-0.6B", "qwen3-0.6b"),
        ("hf://org/Repo_Name@main", "repo-name"),
        ("ollama://llama3.2:1b", "llama3.2-1b"),
        ("pvc://models/llama/8b/", "8b"),
    ],
)
def test_the_cli_derives_model_names_from_sources(source: str, name: str) -> None:
    assert name_from_source(source) == name


def test_uris_resolve_to_a_unit_and_its_input_and_reject_odd_names() -> None:
    units = registry()
    found = resolve(units, "aima://services/team-a/qwen")
    assert found is not None
    assert (found[0].unit, found[1]) == ("service.get", {"namespace": "team-a", "name": "qwen"})
    assert resolve(units, "aima://services/qwen")[1] == {"name": "qwen"}  # type: ignore[index]
    assert resolve(units, "aima://services/../secrets") is None
    assert resolve(units, "aima://nothing") is None


CALLS: list[int] = []


@query("resource.status", description="A fake GPU count that changes on every call.")
async def _gpus(context: Context, request: StatusInput) -> ResourceStatus:
    CALLS.append(1)
    return ResourceStatus(total=8, used=len(CALLS) // 2, free=8, nodes=[], summary="fake")


def test_resources_can_be_read_and_watched_over_sse() -> None:
    units = Registry([_gpus])

    async def go() -> None:
        context = Context(kube=cast(KubeClient, None))
        async with TestClient(TestServer(create_app(registry=units, context=context))) as door:
            listed = await (await door.get("/api/v2/resources")).json()
            assert [r["uri"] for r in listed["resources"]] == ["aima://gpus"]
        app = web.Application()
        watch.add_routes(app, registry=units, context=context, heartbeat=0.05)
        async with TestClient(TestServer(app)) as client:
            read = await client.get("/api/v2/resources", params={"uri": "aima://gpus"})
            assert (await read.json())["data"]["total"] == 8
            missing = await client.get("/api/v2/resources", params={"uri": "aima://models"})
            assert missing.status == 404
            async with client.get("/api/v2/resources/watch", params={"uri": "aima://gpus"}) as stream:
                assert stream.headers["Content-Type"] == "text/event-stream"
                updates: list[dict[str, Any]] = []
                async for line in stream.content:
                    if line.startswith(b"data: "):
                        updates.append(json.loads(line[6:]))
                    if len(updates) == 2:
                        break
            assert [u["data"]["used"] for u in updates] == [
                updates[0]["data"]["used"],
                updates[0]["data"]["used"] + 1,
            ]

    asyncio.run(go())


def test_the_allow_list_applies_to_every_door_through_execute() -> None:
    context = Context(kube=cast(KubeClient, None), namespace="a", namespaces=frozenset({"a"}))
    response = asyncio.run(
        execute(registry(), context, Request(unit="service.get", input={"name": "x", "namespace": "b"}))
    )
    assert response.error is not None
    assert response.error.code == "FORBIDDEN"
    assert response.error.details == {"namespace": "b", "allowed": ["a"]}


def test_a_runs_progress_counts_ended_steps_and_names_the_running_ones() -> None:
    def run(*phases: str) -> PipelineRun:
        steps = [{"id": f"s{i}", "phase": phase} for i, phase in enumerate(phases)]
        return PipelineRun.model_validate(
            {
                "metadata": {"name": "r", "namespace": "ns"},
                "spec": {"pipelineRef": {"name": "p"}},
                "status": {"steps": steps},
            }
        )

    assert step_progress(run()) == (0, None, "0 of 0 steps done")
    assert step_progress(run("Succeeded", "Running", "Running", "Pending")) == (
        1,
        4,
        "1 of 4 steps done; running s1, s2",
    )
    assert step_progress(run("Succeeded", "Skipped", "Failed")) == (3, 3, "3 of 3 steps done")
