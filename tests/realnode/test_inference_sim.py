"""Many replicas of a vLLM-API engine on the real node: llm-d's inference simulator (vLLM's routes,
usage and metric names, set latencies, no model), built from the Go module proxy into an image with
no registry, serving the downloaded Model behind the gateway's Service."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import openai
import pytest
from suite import FIGURES, SERVING_NAMESPACE

from aima_testenv import ControlPlane
from aima_testenv.chart import Release
from reads import get_json, ready_seconds

pytestmark = pytest.mark.realnode

SERVICE = "sim"
REPLICAS = 3
REQUESTS = 30
MODEL_ID = f"{SERVING_NAMESPACE}/{SERVICE}"


def vllm_simulator(image: str) -> dict[str, Any]:
    """An Engine running the simulator with vLLM's flags; it echoes the prompt back."""
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "Engine",
        "metadata": {"name": "vllm-sim"},
        "spec": {
            "description": "llm-d's vLLM simulator: vLLM's API and metrics with set latencies, no model.",
            "variants": [{"name": "cpu", "accelerator": "CPU", "architecture": "amd64", "image": image}],
            "args": [
                "--model={{ model.path }}",
                "--served-model-name={{ service.servedName }}",
                "--port={{ engine.port }}",
                "--mode=echo",
                "--time-to-first-token=20ms",
                "--inter-token-latency=2ms",
                # The model's path is no Hub id: count tokens without fetching a tokenizer.
                "--force-dummy-tokenizer",
            ],
            "port": 8000,
            "health": {"path": "/health", "startupTimeoutSeconds": 60, "periodSeconds": 1, "drainSeconds": 1},
            "metricsPath": "/metrics",
            "modelTypes": ["LLM"],
            "modelFormats": ["SafeTensors"],
            "endpoints": ["/v1/chat/completions", "/v1/completions"],
            "resources": {"gpus": 0, "requests": {"cpu": "10m", "memory": "32Mi"}},
        },
    }


@pytest.fixture(scope="module")
def simulated(
    real_cluster: ControlPlane, platform: Release, downloaded: dict[str, Any]
) -> list[dict[str, Any]]:
    """The simulator's replicas Ready; returns their pods."""
    assert real_cluster.real_node is not None
    real_cluster.apply([vllm_simulator(real_cluster.real_node.images["llm-d-inference-sim"])])
    start = time.monotonic()
    real_cluster.apply(
        [
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "InferenceService",
                "metadata": {"name": SERVICE, "namespace": SERVING_NAMESPACE},
                "spec": {
                    "modelRef": {"name": "tiny"},
                    "engineRef": {"name": "vllm-sim"},
                    "replicas": REPLICAS,
                    "resources": {"gpus": 0},
                },
            }
        ]
    )
    seconds = ready_seconds(real_cluster, "isvc", SERVICE, SERVING_NAMESPACE, since=start)
    FIGURES[f"vLLM simulator InferenceService, {REPLICAS} replicas: apply -> Ready"] = f"{seconds:.1f} s"
    pods = get_json(
        real_cluster, "pods", "", "-n", SERVING_NAMESPACE, f"--selector=aima.dev/inference-service={SERVICE}"
    )["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp") and p["status"].get("podIP")]


def metric(pod: dict[str, Any], name: str, *, required: bool = True) -> float:
    """One metric of a replica summed over its series, read from the path its pod names as the
    chart's PodMonitor would; a counter is absent until its first count, else absence fails."""
    path = pod["metadata"]["annotations"]["aima.dev/metrics-path"]
    text = httpx.get(f"http://{pod['status']['podIP']}:8000{path}", timeout=10).text
    values = re.findall(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE)
    assert values or not required, f"{name} is not among the metrics of pod {pod['metadata']['name']}"
    return sum(float(v) for v in values)


def test_the_gateway_spreads_requests_over_every_replica(
    simulated: list[dict[str, Any]], client: openai.OpenAI
) -> None:
    assert len(simulated) == REPLICAS
    before = [metric(p, "vllm:request_success_total", required=False) for p in simulated]
    for i in range(REQUESTS):
        reply = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": f"echo {i}"}], max_tokens=16
        )
        assert reply.choices[0].message.content == f"echo {i}"
    served = [metric(p, "vllm:request_success_total") - b for p, b in zip(simulated, before, strict=True)]
    assert sum(served) == REQUESTS
    assert all(count > 0 for count in served), served


def test_the_simulator_streams_with_usage_and_counts_vllms_metrics(
    simulated: list[dict[str, Any]], client: openai.OpenAI
) -> None:
    stream = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    usage = next(c.usage for c in chunks if c.usage is not None)
    assert usage.completion_tokens > 1
    assert sum(metric(p, "vllm:generation_tokens_total") for p in simulated) >= usage.completion_tokens
    # The gauges an engine-aware router reads, under vLLM's own names.
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        assert all(metric(p, name) == 0 for p in simulated)  # idle again after the stream
