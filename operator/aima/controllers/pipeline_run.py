"""PipelineRun controller: starts a run once its Pipeline is valid and its services are ready, executes
it in the operator (a task per run), records per-step status as it goes, and stops it on cancel.

Status stays bounded: text is cut, and binary outputs such as audio go to a Secret owned by the run
(`<run>-outputs`, keys `<step>.<field>`; at most ~900 KiB, the rest is reported as omitted), which
the status references. A Secret rather than a ConfigMap because a user's voice and the answers
to it are personal data.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from aima.api.common import API_VERSION, ConditionStatus, Keys, Reason
from aima.api.pipeline import Pipeline, PipelineRun, PipelineRunStatus, PipelineSpec, StepPhase, StepStatus
from aima.controllers.runtime import (
    UNSTARTED,
    ClusterView,
    Key,
    Reconciler,
    key_of,
    when_gone,
    write_status,
)
from aima.domain.pipeline import binary_fields, bounded
from aima.domain.pipeline_refs import UnresolvedError, resolve
from aima.domain.pipeline_status import (
    INTERRUPTED,
    RUNNING,
    SERVICES_NOT_READY,
    blocking,
    finished,
    run_condition,
    services_text,
    with_generation,
)
from aima.kube import KubeClient, KubeError, resources
from aima.pipelines.executor import Event, EventType, RunResult
from aima.pipelines.start import execute, not_startable
from aima.settings import Settings
from aima.units.core import Context, Registry

Body = dict[str, Any]
logger = logging.getLogger("aima.controllers.pipeline_run")

MAX_SECRET_BYTES: Final = 900 * 1024
"""Binary outputs kept per run; a Secret holds at most 1 MiB."""


@dataclass
class _Active:
    task: asyncio.Task[None]
    cancel: asyncio.Event


@dataclass
class Runs:
    """What executes runs in this replica: the unit registry, an HTTP session and the runs going on."""

    kube: KubeClient
    settings: Settings
    units: Registry
    cluster: ClusterView
    http: aiohttp.ClientSession
    active: dict[Key, _Active] = field(default_factory=dict)

    async def close(self) -> None:
        """Stop every run (their status is left Running: the next start reports them Interrupted)
        and close the HTTP session; the runner calls it when the operator stops."""
        for active in list(self.active.values()):
            active.task.cancel()
            with contextlib.suppress(BaseException):
                await active.task
        await self.http.close()

    def abandon(self, key: Key) -> None:
        """Stop a run whose object is deleted or being deleted."""
        if (active := self.active.get(key)) is not None:
            active.task.cancel()


async def reconcile(body: Body, *, runs: Runs) -> None:
    """Level-triggered: start, nudge (cancel) or account for one PipelineRun."""
    run = PipelineRun.model_validate(body)
    key = _key(run)
    if run.status is not None and finished(run.status):
        await _write(run, with_generation(run.status, run.metadata.generation), runs)
        return
    if (active := runs.active.get(key)) is not None:
        if run.spec.cancel:
            active.cancel.set()
        return
    status = run.status or PipelineRunStatus()
    now = _now()
    if status.start_time is not None:
        await _orphaned(run, status, runs=runs, now=now)
    elif run.spec.cancel:
        await _end(run, status, runs, Reason.CANCELLED, "The run was cancelled before it started")
    else:
        await _try_start(body, run, status, runs=runs, now=now)


async def _try_start(
    body: Body, run: PipelineRun, status: PipelineRunStatus, *, runs: Runs, now: datetime.datetime
) -> None:
    namespace = str(run.metadata.namespace)
    found = await _pipeline(runs, namespace, run.spec.pipeline_ref.name)
    if found is None:
        message = f"Pipeline {run.spec.pipeline_ref.name} not found in namespace {namespace}; create it first"
        await _end(run, status, runs, Reason.PIPELINE_NOT_FOUND, message)
        return
    pipeline = Pipeline.model_validate(found)
    if (refused := not_startable(pipeline, runs.units, run.spec.inputs, run.spec.config)) is not None:
        message = refused.message[0].upper() + refused.message[1:]
        await _end(run, status, runs, Reason.INVALID_SPEC, message)
        return
    services = runs.cluster.step_services(pipeline, run.spec.config)
    if waiting := blocking(services, require_services=runs.settings.pipeline_require_services):
        await _wait_for_services(body, run, status, runs, services_text(waiting), now=now)
        return
    await _start(body, run, pipeline, status, runs=runs, now=now)


async def _wait_for_services(
    body: Body,
    run: PipelineRun,
    status: PipelineRunStatus,
    runs: Runs,
    why: str,
    *,
    now: datetime.datetime,
) -> None:
    created = datetime.datetime.fromisoformat(
        str(body["metadata"]["creationTimestamp"]).replace("Z", "+00:00")
    )
    if run.spec.timeout_seconds and (now - created).total_seconds() > run.spec.timeout_seconds:
        await _end(run, status, runs, Reason.TIMED_OUT, f"Timed out waiting for services: {why}")
        return
    message = f"Waiting for services before starting: {why}"
    waiting = run_condition(
        status,
        state=ConditionStatus.UNKNOWN,
        reason=SERVICES_NOT_READY,
        message=message,
        generation=run.metadata.generation,
        now=now,
    )
    if await _write(run, waiting, runs):
        await runs.kube.event(regarding=body, type_="Warning", reason=SERVICES_NOT_READY, message=message)


async def _start(
    body: Body,
    run: PipelineRun,
    pipeline: Pipeline,
    status: PipelineRunStatus,
    *,
    runs: Runs,
    now: datetime.datetime,
) -> None:
    message = f"Running {len(pipeline.spec.steps)} steps of pipeline {pipeline.metadata.name}"
    started = run_condition(
        status.model_copy(
            update={
                "start_time": now,
                "executor": runs.settings.identity,
                "pipeline_generation": pipeline.metadata.generation,
                "steps": [StepStatus(id=s.id, unit=s.unit) for s in pipeline.spec.steps],
            }
        ),
        state=ConditionStatus.UNKNOWN,
        reason=RUNNING,
        message=message,
        generation=run.metadata.generation,
        now=now,
    )
    await _write(run, started, runs)
    await runs.kube.event(regarding=body, type_="Normal", reason="Started", message=message)
    key = _key(run)
    cancel = asyncio.Event()
    recorder = _Recorder(body=body, run=run, spec=pipeline.spec, status=started, runs=runs)
    task = asyncio.create_task(_execute(recorder, cancel=cancel))
    runs.active[key] = _Active(task=task, cancel=cancel)
    task.add_done_callback(lambda _: runs.active.pop(key, None))


async def _execute(recorder: _Recorder, *, cancel: asyncio.Event) -> None:
    runs, run, spec = recorder.runs, recorder.run, recorder.spec
    context = Context(
        kube=runs.kube, settings=runs.settings, namespace=str(run.metadata.namespace), http=runs.http
    )
    try:
        result = await execute(
            spec,
            context,
            runs.units,
            inputs=await _kept_inputs(runs.kube, run),
            config=run.spec.config,
            emit=recorder.on_event,
            cancel=cancel,
            timeout=run.spec.timeout_seconds or runs.settings.pipeline_max_run_seconds,
        )
        await recorder.finish(result)
    except Exception:
        logger.exception("PipelineRun failed to record: %s/%s", run.metadata.namespace, run.metadata.name)


async def _kept_inputs(kube: KubeClient, run: PipelineRun) -> dict[str, Any]:
    """The run's inputs with those kept in a Secret (audio and images given inline to pipeline.run)
    read back, the Secret made the run's so that it goes with it; a value whose Secret is gone stays
    a reference, and its step says it is no audio."""
    inputs = dict(run.spec.inputs)
    for name, value in run.spec.inputs.items():
        ref = value.get("secretKeyRef") if isinstance(value, dict) and len(value) == 1 else None
        if not isinstance(ref, dict):
            continue
        secret = await kube.get(
            resources.SECRETS, name=str(ref.get("name")), namespace=run.metadata.namespace
        )
        if secret is None or (data := secret.get("data", {}).get(str(ref.get("key")))) is None:
            continue
        inputs[name] = data  # base64, as the step's unit takes audio and images
        if not secret["metadata"].get("ownerReferences"):
            owned = {"metadata": {"ownerReferences": [_owner(run)]}}
            await kube.patch(
                resources.SECRETS,
                name=secret["metadata"]["name"],
                namespace=run.metadata.namespace,
                patch=owned,
            )
    return inputs


def _owner(run: PipelineRun) -> dict[str, Any]:
    """The owner reference of what a run keeps (its inputs and outputs Secrets)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "PipelineRun",
        "name": run.metadata.name,
        "uid": run.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


async def _orphaned(
    run: PipelineRun, status: PipelineRunStatus, *, runs: Runs, now: datetime.datetime
) -> None:
    """A run marked started that no task of this replica executes."""
    if status.executor in (None, runs.settings.identity):
        message = (
            "The operator stopped while the run was executing; steps cannot be resumed, "
            "create a new PipelineRun"
        )
        await _end(run, status, runs, INTERRUPTED, message)
        return
    limit = run.spec.timeout_seconds or runs.settings.pipeline_max_run_seconds
    if status.start_time is not None and (now - status.start_time).total_seconds() > limit:
        message = f"Replica {status.executor} did not finish the run within {limit:g} s"
        await _end(run, status, runs, Reason.TIMED_OUT, message)


async def _end(run: PipelineRun, status: PipelineRunStatus, runs: Runs, reason: str, message: str) -> None:
    """Fail (or cancel) a run that never executed, or whose executor is gone."""
    now = _now()
    steps = [
        s
        if s.phase in (StepPhase.SUCCEEDED, StepPhase.FAILED)
        else s.model_copy(update={"phase": StepPhase.SKIPPED})
        for s in status.steps
    ]
    ended = run_condition(
        status.model_copy(update={"completion_time": now, "current_step": None, "steps": steps}),
        state=ConditionStatus.FALSE,
        reason=reason,
        message=message,
        generation=run.metadata.generation,
        now=now,
    )
    if await _write(run, ended, runs):
        body = run.model_dump(mode="json", by_alias=True)
        await runs.kube.event(
            regarding=body,
            type_="Warning" if reason != Reason.CANCELLED else "Normal",
            reason=reason,
            message=message,
        )


async def _write(run: PipelineRun, status: PipelineRunStatus, runs: Runs) -> bool:
    """Patch the run's status when it differs from the status read; True when written."""
    body = run.model_dump(mode="json", by_alias=True, exclude_none=True)
    return await write_status(runs.kube, runs.cluster.pipeline_runs, body, status)


@dataclass
class _Recorder:
    """Turns the executor's events into status writes and Events, keeping outputs bounded."""

    body: Body
    run: PipelineRun
    spec: PipelineSpec
    status: PipelineRunStatus
    runs: Runs
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Bounded outputs by step, as in status."""
    secret: dict[str, str] = field(default_factory=dict)
    secret_bytes: int = 0
    written: Body | None = None

    @property
    def secret_name(self) -> str:
        return f"{self.run.metadata.name}-outputs"

    async def on_event(self, event: Event) -> None:
        step = event.step
        if event.type is EventType.STEP_STARTED and step:
            self._update(
                step,
                phase=StepPhase.RUNNING,
                attempts=event.data["attempt"],
                start_time=self._first_start(step),
            )
            self.status = self.status.model_copy(update={"current_step": step})
        elif event.type is EventType.STEP_COMPLETED and step:
            self.outputs[step] = await self._bounded(step, event.data["output"])
            self._update(
                step,
                phase=StepPhase.SUCCEEDED,
                output=self.outputs[step],
                duration_milliseconds=event.data["durationMs"],
                completion_time=_now(),
            )
            await self._event(
                "Normal", "StepCompleted", f"Step {step} succeeded in {event.data['durationMs']} ms"
            )
        elif event.type is EventType.STEP_FAILED and step:
            self._update(
                step,
                phase=StepPhase.FAILED,
                error=event.data["error"][:4096],
                error_code=event.data["code"],
                completion_time=_now(),
            )
            await self._event("Warning", "StepFailed", f"Step {step} failed: {event.data['error']}")
        elif event.type is EventType.STEP_SKIPPED and step:
            self._update(step, phase=StepPhase.SKIPPED, error=str(event.data["reason"])[:4096])
        else:
            return
        await self._flush()

    async def finish(self, result: RunResult) -> None:
        """The final status: every step's outcome, the outputs and the Succeeded condition."""
        for step_id, outcome in result.steps.items():
            self._update(
                step_id,
                phase=outcome.phase,
                attempts=outcome.attempts,
                start_time=outcome.started,
                completion_time=outcome.finished,
                duration_milliseconds=outcome.duration_ms,
                error=(outcome.error or "")[:4096] or None,
                error_code=outcome.code,
            )
        state = ConditionStatus.TRUE if result.reason == Reason.SUCCEEDED else ConditionStatus.FALSE
        self.status = run_condition(
            self.status.model_copy(
                update={
                    "completion_time": _now(),
                    "current_step": None,
                    "failed_step": result.failed_step,
                    "outputs": self._outputs(),
                }
            ),
            state=state,
            reason=result.reason,
            message=result.message,
            generation=self.run.metadata.generation,
            now=_now(),
        )
        await self._flush()
        succeeded = state is ConditionStatus.TRUE
        await self._event(
            "Normal" if succeeded else "Warning", "Completed" if succeeded else result.reason, result.message
        )

    def _outputs(self) -> dict[str, Any]:
        scope = {"input": {}, "config": self.spec.config | self.run.spec.config, "steps": self.outputs}
        outputs = {}
        for name, value in self.spec.outputs.items():
            with contextlib.suppress(UnresolvedError):
                outputs[name] = resolve(value, scope)
        return bounded(outputs, replaced={})

    async def _bounded(self, step_id: str, output: Mapping[str, Any]) -> dict[str, Any]:
        unit = self.runs.units.get(next(s.unit for s in self.spec.steps if s.id == step_id))
        binary = binary_fields(unit.output) if unit else frozenset()
        replaced = {
            name: await self._keep(step_id, name, output)
            for name in binary
            if isinstance(output.get(name), str)
        }
        return bounded(output, replaced=replaced)

    async def _keep(self, step_id: str, name: str, output: Mapping[str, Any]) -> dict[str, Any]:
        encoded: str = output[name]
        size = len(encoded) * 3 // 4 - encoded[-2:].count("=")  # the decoded length, exactly
        described = {"bytes": size, "contentType": output.get("contentType")}
        if self.secret_bytes + size > MAX_SECRET_BYTES:
            return described | {
                "omitted": f"over the {MAX_SECRET_BYTES // 1024} KiB a run keeps; run the pipeline through "
                f"POST /api/v2/pipelines/{self.run.spec.pipeline_ref.name}/run to receive it"
            }
        key = f"{step_id}.{name}"
        self.secret[key] = encoded
        self.secret_bytes += size
        await self.runs.kube.apply(self._secret_body())
        self.status = self.status.model_copy(update={"outputs_secret": self.secret_name})
        return described | {"secretKeyRef": {"name": self.secret_name, "key": key}}

    def _secret_body(self) -> Body:
        meta = self.run.metadata
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.secret_name,
                "namespace": meta.namespace,
                "labels": {Keys.PIPELINE_RUN: str(meta.name), Keys.MANAGED_BY: "aima"},
                "ownerReferences": [_owner(self.run)],
            },
            "type": "aima.dev/pipeline-outputs",
            "data": dict(self.secret),
        }

    def _first_start(self, step_id: str) -> datetime.datetime:
        current = next((s for s in self.status.steps if s.id == step_id), None)
        return current.start_time if current and current.start_time else _now()

    def _update(self, step_id: str, **changes: Any) -> None:
        steps = [s.model_copy(update=changes) if s.id == step_id else s for s in self.status.steps]
        self.status = self.status.model_copy(update={"steps": steps})
        if changes.get("phase") is not StepPhase.RUNNING and self.status.current_step == step_id:
            running = next((s.id for s in steps if s.phase is StepPhase.RUNNING), None)
            self.status = self.status.model_copy(update={"current_step": running})

    async def _flush(self) -> None:
        # Once written, the cache knows it before the task ends: a pass over a run no task executes,
        # started by this replica and not finished, would report it Interrupted.
        cache = self.runs.cluster.pipeline_runs
        try:
            await write_status(self.runs.kube, cache, self.body, self.status, observed=self.written or {})
        except KubeError as error:
            if error.status != 404:  # a deleted run: its task is being cancelled
                raise
        self.written = self.status.model_dump(mode="json", by_alias=True, exclude_none=True)

    async def _event(self, type_: str, reason: str, message: str) -> None:
        with contextlib.suppress(KubeError):
            await self.runs.kube.event(regarding=self.body, type_=type_, reason=reason, message=message)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key(run: PipelineRun) -> Key:
    return str(run.metadata.namespace), str(run.metadata.name)


async def _pipeline(runs: Runs, namespace: str, name: str) -> Body | None:
    """The run's Pipeline, as cached; one not cached yet is asked of the API server, since a run
    applied together with its Pipeline may come first, and a run without one fails for good."""
    cached = runs.cluster.pipelines.get(namespace, name)
    return cached or await runs.kube.get(resources.PIPELINES, name=name, namespace=namespace)


def register(
    *, kube: KubeClient, settings: Settings, cluster: ClusterView, units: Registry
) -> tuple[Reconciler, Runs]:
    """Wake PipelineRuns from the caches: a run when it changes, and the runs of a namespace that
    have not started when a Pipeline or an InferenceService there changes; stop a run's task when
    its object goes. Return the reconciler, which the runner starts and resyncs, and the runs, which
    it closes on stop."""
    runs = Runs(kube=kube, settings=settings, units=units, cluster=cluster, http=aiohttp.ClientSession())
    reconciler = Reconciler(
        cache=cluster.pipeline_runs,
        reconcile=functools.partial(reconcile, runs=runs),
        retry_seconds=settings.retry_seconds,
    )
    when_gone(cluster.pipeline_runs, runs.abandon)

    def nudge_unstarted(body: Body) -> None:
        for run in cluster.pipeline_runs.indexed(key_of(body)[0], UNSTARTED):
            reconciler.enqueue_object(run)

    cluster.pipelines.subscribe(nudge_unstarted)
    cluster.inference_services.subscribe(nudge_unstarted)
    return reconciler, runs
