"""LoRA adapters of an InferenceService (pure): what each adapter needs, which ready replica must
load or unload which adapter, and what the status says about each.

An adapter is a Model of type LoRA whose files lie in its base Model's volume, which every replica
of a service of that base mounts: so replicas load and unload adapters through the engine's API
while they run, and one that restarts is found without them and loads them again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aima.api.common import ConditionStatus, ConditionType, Reason
from aima.api.engine import Engine
from aima.api.inference_service import AdapterState, AdapterStatus, InferenceService
from aima.api.model import Model, ModelType
from aima.domain import conditions
from aima.domain.pod_health import Finding

__all__ = [
    "Action",
    "Replica",
    "Wanted",
    "actions",
    "finding",
    "report",
    "wanted",
]

Body = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Wanted:
    """One adapter of the spec, as the replicas should hold it."""

    name: str
    path: str | None = None
    """The adapter's directory inside the engine container; None while it cannot be loaded."""
    problem: str | None = None
    """Why it cannot be loaded by any replica, in words that say what to do."""
    pending: str | None = None
    """What it waits for (its Model's download)."""


@dataclass(frozen=True, kw_only=True)
class Replica:
    """One ready replica and the adapters its engine said it holds."""

    pod: str
    url: str
    """The engine's base URL, such as http://10.244.0.5:8000."""
    loaded: frozenset[str] | None
    """None when the engine could not be asked."""
    error: str | None = None
    """Why the engine could not be asked."""


@dataclass(frozen=True, kw_only=True)
class Action:
    """One call to a replica's adapter API."""

    replica: Replica
    verb: Literal["load", "unload"]
    adapter: str
    path: str | None = None


def wanted(
    service: InferenceService,
    *,
    models: Mapping[str, Body],
    engine: Engine | None,
    taken: Mapping[str, str] | None = None,
) -> list[Wanted]:
    """Each adapter of the spec with its path in the container, or what keeps it from loading.
    ``models`` holds the adapters' Models by name (those that exist); ``taken`` the served names of
    the namespace's other services (each to its service), which an adapter's id must not repeat."""
    model_id = service.spec.served_name or str(service.metadata.name)
    found = []
    for adapter in service.spec.adapters:
        if (owner := (taken or {}).get(f"{model_id}:{adapter.name}")) is not None:
            found.append(
                Wanted(
                    name=adapter.name,
                    problem=f"{model_id}:{adapter.name} is the servedName of InferenceService {owner}, which "
                    "the gateway serves under it; rename the adapter or change that servedName",
                )
            )
            continue
        found.append(
            _wanted(
                service, name=adapter.name, model_name=adapter.model_ref.name, models=models, engine=engine
            )
        )
    return found


def _wanted(
    service: InferenceService,
    *,
    name: str,
    model_name: str,
    models: Mapping[str, Body],
    engine: Engine | None,
) -> Wanted:
    base = service.spec.model_ref.name
    body = models.get(model_name)
    if body is None:
        return Wanted(
            name=name,
            problem=f"Model {model_name} does not exist in namespace {service.metadata.namespace}; create a "
            f"Model of type LoRA with baseModelRef {base}",
        )
    model = Model.model_validate(body)
    if model.spec.type is not ModelType.LORA:
        return Wanted(
            name=name, problem=f"Model {model_name} is of type {model.spec.type}, not LoRA; name a LoRA Model"
        )
    adapts = model.spec.base_model_ref.name if model.spec.base_model_ref else ""
    if adapts != base:
        return Wanted(
            name=name,
            problem=f"Adapter {model_name} is for Model {adapts}, but this service serves Model {base}; "
            f"name an adapter of {base}, or serve {adapts}",
        )
    if engine is None:
        return Wanted(name=name, pending="Waiting for an engine to be chosen")
    if engine.spec.adapters is None:
        return Wanted(
            name=name,
            problem=f"Engine {engine.metadata.name} cannot load LoRA adapters at runtime; serve Model {base} "
            "with an engine that can (such as vllm) through spec.engineRef",
        )
    status = model.status
    if status is None or not status.path or not conditions.is_true(status.conditions, ConditionType.READY):
        phase = (status.phase if status else None) or "Pending"
        return Wanted(name=name, pending=f"Waiting for Model {model_name} to be downloaded ({phase})")
    return Wanted(name=name, path=f"{engine.spec.model_mount_path.rstrip('/')}/{status.path}")


def actions(wanted: Sequence[Wanted], replicas: Sequence[Replica]) -> list[Action]:
    """Loads of the loadable adapters a replica lacks, and unloads of what it holds beyond the spec
    (removed from the spec, or no longer loadable); none on a replica that could not be asked."""
    loadable = {w.name: w.path for w in wanted if w.path is not None}
    found: list[Action] = []
    for replica in replicas:
        if replica.loaded is None:
            continue
        found += [
            Action(replica=replica, verb="load", adapter=name, path=path)
            for name, path in loadable.items()
            if name not in replica.loaded
        ]
        found += [
            Action(replica=replica, verb="unload", adapter=name)
            for name in sorted(replica.loaded)
            if name not in loadable
        ]
    return found


def report(
    wanted: Sequence[Wanted],
    *,
    replicas: Sequence[Replica],
    failures: Mapping[tuple[str, str], str],
    model_id: str,
) -> list[AdapterStatus]:
    """Each adapter's status once this pass's ``failures`` ((pod, adapter) -> the engine's words) are
    known; ``replicas`` show what each holds after the pass."""
    return [_report(w, replicas=replicas, failures=failures, model_id=model_id) for w in wanted]


def _report(
    wanted: Wanted, *, replicas: Sequence[Replica], failures: Mapping[tuple[str, str], str], model_id: str
) -> AdapterStatus:
    model = f"{model_id}:{wanted.name}"
    holding = sorted(r.pod for r in replicas if r.loaded is not None and wanted.name in r.loaded)
    failed = {pod: why for (pod, name), why in failures.items() if name == wanted.name}
    if wanted.problem is not None:
        return AdapterStatus(name=wanted.name, model=model, state=AdapterState.FAILED, message=wanted.problem)
    if wanted.pending is not None:
        return AdapterStatus(
            name=wanted.name, model=model, state=AdapterState.PENDING, message=wanted.pending
        )
    common = {"name": wanted.name, "model": model, "ready_replicas": len(holding), "pods": holding}
    if failed:
        pod, why = sorted(failed.items())[0]
        return AdapterStatus(
            **common,
            state=AdapterState.FAILED,
            message=f"The engine refused to load it on {len(failed)} replica(s); pod {pod}: {why}",
        )
    if not replicas:
        return AdapterStatus(**common, state=AdapterState.PENDING, message="No ready replica to load it yet")
    if len(holding) < len(replicas):
        unasked = [r for r in replicas if r.loaded is None]
        said = f"; pod {unasked[0].pod} did not answer: {unasked[0].error}" if unasked else ""
        return AdapterStatus(
            **common,
            state=AdapterState.LOADING,
            message=f"Loaded on {len(holding)} of {len(replicas)} ready replicas{said}",
        )
    return AdapterStatus(
        **common, state=AdapterState.READY, message=f"Loaded on {len(holding)} ready replica(s)"
    )


def finding(statuses: Sequence[AdapterStatus]) -> Finding | None:
    """The AdaptersReady condition; None when the service lists no adapters."""
    if not statuses:
        return None
    failed = [s for s in statuses if s.state is AdapterState.FAILED]
    if failed:
        said = "; ".join(f"{s.name}: {s.message}" for s in failed)
        return Finding(status=ConditionStatus.FALSE, reason=Reason.ADAPTER_FAILED, message=said)
    waiting = [s for s in statuses if s.state is not AdapterState.READY]
    if waiting:
        said = "; ".join(f"{s.name}: {s.message}" for s in waiting)
        return Finding(status=ConditionStatus.FALSE, reason=Reason.ADAPTERS_LOADING, message=said)
    return Finding(
        status=ConditionStatus.TRUE,
        reason=Reason.READY,
        message=f"{len(statuses)} adapter(s) loaded on every ready replica",
    )
