"""Two operator replicas: only the Lease holder runs controllers; the other takes over when it goes."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from aima.settings import Settings
from aima_testenv import ControlPlane
from aima_testenv.operator import OperatorThread
from aima_testenv.processes import free_port

pytestmark = pytest.mark.integration


def replica(plane: ControlPlane, namespace: str, identity: str, *, health_port: int = 0) -> OperatorThread:
    settings = Settings(
        operator_health_port=health_port,
        operator_health_host="127.0.0.1",
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


def role(port: int) -> str:
    """What a replica's /healthz says it is (200 in either role: a standby is healthy)."""
    answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert answer.status_code == 200
    return str(answer.json()["role"])


def test_only_the_lease_holder_acts_and_the_other_takes_over(aima_crds: ControlPlane, namespace: str) -> None:
    port_a, port_b = free_port(), free_port()
    with replica(aima_crds, namespace, "replica-a", health_port=port_a) as first:
        first.wait_until_ready(60)
        with replica(aima_crds, namespace, "replica-b", health_port=port_b) as second:
            time.sleep(3)  # several renewal periods: the follower must still be waiting
            assert holder(aima_crds, namespace) == "replica-a"
            assert not second.ready
            assert (role(port_a), role(port_b)) == ("leader", "standby")
            assert "aima_operator_reconcile" in httpx.get(f"http://127.0.0.1:{port_a}/metrics").text
            first.stop()  # releases the Lease on the way out
            second.wait_until_ready(30)
            assert holder(aima_crds, namespace) == "replica-b"
            assert role(port_b) == "leader"
