"""The Model controller on the real API server: cache volume, loader Job, status."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from aima import runner
from aima.kube import connect
from aima_testenv import ControlPlane
from aima_testenv.operator import OperatorThread
from declared import mark_downloaded
from waiting import LOADER_START_SECONDS, eventually

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[2] / "catalog"


def get(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def model(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name},
        "spec": {"source": "hf://acme/tiny-llm@main", "type": "LLM", "cache": {"size": "2Gi"}} | spec,
    }


def test_a_model_gets_a_bound_volume_a_loader_job_and_a_downloading_status(
    control_plane: ControlPlane, operator: OperatorThread, namespace: str
) -> None:
    control_plane.apply([model("tiny") | {"metadata": {"name": "tiny", "namespace": namespace}}])

    claim = eventually(lambda: get(control_plane, "pvc", "tiny-model", namespace), what="the cache claim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["metadata"]["ownerReferences"][0]["kind"] == "Model"
    status = eventually(
        lambda: (get(control_plane, "model", "tiny", namespace) or {}).get("status", {}).get("loaderJob"),
        what="the loader Job in status",
    )
    job = eventually(lambda: get(control_plane, "job", status, namespace), what="the loader Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["loader", "--source", "hf://acme/tiny-llm@main"]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "aima-loader"
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    # kwok runs the loader's pod at once (Pending before that), but no loader reports: not Ready.
    ready = eventually(
        lambda: (c := condition(control_plane, "tiny", namespace)).get("reason") == "Downloading" and c,
        what="the Model to be Downloading",
    )
    assert ready["status"] == "False"


def condition(plane: ControlPlane, name: str, namespace: str, type_: str = "Ready") -> dict[str, Any]:
    status = (get(plane, "model", name, namespace) or {}).get("status", {})
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def test_a_model_whose_loader_pod_cannot_start_is_pending(
    control_plane: ControlPlane, operator: OperatorThread, namespace: str
) -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-pods", "namespace": namespace},
    }
    control_plane.apply([quota | {"spec": {"hard": {"pods": "0"}}}])
    control_plane.apply([model("tiny") | {"metadata": {"name": "tiny", "namespace": namespace}}])
    job = eventually(
        lambda: (get(control_plane, "model", "tiny", namespace) or {}).get("status", {}).get("loaderJob"),
        what="the loader Job in status",
    )
    eventually(lambda: get(control_plane, "job", job, namespace), what="the loader Job")
    time.sleep(2)  # the Job controller tried to make the pod, and the quota refused it
    found = get(control_plane, "model", "tiny", namespace) or {}
    assert found["status"]["phase"] == "Pending"
    assert (
        f"Waiting for the loader Job {job} to start" in condition(control_plane, "tiny", namespace)["message"]
    )
    # Nothing changes when the bound passes, yet the Model says then that its loader does not start.
    said = eventually(
        lambda: (c := condition(control_plane, "tiny", namespace)).get("reason") == "LoaderNotStarted" and c,
        timeout=LOADER_START_SECONDS + 15,
        what="the Model to say that its loader Job made no pod",
    )
    assert (
        f"Loader Job {job} has created no pod yet; `kubectl describe job {job} -n {namespace}`"
        in said["message"]
    )
    assert "LoaderNotStarted" in events(control_plane, "tiny", namespace)

    control_plane.kubectl("delete", "resourcequota", "no-pods", "-n", namespace)
    eventually(
        lambda: (
            (get(control_plane, "model", "tiny", namespace) or {}).get("status", {}).get("phase")
            == "Downloading"
        ),
        timeout=60,
        what="the Model to be Downloading once its pod ran",
    )


def events(plane: ControlPlane, name: str, namespace: str) -> dict[str, str]:
    """The Warning Events about a Model: reason to message."""
    listed = plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    return {e["reason"]: e["message"] for e in json.loads(listed.stdout)["items"] if e["type"] == "Warning"}


def test_a_pvc_source_whose_claim_is_missing_says_so_until_the_claim_is_there(
    control_plane: ControlPlane, operator: OperatorThread, namespace: str
) -> None:
    weights = model("weights", source="pvc://weights/qwen")
    del weights["spec"]["cache"]
    control_plane.apply([weights | {"metadata": {"name": "weights", "namespace": namespace}}])
    said = eventually(
        lambda: (c := condition(control_plane, "weights", namespace)).get("reason") == "ClaimNotFound" and c,
        what="the Model to say that its claim is missing",
    )
    assert said["message"].startswith(
        f"PersistentVolumeClaim weights does not exist in namespace {namespace};"
    )
    assert (get(control_plane, "model", "weights", namespace) or {})["status"]["phase"] == "Pending"
    assert "create the claim" in eventually(
        lambda: events(control_plane, "weights", namespace).get("ClaimNotFound"), what="a ClaimNotFound Event"
    )

    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "weights", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    control_plane.apply([claim])
    eventually(
        lambda: condition(control_plane, "weights", namespace).get("reason") not in (None, "ClaimNotFound"),
        timeout=60,
        what="the Model to go on once its claim exists",
    )


def test_a_loader_pod_the_scheduler_cannot_place_is_explained_in_its_words(
    control_plane: ControlPlane, operator: OperatorThread, namespace: str
) -> None:
    # No provisioner serves this class: the claim stays unbound, so the loader pod gets no node.
    unbound = model("tiny", cache={"size": "1Gi", "storageClassName": "no-such-class"})
    control_plane.apply([unbound | {"metadata": {"name": "tiny", "namespace": namespace}}])
    said = eventually(
        lambda: (c := condition(control_plane, "tiny", namespace)).get("reason") == "Unschedulable" and c,
        timeout=60,
        what="the Model to say that its loader pod cannot be scheduled",
    )
    job = (get(control_plane, "model", "tiny", namespace) or {})["status"]["loaderJob"]
    assert said["message"].startswith(f"Loader Job {job} waits for a node: Pod {job}-")
    assert "unbound immediate PersistentVolumeClaims" in said["message"]  # the scheduler's words
    assert "Unschedulable" in events(control_plane, "tiny", namespace)


def claim_owners(plane: ControlPlane, name: str, namespace: str) -> list[str] | None:
    """The uids owning the Model's cache volume, or None once the volume is gone."""
    claim = get(plane, "pvc", f"{name}-model", namespace)
    return None if claim is None else [r["uid"] for r in claim["metadata"].get("ownerReferences", [])]


def set_policy(plane: ControlPlane, name: str, namespace: str, policy: str) -> None:
    patch = json.dumps({"spec": {"cache": {"reclaimPolicy": policy}}})
    plane.kubectl("patch", "model", name, "-n", namespace, "--type=merge", "-p", patch)


@pytest.mark.parametrize("downloaded", [False, True], ids=["downloading", "ready"])
def test_the_volume_owner_follows_the_reclaim_policy(
    control_plane: ControlPlane, operator: OperatorThread, namespace: str, downloaded: bool
) -> None:
    control_plane.apply([model("tiny") | {"metadata": {"name": "tiny", "namespace": namespace}}])
    uid = eventually(lambda: get(control_plane, "model", "tiny", namespace), what="the Model")["metadata"][
        "uid"
    ]
    eventually(
        lambda: claim_owners(control_plane, "tiny", namespace) == [uid], what="the Model to own its volume"
    )
    if downloaded:
        job = eventually(
            lambda: (get(control_plane, "model", "tiny", namespace) or {}).get("status", {}).get("loaderJob"),
            what="the loader Job in status",
        )
        mark_downloaded(control_plane, namespace, "tiny", job)
        eventually(lambda: condition(control_plane, "tiny", namespace).get("status") == "True", what="Ready")

    set_policy(control_plane, "tiny", namespace, "Retain")
    eventually(lambda: claim_owners(control_plane, "tiny", namespace) == [], what="the owner to be removed")
    set_policy(control_plane, "tiny", namespace, "Delete")
    eventually(lambda: claim_owners(control_plane, "tiny", namespace) == [uid], what="the owner to be back")
    # Settled: nothing left to change, so another pass writes nothing to the volume.
    version = (get(control_plane, "pvc", "tiny-model", namespace) or {})["metadata"]["resourceVersion"]
    control_plane.kubectl("annotate", "model", "tiny", "-n", namespace, "poke=1")  # queue a pass
    time.sleep(2)
    assert (get(control_plane, "pvc", "tiny-model", namespace) or {})["metadata"][
        "resourceVersion"
    ] == version


def test_deleting_a_model_keeps_a_retained_volume_and_collects_the_others(
    control_plane: ControlPlane, operator: OperatorThread, namespace: str
) -> None:
    retained = model("kept", cache={"size": "2Gi", "reclaimPolicy": "Retain"})
    control_plane.apply(
        [
            retained | {"metadata": {"name": "kept", "namespace": namespace}},
            model("gone") | {"metadata": {"name": "gone", "namespace": namespace}},
        ]
    )
    eventually(lambda: claim_owners(control_plane, "kept", namespace) == [], what="the retained volume")
    eventually(lambda: claim_owners(control_plane, "gone", namespace), what="the owned volume")
    control_plane.kubectl("delete", "model", "kept", "gone", "-n", namespace, "--wait=true")
    eventually(
        lambda: claim_owners(control_plane, "gone", namespace) is None,
        timeout=60,
        what="garbage collection of the deleted Model's volume",
    )
    kept = get(control_plane, "pvc", "kept-model", namespace)
    assert kept is not None and "deletionTimestamp" not in kept["metadata"]


def test_the_operator_installs_the_engine_catalog_once(
    control_plane: ControlPlane, operator: OperatorThread
) -> None:
    engines = json.loads(
        control_plane.kubectl("get", "engines", "-l", "aima.dev/catalog=true", "-o", "json").stdout
    )
    names = {e["metadata"]["name"] for e in engines["items"]}
    assert {"vllm", "sglang", "ollama", "llama-cpp", "speaches", "kokoro", "infinity"} <= names

    # A second start finds every Engine as the catalog says and writes nothing.
    async def install_again() -> int:
        kube = await connect(kubeconfig=control_plane.kubeconfig)
        try:
            return await runner.install_engines(kube, catalog_dir=CATALOG)
        finally:
            await kube.close()

    assert asyncio.run(install_again()) == 0
