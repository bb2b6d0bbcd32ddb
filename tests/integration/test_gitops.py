"""GitOps: what Argo CD and Flux see. The Argo CD health check (deploy/argocd/health.lua, run in Lua
5.1 as Argo CD runs it) on its fixtures and on live objects; and on a control plane of its own, the
kustomize install and a Git-applied service applied twice with the operator running: the second
apply changes nothing, `kubectl diff` finds no drift, and the operator wrote status only."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from aima.api import crds as crd_models
from aima.settings import Settings
from aima.testenv import ControlPlane
from aima.testenv.operator import OperatorThread
from waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "deploy" / "argocd"
MANIFESTS = ROOT / "manifests"
NAMESPACE, TEAM = "aima-system", "team-git"
GIT_MANAGER = "gitops"  # Flux's kustomize-controller and Argo CD's ServerSideApply also apply server-side


def health(obj: dict[str, Any]) -> dict[str, str]:
    """health.lua's verdict on ``obj``, with ``obj`` a global as Argo CD sets it."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    verdict = lua.execute((ARGOCD / "health.lua").read_text())
    return {"status": verdict["status"], "message": verdict["message"]}


@pytest.mark.unit
@pytest.mark.parametrize(
    "case",
    yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"],
    ids=lambda c: Path(c["inputPath"]).stem,
)
def test_the_health_check_reads_conditions_as_argo_cd_should(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    assert health(obj) == case["healthStatus"]


@pytest.mark.unit
def test_the_argo_cd_config_registers_the_health_check_for_every_kind() -> None:
    config = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    script = (ARGOCD / "health.lua").read_text()
    kinds = {d["spec"]["names"]["kind"] for d in crd_models.crds()}
    assert config["data"] == {f"resource.customizations.health.aima.dev_{kind}": script for kind in kinds}


def apply(plane: ControlPlane, *sources: str) -> str:
    return plane.kubectl("apply", "--server-side", f"--field-manager={GIT_MANAGER}", *sources).stdout


def git_objects() -> list[dict[str, Any]]:
    """What a team keeps in Git: its namespace, a Model and a service (replicas included)."""
    return [
        # Labelled: an applied object that sets no field at all gets no owner, and the API server
        # then records its fields under "before-first-apply" on the next apply (one write).
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TEAM, "labels": {"team": "git"}}},
        {
            "apiVersion": "aima.dev/v1alpha1",
            "kind": "Model",
            "metadata": {"name": "tiny", "namespace": TEAM},
            "spec": {"source": "hf://acme/tiny-llm@main", "type": "LLM", "cache": {"size": "1Gi"}},
        },
        {
            "apiVersion": "aima.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "chat", "namespace": TEAM},
            "spec": {"modelRef": {"name": "tiny"}, "replicas": 1, "resources": {"gpus": 1}},
        },
    ]


def versions(plane: ControlPlane, *sources: str) -> dict[str, str]:
    """resourceVersion of every object in ``sources``: equal versions mean nothing was written."""
    listing = json.loads(plane.kubectl("get", *sources, "-o", "json").stdout)
    return {
        f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}": o["metadata"][
            "resourceVersion"
        ]
        for o in listing["items"]
    }


def get(plane: ControlPlane, *args: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(plane.kubectl("get", *args, "-o", "json").stdout)
    return body


@pytest.fixture(scope="module")
def git_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("git") / "team.yaml"
    path.write_text(yaml.safe_dump_all(git_objects()))
    return path


@pytest.fixture(scope="module")
def synced(own_control_plane: ControlPlane, git_repo: Path) -> Iterator[ControlPlane]:
    """The kustomize install and the team's objects applied from "Git", with the operator running
    under the install's own ServiceAccount, and the service Ready."""
    plane = own_control_plane
    apply(plane, "-k", str(MANIFESTS))
    plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "app.kubernetes.io/part-of=aima"
    )
    eventually(
        lambda: plane.kubectl("get", "aima", "-A", check=False).returncode == 0, what="AIMA kinds served"
    )
    settings = Settings(
        kubeconfig=plane.service_account_kubeconfig(namespace=NAMESPACE, name="aima-operator"),
        catalog_dir=ROOT / "catalog",
        leader_election=True,
        lease_namespace=NAMESPACE,
        lease_name="aima-operator",
        identity="gitops-test",
        retry_seconds=0.5,
        resync_seconds=2,  # resyncs during the test's quiet window must write nothing either
    )
    with OperatorThread(settings):
        apply(plane, "-f", str(git_repo))
        job = eventually(
            lambda: get(plane, "model", "tiny", "-n", TEAM).get("status", {}).get("loaderJob"),
            what="loader Job",
        )
        _report_downloaded(plane, job)
        eventually(
            lambda: health(get(plane, "isvc", "chat", "-n", TEAM))["status"] == "Healthy",
            what="chat Healthy",
            timeout=90,
        )
        yield plane


@pytest.mark.integration
def test_a_git_applied_service_reports_health_argo_cd_can_read(synced: ControlPlane) -> None:
    for kind, name in (("model", "tiny"), ("isvc", "chat")):
        body = get(synced, kind, name, "-n", TEAM)
        assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
        assert health(body)["status"] == "Healthy"


@pytest.mark.integration
def test_applying_the_same_manifests_twice_changes_nothing(synced: ControlPlane, git_repo: Path) -> None:
    sources = ("-k", str(MANIFESTS)), ("-f", str(git_repo))
    before = {k: v for s in sources for k, v in versions(synced, *s).items()}
    for source in sources:
        output = apply(synced, *source)
        assert "serverside-applied" in output
    time.sleep(5)  # several operator resyncs
    after = {k: v for s in sources for k, v in versions(synced, *s).items()}
    assert after == before
    assert len(before) > 20
    for source in sources:
        diff = synced.kubectl("diff", "--server-side", f"--field-manager={GIT_MANAGER}", *source, check=False)
        assert diff.returncode == 0, diff.stdout


@pytest.mark.integration
def test_the_operator_writes_status_and_never_spec(synced: ControlPlane) -> None:
    for kind, name in (("model", "tiny"), ("isvc", "chat")):
        body = get(synced, kind, name, "-n", TEAM, "--show-managed-fields")
        writers = {(f["manager"], f.get("subresource", "")) for f in body["metadata"]["managedFields"]}
        main = {manager for manager, subresource in writers if subresource == ""}
        assert main == {GIT_MANAGER}, f"{kind} {name}: spec and metadata written by {main - {GIT_MANAGER}}"
        assert any(subresource == "status" and manager != GIT_MANAGER for manager, subresource in writers)
    # What the platform makes lives in children the service owns, never in what Git declared.
    deployment = get(synced, "deployment", "chat", "-n", TEAM)
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "InferenceService"
    assert not any(
        key.startswith("argocd.argoproj.io/") for key in deployment["metadata"].get("annotations", {})
    )


def _report_downloaded(plane: ControlPlane, job: str) -> None:
    # As the loader would report its download (kwok runs no loader).
    done = {
        "type": "Downloaded",
        "status": "True",
        "reason": "Ready",
        "message": "Files downloaded and verified",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    status = {
        "status": {"loaderJob": job, "progress": {"phase": "Ready", "percent": 100}, "conditions": [done]}
    }
    plane.kubectl(
        "patch", "model", "tiny", "-n", TEAM, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )
