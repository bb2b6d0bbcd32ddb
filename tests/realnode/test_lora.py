"""LoRA adapters on real vLLM (CPU): a tiny adapter made in the test, downloaded by the real loader
into its base Model's volume, loaded at runtime on the running replica through vLLM's adapter API,
routed by the gateway, unloaded and loaded again without a pod restart, brought back after one, and
an adapter vLLM refuses explained in status in vLLM's own words."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest
from suite import BROKEN_LORA_REPO, FIGURES, SERVING_NAMESPACE
from test_vllm_cpu import MODEL_ID, vllm  # noqa: F401 - the service whose adapters these tests change

from aima_testenv import ControlPlane
from reads import condition_of, get_json
from waiting import eventually

# Every test here changes the adapters of the vLLM service its module makes.
pytestmark = [pytest.mark.realnode, pytest.mark.usefixtures("vllm")]

SERVICE = "tiny-vllm"
ADAPTER_ID = f"{MODEL_ID}:sql"
SQL = {"name": "sql", "modelRef": {"name": "sql-lora"}}


def service(plane: ControlPlane) -> dict[str, Any]:
    return dict(get_json(plane, "isvc", SERVICE, "-n", SERVING_NAMESPACE))


def adapter_status(plane: ControlPlane, name: str) -> dict[str, Any] | None:
    found = service(plane).get("status", {}).get("adapters") or []
    return next((a for a in found if a["name"] == name), None)


def wait_for_state(plane: ControlPlane, name: str, state: str, *, timeout: float = 120) -> dict[str, Any]:
    return eventually(
        lambda: a if (a := adapter_status(plane, name)) and a["state"] == state else None,
        what=f"adapter {name} to be {state} (now {adapter_status(plane, name)})",
        timeout=timeout,
    )


def set_adapters(plane: ControlPlane, adapters: list[dict[str, Any]]) -> None:
    patch = json.dumps({"spec": {"adapters": adapters}})
    plane.kubectl("patch", "isvc", SERVICE, "-n", SERVING_NAMESPACE, "--type=merge", "-p", patch)


def the_pod(plane: ControlPlane) -> dict[str, Any]:
    pods = get_json(
        plane, "pods", "", "-n", SERVING_NAMESPACE, f"--selector=aima.dev/inference-service={SERVICE}"
    )
    (pod,) = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
    return dict(pod)


def engine_adapters(pod: dict[str, Any]) -> set[str]:
    """The adapters vLLM itself lists, asked directly."""
    direct = openai.OpenAI(base_url=f"http://{pod['status']['podIP']}:8000/v1", api_key="-", max_retries=0)
    return {m.id for m in direct.models.list() if getattr(m, "parent", None)}


def greedy(client: openai.OpenAI, model: str) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=12, temperature=0
    )
    assert reply.model == model
    return str(reply.choices[0].message.content)


def test_the_adapter_is_loaded_on_the_replica_and_served_under_its_own_id(
    real_cluster: ControlPlane, client: openai.OpenAI
) -> None:
    start = time.monotonic()
    loaded = wait_for_state(real_cluster, "sql", "Ready")
    pod = the_pod(real_cluster)
    assert loaded["pods"] == [pod["metadata"]["name"]] and loaded["readyReplicas"] == 1
    assert engine_adapters(pod) == {"sql"}
    adapter_model = get_json(real_cluster, "model", "sql-lora", "-n", SERVING_NAMESPACE)
    assert adapter_model["status"]["path"] == "adapters/sql-lora"
    listed = {m.id: m for m in client.models.list()}
    assert getattr(listed[ADAPTER_ID], "parent", None) == MODEL_ID
    # Greedy decoding with and without the adapter: its weights change what the model says.
    assert greedy(client, ADAPTER_ID) != greedy(client, MODEL_ID)
    ready = condition_of(service(real_cluster), "AdaptersReady")
    assert ready is not None and ready["status"] == "True"
    FIGURES["LoRA adapter: service Ready -> adapter Ready (download + load on vLLM CPU)"] = (
        f"{time.monotonic() - start:.1f} s"
    )


def test_an_adapter_the_engine_refuses_is_explained_in_its_words(
    real_cluster: ControlPlane, client: openai.OpenAI
) -> None:
    real_cluster.apply(
        [
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "rank128-lora", "namespace": SERVING_NAMESPACE},
                "spec": {
                    "source": f"hf://{BROKEN_LORA_REPO}",
                    "type": "LoRA",
                    "baseModelRef": {"name": "tiny-safetensors"},
                },
            }
        ]
    )
    set_adapters(real_cluster, [SQL, {"name": "wide", "modelRef": {"name": "rank128-lora"}}])
    failed = wait_for_state(real_cluster, "wide", "Failed")
    assert "greater than max_lora_rank 64" in failed["message"], failed
    summary = condition_of(service(real_cluster), "AdaptersReady")
    assert summary is not None and (summary["status"], summary["reason"]) == ("False", "AdapterFailed")
    events = get_json(
        real_cluster, "events", "", "-n", SERVING_NAMESPACE, f"--field-selector=involvedObject.name={SERVICE}"
    )
    assert any(e["reason"] == "AdapterFailed" and e["type"] == "Warning" for e in events["items"])
    assert greedy(client, ADAPTER_ID)  # the good adapter still serves beside the refused one
    set_adapters(real_cluster, [SQL])
    eventually(
        lambda: adapter_status(real_cluster, "wide") is None, what="the refused adapter to leave status"
    )


def test_adapters_come_and_go_without_restarting_the_replica(
    real_cluster: ControlPlane, client: openai.OpenAI
) -> None:
    """One adapter stays listed throughout: with none, the engine's LoRA support would go too (a
    rolling update), so adding and removing the second one is what happens at runtime."""
    pod = the_pod(real_cluster)
    set_adapters(real_cluster, [SQL, {"name": "sql2", "modelRef": {"name": "sql-lora"}}])
    wait_for_state(real_cluster, "sql2", "Ready")
    assert engine_adapters(pod) == {"sql", "sql2"}
    assert greedy(client, f"{MODEL_ID}:sql2") == greedy(client, ADAPTER_ID)  # the same weights
    set_adapters(real_cluster, [SQL])
    eventually(lambda: engine_adapters(pod) == {"sql"}, what="vLLM to unload sql2")
    with pytest.raises(openai.NotFoundError):
        greedy(client, f"{MODEL_ID}:sql2")
    after = the_pod(real_cluster)
    assert after["metadata"]["uid"] == pod["metadata"]["uid"]
    restarts = [p["status"]["containerStatuses"][0]["restartCount"] for p in (pod, after)]
    assert restarts[0] == restarts[1], restarts


def test_a_replica_that_restarts_gets_its_adapters_back(
    real_cluster: ControlPlane, client: openai.OpenAI
) -> None:
    old = the_pod(real_cluster)["metadata"]["name"]
    real_cluster.kubectl("delete", "pod", old, "-n", SERVING_NAMESPACE, "--wait=false")
    back = eventually(
        lambda: (
            a
            if (a := adapter_status(real_cluster, "sql"))
            and a["state"] == "Ready"
            and old not in a["pods"]
            and a["pods"]
            else None
        ),
        what="the adapter to be loaded on the replacement replica",
        timeout=240,
    )
    assert back["pods"] == [the_pod(real_cluster)["metadata"]["name"]]
    assert greedy(client, ADAPTER_ID)
