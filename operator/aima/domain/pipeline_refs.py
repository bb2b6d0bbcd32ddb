"""Check the `${...}` references inside a Pipeline's step inputs and outputs (pure).

The CRD checks `dependsOn` with CEL, but step inputs are free-form JSON that CEL cannot see, so the
Pipeline controller runs these checks and reports problems on the Ready condition (reason
InvalidSpec). The rule is the same: a step may only read steps listed before it, which keeps the
list order a valid execution order and makes cycles impossible.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

from aima.api.pipeline import PipelineSpec

__all__ = ["REFERENCE", "reference_problems", "references"]

REFERENCE: Final = re.compile(r"\$\{\s*([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_]+)*)\s*\}")
"""`${root.path.to.field}` where root is input, config or steps."""

_ROOTS: Final = frozenset({"input", "config", "steps"})


def references(value: Any) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Every reference in a JSON value, as (root, path parts), in document order."""
    if isinstance(value, str):
        for match in REFERENCE.finditer(value):
            yield match.group(1), tuple(part for part in match.group(2).split(".") if part)
    elif isinstance(value, dict):
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def reference_problems(spec: PipelineSpec) -> list[str]:
    """Human-readable problems with the references of a pipeline; empty when all resolve."""
    declared_inputs = {declared.name for declared in spec.inputs}
    problems: list[str] = []
    earlier: set[str] = set()
    for step in spec.steps:
        where = f"step {step.id!r}"
        problems += _problems(
            step.inputs, where=where, earlier=earlier, inputs=declared_inputs, config=spec.config
        )
        earlier.add(step.id)
    problems += _problems(
        spec.outputs, where="outputs", earlier=earlier, inputs=declared_inputs, config=spec.config
    )
    return problems


def _problems(
    value: Any, *, where: str, earlier: set[str], inputs: set[str], config: dict[str, Any]
) -> list[str]:
    problems: list[str] = []
    for root, path in references(value):
        name = path[0] if path else ""
        if root not in _ROOTS:
            problems.append(
                f"{where}: ${{{root}...}} is unknown; references start with input, config or steps"
            )
        elif not name:
            problems.append(f"{where}: ${{{root}}} needs a field, such as ${{{root}.name}}")
        elif root == "steps" and name not in earlier:
            problems.append(f"{where}: ${{steps.{name}...}} must name a step listed before it")
        elif root == "input" and inputs and name not in inputs:
            problems.append(f"{where}: ${{input.{name}}} is not a declared input")
        elif root == "config" and name not in config:
            problems.append(f"{where}: ${{config.{name}}} is not set in spec.config")
    return problems
