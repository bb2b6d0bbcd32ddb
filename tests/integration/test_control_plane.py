"""The local control plane is a real cluster: scheduling by GPU capacity, garbage collection,
kwok-driven pod states, and a clean stop."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from aima_testenv import ControlPlane, Profile, ensure_binaries, processes
from aima_testenv.processes import port_is_open
from waiting import eventually

pytestmark = pytest.mark.integration

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def deployment(name: str, *, gpus: int = 0, labels: dict[str, str] | None = None) -> dict[str, Any]:
    resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
    pod_labels = {"app": name} | (labels or {})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "containers": [
                        {"name": "engine", "image": "example.invalid/engine:1", "resources": resources}
                    ],
                    "tolerations": [GPU_TOLERATION] if gpus else [],
                },
            },
        },
    }


def pods(plane: ControlPlane, namespace: str, app: str) -> list[dict[str, Any]]:
    out = plane.kubectl("get", "pods", "-n", namespace, "-l", f"app={app}", "-o", "json").stdout
    return list(json.loads(out)["items"])


def apply_in(plane: ControlPlane, namespace: str, manifest: dict[str, Any]) -> None:
    plane.apply([manifest | {"metadata": manifest["metadata"] | {"namespace": namespace}}])


def condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in pod.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def test_gpu_nodes_carry_feature_discovery_labels_capacity_and_taint(control_plane: ControlPlane) -> None:
    node = json.loads(control_plane.kubectl("get", "node", "gpu-node-0", "-o", "json").stdout)
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert node["metadata"]["labels"]["nvidia.com/gpu.memory"] == "81559"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]
    cpu_node = json.loads(control_plane.kubectl("get", "node", "cpu-node-0", "-o", "json").stdout)
    assert "nvidia.com/gpu" not in cpu_node["status"]["allocatable"]


def test_one_gpu_deployment_runs_ready_on_a_gpu_node(control_plane: ControlPlane, namespace: str) -> None:
    apply_in(control_plane, namespace, deployment("one-gpu", gpus=1))

    def ready_pod() -> dict[str, Any] | None:
        found = [
            p
            for p in pods(control_plane, namespace, "one-gpu")
            if condition(p, "Ready").get("status") == "True"
        ]
        return found[0] if found else None

    pod = eventually(ready_pod, what="a Ready pod of the one-GPU Deployment")
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["nodeName"] in {"gpu-node-0", "gpu-node-1"}


def test_cpu_pod_avoids_tainted_gpu_nodes(control_plane: ControlPlane, namespace: str) -> None:
    apply_in(control_plane, namespace, deployment("cpu-only"))
    pod = eventually(
        lambda: next(
            (p for p in pods(control_plane, namespace, "cpu-only") if p["spec"].get("nodeName")), None
        ),
        what="the CPU pod to be scheduled",
    )
    assert pod["spec"]["nodeName"] == "cpu-node-0"


def test_nine_gpus_stay_pending_with_insufficient_gpu(control_plane: ControlPlane, namespace: str) -> None:
    apply_in(control_plane, namespace, deployment("nine-gpus", gpus=9))

    def unschedulable() -> dict[str, Any] | None:
        found = [
            p
            for p in pods(control_plane, namespace, "nine-gpus")
            if condition(p, "PodScheduled").get("reason")
        ]
        return condition(found[0], "PodScheduled") if found else None

    scheduled = eventually(unschedulable, what="the scheduler's verdict on the nine-GPU pod")
    assert scheduled["status"] == "False"
    assert scheduled["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in scheduled["message"]
    assert pods(control_plane, namespace, "nine-gpus")[0]["status"]["phase"] == "Pending"


def test_deleting_an_owner_garbage_collects_its_children(control_plane: ControlPlane, namespace: str) -> None:
    apply_in(control_plane, namespace, deployment("owned"))
    eventually(lambda: pods(control_plane, namespace, "owned"), what="the Deployment's pod")
    control_plane.kubectl("delete", "deployment", "owned", "-n", namespace, "--cascade=background")

    def children_gone() -> bool:
        replica_sets = control_plane.kubectl(
            "get", "replicasets", "-n", namespace, "-o", "name"
        ).stdout.strip()
        return not replica_sets and not pods(control_plane, namespace, "owned")

    eventually(children_gone, what="the ReplicaSet and pods to be garbage-collected")


@pytest.mark.parametrize(
    ("fault", "expected_waiting_reason"),
    [("crashloop", "CrashLoopBackOff"), ("unready", None)],
    ids=["crash loop", "failing readiness"],
)
def test_a_test_can_make_a_pod_crash_or_fail_readiness(
    control_plane: ControlPlane, namespace: str, fault: str, expected_waiting_reason: str | None
) -> None:
    apply_in(control_plane, namespace, deployment(f"fault-{fault}", labels={"aima.dev/test-fault": fault}))

    def failed_pod() -> dict[str, Any] | None:
        for pod in pods(control_plane, namespace, f"fault-{fault}"):
            statuses = pod.get("status", {}).get("containerStatuses") or []
            if condition(pod, "Ready").get("status") == "False" and statuses and not statuses[0]["ready"]:
                return pod
        return None

    pod = eventually(failed_pod, what=f"the {fault} stage to act")
    state = pod["status"]["containerStatuses"][0]["state"]
    if expected_waiting_reason:
        assert state["waiting"]["reason"] == expected_waiting_reason
        assert pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 1
    else:
        assert "running" in state


def test_stop_leaves_no_process_and_no_port_even_when_the_block_raised() -> None:
    plane = ControlPlane(binaries=ensure_binaries(), profile=Profile.API)
    with pytest.raises(RuntimeError, match="boom"), plane:
        assert plane.kubectl("get", "--raw", "/readyz").stdout == "ok"
        pids = [c.pid for c in plane.components]
        ports = list(plane.ports.values())
        workdir = plane.workdir
        raise RuntimeError("boom")
    assert all(pid is not None and not _alive(pid) for pid in pids)
    assert not any(port_is_open(port) for port in ports)
    assert not workdir.exists()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_claim_of_the_default_storage_class_gets_bound(control_plane: ControlPlane, namespace: str) -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "weights", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}},
    }
    control_plane.apply([claim])

    def phase() -> str:
        body = json.loads(
            control_plane.kubectl("get", "pvc", "weights", "-n", namespace, "-o", "json").stdout
        )
        return str(body.get("status", {}).get("phase", ""))

    eventually(lambda: phase() == "Bound", what="the claim to be provisioned and bound")


def test_a_component_whose_port_was_taken_starts_again_on_a_fresh_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between picking a free port and binding it, another process may take it (an outgoing
    connection can get it as its source port): here kwok's port is taken on purpose."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        picks: list[int] = []
        real_free_port = processes.free_port

        def free_port() -> int:
            # The sixth pick is kwok's: etcd, its peer port and the API server come first, then the
            # controller manager and the scheduler.
            picks.append(port if len(picks) == 5 else real_free_port())
            return picks[-1]

        monkeypatch.setattr(processes, "free_port", free_port)
        with ControlPlane(binaries=ensure_binaries()) as plane:
            assert plane.ports["kwok"] == picks[6] != port  # a seventh pick, for kwok's second start
            assert plane.kubectl("get", "nodes", "-o", "name").stdout.count("node/") == len(plane.node_specs)
