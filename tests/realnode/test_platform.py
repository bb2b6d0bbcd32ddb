"""The chart as a user installs it, on a node that really runs its pods: every component Ready
under the Restricted Pod Security Standard, the operator's Lease held, the device agent reporting
a node without NVML cleanly, and the operator's loader Job downloading a Model for real."""

from __future__ import annotations

import json
from typing import Any

import pytest
from suite import HUB_WEIGHTS_BYTES

from aima_testenv import ControlPlane
from aima_testenv.chart import Release
from aima_testenv.realnode import NODE_NAME
from reads import condition, get_json, pods_of
from waiting import eventually

pytestmark = pytest.mark.realnode


def test_every_component_runs_on_the_real_node_as_restricted_non_root(
    real_cluster: ControlPlane, platform: Release
) -> None:
    pods = pods_of(real_cluster, platform.namespace)
    components = sorted(p["metadata"]["labels"].get("app.kubernetes.io/component", "") for p in pods)
    assert components == ["device-agent", "gateway", "mcp", "operator", "operator"]
    for pod in pods:
        name = pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] == NODE_NAME, name
        assert condition(pod, "Ready") == "True", name
        security = pod["spec"]["containers"][0]["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True, name
    labels = get_json(real_cluster, "namespace", platform.namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_one_operator_replica_holds_the_lease(real_cluster: ControlPlane, platform: Release) -> None:
    operators = {
        p["metadata"]["name"]
        for p in pods_of(real_cluster, platform.namespace, component="operator")
        if condition(p, "Ready") == "True"
    }
    lease = eventually(
        lambda: get_json(
            real_cluster, "lease", platform.name("operator"), "-n", platform.namespace, check=False
        ),
        what="the operator's Lease",
    )
    assert lease["spec"]["holderIdentity"] in operators


def test_the_device_agent_reports_a_node_without_nvml_cleanly(
    real_cluster: ControlPlane, platform: Release
) -> None:
    devices = eventually(
        lambda: get_json(real_cluster, "nodedevices", NODE_NAME, check=False),
        what="the real node's NodeDevices",
        timeout=60,
    )
    ready = next(c for c in devices["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NvmlUnavailable")
    (agent,) = pods_of(real_cluster, platform.namespace, component="device-agent")
    assert agent["status"]["containerStatuses"][0]["restartCount"] == 0


def model_status(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return dict(get_json(plane, "model", name, "-n", namespace).get("status", {}))


def test_a_model_downloads_through_a_real_loader_job_into_a_real_volume(
    real_cluster: ControlPlane, platform: Release, downloaded: dict[str, Any]
) -> None:
    status, seen_progress, namespace = downloaded["status"], downloaded["progress"], downloaded["namespace"]
    # Progress came from the loader pod while it downloaded, not only at the end.
    assert any(0 < p.get("percent", 0) < 100 for p in seen_progress), seen_progress
    files = {f["path"]: f for f in status["manifest"]["files"]}
    assert files["model.safetensors"]["size"] == HUB_WEIGHTS_BYTES
    assert len(files["model.safetensors"]["sha256"]) == 64
    claim = get_json(real_cluster, "pvc", status["claimName"], "-n", namespace)
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "local-path"
    job = get_json(real_cluster, "job", status["loaderJob"], "-n", namespace)
    assert job["status"].get("succeeded") == 1
    (pod,) = json.loads(
        real_cluster.kubectl(
            "get", "pods", "-n", namespace, "-l", f"job-name={status['loaderJob']}", "-o", "json"
        ).stdout
    )["items"]
    assert pod["spec"]["nodeName"] == NODE_NAME


def test_loader_progress_appears_within_seconds(downloaded: dict[str, Any]) -> None:
    first = downloaded["first_progress_after"]
    assert first is not None and first < 30, first
