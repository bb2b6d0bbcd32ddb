"""The InferenceService planner (pure): engine choice, the rendered Deployment and Service, and a
status whose conditions explain what the pods and the Model are doing."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from aima.api.common import Keys
from aima.api.engine import EngineSecurity
from aima.api.network import LabelSelector, NetworkPolicyPeer
from aima.catalog import load_catalog
from aima.domain import capacity, network_policy
from aima.domain import inference_service as planning
from aima.domain.objects import status_patch
from aima.units.resource import status_of

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ENGINES = [
    e.model_dump(mode="json", by_alias=True, exclude_none=True)
    for e in load_catalog(ROOT / "catalog").engines
]
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T0 = "2026-01-01T11:59:00Z"


def node(
    name: str, *, gpus: int = 0, arch: str = "amd64", product: str = "NVIDIA-H100-80GB-HBM3"
) -> dict[str, Any]:
    labels = {"kubernetes.io/arch": arch} | ({"nvidia.com/gpu.product": product} if gpus else {})
    allocatable = {"cpu": "96"} | ({"nvidia.com/gpu": str(gpus)} if gpus else {})
    return {"metadata": {"name": name, "labels": labels}, "status": {"allocatable": allocatable}}


GPU_NODES = [node("gpu-node-0", gpus=8), node("gpu-node-1", gpus=8), node("cpu-node-0")]
CPU_NODES = [node("cpu-node-0")]


def model(
    *,
    ready: bool = True,
    source: str = "hf://acme/tiny@main",
    type_: str = "LLM",
    fmt: str | None = "SafeTensors",
) -> dict[str, Any]:
    condition = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "Ready" if ready else "Downloading",
        "message": "Files downloaded and verified"
        if ready
        else "Downloaded 42% (0.42 of 1.00 GiB, 1/2 files)",
        "lastTransitionTime": T0,
    }
    status: dict[str, Any] = {"conditions": [condition], "phase": "Ready" if ready else "Downloading"}
    status |= {"claimName": "tiny-model", "path": ""} if ready else {}
    status |= {"weightsFile": "tiny.gguf"} if ready and fmt == "GGUF" else {}
    spec = {"source": source, "type": type_} | ({"format": fmt} if fmt else {})
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "tiny", "namespace": "team"},
        "spec": spec,
        "status": status,
    }


def service(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "chat", "namespace": "team", "uid": "u-1", "generation": 3},
        "spec": {"modelRef": {"name": "tiny"}} | spec,
    }


def observed(**overrides: Any) -> planning.Observed:
    values: dict[str, Any] = {"model": model(), "engines": ENGINES, "nodes": GPU_NODES} | overrides
    return planning.Observed(**values)


PLATFORM_PODS = LabelSelector.model_validate(
    {
        "matchLabels": {"app.kubernetes.io/instance": "aima"},
        "matchExpressions": [
            {"key": "app.kubernetes.io/component", "operator": "In", "values": ["gateway", "operator"]}
        ],
    }
)
INGRESS = network_policy.EngineIngress(platform_namespace="aima-system", platform_pods=PLATFORM_PODS)


def planned(
    body: dict[str, Any],
    *,
    observed: planning.Observed,
    ingress: network_policy.EngineIngress | None = INGRESS,
) -> planning.Plan:
    """The plan with NetworkPolicies on, as the operator plans by default."""
    return planning.plan(body, observed=observed, ingress=ingress)


def condition(status: Any, type_: str) -> Any:
    return next(c for c in status.conditions if c.type == type_)


def deployment_of(result: planning.Plan) -> dict[str, Any]:
    return next(o for o in result.objects if o["kind"] == "Deployment")


def container_of(result: planning.Plan) -> dict[str, Any]:
    container: dict[str, Any] = deployment_of(result)["spec"]["template"]["spec"]["containers"][0]
    return container


# ---- engine choice -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "the_model", "nodes", "engine", "variant", "reason"),
    [
        ({}, model(), GPU_NODES, "vllm", "cuda", "EngineChosen"),
        ({}, model(fmt="GGUF"), GPU_NODES, "llama-cpp", "cuda", "EngineChosen"),
        ({}, model(fmt="GGUF"), CPU_NODES, "llama-cpp", "cpu", "EngineChosen"),
        (
            {"resources": {"gpus": 0}},
            model(source="ollama://qwen3:0.6b", fmt="Ollama"),
            GPU_NODES,
            "ollama",
            "cpu",
            "EngineChosen",
        ),
        ({}, model(type_="ASR", fmt="CTranslate2"), GPU_NODES, "speaches", "cuda", "EngineChosen"),
        ({}, model(fmt="GGUF"), [node("arm", arch="arm64")], "llama-cpp", "cpu-arm64", "EngineChosen"),
        ({"engineRef": {"name": "sglang"}}, model(), GPU_NODES, "sglang", "cuda", "EngineNamed"),
        (
            {"engineRef": {"name": "vllm", "variant": "arm64"}},
            model(),
            GPU_NODES,
            "vllm",
            "arm64",
            "EngineNamed",
        ),
        ({"engineRef": {"name": "nope"}}, model(), GPU_NODES, None, None, "EngineNotFound"),
        ({"engineRef": {"name": "vllm", "variant": "rocm"}}, model(), GPU_NODES, None, None, "InvalidSpec"),
        ({}, model(), CPU_NODES, "vllm", "cpu", "EngineChosen"),
        ({}, model(), [node("arm", arch="arm64")], None, None, "NoMatchingEngine"),
        ({}, model(type_="Diffusion", fmt=None), GPU_NODES, None, None, "NoMatchingEngine"),
    ],
    ids=[
        "safetensors llm on gpu nodes picks vllm by priority",
        "gguf picks llama-cpp",
        "gguf on a cpu-only cluster picks the cpu variant",
        "zero gpus picks a cpu variant",
        "asr picks speaches",
        "arm64 nodes pick the arm64 image",
        "named engine",
        "named variant",
        "named engine missing",
        "named variant missing",
        "safetensors on a cpu-only cluster picks vllm's cpu build",
        "no cpu engine for safetensors on arm64",
        "no engine for the type",
    ],
)
def test_engine_choice(
    spec: dict[str, Any],
    the_model: dict[str, Any],
    nodes: list[Any],
    engine: str | None,
    variant: str | None,
    reason: str,
) -> None:
    result = planned(service(**spec), observed=observed(model=the_model, nodes=nodes))
    assert result.engine_resolved.reason == reason
    assert (result.engine.metadata.name if result.engine else None) == engine
    assert (result.variant.name if result.variant else None) == variant
    status = planning.compute_status(service(**spec), plan=result, observed=observed(), now=NOW)
    assert status.engine == engine
    assert condition(status, "EngineResolved").message  # the reason is always spelt out


def test_a_named_cpu_engine_that_asks_no_gpus_runs_on_cpus_in_a_gpu_cluster() -> None:
    """The GPU count left to the engine, an engine that asks none: its CPU variant, no GPU request."""
    cpu_only = next(e for e in ENGINES if e["metadata"]["name"] == "llama-cpp")
    cpu_only = cpu_only | {"metadata": {"name": "cpu-only"}}
    cpu_only["spec"] = cpu_only["spec"] | {
        "variants": [v for v in cpu_only["spec"]["variants"] if v["accelerator"] == "CPU"],
        "resources": {"gpus": 0},
    }
    spec = service(engineRef={"name": "cpu-only"})
    result = planned(spec, observed=observed(model=model(fmt="GGUF"), engines=[*ENGINES, cpu_only]))
    assert result.engine_resolved.reason == "EngineNamed"
    assert result.variant is not None and result.variant.name == "cpu"
    assert "nvidia.com/gpu" not in str(container_of(result).get("resources"))


def test_automatic_choice_names_the_other_candidates() -> None:
    result = planned(service(), observed=observed())
    assert "vllm" in result.engine_resolved.message
    assert "other candidates: sglang (priority 5)" in result.engine_resolved.message


# ---- the rendered children ------------------------------------------------------------------------


def test_gpu_deployment_is_complete() -> None:
    spec = {
        "resources": {"gpus": 4, "gpuProduct": "NVIDIA-H100-80GB-HBM3", "requests": {"cpu": 8}},
        "engineArgs": {"max-model-len": 8192},
        "env": {"EXTRA": "1"},
        "scheduling": {"runtimeClassName": "nvidia", "priorityClassName": "high"},
        "replicas": 2,
    }
    result = planned(service(**spec), observed=observed())
    deployment = deployment_of(result)
    pod = deployment["spec"]["template"]["spec"]
    container = container_of(result)
    assert pod["automountServiceAccountToken"] is False  # an engine never calls the API server
    assert deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert container["resources"]["requests"] == {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "4"}
    assert container["resources"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": "4"}
    assert pod["nodeSelector"] == {
        "kubernetes.io/arch": "amd64",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    }
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["priorityClassName"] == "high"
    assert "--tensor-parallel-size=4" in container["args"]
    assert container["args"][-1] == "--max-model-len=8192"
    assert container["command"] == ["vllm", "serve"]
    assert {"name": "EXTRA", "value": "1"} in container["env"]
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "tiny-model", "readOnly": True}} in pod[
        "volumes"
    ]
    assert {"name": "model", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]
    assert container["startupProbe"]["failureThreshold"] == 360  # 3600 s budget / 10 s period
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["enableServiceLinks"] is False


@pytest.mark.parametrize(
    ("spec", "the_model", "check"),
    [
        ({"resources": {"gpus": 0}}, model(fmt="GGUF"), lambda pod: "tolerations" not in pod),
        (
            {"resources": {"gpus": 0}},
            model(fmt="GGUF"),
            lambda pod: "nvidia.com/gpu" not in str(pod["containers"][0]),
        ),
        (
            {"resources": {"gpus": 2}},
            model(fmt="GGUF"),
            lambda pod: {"name": "shm", "emptyDir": {"medium": "Memory"}} in pod["volumes"],
        ),
        (
            {"resources": {"gpus": 1}},
            model(fmt="GGUF"),
            lambda pod: [v["name"] for v in pod["volumes"]] == ["model", "writable-0"],
        ),
        (
            {"resources": {"requests": {"memory": "100Gi"}}},
            model(),
            lambda pod: "memory" not in pod["containers"][0]["resources"]["limits"],
        ),
        ({}, model(), lambda pod: pod["securityContext"]["runAsNonRoot"] is True),
        (
            {"scheduling": {"tolerations": [{"key": "team", "value": "a"}]}},
            model(),
            lambda pod: pod["tolerations"][1] == {"key": "team", "operator": "Equal", "value": "a"},
        ),
    ],
    ids=[
        "cpu replicas do not tolerate the gpu taint",
        "cpu replicas request no gpu",
        "multi-gpu gets an unsized memory shm",
        "single gpu without a declared size gets no shm",
        "a larger memory request drops the engine's smaller limit",
        "non-root unless the engine says otherwise",
        "spec tolerations follow the gpu one",
    ],
)
def test_pod_template(spec: dict[str, Any], the_model: dict[str, Any], check: Any) -> None:
    result = planned(service(**spec), observed=observed(model=the_model))
    assert check(deployment_of(result)["spec"]["template"]["spec"])


def _pod_with_security(security: dict[str, Any]) -> dict[str, Any]:
    engines = [e | {"spec": e["spec"] | {"security": security}} for e in ENGINES]
    result = planned(service(), observed=observed(engines=engines))
    pod: dict[str, Any] = deployment_of(result)["spec"]["template"]["spec"]
    return pod


def test_engine_pods_run_non_root_with_a_read_only_root_and_a_writable_home_by_default() -> None:
    pod = _pod_with_security({})
    (container,) = pod["containers"]
    assert pod["securityContext"] | {"seccompProfile": None} == {
        "seccompProfile": None,
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "fsGroupChangePolicy": "OnRootMismatch",
    }
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "writable-0", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "writable-0", "emptyDir": {}} in pod["volumes"]
    assert {"name": "HOME", "value": "/tmp"} in container["env"]


def test_an_engine_names_its_user_and_where_it_writes() -> None:
    pod = _pod_with_security({"runAsUser": 1000, "writablePaths": ["/cache", "/tmp"]})
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == 1000
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert mounts[-2:] == ["/cache", "/tmp"]
    assert {"name": "HOME", "value": "/cache"} in container["env"]


def test_an_engine_that_cannot_run_otherwise_runs_as_root_with_a_writable_root() -> None:
    pod = _pod_with_security({"runAsUser": 0, "readOnlyRootFilesystem": False, "writablePaths": []})
    (container,) = pod["containers"]
    assert "runAsNonRoot" not in pod["securityContext"]
    assert pod["securityContext"]["runAsUser"] == 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    assert not any(e["name"] == "HOME" for e in container.get("env", []))


@pytest.mark.parametrize("path", ["tmp", "/tmp/../etc", "/./x", "/a//b", "/"])
def test_a_writable_path_that_could_climb_out_is_refused(path: str) -> None:
    with pytest.raises(ValidationError, match=r"writablePaths|writable_paths"):
        EngineSecurity.model_validate({"writablePaths": [path]})


def test_engine_pods_say_where_their_metrics_are_only_when_the_engine_serves_them() -> None:
    with_metrics = deployment_of(planned(service(), observed=observed()))["spec"]["template"]
    assert with_metrics["metadata"]["annotations"] == {Keys.METRICS_PATH: "/metrics"}
    engines = [e | {"spec": {k: v for k, v in e["spec"].items() if k != "metricsPath"}} for e in ENGINES]
    without = deployment_of(planned(service(), observed=observed(engines=engines)))["spec"]["template"]
    assert "annotations" not in without["metadata"]


def test_service_and_endpoint() -> None:
    result = planned(service(), observed=observed())
    svc = next(o for o in result.objects if o["kind"] == "Service")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == {Keys.MANAGED_BY: "aima", Keys.INFERENCE_SERVICE: "chat"}
    status = planning.compute_status(service(), plan=result, observed=observed(), now=NOW)
    assert status.endpoint == "http://chat.team.svc:8000"
    assert status.selector == "aima.dev/inference-service=chat,app.kubernetes.io/managed-by=aima"
    assert status.observed_generation == 3


def test_the_network_policy_guards_exactly_the_deployments_pods_and_comes_first() -> None:
    result = planned(service(), observed=observed())
    policy, deployment = result.objects[0], deployment_of(result)
    assert [o["kind"] for o in result.objects] == ["NetworkPolicy", "Deployment", "Service"]
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["metadata"]["name"] == "chat"
    assert policy["metadata"]["namespace"] == "team"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert policy["metadata"]["ownerReferences"][0]["controller"] is True
    # The operator's cache of children selects by this label: a policy without it is never restored.
    assert policy["metadata"]["labels"][Keys.COMPONENT] == planning.COMPONENT
    selected = policy["spec"]["podSelector"]
    assert selected == deployment["spec"]["selector"]
    assert selected["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress stays open, for hubs and stores
    assert "egress" not in policy["spec"]


def test_only_the_platforms_pods_and_the_extra_peers_may_connect() -> None:
    extras = (
        NetworkPolicyPeer.model_validate(
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ),
        NetworkPolicyPeer.model_validate({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}),
    )
    ingress = network_policy.EngineIngress(
        platform_namespace="platform", platform_pods=PLATFORM_PODS, extra_peers=extras
    )
    policy = planned(service(), observed=observed(), ingress=ingress).objects[0]
    assert policy["spec"]["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "platform"}},
                    "podSelector": {
                        "matchLabels": {"app.kubernetes.io/instance": "aima"},
                        "matchExpressions": [
                            {
                                "key": "app.kubernetes.io/component",
                                "operator": "In",
                                "values": ["gateway", "operator"],
                            }
                        ],
                    },
                },
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
                {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
            ]
        }
    ]


def test_with_policies_off_none_is_planned() -> None:
    result = planned(service(), observed=observed(), ingress=None)
    assert [o["kind"] for o in result.objects] == ["Deployment", "Service"]


def test_a_waiting_service_gets_no_policy_either() -> None:
    result = planned(service(), observed=observed(model=model(ready=False)))
    assert result.objects == []


def network_policy_of(owner_uid: str) -> dict[str, Any]:
    owner = {"apiVersion": "aima.dev/v1alpha1", "kind": "InferenceService", "name": "chat", "uid": owner_uid}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "chat",
            "namespace": "team",
            "uid": "p-1",
            "ownerReferences": [owner | {"controller": True}],
        },
    }


@pytest.mark.parametrize(
    ("ingress", "observed_policy", "removed"),
    [
        (None, network_policy_of("u-1"), True),
        (INGRESS, network_policy_of("u-1"), False),
        (None, network_policy_of("someone-else"), False),
        (None, network_policy_of("u-1") | {"metadata": {"name": "chat", "namespace": "team"}}, False),
        (None, None, False),
    ],
    ids=[
        "policies off: ours is removed",
        "policies on: ours stays",
        "policies off: one another owner controls stays",
        "policies off: one without an owner stays",
        "policies off: none to remove",
    ],
)
def test_turning_policies_off_removes_only_the_services_own(
    ingress: network_policy.EngineIngress | None, observed_policy: dict[str, Any] | None, removed: bool
) -> None:
    stale = network_policy.obsolete(service(), ingress=ingress, observed=observed_policy)
    assert stale == (observed_policy if removed else None)


@pytest.mark.parametrize(
    ("spec", "replicas"),
    [({"replicas": 3}, 3), ({"replicas": 3, "suspend": True}, 0), ({"replicas": 0}, 0)],
    ids=["replicas from spec", "suspend runs none", "scaled to zero"],
)
def test_replicas(spec: dict[str, Any], replicas: int) -> None:
    assert deployment_of(planned(service(**spec), observed=observed()))["spec"]["replicas"] == replicas


def test_engine_args_on_an_engine_without_flags_is_invalid() -> None:
    the_model = model(source="ollama://qwen3:0.6b", fmt="Ollama")
    result = planned(service(engineArgs={"x": 1}), observed=observed(model=the_model))
    assert result.objects == []
    assert result.engine_resolved.reason == "InvalidSpec"


# ---- status ---------------------------------------------------------------------------------------


def pod(
    name: str = "chat-abc-1", *, node: str | None = "gpu-node-0", gpus: int = 1, **status: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "engine", "resources": {"requests": {"nvidia.com/gpu": str(gpus)}}}]
    }
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name}, "spec": spec, "status": {"phase": "Running"} | status}


def container(**fields: Any) -> dict[str, Any]:
    return {"name": "engine", "image": "vllm/vllm-openai:v0.11.0", "ready": False, "restartCount": 0} | fields


UNSCHEDULABLE = {
    "phase": "Pending",
    "conditions": [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 1 node(s) had untolerated taint, "
            "2 Insufficient nvidia.com/gpu.",
        }
    ],
}


@pytest.mark.parametrize(
    ("spec", "seen", "ready", "reason", "phase", "words"),
    [
        (
            {},
            {"model": model(ready=False)},
            "False",
            "ModelNotReady",
            "Pending",
            ["Waiting for Model tiny (Downloading)", "42%"],
        ),
        ({}, {"model": None}, "False", "ModelNotFound", "Failed", ["Model tiny does not exist"]),
        (
            {},
            {"deployment": {"status": {"replicas": 1, "readyReplicas": 1}}},
            "True",
            "Ready",
            "Running",
            ["1 of 1 replicas ready at http://chat.team.svc:8000"],
        ),
        ({"suspend": True}, {}, "False", "Suspended", "Suspended", ["spec.suspend is true"]),
        ({"replicas": 0}, {}, "False", "ScaledToZero", "Suspended", ["spec.replicas is 0"]),
        (
            {},
            {
                "pods": [
                    pod(
                        containerStatuses=[
                            container(
                                state={"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}
                            )
                        ]
                    )
                ]
            },
            "False",
            "ImagePullBackOff",
            "Failed",
            ["cannot pull image vllm/vllm-openai:v0.11.0", "not found"],
        ),
        (
            {},
            {
                "pods": [
                    pod(
                        containerStatuses=[
                            container(
                                restartCount=5,
                                state={"waiting": {"reason": "CrashLoopBackOff"}},
                                lastState={
                                    "terminated": {
                                        "exitCode": 1,
                                        "reason": "Error",
                                        "message": "ValueError: bad config\n",
                                    }
                                },
                            )
                        ]
                    )
                ]
            },
            "False",
            "CrashLoopBackOff",
            "Failed",
            ["keeps crashing (5 restarts)", "exit code 1 (Error)", "ValueError: bad config"],
        ),
        (
            {},
            {
                "pods": [
                    pod(
                        containerStatuses=[
                            container(
                                restartCount=1,
                                state={"running": {"startedAt": T0}},
                                lastState={"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                            )
                        ]
                    )
                ]
            },
            "False",
            "OOMKilled",
            "Failed",
            ["ran out of memory", "limits.memory"],
        ),
        (
            {},
            {
                "pods": [
                    pod(containerStatuses=[container(started=True, state={"running": {"startedAt": T0}})])
                ]
            },
            "False",
            "HealthCheckFailing",
            "Failed",
            ["health check GET /health on port 8000 does not pass"],
        ),
        (
            {},
            {
                "pods": [
                    pod(
                        containerStatuses=[
                            container(started=False, state={"running": {"startedAt": "2025-12-31T00:00:00Z"}})
                        ]
                    )
                ]
            },
            "False",
            "HealthCheckFailing",
            "Failed",
            ["does not pass"],
        ),
        (
            {},
            {
                "pods": [
                    pod(containerStatuses=[container(started=False, state={"running": {"startedAt": T0}})])
                ]
            },
            "False",
            "Starting",
            "Starting",
            ["loading the model", "startup budget 3600s"],
        ),
        (
            {},
            {
                "pods": [
                    pod(
                        containerStatuses=[
                            container(
                                started=False,
                                restartCount=3,
                                state={"running": {"startedAt": T0}},
                                lastState={
                                    "terminated": {
                                        "exitCode": 1,
                                        "reason": "Error",
                                        "message": "RuntimeError: Engine core initialization failed\n",
                                    }
                                },
                            )
                        ]
                    )
                ]
            },
            "False",
            "Starting",
            "Starting",
            ["loading the model", "exited 3 times already", "exit code 1", "Engine core initialization"],
        ),
        ({}, {}, "False", "Starting", "Starting", ["Waiting for pods"]),
    ],
    ids=[
        "model downloading",
        "model missing",
        "ready",
        "suspended",
        "scaled to zero",
        "image pull back-off",
        "crash loop with the last log lines",
        "oom killed",
        "readiness never passes",
        "startup budget exhausted",
        "still loading",
        "loading again after crashes says so, with the last log lines",
        "no pods yet",
    ],
)
def test_ready_explains(
    spec: dict[str, Any], seen: dict[str, Any], ready: str, reason: str, phase: str, words: list[str]
) -> None:
    body = service(**spec)
    seen_now = observed(**seen)
    status = planning.compute_status(body, plan=planned(body, observed=seen_now), observed=seen_now, now=NOW)
    found = condition(status, "Ready")
    assert (found.status, found.reason, status.phase) == (ready, reason, phase)
    for word in words:
        assert word in found.message


def test_insufficient_gpu_says_how_many_are_free_where() -> None:
    body = service(resources={"gpus": 6})
    busy = [pod("busy-0", node="gpu-node-0", gpus=4), pod("busy-1", node="gpu-node-1", gpus=3)]
    seen = observed(
        pods=[pod(node=None, gpus=6, **UNSCHEDULABLE)],
        all_pods=[*busy, pod(node=None, gpus=6, **UNSCHEDULABLE)],
    )
    status = planning.compute_status(body, plan=planned(body, observed=seen), observed=seen, now=NOW)
    for type_ in ("Scheduled", "Ready"):
        found = condition(status, type_)
        assert (found.status, found.reason) == ("False", "InsufficientGPU")
        assert "needs 6 nvidia.com/gpu on one node" in found.message
        assert "free now: gpu-node-0 4, gpu-node-1 5" in found.message
        assert "lower spec.resources.gpus or free GPUs" in found.message
        assert "2 Insufficient nvidia.com/gpu" in found.message
    assert status.phase == "Pending"


def test_more_gpus_than_any_node_has_can_never_fit_and_is_not_told_to_free_gpus() -> None:
    body = service(resources={"gpus": 9})
    seen = observed(
        pods=[pod(node=None, gpus=9, **UNSCHEDULABLE)], all_pods=[pod(node=None, gpus=9, **UNSCHEDULABLE)]
    )
    status = planning.compute_status(body, plan=planned(body, observed=seen), observed=seen, now=NOW)
    for type_ in ("Scheduled", "Ready"):
        found = condition(status, type_)
        assert (found.status, found.reason) == ("False", "NoNodeLargeEnough")
        assert found.message.startswith(
            "Pod chat-abc-1 needs 9 nvidia.com/gpu on one node, but the largest node has 8 "
            "(gpu-node-0 8, gpu-node-1 8): it can never be scheduled, and freeing GPUs does not help; "
            "lower spec.resources.gpus to 8 or fewer, or add a node with 9 GPUs."
        )
        assert "free now" not in found.message
    assert status.phase == "Pending"
    assert condition(status, "Stalled").reason == "NoNodeLargeEnough"


def test_a_gpu_init_container_counts_the_same_in_the_explanation_and_in_resource_status() -> None:
    # The scheduler reserves the larger of the app containers' sum and the largest init container.
    warming = pod("warm-0", node="gpu-node-0", gpus=1)
    warming["spec"]["initContainers"] = [{"name": "warmup", "resources": {"limits": {"nvidia.com/gpu": "4"}}}]
    waiting = pod(node=None, gpus=6, **UNSCHEDULABLE)
    body = service(resources={"gpus": 6})
    seen = observed(pods=[waiting], all_pods=[warming, waiting])
    status = planning.compute_status(body, plan=planned(body, observed=seen), observed=seen, now=NOW)
    found = condition(status, "Scheduled")
    assert found.reason == "InsufficientGPU"
    assert "free now: gpu-node-0 4, gpu-node-1 8" in found.message
    counted = status_of(GPU_NODES, [warming, waiting])
    assert {n.name: n.free for n in counted.nodes} == {"gpu-node-0": 4, "gpu-node-1": 8}


def test_only_nodes_of_the_asked_gpu_product_can_be_large_enough() -> None:
    nodes = [node("h100-0", gpus=8), node("a100-0", gpus=4, product="NVIDIA-A100-SXM4-80GB")]
    body = service(resources={"gpus": 6, "gpuProduct": "NVIDIA-A100-SXM4-80GB"})
    waiting = pod(node=None, gpus=6, **UNSCHEDULABLE)
    seen = observed(nodes=nodes, pods=[waiting], all_pods=[waiting])
    status = planning.compute_status(body, plan=planned(body, observed=seen), observed=seen, now=NOW)
    found = condition(status, "Scheduled")
    assert found.reason == "NoNodeLargeEnough"
    assert "the largest node has 4 (a100-0 4)" in found.message


QUOTA_REFUSED = {
    "type": "ReplicaFailure",
    "status": "True",
    "reason": "FailedCreate",
    "message": 'pods "chat-6d4f9c-x7k2p" is forbidden: exceeded quota: gpu-quota, requested: '
    "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=0, limited: requests.nvidia.com/gpu=0",
}
DEADLINE_EXCEEDED = {
    "type": "Progressing",
    "status": "False",
    "reason": "ProgressDeadlineExceeded",
    "message": 'ReplicaSet "chat-6d4f9c" has timed out progressing.',
}


def with_conditions(*found: dict[str, Any], ready: int = 0, generation: int = 1) -> dict[str, Any]:
    """The service's Deployment as the Deployment controller left it, seen at ``generation``."""
    return {
        "metadata": {"name": "chat", "generation": 1},
        "spec": {"progressDeadlineSeconds": 4200},
        "status": {"observedGeneration": generation, "readyReplicas": ready, "conditions": list(found)},
    }


def test_a_pod_the_quota_refuses_is_explained_from_the_deployment() -> None:
    body = service()
    seen = observed(deployment=with_conditions(QUOTA_REFUSED))
    status = planning.compute_status(body, plan=planned(body, observed=seen), observed=seen, now=NOW)
    for type_ in ("Scheduled", "Ready"):
        found = condition(status, type_)
        assert (found.status, found.reason) == ("False", "FailedCreate")
        assert found.message.startswith(
            "Pods cannot be created: exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=1"
        )
        assert "raise the namespace's ResourceQuota" in found.message
    assert status.phase == "Pending"
    assert condition(status, "Stalled").reason == "FailedCreate"


def test_replicas_the_quota_refuses_beside_ready_ones_leave_the_service_ready() -> None:
    body = service(replicas=3)
    seen = observed(deployment=with_conditions(QUOTA_REFUSED, ready=1), pods=[pod()])
    status = planning.compute_status(body, plan=planned(body, observed=seen), observed=seen, now=NOW)
    assert condition(status, "Ready").status == "True"
    assert condition(status, "Scheduled").reason == "FailedCreate"


def test_replicas_serve_on_while_the_model_they_change_to_downloads() -> None:
    body = service()
    seen = observed(model=model(ready=False), deployment=with_conditions(ready=2))
    plan = planned(body, observed=seen)
    assert plan.objects == []  # the Deployment stays as it is: nothing rolls before the files are there
    status = planning.compute_status(body, plan=plan, observed=seen, now=NOW)
    ready = condition(status, "Ready")
    assert (ready.status, status.phase) == ("True", "Running")
    assert ready.message.startswith("2 replicas serve as before until Model tiny is ready: ")
    assert condition(status, "ModelReady").status == "False"


def test_a_change_rolls_new_replicas_in_before_old_ones_drain_out() -> None:
    deployment = deployment_of(planned(service(), observed=observed()))
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
    }
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 30}}}


def test_an_engine_that_drains_itself_gets_no_pre_stop_sleep() -> None:
    engines = [e if e["metadata"]["name"] != "vllm" else with_drain(e, 0) for e in ENGINES]
    deployment = deployment_of(
        planned(service(engineRef={"name": "vllm"}), observed=observed(engines=engines))
    )
    pod = deployment["spec"]["template"]["spec"]
    assert "lifecycle" not in pod["containers"][0] and pod["terminationGracePeriodSeconds"] == 30


def with_drain(engine: dict[str, Any], seconds: int) -> dict[str, Any]:
    spec = engine["spec"] | {"health": engine["spec"].get("health", {}) | {"drainSeconds": seconds}}
    return engine | {"spec": spec}


def test_a_rollout_past_its_deadline_is_explained() -> None:
    body = service()
    seen = observed(deployment=with_conditions(DEADLINE_EXCEEDED))
    status = planning.compute_status(body, plan=planned(body, observed=seen), observed=seen, now=NOW)
    found = condition(status, "Ready")
    assert (found.status, found.reason, status.phase) == ("False", "ProgressDeadlineExceeded", "Failed")
    assert found.message == (
        "Deployment chat made no progress within 4200s (ProgressDeadlineExceeded): "
        'ReplicaSet "chat-6d4f9c" has timed out progressing.'
    )
    assert condition(status, "Stalled").reason == "ProgressDeadlineExceeded"


def test_a_pod_problem_explains_more_than_the_deadline() -> None:
    crashing = pod(
        containerStatuses=[container(restartCount=5, state={"waiting": {"reason": "CrashLoopBackOff"}})]
    )
    body = service()
    seen = observed(deployment=with_conditions(DEADLINE_EXCEEDED), pods=[crashing])
    status = planning.compute_status(body, plan=planned(body, observed=seen), observed=seen, now=NOW)
    assert condition(status, "Ready").reason == "CrashLoopBackOff"


def test_conditions_about_an_older_deployment_spec_are_not_shown() -> None:
    body = service()
    stale = with_conditions(QUOTA_REFUSED, DEADLINE_EXCEEDED, generation=0)
    seen = observed(deployment=stale)
    status = planning.compute_status(body, plan=planned(body, observed=seen), observed=seen, now=NOW)
    assert (condition(status, "Scheduled").reason, condition(status, "Ready").reason) == (
        "Pending",
        "Starting",
    )


def test_free_gpus_ignore_finished_pods() -> None:
    done = pod("done", gpus=8) | {"status": {"phase": "Succeeded"}}
    nodes = capacity.node_gpus(GPU_NODES, [done, pod("a", gpus=2)])
    assert capacity.free_by_node(nodes) == {"gpu-node-0": 6, "gpu-node-1": 8}


def test_recomputing_an_unchanged_state_changes_nothing() -> None:
    body = service()
    seen = observed(deployment={"status": {"replicas": 1, "readyReplicas": 1}})
    first = planning.compute_status(body, plan=planned(body, observed=seen), observed=seen, now=NOW)
    body["status"] = first.model_dump(mode="json", by_alias=True, exclude_none=True)
    later = datetime(2026, 1, 2, tzinfo=UTC)
    again = planning.compute_status(body, plan=planned(body, observed=seen), observed=seen, now=later)
    assert status_patch(again, observed=body["status"]) is None


def test_a_status_patch_clears_fields_that_went_away() -> None:
    body = service(engineRef={"name": "gone"})
    seen = observed()
    status = planning.compute_status(body, plan=planned(body, observed=seen), observed=seen, now=NOW)
    patch = status_patch(status, observed={"endpoint": "http://old", "engine": "vllm"})
    assert patch is not None
    assert patch["endpoint"] is None
    assert patch["engine"] is None


# ---- GitOps: Reconciling and Stalled (kstatus) -----------------------------------------------------


def rolled_out(body: dict[str, Any], seen: planning.Observed, **status: Any) -> dict[str, Any]:
    """The Deployment the plan renders, as the API server holds it after the Deployment controller
    acted on it: every replica updated and available unless ``status`` says otherwise."""
    deployment = deployment_of(planned(body, observed=seen))
    replicas = deployment["spec"]["replicas"]
    full = {"replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas}
    full |= {"availableReplicas": replicas, "observedGeneration": 1}
    return deployment | {"metadata": deployment["metadata"] | {"generation": 1}, "status": full | status}


def stalled_model() -> dict[str, Any]:
    failed = model(ready=False)
    failed["status"]["conditions"].append(
        {
            "type": "Stalled",
            "status": "True",
            "reason": "DownloadFailed",
            "message": "Loader Job tiny-load-1 failed: HTTP 404",
            "lastTransitionTime": T0,
        }
    )
    return failed


CRASHING = [
    pod(
        containerStatuses=[
            container(restartCount=5, state={"waiting": {"reason": "CrashLoopBackOff"}}, lastState={})
        ]
    )
]


@pytest.mark.parametrize(
    ("spec", "seen", "deployment", "kstatus", "reason", "words"),
    [
        ({}, {}, {}, None, None, None),
        ({"replicas": 0}, {}, {"replicas": 0}, None, None, None),
        ({"suspend": True}, {}, {"replicas": 0}, None, None, None),
        (
            {"replicas": 3},
            {},
            {"updatedReplicas": 1},
            "Reconciling",
            "Reconciling",
            "1 of 3 replicas updated",
        ),
        ({}, {}, {"replicas": 2}, "Reconciling", "Reconciling", "1 old replica(s) still terminating"),
        ({"replicas": 0}, {}, {"replicas": 1}, "Reconciling", "Reconciling", "1 replica(s) left"),
        ({}, {}, {"observedGeneration": 0}, "Reconciling", "Reconciling", "to take the new spec"),
        ({}, {}, None, "Reconciling", "Starting", "Waiting for pods"),
        ({}, {"model": model(ready=False)}, None, "Reconciling", "ModelNotReady", "Downloading"),
        ({}, {"model": None}, None, "Reconciling", "ModelNotFound", "does not exist"),
        ({}, {"model": stalled_model()}, None, "Stalled", "DownloadFailed", "HTTP 404"),
        ({"engineRef": {"name": "nope"}}, {}, None, "Stalled", "EngineNotFound", "nope"),
        ({}, {"pods": CRASHING}, {"readyReplicas": 0}, "Stalled", "CrashLoopBackOff", "keeps crashing"),
        (
            {"resources": {"gpus": 9}},
            {"pods": [pod(node=None, gpus=9, **UNSCHEDULABLE)]},
            {"readyReplicas": 0},
            "Stalled",
            "NoNodeLargeEnough",
            "can never be scheduled",
        ),
    ],
    ids=[
        "ready and rolled out",
        "scaled to zero",
        "suspended",
        "scaling up",
        "old replica terminating",
        "scaling down to zero",
        "deployment controller behind",
        "deployment not applied yet",
        "model downloading",
        "model missing: gitops may apply it next",
        "model stalled",
        "engine missing",
        "crash loop",
        "not enough gpus",
    ],
)
def test_reconciling_and_stalled_tell_gitops_tools_where_the_service_stands(
    spec: dict[str, Any],
    seen: dict[str, Any],
    deployment: dict[str, Any] | None,
    kstatus: str | None,
    reason: str | None,
    words: str | None,
) -> None:
    body = service(**spec)
    seen_now = observed(**seen)
    if deployment is not None:
        seen_now = observed(**seen, deployment=rolled_out(body, seen_now, **deployment))
    status = planning.compute_status(body, plan=planned(body, observed=seen_now), observed=seen_now, now=NOW)
    found = [c for c in status.conditions if c.type in ("Reconciling", "Stalled")]
    assert [c.type for c in found] == ([kstatus] if kstatus else [])
    for condition_ in found:
        assert (condition_.status, condition_.reason, condition_.observed_generation) == ("True", reason, 3)
        assert words is not None and words in condition_.message
    assert status.observed_generation == 3


def test_a_stalled_service_that_recovers_drops_the_condition() -> None:
    body = service()
    crashing = observed(pods=CRASHING)
    first = planning.compute_status(body, plan=planned(body, observed=crashing), observed=crashing, now=NOW)
    assert any(c.type == "Stalled" for c in first.conditions)
    body["status"] = first.model_dump(mode="json", by_alias=True, exclude_none=True)
    healthy = observed(deployment=rolled_out(body, observed()))
    later = planning.compute_status(body, plan=planned(body, observed=healthy), observed=healthy, now=NOW)
    assert [c.type for c in later.conditions] == ["ModelReady", "EngineResolved", "Scheduled", "Ready"]
    patch = status_patch(later, observed=body["status"])
    assert patch is not None
    assert [c["type"] for c in patch["conditions"]] == ["ModelReady", "EngineResolved", "Scheduled", "Ready"]


def test_the_engine_model_is_the_engines_fixed_name_else_the_served_name() -> None:
    """fastkokoro answers only to "kokoro": status says so, for the gateway to rename requests."""
    tts = observed(model=model(type_="TTS", fmt="ONNX"))
    body = service(servedName="voice", engineRef={"name": "fastkokoro"})
    status = planning.compute_status(body, plan=planned(body, observed=tts), observed=tts, now=NOW)
    assert (status.engine, status.served_name, status.engine_model) == ("fastkokoro", "voice", "kokoro")
    llm = observed()
    body = service(servedName="qwen")
    status = planning.compute_status(body, plan=planned(body, observed=llm), observed=llm, now=NOW)
    assert (status.served_name, status.engine_model) == ("qwen", "qwen")


# ---- speaches: the model laid out where it looks -----------------------------------------------------

# Stands in for speaches' server (`uvicorn --factory speaches.main:create_app`): it makes speaches'
# own lookups with huggingface_hub, the cache scan with the model card's library and task, and the
# offline snapshot it loads from, and prints what it found.
_SPEACHES_STAND_IN = """#!{python}
import json, pathlib, sys
import huggingface_hub
found = []
for repo in huggingface_hub.scan_cache_dir().repos:
    (revision,) = repo.revisions
    readme = next(f.file_path for f in revision.files if f.file_name == "README.md")
    card = huggingface_hub.ModelCard.load(readme, repo_type="model").data
    path = huggingface_hub.snapshot_download(repo.repo_id, local_files_only=True)
    found.append({{"id": repo.repo_id, "library": card.library_name, "task": card.pipeline_tag,
                   "files": sorted(p.name for p in pathlib.Path(path).iterdir())}})
print(json.dumps({{"argv": sys.argv[1:], "found": found}}))
"""


def run_speaches_command(tmp_path: Path, *, readme: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Plan an ASR service (the catalog's speaches Engine), run its container's command with the
    stand-in server, on weights in a folder in place of the model volume; the container and what
    the stand-in found."""
    result = planned(service(), observed=observed(model=model(type_="ASR", fmt="CTranslate2")))
    assert result.engine is not None and result.engine.metadata.name == "speaches"
    container = container_of(result)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.bin").write_bytes(b"ct2")
    (weights / "config.json").write_text("{}")
    if readme is not None:
        (weights / "README.md").write_text(readme)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uvicorn").write_text(_SPEACHES_STAND_IN.format(python=sys.executable))
    (bin_dir / "uvicorn").chmod(0o755)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    # The volume and /tmp of the pod, as folders here.
    env |= {"AIMA_MODEL_PATH": str(weights), "HF_HUB_CACHE": str(tmp_path / "tmp" / "hub")}
    ran = subprocess.run(
        container["command"],
        env=env | {"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return container, json.loads(ran.stdout)


def test_speaches_finds_the_downloaded_model_under_the_id_the_gateway_sends(tmp_path: Path) -> None:
    container, seen = run_speaches_command(tmp_path, readme=None)
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    # What the pod gets: the model volume's path, and a cache under the writable /tmp.
    assert env["AIMA_MODEL_PATH"] in mounts and env["HF_HUB_CACHE"].startswith("/tmp/")
    assert "/tmp" in mounts and "WHISPER__MODEL" not in env  # speaches 0.8 ignores that one
    assert seen["argv"] == ["--factory", "speaches.main:create_app"]
    (found,) = seen["found"]
    engine = next(e for e in ENGINES if e["metadata"]["name"] == "speaches")
    assert found["id"] == engine["spec"]["modelName"] == "aima/model"
    assert (found["library"], found["task"]) == ("ctranslate2", "automatic-speech-recognition")
    assert found["files"] == ["README.md", "config.json", "model.bin"]


def test_speaches_keeps_the_models_own_card(tmp_path: Path) -> None:
    card = "---\nlibrary_name: ctranslate2\npipeline_tag: automatic-speech-recognition\nlanguage: [fr]\n---\n"
    _, seen = run_speaches_command(tmp_path, readme=card)
    assert (
        tmp_path / "tmp" / "hub" / "models--aima--model" / "snapshots" / "main" / "README.md"
    ).resolve() == (tmp_path / "weights" / "README.md")
    assert seen["found"][0]["library"] == "ctranslate2"
