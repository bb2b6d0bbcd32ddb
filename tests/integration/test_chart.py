"""The Helm chart on a control plane of its own: lint, every rendered object accepted by the API
server, `helm install` to running pods under the Restricted Pod Security Standard, and the operator
acting with the chart's own ServiceAccount: it does its whole job, and is refused anything more."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aima.api import crds as crd_models
from aima.domain import inference_service
from aima.domain.objects import managed_labels
from aima.settings import Settings
from aima_testenv import ControlPlane
from aima_testenv.gateway import LocalGateway
from aima_testenv.operator import OperatorThread
from label_selectors import selects
from waiting import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "aima"
VALUE_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE, NAMESPACE = "aima", "aima-system"
OPERATOR_ACCOUNT = "aima-operator"


def helm(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(plane.binaries.path("helm")), f"--kubeconfig={plane.kubeconfig}", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)


def rendered(plane: ControlPlane, *args: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    result = helm(plane, "template", RELEASE, str(CHART), "--namespace", namespace, *args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def get(plane: ControlPlane, *args: str) -> dict[str, Any] | None:
    result = plane.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def condition(body: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    found = (body or {}).get("status", {}).get("conditions", [])
    return next((c for c in found if c["type"] == type_), {})


@pytest.fixture(scope="module")
def installed(own_control_plane: ControlPlane) -> ControlPlane:
    """The chart installed with its defaults into a namespace that enforces Restricted pods."""
    plane = own_control_plane
    plane.kubectl("create", "namespace", NAMESPACE)
    plane.kubectl("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    result = helm(plane, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--wait", "--timeout=3m")
    assert result.returncode == 0, result.stderr
    eventually(
        lambda: plane.kubectl("get", "aima", "-A", check=False).returncode == 0, what="AIMA kinds served"
    )
    return plane


class Refusals(logging.Handler):
    """Every log record, from any thread, that reports a request the API server refused (403)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "403" in text or "forbidden" in text.lower():
            self.messages.append(text)


@pytest.fixture(scope="module")
def refusals() -> Iterator[Refusals]:
    handler = Refusals()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


@pytest.fixture(scope="module")
def chart_operator(installed: ControlPlane, refusals: Refusals) -> Iterator[OperatorThread]:
    """The real operator in this process, authenticated only by the chart's ServiceAccount token,
    with the chart's settings (leader Lease in the release namespace, catalog installed at start);
    ``refusals`` collects anything the API server refused it, also the lists and watches that its
    watch engine retries."""
    settings = Settings(
        kubeconfig=installed.service_account_kubeconfig(namespace=NAMESPACE, name=OPERATOR_ACCOUNT),
        catalog_dir=ROOT / "catalog",
        leader_election=True,
        lease_namespace=NAMESPACE,
        lease_name=OPERATOR_ACCOUNT,
        identity="chart-test",
        retry_seconds=0.5,
        resync_seconds=30,
    )
    with OperatorThread(settings) as running:
        yield running


@pytest.mark.parametrize("values", VALUE_FILES, ids=lambda p: p.name)
def test_the_chart_lints_clean(own_control_plane: ControlPlane, values: Path) -> None:
    result = helm(own_control_plane, "lint", "--strict", str(CHART), "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_values_are_checked_against_the_schema(own_control_plane: ControlPlane) -> None:
    typo = helm(own_control_plane, "template", RELEASE, str(CHART), "--set", "operator.replica=2")
    assert typo.returncode != 0
    assert "replica" in typo.stderr
    # Two acting replicas would fight: more than one needs leader election.
    racing = helm(
        own_control_plane,
        "template",
        RELEASE,
        str(CHART),
        "--set",
        "operator.leaderElection=false",
        "--set",
        "operator.replicas=2",
    )
    assert racing.returncode != 0
    assert "maximum" in racing.stderr


@pytest.mark.parametrize("values", VALUE_FILES, ids=lambda p: p.name)
def test_every_rendered_object_passes_the_api_servers_validation(
    own_control_plane: ControlPlane, values: Path
) -> None:
    # A namespace of its own: the install below gets a fresh one.
    objects = rendered(own_control_plane, "-f", str(values), namespace="chart-validation")
    # The monitors' CRDs belong to the Prometheus Operator, absent here: checked by shape below.
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    pod_monitors = [o for o in objects if o["kind"] == "PodMonitor"]
    checked = [o for o in objects if o["kind"] not in ("ServiceMonitor", "PodMonitor")]
    namespaces = {o["metadata"].get("namespace") for o in checked} - {None}
    for namespace in namespaces:
        own_control_plane.kubectl("create", "namespace", namespace, check=False)
    result = own_control_plane.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "--field-manager=chart-validation",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(checked),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("serverside-applied (server dry run)") == len(checked)
    service = next(
        (o for o in objects if o["metadata"]["name"] == "aima-gateway" and o["kind"] == "Service"), None
    )
    for monitor in monitors:
        assert service is not None
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    engines = [m for m in pod_monitors if m["spec"].get("namespaceSelector") == {"any": True}]
    for monitor in engines:  # the engine pods the operator runs in any namespace, by their port
        engine_labels = managed_labels(component=inference_service.COMPONENT, extra={})
        assert monitor["spec"]["selector"]["matchLabels"] == engine_labels
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    for monitor in pod_monitors:  # each of the others selects the pods of one chart workload
        if monitor in engines:
            continue
        workloads = [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]
        selected = [
            w
            for w in workloads
            if monitor["spec"]["selector"]["matchLabels"].items()
            <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, monitor["metadata"]["name"]
        pod = selected[0]["spec"]["template"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports


def test_pods_meet_the_restricted_pod_security_standard_by_default(own_control_plane: ControlPlane) -> None:
    objects = rendered(own_control_plane, "-f", str(CHART / "ci" / "everything-values.yaml"))
    workloads = [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]
    names = {o["metadata"]["name"] for o in workloads}
    assert names == {"aima-operator", "aima-gateway", "aima-mcp", "aima-device-agent"}
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]


def pod_labels(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The pod template labels of each rendered workload, by workload name."""
    workloads = [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]
    return {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads}


def operator_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The operator container's plain-valued variables."""
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "aima-operator"
    )
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e["value"] for e in env if "value" in e}


def test_the_chart_guards_its_own_pods_with_network_policies(own_control_plane: ControlPlane) -> None:
    objects = rendered(own_control_plane, "-f", str(CHART / "ci" / "everything-values.yaml"))
    policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}
    assert set(policies) == {"aima-operator", "aima-gateway"}
    workloads = {w["metadata"]["name"]: w for w in objects if w["kind"] in ("Deployment", "DaemonSet")}
    for name, policy in policies.items():
        # Each selects the pods of its own workload, and none of the others'.
        guarded = [
            w for w, labels in pod_labels(objects).items() if selects(policy["spec"]["podSelector"], labels)
        ]
        assert guarded == [name]
        assert policy["spec"]["policyTypes"] == ["Ingress"]  # they call out freely
        # From anywhere, but only to the ports the pod serves on (health and metrics, or the API).
        [rule] = policy["spec"]["ingress"]
        assert "from" not in rule
        served = {p["name"] for p in workloads[name]["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert {p["port"] for p in rule["ports"]} == served


def test_the_operator_admits_exactly_the_releases_gateway_and_operator_pods_to_engines(
    own_control_plane: ControlPlane,
) -> None:
    objects = rendered(own_control_plane, "-f", str(CHART / "ci" / "everything-values.yaml"))
    env = operator_env(objects)
    assert env["AIMA_ENGINE_NETWORK_POLICY"] == "true"
    settings = Settings.from_env(env)  # as the operator reads them: a shape it refuses fails here
    admitted = settings.platform_pod_selector.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    labels = pod_labels(objects)
    assert {w for w, pod in labels.items() if selects(admitted, pod)} == {"aima-operator", "aima-gateway"}
    assert set(labels) >= {"aima-mcp", "aima-device-agent"}  # rendered, and not admitted
    # This release's pods only: another release's gateway in the same namespace is not admitted.
    other = helm(own_control_plane, "template", "other", str(CHART), "--namespace", NAMESPACE)
    assert other.returncode == 0, other.stderr
    other_pods = pod_labels([d for d in yaml.safe_load_all(other.stdout) if d])
    assert set(other_pods) >= {"other-aima-operator", "other-aima-gateway"}
    assert not any(selects(admitted, pod) for pod in other_pods.values())
    extra = [
        p.model_dump(mode="json", by_alias=True, exclude_defaults=True) for p in settings.engine_ingress_from
    ]
    values = yaml.safe_load((CHART / "ci" / "everything-values.yaml").read_text())
    assert extra == values["networkPolicy"]["engineIngressFrom"]


def test_network_policies_off_renders_none_and_tells_the_operator(own_control_plane: ControlPlane) -> None:
    objects = rendered(own_control_plane, "--set", "networkPolicy.enabled=false")
    assert [o for o in objects if o["kind"] == "NetworkPolicy"] == []
    assert Settings.from_env(operator_env(objects)).engine_network_policy is False


def test_the_operator_role_covers_every_aima_kind_and_never_their_spec(
    own_control_plane: ControlPlane,
) -> None:
    objects = rendered(own_control_plane)
    role = next(o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "aima-operator")
    aima_rules = [r for r in role["rules"] if r["apiGroups"] == ["aima.dev"]]
    granted = {(resource, verb) for r in aima_rules for resource in r["resources"] for verb in r["verbs"]}
    for definition in crd_models.crds():
        plural = definition["spec"]["names"]["plural"]
        assert (plural, "watch") in granted, f"the operator cannot watch {plural}"
        # Status only: GitOps owns spec. Engines are the exception: the catalog's are applied at start.
        if plural != "engines":
            assert not {(plural, v) for v in ("patch", "update", "create", "delete")} & granted


def test_helm_install_runs_the_operator_and_the_gateway(installed: ControlPlane) -> None:
    for name in ("aima-operator", "aima-gateway"):
        deployment = get(installed, "deployment", name, "-n", NAMESPACE)
        assert deployment is not None
        assert deployment["status"].get("readyReplicas") == 1, f"{name} pods were not admitted or not Ready"
    for definition in crd_models.crds():
        crd = get(installed, "crd", definition["metadata"]["name"])
        assert crd is not None
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert condition(crd, "Established").get("status") == "True"
    notes = helm(installed, "get", "notes", RELEASE, "--namespace", NAMESPACE)
    assert "port-forward svc/aima-gateway 8080:80" in notes.stdout


def test_the_operator_does_its_whole_job_with_the_charts_service_account(
    installed: ControlPlane, chart_operator: OperatorThread, refusals: Refusals
) -> None:
    plane, namespace = installed, "team-chart"
    plane.kubectl("create", "namespace", namespace)
    lease = get(plane, "lease", OPERATOR_ACCOUNT, "-n", NAMESPACE)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "chart-test"
    engines = eventually(lambda: get(plane, "engines", "-l", "aima.dev/catalog=true"), what="catalog Engines")
    assert {"vllm", "llama-cpp"} <= {e["metadata"]["name"] for e in engines["items"]}

    plane.apply([_model(namespace), _service(namespace)])
    job_name = eventually(
        lambda: (get(plane, "model", "tiny", "-n", namespace) or {}).get("status", {}).get("loaderJob"),
        what="the Model's loader Job in its status",
    )
    for kind, name in (
        ("job", job_name),
        ("pvc", "tiny-model"),
        ("sa", "aima-loader"),
        ("rolebinding", "aima-loader"),
    ):
        assert eventually(lambda k=kind, n=name: get(plane, k, n, "-n", namespace), what=f"{kind} {name}")
    eventually(
        lambda: (
            condition(get(plane, "isvc", "chat", "-n", namespace), "Ready").get("reason") == "ModelNotReady"
        ),
        what="the InferenceService waiting for its Model",
    )

    # The loader reports completion with its own identity: the ServiceAccount and RoleBinding the
    # operator made, bound to the chart's aima-loader ClusterRole (kwok runs no loader).
    loader = plane.service_account_kubeconfig(namespace=namespace, name="aima-loader")
    report = {"status": {"progress": {"phase": "Ready", "percent": 100}, "conditions": [_downloaded()]}}
    patch = ("patch", "model", "tiny", "-n", namespace, "--subresource=status", "--type=merge")
    plane.kubectl(*patch, "-p", json.dumps(report), f"--kubeconfig={loader}")
    # That identity may report, and nothing more: not even the spec of its own Model.
    spec = ("patch", "model", "tiny", "-n", namespace, "--type=merge", "-p", '{"spec":{"type":"VLM"}}')
    refused = plane.kubectl(*spec, "--dry-run=server", f"--kubeconfig={loader}", check=False)
    assert "Forbidden" in refused.stderr, refused.stderr

    service = eventually(
        lambda: (
            (s := get(plane, "isvc", "chat", "-n", namespace))
            and condition(s, "Ready").get("status") == "True"
            and s
        ),
        what="the InferenceService Ready",
        timeout=90,
    )
    assert service["status"]["observedGeneration"] == service["metadata"]["generation"]
    assert get(plane, "deployment", "chat", "-n", namespace) is not None
    assert get(plane, "service", "chat", "-n", namespace) is not None
    assert get(plane, "networkpolicy", "chat", "-n", namespace) is not None
    events = get(plane, "events", "-n", namespace, "--field-selector=involvedObject.name=chat")
    assert events is not None
    assert any(e["reason"] == "Ready" for e in events["items"])
    assert refusals.messages == []


@pytest.mark.parametrize(
    "attempt",
    [
        pytest.param(("delete", "node", "cpu-node-0"), id="delete-a-node"),
        pytest.param(("get", "secrets", "-A"), id="list-secrets"),
        pytest.param(
            ("create", "clusterrolebinding", "x", "--clusterrole=cluster-admin", "--serviceaccount=x:y"),
            id="bind-cluster-admin",
        ),
        pytest.param(("create", "namespace", "not-mine"), id="create-a-namespace"),
        pytest.param(("delete", "deployment", "aima-gateway", "-n", NAMESPACE), id="delete-a-deployment"),
        pytest.param(("scale", "isvc", "probe", "-n", "default", "--replicas=3"), id="scale-a-service"),
    ],
)
def test_the_charts_operator_identity_is_refused_anything_more(
    installed: ControlPlane, attempt: tuple[str, ...]
) -> None:
    installed.apply([_service("default") | {"metadata": {"name": "probe", "namespace": "default"}}])
    account = installed.service_account_kubeconfig(namespace=NAMESPACE, name=OPERATOR_ACCOUNT)
    # A server-side dry run is authorized like the real request, and changes nothing if it were not.
    dry_run = ["--dry-run=server"] if attempt[0] in ("delete", "create", "scale") else []
    result = installed.kubectl(*attempt, *dry_run, f"--kubeconfig={account}", check=False)
    assert result.returncode != 0
    assert "Forbidden" in result.stderr or "forbidden" in result.stderr, result.stderr


def test_the_operator_cannot_write_the_spec_of_what_git_owns(installed: ControlPlane) -> None:
    account = installed.service_account_kubeconfig(namespace=NAMESPACE, name=OPERATOR_ACCOUNT)
    for kind in ("inferenceservices", "models", "pipelines", "pipelineruns"):
        allowed = installed.kubectl(
            "auth", "can-i", "patch", f"{kind}.aima.dev", f"--kubeconfig={account}", check=False
        )
        assert allowed.stdout.strip() == "no", kind
        status = installed.kubectl(
            "auth",
            "can-i",
            "patch",
            f"{kind}.aima.dev",
            "--subresource=status",
            f"--kubeconfig={account}",
            check=False,
        )
        assert status.stdout.strip() == "yes", kind


def _model(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "tiny", "namespace": namespace},
        "spec": {"source": "hf://acme/tiny-llm@main", "type": "LLM", "cache": {"size": "1Gi"}},
    }


def _service(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "chat", "namespace": namespace},
        "spec": {"modelRef": {"name": "tiny"}, "resources": {"gpus": 1}},
    }


def _downloaded() -> dict[str, Any]:
    return {
        "type": "Downloaded",
        "status": "True",
        "reason": "Ready",
        "message": "Files downloaded and verified",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def test_the_kind_sample_is_valid_for_the_installed_crds(installed: ControlPlane) -> None:
    sample = ROOT / "hack" / "kind-sample.yaml"
    result = installed.kubectl("apply", "--dry-run=server", "-n", "default", "-f", str(sample), check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == 2
    assert subprocess.run(["bash", "-n", str(ROOT / "hack" / "kind-up")], check=False).returncode == 0


def test_serving_some_namespaces_confines_the_operators_secrets_to_them(installed: ControlPlane) -> None:
    # Last in this module: the upgrade narrows what the operator of the tests above may do.
    installed.kubectl("create", "namespace", "team-served")
    narrowed = ("--namespace", NAMESPACE, "--wait", "--set", "operator.watchNamespaces={team-served}")
    result = helm(installed, "upgrade", RELEASE, str(CHART), *narrowed)
    assert result.returncode == 0, result.stderr
    account = installed.service_account_kubeconfig(namespace=NAMESPACE, name=OPERATOR_ACCOUNT)

    def can(*request: str) -> str:
        return installed.kubectl(
            "auth", "can-i", *request, f"--kubeconfig={account}", check=False
        ).stdout.strip()

    assert can("get", "secrets", "-n", "team-served") == "yes"
    assert can("get", "secrets", "-n", "kube-system") == "no"
    assert can("list", "secrets", "-n", "team-served") == "no"
    refused = installed.kubectl(
        "get", "secret", "any", "-n", "kube-system", f"--kubeconfig={account}", check=False
    )
    assert "Forbidden" in refused.stderr


def test_the_charts_gateway_trusts_the_operators_token_and_serves_the_units_it_may(
    installed: ControlPlane,
) -> None:
    """The gateway with the chart's own ServiceAccount: it reviews the operator's token (audience
    aima-gateway, as the chart projects it) and its units door may read what the units read."""
    key = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "dashboard", "namespace": NAMESPACE, "labels": {"aima.dev/api-key": "true"}},
        "stringData": {"key": "sk-chart-dashboard", "units": "read"},
    }
    installed.apply([key])
    settings = Settings(
        kubeconfig=installed.service_account_kubeconfig(namespace=NAMESPACE, name=f"{RELEASE}-gateway"),
        gateway_namespace=NAMESPACE,
        gateway_trusted_service_accounts=(f"{NAMESPACE}/{OPERATOR_ACCOUNT}",),
    )
    operator_token = installed.kubectl(
        "create", "token", OPERATOR_ACCOUNT, "-n", NAMESPACE, "--audience=aima-gateway"
    ).stdout.strip()
    with LocalGateway(settings, port=0) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as client:
        models = client.get("/v1/models", headers={"Authorization": f"Bearer {operator_token}"})
        assert models.status_code == 200, models.text
        dashboard = {"Authorization": "Bearer sk-chart-dashboard"}
        eventually(
            lambda: client.get("/api/v2/units", headers=dashboard).status_code == 200, what="the key Secret"
        )
        for unit in ("resource.budget", "resource.status", "service.list"):
            reply = client.post(f"/api/v2/query/{unit}", json={}, headers=dashboard)
            assert reply.status_code == 200, (unit, reply.text)
