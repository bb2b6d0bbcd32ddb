"""The gateway's pod deleted, as a rolling update or a node drain does, with 100 streams in flight
through its Service: the pod stops taking connections, streams that end within its drain time
finish whole, longer ones are cut with a clean error once it is over (no client hangs), and the
first request after the new pod is Ready is answered."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from suite import FIGURES, PLATFORM_NAMESPACE, SERVING_NAMESPACE
from test_inference_sim import vllm_simulator
from test_llama_cpp import isvc

from aima_testenv import ControlPlane
from aima_testenv.chart import Release
from reads import get_json, ready_seconds
from waiting import eventually

pytestmark = pytest.mark.realnode

SERVICE = "slow-sim"
MODEL_ID = f"{SERVING_NAMESPACE}/{SERVICE}"
TOKEN_SECONDS = 0.1
# 4 s and 40 s of tokens, against the chart's 25 s of drain (prompt and reply within the 1,024 the
# simulator takes: beyond, it answers an error event in the stream)
SHORT_WORDS, LONG_WORDS = 40, 400
STREAMS = 100
DRAIN_SECONDS = 25  # the chart's gateway.drainSeconds


def slow_simulator(image: str) -> dict[str, Any]:
    """The vLLM simulator at a token every 100 ms, taking every stream at once."""
    engine = vllm_simulator(image)
    engine["metadata"]["name"] = "vllm-sim-slow"
    args = [a for a in engine["spec"]["args"] if not a.startswith("--inter-token-latency")]
    engine["spec"]["args"] = [
        *args,
        f"--inter-token-latency={int(TOKEN_SECONDS * 1000)}ms",
        "--max-num-seqs=256",
    ]
    return engine


@pytest.fixture(scope="module")
def slow_service(real_cluster: ControlPlane, platform: Release, downloaded: dict[str, Any]) -> str:
    assert real_cluster.real_node is not None
    real_cluster.apply([slow_simulator(real_cluster.real_node.images["llm-d-inference-sim"])])
    start = time.monotonic()
    real_cluster.apply([isvc(SERVICE, model="tiny", engine="vllm-sim-slow")])
    ready_seconds(real_cluster, "isvc", SERVICE, SERVING_NAMESPACE, since=start)
    return SERVICE


@dataclass
class Outcome:
    words: int
    first_token: float = 0.0
    ended: float = 0.0
    done: bool = False
    """The stream's `data: [DONE]` arrived."""
    error: str = ""


def stream(gateway_url: str, key: str, words: int, started: threading.Barrier) -> Outcome:
    """One raw SSE stream through the gateway's Service, as any HTTP client reads it."""
    outcome = Outcome(words=words)
    body = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": " ".join(["word"] * words)}],
        "max_tokens": words,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.stream(
            "POST", f"{gateway_url}/chat/completions", json=body, headers=headers, timeout=120
        ) as response:
            assert response.status_code == 200, response.read()
            for line in response.iter_lines():
                if line.startswith('data: {"error"'):
                    outcome.error = line
                elif not outcome.first_token and line.startswith("data: {"):
                    outcome.first_token = time.monotonic()
                    started.wait(timeout=60)
                outcome.done = outcome.done or line == "data: [DONE]"
    except httpx.HTTPError as error:
        outcome.error = f"{type(error).__name__}: {error}"
    outcome.ended = time.monotonic()
    return outcome


def gateway_pods(plane: ControlPlane, platform: Release) -> list[dict[str, Any]]:
    """The gateway's pods that are not terminating."""
    deployment = get_json(plane, "deployment", platform.name("gateway"), "-n", PLATFORM_NAMESPACE)
    selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
    pods = get_json(plane, "pods", "", "-n", PLATFORM_NAMESPACE, f"--selector={selector}")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def test_a_gateway_restart_drains_streams_in_flight_and_the_new_pod_routes_at_once(
    real_cluster: ControlPlane,
    platform: Release,
    slow_service: str,
    gateway_url: str,
    keys: dict[str, str],
    client: openai.OpenAI,
) -> None:
    (old,) = gateway_pods(real_cluster, platform)
    all_started = threading.Barrier(STREAMS + 1)
    lengths = [SHORT_WORDS if i % 2 else LONG_WORDS for i in range(STREAMS)]
    with ThreadPoolExecutor(max_workers=STREAMS) as pool:
        futures = [pool.submit(stream, gateway_url, keys["gateway"], n, all_started) for n in lengths]
        all_started.wait(timeout=60)  # every stream has its first token
        killed = time.monotonic()
        real_cluster.kubectl(
            "delete", "pod", old["metadata"]["name"], "-n", PLATFORM_NAMESPACE, "--wait=false"
        )
        outcomes = [f.result(timeout=DRAIN_SECONDS + 30) for f in futures]  # none hangs
    short = [o for o in outcomes if o.words == SHORT_WORDS]
    long = [o for o in outcomes if o.words == LONG_WORDS]
    # Streams that end within the drain time end whole.
    assert all(o.done and not o.error for o in short), [o for o in short if not o.done][:3]
    # Longer ones are cut when the drain time is over: not at the kill, and by the gateway itself, not
    # by the kubelet's SIGKILL at the end of the pod's grace period (drain + 5 s); the client is told.
    assert all(o.error and not o.done for o in long), [o for o in long if o.done][:3]
    cut_after = sorted(o.ended - killed for o in long)
    assert cut_after[0] > DRAIN_SECONDS - 5 and cut_after[-1] < DRAIN_SECONDS + 4, cut_after
    FIGURES["gateway pod deleted with 100 streams in flight: 4 s streams finished / 40 s streams cut at"] = (
        f"{len(short)} of {len(short)} / {cut_after[0]:.1f} to {cut_after[-1]:.1f} s after the kill"
    )
    # The new pod routes the first request it gets once Ready (straight to it: kube-proxy's rules may
    # lag its readiness by a moment), then the Service leads to it.
    eventually(
        lambda: [p for p in gateway_pods(real_cluster, platform) if ready(p)],
        what="the new gateway pod to be Ready",
        timeout=120,
    )
    (new,) = gateway_pods(real_cluster, platform)
    direct = f"http://{new['status']['podIP']}:{new['spec']['containers'][0]['ports'][0]['containerPort']}/v1"
    with openai.OpenAI(base_url=direct, api_key=keys["gateway"], max_retries=0) as sdk:
        reply = sdk.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "back again"}], max_tokens=4
        )
    assert reply.choices[0].message.content == "back again"
    eventually(lambda: answers(client), what="the gateway's Service to lead to the new pod", timeout=30)


def answers(sdk: openai.OpenAI) -> bool:
    try:
        return bool(sdk.models.list().data)
    except openai.APIConnectionError:
        return False
