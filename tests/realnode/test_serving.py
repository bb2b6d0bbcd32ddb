"""An InferenceService served from a real pod on the real node, reached as a user reaches it: the
openai Python SDK against the chart's gateway Service with an API key from a Secret; its log
followed with `aima service logs -f`; its start timed against a plain Deployment of the same pod.

The engine is the project's fake OpenAI engine (aima_testenv/engines.py, run as a script in the
fake-engine image: the project's image and that one file); what is under test is everything around
it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import openai
import pytest
from suite import SERVICE, SERVING_NAMESPACE

from aima_testenv import ControlPlane
from aima_testenv.chart import Release
from aima_testenv.realnode import NODE_NAME
from label_selectors import deployment_pods, selected
from reads import condition, get_json

pytestmark = pytest.mark.realnode

MODEL_ID = f"{SERVING_NAMESPACE}/{SERVICE}"


def test_the_engine_pod_runs_on_the_real_node(real_cluster: ControlPlane, served: str) -> None:
    pods = get_json(
        real_cluster, "pods", "", "-n", SERVING_NAMESPACE, f"--selector=aima.dev/inference-service={served}"
    )
    (pod,) = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert condition(pod, "Ready") == "True"
    mount = next(
        m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["mountPath"].startswith("/models")
    )
    assert mount["readOnly"] is True


def test_the_engine_policy_selects_its_pods_and_admits_only_the_gateway_and_operator(
    real_cluster: ControlPlane, platform: Release, served: str
) -> None:
    """The selectors of the service's NetworkPolicy, matched by the API server against the real pods.
    The node's bridge CNI enforces no NetworkPolicy, so this proves whom the policy names; blocking
    everyone else is what an enforcing CNI (Calico, Cilium) does with it."""
    policy = get_json(real_cluster, "networkpolicy", served, "-n", SERVING_NAMESPACE)
    engine_pods = {p["metadata"]["name"] for p in deployment_pods(real_cluster, SERVING_NAMESPACE, served)}
    guarded = selected(real_cluster, "pods", policy["spec"]["podSelector"], namespace=SERVING_NAMESPACE)
    assert engine_pods
    assert {p["metadata"]["name"] for p in guarded} == engine_pods
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    [peer] = rule["from"]  # the chart's default adds no other peers
    namespaces = selected(real_cluster, "namespaces", peer["namespaceSelector"])
    assert [n["metadata"]["name"] for n in namespaces] == [platform.namespace]
    admitted = selected(real_cluster, "pods", peer["podSelector"], namespace=platform.namespace)
    components = sorted(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in admitted)
    assert components == ["gateway", "operator", "operator"]
    # Nothing else in the platform's namespace: not the MCP server, not the device agent.
    everyone = get_json(real_cluster, "pods", "", "-n", platform.namespace)["items"]
    admitted_names = {p["metadata"]["name"] for p in admitted}
    left_out = [p for p in everyone if p["metadata"]["name"] not in admitted_names]
    live = [p for p in left_out if not p["metadata"].get("deletionTimestamp")]
    assert sorted(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in live) == [
        "device-agent",
        "mcp",
    ]


def test_chat_through_the_gateway_service_with_the_openai_sdk(client: openai.OpenAI, served: str) -> None:
    reply = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hello"}])
    assert (reply.choices[0].message.content or "").split() == ["tok0", "tok1", "tok2", "tok3", "tok4"]
    assert reply.usage is not None and reply.usage.completion_tokens == 5


def test_a_streamed_chat_arrives_token_by_token(client: openai.OpenAI, served: str) -> None:
    stream = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Hello"}], stream=True
    )
    pieces = [
        chunk.choices[0].delta.content for chunk in stream if chunk.choices and chunk.choices[0].delta.content
    ]
    assert len(pieces) == 5
    assert "".join(pieces).split() == ["tok0", "tok1", "tok2", "tok3", "tok4"]


def test_the_gateway_lists_the_service_as_a_model(client: openai.OpenAI, served: str) -> None:
    assert MODEL_ID in {model.id for model in client.models.list()}


def test_a_wrong_key_is_refused_with_openai_error_json(gateway_url: str, served: str) -> None:
    with (
        openai.OpenAI(base_url=gateway_url, api_key="sk-wrong", max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError) as refused,
    ):
        sdk.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hello"}])
    assert refused.value.status_code == 401
    assert isinstance(refused.value.body, dict) and refused.value.body.get("message")


def test_an_unknown_model_is_a_404_naming_it(client: openai.OpenAI, served: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model="serving/nothing-here", messages=[{"role": "user", "content": "Hi"}]
        )
    assert "nothing-here" in str(missing.value)


def test_service_logs_follow_streams_the_real_pods_log(
    real_cluster: ControlPlane, client: openai.OpenAI, served: str
) -> None:
    """`aima service logs -f` keeps printing what the engine writes after it started following."""
    env = {**os.environ, "KUBECONFIG": str(real_cluster.kubeconfig)}
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aima.cli.main",
            "service",
            "logs",
            served,
            "-n",
            SERVING_NAMESPACE,
            "-f",
            "--tail=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        time.sleep(2)  # the stream is open before the request it must show
        client.completions.create(model=MODEL_ID, prompt="follow me")
        assert follower.stdout is not None
        deadline = time.monotonic() + 30
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = follower.stdout.readline()
            seen.append(line)
            if "/v1/completions" in line:
                break
        assert any("/v1/completions" in line for line in seen), seen
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        if follower.stdout is not None:
            follower.stdout.close()
