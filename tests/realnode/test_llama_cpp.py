"""A real engine on the real node: llama.cpp's own server (compiled from the upstream source on the
package index, in an image built with no registry) serving a tiny random GGUF made in the test,
downloaded by the real loader, behind the gateway's Service. Its args are the catalog's own
llama-cpp Engine, rendered by the operator; only the image is the local build."""

from __future__ import annotations

import copy
import itertools
import json
import statistics
import time
from datetime import datetime
from typing import Any

import httpx
import openai
import pytest
import yaml
from suite import FIGURES, HUB_REPO, SERVING_NAMESPACE

from aima_testenv import ControlPlane
from aima_testenv.binaries import REPO_ROOT
from aima_testenv.chart import CHART, Release, helm
from aima_testenv.realnode import NODE_NAME
from reads import assert_runs_locked_down, condition, condition_of, get_json, ready_seconds
from waiting import eventually

pytestmark = pytest.mark.realnode

SERVICE = "tiny-llama"
MODEL_ID = f"{SERVING_NAMESPACE}/{SERVICE}"
TINY_LLAMA_WIDTH = 64  # the hidden size of aima_testenv.models' tiny llama


def local_engine(catalog_name: str, image: str, *, name: str, drain_seconds: int) -> dict[str, Any]:
    """The catalog's Engine ``catalog_name`` as ``name``, its one variant the catalog's amd64 CPU
    variant with the image built here: the catalog entry itself is what the tests prove. Probed
    every second, and drained for ``drain_seconds`` (the tests' streams last well under a second,
    where the default is 30)."""
    engine = yaml.safe_load((REPO_ROOT / "catalog" / "engines" / f"{catalog_name}.yaml").read_text())
    local = copy.deepcopy(engine)
    local["metadata"] = {"name": name}
    (cpu,) = [
        v for v in engine["spec"]["variants"] if (v["accelerator"], v["architecture"]) == ("CPU", "amd64")
    ]
    local["spec"]["variants"] = [cpu | {"image": image}]
    local["spec"]["health"] |= {"periodSeconds": 1, "drainSeconds": drain_seconds}
    return dict(local)


def local_llama_cpp(image: str) -> dict[str, Any]:
    return local_engine("llama-cpp", image, name="llama-cpp-local", drain_seconds=3)


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
                "spec": {
                    "source": f"hf://{HUB_REPO}@main",
                    "type": "LLM",
                    "files": {"include": ["tiny.gguf"]},
                },
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
    # Other modules use this fixture too: the first, which made the service, measured the apply.
    FIGURES.setdefault("llama.cpp InferenceService apply -> Ready (tiny GGUF)", f"{seconds:.1f} s")
    return SERVICE


def test_the_llama_cpp_pod_runs_the_catalogs_command_line(real_cluster: ControlPlane, llama: str) -> None:
    pods = get_json(
        real_cluster, "pods", "", "-n", SERVING_NAMESPACE, f"--selector=aima.dev/inference-service={llama}"
    )
    (pod,) = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
    assert pod["spec"]["nodeName"] == NODE_NAME
    # No API credentials in the engine: neither the token nor its projected volume.
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert not [v for v in pod["spec"].get("volumes", []) if v.get("projected")]
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
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 8 and all(piece.isalpha() for piece in pieces), pieces  # one event per token
    usage = next(c.usage for c in chunks if c.usage is not None)
    assert usage.completion_tokens == 8


def test_llama_cpp_completes_text_through_the_gateway(client: openai.OpenAI, llama: str) -> None:
    reply = client.completions.create(model=MODEL_ID, prompt="Once upon", max_tokens=4)
    assert reply.usage is not None and reply.usage.completion_tokens == 4
    assert json.loads(reply.model_dump_json())["choices"][0]["text"] is not None


def test_llama_cpp_embeds_text_through_the_gateway(
    real_cluster: ControlPlane, llama: str, client: openai.OpenAI
) -> None:
    """The same GGUF declared as an Embedding Model: the catalog starts llama.cpp with --embeddings
    and mean pooling, and the gateway sends /v1/embeddings to it (the vector is the tiny model's
    hidden state: noise, but one per input, of its width, and different per text)."""
    real_cluster.apply(
        [
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "tiny-embed", "namespace": SERVING_NAMESPACE},
                "spec": {
                    "source": f"hf://{HUB_REPO}@main",
                    "type": "Embedding",
                    "files": {"include": ["tiny.gguf"]},
                },
            },
            isvc("tiny-embed", model="tiny-embed"),
        ]
    )
    try:
        ready_seconds(real_cluster, "isvc", "tiny-embed", SERVING_NAMESPACE, since=time.monotonic())
        (pod,) = get_json(
            real_cluster,
            "pods",
            "",
            "-n",
            SERVING_NAMESPACE,
            "--selector=aima.dev/inference-service=tiny-embed",
        )["items"]
        args = pod["spec"]["containers"][0]["args"]
        assert "--embeddings" in args and args[args.index("--pooling") + 1] == "mean"

        reply = client.embeddings.create(
            model=f"{SERVING_NAMESPACE}/tiny-embed", input=["hello world", "goodbye"]
        )
        assert reply.model == f"{SERVING_NAMESPACE}/tiny-embed"
        first, second = (item.embedding for item in reply.data)
        assert len(first) == len(second) == TINY_LLAMA_WIDTH
        assert first != second
        assert reply.usage.prompt_tokens > 0
    finally:
        real_cluster.kubectl("delete", "isvc", "tiny-embed", "-n", SERVING_NAMESPACE, "--wait=false")


def isvc(
    name: str, *, model: str = "tiny-gguf", engine: str = "llama-cpp-local", **spec: Any
) -> dict[str, Any]:
    """An InferenceService on the real node with a small request (the node is shared)."""
    return {
        "apiVersion": "aima.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": SERVING_NAMESPACE},
        "spec": {
            "modelRef": {"name": model},
            "engineRef": {"name": engine},
            "resources": {"gpus": 0, "requests": {"cpu": "50m", "memory": "64Mi"}},
        }
        | spec,
    }


def ready_condition(plane: ControlPlane, name: str) -> dict[str, Any]:
    return condition_of(get_json(plane, "isvc", name, "-n", SERVING_NAMESPACE), "Ready") or {}


def crash_explained(plane: ControlPlane, name: str) -> dict[str, Any] | None:
    found = ready_condition(plane, name)
    return found if found.get("reason") == "CrashLoopBackOff" else None


def test_an_engine_that_refuses_a_flag_is_explained_with_its_exit_code_and_last_lines(
    real_cluster: ControlPlane, llama: str
) -> None:
    real_cluster.apply([isvc("bad-flag", engineArgs={"no-such-flag": "1"})])
    try:
        found = eventually(
            lambda: crash_explained(real_cluster, "bad-flag"), what="the crash to be explained", timeout=90
        )
        assert found["status"] == "False"
        assert "last exit code 1" in found["message"]
        assert "no-such-flag" in found["message"].split("last log lines:", 1)[1]
    finally:
        real_cluster.kubectl("delete", "isvc", "bad-flag", "-n", SERVING_NAMESPACE, "--wait=false")


def test_a_model_the_engine_cannot_load_is_explained_with_the_engines_words(
    real_cluster: ControlPlane, llama: str
) -> None:
    real_cluster.apply(
        [
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "broken-gguf", "namespace": SERVING_NAMESPACE},
                "spec": {
                    "source": f"hf://{HUB_REPO}@main",
                    "type": "LLM",
                    "files": {"include": ["broken/tiny.gguf"]},
                },
            },
            isvc("broken-model", model="broken-gguf"),
        ]
    )
    try:
        found = eventually(
            lambda: crash_explained(real_cluster, "broken-model"),
            what="the crash to be explained",
            timeout=150,
        )
        logs = found["message"].split("last log lines:", 1)[1]
        assert "failed to load model" in logs or "gguf" in logs.lower(), logs
    finally:
        real_cluster.kubectl("delete", "isvc", "broken-model", "-n", SERVING_NAMESPACE, "--wait=false")


def test_traffic_waits_for_the_engines_health_path(
    real_cluster: ControlPlane, llama: str, client: openai.OpenAI
) -> None:
    """An engine probed at a path it does not serve runs but is never Ready, says on what it waits,
    and gets no traffic; pointing the Engine at its real health path makes it Ready."""
    gated = local_llama_cpp(real_cluster.real_node.images["llama-server"])  # type: ignore[union-attr]
    gated["metadata"] = {"name": "llama-cpp-gated"}
    gated["spec"]["health"]["path"] = "/not-the-health-route"
    real_cluster.apply([gated, isvc("gated", engine="llama-cpp-gated")])
    try:
        waiting = eventually(
            lambda: (
                "GET /not-the-health-route" in (found := ready_condition(real_cluster, "gated"))["message"]
                and found
            ),
            what="the service to say it waits on its engine's health path",
            timeout=90,
        )
        assert waiting["status"] == "False" and waiting["reason"] == "Starting"
        assert "waiting for GET /not-the-health-route on port 8080" in waiting["message"]
        (pod,) = get_json(
            real_cluster, "pods", "", "-n", SERVING_NAMESPACE, "--selector=aima.dev/inference-service=gated"
        )["items"]
        assert pod["status"]["phase"] == "Running"
        assert pod["status"]["containerStatuses"][0]["ready"] is False
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(
                model=f"{SERVING_NAMESPACE}/gated", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
            )
        assert refused.value.status_code == 503
        assert "no replica is ready" in refused.value.message

        real_cluster.kubectl(
            "patch",
            "engine",
            "llama-cpp-gated",
            "--type=merge",
            "-p",
            '{"spec":{"health":{"path":"/health"}}}',
        )
        ready_seconds(real_cluster, "isvc", "gated", SERVING_NAMESPACE, since=time.monotonic())
        reply = client.chat.completions.create(
            model=f"{SERVING_NAMESPACE}/gated", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 2
    finally:
        real_cluster.kubectl("delete", "isvc", "gated", "-n", SERVING_NAMESPACE, "--wait=false")


def test_the_charts_engine_podmonitor_scrapes_llama_cpps_own_metrics(
    real_cluster: ControlPlane, llama: str, client: openai.OpenAI
) -> None:
    """The chart's engine PodMonitor, followed as Prometheus would: its selector, its namespaces, its
    relabelling (keep pods that name a metrics path, scrape that path) and its port."""
    client.completions.create(model=MODEL_ID, prompt="Once upon", max_tokens=3)
    rendered = helm(
        real_cluster,
        "template",
        "aima",
        str(CHART),
        "--show-only=templates/engines/podmonitor.yaml",
        values={"metrics": {"serviceMonitor": {"enabled": True}}},
    )
    monitor = yaml.safe_load(rendered)["spec"]
    assert monitor["namespaceSelector"] == {"any": True}
    selector = ",".join(f"{k}={v}" for k, v in monitor["selector"]["matchLabels"].items())
    pods = get_json(real_cluster, "pods", "", "--all-namespaces", f"--selector={selector}")["items"]
    (endpoint,) = monitor["podMetricsEndpoints"]
    kept = {
        p["metadata"]["labels"]["aima.dev/inference-service"]: p
        for p in pods
        if scraped_path(p, endpoint["relabelings"]) and p["status"].get("podIP")
    }
    assert llama in kept and "tiny-chat" not in kept  # the fake engine names no metrics path
    pod = kept[llama]
    (port,) = [
        p["containerPort"] for p in pod["spec"]["containers"][0]["ports"] if p["name"] == endpoint["port"]
    ]
    url = f"http://{pod['status']['podIP']}:{port}{scraped_path(pod, endpoint['relabelings'])}"
    text = httpx.get(url, timeout=10).text
    counted = [line for line in text.splitlines() if line.startswith("llamacpp:tokens_predicted_total")]
    assert counted and float(counted[0].split()[-1]) >= 3, text[:2000]


def scraped_path(pod: dict[str, Any], relabelings: list[dict[str, Any]]) -> str | None:
    """The path Prometheus would scrape after the PodMonitor's relabelling, None when it drops the pod;
    only what this PodMonitor uses: a keep and a __metrics_path__ rule on pod annotations."""
    annotations = pod["metadata"].get("annotations", {})
    path = "/metrics"
    for rule in relabelings:
        (source,) = rule["sourceLabels"]
        prefix = "__meta_kubernetes_pod_annotation_"
        if not source.startswith(prefix):
            continue
        value = next(
            (
                v
                for k, v in annotations.items()
                if k.replace(".", "_").replace("/", "_").replace("-", "_") == source[len(prefix) :]
            ),
            "",
        )
        if rule.get("action") == "keep" and not value:
            return None
        if rule.get("targetLabel") == "__metrics_path__" and value:
            path = value
    return path


# -- figures: what the platform adds to a real engine (printed at the end of the run) -------------


def stream_timings(client: openai.OpenAI, model: str, *, tokens: int) -> tuple[float, list[float]]:
    """Seconds to the first token of one streamed chat, and between its events.

    An event may carry more than one token: vLLM merges the outputs its client has not read yet, so
    the count of tokens is checked in the usage, not in the events."""
    start, stamps, usage = time.perf_counter(), [], None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        usage = chunk.usage or usage
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
    assert usage is not None and usage.completion_tokens == tokens, usage
    assert 1 <= len(stamps) <= tokens
    return stamps[0] - start, [later - earlier for earlier, later in itertools.pairwise(stamps)]


def median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


def the_pod(plane: ControlPlane, selector: str) -> dict[str, Any]:
    pods = get_json(plane, "pods", "", "-n", SERVING_NAMESPACE, f"--selector={selector}")["items"]
    (pod,) = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return dict(pod)


def test_figures_of_llama_cpp_through_the_gateway_against_direct_calls(
    real_cluster: ControlPlane, llama: str, client: openai.OpenAI
) -> None:
    """Time to first token and between tokens of the same streams through the gateway's Service and
    straight to the pod, interleaved; the engine's start and memory as the kubelet saw them."""
    pod = the_pod(real_cluster, f"aima.dev/inference-service={llama}")
    direct = openai.OpenAI(base_url=f"http://{pod['status']['podIP']}:8080/v1", api_key="-", max_retries=0)
    firsts: dict[str, list[float]] = {"gateway": [], "direct": []}
    gaps: dict[str, list[float]] = {"gateway": [], "direct": []}
    for _ in range(20):
        for way, sdk in (("gateway", client), ("direct", direct)):
            first, between = stream_timings(sdk, MODEL_ID, tokens=16)
            firsts[way].append(first)
            gaps[way].extend(between)
    gateway, straight = median_ms(firsts["gateway"]), median_ms(firsts["direct"])
    FIGURES["llama.cpp time to first token p50, gateway / direct (20 streams each)"] = (
        f"{gateway:.1f} / {straight:.1f} ms (gateway adds {gateway - straight:.1f} ms)"
    )
    FIGURES["llama.cpp between tokens p50, gateway / direct"] = (
        f"{median_ms(gaps['gateway']):.2f} / {median_ms(gaps['direct']):.2f} ms"
    )
    FIGURES["llama.cpp container start -> Ready (kubelet, 1 s resolution)"] = f"{start_to_ready(pod)} s"
    FIGURES["llama.cpp memory with the tiny GGUF (working set)"] = (
        f"{working_set_mib(real_cluster, pod):.0f} MiB"
    )


def start_to_ready(pod: dict[str, Any]) -> int:
    """Seconds from the engine container's start to the pod's Ready, as the kubelet recorded them."""
    (container,) = pod["status"]["containerStatuses"]
    started = datetime.fromisoformat(container["state"]["running"]["startedAt"])
    ready = datetime.fromisoformat(
        next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")["lastTransitionTime"]
    )
    return (ready - started).seconds


def working_set_mib(plane: ControlPlane, pod: dict[str, Any]) -> float:
    """The engine container's memory working set, from the kubelet's summary."""
    summary = json.loads(
        plane.kubectl("get", "--raw", f"/api/v1/nodes/{NODE_NAME}/proxy/stats/summary").stdout
    )
    (stats,) = [p for p in summary["pods"] if p["podRef"]["name"] == pod["metadata"]["name"]]
    working_set = stats["containers"][0]["memory"]["workingSetBytes"]
    assert working_set > 0
    return float(working_set) / 2**20


def test_figures_apply_to_first_token_against_the_same_pod_started_by_hand(
    real_cluster: ControlPlane, llama: str, client: openai.OpenAI
) -> None:
    """Apply -> first token through the gateway, against a plain Deployment of the engine Deployment's
    own pod template -> first token straight from its pod (the floor: what Kubernetes and the engine
    take without AIMA)."""

    def answers(sdk: openai.OpenAI, model: str) -> bool:
        try:
            sdk.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
            )
        except openai.APIError:
            return False
        return True

    start = time.monotonic()
    real_cluster.apply([isvc("first-token")])
    eventually(lambda: answers(client, f"{SERVING_NAMESPACE}/first-token"), what="a first token", timeout=120)
    through_aima = time.monotonic() - start
    made = get_json(real_cluster, "deployment", "first-token", "-n", SERVING_NAMESPACE)
    template = copy.deepcopy(made["spec"]["template"])
    template["metadata"] = {"labels": {"app": "by-hand"}}
    start = time.monotonic()
    real_cluster.apply(
        [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "by-hand", "namespace": SERVING_NAMESPACE},
                "spec": {"selector": {"matchLabels": {"app": "by-hand"}}, "template": template},
            }
        ]
    )

    def by_hand_answers() -> bool:
        pods = get_json(real_cluster, "pods", "", "-n", SERVING_NAMESPACE, "--selector=app=by-hand")["items"]
        ip = pods[0]["status"].get("podIP") if pods else None
        return bool(ip) and answers(
            openai.OpenAI(base_url=f"http://{ip}:8080/v1", api_key="-", max_retries=0), "-"
        )

    try:
        eventually(by_hand_answers, what="a first token from the pod started by hand", timeout=120)
        by_hand = time.monotonic() - start
    finally:
        real_cluster.kubectl(
            "delete",
            "deployment",
            "by-hand",
            "isvc",
            "first-token",
            "-n",
            SERVING_NAMESPACE,
            "--wait=false",
            check=False,
        )
    FIGURES["llama.cpp apply -> first token: InferenceService via gateway / same pod by hand"] = (
        f"{through_aima:.1f} / {by_hand:.1f} s"
    )


def test_llama_cpp_runs_as_its_user_on_a_read_only_root(real_cluster: ControlPlane, llama: str) -> None:
    """The catalog's security defaults hold for the real engine: it loads and serves as user
    65532 with a read-only root filesystem, writing only under HOME (an emptyDir)."""
    assert_runs_locked_down(real_cluster, the_pod(real_cluster, f"aima.dev/inference-service={llama}"))
