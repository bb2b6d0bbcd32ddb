"""InferenceServices on the local control plane with kwok GPU nodes: from apply to Ready on a GPU
node, failures explained in the status, scale, update, delete, and a restarted operator that
writes nothing when nothing changed."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

from aima.settings import Settings
from aima_testenv import ControlPlane
from aima_testenv.operator import OperatorThread
from declared import get, make_model
from reads import writes_since
from waiting import eventually

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def engines(aima_crds: ControlPlane, operator: OperatorThread) -> ControlPlane:
    """The control plane with the operator running; it installed the catalog's Engines at start."""
    return aima_crds


class Reconciled(logging.Handler):
    """Which objects the operator's reconcilers finished a pass over (their debug records), while
    in a `with` block."""

    _PASS = re.compile(r"Reconciled (\w+) ([^/]*)/(\S+)")

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.keys: set[tuple[str, str, str]] = set()
        self._logger = logging.getLogger("aima.controllers")

    def emit(self, record: logging.LogRecord) -> None:
        if found := self._PASS.fullmatch(record.getMessage()):
            self.keys.add((found[1], found[2], found[3]))

    def count(self, kind: str, namespace: str) -> int:
        return sum(1 for k, ns, _ in set(self.keys) if (k, ns) == (kind, namespace))

    def __enter__(self) -> Reconciled:
        self._level = self._logger.level
        self._logger.setLevel(logging.DEBUG)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


def service_body(namespace: str, *, name: str = "chat", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"modelRef": {"name": "tiny"}} | spec,
    }


def make_service(plane: ControlPlane, namespace: str, **spec: Any) -> None:
    plane.apply([service_body(namespace, **spec)])


def condition(body: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    found = (body or {}).get("status", {}).get("conditions", [])
    return next((c for c in found if c["type"] == type_), {})


def progress_conditions(body: dict[str, Any] | None) -> dict[str, str]:
    """Reconciling and Stalled, as kstatus reads them: type -> reason of those that are True."""
    found = (body or {}).get("status", {}).get("conditions", [])
    return {
        c["type"]: c["reason"]
        for c in found
        if c["type"] in ("Reconciling", "Stalled") and c["status"] == "True"
    }


def ready_with(
    plane: ControlPlane, namespace: str, reason: str, *, name: str = "chat", timeout: float = 60
) -> dict[str, Any]:
    last: list[dict[str, Any]] = [{}]

    def check() -> dict[str, Any] | None:
        body = get(plane, "isvc", name, namespace)
        last[0] = condition(body, "Ready")
        return body if last[0].get("reason") == reason else None

    try:
        body: dict[str, Any] = eventually(check, timeout=timeout, what=f"Ready reason {reason}")
    except pytest.fail.Exception:
        pods_now = plane.kubectl("get", "pods,deploy", "-n", namespace, "-o", "wide", check=False).stdout
        pytest.fail(f"Ready reason never became {reason}; last Ready condition: {last[0]}\n{pods_now}")
    return body


def pods(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    listing = json.loads(
        plane.kubectl(
            "get", "pods", "-n", namespace, "-l", "aima.dev/inference-service=chat", "-o", "json"
        ).stdout
    )
    return [p for p in listing["items"] if not p["metadata"].get("deletionTimestamp")]


def test_a_service_becomes_ready_on_a_gpu_node(
    engines: ControlPlane, operator: OperatorThread, namespace: str
) -> None:
    make_model(engines, namespace, ready=True)
    make_service(engines, namespace, resources={"gpus": 2})

    body = ready_with(engines, namespace, "Ready")
    status = body["status"]
    assert status["phase"] == "Running"
    assert (status["replicas"], status["readyReplicas"]) == (1, 1)
    assert status["endpoint"] == f"http://chat.{namespace}.svc:8000"
    assert (status["engine"], status["engineVariant"], status["gpus"]) == ("vllm", "cuda", 2)
    assert condition(body, "EngineResolved")["reason"] == "EngineChosen"
    assert condition(body, "Scheduled")["status"] == "True"
    assert status["observedGeneration"] == body["metadata"]["generation"]
    [pod] = pods(engines, namespace)
    assert pod["spec"]["nodeName"].startswith("gpu-node-")
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "--tensor-parallel-size=2" in pod["spec"]["containers"][0]["args"]
    service = get(engines, "service", "chat", namespace)
    assert service is not None
    assert service["spec"]["ports"][0]["port"] == 8000
    # Done, as GitOps tools (kstatus) read it: neither Reconciling nor Stalled once rolled out.
    eventually(
        lambda: not progress_conditions(get(engines, "isvc", "chat", namespace)),
        what="Reconciling and Stalled to go",
    )


def test_a_model_not_yet_downloaded_holds_the_service_waiting(
    engines: ControlPlane, operator: OperatorThread, namespace: str
) -> None:
    make_model(engines, namespace, ready=False)
    make_service(engines, namespace)

    body = ready_with(engines, namespace, "ModelNotReady")
    assert body["status"]["phase"] == "Pending"
    assert progress_conditions(body) == {"Reconciling": "ModelNotReady"}
    model_ready = condition(body, "ModelReady")
    assert model_ready["status"] == "False"
    # Pending until kwok runs the loader's pod, Downloading after: either way not Ready.
    assert re.match(r"Waiting for Model tiny \((Pending|Downloading)\)", model_ready["message"])
    assert get(engines, "deployment", "chat", namespace) is None

    make_model(engines, namespace, ready=True)  # the download finishes: the Model's event nudges the service
    ready_with(engines, namespace, "Ready")


def test_more_gpus_than_any_node_has_is_explained_as_never_fitting(
    engines: ControlPlane, operator: OperatorThread, namespace: str
) -> None:
    make_model(engines, namespace, ready=True)
    make_service(engines, namespace, resources={"gpus": 9})

    body = ready_with(engines, namespace, "NoNodeLargeEnough")
    message = condition(body, "Ready")["message"]
    assert "needs 9 nvidia.com/gpu on one node, but the largest node has 8" in message
    assert "lower spec.resources.gpus to 8 or fewer, or add a node with 9 GPUs" in message
    assert "free now" not in message  # freeing GPUs cannot help
    assert condition(body, "Scheduled")["reason"] == "NoNodeLargeEnough"
    assert body["status"]["phase"] == "Pending"
    assert progress_conditions(body) == {"Stalled": "NoNodeLargeEnough"}


def test_a_crashing_engine_is_explained(
    engines: ControlPlane, operator: OperatorThread, namespace: str
) -> None:
    make_model(engines, namespace, ready=True)
    make_service(engines, namespace)
    ready_with(engines, namespace, "Ready")
    [pod] = pods(engines, namespace)
    # kwok plays a kubelet whose container exits with code 1 and backs off.
    engines.kubectl("label", "pod", pod["metadata"]["name"], "-n", namespace, "aima.dev/test-fault=crashloop")

    body = ready_with(engines, namespace, "CrashLoopBackOff")
    message = condition(body, "Ready")["message"]
    assert f"The engine in pod {pod['metadata']['name']} keeps crashing (5 restarts)" in message
    assert "last exit code 1 (Error)" in message
    assert message.endswith("last log lines:\nValueError: the fake engine crashed on purpose"), message
    assert body["status"]["phase"] == "Failed"
    assert body["status"]["readyReplicas"] == 0
    assert progress_conditions(body) == {"Stalled": "CrashLoopBackOff"}


def test_a_pod_the_quota_refuses_is_explained(
    engines: ControlPlane, operator: OperatorThread, namespace: str
) -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "gpu-quota", "namespace": namespace},
        "spec": {"hard": {"requests.nvidia.com/gpu": "0"}},
    }
    engines.apply([quota])
    # Admission refuses every pod while the quota controller has not yet counted the namespace.
    eventually(
        lambda: (get(engines, "resourcequota", "gpu-quota", namespace) or {}).get("status", {}).get("hard"),
        what="the quota to be counted",
    )
    make_model(engines, namespace, ready=True)
    make_service(engines, namespace, resources={"gpus": 2})

    body = ready_with(engines, namespace, "FailedCreate")
    for type_ in ("Ready", "Scheduled"):
        message = condition(body, type_)["message"]
        assert message.startswith("Pods cannot be created: exceeded quota: gpu-quota"), message
        assert "requested: requests.nvidia.com/gpu=2" in message
    assert body["status"]["phase"] == "Pending"
    assert progress_conditions(body) == {"Stalled": "FailedCreate"}


def test_scale_up_and_down(engines: ControlPlane, operator: OperatorThread, namespace: str) -> None:
    make_model(engines, namespace, ready=True)
    make_service(engines, namespace)
    ready_with(engines, namespace, "Ready")

    engines.kubectl("scale", "isvc", "chat", "-n", namespace, "--replicas=3")
    eventually(
        lambda: (get(engines, "isvc", "chat", namespace) or {})["status"].get("readyReplicas") == 3,
        what="3 ready",
    )
    scale = json.loads(
        engines.kubectl("get", "isvc", "chat", "-n", namespace, "--subresource=scale", "-o", "json").stdout
    )
    assert scale["status"]["replicas"] == 3, (
        get(engines, "isvc", "chat", namespace),
        get(engines, "deployment", "chat", namespace),
    )
    assert scale["status"]["selector"] == "aima.dev/inference-service=chat,app.kubernetes.io/managed-by=aima"

    engines.kubectl("scale", "isvc", "chat", "-n", namespace, "--replicas=1")
    eventually(lambda: len(pods(engines, namespace)) == 1, what="one pod left")
    eventually(
        lambda: (get(engines, "isvc", "chat", namespace) or {})["status"].get("replicas") == 1,
        what="1 replica",
    )

    engines.kubectl(
        "patch", "isvc", "chat", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": true}}'
    )
    body = ready_with(engines, namespace, "Suspended")
    assert body["status"]["phase"] == "Suspended"
    eventually(lambda: not pods(engines, namespace), what="no pods while suspended")


def test_a_spec_change_rolls_out(engines: ControlPlane, operator: OperatorThread, namespace: str) -> None:
    make_model(engines, namespace, ready=True)
    make_service(engines, namespace)
    ready_with(engines, namespace, "Ready")

    engines.kubectl(
        "patch",
        "isvc",
        "chat",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"engineArgs": {"max-model-len": 4096}}}',
    )

    def rolled_out() -> bool:
        body = get(engines, "isvc", "chat", namespace) or {}
        current = pods(engines, namespace)
        return (
            body.get("status", {}).get("observedGeneration") == body["metadata"]["generation"]
            and condition(body, "Ready").get("status") == "True"
            and len(current) == 1
            and "--max-model-len=4096" in current[0]["spec"]["containers"][0]["args"]
        )

    eventually(rolled_out, what="the new pod to replace the old one")


def test_deleting_a_service_collects_its_children(
    engines: ControlPlane, operator: OperatorThread, namespace: str
) -> None:
    make_model(engines, namespace, ready=True)
    make_service(engines, namespace)
    ready_with(engines, namespace, "Ready")

    engines.kubectl("delete", "isvc", "chat", "-n", namespace)

    eventually(lambda: get(engines, "deployment", "chat", namespace) is None, what="the Deployment to go")
    eventually(lambda: get(engines, "service", "chat", namespace) is None, what="the Service to go")
    eventually(lambda: not pods(engines, namespace), what="the pods to go")


def test_a_restarted_operator_writes_nothing_when_nothing_changed(
    engines: ControlPlane, namespace: str
) -> None:
    settings = Settings(
        kubeconfig=engines.kubeconfig, namespaces=(namespace,), retry_seconds=0.5, resync_seconds=30
    )
    running, total = 20, 100
    with OperatorThread(settings):
        make_model(engines, namespace, ready=True, gguf=True)
        small = {"gpus": 0, "requests": {"cpu": "10m", "memory": "32Mi"}}
        engines.apply(
            [
                service_body(namespace, name=f"svc-{i:03}", replicas=1 if i < running else 0, resources=small)
                for i in range(total)
            ]
        )

        def settled() -> bool:
            listing = json.loads(engines.kubectl("get", "isvc", "-n", namespace, "-o", "json").stdout)[
                "items"
            ]
            reasons = [condition(b, "Ready").get("reason") for b in listing]
            return reasons.count("Ready") == running and reasons.count("ScaledToZero") == total - running

        eventually(settled, timeout=240, what="every service to settle")
        time.sleep(2)  # the last pod and Deployment status updates land

    offset = engines.audit_log.stat().st_size
    with Reconciled() as reconciled, OperatorThread(settings):
        # The new operator has passed over every service and the Model: only then is silence proof.
        eventually(
            lambda: (
                reconciled.count("InferenceService", namespace) == total
                and reconciled.count("Model", namespace) == 1
            ),
            timeout=120,
            what="the restarted operator to reconcile every service and the Model",
        )
        time.sleep(1)  # a write the last pass made reaches the audit log
        quiet = writes_since(engines, offset, namespace=namespace)
        assert quiet == [], [(e["verb"], e["objectRef"], e.get("userAgent")) for e in quiet]
        # ... and it was alive all along: a real change is acted on.
        engines.kubectl("scale", "isvc", "svc-099", "-n", namespace, "--replicas=1")
        ready_with(engines, namespace, "Ready", name="svc-099")
        acted = writes_since(engines, offset, namespace=namespace)
        assert any(e["objectRef"].get("resource") == "deployments" for e in acted)  # the filter sees us


def test_the_operator_writes_status_and_children_never_spec(
    engines: ControlPlane, operator: OperatorThread, namespace: str
) -> None:
    offset = engines.audit_log.stat().st_size
    make_model(engines, namespace, ready=True)
    make_service(engines, namespace)
    ready_with(engines, namespace, "Ready")
    engines.kubectl("scale", "isvc", "chat", "-n", namespace, "--replicas=2")
    eventually(
        lambda: (get(engines, "isvc", "chat", namespace) or {})["status"].get("readyReplicas") == 2,
        what="2 ready",
    )

    ours = [
        e for e in writes_since(engines, offset, namespace=namespace) if e["userAgent"].startswith("aima/")
    ]
    on_our_kinds = [e for e in ours if e["objectRef"]["resource"] in ("inferenceservices", "models")]
    assert on_our_kinds, "the operator wrote no status at all"
    # GitOps owns spec (replicas included): the operator writes only the status subresource.
    assert {e["objectRef"].get("subresource") for e in on_our_kinds} == {"status"}
    assert {e["objectRef"]["resource"] for e in ours} >= {"inferenceservices", "deployments", "services"}
