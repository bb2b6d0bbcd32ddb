"""Model planning: children from the spec, status from the Job and the loader's report."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from aima.api.common import Keys
from aima.api.model import Model
from aima.domain import model as planning
from aima.domain import objects

pytestmark = pytest.mark.unit

NOW = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)
SETTINGS = planning.LoaderSettings(
    image="aima:test",
    image_pull_policy="IfNotPresent",
    backoff_limit=3,
    endpoints={"hf": "https://mirror.example"},
)


def body(*, status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "qwen", "namespace": "team", "uid": "u-1", "generation": 2},
        "spec": {"source": "hf://acme/qwen@main", "type": "LLM"} | spec,
        "status": status or {},
    }


def observed(job: dict[str, Any] | None = None, *, claim: dict[str, Any] | None = None) -> planning.Observed:
    return planning.Observed(claim=claim, job=job, gpu_memory_mib=81559)


def by_kind(plan: planning.Plan) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in plan.objects}


def test_a_new_model_gets_a_claim_rbac_and_a_loader_job() -> None:
    plan = planning.plan(body(cache={"size": "20Gi"}), settings=SETTINGS, observed=observed())
    children = by_kind(plan)
    assert list(children) == ["PersistentVolumeClaim", "ServiceAccount", "RoleBinding", "Job"]
    assert children["PersistentVolumeClaim"]["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert children["PersistentVolumeClaim"]["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    args = children["Job"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["loader", "--source", "hf://acme/qwen@main"]
    assert args[args.index("--endpoint") + 1] == "https://mirror.example"
    assert args[args.index("--model") + 1] == "team/qwen"


def test_retain_keeps_the_volume_out_of_garbage_collection() -> None:
    plan = planning.plan(
        body(cache={"size": "20Gi", "reclaimPolicy": "Retain"}), settings=SETTINGS, observed=observed()
    )
    assert by_kind(plan)["PersistentVolumeClaim"]["metadata"]["ownerReferences"] == []


def test_a_pvc_source_is_verified_in_place() -> None:
    plan = planning.plan(body(source="pvc://weights/qwen"), settings=SETTINGS, observed=observed())
    children = by_kind(plan)
    assert "PersistentVolumeClaim" not in children
    pod = children["Job"]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "weights"
    assert "--verify-only" in pod["containers"][0]["args"]
    assert plan.claim_name == "weights" and plan.path == "qwen"


def test_a_token_comes_from_the_secret_never_from_the_command_line() -> None:
    plan = planning.plan(body(secretRef="hf-token"), settings=SETTINGS, observed=observed())
    container = by_kind(plan)["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [
        {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN", "optional": True}},
        }
    ]
    assert container["args"][-2:] == ["--token-env", "HF_TOKEN"]


def test_an_https_token_comes_from_the_secret_as_credentials_may_not_sit_in_the_url() -> None:
    spec = {"source": "https://files.example/model.gguf", "secretRef": "web-token"}
    plan = planning.plan(body(**spec), settings=SETTINGS, observed=observed())
    container = by_kind(plan)["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert [e["valueFrom"]["secretKeyRef"] for e in container["env"]] == [
        {"name": "web-token", "key": "HTTP_TOKEN", "optional": True}
    ]
    assert container["args"][-2:] == ["--token-env", "HTTP_TOKEN"]


def test_s3_keys_come_from_the_secret_and_the_endpoint_and_region_from_the_settings() -> None:
    settings = planning.LoaderSettings(
        image="aima:test",
        image_pull_policy="IfNotPresent",
        backoff_limit=3,
        endpoints={"s3": "http://minio.storage:9000"},
        s3_region="eu-west-1",
    )
    spec = {"source": "s3://models/qwen/7b", "secretRef": "s3-keys"}
    container = by_kind(planning.plan(body(**spec), settings=settings, observed=observed()))["Job"]["spec"][
        "template"
    ]["spec"]["containers"][0]
    assert [(e["name"], e["valueFrom"]["secretKeyRef"]) for e in container["env"]] == [
        (name, {"name": "s3-keys", "key": name, "optional": True})
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    ]
    args = container["args"]
    assert args[args.index("--endpoint") + 1] == "http://minio.storage:9000"
    assert args[args.index("--region") + 1] == "eu-west-1"
    assert "--token-env" not in args
    public = by_kind(
        planning.plan(body(source="s3://models/qwen/7b"), settings=settings, observed=observed())
    )
    assert "env" not in public["Job"]["spec"]["template"]["spec"]["containers"][0]


def test_a_changed_source_means_a_new_job_and_a_repeat_the_same() -> None:
    first = planning.plan(body(), settings=SETTINGS, observed=observed())
    again = planning.plan(body(), settings=SETTINGS, observed=observed())
    moved = planning.plan(body(source="hf://acme/qwen@v2"), settings=SETTINGS, observed=observed())
    assert first.job_name == again.job_name != moved.job_name


def job(**status: Any) -> dict[str, Any]:
    return {"status": status}


FAILED_JOB = job(conditions=[{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}])


@pytest.mark.parametrize(
    ("the_job", "progress", "ready", "reason", "phase", "words", "kstatus"),
    [
        (None, None, "False", "Pending", "Pending", "Waiting for the loader Job", "Reconciling"),
        (job(active=1), None, "False", "Pending", "Pending", "to start", "Reconciling"),
        (job(active=1, ready=1), None, "False", "Downloading", "Downloading", "listing", "Reconciling"),
        (
            job(active=1),
            {
                "phase": "Downloading",
                "percent": 40,
                "bytesDone": 4 * 2**30,
                "bytesTotal": 10 * 2**30,
                "filesDone": 1,
                "filesTotal": 4,
                "bytesPerSecond": 100 * 2**20,
                "etaSeconds": 61,
            },
            "False",
            "Downloading",
            "Downloading",
            "Downloaded 40% (4.00 GiB of 10.00 GiB, 1/4 files) at 100 MiB/s",
            "Reconciling",
        ),
        (
            job(active=1),
            {"phase": "Verifying"},
            "False",
            "Downloading",
            "Verifying",
            "listing",
            "Reconciling",
        ),
        (job(succeeded=1), None, "False", "Downloading", "Downloading", "listing", "Reconciling"),
        (job(succeeded=1), {"phase": "Ready"}, "True", "Ready", "Ready", "verified", None),
        (
            FAILED_JOB,
            {"phase": "Failed", "message": "HTTP 404 for acme/qwen"},
            "False",
            "DownloadFailed",
            "Failed",
            "HTTP 404 for acme/qwen",
            "Stalled",
        ),
        (
            job(active=1),
            {"phase": "Failed", "message": "disk full"},
            "False",
            "DownloadFailed",
            "Failed",
            "disk full",
            "Reconciling",
        ),
    ],
    ids=[
        "no job yet",
        "pod not running yet",
        "pod running, no report yet",
        "downloading",
        "verifying",
        "job done without report",
        "ready",
        "job failed",
        "loader failed, job retrying",
    ],
)
def test_status_tells_the_truth(
    the_job: dict[str, Any] | None,
    progress: dict[str, Any] | None,
    ready: str,
    reason: str,
    phase: str,
    words: str,
    kstatus: str | None,
) -> None:
    model = body(status={"progress": progress} if progress else None)
    plan = planning.plan(model, settings=SETTINGS, observed=observed(the_job))
    status = planning.compute_status(model, plan=plan, observed=observed(the_job), now=NOW)
    condition = next(c for c in status.conditions if c.type == "Ready")
    assert (condition.status, condition.reason, status.phase) == (ready, reason, phase)
    assert words in condition.message
    assert status.observed_generation == 2
    # GitOps tools (kstatus) read Reconciling and Stalled: at most one, True, saying the same as Ready.
    progress_conditions = [c for c in status.conditions if c.type in ("Reconciling", "Stalled")]
    assert [c.type for c in progress_conditions] == ([kstatus] if kstatus else [])
    for found in progress_conditions:
        assert (found.status, found.reason, found.message) == ("True", reason, condition.message)
        assert found.observed_generation == 2


def test_a_downloaded_model_needs_no_children_and_its_status_is_stable() -> None:
    model = body(status={"progress": {"phase": "Ready", "bytesTotal": 16 * 2**30}})
    first_plan = planning.plan(model, settings=SETTINGS, observed=observed(job(succeeded=1)))
    status = planning.compute_status(model, plan=first_plan, observed=observed(job(succeeded=1)), now=NOW)
    stored = body(status=status.model_dump(mode="json", by_alias=True, exclude_none=True))
    later = planning.plan(stored, settings=SETTINGS, observed=observed(None))
    assert later.objects == []
    again = planning.compute_status(
        stored, plan=later, observed=observed(None), now=NOW + datetime.timedelta(hours=1)
    )
    assert objects.status_patch(again, observed=stored["status"], others=planning.LOADER_FIELDS) is None


def test_a_downloaded_model_keeps_only_its_volume_in_the_plan() -> None:
    stored = downloaded(cache={"size": "20Gi"})
    plan = planning.plan(stored, settings=SETTINGS, observed=observed(claim=claim(owned=True)))
    assert [o["kind"] for o in plan.objects] == ["PersistentVolumeClaim"]
    assert objects.is_satisfied(plan.objects[0], claim(owned=True))  # steady state: no write


@pytest.mark.parametrize("phase", ["downloading", "ready"])
@pytest.mark.parametrize(
    ("policy", "owned_before", "owned_after"),
    [("Retain", True, False), ("Delete", False, True), ("Retain", False, False), ("Delete", True, True)],
    ids=["delete to retain", "retain to delete", "retain kept", "delete kept"],
)
def test_the_volume_owner_follows_the_reclaim_policy(
    phase: str, policy: str, owned_before: bool, owned_after: bool
) -> None:
    cache = {"size": "20Gi", "reclaimPolicy": policy}
    model = downloaded(cache=cache) if phase == "ready" else body(cache=cache)
    current = claim(owned=owned_before)
    plan = planning.plan(model, settings=SETTINGS, observed=observed(claim=current))
    desired = by_kind(plan)["PersistentVolumeClaim"]
    assert [r["uid"] for r in desired["metadata"]["ownerReferences"]] == (["u-1"] if owned_after else [])
    # A write goes out exactly when the live volume's owner differs from the policy's.
    assert objects.is_satisfied(desired, current) is (owned_before == owned_after)


def test_a_volume_sized_from_the_listing_keeps_its_size() -> None:
    current = claim(owned=True, storage="3Gi")
    plan = planning.plan(body(), settings=SETTINGS, observed=observed(claim=current))
    assert by_kind(plan)["PersistentVolumeClaim"]["spec"]["resources"]["requests"]["storage"] == "3Gi"


def test_a_downloaded_model_whose_volume_is_gone_gets_no_empty_one() -> None:
    plan = planning.plan(downloaded(), settings=SETTINGS, observed=observed())
    assert plan.objects == []


def downloaded(**spec: Any) -> dict[str, Any]:
    """A Model whose current loader Job downloaded and verified its files."""
    job_name = planning.loader_job_name(Model.model_validate(body(**spec)))
    done = {"status": "True", "reason": "Ready", "lastTransitionTime": NOW.isoformat()}
    status = {
        "loaderJob": job_name,
        "conditions": [{"type": "Downloaded", **done}, {"type": "Ready", **done}],
        "progress": {"phase": "Ready"},
    }
    return body(status=status, **spec)


def claim(*, owned: bool, storage: str = "20Gi") -> dict[str, Any]:
    """The live cache volume as the API server returns it."""
    owner = {"apiVersion": "aima.dev/v1alpha1", "kind": "Model", "name": "qwen", "uid": "u-1"}
    metadata: dict[str, Any] = {
        "name": "qwen-model",
        "namespace": "team",
        "uid": "c-1",
        "labels": {Keys.MANAGED_BY: "aima", Keys.COMPONENT: "model-cache", Keys.MODEL: "qwen"},
    }
    if owned:
        metadata["ownerReferences"] = [owner | {"controller": True, "blockOwnerDeletion": True}]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": storage}},
            "storageClassName": "standard",
        },
        "status": {"phase": "Bound"},
    }


def test_estimate_rounds_gpus_up_to_a_tensor_parallel_size() -> None:
    estimate = planning.estimate_resources(weights_bytes=140 * 10**9, gpu_memory_mib=81559)
    assert estimate.gpus == 4  # 140 GB x 1.3 + 1 GiB needs 2.6 H100s: tensor parallel 4
    assert estimate.parameters == "70.0B"
    small = planning.estimate_resources(weights_bytes=16 * 10**9, gpu_memory_mib=81559)
    assert small.gpus == 1


LOADER_JOB = planning.loader_job_name(Model.model_validate(body()))


def created_job(*, seconds_ago: float) -> dict[str, Any]:
    created = (NOW - datetime.timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")
    return {"metadata": {"name": LOADER_JOB, "creationTimestamp": created}, "status": {"active": 1}}


def loader_pod(*, scheduled: str | None = None, waiting: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod of the loader Job: unscheduled with the scheduler's words, or on a node, its container
    waiting for ``waiting``."""
    status: dict[str, Any] = {"phase": "Pending"}
    if scheduled is not None:
        status["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": scheduled}
        ]
    if waiting is not None:
        status["containerStatuses"] = [
            {"name": "loader", "image": "aima:test", "state": {"waiting": waiting}}
        ]
    labels = {"batch.kubernetes.io/job-name": LOADER_JOB}
    return {"metadata": {"name": f"{LOADER_JOB}-abcde", "labels": labels}, "spec": {}, "status": status}


def waiting_condition(
    spec: dict[str, Any], *, claim: dict[str, Any] | None, pods: list[dict[str, Any]], seconds_ago: float = 5
) -> tuple[str, str, str]:
    model = body(**spec)
    seen = planning.Observed(
        claim=claim, job=created_job(seconds_ago=seconds_ago), gpu_memory_mib=None, pods=pods
    )
    plan = planning.plan(model, settings=SETTINGS, observed=seen)
    status = planning.compute_status(model, plan=plan, observed=seen, now=NOW, start_seconds=60)
    ready = next(c for c in status.conditions if c.type == "Ready")
    return ready.reason, ready.message, str(status.phase)


def test_a_pvc_source_whose_claim_is_missing_says_so_at_once() -> None:
    reason, message, phase = waiting_condition({"source": "pvc://weights/qwen"}, claim=None, pods=[])
    assert (reason, phase) == ("ClaimNotFound", "Pending")
    assert message.startswith("PersistentVolumeClaim weights does not exist in namespace team;")
    assert "create the claim or correct spec.source" in message
    there = waiting_condition({"source": "pvc://weights/qwen"}, claim=claim(owned=False), pods=[])
    assert there[0] == "Pending"


def test_a_loader_pod_that_cannot_be_scheduled_or_started_says_why() -> None:
    said = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available"
    reason, message, phase = waiting_condition({}, claim=claim(owned=True), pods=[loader_pod(scheduled=said)])
    assert (reason, phase) == ("Unschedulable", "Pending")
    assert (
        message
        == f"Loader Job {LOADER_JOB} waits for a node: Pod {LOADER_JOB}-abcde cannot be scheduled: {said}"
    )

    secret = {"reason": "CreateContainerConfigError", "message": 'secret "hf-token" not found'}
    reason, message, _ = waiting_condition({}, claim=claim(owned=True), pods=[loader_pod(waiting=secret)])
    assert reason == "ContainerWaiting"
    assert message.endswith('cannot start (CreateContainerConfigError): secret "hf-token" not found')

    pulling = {"reason": "ImagePullBackOff", "message": "not found"}
    assert (
        waiting_condition({}, claim=claim(owned=True), pods=[loader_pod(waiting=pulling)])[0]
        == "ImagePullBackOff"
    )
    creating = {"reason": "ContainerCreating"}
    assert waiting_condition({}, claim=claim(owned=True), pods=[loader_pod(waiting=creating)])[0] == "Pending"


def test_a_loader_job_without_a_pod_says_so_after_the_bound_and_is_looked_at_again_then() -> None:
    early = waiting_condition({}, claim=claim(owned=True), pods=[], seconds_ago=20)
    assert early[0] == "Pending"
    seen = planning.Observed(claim=None, job=created_job(seconds_ago=20), gpu_memory_mib=None)
    assert planning.recheck_after(seen, now=NOW, start_seconds=60) == 40

    reason, message, phase = waiting_condition({}, claim=claim(owned=True), pods=[], seconds_ago=61)
    assert (reason, phase) == ("LoaderNotStarted", "Pending")
    assert (
        f"Loader Job {LOADER_JOB} has created no pod yet; `kubectl describe job {LOADER_JOB} -n team`"
        in message
    )
    late = planning.Observed(claim=None, job=created_job(seconds_ago=61), gpu_memory_mib=None)
    assert planning.recheck_after(late, now=NOW, start_seconds=60) is None


# -- LoRA adapters: downloaded into their base Model's volume ----------------------------------------


def adapter(**spec: Any) -> dict[str, Any]:
    found = body(source="hf://acme/qwen-sql", type="LoRA", baseModelRef={"name": "qwen"}, **spec)
    found["metadata"]["name"] = "qwen-sql"
    return found


def test_an_adapter_waits_for_its_base_model_and_says_so() -> None:
    missing = planning.plan(adapter(), settings=SETTINGS, observed=observed())
    assert missing.objects == [] and missing.waiting_for is not None
    assert "qwen does not exist" in missing.waiting_for and "baseModelRef" in missing.waiting_for
    base = body(status={"claimName": "qwen-model", "conditions": [condition("Ready", "False")]})
    downloading = planning.Observed(claim=None, job=None, gpu_memory_mib=None, base=base)
    plan = planning.plan(adapter(), settings=SETTINGS, observed=downloading)
    assert plan.objects == [] and "Waiting for base Model qwen" in str(plan.waiting_for)
    status = planning.compute_status(adapter(), plan=plan, observed=downloading, now=NOW)
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.reason, status.phase) == ("BaseModelNotReady", "Pending")


def test_an_adapter_is_downloaded_into_its_base_models_volume_and_owns_none() -> None:
    base = downloaded()
    base["status"]["claimName"] = "qwen-model"
    ready = planning.Observed(claim=None, job=None, gpu_memory_mib=None, base=base)
    plan = planning.plan(adapter(), settings=SETTINGS, observed=ready)
    children = by_kind(plan)
    assert "PersistentVolumeClaim" not in children
    pod = children["Job"]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == base["status"]["claimName"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--dest") + 1] == "/models/adapters/qwen-sql"
    assert (plan.claim_name, plan.path) == (base["status"]["claimName"], "adapters/qwen-sql")


def condition(type_: str, status: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": "R",
        "message": "",
        "lastTransitionTime": NOW.isoformat(),
    }
