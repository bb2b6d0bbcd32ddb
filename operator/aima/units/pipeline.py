"""pipeline.*: Pipelines and their runs: create, delete, run, cancel, get, list, status, runs,
delete_run, validate.

`pipeline.run` creates a PipelineRun, which the operator executes, and (by default) waits for it;
binary outputs such as audio come back as references to the run's Secret. For a streamed run whose
audio starts while the model still writes, use `POST /api/v2/pipelines/{name}/run` instead.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from pydantic import Field

from aima.api.common import API_VERSION, ApiModel, ConditionStatus, ConditionType, FreeForm, Keys
from aima.api.pipeline import (
    Pipeline,
    PipelineProblem,
    PipelineRun,
    PipelineRunPhase,
    PipelineSpec,
    PipelineStep,
    StepPhase,
    ValueType,
)
from aima.domain import conditions
from aima.domain.pipeline import validate as validate_spec
from aima.domain.pipeline_status import SERVICES_NOT_READY, finished
from aima.kube import resources
from aima.units import shared
from aima.units.core import Context, Example, Input, command, query
from aima.units.errors import ErrorCode, UnitError
from aima.units.shared import Deleted

__all__ = ["UNITS", "RunSummary"]

NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
_POLL_SECONDS = 0.5


class PipelineRef(Input):
    """Names one Pipeline."""

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    """Name of the Pipeline, such as voice-assistant."""
    namespace: str | None = Field(default=None, max_length=63)
    """Namespace of the Pipeline; the default namespace when empty."""


class PipelineCreate(PipelineSpec):
    """A new Pipeline: its name and namespace, and its definition or a catalog template's."""

    model_config = Input.model_config

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    """Name of the Pipeline."""
    namespace: str | None = Field(default=None, max_length=63)
    """Namespace of the Pipeline; the default namespace when empty."""
    template: str | None = Field(default=None, max_length=63)
    """A catalog template (pipeline.list names them) to start from; fields given here replace its own."""
    steps: list[PipelineStep] = Field(default_factory=list, max_length=32)
    """Steps in execution order; a template's when empty."""


class PipelineDefinition(PipelineSpec):
    """A pipeline definition to check (the spec of a Pipeline)."""

    model_config = Input.model_config


class PipelineListInput(Input):
    """Which Pipelines to list."""

    namespace: str | None = Field(default=None, max_length=63)
    all_namespaces: bool = False


class RunInput(PipelineRef):
    """One run of a Pipeline."""

    run: str | None = Field(default=None, min_length=1, max_length=253, pattern=NAME_PATTERN)
    """Name of the PipelineRun; generated from the pipeline's name when empty."""
    inputs: FreeForm = Field(default_factory=dict)
    """Values of the pipeline's inputs, such as {"audio": "<base64>"} or {"question": "..."}."""
    config: FreeForm = Field(default_factory=dict)
    """Overrides of the pipeline's config for this run, such as {"llmModel": "qwen3-8b"}."""
    timeout_seconds: int | None = Field(default=None, ge=1, le=604800)
    """Longest the run may take."""
    wait: bool = True
    """Wait for the run to end (up to waitSeconds); false returns as soon as it is created."""
    wait_seconds: int = Field(default=300, ge=1, le=3600)
    """How long to wait when wait is true; the run goes on afterwards."""


class RunRef(Input):
    """Names one PipelineRun."""

    run: str = Field(min_length=1, max_length=253)
    """Name of the PipelineRun (pipeline.run returns it)."""
    namespace: str | None = Field(default=None, max_length=63)


class RunListInput(Input):
    """Which PipelineRuns to list."""

    namespace: str | None = Field(default=None, max_length=63)
    pipeline: str | None = Field(default=None, max_length=63)
    """Only runs of this Pipeline."""


class RunLine(ApiModel):
    """One line about a PipelineRun."""

    run: str
    pipeline: str
    phase: PipelineRunPhase
    reason: str | None = None
    created: str | None = None


class RunList(ApiModel):
    """PipelineRuns, newest first."""

    items: list[RunLine]


class PipelineSummary(ApiModel):
    """One line about a Pipeline."""

    name: str
    namespace: str
    description: str | None = None
    steps: list[str]
    """Step ids, in order, with their units (id:unit)."""
    ready: ConditionStatus = ConditionStatus.UNKNOWN
    reason: str | None = None
    message: str | None = None


class Template(ApiModel):
    """A pipeline of the catalog, for pipeline.create's template."""

    name: str
    description: str | None = None
    inputs: list[str]
    """What a run of it provides."""
    config: dict[str, Any]
    """Its settings, such as the models it calls: override them at create or run."""


class PipelineList(ApiModel):
    """Pipelines, by namespace and name, and the catalog's templates to create more from."""

    items: list[PipelineSummary]
    templates: list[Template] = Field(default_factory=list)


class Validation(ApiModel):
    """Whether a definition is valid, and what is wrong with it by step and field."""

    valid: bool
    problems: list[PipelineProblem]


class StepSummary(ApiModel):
    """What happened to one step."""

    id: str
    phase: StepPhase
    duration_ms: int | None = None
    error: str | None = None
    output: dict[str, Any] | None = None


class RunSummary(ApiModel):
    """Where a run is, its steps and (once done) its outputs."""

    run: str
    namespace: str
    pipeline: str
    phase: PipelineRunPhase
    reason: str | None = None
    message: str | None = None
    current_step: str | None = None
    failed_step: str | None = None
    steps: list[StepSummary] = Field(default_factory=list)
    outputs: dict[str, Any] | None = None
    """The pipeline's outputs; audio and other binary values are references to outputsSecret."""
    outputs_secret: str | None = None


@command(
    "pipeline.create",
    description="Create a Pipeline: steps calling units, with inputs that reference ${input.x}, ${config.x} "
    "and ${steps.<id>.<field>}, or a catalog template's (template). CONFLICT when the name is taken; "
    "pipeline.get shows whether it is valid.",
    examples=[
        Example(
            description="Answer a question with a chat model",
            input={
                "name": "ask",
                "inputs": [{"name": "question"}],
                "config": {"model": "qwen3-8b"},
                "steps": [
                    {
                        "id": "chat",
                        "unit": "inference.chat",
                        "inputs": {
                            "model": "${config.model}",
                            "messages": [{"content": "${input.question}"}],
                        },
                    }
                ],
                "outputs": {"answer": "${steps.chat.content}"},
            },
        )
    ],
)
async def create(context: Context, request: PipelineCreate) -> Pipeline:
    given = request.model_dump(include=set(PipelineSpec.model_fields), exclude_unset=True)
    base = {}
    if request.template is not None:
        base = (await _template(context, request.template)).spec.model_dump(exclude_unset=True)
    elif not request.steps:
        raise UnitError(
            ErrorCode.INVALID_INPUT,
            "steps: a pipeline needs steps, or a template to take them from (pipeline.list names the "
            "catalog's templates)",
        )
    spec = PipelineSpec.model_validate(base | given)
    body = {
        "apiVersion": API_VERSION,
        "kind": "Pipeline",
        "metadata": {"name": request.name, "namespace": context.namespace_of(request.namespace)},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_unset=True),
    }
    return Pipeline.model_validate(await context.kube.create(body))


@command(
    "pipeline.delete",
    description="Delete a Pipeline; its runs are kept.",
    examples=[Example(description="Delete a pipeline", input={"name": "ask"})],
    destructive=True,
)
async def delete(context: Context, request: PipelineRef) -> Deleted:
    namespace = context.namespace_of(request.namespace)
    await _pipeline(context, request.name, namespace)
    await context.kube.delete(resources.PIPELINES, name=request.name, namespace=namespace)
    return Deleted(kind="Pipeline", name=request.name, namespace=namespace)


@command(
    "pipeline.run",
    description="Run a Pipeline: creates a PipelineRun that the operator executes and waits for it "
    "(wait: false returns at once). Returns per-step status and the outputs; audio, in and out, is "
    "kept in the run's Secrets.",
    examples=[
        Example(
            description="Ask a question, waiting at most 5 s for the answer",
            input={"name": "ask", "run": "ask-1", "inputs": {"question": "What is a GPU?"}, "waitSeconds": 5},
        ),
        Example(
            description="Start a run and return at once (follow it with pipeline.status)",
            input={"name": "ask", "inputs": {"question": "What is a TPU?"}, "wait": False},
        ),
    ],
)
async def run(context: Context, request: RunInput) -> RunSummary:
    namespace = context.namespace_of(request.namespace)
    pipeline = Pipeline.model_validate(await _pipeline(context, request.name, namespace))
    name = request.run or f"{request.name}-{secrets.token_hex(3)}"
    kept = kept_inputs(pipeline.spec, request.inputs)
    inputs = request.inputs | {key: secret_ref(f"{name}-inputs", key) for key in kept}
    spec: dict[str, Any] = {"pipelineRef": {"name": request.name}, "inputs": inputs}
    if request.config:
        spec["config"] = request.config
    if request.timeout_seconds is not None:
        spec["timeoutSeconds"] = request.timeout_seconds
    body = {
        "apiVersion": API_VERSION,
        "kind": "PipelineRun",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }
    created = await _created_with_inputs(context, body, kept)
    if not request.wait:
        return summarize(created)
    deadline, reported = time.monotonic() + request.wait_seconds, ""
    while not finished(created.status) and time.monotonic() < deadline:
        await asyncio.sleep(_POLL_SECONDS)
        created = await _run(context, str(created.metadata.name), namespace)
        done, total, message = step_progress(created)
        if message != reported:  # a report per change, not per poll
            await context.report(done, total, message)
            reported = message
        if unserved := await _unserved(context, created):
            return summarize(created).model_copy(update={"message": unserved})
    return summarize(created)


async def _unserved(context: Context, run: PipelineRun) -> str | None:
    """Why waiting on is pointless, when the run waits for models that no InferenceService serves:
    only a new service ends that wait (the run then starts by itself)."""
    waiting = conditions.find(run.status.conditions, ConditionType.SUCCEEDED) if run.status else None
    if waiting is None or waiting.reason != SERVICES_NOT_READY:
        return None
    body = await context.kube.get(
        resources.PIPELINES, name=run.spec.pipeline_ref.name, namespace=run.metadata.namespace
    )
    status = Pipeline.model_validate(body).status if body else None
    services = status.services if status else []
    missing = sorted({f"{s.model} (step {s.step})" for s in services if s.service is None})
    if not missing:
        return None
    return (
        f"The run waits for services: no InferenceService serves {', '.join(missing)}. Create them "
        f"(service.create) and the run starts by itself; follow it with pipeline.status {run.metadata.name}"
    )


def kept_inputs(spec: PipelineSpec, given: dict[str, Any]) -> dict[str, str]:
    """The values of Audio and Image inputs given inline (base64 or data: URLs), by input name (pure):
    they go to the run's Secret, as binary outputs do, not into its spec (etcd, kubectl get, every
    watch of PipelineRuns). URLs stay: they are small, and fetched when the step runs."""
    binary = {i.name for i in spec.inputs if i.type in (ValueType.AUDIO, ValueType.IMAGE)}
    return {
        name: value.partition(",")[2] if value.startswith("data:") else value
        for name, value in given.items()
        if name in binary and isinstance(value, str) and not value.startswith(("http://", "https://"))
    }


def secret_ref(secret: str, key: str) -> dict[str, Any]:
    """A value kept in a Secret, as a run's spec and status reference it."""
    return {"secretKeyRef": {"name": secret, "key": key}}


async def _created_with_inputs(context: Context, body: dict[str, Any], kept: dict[str, str]) -> PipelineRun:
    """Create the run, its kept inputs first, since the operator may start it at once. The operator
    makes the run the Secret's owner when it reads it, so this door needs only to create Secrets,
    never to change or read one."""
    meta = body["metadata"]
    if kept:
        if await context.kube.get(resources.PIPELINE_RUNS, name=meta["name"], namespace=meta["namespace"]):
            raise UnitError(
                ErrorCode.CONFLICT,
                f"PipelineRun {meta['name']} exists in namespace {meta['namespace']}; name another run, or "
                "leave run empty for a generated name",
                {"name": meta["name"], "namespace": meta["namespace"]},
            )
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": f"{meta['name']}-inputs",
                "namespace": meta["namespace"],
                "labels": {Keys.PIPELINE_RUN: meta["name"], Keys.MANAGED_BY: "aima"},
            },
            "type": "aima.dev/pipeline-inputs",
            "data": kept,
        }
        await context.kube.create(secret)
    return PipelineRun.model_validate(await context.kube.create(body))


_ENDED_STEPS = frozenset({StepPhase.SUCCEEDED, StepPhase.FAILED, StepPhase.SKIPPED, StepPhase.CANCELLED})


def step_progress(run: PipelineRun) -> tuple[int, int | None, str]:
    """Steps ended so far, the number of steps once known, and what runs now, in words."""
    steps = run.status.steps if run.status else []
    done = sum(1 for step in steps if step.phase in _ENDED_STEPS)
    running = [step.id for step in steps if step.phase is StepPhase.RUNNING]
    message = f"{done} of {len(steps)} steps done" + (f"; running {', '.join(running)}" if running else "")
    return done, len(steps) or None, message


@command(
    "pipeline.cancel",
    description="Cancel a PipelineRun: running steps stop, the rest are skipped (sets spec.cancel).",
    examples=[Example(description="Cancel a run", input={"run": "ask-1"})],
    destructive=True,
    idempotent=True,
)
async def cancel(context: Context, request: RunRef) -> RunSummary:
    namespace = context.namespace_of(request.namespace)
    await _run(context, request.run, namespace)
    body = await context.kube.patch(
        resources.PIPELINE_RUNS, name=request.run, namespace=namespace, patch={"spec": {"cancel": True}}
    )
    return summarize(PipelineRun.model_validate(body))


@query(
    "pipeline.get",
    description="One Pipeline with its definition and status: whether it is valid (problems by step "
    "and field) and whether the services its models need are ready.",
    examples=[Example(description="A pipeline by name", input={"name": "ask"})],
)
async def get(context: Context, request: PipelineRef) -> Pipeline:
    return Pipeline.model_validate(
        await _pipeline(context, request.name, context.namespace_of(request.namespace))
    )


@query(
    "pipeline.list",
    description="Pipelines with their steps and whether they are ready, and why not; and the catalog's "
    "templates (voice assistant, RAG, ...) that pipeline.create starts from.",
    examples=[Example(description="Pipelines in the default namespace", input={})],
)
async def list_(context: Context, request: PipelineListInput) -> PipelineList:
    namespace = None if request.all_namespaces else context.namespace_of(request.namespace)
    bodies = await context.kube.list(resources.PIPELINES, namespace=namespace)
    items = [_summarize_pipeline(Pipeline.model_validate(b)) for b in bodies]
    templates = [
        Template(
            name=str(t.metadata.name),
            description=t.spec.description,
            inputs=[i.name for i in t.spec.inputs],
            config=t.spec.config,
        )
        for t in (await shared.catalog(context.settings.catalog_dir)).pipelines
    ]
    return PipelineList(items=sorted(items, key=lambda p: (p.namespace, p.name)), templates=templates)


@query(
    "pipeline.status",
    description="Where a PipelineRun is: phase, the step running, per-step status and timings, errors "
    "with the failing step, and the outputs once done.",
    examples=[Example(description="A run's status", input={"run": "ask-1"})],
)
async def status(context: Context, request: RunRef) -> RunSummary:
    return summarize(await _run(context, request.run, context.namespace_of(request.namespace)))


@query(
    "pipeline.runs",
    description="PipelineRuns of a namespace, newest first: pipeline, phase and why; pipeline.status "
    "shows one in full.",
    examples=[Example(description="Runs of one pipeline", input={"pipeline": "ask"})],
)
async def runs(context: Context, request: RunListInput) -> RunList:
    bodies = await context.kube.list(
        resources.PIPELINE_RUNS, namespace=context.namespace_of(request.namespace)
    )
    found = [PipelineRun.model_validate(b) for b in bodies]
    lines = [_line(r) for r in found if request.pipeline in (None, r.spec.pipeline_ref.name)]
    return RunList(items=sorted(lines, key=lambda r: r.created or "", reverse=True))


@command(
    "pipeline.delete_run",
    description="Delete a PipelineRun with its inputs and outputs (its Secret); a running one stops.",
    examples=[Example(description="Delete a run", input={"run": "ask-1"})],
    destructive=True,
)
async def delete_run(context: Context, request: RunRef) -> Deleted:
    namespace = context.namespace_of(request.namespace)
    await _run(context, request.run, namespace)
    await context.kube.delete(resources.PIPELINE_RUNS, name=request.run, namespace=namespace)
    return Deleted(kind="PipelineRun", name=request.run, namespace=namespace)


@query(
    "pipeline.validate",
    description="Check a pipeline definition without creating it: units exist, inputs fit them, and "
    "references resolve to earlier steps' outputs.",
    examples=[
        Example(
            description="A chain with a typo",
            input={
                "steps": [
                    {"id": "ask", "unit": "inference.transcribe", "inputs": {"model": "w", "audio": "x"}},
                    {
                        "id": "chat",
                        "unit": "inference.chat",
                        "inputs": {"model": "m", "messages": [{"content": "${steps.ask.txt}"}]},
                    },
                ]
            },
        )
    ],
)
async def validate(context: Context, request: PipelineDefinition) -> Validation:
    if context.registry is None:
        raise UnitError(ErrorCode.INTERNAL, "pipeline.validate runs through execute, which names the units")
    spec = PipelineSpec.model_validate(request.model_dump(include=set(PipelineSpec.model_fields)))
    problems = validate_spec(spec, {unit.name: unit for unit in context.registry})
    return Validation(valid=not problems, problems=problems)


def summarize(run: PipelineRun) -> RunSummary:
    """The summary of a PipelineRun."""
    current = run.status
    succeeded = conditions.find(current.conditions, ConditionType.SUCCEEDED) if current else None
    return RunSummary(
        run=str(run.metadata.name),
        namespace=str(run.metadata.namespace),
        pipeline=run.spec.pipeline_ref.name,
        phase=(current.phase if current else None) or PipelineRunPhase.PENDING,
        reason=succeeded.reason if succeeded else None,
        message=succeeded.message if succeeded else None,
        current_step=current.current_step if current else None,
        failed_step=current.failed_step if current else None,
        steps=[
            StepSummary(
                id=s.id, phase=s.phase, duration_ms=s.duration_milliseconds, error=s.error, output=s.output
            )
            for s in (current.steps if current else [])
        ],
        outputs=current.outputs if current else None,
        outputs_secret=current.outputs_secret if current else None,
    )


def _line(run: PipelineRun) -> RunLine:
    summary = summarize(run)
    created = run.metadata.model_extra.get("creationTimestamp") if run.metadata.model_extra else None
    return RunLine(
        run=summary.run,
        pipeline=summary.pipeline,
        phase=summary.phase,
        reason=summary.reason,
        created=created,
    )


def _summarize_pipeline(pipeline: Pipeline) -> PipelineSummary:
    ready = conditions.find(pipeline.status.conditions, ConditionType.READY) if pipeline.status else None
    return PipelineSummary(
        name=str(pipeline.metadata.name),
        namespace=str(pipeline.metadata.namespace),
        description=pipeline.spec.description,
        steps=[f"{s.id}:{s.unit}" for s in pipeline.spec.steps],
        ready=ready.status if ready else ConditionStatus.UNKNOWN,
        reason=ready.reason if ready else None,
        message=(ready.message or None) if ready else None,
    )


async def _pipeline(context: Context, name: str, namespace: str) -> dict[str, Any]:
    body = await context.kube.get(resources.PIPELINES, name=name, namespace=namespace)
    if body is None:
        raise UnitError(
            ErrorCode.PIPELINE_NOT_FOUND,
            f"Pipeline {name} not found in namespace {namespace}; pipeline.list lists them and the "
            "catalog's templates, pipeline.create with a template makes one",
            {"name": name, "namespace": namespace},
        )
    return body


async def _template(context: Context, name: str) -> Pipeline:
    templates = (await shared.catalog(context.settings.catalog_dir)).pipelines
    found = next((t for t in templates if t.metadata.name == name), None)
    if found is None:
        names = ", ".join(str(t.metadata.name) for t in templates) or "none (no catalog is configured)"
        raise UnitError(
            ErrorCode.INVALID_INPUT,
            f"template: no catalog template {name}; the catalog has {names}",
            {"template": name},
        )
    return found


async def _run(context: Context, name: str, namespace: str) -> PipelineRun:
    body = await context.kube.get(resources.PIPELINE_RUNS, name=name, namespace=namespace)
    if body is None:
        raise UnitError(
            ErrorCode.PIPELINE_RUN_NOT_FOUND,
            f"PipelineRun {name} not found in namespace {namespace}; pipeline.runs lists them",
            {"name": name, "namespace": namespace},
        )
    return PipelineRun.model_validate(body)


UNITS = (create, delete, run, cancel, get, list_, status, runs, delete_run, validate)
