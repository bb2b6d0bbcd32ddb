"""Pipeline and PipelineRun: the seeds' pipeline DSL as two kinds.

A Pipeline is a template: ordered steps, each calling one unit (`inference.transcribe`,
`inference.chat`, ...) with inputs that may reference `${input.x}`, `${config.x}` and
`${steps.<id>.<field>}`. Steps may only refer to steps listed before them, so the list order is
always a valid execution order and the graph can never have a cycle. A PipelineRun is one
execution, recording per-step status, timings, outputs and errors; setting `spec.cancel` stops it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from aima.api.common import (
    ApiModel,
    Condition,
    CustomResource,
    FreeForm,
    LocalObjectReference,
    PrinterColumn,
    StoredObject,
    cel,
    conditions_field,
    ready_columns,
)

__all__ = [
    "PIPELINE_CRD",
    "PIPELINE_RUN_CRD",
    "FailurePolicy",
    "Pipeline",
    "PipelineInput",
    "PipelineProblem",
    "PipelineRun",
    "PipelineRunPhase",
    "PipelineRunSpec",
    "PipelineRunStatus",
    "PipelineSpec",
    "PipelineStatus",
    "PipelineStep",
    "StepPhase",
    "StepService",
    "StepStatus",
    "ValueType",
]

STEP_ID_PATTERN = "^[a-z][a-z0-9_]*$"
UNIT_PATTERN = "^[a-z]+[.][a-z][a-z0-9_]*$"


class ValueType(StrEnum):
    """The kind of value a pipeline input carries."""

    TEXT = "Text"
    AUDIO = "Audio"
    IMAGE = "Image"
    NUMBER = "Number"
    JSON = "JSON"


class FailurePolicy(StrEnum):
    """What a run does when a step fails after its retries."""

    ABORT = "Abort"
    CONTINUE = "Continue"


class PipelineRunPhase(StrEnum):
    """A one-word summary of a run for display, derived from the conditions."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class StepPhase(StrEnum):
    """Where one step of a run is."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    CANCELLED = "Cancelled"


class PipelineInput(ApiModel):
    """A named input of the pipeline, referenced by steps as ${input.<name>}."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.name.matches('^[a-z][a-zA-Z0-9_]*$')",
                    "input names are letters, digits and '_', starting with a lowercase letter",
                    field_path=".name",
                )
            ]
        }
    )

    name: str = Field(max_length=63)
    """Name of the input, such as audio or question."""
    type: ValueType = ValueType.TEXT
    """Kind of value: Text, Audio, Image, Number or JSON. Audio and images are passed as URLs or base64."""
    required: bool = True
    """Whether a run must provide the input."""
    description: str | None = Field(default=None, max_length=1024)
    """What the input is for."""


class PipelineStep(ApiModel):
    """One call of a unit."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.id.matches('{STEP_ID_PATTERN}')",
                    "step ids are lowercase letters, digits and '_', starting with a letter "
                    "(they appear in ${steps.<id>.<field>})",
                    field_path=".id",
                ),
                cel(
                    f"self.unit.matches('{UNIT_PATTERN}')",
                    "unit names look like domain.action, such as inference.chat",
                    field_path=".unit",
                ),
            ]
        }
    )

    id: str = Field(max_length=63)
    """Identifier of the step, unique in the pipeline, such as transcribe."""
    unit: str = Field(max_length=128)
    """The unit the step calls, such as inference.transcribe, inference.chat or inference.synthesize."""
    description: str | None = Field(default=None, max_length=1024)
    """What the step does."""
    inputs: FreeForm = Field(default_factory=dict)
    """The unit's input. Strings may contain ${input.<name>}, ${config.<key>} and
    ${steps.<id>.<field>} references; a step may only reference steps listed before it."""
    for_each: str | None = Field(default=None, max_length=1024)
    """A reference to a list, such as ${input.prompts}: the step runs once per item (in parallel, bounded)
    with ${item} (or ${item.<field>}) in its inputs, and its output is {items: [one output per item]}."""
    depends_on: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=16)
    """Steps that must finish first even though no input references them; only earlier steps."""
    on_failure: FailurePolicy = FailurePolicy.ABORT
    """Abort stops the run when the step fails; Continue runs the remaining steps."""
    retries: int = Field(default=0, ge=0, le=10)
    """How often a failed step is retried."""
    timeout_seconds: int | None = Field(default=None, ge=1, le=86400)
    """Longest a single attempt may take."""


class PipelineSpec(ApiModel):
    """Desired state of a Pipeline."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.steps.all(s, self.steps.exists_one(t, t.id == s.id))",
                    "step ids must be unique",
                    field_path=".steps",
                ),
                cel(
                    # The step's own position via indexOf(s) and a slice before it. Mapping steps to
                    # their ids (steps.map(t, t.id).indexOf(d)) reads better but blows the cost budget.
                    "self.steps.all(s, !has(s.dependsOn) || s.dependsOn.all(d,"
                    " self.steps.slice(0, self.steps.indexOf(s)).exists(t, t.id == d)))",
                    "dependsOn may only name steps listed before the step",
                    field_path=".steps",
                ),
                cel(
                    "!has(self.inputs) || self.inputs.all(i, self.inputs.exists_one(j, j.name == i.name))",
                    "input names must be unique",
                    field_path=".inputs",
                ),
            ]
        }
    )

    description: str | None = Field(default=None, max_length=1024)
    """What the pipeline does."""
    inputs: list[PipelineInput] = Field(default_factory=list, max_length=32)
    """Inputs a run provides."""
    config: FreeForm = Field(default_factory=dict)
    """Settings steps reference as ${config.<key>}, such as model names; a run may override them."""
    steps: list[PipelineStep] = Field(min_length=1, max_length=32)
    """Steps in execution order; independent steps may run in parallel."""
    outputs: dict[str, Annotated[str, Field(max_length=1024)]] = Field(default_factory=dict, max_length=32)
    """Named results of a run, usually references such as ${steps.chat.content}."""


class PipelineProblem(ApiModel):
    """One thing wrong with a pipeline definition, and where."""

    step: str | None = Field(default=None, max_length=63)
    """The step it concerns; empty for the pipeline's inputs and outputs."""
    field: str | None = Field(default=None, max_length=256)
    """Where in the step (or spec), such as inputs.messages.1.content or unit."""
    message: str = Field(max_length=1024)
    """What is wrong and how to fix it."""


class StepService(ApiModel):
    """The InferenceService a step's model is served by, and whether it is ready."""

    step: str = Field(max_length=63)
    """The step that names the model."""
    model: str = Field(max_length=256)
    """The model the step asks the gateway for (its `model` input, config resolved)."""
    service: str | None = Field(default=None, max_length=253)
    """The InferenceService serving that model name; empty when none does."""
    ready: bool = False
    """Whether that InferenceService is Ready."""
    message: str | None = Field(default=None, max_length=1024)
    """Why it is not ready."""


class PipelineStatus(ApiModel):
    """Observed state of a Pipeline, written only by the controller."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the status was computed from."""
    conditions: list[Condition] = conditions_field()
    """Valid is True when every step names a registered unit, its inputs fit the unit's input and
    every reference resolves; Ready is True when it is valid and every service it uses is ready.
    Stalled while it is not valid (an edit is needed); Reconciling while it waits for services."""
    problems: list[PipelineProblem] = Field(default_factory=list, max_length=32)
    """What is wrong with the definition, by step and field; empty when it is valid."""
    services: list[StepService] = Field(default_factory=list, max_length=32)
    """The InferenceServices the steps' models are served by, with their readiness."""


class Pipeline(StoredObject[PipelineSpec, PipelineStatus]):
    """A Pipeline object as stored in the API server."""

    kind: Literal["Pipeline"] = "Pipeline"


class PipelineRunSpec(ApiModel):
    """Desired state of a PipelineRun."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.pipelineRef == oldSelf.pipelineRef",
                    "pipelineRef cannot change; create a new PipelineRun",
                    field_path=".pipelineRef",
                ),
                cel(
                    "!oldSelf.cancel || self.cancel",
                    "a cancelled run cannot be resumed; create a new PipelineRun",
                    field_path=".cancel",
                ),
            ]
        }
    )

    pipeline_ref: LocalObjectReference
    """The Pipeline to run, in the same namespace."""
    inputs: FreeForm = Field(default_factory=dict)
    """Values for the pipeline's inputs. Keep them small; pass audio and images as URLs."""
    config: FreeForm = Field(default_factory=dict)
    """Overrides of the pipeline's config for this run."""
    timeout_seconds: int | None = Field(default=None, ge=1, le=604800)
    """Longest the whole run may take."""
    cancel: bool = False
    """Set to true to cancel the run: steps not yet started are skipped. It cannot be set back."""


class StepStatus(ApiModel):
    """What happened to one step."""

    id: str = Field(max_length=63)
    """The step's id."""
    unit: str | None = Field(default=None, max_length=128)
    """The unit the step calls."""
    phase: StepPhase = StepPhase.PENDING
    """Where the step is."""
    attempts: int = Field(default=0, ge=0)
    """Attempts made, retries included."""
    start_time: datetime | None = None
    """When the first attempt started."""
    completion_time: datetime | None = None
    """When the step finished."""
    duration_milliseconds: int | None = Field(default=None, ge=0)
    """How long the step took."""
    output: FreeForm | None = None
    """The unit's output, bounded: long text is cut and binary values such as audio are replaced by a
    reference to the run's outputs Secret ({secretKeyRef, bytes, contentType})."""
    error: str | None = Field(default=None, max_length=4096)
    """Why the step failed or was skipped."""
    error_code: str | None = Field(default=None, max_length=64)
    """The unit error code of the failure, such as UNAVAILABLE or INVALID_INPUT."""


class PipelineRunStatus(ApiModel):
    """Observed state of a PipelineRun, written only by the controller."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the status was computed from."""
    conditions: list[Condition] = conditions_field()
    """Succeeded (the summary: Unknown while running), with reasons such as StepFailed or Cancelled;
    Ready the same, for tools that read Ready; Reconciling until the run ends, Stalled once it ended
    without succeeding."""
    phase: PipelineRunPhase | None = None
    """One-word summary for display, derived from the conditions."""
    pipeline_generation: int | None = Field(default=None, ge=0)
    """The Pipeline's metadata.generation the run uses; later edits do not affect it."""
    current_step: str | None = Field(default=None, max_length=63)
    """The step running now (the first of them when several run in parallel)."""
    failed_step: str | None = Field(default=None, max_length=63)
    """The step whose failure ended the run."""
    executor: str | None = Field(default=None, max_length=253)
    """The operator replica executing the run; another replica leaves it alone until it times out."""
    outputs_secret: str | None = Field(default=None, max_length=253)
    """The Secret (owned by the run) holding binary outputs such as audio, under keys step.field."""
    start_time: datetime | None = None
    """When the run started."""
    completion_time: datetime | None = None
    """When the run finished."""
    steps: list[StepStatus] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"]},
    )
    """Per-step status in pipeline order."""
    outputs: FreeForm | None = None
    """The pipeline's outputs once the run succeeded."""


class PipelineRun(StoredObject[PipelineRunSpec, PipelineRunStatus]):
    """A PipelineRun object as stored in the API server."""

    kind: Literal["PipelineRun"] = "PipelineRun"


PIPELINE_CRD = CustomResource(
    kind="Pipeline",
    plural="pipelines",
    description="A Pipeline chains units (speech recognition, chat, speech synthesis, retrieval, ...) "
    "into ordered steps whose inputs reference the run's input, the config and earlier steps.",
    spec=PipelineSpec,
    status=PipelineStatus,
    short_names=("pl",),
    printer_columns=(
        *ready_columns(),
        PrinterColumn(
            name="Description", json_path=".spec.description", description="What it does.", priority=1
        ),
        PrinterColumn(name="Age", json_path=".metadata.creationTimestamp", type="date", description="Age."),
    ),
)

PIPELINE_RUN_CRD = CustomResource(
    kind="PipelineRun",
    plural="pipelineruns",
    description="A PipelineRun is one execution of a Pipeline with its inputs; it records per-step "
    "status, timings, outputs and errors, and can be cancelled.",
    spec=PipelineRunSpec,
    status=PipelineRunStatus,
    short_names=("plr",),
    printer_columns=(
        PrinterColumn(name="Pipeline", json_path=".spec.pipelineRef.name", description="The Pipeline run."),
        PrinterColumn(name="Phase", json_path=".status.phase", description="Summary of the state."),
        PrinterColumn(name="Step", json_path=".status.currentStep", description="The step running now."),
        PrinterColumn(
            name="Succeeded",
            json_path='.status.conditions[?(@.type=="Succeeded")].status',
            description="Whether the run succeeded.",
        ),
        PrinterColumn(
            name="Reason",
            json_path='.status.conditions[?(@.type=="Succeeded")].reason',
            description="Why the run is where it is.",
            priority=1,
        ),
        PrinterColumn(name="Started", json_path=".status.startTime", type="date", description="Start."),
        PrinterColumn(name="Age", json_path=".metadata.creationTimestamp", type="date", description="Age."),
    ),
    selectable_fields=(".spec.pipelineRef.name",),
)
