"""Changing a running service's Model without downtime, on the real node with llama.cpp: the new
Model downloads while the old replica serves (and the service stays Ready), the new replica comes up
before the old one stops, and the old one drains its streams before its engine gets SIGTERM. Counted
under steady streaming load through the gateway: no request fails and no stream is cut."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from suite import FIGURES, HUB_REPO, SERVING_NAMESPACE
from test_llama_cpp import isvc, llama  # noqa: F401 - a fixture the service needs

from aima_testenv import ControlPlane
from aima_testenv.chart import Release
from reads import condition, get_json, ready_seconds
from waiting import eventually

pytestmark = pytest.mark.realnode

SERVICE = "rolling"
MODEL_ID = f"{SERVING_NAMESPACE}/{SERVICE}"
NEW_MODEL = "tiny-gguf-next"


@pytest.fixture(scope="module")
def rolling(real_cluster: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    request.getfixturevalue("llama")  # its Engine and first GGUF Model
    real_cluster.apply([isvc(SERVICE)])
    ready_seconds(real_cluster, "isvc", SERVICE, SERVING_NAMESPACE, since=0)
    yield SERVICE
    real_cluster.kubectl("delete", "isvc", SERVICE, "-n", SERVING_NAMESPACE, "--wait=false")
    real_cluster.kubectl("delete", "model", NEW_MODEL, "-n", SERVING_NAMESPACE, "--wait=false")


class Load:
    """Streams through the gateway, one after the other on each of a few threads, until stopped:
    each one counted as whole (it ended with a finish reason), cut, or failed."""

    def __init__(self, client: openai.OpenAI, threads: int = 4) -> None:
        self.client, self.outcomes, self.errors = client, Counter[str](), list[str]()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stream = self.client.chat.completions.create(
                    model=MODEL_ID,
                    messages=[{"role": "user", "content": "Hello"}],
                    max_tokens=32,
                    stream=True,
                )
                finished = [
                    c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason
                ]
                self.outcomes["whole" if finished else "cut"] += 1
            except openai.OpenAIError as error:
                self.outcomes["failed"] += 1
                self.errors.append(repr(error))


def pods(plane: ControlPlane) -> list[dict[str, Any]]:
    found = get_json(
        plane, "pods", "", "-n", SERVING_NAMESPACE, f"--selector=aima.dev/inference-service={SERVICE}"
    )
    return list(found["items"])


def serves_only_the_new_model(plane: ControlPlane) -> bool:
    running = pods(plane)
    return (
        len(running) == 1
        and running[0]["metadata"]["labels"].get("aima.dev/model") == NEW_MODEL
        and all(
            c["type"] != "Ready" or c["status"] == "True" for c in running[0]["status"].get("conditions", [])
        )
    )


def test_a_model_change_under_load_fails_no_request_and_cuts_no_stream(
    real_cluster: ControlPlane, client: openai.OpenAI, rolling: str, platform: Release
) -> None:
    readiness: Counter[str] = Counter()
    with Load(client) as load:
        time.sleep(2)
        start = time.monotonic()
        new_model = get_json(real_cluster, "model", "tiny-gguf", "-n", SERVING_NAMESPACE)["spec"]
        real_cluster.apply(
            [
                {
                    "apiVersion": "aima.dev/v1alpha1",
                    "kind": "Model",
                    "metadata": {"name": NEW_MODEL, "namespace": SERVING_NAMESPACE},
                    "spec": new_model,
                }
            ]
        )
        # At once, before the new Model is there: the old replica must serve until it is.
        real_cluster.kubectl(
            "patch", "isvc", SERVICE, "-n", SERVING_NAMESPACE, "--type=merge",
            "-p", f'{{"spec": {{"modelRef": {{"name": "{NEW_MODEL}"}}}}}}',
        )  # fmt: skip

        def rolled() -> bool:
            readiness[
                str(condition(get_json(real_cluster, "isvc", SERVICE, "-n", SERVING_NAMESPACE), "Ready"))
            ] += 1
            return serves_only_the_new_model(real_cluster)

        eventually(rolled, what=f"the service to run on {NEW_MODEL} alone", timeout=180)
        seconds = time.monotonic() - start
        time.sleep(2)
    gateway = real_cluster.kubectl(
        "logs", f"deployment/{platform.name('gateway')}", "-n", platform.namespace, "--since=5m"
    ).stdout
    said = [line for line in gateway.splitlines() if "WARNING" in line or "ERROR" in line]
    assert load.outcomes["failed"] == 0, (load.errors[:5], said[-10:])
    assert load.outcomes["cut"] == 0 and load.outcomes["whole"] > 50, load.outcomes
    assert set(readiness) == {"True"}, f"the service stayed Ready throughout: {readiness}"
    assert HUB_REPO in new_model["source"]
    FIGURES["model change under streaming load (llama.cpp): streams whole / cut / failed, seconds"] = (
        f"{load.outcomes['whole']} / {load.outcomes['cut']} / {load.outcomes['failed']}, {seconds:.0f} s"
    )
