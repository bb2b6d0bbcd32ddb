"""A weighted traffic split on the real node: two llama.cpp services behind one model id, 90/10,
measured over 1,000 requests through the gateway's Service; a canary that does not exist explained
in status while its share goes to the other; promotion to 100 % and a rollback by editing the spec."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from suite import FIGURES, SERVING_NAMESPACE
from test_inference_sim import vllm_simulator
from test_llama_cpp import isvc, llama  # noqa: F401 - a fixture the services need

from aima_testenv import ControlPlane
from reads import condition_of, get_json, ready_seconds
from waiting import eventually

pytestmark = pytest.mark.realnode

MAIN, CANARY, BROKEN = "split-main", "split-canary", "split-broken"
MODEL_ID = f"{SERVING_NAMESPACE}/{MAIN}"


@pytest.fixture(scope="module")
def services(real_cluster: ControlPlane, request: pytest.FixtureRequest) -> Iterator[None]:
    request.getfixturevalue("llama")  # its Engine and GGUF Model serve both services
    split = [{"service": MAIN, "weight": 90}, {"service": CANARY, "weight": 10}]
    real_cluster.apply([isvc(MAIN, traffic=split), isvc(CANARY)])
    for name in (MAIN, CANARY):
        ready_seconds(real_cluster, "isvc", name, SERVING_NAMESPACE, since=0)
    yield
    real_cluster.kubectl(
        "delete", "isvc", MAIN, CANARY, BROKEN, "-n", SERVING_NAMESPACE, "--wait=false", "--ignore-not-found"
    )


def traffic_ready(plane: ControlPlane) -> dict[str, Any]:
    return condition_of(get_json(plane, "isvc", MAIN, "-n", SERVING_NAMESPACE), "TrafficReady") or {}


def set_traffic(plane: ControlPlane, traffic: list[dict[str, Any]] | None) -> None:
    patch = json.dumps({"spec": {"traffic": traffic}})
    plane.kubectl("patch", "isvc", MAIN, "-n", SERVING_NAMESPACE, "--type=merge", "-p", patch)


def served_by(gateway_url: str, key: str, requests: int) -> Counter[str]:
    """Send ``requests`` one-token completions for the split's model id; count the services that
    answered, as each reply's X-AIMA-Service header names them."""

    def one(http: httpx.Client) -> str:
        reply = http.post("/completions", json={"model": MODEL_ID, "prompt": "Hi", "max_tokens": 1})
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == MODEL_ID  # the client's name, whichever service answered
        return reply.headers["X-AIMA-Service"].removeprefix(f"{SERVING_NAMESPACE}/")

    headers = {"Authorization": f"Bearer {key}"}
    with (
        httpx.Client(base_url=gateway_url, headers=headers, timeout=30) as http,
        ThreadPoolExecutor(8) as pool,
    ):
        return Counter(pool.map(lambda _: one(http), range(requests)))


@pytest.mark.usefixtures("services")
def test_a_90_10_split_holds_over_1000_requests(
    real_cluster: ControlPlane, gateway_url: str, keys: dict[str, str]
) -> None:
    eventually(lambda: traffic_ready(real_cluster).get("status") == "True", what="TrafficReady", timeout=60)
    assert traffic_ready(real_cluster)["message"] == f"Requests split: {MAIN} 90%, {CANARY} 10%"
    counted = served_by(gateway_url, keys["gateway"], 1000)
    # Binomial(1000, 0.1): mean 100, standard deviation 9.5; four of them either side fail by chance
    # once in 15,000 runs.
    spread = 4 * math.sqrt(1000 * 0.1 * 0.9)
    assert set(counted) == {MAIN, CANARY}
    assert abs(counted[CANARY] - 100) <= spread, counted
    FIGURES["traffic split 90/10 over 1,000 requests through the gateway"] = (
        f"{counted[MAIN]} / {counted[CANARY]}"
    )


@pytest.mark.usefixtures("services")
def test_a_missing_canary_is_explained_and_its_share_goes_to_the_other(
    real_cluster: ControlPlane, gateway_url: str, keys: dict[str, str]
) -> None:
    set_traffic(real_cluster, [{"service": MAIN, "weight": 50}, {"service": "no-such-canary", "weight": 50}])
    found = eventually(
        lambda: c if (c := traffic_ready(real_cluster)).get("reason") == "TrafficTargetNotFound" else None,
        what="TrafficReady to name the missing service",
    )
    assert found["status"] == "False" and "No InferenceService no-such-canary" in found["message"]
    events = get_json(
        real_cluster, "events", "", "-n", SERVING_NAMESPACE, f"--field-selector=involvedObject.name={MAIN}"
    )
    assert any(e["reason"] == "TrafficTargetNotFound" for e in events["items"])
    assert served_by(gateway_url, keys["gateway"], 50) == {MAIN: 50}


@pytest.mark.usefixtures("services")
def test_promotion_and_rollback_are_edits_of_the_spec(
    real_cluster: ControlPlane, gateway_url: str, keys: dict[str, str]
) -> None:
    set_traffic(real_cluster, [{"service": MAIN, "weight": 0}, {"service": CANARY, "weight": 100}])
    eventually(
        lambda: served_by(gateway_url, keys["gateway"], 20) == {CANARY: 20}, what="all requests on the canary"
    )
    set_traffic(real_cluster, None)
    eventually(lambda: served_by(gateway_url, keys["gateway"], 20) == {MAIN: 20}, what="all requests back")
    eventually(lambda: not traffic_ready(real_cluster), what="TrafficReady to go with the split")


def failing_simulator(image: str) -> dict[str, Any]:
    """llm-d's simulator answering every request 503, as a canary that came up broken would."""
    engine = vllm_simulator(image)
    engine["metadata"]["name"] = "vllm-sim-failing"
    engine["spec"]["args"] += ["--failure-injection-rate=100", "--failure-types=server_error"]
    return engine


@pytest.mark.usefixtures("services")
def test_a_canary_that_fails_past_its_guard_is_halted_and_gets_nothing_more(
    real_cluster: ControlPlane, gateway_url: str, keys: dict[str, str], downloaded: dict[str, Any]
) -> None:
    assert real_cluster.real_node is not None and downloaded["status"]["claimName"] == "tiny-model"
    real_cluster.apply(
        [
            failing_simulator(real_cluster.real_node.images["llm-d-inference-sim"]),
            isvc(BROKEN, model="tiny", engine="vllm-sim-failing"),
        ]
    )
    ready_seconds(real_cluster, "isvc", BROKEN, SERVING_NAMESPACE, since=0)
    guard = {"maxErrorPercent": 20, "windowRequests": 10}
    patch = {
        "traffic": [{"service": MAIN, "weight": 50}, {"service": BROKEN, "weight": 50}],
        "rolloutGuard": guard,
    }
    real_cluster.kubectl(
        "patch", "isvc", MAIN, "-n", SERVING_NAMESPACE, "--type=merge", "-p", json.dumps({"spec": patch})
    )
    eventually(lambda: traffic_ready(real_cluster).get("status") == "True", what="TrafficReady", timeout=60)

    headers = {"Authorization": f"Bearer {keys['gateway']}"}
    with httpx.Client(base_url=gateway_url, headers=headers, timeout=30) as http:

        def ask() -> tuple[int, str]:
            reply = http.post("/completions", json={"model": MODEL_ID, "prompt": "Hi", "max_tokens": 1})
            return reply.status_code, reply.headers.get("X-AIMA-Service", "").removeprefix(
                f"{SERVING_NAMESPACE}/"
            )

        before = Counter(ask() for _ in range(40))
        halted = eventually(
            lambda: c if (c := traffic_ready(real_cluster)).get("reason") == "RolloutHalted" else None,
            what="the rollout guard to halt the broken canary",
        )
        # The operator saw the halt; the gateway's own watch of the service may be a moment behind.
        eventually(lambda: {ask() for _ in range(5)} == {(200, MAIN)}, what="the gateway to route around it")
        after = Counter(ask() for _ in range(40))
    assert before[(503, BROKEN)] >= 10 and before[(200, MAIN)] > 0, before
    assert after == {(200, MAIN): 40}, after
    annotations = get_json(real_cluster, "isvc", MAIN, "-n", SERVING_NAMESPACE)["metadata"]["annotations"]
    assert (
        annotations["aima.dev/rollout-halted"]
        == f"{BROKEN}: 10 of its last 10 requests failed (100 % > 20 %)"
    )
    assert halted["message"].startswith(f"The gateway halted {BROKEN}: 10 of its last 10 requests failed")
    events = get_json(
        real_cluster, "events", "", "-n", SERVING_NAMESPACE, f"--field-selector=involvedObject.name={MAIN}"
    )
    assert any(e["reason"] == "RolloutHalted" and e["type"] == "Warning" for e in events["items"])
