"""The executor with scripted steps: dependency order, bounded parallelism, retries, timeouts,
onFailure, cancellation and events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from aima.api.pipeline import PipelineRunPhase, PipelineSpec, PipelineStep, StepPhase
from aima.pipelines.executor import Event, EventType, Executor, RunResult, StepFailure

pytestmark = pytest.mark.unit

Behaviour = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Script:
    """A StepRunner whose steps do what the test says, recording calls and concurrency."""

    def __init__(self, **behaviours: Behaviour) -> None:
        self.behaviours = behaviours
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.running = 0
        self.peak = 0

    async def __call__(self, step: PipelineStep, inputs: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((step.id, inputs))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            behaviour = self.behaviours.get(step.id)
            return await behaviour(inputs) if behaviour else {"text": f"{step.id} done"}
        finally:
            self.running -= 1


def sleeps(seconds: float) -> Behaviour:
    async def behaviour(_: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return {"text": "slept"}

    return behaviour


def fails(code: str = "UNAVAILABLE", times: int = 10**6) -> Behaviour:
    left = [times]

    async def behaviour(_: dict[str, Any]) -> dict[str, Any]:
        if left[0] > 0:
            left[0] -= 1
            raise StepFailure(code, "engine down")
        return {"text": "recovered"}

    return behaviour


def pipeline(*steps: dict[str, Any], **extra: Any) -> PipelineSpec:
    return PipelineSpec.model_validate({"steps": [{"unit": "x.y"} | s for s in steps]} | extra)


def run(spec: PipelineSpec, script: Script, **kwargs: Any) -> tuple[RunResult, list[Event]]:
    events: list[Event] = []

    async def emit(event: Event) -> None:
        events.append(event)

    async def go() -> RunResult:
        executor = Executor(spec=spec, run_step=script, emit=emit, parallelism=2, retry_delay=0.01)
        cancel = kwargs.pop("cancel_after", None)
        flag = asyncio.Event()
        if cancel is not None:
            asyncio.get_running_loop().call_later(cancel, flag.set)
        return await executor.run(
            inputs=kwargs.get("inputs", {}), config={}, cancel=flag, **kwargs.get("opts", {})
        )

    return asyncio.run(go()), events


def phases(result: RunResult) -> dict[str, StepPhase]:
    return {step_id: step.phase for step_id, step in result.steps.items()}


def test_a_chain_passes_outputs_along_and_resolves_outputs() -> None:
    script = Script()
    spec = pipeline(
        {"id": "a", "inputs": {"q": "${input.q}"}},
        {"id": "b", "inputs": {"t": "got ${steps.a.text}"}},
        outputs={"answer": "${steps.b.text}"},
        inputs=[{"name": "q"}],
    )
    result, events = run(spec, script, inputs={"q": "hi"})
    assert result.phase is PipelineRunPhase.SUCCEEDED
    assert script.calls == [("a", {"q": "hi"}), ("b", {"t": "got a done"})]
    assert result.outputs == {"answer": "b done"}
    assert [e.type for e in events] == [
        EventType.STARTED,
        EventType.STEP_STARTED,
        EventType.STEP_COMPLETED,
        EventType.STEP_STARTED,
        EventType.STEP_COMPLETED,
        EventType.COMPLETED,
    ]


def test_independent_steps_run_in_parallel_up_to_the_bound() -> None:
    script = Script(a=sleeps(0.1), b=sleeps(0.1), c=sleeps(0.1))
    spec = pipeline({"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d", "dependsOn": ["a", "b", "c"]})
    result, _ = run(spec, script)
    assert result.phase is PipelineRunPhase.SUCCEEDED
    assert script.peak == 2
    assert script.calls[-1][0] == "d"


def test_a_failing_middle_step_aborts_and_skips_the_rest() -> None:
    spec = pipeline(
        {"id": "a"},
        {"id": "b", "inputs": {"t": "${steps.a.text}"}},
        {"id": "c", "inputs": {"t": "${steps.b.text}"}},
    )
    result, events = run(spec, Script(b=fails()))
    assert (result.phase, result.reason, result.failed_step) == (PipelineRunPhase.FAILED, "StepFailed", "b")
    assert phases(result) == {"a": StepPhase.SUCCEEDED, "b": StepPhase.FAILED, "c": StepPhase.SKIPPED}
    assert result.steps["b"].code == "UNAVAILABLE" and result.message == "step b (x.y) failed: engine down"
    assert events[-1].type is EventType.FAILED and events[-1].step == "b"


def test_continue_runs_what_does_not_need_the_failed_step() -> None:
    spec = pipeline(
        {"id": "a", "onFailure": "Continue"},
        {"id": "b", "inputs": {"t": "${steps.a.text}"}},
        {"id": "c"},
        outputs={"x": "${steps.b.text}", "y": "${steps.c.text}"},
    )
    result, _ = run(spec, Script(a=fails()))
    assert result.phase is PipelineRunPhase.SUCCEEDED
    assert phases(result) == {"a": StepPhase.FAILED, "b": StepPhase.SKIPPED, "c": StepPhase.SUCCEEDED}
    assert "an earlier step did not succeed" in (result.steps["b"].error or "")
    assert result.outputs == {"y": "c done"}
    assert "a failed (onFailure: Continue); outputs without a value: x" in result.message


def test_retries_until_success_but_not_for_invalid_input() -> None:
    result, _ = run(pipeline({"id": "a", "retries": 2}), Script(a=fails(times=2)))
    assert result.phase is PipelineRunPhase.SUCCEEDED and result.steps["a"].attempts == 3
    result, _ = run(pipeline({"id": "a", "retries": 2}), Script(a=fails("INVALID_INPUT")))
    assert result.phase is PipelineRunPhase.FAILED and result.steps["a"].attempts == 1


def test_a_step_timeout_fails_the_step() -> None:
    result, _ = run(pipeline({"id": "a", "timeoutSeconds": 1}), Script(a=sleeps(5)))
    assert result.steps["a"].code == "TIMEOUT" and result.phase is PipelineRunPhase.FAILED


def test_cancel_stops_running_steps_and_skips_the_rest() -> None:
    script = Script(a=sleeps(5))
    result, _ = run(pipeline({"id": "a"}, {"id": "b", "dependsOn": ["a"]}), script, cancel_after=0.1)
    assert result.phase is PipelineRunPhase.CANCELLED
    assert phases(result) == {"a": StepPhase.CANCELLED, "b": StepPhase.SKIPPED}
    assert script.running == 0  # the cancelled step's work really stopped


def test_the_run_timeout_ends_the_run() -> None:
    result, _ = run(pipeline({"id": "a"}), Script(a=sleeps(5)), opts={"timeout": 0.1})
    assert (result.phase, result.reason) == (PipelineRunPhase.FAILED, "TimedOut")


def test_missing_inputs_and_unknown_config_fail_before_any_step() -> None:
    script = Script()
    result, events = run(pipeline({"id": "a"}, inputs=[{"name": "q"}]), script)
    assert result.message == "the run lacks required inputs: q" and script.calls == [] and events == []


def test_for_each_runs_once_per_item_in_order() -> None:
    async def echo(inputs: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.05 if inputs["t"] == "a" else 0)
        return {"text": inputs["t"].upper()}

    script = Script(each=echo)
    spec = pipeline(
        {"id": "each", "forEach": "${input.items}", "inputs": {"t": "${item}"}},
        outputs={"all": "${steps.each.items}"},
        inputs=[{"name": "items", "type": "JSON"}],
    )
    result, _ = run(spec, script, inputs={"items": ["a", "b", "c"]})
    assert result.outputs == {"all": [{"text": "A"}, {"text": "B"}, {"text": "C"}]}
    assert script.peak == 2  # bounded by the executor's parallelism


def test_a_failing_item_fails_the_for_each_step() -> None:
    async def picky(inputs: dict[str, Any]) -> dict[str, Any]:
        if inputs["t"] == "bad":
            raise StepFailure("INVALID_INPUT", "no")
        return {"text": "ok"}

    spec = pipeline(
        {"id": "each", "forEach": "${input.items}", "inputs": {"t": "${item}"}}, inputs=[{"name": "items"}]
    )
    result, _ = run(spec, Script(each=picky), inputs={"items": ["good", "bad"]})
    assert result.steps["each"].error == "item 1: no" and result.phase is PipelineRunPhase.FAILED
