"""A real engine on the real node: llama.cpp's own server (compiled from the upstream source on the
package index, in an image built with no registry) serving a tiny random GGUF made in the test,
downloaded by the real loader, behind the gateway's Service. Its args are the catalog's own
llama-cpp Engine, rendered by the operator; only the image is the local build."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import openai
import pytest
import yaml
from suite import FIGURES, HUB_REPO, SERVING_NAMESPACE

from aima.testenv import ControlPlane
from aima.testenv.binaries import REPO_ROOT
from aima.testenv.chart import Release
from aima.testenv.realnode import NODE_NAME
from reads import condition, get_json, ready_seconds
from waiting import eventually

pytestmark = pytest.mark.realnode

SERVICE = "tiny-llama"
MODEL_ID = f"{SERVING_NAMESPACE}/{SERVICE}"


def local_llama_cpp(image: str) -> dict[str, Any]:
    """The catalog's llama-cpp Engine under another name, its one variant the local CPU build."""
    engine = yaml.safe_load((REPO_ROOT / "catalog" / "engines" / "llama-cpp.yaml").read_text())
    local = copy.deepcopy(engine)
    local["metadata"] = {"name": "llama-cpp-local"}
    local["spec"]["variants"] = [
        {"name": "cpu", "accelerator": "CPU", "architecture": "amd64", "image": image}
    ]
    local["spec"]["health"]["periodSeconds"] = 1
    return dict(local)


@pytest.fixture(scope="module")
def llama(real_cluster: ControlPlane, platform: Release, downloaded: dict[str, Any]) -> str:
    assert real_cluster.real_node is not None
    image = real_cluster.real_node.images["llama-server"]
    real_cluster.apply(
        [
            local_llama_cpp(image),
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "tiny-gguf", "namespace": SERVING_NAMESPACE},
                "spec": {"source": f"hf://{HUB_REPO}@main", "type": "LLM", "files": {"include": ["*.gguf"]}},
            },
        ]
    )
    eventually(
        lambda: (
            condition(get_json(real_cluster, "model", "tiny-gguf", "-n", SERVING_NAMESPACE), "Ready")
            == "True"
        ),
        what="the GGUF Model to be downloaded",
        timeout=120,
    )
    model = get_json(real_cluster, "model", "tiny-gguf", "-n", SERVING_NAMESPACE)
    assert model["status"]["format"] == "GGUF" and model["status"]["weightsFile"] == "tiny.gguf"
    start = time.monotonic()
    real_cluster.apply(
        [
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "InferenceService",
                "metadata": {"name": SERVICE, "namespace": SERVING_NAMESPACE},
                "spec": {
                    "modelRef": {"name": "tiny-gguf"},
                    "engineRef": {"name": "llama-cpp-local"},
                    # The catalog asks 2 CPUs and 4Gi: more than this node has free beside the platform.
                    "resources": {"gpus": 0, "requests": {"cpu": "100m", "memory": "128Mi"}},
                },
            }
        ]
    )
    seconds = ready_seconds(real_cluster, "isvc", SERVICE, SERVING_NAMESPACE, since=start)
    FIGURES["llama.cpp InferenceService apply -> Ready (tiny GGUF)"] = f"{seconds:.1f} s"
    return SERVICE


def test_the_llama_cpp_pod_runs_the_catalogs_command_line(real_cluster: ControlPlane, llama: str) -> None:
    pods = get_json(
        real_cluster, "pods", "", "-n", SERVING_NAMESPACE, f"--selector=aima.dev/inference-service={llama}"
    )
    (pod,) = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
    assert pod["spec"]["nodeName"] == NODE_NAME
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--model") + 1].endswith("/tiny.gguf")
    assert args[args.index("--alias") + 1] == llama
    assert "--metrics" in args and "--embeddings" not in args


def test_llama_cpp_answers_a_chat_through_the_gateway(client: openai.OpenAI, llama: str) -> None:
    reply = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    assert reply.usage.prompt_tokens > 0


def test_llama_cpp_streams_tokens_and_usage_through_the_gateway(client: openai.OpenAI, llama: str) -> None:
    stream = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content is not None) >= 2
    usage = next(c.usage for c in chunks if c.usage is not None)
    assert usage.completion_tokens == 8


def test_llama_cpp_completes_text_through_the_gateway(client: openai.OpenAI, llama: str) -> None:
    reply = client.completions.create(model=MODEL_ID, prompt="Once upon", max_tokens=4)
    assert reply.usage is not None and reply.usage.completion_tokens == 4
    assert json.loads(reply.model_dump_json())["choices"][0]["text"] is not None
