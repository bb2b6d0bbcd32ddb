"""The NetworkPolicy the operator gives each InferenceService, on the local control plane. The API
server accepts it, and it is owned by its service (and collected with it). It selects exactly the
service's engine pods and admits only the platform's pods. It is written back when someone deletes
or edits it, and removed once policies are turned off.

The control plane's nodes enforce no NetworkPolicy, so these tests prove the objects and their
selectors, not the enforcement."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aima.settings import Settings
from aima_testenv import ControlPlane
from aima_testenv.operator import OperatorThread
from declared import get, make_model
from label_selectors import deployment_pods, selected
from waiting import eventually

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def serving(aima_crds: ControlPlane, operator: OperatorThread) -> ControlPlane:
    """The control plane with the session's operator, with its default settings: policies on."""
    return aima_crds


def make_service(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    """An InferenceService of one GPU replica, once Ready."""
    body = {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"modelRef": {"name": "tiny"}, "resources": {"gpus": 1}},
    }
    plane.apply([body])

    def ready() -> dict[str, Any] | None:
        found = get(plane, "isvc", name, namespace)
        return found if found and _ready(found) else None

    return eventually(ready, timeout=60, what=f"InferenceService {name} Ready")


def _ready(body: dict[str, Any]) -> bool:
    found = body.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in found)


def names(objects: list[dict[str, Any]]) -> set[str]:
    return {o["metadata"]["name"] for o in objects}


def platform_peer(settings: Settings) -> dict[str, Any]:
    """The peer the operator with ``settings`` admits: its gateway and operator pods."""
    pods = settings.platform_pod_selector.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    namespace = {"matchLabels": {"kubernetes.io/metadata.name": settings.platform_namespace}}
    return {"namespaceSelector": namespace, "podSelector": pods}


def test_each_service_gets_a_policy_it_owns_over_exactly_its_engine_pods(
    serving: ControlPlane, namespace: str
) -> None:
    make_model(serving, namespace, ready=True)
    services = {name: make_service(serving, namespace, name) for name in ("chat", "other")}

    for name, service in services.items():
        policy = get(serving, "networkpolicy", name, namespace)
        assert policy is not None, f"no NetworkPolicy for {name}"
        [owner] = policy["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "InferenceService",
            name,
            service["metadata"]["uid"],
        )
        assert owner["controller"] is True
        deployment = get(serving, "deployment", name, namespace)
        assert deployment is not None
        assert policy["spec"]["podSelector"] == deployment["spec"]["selector"]
        # Its pods and no other: not the pods of the other service in the same namespace.
        engine_pods = names(deployment_pods(serving, namespace, name))  # it is Ready: they run
        assert engine_pods
        chosen = selected(serving, "pods", policy["spec"]["podSelector"], namespace=namespace)
        assert names(chosen) == engine_pods
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert "egress" not in policy["spec"]  # loaders and engines may reach hubs and stores
        assert policy["spec"]["ingress"] == [{"from": [platform_peer(Settings())]}]


# ---- on a control plane of this module's own -------------------------------------------------------
# The session's operator serves every namespace and resyncs every 30 s. These tests need an operator
# of their own: one that only its watches wake, or one with policies off that no other contradicts.


@pytest.fixture(scope="module")
def quiet_plane(own_control_plane: ControlPlane) -> ControlPlane:
    """A control plane of this module's own with the AIMA CRDs served."""
    plane = own_control_plane
    plane.kubectl("apply", "-f", str(ROOT / "manifests" / "rbac" / "loader-clusterrole.yaml"))
    plane.kubectl("apply", "--server-side", "--field-manager=aima-tests", "-f", str(ROOT / "crds"))
    plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "-l", "app.kubernetes.io/part-of=aima", "crd"
    )
    # Established comes before the storage serves (429): the operator's first watches must not meet it.
    kinds = ",".join(sorted(path.name.split(".", 1)[0] for path in (ROOT / "crds").glob("*.aima.dev.yaml")))
    eventually(
        lambda: plane.kubectl("get", kinds, "-A", check=False).returncode == 0,
        what="the AIMA resources to be served",
    )
    return plane


@pytest.fixture
def quiet_namespace(quiet_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of this test's own on the module's control plane."""
    name = request.node.name.removeprefix("test_").replace("_", "-")[:40].strip("-")
    quiet_plane.kubectl("create", "namespace", name)
    yield name
    quiet_plane.kubectl("delete", "namespace", name, "--wait=false")


def own_operator(plane: ControlPlane, namespace: str, **settings: Any) -> Settings:
    """Settings of an operator for ``namespace`` alone, offline, with the catalog's Engines."""
    return Settings(
        kubeconfig=plane.kubeconfig,
        namespaces=(namespace,),
        catalog_dir=ROOT / "catalog",
        retry_seconds=0.5,
        hf_endpoint="http://127.0.0.1:9",
        **settings,
    )


def test_a_deleted_or_edited_policy_is_written_back_at_once_and_goes_with_its_service(
    quiet_plane: ControlPlane, quiet_namespace: str
) -> None:
    plane, namespace = quiet_plane, quiet_namespace
    # No resync within the test: what brings the policy back is the operator's watch on policies.
    with OperatorThread(own_operator(plane, namespace, resync_seconds=3600)):
        make_model(plane, namespace, ready=True)
        make_service(plane, namespace, "chat")
        first = get(plane, "networkpolicy", "chat", namespace)
        assert first is not None

        plane.kubectl("delete", "networkpolicy", "chat", "-n", namespace)

        def made_again() -> dict[str, Any] | None:
            found = get(plane, "networkpolicy", "chat", namespace)
            return found if found and found["metadata"]["uid"] != first["metadata"]["uid"] else None

        again = eventually(made_again, what="the deleted policy to be made again")
        assert again["spec"] == first["spec"]

        # Opened to everyone (an empty rule admits every source): the operator closes it again.
        opened = '{"spec":{"ingress":[{}]}}'
        plane.kubectl("patch", "networkpolicy", "chat", "-n", namespace, "--type=merge", "-p", opened)
        eventually(
            lambda: (get(plane, "networkpolicy", "chat", namespace) or {}).get("spec") == first["spec"],
            what="the edited policy to be written back",
        )

        plane.kubectl("delete", "isvc", "chat", "-n", namespace)
        # The garbage collector finds new kinds (the CRDs) by rediscovery every 30 s: in a control
        # plane started moments ago, it may not follow InferenceServices yet (40 s measured).
        eventually(
            lambda: get(plane, "networkpolicy", "chat", namespace) is None,
            what="the policy to be collected with its service",
            timeout=120,
        )


def test_turning_policies_off_removes_the_operators_own_and_no_other(
    quiet_plane: ControlPlane, quiet_namespace: str
) -> None:
    plane, namespace = quiet_plane, quiet_namespace
    settings = own_operator(plane, namespace)
    with OperatorThread(settings):
        make_model(plane, namespace, ready=True)
        make_service(plane, namespace, "chat")
        ours = get(plane, "networkpolicy", "chat", namespace)
        assert ours is not None
    # Someone else's policy, labelled like the operator's children: the operator must leave it.
    theirs = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "theirs",
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/component": "inference-service",
                "aima.dev/inference-service": "chat",
            },
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    plane.apply([theirs])

    with OperatorThread(settings.model_copy(update={"engine_network_policy": False})):
        eventually(
            lambda: get(plane, "networkpolicy", "chat", namespace) is None,
            what="the operator's policy to be removed",
        )
        # The service is still served: only the policy went.
        assert _ready(get(plane, "isvc", "chat", namespace) or {})
        assert get(plane, "deployment", "chat", namespace) is not None
        assert get(plane, "networkpolicy", "theirs", namespace) is not None

    with OperatorThread(settings):
        eventually(
            lambda: get(plane, "networkpolicy", "chat", namespace),
            what="the policy back once policies are on",
        )
