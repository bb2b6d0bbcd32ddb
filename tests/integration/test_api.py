"""The AIMA API on a real API server: the CRDs install, every example applies, `kubectl explain`
reads like documentation, and invalid objects are refused with messages a person understands."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from aima.api import crds
from aima_testenv import ControlPlane

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_FILES = sorted(
    [*ROOT.glob("examples/*.yaml"), *ROOT.glob("catalog/*/*.yaml")], key=lambda p: str(p.relative_to(ROOT))
)


def test_crds_are_established(aima_crds: ControlPlane) -> None:
    for definition in crds.crds():
        result = aima_crds.kubectl("get", "crd", definition["metadata"]["name"], "-o", "json")
        conditions = {c["type"]: c["status"] for c in json.loads(result.stdout)["status"]["conditions"]}
        assert conditions["Established"] == "True"
        assert conditions["NamesAccepted"] == "True"


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_and_catalog_file_applies(aima_crds: ControlPlane, namespace: str, path: Path) -> None:
    # Engines are cluster-scoped and shared by every test, so those are checked with a server dry run.
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    cluster_scoped = all(d["kind"] == "Engine" for d in documents)
    dry_run = ["--dry-run=server"] if cluster_scoped else []
    result = aima_crds.kubectl("apply", "-n", namespace, *dry_run, "-f", str(path), check=False)
    assert result.returncode == 0, result.stderr
    if not cluster_scoped:
        # Not `get aima`: that category also lists the cluster-scoped Engines the operator installs.
        kinds = "models,inferenceservices,pipelines,pipelineruns"
        listed = aima_crds.kubectl("get", kinds, "-n", namespace, "-o", "name").stdout.split()
        assert len(listed) == len(documents), listed


def test_catalog_engines_install_for_real(aima_crds: ControlPlane) -> None:
    aima_crds.kubectl(
        # The operator may have installed them already under its own field manager: take them over.
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=aima-tests",
        "-f",
        str(ROOT / "catalog/engines"),
    )
    table = aima_crds.kubectl("get", "engines").stdout
    assert "vllm" in table and "TYPES" in table and "PORT" in table


def test_kubectl_explain_shows_descriptions(aima_crds: ControlPlane) -> None:
    def explain(field: str) -> str:
        return " ".join(aima_crds.kubectl("explain", field).stdout.split())  # kubectl wraps lines

    resources = explain("isvc.spec.resources")
    assert "GPUs, CPU and memory per replica" in resources
    assert "gpus <integer> NVIDIA GPUs per replica (nvidia.com/gpu)" in resources
    assert "nvidia.com/gpu.product" in resources
    assert "hf://org/repo[@revision]" in explain("models.spec.source")
    assert "each entry becomes exactly one argument" in explain("engines.spec.args")
    assert "A Pipeline chains units" in explain("pipelines")


def test_scale_subresource_and_category(aima_crds: ControlPlane, namespace: str) -> None:
    aima_crds.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples/service.yaml"))
    aima_crds.kubectl("scale", "-n", namespace, "isvc/qwen-small", "--replicas=3")
    replicas = aima_crds.kubectl("get", "-n", namespace, "isvc/qwen-small", "-o", "jsonpath={.spec.replicas}")
    assert replicas.stdout == "3"
    scale = json.loads(
        aima_crds.kubectl(
            "get",
            "--raw",
            f"/apis/aima.dev/v1alpha1/namespaces/{namespace}/inferenceservices/qwen-small/scale",
        ).stdout
    )
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
    assert "qwen-small" in aima_crds.kubectl("get", "aima", "-n", namespace).stdout


def test_defaults_are_applied_by_the_api_server(aima_crds: ControlPlane, namespace: str) -> None:
    aima_crds.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples/service.yaml"))
    isvc = json.loads(aima_crds.kubectl("get", "-n", namespace, "isvc/qwen-small", "-o", "json").stdout)
    assert isvc["spec"]["replicas"] == 1 and isvc["spec"]["suspend"] is False
    model = json.loads(
        aima_crds.kubectl("get", "-n", namespace, "model/qwen2.5-0.5b-instruct", "-o", "json").stdout
    )
    assert model["spec"]["cache"]["reclaimPolicy"] == "Delete"


# -- invalid objects ---------------------------------------------------------------------------


def model(**spec: Any) -> dict[str, Any]:
    return {
        "kind": "Model",
        "metadata": {"name": "m"},
        "spec": {"source": "hf://org/repo", "type": "LLM"} | spec,
    }


def isvc(name: str = "svc", **spec: Any) -> dict[str, Any]:
    return {
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"modelRef": {"name": "m"}} | spec,
    }


def engine(**spec: Any) -> dict[str, Any]:
    base = {
        "variants": [{"name": "cuda", "accelerator": "NvidiaGPU", "image": "example.com/engine:1"}],
        "modelTypes": ["LLM"],
        "modelFormats": ["SafeTensors"],
        "endpoints": ["/v1/chat/completions"],
    }
    return {"kind": "Engine", "metadata": {"name": f"bad-{secrets.token_hex(3)}"}, "spec": base | spec}


def pipeline(*steps: dict[str, Any], **spec: Any) -> dict[str, Any]:
    default_steps = list(steps) or [{"id": "a", "unit": "inference.chat"}]
    return {"kind": "Pipeline", "metadata": {"name": "p"}, "spec": {"steps": default_steps} | spec}


def run(**spec: Any) -> dict[str, Any]:
    return {"kind": "PipelineRun", "metadata": {"name": "r"}, "spec": spec}


def without(obj: dict[str, Any], field: str) -> dict[str, Any]:
    del obj["spec"][field]
    return obj


def named(obj: dict[str, Any], name: str) -> dict[str, Any]:
    obj["metadata"]["name"] = name
    return obj


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "value": "present"}

INVALID: list[tuple[str, dict[str, Any], str]] = [
    # Model
    ("model without source", without(model(), "source"), "spec.source: Required value"),
    (
        "model with ftp source",
        model(source="ftp://host/w"),
        "source must start with one of hf://, modelscope://",
    ),
    ("hf source without repo", model(source="hf://gpt2"), "Hugging Face sources look like hf://org/repo"),
    ("lora without its base", model(type="LoRA"), "a LoRA Model names the Model it adapts in baseModelRef"),
    (
        "base named by a model that is no lora",
        model(baseModelRef={"name": "qwen"}),
        "and only a LoRA Model does",
    ),
    (
        "lora read in place",
        model(type="LoRA", baseModelRef={"name": "qwen"}, source="pvc://weights/sql"),
        "a LoRA adapter is downloaded into its base Model's volume",
    ),
    (
        "adapter named twice",
        isvc(
            adapters=[{"name": "sql", "modelRef": {"name": "a"}}, {"name": "sql", "modelRef": {"name": "b"}}]
        ),
        "adapter names must be unique",
    ),
    (
        "adapter name with a colon",
        isvc(adapters=[{"name": "sql:v1", "modelRef": {"name": "a"}}]),
        "spec.adapters[0].name in body should match",
    ),
    (
        "traffic weights that do not sum to 100",
        isvc(traffic=[{"service": "chat", "weight": 90}, {"service": "chat-v2", "weight": 20}]),
        "weights must sum to 100",
    ),
    (
        "traffic naming a service twice",
        isvc(traffic=[{"service": "chat-v2", "weight": 50}, {"service": "chat-v2", "weight": 50}]),
        "traffic names each service once",
    ),
    (
        "traffic weight over 100",
        isvc(traffic=[{"service": "chat-v2", "weight": 101}]),
        "spec.traffic[0].weight",
    ),
    (
        "pvc source with bad claim",
        model(source="pvc://Bad_Claim/x"),
        "PVC sources look like pvc://claim-name/path",
    ),
    (
        "pvc source climbing out of its claim",
        model(source="pvc://claim/../../etc"),
        "must not contain '..' segments",
    ),
    ("pvc source naming .. as its claim", model(source="pvc://../etc"), "must not contain '..' segments"),
    ("hf revision climbing out", model(source="hf://org/repo@../../etc"), "must not contain '..' segments"),
    (
        "modelscope repo climbing out",
        model(source="modelscope://org/../repo"),
        "must not contain '..' segments",
    ),
    ("ollama name climbing out", model(source="ollama://../../etc:latest"), "must not contain '..' segments"),
    (
        "s3 prefix climbing out",
        model(source="s3://bucket/models/../../secrets"),
        "must not contain '..' segments",
    ),
    (
        "https path climbing out, escaped",
        model(source="https://host/files/%2e%2E/model.gguf"),
        "must not contain '..' segments",
    ),
    (
        "https source with credentials",
        model(source="https://user:pass@host/model.gguf"),
        "must not carry credentials (user:password@host)",
    ),
    (
        "s3 source with credentials",
        model(source="s3://key:secret@bucket/x"),
        "put them in a Secret named by secretRef",
    ),
    ("empty include pattern", model(files={"include": [""]}), "file patterns cannot be empty"),
    ("blank exclude pattern", model(files={"exclude": ["*.pth", "  "]}), "file patterns cannot be empty"),
    ("unknown model type", model(type="Chatbot"), 'Unsupported value: "Chatbot"'),
    ("ollama format with hf source", model(format="Ollama"), "format Ollama goes with ollama:// sources"),
    (
        "ollama source with gguf format",
        model(source="ollama://llama3", format="GGUF"),
        "format Ollama goes with",
    ),
    ("checksum not sha256", model(checksums={"model.safetensors": "abc"}), "lowercase hex sha256 digests"),
    ("cache size not a quantity", model(cache={"size": "lots"}), "cache.size must be a positive quantity"),
    ("cache size zero", model(cache={"size": "0"}), "cache.size must be a positive quantity"),
    (
        "cache for a pvc source",
        model(source="pvc://weights/m", cache={"size": "1Gi"}),
        "a pvc:// source is used in place",
    ),
    ("bad reclaim policy", model(cache={"reclaimPolicy": "Recycle"}), 'Unsupported value: "Recycle"'),
    (
        "model name over 63 characters",
        named(model(), "m" * 64),
        "Model names are at most 63 lowercase letters",
    ),
    # InferenceService
    ("service without modelRef", without(isvc(), "modelRef"), "spec.modelRef: Required value"),
    ("service name starting with a digit", isvc(name="1chat"), "InferenceService names become Service names"),
    ("negative replicas", isvc(replicas=-1), "spec.replicas: Invalid value: -1"),
    ("too many gpus", isvc(resources={"gpus": 65}), "should be less than or equal to 64"),
    (
        "gpu product without gpus",
        isvc(resources={"gpus": 0, "gpuProduct": "NVIDIA-H100"}),
        "gpus must be at least 1",
    ),
    (
        "gpus as a request",
        isvc(resources={"requests": {"nvidia.com/gpu": 1}}),
        "set GPUs with spec.resources.gpus",
    ),
    (
        "cpu not a quantity",
        isvc(resources={"requests": {"cpu": "lots"}}),
        "must be a quantity such as 4, 500m or 16Gi",
    ),
    (
        "autoscaling min above max",
        isvc(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
        "minReplicas must not be greater than autoscaling.maxReplicas",
    ),
    ("engine arg with dashes", isvc(engineArgs={"--max-model-len": 8192}), "engineArgs keys are flag names"),
    (
        "engine arg with a space",
        isvc(engineArgs={"max-model-len 1 --x": "1"}),
        "engineArgs keys are flag names",
    ),
    ("env name with a dash", isvc(env={"HF-TOKEN": "x"}), "environment variable names are letters, digits"),
    (
        "envFrom with both sources",
        isvc(envFrom=[{"secretRef": {"name": "s"}, "configMapRef": {"name": "c"}}]),
        "exactly one of secretRef or configMapRef",
    ),
    ("toleration Exists with value", isvc(scheduling={"tolerations": [GPU_TOLERATION]}), "remove value"),
    (
        "toleration with bad effect",
        isvc(scheduling={"tolerations": [{"key": "k", "effect": "Never"}]}),
        'Unsupported value: "Never"',
    ),
    # Engine
    ("engine without variants", engine(variants=[]), "spec.variants: Invalid value"),
    (
        "engine with duplicate variants",
        engine(variants=[{"name": "cuda", "accelerator": "CPU", "image": "a:1"}] * 2),
        "variant names must be unique",
    ),
    ("engine port out of range", engine(port=70000), "should be less than or equal to 65535"),
    ("health path without slash", engine(health={"path": "health"}), "health.path must start with /"),
    (
        "unknown accelerator",
        engine(variants=[{"name": "tpu", "accelerator": "TPU", "image": "a:1"}]),
        'Unsupported value: "TPU"',
    ),
    ("unknown endpoint", engine(endpoints=["/v1/responses"]), 'Unsupported value: "/v1/responses"'),
    (
        "variant name with capitals",
        engine(variants=[{"name": "CUDA", "accelerator": "CPU", "image": "a:1"}]),
        "variant names are lowercase",
    ),
    # Pipeline
    (
        "duplicate step ids",
        pipeline({"id": "chat", "unit": "inference.chat"}, {"id": "chat", "unit": "inference.chat"}),
        "step ids must be unique",
    ),
    (
        "depends on a later step",
        pipeline(
            {"id": "a", "unit": "inference.chat", "dependsOn": ["b"]}, {"id": "b", "unit": "inference.chat"}
        ),
        "dependsOn may only name steps listed before the step",
    ),
    (
        "depends on itself",
        pipeline({"id": "a", "unit": "inference.chat", "dependsOn": ["a"]}),
        "dependsOn may only name steps listed before the step",
    ),
    (
        "depends on an unknown step",
        pipeline(
            {"id": "a", "unit": "inference.chat"}, {"id": "b", "unit": "inference.chat", "dependsOn": ["zz"]}
        ),
        "dependsOn may only name steps listed before the step",
    ),
    ("unit without domain", pipeline({"id": "a", "unit": "chat"}), "unit names look like domain.action"),
    (
        "step id with dash",
        pipeline({"id": "my-step", "unit": "inference.chat"}),
        "step ids are lowercase letters",
    ),
    ("no steps", pipeline(steps=[]), "spec.steps: Invalid value"),
    (
        "bad failure policy",
        pipeline({"id": "a", "unit": "inference.chat", "onFailure": "Ignore"}),
        'Unsupported value: "Ignore"',
    ),
    (
        "duplicate input names",
        pipeline(inputs=[{"name": "audio"}, {"name": "audio"}]),
        "input names must be unique",
    ),
    # PipelineRun
    ("run without pipelineRef", run(inputs={"audio": "x"}), "spec.pipelineRef: Required value"),
    (
        "run with zero timeout",
        run(pipelineRef={"name": "p"}, timeoutSeconds=0),
        "spec.timeoutSeconds: Invalid value: 0",
    ),
]


@pytest.mark.parametrize(("case", "obj", "message"), INVALID, ids=[case for case, _, _ in INVALID])
def test_invalid_objects_are_refused_with_a_clear_message(
    aima_crds: ControlPlane, namespace: str, case: str, obj: dict[str, Any], message: str
) -> None:
    manifest = {"apiVersion": "aima.dev/v1alpha1"} | obj
    result = aima_crds.kubectl(
        "create", "-n", namespace, "--dry-run=server", "-f", "-", stdin=json.dumps(manifest), check=False
    )
    assert result.returncode != 0, f"{case}: the API server accepted {manifest}"
    assert message in result.stderr, f"{case}: {result.stderr}"


@pytest.mark.parametrize(
    "source",
    [
        "hf://org/repo.v2@refs/pr/1",
        "https://host/v1..2/model.gguf?download=true#sha256=" + "0" * 64,
        "ollama://llama3.2:1b",
        "s3://bucket/a.b/..c",
        "pvc://claim/models/..hidden",
    ],
)
def test_sources_with_dots_that_climb_nowhere_are_accepted(
    aima_crds: ControlPlane, namespace: str, source: str
) -> None:
    manifest = {"apiVersion": "aima.dev/v1alpha1"} | model(source=source)
    result = aima_crds.kubectl(
        "create", "-n", namespace, "--dry-run=server", "-f", "-", stdin=json.dumps(manifest), check=False
    )
    assert result.returncode == 0, result.stderr


def test_there_are_at_least_25_invalid_cases() -> None:
    assert len(INVALID) >= 25


UpdateCase = tuple[str, dict[str, Any], Callable[[dict[str, Any]], None], str]

TRANSITIONS: list[UpdateCase] = [
    (
        "resume a cancelled run",
        run(pipelineRef={"name": "p"}, cancel=True),
        lambda o: o["spec"].update(cancel=False),
        "a cancelled run cannot be resumed",
    ),
    (
        "point a run at another pipeline",
        run(pipelineRef={"name": "p"}),
        lambda o: o["spec"].update(pipelineRef={"name": "q"}),
        "pipelineRef cannot change",
    ),
    (
        "change the storage class of a cache",
        model(cache={"storageClassName": "fast"}),
        lambda o: o["spec"]["cache"].update(storageClassName="slow"),
        "cache.storageClassName cannot change",
    ),
]


@pytest.mark.parametrize(("case", "obj", "change", "message"), TRANSITIONS, ids=[c for c, *_ in TRANSITIONS])
def test_invalid_updates_are_refused(
    aima_crds: ControlPlane,
    namespace: str,
    case: str,
    obj: dict[str, Any],
    change: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    manifest = {"apiVersion": "aima.dev/v1alpha1"} | obj
    aima_crds.kubectl("create", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))
    change(manifest)
    result = aima_crds.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest), check=False)
    assert result.returncode != 0, f"{case}: the API server accepted the update"
    assert message in result.stderr, f"{case}: {result.stderr}"
