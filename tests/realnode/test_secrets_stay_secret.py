"""What runs in the cluster keeps its secrets and its privileges down: after the suite's traffic (and
a request with a wrong key), no API key appears in any platform pod's log, any Event or any AIMA
object; every platform container runs non-root with a read-only root filesystem, no privilege
escalation and no capabilities, in a namespace that enforces the Restricted standard."""

from __future__ import annotations

import secrets

import httpx
import openai
import pytest
from suite import PLATFORM_NAMESPACE, SERVICE, SERVING_NAMESPACE

from aima.api.crds import crds
from aima_testenv import ControlPlane
from aima_testenv.chart import RESTRICTED, Release
from reads import get_json, restrictions_missing

pytestmark = pytest.mark.realnode


def everything_said(plane: ControlPlane) -> str:
    """Every platform container's log, every Event, and every AIMA object, as text."""
    said = []
    for pod in get_json(plane, "pods", "", "-n", PLATFORM_NAMESPACE)["items"]:
        for container in pod["spec"]["containers"]:
            said.append(
                plane.kubectl(
                    "logs", pod["metadata"]["name"], "-c", container["name"], "-n", PLATFORM_NAMESPACE
                ).stdout
            )
    said.append(plane.kubectl("get", "events", "--all-namespaces", "-o", "json").stdout)
    kinds = ",".join(f"{d['spec']['names']['plural']}.{d['spec']['group']}" for d in crds())
    said.append(plane.kubectl("get", kinds, "--all-namespaces", "-o", "json").stdout)
    return "\n".join(said)


def test_no_api_key_in_logs_events_or_objects(
    real_cluster: ControlPlane,
    platform: Release,
    gateway_url: str,
    keys: dict[str, str],
    client: openai.OpenAI,
    served: str,
) -> None:
    wrong = f"sk-{secrets.token_hex(16)}"
    refused = httpx.post(
        f"{gateway_url}/chat/completions",
        headers={"Authorization": f"Bearer {wrong}"},
        json={"model": f"{SERVING_NAMESPACE}/{SERVICE}", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=30,
    )
    assert refused.status_code == 401
    reply = client.chat.completions.create(
        model=f"{SERVING_NAMESPACE}/{SERVICE}", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    assert reply.choices
    said = everything_said(real_cluster)
    assert "InferenceService" in said and '"reason"' in said  # objects and Events were read at all
    for name, key in (*keys.items(), ("wrong", wrong)):
        assert key not in said, f"the {name} key appears in a log, an Event or an object"


def test_platform_containers_run_restricted(real_cluster: ControlPlane, platform: Release) -> None:
    namespace = get_json(real_cluster, "namespace", PLATFORM_NAMESPACE)
    assert RESTRICTED.items() <= namespace["metadata"]["labels"].items()
    pods = get_json(real_cluster, "pods", "", "-n", PLATFORM_NAMESPACE)["items"]
    assert {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in pods} >= {
        "operator",
        "gateway",
    }
    for pod in pods:
        assert pod["status"]["phase"] == "Running", pod["metadata"]["name"]
    assert [line for pod in pods for line in restrictions_missing(pod)] == []
