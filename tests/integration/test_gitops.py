"""GitOps: what Argo CD and Flux see. The Argo CD health check (deploy/argocd/health.lua, run in Lua
5.1 as Argo CD runs it) on its fixtures, on the statuses the domain computes, and on live objects;
and on a control plane of its own, the kustomize install and a team's Git-applied Model, service,
Pipeline and AlertRule applied twice with the operator running: the second apply changes nothing,
`kubectl diff` finds no drift, and the operator wrote status only."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from aima.api import crds as crd_models
from aima.api.alert import AlertRuleStatus
from aima.api.common import ConditionStatus
from aima.api.pipeline import PipelineProblem, PipelineRunStatus, StepService
from aima.domain import alert, pipeline_status
from aima.settings import Settings
from aima_testenv import ControlPlane
from aima_testenv.operator import OperatorThread
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


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def live(kind: str, status: Any, *, generation: int = 1) -> dict[str, Any]:
    """An object of ``kind`` at ``generation`` carrying ``status`` (a status model), as Argo CD reads it."""
    dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {"kind": kind, "metadata": {"name": "x", "generation": generation}, "status": dumped}


def run(state: ConditionStatus, reason: str, *, generation: int = 1) -> PipelineRunStatus:
    return pipeline_status.run_condition(
        PipelineRunStatus(), state=state, reason=reason, message="m", generation=generation, now=NOW
    )


def pipeline(problems: list[PipelineProblem], services: list[StepService]) -> dict[str, Any]:
    status = pipeline_status.pipeline_status(
        generation=1, previous=[], problems=problems, services=services, require_services=True, now=NOW
    )
    return live("Pipeline", status)


def rule(*problems: alert.ChannelProblem, suspended: bool = False) -> dict[str, Any]:
    status = alert.with_outcome(AlertRuleStatus(), problems, suspended=suspended, generation=1, now=NOW)
    return live("AlertRule", status)


@pytest.mark.unit
def test_what_the_domain_computes_reads_as_the_health_it_means() -> None:
    """The pure status functions and health.lua agree (kstatus: Stalled is Degraded, Reconciling is
    Progressing), so an invalid Pipeline or a failed run never shows as Progressing for ever."""
    missing = PipelineProblem(step="llm", field="unit", message="no unit 'inference.chta'")
    waiting = StepService(step="llm", model="qwen", service="qwen", message="not ready")
    ready = StepService(step="llm", model="qwen", service="qwen", ready=True)
    lost = alert.ChannelProblem(
        channel="ops", problem="Secret hooks not found", reason=alert.CHANNEL_SECRET_MISSING, lasting=True
    )
    verdicts = {
        "pipeline invalid": health(pipeline([missing], [])),
        "pipeline waiting": health(pipeline([], [waiting])),
        "pipeline ready": health(pipeline([], [ready])),
        "run waiting": health(live("PipelineRun", run(ConditionStatus.UNKNOWN, "ServicesNotReady"))),
        "run running": health(live("PipelineRun", run(ConditionStatus.UNKNOWN, "Running"))),
        "run succeeded": health(live("PipelineRun", run(ConditionStatus.TRUE, "Succeeded"))),
        "run failed": health(live("PipelineRun", run(ConditionStatus.FALSE, "StepFailed"))),
        "run cancelled": health(live("PipelineRun", run(ConditionStatus.FALSE, "Cancelled"))),
        "rule evaluating": health(rule()),
        "rule secret missing": health(rule(lost)),
        "rule receiver refusing": health(
            rule(alert.ChannelProblem(channel="ops", problem="HTTP 404", lasting=True))
        ),
        "rule retrying": health(rule(alert.ChannelProblem(channel="ops", problem="HTTP 503"))),
        "rule suspended": health(rule(suspended=True)),
    }
    assert {case: verdict["status"] for case, verdict in verdicts.items()} == {
        "pipeline invalid": "Degraded",
        "pipeline waiting": "Progressing",
        "pipeline ready": "Healthy",
        "run waiting": "Progressing",
        "run running": "Progressing",
        "run succeeded": "Healthy",
        "run failed": "Degraded",
        "run cancelled": "Degraded",
        "rule evaluating": "Healthy",
        "rule secret missing": "Degraded",
        "rule receiver refusing": "Degraded",
        "rule retrying": "Progressing",
        "rule suspended": "Suspended",
    }
    assert (
        verdicts["pipeline invalid"]["message"]
        == "Stalled: InvalidSpec: step 'llm' unit: no unit 'inference.chta'"
    )
    assert (
        verdicts["rule secret missing"]["message"]
        == "Stalled: ChannelSecretMissing: channel ops: Secret hooks not found"
    )
    # A run whose spec changed after it ended (cancel: true) answers the new generation unchanged.
    ended = live(
        "PipelineRun",
        pipeline_status.with_generation(run(ConditionStatus.TRUE, "Succeeded"), 2),
        generation=2,
    )
    assert health(ended)["status"] == "Healthy"
    assert (
        health(live("PipelineRun", run(ConditionStatus.TRUE, "Succeeded"), generation=2))["status"]
        == "Progressing"
    )


def apply(plane: ControlPlane, *sources: str) -> str:
    return plane.kubectl("apply", "--server-side", f"--field-manager={GIT_MANAGER}", *sources).stdout


def git_objects() -> list[dict[str, Any]]:
    """What a team keeps in Git: its namespace, a Model, a service (replicas included), a Pipeline
    using the service and an AlertRule watching it."""
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
        {
            "apiVersion": "aima.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": "ask", "namespace": TEAM},
            "spec": {
                "inputs": [{"name": "question"}],
                "steps": [
                    {
                        "id": "answer",
                        "unit": "inference.chat",
                        "inputs": {
                            "model": "chat",
                            "messages": [{"role": "user", "content": "${input.question}"}],
                        },
                    }
                ],
                "outputs": {"answer": "${steps.answer.content}"},
            },
        },
        {
            "apiVersion": "aima.dev/v1alpha1",
            "kind": "AlertRule",
            "metadata": {"name": "chat-down", "namespace": TEAM},
            "spec": {"condition": {"serviceNotReady": {"name": "chat"}}, "for": "5m"},
        },
    ]


GIT_KINDS = (("model", "tiny"), ("isvc", "chat"), ("pipeline", "ask"), ("alertrule", "chat-down"))


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
        # The Pipeline and the AlertRule follow the service: settled once Healthy with nothing pending.
        eventually(
            lambda: (
                all(
                    health(get(plane, kind, name, "-n", TEAM))["status"] == "Healthy"
                    for kind, name in GIT_KINDS
                )
                and not get(plane, "alertrule", "chat-down", "-n", TEAM)["status"]["alerts"]
            ),
            what="every Git object Healthy",
        )
        yield plane


@pytest.mark.integration
def test_git_applied_objects_report_health_argo_cd_can_read(synced: ControlPlane) -> None:
    for kind, name in GIT_KINDS:
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
    for kind, name in GIT_KINDS:
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
