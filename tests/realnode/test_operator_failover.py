"""The operator's leader killed outright (`kubectl delete --force`, as a node loss does) while 20
InferenceServices are being reconciled: another replica takes the Lease and converges every
service, with exactly one Deployment and one Service each and no child left without its owner."""

from __future__ import annotations

import json
from typing import Any

import pytest
from suite import SERVING_NAMESPACE

from aima_testenv import ControlPlane
from aima_testenv.chart import Release
from reads import condition, get_json, pods_of
from waiting import eventually

pytestmark = pytest.mark.realnode

COUNT = 20
LABEL = "aima.dev/inference-service"


def services(count: int) -> list[dict[str, Any]]:
    # replicas 0: every child is made (Deployment, Service) but no pod has to start on 2 cores.
    return [
        {
            "apiVersion": "aima.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {
                "name": f"burst-{i:02d}",
                "namespace": SERVING_NAMESPACE,
                "labels": {"burst": "yes"},
            },
            "spec": {
                "modelRef": {"name": "tiny"},
                "engineRef": {"name": "fake-openai"},
                "replicas": 0,
                "resources": {"gpus": 0},
            },
        }
        for i in range(count)
    ]


def children(plane: ControlPlane, kind: str) -> list[dict[str, Any]]:
    listing = json.loads(
        plane.kubectl("get", kind, "-n", SERVING_NAMESPACE, f"--selector={LABEL}", "-o", "json").stdout
    )
    return [item for item in listing["items"] if item["metadata"]["labels"][LABEL].startswith("burst-")]


def holder(plane: ControlPlane, release: Release) -> str:
    lease = get_json(plane, "lease", release.name("operator"), "-n", release.namespace)
    return str(lease["spec"].get("holderIdentity") or "")


def test_a_new_leader_converges_twenty_services_without_duplicates(
    real_cluster: ControlPlane, platform: Release, served: str
) -> None:
    leader = eventually(lambda: holder(real_cluster, platform), what="an operator to hold the Lease")
    real_cluster.apply(services(COUNT))
    real_cluster.kubectl(
        "delete", "pod", leader, "-n", platform.namespace, "--force", "--grace-period=0", "--wait=false"
    )
    new_leader = eventually(
        lambda: (name := holder(real_cluster, platform)) != leader and name,
        what="another operator replica to take the Lease",
        timeout=120,
    )
    assert new_leader in {p["metadata"]["name"] for p in pods_of(real_cluster, platform.namespace)}

    def converged() -> bool:
        names = [f"burst-{i:02d}" for i in range(COUNT)]
        for kind in ("deployments", "services"):
            owners = sorted(c["metadata"]["labels"][LABEL] for c in children(real_cluster, kind))
            if owners != names:  # one each: a duplicate or a missing child both differ
                return False
        ready = [
            get_json(real_cluster, "isvc", name, "-n", SERVING_NAMESPACE).get("status", {}) for name in names
        ]
        return all(s.get("observedGeneration") == 1 for s in ready)

    eventually(converged, what="all 20 services to have exactly one Deployment and Service", timeout=180)
    for kind in ("deployments", "services"):
        for child in children(real_cluster, kind):
            (owner,) = child["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["name"]) == ("InferenceService", child["metadata"]["labels"][LABEL])

    real_cluster.kubectl("delete", "isvc", "-n", SERVING_NAMESPACE, "--selector=burst=yes", "--wait=true")
    eventually(
        lambda: not children(real_cluster, "deployments") and not children(real_cluster, "services"),
        what="the children of the deleted services to be collected",
        timeout=60,
    )
    # The replicas are back to two, both Ready, one leading.
    eventually(
        lambda: (
            sum(
                condition(p, "Ready") == "True"
                for p in pods_of(real_cluster, platform.namespace, component="operator")
            )
            == 2
        ),
        what="two Ready operator replicas again",
        timeout=120,
    )
