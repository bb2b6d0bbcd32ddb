"""Embeddings and reranking with a real engine on the real node: infinity (infinity-emb on PyTorch,
from PyPI into an image built with no registry) behind the gateway's Service. The Engine is the
catalog's, only its image the local build; the models are a tiny BERT embedder and a tiny BERT
cross-encoder made in the test (random weights, SafeTensors, a WordPiece tokenizer), downloaded from
the in-cluster Hub by the real loader."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from suite import EMBEDDER_REPO, FIGURES, RERANKER_REPO, SERVING_NAMESPACE
from test_llama_cpp import isvc, local_engine, start_to_ready, the_pod, working_set_mib

from aima_testenv import ControlPlane
from aima_testenv.chart import Release
from aima_testenv.models import BERT_SHAPE
from reads import assert_runs_locked_down, get_json, ready_seconds

pytestmark = pytest.mark.realnode

EMBEDDER, RERANKER = "tiny-embedder", "tiny-reranker"
DOCUMENTS = ["The cat is on the mat.", "Paris is the capital of France.", "Hello world!", "A dog."]


def local_infinity(image: str) -> dict[str, Any]:
    return local_engine("infinity", image, name="infinity-local", drain_seconds=1)


def model(name: str, repo: str, kind: str) -> dict[str, Any]:
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name, "namespace": SERVING_NAMESPACE},
        "spec": {"source": f"hf://{repo}", "type": kind},
    }


def service(name: str) -> dict[str, Any]:
    # The catalog asks a GPU, 2 CPUs and 4Gi: more than this node has free beside the platform.
    resources = {"gpus": 0, "requests": {"cpu": "100m", "memory": "256Mi"}}
    return isvc(name, model=name, engine="infinity-local", resources=resources)


@pytest.fixture(scope="module")
def infinity(
    real_cluster: ControlPlane, platform: Release, downloaded: dict[str, Any]
) -> Iterator[dict[str, str]]:
    """Both services Ready: the embedder and the reranker, each its own infinity pod; deleted after
    the module, since the 2-core node has no CPU to spare for the later modules' pods."""
    assert real_cluster.real_node is not None
    real_cluster.apply(
        [
            local_infinity(real_cluster.real_node.images["infinity"]),
            model(EMBEDDER, EMBEDDER_REPO, "Embedding"),
            model(RERANKER, RERANKER_REPO, "Rerank"),
        ]
    )
    for name in (EMBEDDER, RERANKER):
        ready_seconds(real_cluster, "model", name, SERVING_NAMESPACE, since=0, timeout=120)
        assert (
            get_json(real_cluster, "model", name, "-n", SERVING_NAMESPACE)["status"]["format"]
            == "SafeTensors"
        )
    start = time.monotonic()
    real_cluster.apply([service(EMBEDDER), service(RERANKER)])
    for name in (EMBEDDER, RERANKER):
        seconds = ready_seconds(real_cluster, "isvc", name, SERVING_NAMESPACE, since=start, timeout=300)
        FIGURES[f"infinity InferenceService apply -> Ready ({name}, both started together)"] = (
            f"{seconds:.1f} s"
        )
    yield {"embedder": f"{SERVING_NAMESPACE}/{EMBEDDER}", "reranker": f"{SERVING_NAMESPACE}/{RERANKER}"}
    real_cluster.kubectl("delete", "isvc", EMBEDDER, RERANKER, "-n", SERVING_NAMESPACE, "--timeout=120s")


def test_infinity_embeds_texts_through_the_gateway(client: openai.OpenAI, infinity: dict[str, str]) -> None:
    texts = ["Hello world", "Paris is the capital of France.", "Hello world"]
    reply = client.embeddings.create(model=infinity["embedder"], input=texts)
    assert [e.index for e in reply.data] == [0, 1, 2]
    assert {len(e.embedding) for e in reply.data} == {BERT_SHAPE["hidden"]}
    # The model ran over each text: the same text, the same vector; another text, another vector.
    first, second, again = (e.embedding for e in reply.data)
    assert first == pytest.approx(again, abs=1e-5)
    assert first != pytest.approx(second, abs=1e-3)
    assert reply.usage.prompt_tokens > 0


def test_infinity_embeds_one_text_as_floats(client: openai.OpenAI, infinity: dict[str, str]) -> None:
    """The SDK asks base64 unless told otherwise; plain floats are the other encoding."""
    reply = client.embeddings.create(model=infinity["embedder"], input="Hello", encoding_format="float")
    (only,) = reply.data
    assert len(only.embedding) == BERT_SHAPE["hidden"]
    assert all(isinstance(x, float) for x in only.embedding)


def rerank(gateway_url: str, keys: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{gateway_url}/rerank", json=body, headers={"Authorization": f"Bearer {keys['gateway']}"}, timeout=30
    )


def test_infinity_reranks_documents_through_the_gateway(
    gateway_url: str, keys: dict[str, str], infinity: dict[str, str]
) -> None:
    body = {"model": infinity["reranker"], "query": "capital of France", "documents": DOCUMENTS}
    reply = rerank(gateway_url, keys, body | {"return_documents": True})
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    # One score per document, best first, each naming the document it scored.
    assert sorted(r["index"] for r in results) == list(range(len(DOCUMENTS)))
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert [r["document"] for r in results] == [DOCUMENTS[r["index"]] for r in results]
    top = rerank(gateway_url, keys, body | {"top_n": 2}).json()["results"]
    assert [r["index"] for r in top] == [r["index"] for r in results[:2]]


def test_an_embedder_refuses_to_rerank_with_the_engines_reason(
    gateway_url: str, keys: dict[str, str], infinity: dict[str, str]
) -> None:
    reply = rerank(gateway_url, keys, {"model": infinity["embedder"], "query": "q", "documents": DOCUMENTS})
    assert 400 <= reply.status_code < 500, reply.text
    assert "rerank" in reply.text


def test_infinity_counts_what_it_served_in_its_own_metrics(
    real_cluster: ControlPlane, client: openai.OpenAI, infinity: dict[str, str]
) -> None:
    """infinity's own /metrics (prometheus-fastapi-instrumentator's request counters), at the path
    the pod's annotation names (where the chart's PodMonitor scrapes)."""
    client.embeddings.create(model=infinity["embedder"], input=["counted"])
    pod = the_pod(real_cluster, f"aima.dev/inference-service={EMBEDDER}")
    path = pod["metadata"]["annotations"]["aima.dev/metrics-path"]
    assert path == "/metrics"
    text = httpx.get(f"http://{pod['status']['podIP']}:7997{path}", timeout=10).text
    served = [
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("http_requests_total{") and 'handler="/v1/embeddings"' in line and '"2xx"' in line
    ]
    assert served and sum(served) >= 1, text[:2000]


def test_figures_of_infinity(real_cluster: ControlPlane, infinity: dict[str, str]) -> None:
    """infinity's start and memory as the kubelet saw them."""
    for name in (EMBEDDER, RERANKER):
        pod = the_pod(real_cluster, f"aima.dev/inference-service={name}")
        FIGURES[f"infinity container start -> Ready ({name}, kubelet, 1 s resolution)"] = (
            f"{start_to_ready(pod)} s"
        )
        FIGURES[f"infinity memory ({name}, working set)"] = f"{working_set_mib(real_cluster, pod):.0f} MiB"


def test_infinity_runs_as_its_user_on_a_read_only_root(
    real_cluster: ControlPlane, infinity: dict[str, str]
) -> None:
    """The catalog's security defaults hold for the real engine: it loads and serves as user
    65532 with a read-only root filesystem, writing only under HOME (an emptyDir)."""
    assert_runs_locked_down(real_cluster, the_pod(real_cluster, f"aima.dev/inference-service={EMBEDDER}"))
