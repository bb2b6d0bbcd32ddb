"""Two operator replicas: only the Lease holder runs controllers; the other takes over when it goes."""

from __future__ import annotations

import json
import time

import pytest

from aima.settings import Settings
from aima.testenv import ControlPlane
from aima.testenv.operator import OperatorThread

pytestmark = pytest.mark.integration


def replica(plane: ControlPlane, namespace: str, identity: str) -> OperatorThread:
    settings = Settings(
        kubeconfig=plane.kubeconfig,
        namespaces=(namespace,),
        leader_election=True,
        lease_namespace=namespace,
        identity=identity,
        lease_duration_seconds=4,
        lease_renew_seconds=0.5,
    )
    return OperatorThread(settings, wait_ready=False)


def holder(plane: ControlPlane, namespace: str) -> str | None:
    lease = json.loads(plane.kubectl("get", "lease", "aima-operator", "-n", namespace, "-o", "json").stdout)
    found = lease["spec"].get("holderIdentity")
    return str(found) if found else None


def test_only_the_lease_holder_acts_and_the_other_takes_over(aima_crds: ControlPlane, namespace: str) -> None:
    with replica(aima_crds, namespace, "replica-a") as first:
        first.wait_until_ready(60)
        with replica(aima_crds, namespace, "replica-b") as second:
            time.sleep(3)  # several renewal periods: the follower must still be waiting
            assert holder(aima_crds, namespace) == "replica-a"
            assert not second.ready
            first.stop()  # releases the Lease on the way out
            second.wait_until_ready(30)
            assert holder(aima_crds, namespace) == "replica-b"
