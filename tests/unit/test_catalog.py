"""The catalog validates against the API models, covers the engines and presets the issue asks for,
and every engine template renders for a model it serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from aima import catalog
from aima.api.engine import Accelerator, Architecture, Engine, OpenAIEndpoint
from aima.api.inference_service import InferenceService
from aima.api.model import Model, ModelFormat, ModelStatus, ModelType
from aima.domain.engine_args import EngineTemplateError, render_args, render_env, template_context
from aima.domain.pipeline_refs import reference_problems

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CATALOG = catalog.load_catalog(ROOT / "catalog")
ENGINES = {e.metadata.name or "": e for e in CATALOG.engines}
MODELS = {m.metadata.name or "": m for m in CATALOG.models}
PIPELINES = {p.metadata.name or "": p for p in CATALOG.pipelines}


def test_catalog_has_the_engines_the_issue_lists() -> None:
    assert {"vllm", "sglang", "ollama", "llama-cpp", "speaches", "kokoro", "infinity"} <= ENGINES.keys()
    vllm = ENGINES["vllm"].spec.variants
    assert {(v.accelerator, v.architecture) for v in vllm} >= {
        (Accelerator.NVIDIA_GPU, Architecture.AMD64),
        (Accelerator.NVIDIA_GPU, Architecture.ARM64),
    }
    assert OpenAIEndpoint.AUDIO_TRANSCRIPTIONS in ENGINES["speaches"].spec.endpoints
    assert OpenAIEndpoint.AUDIO_SPEECH in ENGINES["kokoro"].spec.endpoints
    assert {OpenAIEndpoint.EMBEDDINGS, OpenAIEndpoint.RERANK} <= set(ENGINES["infinity"].spec.endpoints)
    assert any(v.accelerator is Accelerator.CPU for v in ENGINES["llama-cpp"].spec.variants)


def test_text_to_speech_runs_on_cpus_with_fastkokoro_which_answers_to_one_name() -> None:
    fastkokoro = ENGINES["fastkokoro"].spec
    assert [v.accelerator for v in fastkokoro.variants] == [Accelerator.CPU]
    assert (fastkokoro.resources.gpus, fastkokoro.model_name) == (0, "kokoro")
    assert ENGINES["kokoro"].spec.model_name == "kokoro"


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_engine_is_complete_and_pinned(name: str) -> None:
    spec = ENGINES[name].spec
    for variant in spec.variants:
        repository, _, tag = variant.image.rpartition(":")
        assert repository and tag and tag != "latest", f"{variant.image} is not pinned"
    assert spec.description
    assert spec.health.path.startswith("/")
    assert spec.health.startup_timeout_seconds >= 300
    assert spec.model_types and spec.model_formats and spec.endpoints
    assert spec.resources.requests and spec.resources.limits
    assert spec.args or spec.env, "an engine is configured by args or env"


def test_catalog_has_the_model_presets_the_issue_lists() -> None:
    types = {(m.spec.type, m.spec.format) for m in MODELS.values()}
    assert (ModelType.LLM, ModelFormat.SAFETENSORS) in types
    assert (ModelType.LLM, ModelFormat.GGUF) in types  # the small CPU model
    assert {ModelType.ASR, ModelType.TTS, ModelType.EMBEDDING} <= {t for t, _ in types}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_preset_has_an_engine(name: str) -> None:
    model = MODELS[name]
    assert [e for e in ENGINES.values() if serves(e, model)], f"no catalog engine serves {name}"


def serves(engine: Engine, model: Model) -> bool:
    return model.spec.type in engine.spec.model_types and model.spec.format in engine.spec.model_formats


def test_pipeline_templates_reference_only_what_exists() -> None:
    assert {"voice-assistant", "rag"} <= PIPELINES.keys()
    for pipeline in PIPELINES.values():
        assert reference_problems(pipeline.spec) == []
    units = [step.unit for step in PIPELINES["voice-assistant"].spec.steps]
    assert units == ["inference.transcribe", "inference.chat", "inference.synthesize"]
    for pipeline in PIPELINES.values():
        for value in pipeline.spec.config.values():
            if isinstance(value, str) and value in MODELS:
                assert MODELS[value].spec.type  # config names catalog models


def render_cases() -> list[tuple[str, str, str]]:
    cases = []
    for engine in sorted(ENGINES.values(), key=lambda e: e.metadata.name or ""):
        for variant in engine.spec.variants:
            model = (
                next(m for m in MODELS.values() if serves(engine, m))
                if engine.metadata.name != "ollama"
                else None
            )
            cases.append(
                (engine.metadata.name or "", variant.name, (model.metadata.name or "") if model else "ollama")
            )
    return cases


OLLAMA_MODEL = Model.model_validate(
    {
        "metadata": {"name": "llama3.2"},
        "spec": {"source": "ollama://llama3.2:1b", "type": "LLM", "format": "Ollama"},
    }
)


@pytest.mark.parametrize(("engine_name", "variant_name", "model_name"), render_cases())
def test_every_engine_variant_renders_for_a_model_it_serves(
    engine_name: str, variant_name: str, model_name: str
) -> None:
    engine = ENGINES[engine_name]
    variant = next(v for v in engine.spec.variants if v.name == variant_name)
    model = OLLAMA_MODEL if model_name == "ollama" else MODELS[model_name]
    model = model.model_copy(update={"status": ModelStatus(weights_file="model.gguf")})
    service = InferenceService.model_validate(
        {"metadata": {"name": "svc", "namespace": "ns"}, "spec": {"modelRef": {"name": model_name}}}
    )
    gpus = 0 if variant.accelerator is Accelerator.CPU else 1
    context = template_context(
        model=model, service=service, engine=engine, variant=variant, model_path="/models/m", gpus=gpus
    )
    args = render_args(
        [*engine.spec.command, *engine.spec.args, *variant.extra_args], engine=engine_name, context=context
    )
    env = render_env({**engine.spec.env, **variant.env}, engine=engine_name, context=context)
    assert all("{{" not in a and "{%" not in a for a in [*args, *env.values()])


def test_vllm_renders_the_expected_command_line() -> None:
    engine = ENGINES["vllm"]
    service = InferenceService.model_validate(
        {"metadata": {"name": "chat", "namespace": "ns"}, "spec": {"modelRef": {"name": "qwen3-8b"}}}
    )
    context = template_context(
        model=MODELS["qwen3-8b"],
        service=service,
        engine=engine,
        variant=engine.spec.variants[0],
        model_path="/models/qwen3-8b",
        gpus=2,
    )
    assert render_args([*engine.spec.command, *engine.spec.args], engine="vllm", context=context) == [
        "vllm",
        "serve",
        "/models/qwen3-8b",
        "--served-model-name=chat",
        "--host=0.0.0.0",
        "--port=8000",
        "--tensor-parallel-size=2",
    ]


def rendered(engine_name: str, model: Model, *, variant: str, gpus: int) -> list[str]:
    engine = ENGINES[engine_name]
    model = model.model_copy(update={"status": ModelStatus(weights_file="model.gguf")})
    service = InferenceService.model_validate(
        {"metadata": {"name": "s"}, "spec": {"modelRef": {"name": "m"}}}
    )
    chosen = next(v for v in engine.spec.variants if v.name == variant)
    context = template_context(
        model=model, service=service, engine=engine, variant=chosen, model_path="/m", gpus=gpus
    )
    return render_args([*engine.spec.command, *engine.spec.args], engine=engine_name, context=context)


def test_vllm_without_gpus_passes_no_tensor_parallel_size() -> None:
    """vLLM refuses --tensor-parallel-size=0, which a replica without GPUs would otherwise pass."""
    variant = ENGINES["vllm"].spec.variants[0].name
    args = rendered("vllm", MODELS["qwen3-8b"], variant=variant, gpus=0)
    assert not [a for a in args if a.startswith("--tensor-parallel-size")]


@pytest.mark.parametrize(
    ("model_type", "flags"),
    [("LLM", []), ("Embedding", ["--embeddings", "--pooling", "mean"]), ("Rerank", ["--rerank"])],
)
def test_llama_cpp_serves_embeddings_and_rerank_only_with_their_flags(
    model_type: str, flags: list[str]
) -> None:
    """llama-server answers 501 to /v1/embeddings without --embeddings and serves /v1/rerank only
    with --rerank; /metrics needs --metrics."""
    model = MODELS["qwen2.5-0.5b-instruct-gguf"].model_copy(deep=True)
    model.spec.type = ModelType(model_type)
    args = rendered("llama-cpp", model, variant="cpu", gpus=0)
    assert [a for a in args if a in {"--embeddings", "--pooling", "mean", "--rerank"}] == flags
    assert "--metrics" in args


def test_infinity_is_probed_where_it_answers() -> None:
    """--url-prefix=/v1 moves infinity's API routes but not /health."""
    assert ENGINES["infinity"].spec.health.path == "/health"


def test_llama_cpp_needs_the_weights_file() -> None:
    engine = ENGINES["llama-cpp"]
    service = InferenceService.model_validate(
        {"metadata": {"name": "s"}, "spec": {"modelRef": {"name": "m"}}}
    )
    model = MODELS["qwen2.5-0.5b-instruct-gguf"]
    context = template_context(
        model=model, service=service, engine=engine, variant=engine.spec.variants[1], model_path="/m", gpus=0
    )
    with pytest.raises(EngineTemplateError, match=r"Engine 'llama-cpp'.*undefined variable 'model\.file'"):
        render_args(engine.spec.args, engine="llama-cpp", context=context)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "apiVersion must be aima.dev/v1alpha1"),
        ("apiVersion: aima.dev/v1alpha1\nkind: Gadget\nmetadata: {name: x}\n", "unknown kind 'Gadget'"),
        (
            "apiVersion: aima.dev/v1alpha1\nkind: Model\nmetadata: {name: x}\nspec: {type: LLM}\n",
            "spec.source",
        ),
        (
            "apiVersion: aima.dev/v1alpha1\nkind: Model\nmetadata: {name: x}\n"
            "spec: {source: 'hf://a/b', type: LLM, cache: {sise: 1Gi}}\n",
            "spec.cache.sise\n  Extra inputs are not permitted",
        ),
        (
            "apiVersion: aima.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: x}\n"
            "spec: {steps: [{id: a, unit: x.y, colour: red}]}\n",
            "spec.steps.0.colour\n  Extra inputs are not permitted",
        ),
        ("apiVersion: aima.dev/v1alpha1\nkind: Model\n spec: [\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
    ids=[
        "wrong apiVersion",
        "unknown kind",
        "missing field",
        "typo in nested field",
        "typo in list item",
        "broken yaml",
        "not a mapping",
    ],
)
def test_loader_errors_name_the_file_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(catalog.CatalogError, match=r"bad\.yaml") as caught:
        catalog.parse_documents(text, source="bad.yaml")
    assert problem in str(caught.value)


def test_loader_refuses_wrong_kind_in_folder_and_duplicate_names(tmp_path: Path) -> None:
    for folder in ("engines", "models", "pipelines"):
        (tmp_path / folder).mkdir()
    model = "apiVersion: aima.dev/v1alpha1\nkind: Model\nmetadata: {name: m}\n"
    model += "spec: {source: 'hf://a/b', type: LLM}\n"
    (tmp_path / "engines" / "m.yaml").write_text(model)
    with pytest.raises(catalog.CatalogError, match="engines/ holds Engine objects only, found Model"):
        catalog.load_catalog(tmp_path)
    (tmp_path / "engines" / "m.yaml").unlink()
    (tmp_path / "models" / "m.yaml").write_text(model + "---\n" + model)
    with pytest.raises(catalog.CatalogError, match="names used more than once: m"):
        catalog.load_catalog(tmp_path)


def test_examples_validate() -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        assert catalog.load_file(path), path
