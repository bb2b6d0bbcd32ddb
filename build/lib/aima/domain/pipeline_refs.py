"""The `${...}` references inside a Pipeline's step inputs and outputs: finding, checking, resolving (pure).

The CRD checks `dependsOn` with CEL, but step inputs are free-form JSON that CEL cannot see, so the
Pipeline controller runs these checks and reports problems by step and field. The rule is the same:
a step may only read steps listed before it, which keeps the list order a valid execution order and
makes cycles impossible.

Resolution keeps types: a string that is exactly one reference becomes the referenced value (a list
of documents stays a list, a number stays a number); a reference inside longer text is rendered into
it (strings as they are, anything else as JSON).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aima.api.pipeline import PipelineProblem, PipelineSpec, PipelineStep

__all__ = [
    "REFERENCE",
    "Reference",
    "UnresolvedError",
    "located_references",
    "reference_problems",
    "references",
    "resolve",
]

REFERENCE: Final = re.compile(r"\$\{\s*([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_]+)*)\s*\}")
"""`${root.path.to.field}` where root is input, config or steps."""

_ROOTS: Final = frozenset({"input", "config", "steps"})


@dataclass(frozen=True)
class Reference:
    """One `${root.a.b}` found at `location` (the path of keys and indexes inside a value)."""

    location: tuple[str | int, ...]
    root: str
    path: tuple[str, ...]

    @property
    def text(self) -> str:
        return "${" + ".".join((self.root, *self.path)) + "}"


class UnresolvedError(LookupError):
    """A reference names something a run does not have (a skipped step, a missing field)."""


def references(value: Any) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Every reference in a JSON value, as (root, path parts), in document order."""
    for found in located_references(value):
        yield found.root, found.path


def located_references(value: Any, location: tuple[str | int, ...] = ()) -> Iterator[Reference]:
    """Every reference in a JSON value with where it sits, in document order."""
    if isinstance(value, str):
        for match in REFERENCE.finditer(value):
            path = tuple(part for part in match.group(2).split(".") if part)
            yield Reference(location=location, root=match.group(1), path=path)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from located_references(item, (*location, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from located_references(item, (*location, index))


def dotted(location: tuple[str | int, ...]) -> str:
    """A location as people write it: inputs.messages.1.content."""
    return ".".join(str(part) for part in location)


def reference_problems(spec: PipelineSpec) -> list[PipelineProblem]:
    """Problems with the references of a pipeline, by step and field; empty when all resolve."""
    declared_inputs = {declared.name for declared in spec.inputs}
    problems: list[PipelineProblem] = []
    earlier: set[str] = set()
    for step in spec.steps:
        problems += _for_each_problems(step, earlier=earlier, inputs=declared_inputs, config=spec.config)
        for found in located_references(step.inputs, ("inputs",)):
            if found.root == "item" and step.for_each is not None:
                continue
            message = _problem(found, earlier=earlier, inputs=declared_inputs, config=spec.config)
            if message:
                problems.append(PipelineProblem(step=step.id, field=dotted(found.location), message=message))
        earlier.add(step.id)
    for found in located_references(spec.outputs, ("outputs",)):
        message = _problem(found, earlier=earlier, inputs=declared_inputs, config=spec.config)
        if message:
            problems.append(PipelineProblem(field=dotted(found.location), message=message))
    return problems


def _for_each_problems(
    step: PipelineStep, *, earlier: set[str], inputs: set[str], config: dict[str, Any]
) -> list[PipelineProblem]:
    if step.for_each is None:
        return []
    found = list(located_references(step.for_each, ("forEach",)))
    if len(found) != 1 or not REFERENCE.fullmatch(step.for_each.strip()):
        return [
            PipelineProblem(
                step=step.id,
                field="forEach",
                message="forEach must be exactly one reference to a list, such as ${input.prompts}",
            )
        ]
    problem = _problem(found[0], earlier=earlier, inputs=inputs, config=config)
    return [PipelineProblem(step=step.id, field="forEach", message=problem)] if problem else []


def _problem(found: Reference, *, earlier: set[str], inputs: set[str], config: dict[str, Any]) -> str | None:
    root, name = found.root, found.path[0] if found.path else ""
    if root == "item":
        return "${item} is only known in a step with forEach"
    if root not in _ROOTS:
        return f"${{{root}...}} is unknown; references start with input, config or steps"
    if not name:
        return f"${{{root}}} needs a field, such as ${{{root}.name}}"
    if root == "steps" and name not in earlier:
        return f"${{steps.{name}...}} must name a step listed before it"
    if root == "steps" and len(found.path) < 2:
        return f"${{steps.{name}}} needs a field of the step's output, such as ${{steps.{name}.text}}"
    if root == "input" and inputs and name not in inputs:
        return f"${{input.{name}}} is not a declared input"
    if root == "config" and name not in config:
        return f"${{config.{name}}} is not set in spec.config"
    return None


def resolve(value: Any, scope: Mapping[str, Any]) -> Any:
    """`value` with every reference replaced from `scope` ({"input": ..., "config": ..., "steps": ...}).

    Raises UnresolvedError naming the first reference that cannot be resolved.
    """
    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value.strip())
        if whole is not None:
            return _lookup(scope, whole.group(1), whole.group(2))
        return REFERENCE.sub(lambda m: _render(_lookup(scope, m.group(1), m.group(2))), value)
    if isinstance(value, dict):
        return {key: resolve(item, scope) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, scope) for item in value]
    return value


def _lookup(scope: Mapping[str, Any], root: str, tail: str) -> Any:
    current: Any = scope.get(root)
    if current is None:
        raise UnresolvedError(f"${{{root}{tail}}}: nothing is known under {root}")
    walked = root
    for part in (p for p in tail.split(".") if p):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise UnresolvedError(f"${{{root}{tail}}}: {walked} has no {part!r}")
        walked += f".{part}"
    return current


def _render(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
