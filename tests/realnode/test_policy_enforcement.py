"""NetworkPolicy enforced on the real node (kube-network-policies; see aima_testenv.system_pods):
an engine pod answers the gateway but not a pod its InferenceService's policy leaves out, in another
namespace or in the platform's own without the platform's labels. With the policy deleted (the
operator scaled to zero, so it cannot put it back) the same pod connects; once the operator runs
again, the policy is back and blocks it again."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from suite import SERVICE, SERVING_NAMESPACE

from aima_testenv import ControlPlane
from aima_testenv.chart import Release
from aima_testenv.realnode import NODE_LABEL
from reads import condition, get_json, pods_of
from waiting import eventually

pytestmark = pytest.mark.realnode

PROBE_NAMESPACE = "netpol-probe"
ENGINE_PORT = 8000  # the fake engine's port (conftest.engine)
CONNECT_SECONDS = 3
_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("connected")
except OSError as error:
    print(type(error).__name__)
"""


def probe_pod(namespace: str, image: str) -> dict[str, Any]:
    """A pod that only waits, Restricted and without any of the platform's labels; the test execs
    its Python to open a connection."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": namespace, "labels": {"app": "netpol-probe"}},
        "spec": {
            "nodeSelector": {NODE_LABEL: "true"},
            "terminationGracePeriodSeconds": 0,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", "import time; time.sleep(3600)"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def probes(real_cluster: ControlPlane, platform: Release, aima_image: str) -> Iterator[list[str]]:
    """Two probe pods, Ready: in a namespace of their own and in the platform's; yields namespaces."""
    namespaces = [PROBE_NAMESPACE, platform.namespace]
    real_cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PROBE_NAMESPACE}}])
    real_cluster.apply([probe_pod(namespace, aima_image) for namespace in namespaces])
    for namespace in namespaces:
        real_cluster.kubectl("wait", "pod/probe", "-n", namespace, "--for=condition=Ready", "--timeout=60s")
    yield namespaces
    real_cluster.kubectl("delete", "pod", "probe", "-n", platform.namespace, "--wait=false")
    real_cluster.kubectl("delete", "namespace", PROBE_NAMESPACE, "--wait=false")


def attempt(plane: ControlPlane, namespace: str, address: str) -> str:
    """Open a TCP connection from the probe pod in ``namespace``: "connected", or the error's name
    ("TimeoutError" where a policy drops the SYN, "ConnectionRefusedError" where no one listens)."""
    argv = ["python", "-c", _CONNECT, address, str(ENGINE_PORT), str(CONNECT_SECONDS)]
    result = plane.kubectl("exec", "probe", "-n", namespace, "--", *argv, check=False, timeout=30)
    return result.stdout.strip() or result.stderr.strip()


def engine_address(plane: ControlPlane) -> str:
    """The address of one Ready engine pod of the shared service."""
    ready = [
        p
        for p in pods_of(plane, SERVING_NAMESPACE)
        if p["metadata"]["labels"].get("aima.dev/inference-service") == SERVICE
        and not p["metadata"].get("deletionTimestamp")
        and condition(p, "Ready") == "True"
    ]
    assert ready, f"no Ready engine pod of {SERVICE}"
    return str(ready[0]["status"]["podIP"])


def test_an_engine_takes_connections_from_the_gateway_only(
    real_cluster: ControlPlane, served: str, probes: list[str], client: openai.OpenAI
) -> None:
    address = engine_address(real_cluster)
    for namespace in probes:
        # Dropped, not refused: the SYN never reaches the engine.
        assert attempt(real_cluster, namespace, address) == "TimeoutError", namespace
    reply = client.chat.completions.create(
        model=f"{SERVING_NAMESPACE}/{served}", messages=[{"role": "user", "content": "Hello"}]
    )
    assert reply.choices[0].message.content


@contextlib.contextmanager
def operator_stopped(plane: ControlPlane, platform: Release) -> Iterator[None]:
    """The operator scaled to zero (so it cannot recreate what the test deletes), then back to two."""
    deployment = f"deployment/{platform.name('operator')}"
    plane.kubectl("scale", deployment, "-n", platform.namespace, "--replicas=0")
    try:
        eventually(
            lambda: not pods_of(plane, platform.namespace, component="operator"),
            what="no operator pod left",
            timeout=60,
        )
        yield
    finally:
        plane.kubectl("scale", deployment, "-n", platform.namespace, "--replicas=2")
        plane.kubectl(
            "rollout", "status", deployment, "-n", platform.namespace, "--timeout=120s", timeout=150
        )


def test_the_policy_is_what_blocks_and_the_operator_restores_it(
    real_cluster: ControlPlane, platform: Release, served: str, probes: list[str]
) -> None:
    address = engine_address(real_cluster)
    with operator_stopped(real_cluster, platform):
        real_cluster.kubectl("delete", "networkpolicy", served, "-n", SERVING_NAMESPACE)
        eventually(
            lambda: attempt(real_cluster, PROBE_NAMESPACE, address) == "connected",
            what="the probe to connect to the engine once its NetworkPolicy is deleted",
            timeout=20,
        )
    policy = eventually(
        lambda: get_json(real_cluster, "networkpolicy", served, "-n", SERVING_NAMESPACE, check=False),
        what="the operator to give the service its NetworkPolicy again",
        timeout=60,
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    eventually(
        lambda: attempt(real_cluster, PROBE_NAMESPACE, address) == "TimeoutError",
        what="the recreated NetworkPolicy to block the probe again",
        timeout=20,
    )
