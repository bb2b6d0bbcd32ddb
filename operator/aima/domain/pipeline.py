"""Pipelines, planned purely: validation against the units' models, dependencies, the services the
steps' models need, and the bounded form of step outputs that goes into a PipelineRun's status.

The unit registry is not imported here (units talk to the API server); callers pass the units' input
and output models as `UnitShape`s, so the same checks serve the controller, `pipeline.validate` and
the HTTP door.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from pydantic import BaseModel, ValidationError

from aima.api.pipeline import PipelineProblem, PipelineSpec, PipelineStep, StepService
from aima.domain.pipeline_refs import REFERENCE, dotted, located_references, reference_problems, resolve

__all__ = [
    "MAX_STEP_OUTPUT_BYTES",
    "MAX_TEXT_CHARS",
    "UnitShape",
    "binary_fields",
    "bounded",
    "dependencies",
    "input_problems",
    "speech_fusions",
    "step_models",
    "step_services",
    "validate",
]

MAX_TEXT_CHARS: Final = 2048
"""Longest string of a step output kept in a PipelineRun's status; the rest is cut with a note."""
MAX_LIST_ITEMS: Final = 16
"""Most items of a list (such as an embedding) kept in status."""
MAX_STEP_OUTPUT_BYTES: Final = 8192
"""Largest JSON of one step's output in status: 32 steps stay far below etcd's object limit."""

_PLACEHOLDER: Final = object()


class UnitShape(Protocol):
    """What validation needs of a unit: its input and output models."""

    @property
    def input(self) -> type[BaseModel]: ...

    @property
    def output(self) -> type[BaseModel]: ...


def validate(spec: PipelineSpec, units: Mapping[str, UnitShape]) -> list[PipelineProblem]:
    """Every problem of a definition, by step and field: references, unknown units, inputs that do
    not fit the unit's input model, and `${steps.x.field}` naming a field x's output does not have."""
    problems = reference_problems(spec)
    by_id = {step.id: step for step in spec.steps}
    for step in spec.steps:
        unit = units.get(step.unit)
        if unit is None:
            message = f"unit {step.unit} is not registered; GET /api/v2/units or `aima units` lists them"
            problems.append(PipelineProblem(step=step.id, field="unit", message=message))
            continue
        problems += input_problems(step, unit.input, config=spec.config)
        problems += _output_field_problems(step.inputs, ("inputs",), step.id, by_id, units)
    problems += _output_field_problems(spec.outputs, ("outputs",), None, by_id, units)
    return problems


def input_problems(
    step: PipelineStep, model: type[BaseModel], *, config: Mapping[str, Any] | None = None
) -> list[PipelineProblem]:
    """Where the step's inputs do not fit the unit's input model (missing, unknown or wrongly typed
    fields), with `${config.*}` taken at the pipeline's defaults; values holding other references are
    checked at run time, once they are known."""
    inputs = _with_config(step.inputs, config or {})
    referenced = {found.location for found in located_references(inputs)}
    try:
        model.model_validate(_with_placeholders(inputs, referenced, ()))
    except ValidationError as invalid:
        return [
            PipelineProblem(step=step.id, field=dotted(("inputs", *error["loc"])), message=error["msg"])
            for error in invalid.errors(include_url=False)
            if not _covers(referenced, tuple(error["loc"]))
        ]
    return []


def _with_config(value: Any, config: Mapping[str, Any]) -> Any:
    """``value`` with its `${config.*}` references replaced by the defaults (others kept as they are)."""
    if isinstance(value, str):
        found = list(located_references(value))
        if found and all(f.root == "config" for f in found):
            try:
                return resolve(value, {"config": dict(config)})
            except LookupError:
                return value  # reference_problems names what is not set
        return value
    if isinstance(value, dict):
        return {key: _with_config(item, config) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_config(item, config) for item in value]
    return value


def _with_placeholders(value: Any, referenced: set[tuple[str | int, ...]], at: tuple[str | int, ...]) -> Any:
    # A referenced value is unknown until the run: keep the key (so "missing" is not reported) but
    # let any type error it causes be dropped by `_covers`.
    if at in referenced:
        return _PLACEHOLDER
    if isinstance(value, dict):
        return {k: _with_placeholders(v, referenced, (*at, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_placeholders(v, referenced, (*at, i)) for i, v in enumerate(value)]
    return value


def _covers(referenced: set[tuple[str | int, ...]], loc: tuple[str | int, ...]) -> bool:
    # pydantic may add a union member or a type tag to `loc`; a prefix match is enough.
    return any(loc[: len(path)] == path for path in referenced)


def _output_field_problems(
    value: Any,
    at: tuple[str, ...],
    step_id: str | None,
    by_id: Mapping[str, PipelineStep],
    units: Mapping[str, UnitShape],
) -> list[PipelineProblem]:
    problems = []
    for found in located_references(value, at):
        if found.root != "steps" or len(found.path) < 2 or found.path[0] not in by_id:
            continue  # reference_problems reports these
        source = by_id[found.path[0]]
        unit = units.get(source.unit)
        missing = _missing_field(unit.output, _per_item(source, found.path[1:])) if unit else None
        if missing is not None:
            message = (
                f"{found.text}: the output of {by_id[found.path[0]].unit} has no field {missing!r}; "
                f"it has {', '.join(_aliases(unit.output)) if unit else 'no fields'}"
            )
            problems.append(PipelineProblem(step=step_id, field=dotted(found.location), message=message))
    return problems


def _per_item(step: PipelineStep, path: tuple[str, ...]) -> tuple[str, ...]:
    """The path inside one unit output: a forEach step's output is {items: [output, ...]}."""
    if step.for_each is None:
        return path
    if path[0] != "items":
        return ("items", *path)  # reported as missing: the step's output only has items
    return path[2:] if len(path) > 2 and path[1].isdigit() else ()


def _missing_field(model: type[BaseModel], path: Sequence[str]) -> str | None:
    """The first part of `path` that `model` does not have; None when the path fits (or leaves the
    typed part, such as an index into a list or a key of a free-form map)."""
    if not path:
        return None
    fields = {(info.alias or name): info for name, info in model.model_fields.items()}
    head, rest = path[0], path[1:]
    if head not in fields:
        return head
    inner = _model_type(fields[head].annotation)
    return _missing_field(inner, rest) if inner is not None and rest else None


def _model_type(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, itself or optional; None for lists, maps and scalars."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        return _model_type(members[0]) if len(members) == 1 else None
    return None


def _aliases(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def dependencies(spec: PipelineSpec) -> dict[str, frozenset[str]]:
    """For each step, the steps it waits for: those its inputs reference and those in dependsOn."""
    return {
        step.id: frozenset(
            {
                f.path[0]
                for f in located_references([step.inputs, step.for_each])
                if f.root == "steps" and f.path
            }
            | set(step.depends_on)
        )
        for step in spec.steps
    }


def step_models(spec: PipelineSpec, config: Mapping[str, Any]) -> dict[str, str]:
    """The model each step asks the gateway for: its `model` input with config references resolved.

    Steps whose model comes from the run's input or an earlier step are left out: they are only
    known during the run.
    """
    models = {}
    for step in spec.steps:
        raw = step.inputs.get("model")
        if not isinstance(raw, str) or any(f.root != "config" for f in located_references(raw)):
            continue
        try:
            value = resolve(raw, {"config": dict(config)})
        except LookupError:
            continue
        if isinstance(value, str) and value:
            models[step.id] = value
    return models


def step_services(models: Mapping[str, str], services: Sequence[Mapping[str, Any]]) -> list[StepService]:
    """Which InferenceService serves each step's model, and whether it is Ready, from their bodies.

    A step may also name a service as the gateway lists it from outside its home namespace,
    ``<namespace>/<name>``: that is the id a run outside the gateway's namespace must send.
    """
    by_served: dict[str, Mapping[str, Any]] = {}
    for body in services:
        served = body.get("spec", {}).get("servedName") or body["metadata"]["name"]
        by_served.setdefault(served, body)
        if namespace := body["metadata"].get("namespace"):
            by_served.setdefault(f"{namespace}/{served}", body)
    return [_service(step, model, by_served.get(model)) for step, model in models.items()]


def _service(step: str, model: str, body: Mapping[str, Any] | None) -> StepService:
    if body is None:
        message = f"no InferenceService serves model {model}; create one with service.create"
        return StepService(step=step, model=model, message=message)
    name = body["metadata"]["name"]
    conditions = body.get("status", {}).get("conditions", [])
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") == "True":
        return StepService(step=step, model=model, service=name, ready=True)
    why = f"{ready.get('reason')}: {ready.get('message')}" if ready else "it has no status yet"
    return StepService(
        step=step, model=model, service=name, message=f"InferenceService {name} is not ready ({why})"[:1024]
    )


def binary_fields(model: type[BaseModel]) -> frozenset[str]:
    """Output fields holding base64 bytes (marked `contentEncoding: base64`), by their wire name."""
    found = set()
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, Mapping) and extra.get("contentEncoding") == "base64":
            found.add(info.alias or name)
    return frozenset(found)


def bounded(output: Mapping[str, Any], *, replaced: Mapping[str, Any]) -> dict[str, Any]:
    """A step's output as it goes into status: fields in `replaced` swapped for their references,
    long strings and lists cut with a note, and the whole kept under MAX_STEP_OUTPUT_BYTES."""
    kept = {key: replaced[key] if key in replaced else _cut(value) for key, value in output.items()}
    size = len(json.dumps(kept))
    if size <= MAX_STEP_OUTPUT_BYTES:
        return kept
    return {"truncated": f"the output is {size} bytes of JSON, over the {MAX_STEP_OUTPUT_BYTES} kept here"}


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
        return value[:MAX_TEXT_CHARS] + f"... [cut: {len(value)} characters in all]"
    if isinstance(value, list):
        head = [_cut(item) for item in value[:MAX_LIST_ITEMS]]
        return [*head, f"... [cut: {len(value)} items in all]"] if len(value) > MAX_LIST_ITEMS else head
    if isinstance(value, dict):
        return {key: _cut(item) for key, item in value.items()}
    return value


def speech_fusions(spec: PipelineSpec) -> dict[str, PipelineStep]:
    """Chat steps whose whole answer a later synthesize step speaks, mapped to that step.

    Such a pair can run as a stream: each sentence is spoken as soon as the model has written it, so
    the first audio comes long before the answer is complete. Only when the synthesize step's other
    inputs are known before the chat ends (they read only the run's input and config).
    """
    chats = {step.id for step in spec.steps if step.unit == "inference.chat"}
    fused: dict[str, PipelineStep] = {}
    for step in spec.steps:
        text = step.inputs.get("text")
        if step.unit != "inference.synthesize" or not isinstance(text, str) or not REFERENCE.fullmatch(text):
            continue
        (found,) = located_references(text)
        chat = found.path[0] if found.root == "steps" and found.path[1:] == ("content",) else None
        others = {key: value for key, value in step.inputs.items() if key != "text"}
        if (
            chat in chats
            and chat not in fused
            and set(step.depends_on) <= {chat}
            and all(f.root != "steps" for f in located_references(others))
        ):
            fused[chat] = step
    return fused
