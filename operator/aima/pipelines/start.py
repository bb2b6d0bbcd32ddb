"""Starting a run, the same for a recorded run (the PipelineRun controller) and one a door runs in
its own process: whether the Pipeline can start with these inputs, then its steps executed on the
unit registry, streamed sentence by sentence where a step allows it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aima.api.pipeline import Pipeline, PipelineProblem, PipelineSpec
from aima.domain.pipeline import validate
from aima.domain.pipeline_status import problems_text
from aima.pipelines.executor import Emit, Executor, RunResult, run_problem
from aima.pipelines.steps import StreamingSteps, UnitSteps
from aima.units.core import Context, Registry

__all__ = ["NotStartable", "execute", "not_startable"]


@dataclass(frozen=True)
class NotStartable:
    """Why a run cannot start: the Pipeline's definition (``problems``) or the run's inputs."""

    message: str
    """In words, beginning in lower case."""
    problems: list[PipelineProblem]
    """What is wrong with the definition, by step and field; empty when the inputs are at fault."""


def not_startable(
    pipeline: Pipeline, registry: Registry, inputs: Mapping[str, Any], config: Mapping[str, Any]
) -> NotStartable | None:
    """Why ``pipeline`` cannot run with ``inputs`` and ``config`` overrides; None when it can."""
    if problems := validate(pipeline.spec, {unit.name: unit for unit in registry}):
        return NotStartable(
            f"pipeline {pipeline.metadata.name} is not valid: {problems_text(problems)}", problems
        )
    if problem := run_problem(pipeline.spec, inputs, config):
        return NotStartable(problem, [])
    return None


async def execute(
    spec: PipelineSpec,
    context: Context,
    registry: Registry,
    *,
    inputs: Mapping[str, Any],
    config: Mapping[str, Any],
    emit: Emit,
    cancel: asyncio.Event | None,
    timeout: float,
) -> RunResult:
    """Run ``spec``'s steps through the units of ``registry``, telling ``emit`` what happens (tokens
    and spoken sentences included) until done, cancelled or past ``timeout`` seconds."""
    steps = StreamingSteps(UnitSteps(registry, context), spec, inputs, config, emit=emit)
    executor = Executor(
        spec=spec, run_step=steps, emit=emit, parallelism=context.settings.pipeline_parallelism
    )
    try:
        return await executor.run(inputs=inputs, config=config, cancel=cancel, timeout=timeout)
    finally:
        steps.close()
