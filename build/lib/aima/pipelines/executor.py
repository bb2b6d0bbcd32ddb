"""Run a pipeline's steps: in dependency order, independent ones in parallel (bounded), each with its
timeout, retries and failure policy, cancellable at any moment.

The executor knows nothing of units, HTTP or the API server: it calls a `StepRunner` with each
step's resolved inputs and reports what happens through `emit`. The PipelineRun controller turns
those events into status writes; the HTTP door turns them into a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

from aima.api.common import Reason
from aima.api.pipeline import FailurePolicy, PipelineRunPhase, PipelineSpec, PipelineStep, StepPhase
from aima.domain.pipeline import dependencies
from aima.domain.pipeline_refs import UnresolvedError, resolve

__all__ = [
    "Event",
    "EventType",
    "Executor",
    "RunResult",
    "StepFailure",
    "StepResult",
    "StepRunner",
    "run_problem",
]

_NOT_RETRIED: Final = frozenset({"INVALID_INPUT", "UNIT_NOT_FOUND"})
"""Error codes a retry cannot fix."""
_DONE: Final = frozenset({StepPhase.SUCCEEDED, StepPhase.FAILED, StepPhase.SKIPPED, StepPhase.CANCELLED})


class EventType(StrEnum):
    """What a run reports as it goes (the seeds' pipeline events, plus streaming ones)."""

    STARTED = "pipeline.started"
    STEP_STARTED = "pipeline.step_started"
    STEP_COMPLETED = "pipeline.step_completed"
    STEP_FAILED = "pipeline.step_failed"
    STEP_SKIPPED = "pipeline.step_skipped"
    DELTA = "pipeline.delta"
    """Text as a streaming step produces it (LLM tokens)."""
    AUDIO = "pipeline.audio"
    """A chunk of audio as a streaming step produces it (one sentence of speech)."""
    COMPLETED = "pipeline.completed"
    FAILED = "pipeline.failed"


@dataclass(frozen=True)
class Event:
    """One thing that happened in a run."""

    type: EventType
    step: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


class StepFailure(Exception):
    """A step's unit failed; `code` is the unit error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StepRunner(Protocol):
    """Runs one step with its resolved inputs; returns the unit's output or raises StepFailure."""

    async def __call__(self, step: PipelineStep, inputs: dict[str, Any]) -> dict[str, Any]: ...


Emit = Callable[[Event], Awaitable[None]]
_Running = dict[asyncio.Task[dict[str, Any]], PipelineStep]


async def _ignore(_: Event) -> None:
    return None


@dataclass
class StepResult:
    """What happened to one step."""

    id: str
    unit: str
    phase: StepPhase = StepPhase.PENDING
    attempts: int = 0
    started: datetime.datetime | None = None
    finished: datetime.datetime | None = None
    duration_ms: int | None = None
    output: dict[str, Any] | None = None
    error: str | None = None
    code: str | None = None


@dataclass
class RunResult:
    """How a run ended."""

    phase: PipelineRunPhase
    reason: str
    message: str
    steps: dict[str, StepResult]
    outputs: dict[str, Any] = field(default_factory=dict)
    failed_step: str | None = None


def run_problem(spec: PipelineSpec, inputs: Mapping[str, Any], config: Mapping[str, Any]) -> str | None:
    """Why a run cannot start with these inputs and config overrides; None when it can."""
    declared = {i.name for i in spec.inputs}
    missing = [i.name for i in spec.inputs if i.required and i.name not in inputs]
    if missing:
        return f"the run lacks required inputs: {', '.join(missing)}"
    if declared and (unknown := sorted(set(inputs) - declared)):
        known = ", ".join(sorted(declared))
        return f"inputs {', '.join(unknown)} are not declared by the pipeline (it has {known})"
    if unknown := sorted(set(config) - set(spec.config)):
        return f"config keys {', '.join(unknown)} are not in the pipeline's config"
    return None


@dataclass(kw_only=True)
class Executor:
    """Runs one pipeline definition; one instance may run it many times."""

    spec: PipelineSpec
    run_step: StepRunner
    emit: Emit = _ignore
    parallelism: int = 4
    """Most steps running at once."""
    retry_delay: float = 0.5
    """Seconds before the first retry of a step; doubled for each further one."""

    async def run(
        self,
        *,
        inputs: Mapping[str, Any],
        config: Mapping[str, Any],
        cancel: asyncio.Event | None = None,
        timeout: float | None = None,
    ) -> RunResult:
        """Run every step; never raises for a step's failure, a cancel or a timeout: the result says."""
        steps = {s.id: StepResult(id=s.id, unit=s.unit) for s in self.spec.steps}
        if problem := run_problem(self.spec, inputs, config):
            return RunResult(PipelineRunPhase.FAILED, Reason.INVALID_SPEC, problem, steps)
        run = _Run(
            spec=self.spec,
            steps=steps,
            scope={"input": dict(inputs), "config": self.spec.config | dict(config)},
            timeout_text=f"{timeout:g} s" if timeout else "none",
        )
        await self.emit(Event(EventType.STARTED, data={"steps": list(steps)}))
        await self._drive(run, cancel, deadline=None if timeout is None else time.monotonic() + timeout)
        self._skip_rest(run)
        result = run.result()
        kind = EventType.COMPLETED if result.phase is PipelineRunPhase.SUCCEEDED else EventType.FAILED
        data = {"reason": result.reason, "message": result.message, "outputs": result.outputs}
        await self.emit(Event(kind, step=result.failed_step, data=data))
        return result

    async def _drive(self, run: _Run, cancel: asyncio.Event | None, *, deadline: float | None) -> None:
        running: _Running = {}
        cancelled = asyncio.ensure_future(cancel.wait()) if cancel else None
        try:
            while True:
                await self._start_ready(run, running)
                if not running:
                    return
                waiting: set[asyncio.Future[Any]] = {*running, *([cancelled] if cancelled else [])}
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                done, _ = await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if cancelled is not None and cancelled in done:
                    run.stop(Reason.CANCELLED, "the run was cancelled")
                    return
                if not done:
                    run.stop(Reason.TIMED_OUT, f"the run took longer than its timeout ({run.timeout_text})")
                    return
                for task in [t for t in running if t in done]:
                    await self._finish(run, running.pop(task), task)
        finally:
            if cancelled is not None:
                cancelled.cancel()
            await self._cancel(run, running)

    async def _start_ready(self, run: _Run, running: _Running) -> None:
        for step in self.spec.steps:
            result = run.steps[step.id]
            if result.phase is not StepPhase.PENDING or not run.deps_done(step.id):
                continue
            if run.stopped is not None:
                await self._skip(run, step, f"not started: {run.message}")
                continue
            try:
                work = self._work(step, result, run.scope)
            except UnresolvedError as unresolved:
                await self._skip(run, step, f"an earlier step did not succeed: {unresolved}")
                continue
            if len(running) >= self.parallelism:
                work.close()
                return
            result.phase, result.started = StepPhase.RUNNING, _now()
            running[asyncio.create_task(work)] = step

    def _work(
        self, step: PipelineStep, result: StepResult, scope: dict[str, Any]
    ) -> Coroutine[Any, Any, dict[str, Any]]:
        """The coroutine running the step; raises UnresolvedError when its inputs cannot be known."""
        if step.for_each is None:
            return self._attempts(step, result, resolve(step.inputs, scope))
        items = resolve(step.for_each, scope)
        if not isinstance(items, list):
            raise UnresolvedError(f"forEach {step.for_each} is a {type(items).__name__}, not a list")
        return self._each(step, result, items, scope)

    async def _each(
        self, step: PipelineStep, result: StepResult, items: list[Any], scope: dict[str, Any]
    ) -> dict[str, Any]:
        """Run a forEach step once per item, `parallelism` at a time; the first failure fails it."""
        bound = asyncio.Semaphore(self.parallelism)

        async def one(index: int, item: Any) -> dict[str, Any]:
            async with bound:
                try:
                    return await self._attempts(step, result, resolve(step.inputs, scope | {"item": item}))
                except UnresolvedError as unresolved:
                    raise StepFailure("INVALID_INPUT", f"item {index}: {unresolved}") from None
                except StepFailure as failure:
                    raise StepFailure(failure.code, f"item {index}: {failure.message}") from None

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(i, item)) for i, item in enumerate(items)]
        except* StepFailure as failures:
            raise failures.exceptions[0] from None
        return {"items": [task.result() for task in tasks]}

    async def _attempts(
        self, step: PipelineStep, result: StepResult, inputs: dict[str, Any]
    ) -> dict[str, Any]:
        while True:
            result.attempts += 1
            await self.emit(Event(EventType.STEP_STARTED, step=step.id, data={"attempt": result.attempts}))
            try:
                async with asyncio.timeout(step.timeout_seconds):
                    return await self.run_step(step, inputs)
            except TimeoutError:
                failure = StepFailure("TIMEOUT", f"the step took longer than {step.timeout_seconds} s")
            except StepFailure as failed:
                failure = failed
            if result.attempts > step.retries or failure.code in _NOT_RETRIED:
                raise failure
            await asyncio.sleep(self.retry_delay * 2 ** (result.attempts - 1))

    async def _finish(self, run: _Run, step: PipelineStep, task: asyncio.Task[dict[str, Any]]) -> None:
        result = run.steps[step.id]
        result.finished = _now()
        result.duration_ms = _elapsed_ms(result)
        failure = task.exception()
        if failure is None:
            result.phase, result.output = StepPhase.SUCCEEDED, task.result()
            run.scope["steps"][step.id] = result.output
            data = {"durationMs": result.duration_ms, "output": result.output}
            await self.emit(Event(EventType.STEP_COMPLETED, step=step.id, data=data))
            return
        code, message = (
            (failure.code, failure.message)
            if isinstance(failure, StepFailure)
            else ("INTERNAL", f"{type(failure).__name__}: {failure}")
        )
        result.phase, result.error, result.code = StepPhase.FAILED, message, code
        await self.emit(Event(EventType.STEP_FAILED, step=step.id, data={"code": code, "error": message}))
        if step.on_failure is FailurePolicy.ABORT and run.stopped is None:
            run.failed_step = step.id
            run.stop(Reason.STEP_FAILED, f"step {step.id} ({step.unit}) failed: {message}")

    async def _skip(self, run: _Run, step: PipelineStep, why: str) -> None:
        result = run.steps[step.id]
        result.phase, result.error = StepPhase.SKIPPED, why
        await self.emit(Event(EventType.STEP_SKIPPED, step=step.id, data={"reason": why}))

    def _skip_rest(self, run: _Run) -> None:
        for result in run.steps.values():
            if result.phase is StepPhase.PENDING:
                result.phase, result.error = StepPhase.SKIPPED, f"not started: {run.message}"

    async def _cancel(self, run: _Run, running: _Running) -> None:
        for task in running:
            task.cancel()
        for task, step in running.items():
            with contextlib.suppress(BaseException):
                await task
            result = run.steps[step.id]
            result.phase, result.finished = StepPhase.CANCELLED, _now()
            result.duration_ms, result.error = _elapsed_ms(result), f"stopped while running: {run.message}"
        running.clear()


@dataclass
class _Run:
    """The state of one run while it goes."""

    spec: PipelineSpec
    steps: dict[str, StepResult]
    scope: dict[str, Any]
    timeout_text: str = "none"
    stopped: str | None = None
    message: str = ""
    failed_step: str | None = None
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.scope["steps"] = {}
        self.deps = dependencies(self.spec)

    def deps_done(self, step_id: str) -> bool:
        return all(self.steps[d].phase in _DONE for d in self.deps[step_id])

    def stop(self, reason: str, message: str) -> None:
        if self.stopped is None:
            self.stopped, self.message = reason, message

    def result(self) -> RunResult:
        outputs, unresolved = {}, []
        for name, value in self.spec.outputs.items():
            try:
                outputs[name] = resolve(value, self.scope)
            except UnresolvedError:
                unresolved.append(name)
        if self.stopped == Reason.CANCELLED:
            phase = PipelineRunPhase.CANCELLED
        elif self.stopped is not None:
            phase = PipelineRunPhase.FAILED
        else:
            phase = PipelineRunPhase.SUCCEEDED
        return RunResult(
            phase=phase,
            reason=self.stopped or Reason.SUCCEEDED,
            message=self.message or self._summary(unresolved),
            steps=self.steps,
            outputs=outputs,
            failed_step=self.failed_step,
        )

    def _summary(self, unresolved: list[str]) -> str:
        done = sum(r.phase is StepPhase.SUCCEEDED for r in self.steps.values())
        failed = [r.id for r in self.steps.values() if r.phase is StepPhase.FAILED]
        text = f"{done} of {len(self.steps)} steps succeeded in {time.monotonic() - self.started:.1f} s"
        if failed:
            text += f"; {', '.join(failed)} failed (onFailure: Continue)"
        if unresolved:
            text += f"; outputs without a value: {', '.join(unresolved)}"
        return text


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _elapsed_ms(result: StepResult) -> int | None:
    if result.started is None or result.finished is None:
        return None
    return max(0, round((result.finished - result.started).total_seconds() * 1000))
