"""Units against the real API server: Models, Engines, InferenceServices and GPU accounting."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from aima.kube import connect
from aima.settings import Settings
from aima.units import Context, Request, execute, registry
from aima_testenv import ControlPlane

pytestmark = pytest.mark.integration

REGISTRY = registry()


def call(
    plane: ControlPlane,
    unit: str,
    namespace: str = "default",
    *,
    settings: Settings | None = None,
    **input_: Any,
) -> dict[str, Any]:
    """One unit call through the envelope, as every door makes it."""

    async def go() -> dict[str, Any]:
        kube = await connect(kubeconfig=plane.kubeconfig)
        try:
            # No operator runs here: a change's result is the object as written, not waited on.
            settings_ = settings or Settings(unit_settle_seconds=0)
            context = Context(kube=kube, namespace=namespace, settings=settings_)
            return (await execute(REGISTRY, context, Request(unit=unit, input=input_))).dump()
        finally:
            await kube.close()

    return asyncio.run(go())


def ok(response: dict[str, Any]) -> Any:
    assert response["success"], response.get("error")
    return response["data"]


def kubectl_json(plane: ControlPlane, *args: str) -> Any:
    return json.loads(plane.kubectl(*args, "-o", "json").stdout)


LLM = {"source": "hf://acme/tiny-llm@main", "type": "LLM", "cache": {"size": "1Gi"}}


def test_model_create_get_list_and_delete(aima_crds: ControlPlane, namespace: str) -> None:
    created = ok(call(aima_crds, "model.create", namespace, name="tiny", **LLM))
    assert created["spec"]["source"] == "hf://acme/tiny-llm@main"
    assert created["metadata"]["namespace"] == namespace
    stored = kubectl_json(aima_crds, "get", "model", "tiny", "-n", namespace)
    # Only what the caller gave (the API server adds its defaults): no pydantic defaults in Git diffs.
    assert stored["spec"] == {
        "source": "hf://acme/tiny-llm@main",
        "type": "LLM",
        "cache": {"size": "1Gi", "reclaimPolicy": "Delete"},
    }

    assert ok(call(aima_crds, "model.get", namespace, name="tiny"))["spec"]["type"] == "LLM"
    listed = ok(call(aima_crds, "model.list", namespace))["items"]
    assert [(m["name"], m["type"]) for m in listed] == [("tiny", "LLM")]
    assert listed[0]["ready"] in {"Unknown", "False"}  # False once an operator (other tests') reports
    assert ok(call(aima_crds, "model.list", namespace, type="ASR"))["items"] == []

    again = call(aima_crds, "model.create", namespace, name="tiny", **LLM)
    assert again["error"]["code"] == "CONFLICT"

    assert ok(call(aima_crds, "model.delete", namespace, name="tiny")) == {
        "kind": "Model",
        "name": "tiny",
        "namespace": namespace,
    }
    assert call(aima_crds, "model.get", namespace, name="tiny")["error"]["code"] == "MODEL_NOT_FOUND"
    assert call(aima_crds, "model.delete", namespace, name="tiny")["error"]["code"] == "MODEL_NOT_FOUND"


def test_model_pull_is_idempotent_and_refuses_another_source(aima_crds: ControlPlane, namespace: str) -> None:
    first = ok(call(aima_crds, "model.pull", namespace, name="tiny", **LLM))
    second = ok(call(aima_crds, "model.pull", namespace, name="tiny", **LLM))
    assert first["metadata"]["uid"] == second["metadata"]["uid"]
    other = call(aima_crds, "model.pull", namespace, name="tiny", source="hf://acme/other", type="LLM")
    assert other["error"]["code"] == "CONFLICT"
    assert other["error"]["details"]["source"] == "hf://acme/tiny-llm@main"
    # Without an operator nothing downloads: waiting ends with TIMEOUT and says what it saw.
    waited = call(aima_crds, "model.pull", namespace, name="tiny", wait=True, timeoutSeconds=1, **LLM)
    assert waited["error"]["code"] == "TIMEOUT"


def test_a_pvc_source_needs_its_claim_on_every_door_that_makes_a_model(
    aima_crds: ControlPlane, namespace: str
) -> None:
    pvc = {"source": "pvc://weights/qwen", "type": "LLM"}
    refusals = [
        call(aima_crds, "model.create", namespace, name="a", **pvc),
        call(aima_crds, "model.pull", namespace, name="b", **pvc),
        call(aima_crds, "model.import", namespace, name="c", claim="weights", path="qwen", type="LLM"),
    ]
    for refused in refusals:
        assert refused["error"]["code"] == "NOT_FOUND"
        said = refused["error"]["message"]
        assert said.startswith(f"PersistentVolumeClaim weights not found in namespace {namespace};")
        assert "a pvc:// source is read in place, so the claim must exist first" in said
    assert kubectl_json(aima_crds, "get", "models", "-n", namespace)["items"] == []
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "weights", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    aima_crds.apply([claim])
    assert ok(call(aima_crds, "model.create", namespace, name="a", **pvc))["spec"]["source"] == pvc["source"]


def test_the_api_servers_validation_comes_back_as_invalid_input(
    aima_crds: ControlPlane, namespace: str
) -> None:
    response = call(aima_crds, "model.create", namespace, name="bad", source="ftp://x", type="LLM")
    assert response["error"]["code"] == "INVALID_INPUT"
    assert "source must start with one of" in response["error"]["message"]
    local = call(aima_crds, "model.create", namespace, name="Bad_Name", source="hf://a/b", type="LLM")
    assert local["error"]["code"] == "INVALID_INPUT"
    assert local["error"]["details"]["errors"][0]["loc"] == ["name"]


def test_estimate_resources_uses_the_nodes_gpu_memory(aima_crds: ControlPlane) -> None:
    estimate = ok(call(aima_crds, "model.estimate_resources", parametersBillions=70))
    assert estimate["gpuMemoryMib"] == 81559  # the H100 label of the kwok nodes
    assert estimate["estimate"]["gpus"] == 4
    assert call(aima_crds, "model.estimate_resources")["error"]["code"] == "INVALID_INPUT"


def test_engine_units_read_the_cluster_scoped_engines(aima_crds: ControlPlane) -> None:
    engine = {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "Engine",
        "metadata": {"name": "units-test-engine"},
        "spec": {
            "description": "A test engine",
            "variants": [{"name": "cuda", "accelerator": "NvidiaGPU", "image": "example.com/e:1"}],
            "modelTypes": ["LLM"],
            "modelFormats": ["GGUF"],
            "endpoints": ["/v1/chat/completions"],
        },
    }
    aima_crds.apply([engine])
    try:
        names = [e["name"] for e in ok(call(aima_crds, "engine.list", modelFormat="GGUF"))["items"]]
        assert "units-test-engine" in names
        assert ok(call(aima_crds, "engine.get", name="units-test-engine"))["spec"]["port"] == 8000
        features = ok(call(aima_crds, "engine.features", name="units-test-engine"))
        assert features["accelerators"] == ["NvidiaGPU"]
        assert features["endpoints"] == ["/v1/chat/completions"]
        assert call(aima_crds, "engine.get", name="nope")["error"]["code"] == "ENGINE_NOT_FOUND"
    finally:
        aima_crds.kubectl("delete", "engine", "units-test-engine", "--wait=false")


def test_service_create_scale_stop_and_start_change_the_custom_resource(
    aima_crds: ControlPlane, namespace: str
) -> None:
    missing = call(aima_crds, "service.create", namespace, name="svc", modelRef={"name": "tiny"})
    assert missing["error"]["code"] == "MODEL_NOT_FOUND"
    ok(call(aima_crds, "model.create", namespace, name="tiny", **LLM))
    no_engine = call(
        aima_crds,
        "service.create",
        namespace,
        name="svc",
        modelRef={"name": "tiny"},
        engineRef={"name": "nope"},
    )
    assert no_engine["error"]["code"] == "ENGINE_NOT_FOUND"

    created = ok(
        call(aima_crds, "service.create", namespace, name="svc", modelRef={"name": "tiny"}, replicas=2)
    )
    assert created["replicas"] == 2

    def spec() -> dict[str, Any]:
        result: dict[str, Any] = kubectl_json(aima_crds, "get", "inferenceservice", "svc", "-n", namespace)[
            "spec"
        ]
        return result

    assert ok(call(aima_crds, "service.scale", namespace, name="svc", replicas=3))["replicas"] == 3
    assert spec()["replicas"] == 3
    stopped = ok(call(aima_crds, "service.stop", namespace, name="svc"))
    assert (stopped["suspend"], stopped["replicas"]) == (True, 3)
    assert (spec()["suspend"], spec()["replicas"]) == (True, 3)
    started = ok(call(aima_crds, "service.start", namespace, name="svc"))
    assert (started["suspend"], started["replicas"]) == (False, 3)
    assert spec()["suspend"] is False

    assert [s["name"] for s in ok(call(aima_crds, "service.list", namespace))["items"]] == ["svc"]
    assert ok(call(aima_crds, "service.get", namespace, name="svc"))["spec"]["modelRef"] == {"name": "tiny"}
    assert (
        call(aima_crds, "service.scale", namespace, name="svc", replicas=-1)["error"]["code"]
        == "INVALID_INPUT"
    )
    assert ok(call(aima_crds, "service.delete", namespace, name="svc"))["kind"] == "InferenceService"
    assert call(aima_crds, "service.stop", namespace, name="svc")["error"]["code"] == "SERVICE_NOT_FOUND"


def test_rollout_and_rollback_set_and_clear_the_traffic_split(
    aima_crds: ControlPlane, namespace: str
) -> None:
    ok(call(aima_crds, "model.create", namespace, name="tiny", **LLM))
    for name in ("chat", "chat-v2"):
        ok(call(aima_crds, "service.create", namespace, name=name, modelRef={"name": "tiny"}, replicas=0))

    def traffic() -> Any:
        return kubectl_json(aima_crds, "get", "inferenceservice", "chat", "-n", namespace)["spec"].get(
            "traffic"
        )

    canary = ok(call(aima_crds, "service.rollout", namespace, name="chat", to="chat-v2", weight=10))
    split = [{"service": "chat", "weight": 90}, {"service": "chat-v2", "weight": 10}]
    assert canary["traffic"] == split and traffic() == split
    ok(call(aima_crds, "service.rollout", namespace, name="chat", to="chat-v2", weight=100))
    assert traffic() == [{"service": "chat", "weight": 0}, {"service": "chat-v2", "weight": 100}]
    assert ok(call(aima_crds, "service.rollback", namespace, name="chat"))["traffic"] == []
    assert traffic() is None

    missing = call(aima_crds, "service.rollout", namespace, name="chat", to="chat-v3", weight=10)["error"]
    assert missing["code"] == "SERVICE_NOT_FOUND" and "create it with service.create" in missing["message"]
    itself = call(aima_crds, "service.rollout", namespace, name="chat", to="chat", weight=10)["error"]
    assert itself["code"] == "INVALID_INPUT" and "service.rollback" in itself["message"]
    assert traffic() is None


def test_update_merges_into_the_spec_and_refuses_what_would_not_serve(
    aima_crds: ControlPlane, namespace: str
) -> None:
    for name in ("tiny", "next"):
        ok(call(aima_crds, "model.create", namespace, name=name, **LLM))
    ok(
        call(
            aima_crds,
            "service.create",
            namespace,
            name="svc",
            modelRef={"name": "tiny"},
            replicas=0,
            servedName="chat",
        )
    )

    def spec() -> Any:
        return kubectl_json(aima_crds, "get", "inferenceservice", "svc", "-n", namespace)["spec"]

    adapters = [{"name": "sql", "modelRef": {"name": "sql-lora"}}]
    updated = ok(
        call(
            aima_crds,
            "service.update",
            namespace,
            name="svc",
            spec={"modelRef": {"name": "next"}, "adapters": adapters},
        )
    )
    assert updated["model"] == "next"
    assert (spec()["modelRef"], spec()["adapters"], spec()["servedName"]) == (
        {"name": "next"},
        adapters,
        "chat",
    )
    ok(call(aima_crds, "service.update", namespace, name="svc", spec={"servedName": None}))
    assert "servedName" not in spec()

    def refused(change: dict[str, Any]) -> dict[str, Any]:
        error: dict[str, Any] = call(aima_crds, "service.update", namespace, name="svc", spec=change)["error"]
        return error

    missing = refused({"modelRef": {"name": "nowhere"}})
    assert missing["code"] == "MODEL_NOT_FOUND" and "model.pull" in missing["message"]
    assert refused({"engineRef": {"name": "nowhere"}})["code"] == "ENGINE_NOT_FOUND"
    unknown = refused({"modelref": {"name": "next"}})
    assert unknown["code"] == "INVALID_INPUT" and "modelref: unknown field" in unknown["message"]
    assert "modelRef" in unknown["message"]  # what the spec does take
    bad_split = refused({"traffic": [{"service": "svc", "weight": 90}]})
    assert bad_split["code"] == "INVALID_INPUT" and "weights must sum to 100" in bad_split["message"]
    assert spec()["modelRef"] == {"name": "next"}


def test_a_replica_no_node_can_hold_is_refused(aima_crds: ControlPlane, namespace: str) -> None:
    ok(call(aima_crds, "model.create", namespace, name="tiny", **LLM))
    huge = {"name": "huge", "modelRef": {"name": "tiny"}, "resources": {"gpus": 16}}

    refused = call(aima_crds, "service.create", namespace, **huge)
    assert refused["error"]["code"] == "INSUFFICIENT_RESOURCES", refused
    assert refused["error"]["message"].startswith(
        "A replica needs 16 GPUs on one node, but the largest GPU node (gpu-node-0) has 8"
    )
    details = refused["error"]["details"]
    assert (details["gpusPerReplica"], details["largestNodeCapacity"]) == (16, 8)
    assert set(details["freeByNode"]) == {"gpu-node-0", "gpu-node-1"}
    listed = kubectl_json(aima_crds, "get", "inferenceservices", "-n", namespace)["items"]
    assert listed == []

    # At rest it may exist; asked to run, it is refused and left as it was.
    ok(call(aima_crds, "service.create", namespace, **huge, replicas=0))
    scaled = call(aima_crds, "service.scale", namespace, name="huge", replicas=1)
    assert scaled["error"]["code"] == "INSUFFICIENT_RESOURCES"
    spec = kubectl_json(aima_crds, "get", "inferenceservice", "huge", "-n", namespace)["spec"]
    assert spec["replicas"] == 0

    elsewhere = call(
        aima_crds,
        "service.create",
        namespace,
        name="a100",
        modelRef={"name": "tiny"},
        resources={"gpus": 1, "gpuProduct": "NVIDIA-A100"},
    )
    assert elsewhere["error"]["code"] == "INSUFFICIENT_RESOURCES"
    assert "No node has GPU product NVIDIA-A100" in elsewhere["error"]["message"]

    # Where a cluster autoscaler adds bigger nodes on demand, the check is off: the service waits.
    autoscaled = Settings(refuse_unfittable_services=False, unit_settle_seconds=0)
    assert ok(call(aima_crds, "service.create", namespace, settings=autoscaled, **huge | {"name": "later"}))


def gpu_pod(name: str, namespace: str, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"aima.dev/inference-service": "held"}},
        "spec": {
            "containers": [
                {
                    "name": "engine",
                    "image": "example.com/engine:1",
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                }
            ],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }


def test_resource_units_count_gpus_of_nodes_and_pods(aima_crds: ControlPlane, namespace: str) -> None:
    before = ok(call(aima_crds, "resource.status"))
    assert before["total"] == 16
    assert {n["name"] for n in before["nodes"]} == {"gpu-node-0", "gpu-node-1"}
    assert all(n["product"] == "NVIDIA-H100-80GB-HBM3" for n in before["nodes"])

    aima_crds.apply([gpu_pod("holder", namespace, 3)])
    deadline = time.monotonic() + 30
    while not kubectl_json(aima_crds, "get", "pod", "holder", "-n", namespace)["spec"].get("nodeName"):
        assert time.monotonic() < deadline, "the GPU pod was not scheduled"
        time.sleep(0.2)

    after = ok(call(aima_crds, "resource.status"))
    assert after["used"] == before["used"] + 3
    assert after["free"] == before["free"] - 3
    assert f"{after['free']} of 16 GPUs free" in after["summary"]
    held = ok(call(aima_crds, "resource.allocations", namespace=namespace))["items"]
    assert [(a["pod"], a["gpus"], a["service"]) for a in held] == [("holder", 3, "held")]
    assert held[0]["node"] in {"gpu-node-0", "gpu-node-1"}

    fits = ok(call(aima_crds, "resource.can_allocate", gpus=1))
    assert fits["fits"] is True
    too_big = ok(call(aima_crds, "resource.can_allocate", gpus=9))
    assert too_big["fits"] is False
    assert "needs 9 on one node: not schedulable" in too_big["message"]
    assert ok(call(aima_crds, "resource.status", gpuProduct="NVIDIA-A100"))["total"] == 0
