"""The real-node suite's cluster: the local control plane with the two kwok GPU nodes and one real
kubelet node, the images built with no registry, a fake Hub running as a pod, and the chart
installed for real into a Restricted namespace. Started once per session, only when a test here
needs it; if any part cannot start, every test here fails with the reason."""

from __future__ import annotations

import base64
import copy
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from suite import (
    BROKEN_LORA_REPO,
    EMBEDDER_REPO,
    FIGURES,
    HUB_NAMESPACE,
    HUB_REPO,
    HUB_WEIGHTS_BYTES,
    KOKORO_REPO,
    LORA_REPO,
    PLATFORM_NAMESPACE,
    RERANKER_REPO,
    SERVICE,
    SERVING_NAMESPACE,
    VLLM_REPO,
    WHISPER_REPO,
)

from aima_testenv import ControlPlane, ensure_binaries, nodes
from aima_testenv.chart import RESTRICTED, Release, install
from aima_testenv.models import (
    write_tiny_bert_embedder,
    write_tiny_bert_reranker,
    write_tiny_kokoro_onnx,
    write_tiny_llama_gguf,
    write_tiny_llama_lora,
    write_tiny_llama_safetensors,
    write_tiny_whisper_ct2,
)
from aima_testenv.realnode import NODE_LABEL
from fakes.serving import generate_file
from reads import condition, get_json, ready_seconds
from waiting import eventually

FAKES = Path(__file__).resolve().parents[1] / "fakes"
ON_REAL_NODE = {NODE_LABEL: "true"}


@pytest.fixture(scope="session")
def real_cluster() -> Iterator[ControlPlane]:
    """A control plane whose pods really run: kwok keeps the GPU nodes, a kubelet is the rest."""
    with ControlPlane(binaries=ensure_binaries(), node_specs=nodes.GPU_NODES, real_node=True) as plane:
        yield plane


@pytest.fixture(scope="session")
def aima_image(real_cluster: ControlPlane) -> str:
    """The project's image, built from the Dockerfile and loaded into the node's containerd."""
    assert real_cluster.real_node is not None
    return real_cluster.real_node.images["aima"]


@pytest.fixture(scope="session")
def hub_url(real_cluster: ControlPlane, aima_image: str) -> str:
    """A fake Hugging Face Hub running as a pod (the project image's Python and the tests' fake,
    mounted from a ConfigMap), serving its repositories (48 MiB of noise named SafeTensors beside a
    tiny LLM in GGUF, the same tiny LLM in SafeTensors for vLLM with its LoRAs, a tiny Whisper for
    CTranslate2, a tiny Kokoro in ONNX, a tiny BERT embedder and reranker for infinity) slowly enough
    to watch progress."""
    served = real_cluster.workdir / "hub"
    llm, whisper = served / "tiny-llm", served / "tiny-whisper"
    generate_file(llm / "model.safetensors", HUB_WEIGHTS_BYTES, seed=11)
    (llm / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}')
    write_tiny_llama_gguf(llm / "tiny.gguf")
    # Its header is whole, its tensors cut off: the loader takes it, llama.cpp cannot load it.
    whole = (llm / "tiny.gguf").read_bytes()
    (llm / "broken").mkdir()
    (llm / "broken" / "tiny.gguf").write_bytes(whole[: len(whole) // 2])
    write_tiny_whisper_ct2(whisper)
    write_tiny_llama_safetensors(served / "tiny-vllm")
    write_tiny_kokoro_onnx(served / "tiny-kokoro")
    write_tiny_bert_embedder(served / "tiny-bert-embedder")
    write_tiny_bert_reranker(served / "tiny-bert-reranker")
    write_tiny_llama_lora(served / "sql-lora", base=VLLM_REPO)
    write_tiny_llama_lora(served / "rank128-lora", base=VLLM_REPO, rank=128)
    code = {name: (FAKES / name).read_text() for name in ("__init__.py", "hub.py", "serving.py")}
    labels = {"app": "hub"}
    real_cluster.apply(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": HUB_NAMESPACE}},
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "hub-code", "namespace": HUB_NAMESPACE},
                "data": code,
            },
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "hub", "namespace": HUB_NAMESPACE},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "nodeSelector": ON_REAL_NODE,
                            "containers": [
                                {
                                    "name": "hub",
                                    "image": aima_image,
                                    "imagePullPolicy": "Never",
                                    "command": [
                                        "python",
                                        "-m",
                                        "fakes.hub",
                                        f"{HUB_REPO}=/served/tiny-llm",
                                        f"{WHISPER_REPO}=/served/tiny-whisper",
                                        f"{VLLM_REPO}=/served/tiny-vllm",
                                        f"{KOKORO_REPO}=/served/tiny-kokoro",
                                        f"{EMBEDDER_REPO}=/served/tiny-bert-embedder",
                                        f"{RERANKER_REPO}=/served/tiny-bert-reranker",
                                        f"{LORA_REPO}=/served/sql-lora",
                                        f"{BROKEN_LORA_REPO}=/served/rank128-lora",
                                    ],
                                    "args": ["--port=8080", "--delay-per-chunk=0.1"],
                                    "env": [{"name": "PYTHONPATH", "value": "/code"}],
                                    "readinessProbe": {
                                        "tcpSocket": {"port": 8080},
                                        "periodSeconds": 1,
                                    },
                                    "volumeMounts": [
                                        {"name": "code", "mountPath": "/code/fakes"},
                                        {"name": "served", "mountPath": "/served", "readOnly": True},
                                    ],
                                }
                            ],
                            "volumes": [
                                {"name": "code", "configMap": {"name": "hub-code"}},
                                {"name": "served", "hostPath": {"path": str(served), "type": "Directory"}},
                            ],
                        },
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "hub", "namespace": HUB_NAMESPACE},
                "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
            },
        ]
    )
    real_cluster.kubectl("rollout", "status", "deployment/hub", "-n", HUB_NAMESPACE, "--timeout=120s")
    return f"http://hub.{HUB_NAMESPACE}.svc.cluster.local"


def secret(
    name: str, namespace: str, data: dict[str, str], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


@pytest.fixture(scope="session")
def keys() -> dict[str, str]:
    """The gateway's API key and the MCP server's Bearer key of this session."""
    return {"gateway": f"sk-{secrets.token_hex(16)}", "mcp": f"mcp-{secrets.token_hex(16)}"}


@pytest.fixture(scope="session")
def platform(real_cluster: ControlPlane, aima_image: str, hub_url: str, keys: dict[str, str]) -> Release:
    """`helm install` of the chart: operator with leader election, gateway, MCP over HTTP and the
    device agent on the real node; the operator downloads from the fake Hub."""
    namespace = {"name": PLATFORM_NAMESPACE, "labels": RESTRICTED}
    real_cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": namespace}])
    real_cluster.apply(
        [
            secret("mcp-key", PLATFORM_NAMESPACE, {"key": keys["mcp"]}),
            secret(
                "tests-api-key", PLATFORM_NAMESPACE, {"key": keys["gateway"]}, {"aima.dev/api-key": "true"}
            ),
        ]
    )
    release = install(
        real_cluster,
        image=aima_image,
        namespace=PLATFORM_NAMESPACE,
        values={
            "operator": {"replicas": 2, "env": {"AIMA_HF_ENDPOINT": hub_url}},
            "gateway": {"routeNamespaces": ["*"]},
            "mcp": {"enabled": True, "readOnly": False, "apiKeySecret": "mcp-key"},
            # null removes the chart's default GPU selector (Helm merges maps).
            "deviceAgent": {
                "enabled": True,
                "nodeSelector": {**ON_REAL_NODE, "nvidia.com/gpu.present": None},
                "tolerations": [],
            },
        },
    )
    FIGURES["helm install --wait"] = f"{release.install_seconds:.1f} s"
    return release


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("real node figures")
        for name, figure in FIGURES.items():
            terminalreporter.write_line(f"{name}: {figure}")


@pytest.fixture(scope="session")
def downloaded(real_cluster: ControlPlane, platform: Release) -> dict[str, Any]:
    """The Model `tiny` in the namespace `serving`, downloaded from the fake Hub by the operator's
    loader Job; every progress report seen on the way is kept."""
    real_cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SERVING_NAMESPACE}}])
    real_cluster.apply(
        [
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "tiny", "namespace": SERVING_NAMESPACE},
                "spec": {
                    "source": f"hf://{HUB_REPO}@main",
                    "type": "LLM",
                    "files": {"include": ["model.safetensors", "config.json"]},
                },
            }
        ]
    )
    start, progress, first_progress_after = time.monotonic(), [], None
    deadline = start + 240
    while time.monotonic() < deadline:
        status = get_json(real_cluster, "model", "tiny", "-n", SERVING_NAMESPACE).get("status", {})
        if status.get("progress", {}).get("bytesDone"):
            progress.append(status["progress"])
            first_progress_after = first_progress_after or time.monotonic() - start
        if condition({"status": status}, "Ready") == "True":
            FIGURES["Model apply -> Ready (48 MiB from the in-cluster Hub)"] = (
                f"{time.monotonic() - start:.1f} s"
            )
            return {
                "status": status,
                "progress": progress,
                "namespace": SERVING_NAMESPACE,
                "first_progress_after": first_progress_after,
            }
        time.sleep(0.5)
    pytest.fail(f"the Model was not Ready after 240 s; its status: {status}")


@pytest.fixture(scope="session")
def fake_engine_image(real_cluster: ControlPlane) -> str:
    """The project's image with the test control plane's fake OpenAI engine beside it (images.sh's
    fake-engine): the project's image itself carries only what runs in the cluster."""
    assert real_cluster.real_node is not None
    return real_cluster.real_node.images["fake-engine"]


def engine(image: str) -> dict[str, Any]:
    """An Engine whose one CPU variant runs the fake OpenAI engine from the fake-engine image."""
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "Engine",
        "metadata": {"name": "fake-openai"},
        "spec": {
            "description": "The project's fake OpenAI engine, for tests of the platform's own pods.",
            "variants": [{"name": "cpu", "accelerator": "CPU", "architecture": "amd64", "image": image}],
            "command": ["python", "/opt/aima-fake/engines.py"],  # where images.sh puts it
            "args": ["--port", "{{ engine.port }}", "--model", "{{ service.servedName }}", "--tokens", "5"],
            "port": 8000,
            "health": {
                "path": "/health",
                "startupTimeoutSeconds": 120,
                "periodSeconds": 1,
                "drainSeconds": 1,
            },
            "modelTypes": ["LLM"],
            "modelFormats": ["SafeTensors"],
            "endpoints": ["/v1/chat/completions", "/v1/completions"],
            "resources": {"gpus": 0, "requests": {"cpu": "10m", "memory": "64Mi"}},
            "engineArgsStyle": "FlagAndValue",
        },
    }


@pytest.fixture(scope="session")
def served(
    real_cluster: ControlPlane, platform: Release, downloaded: dict[str, Any], fake_engine_image: str
) -> str:
    """The InferenceService `tiny-chat` Ready on the real node; apply -> Ready is recorded beside a
    plain Deployment of the same pod created in the same run (the floor)."""
    real_cluster.apply([engine(fake_engine_image)])
    start = time.monotonic()
    real_cluster.apply(
        [
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "InferenceService",
                "metadata": {"name": SERVICE, "namespace": SERVING_NAMESPACE},
                "spec": {
                    "modelRef": {"name": "tiny"},
                    "engineRef": {"name": "fake-openai"},
                    "resources": {"gpus": 0},
                },
            }
        ]
    )
    service_seconds = ready_seconds(real_cluster, "isvc", SERVICE, SERVING_NAMESPACE, since=start)
    FIGURES["InferenceService apply -> Ready on the real node"] = f"{service_seconds:.1f} s"
    FIGURES["plain Deployment of the same pod -> Available (floor)"] = f"{floor_seconds(real_cluster):.1f} s"
    return SERVICE


def floor_seconds(plane: ControlPlane) -> float:
    """Create a Deployment with the engine Deployment's own pod template; time it to Available."""
    (made,) = eventually(
        lambda: get_json(
            plane,
            "deployments",
            "",
            "-n",
            SERVING_NAMESPACE,
            f"--selector=aima.dev/inference-service={SERVICE}",
        ).get("items"),
        what="the engine Deployment",
    )
    template = copy.deepcopy(made["spec"]["template"])
    template["metadata"] = {"labels": {"app": "floor"}}
    start = time.monotonic()
    plane.apply(
        [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "floor", "namespace": SERVING_NAMESPACE},
                "spec": {"selector": {"matchLabels": {"app": "floor"}}, "template": template},
            }
        ]
    )
    seconds = ready_seconds(plane, "deployment", "floor", SERVING_NAMESPACE, since=start)
    plane.kubectl("delete", "deployment", "floor", "-n", SERVING_NAMESPACE, "--wait=false")
    return seconds


@pytest.fixture(scope="session")
def gateway_url(real_cluster: ControlPlane, platform: Release) -> str:
    """The gateway's Service, reached on its ClusterIP as a pod would (kube-proxy's rules)."""
    service = get_json(real_cluster, "service", platform.name("gateway"), "-n", platform.namespace)
    return f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}/v1"


@pytest.fixture
def client(gateway_url: str, keys: dict[str, str]) -> Iterator[openai.OpenAI]:
    """The openai SDK with the session's API key, against the gateway's Service."""
    with openai.OpenAI(base_url=gateway_url, api_key=keys["gateway"], max_retries=0, timeout=60) as sdk:
        yield sdk


# Modules that change the shared platform run after the others, in this order: the release test
# upgrades and uninstalls the chart, the teardown test stops the node, then `aima dev up` starts its own.
_LAST = ("test_release.py", "test_teardown.py", "test_make_dev.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return _LAST.index(name) + 1 if item.path.parent == Path(__file__).parent and name in _LAST else 0

    items.sort(key=rank)  # stable: everything else keeps its order
