"""InferenceService planning (pure): the engine's Deployment and Service, the NetworkPolicy that
guards its pods, and the status.

`plan` turns the service, its Model, the Engines and the nodes into those children, or into none
while the Model is not ready or no engine fits. `compute_status` explains the outcome in
conditions: ModelReady, EngineResolved, Scheduled and Ready, whose messages come from the pods
and the Deployment's own conditions (see `aima.domain.pod_health`), and Reconciling or Stalled for
GitOps tools (see `aima.domain.conditions`). Neither reads a clock: `now` is passed in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aima.api.common import ConditionStatus, ConditionType, Keys, Reason
from aima.api.engine import Accelerator, Engine, EngineVariant
from aima.api.inference_service import (
    AdapterStatus,
    InferenceService,
    InferenceServicePhase,
    InferenceServiceStatus,
)
from aima.api.model import Model
from aima.domain import adapters as adapter_planning
from aima.domain import capacity, conditions, engine_args, engine_choice, network_policy, objects, pod_health
from aima.domain.capacity import GPU, GPU_PRODUCT_LABEL
from aima.domain.pod_health import Finding

Body = dict[str, Any]

CONTAINER = "engine"
COMPONENT = "inference-service"
_MODEL_VOLUME = "model"
_SHM_VOLUME = "shm"
_SHM_PATH = "/dev/shm"  # noqa: S108 (a mount point inside the container, not a temporary file)
_WRITABLE_VOLUME = "writable-{index}"
_PROGRESS_HEADROOM_SECONDS = 600
_SHUTDOWN_SECONDS = 30
"""What an engine gets after SIGTERM, past its drain, to exit before the kubelet kills it."""
_WAITING = frozenset(
    {
        Reason.MODEL_NOT_READY,
        Reason.INSUFFICIENT_GPU,
        Reason.NO_NODE_LARGE_ENOUGH,
        Reason.UNSCHEDULABLE,
        Reason.FAILED_CREATE,
        Reason.PENDING,
    }
)
# Ready=False reasons that no amount of waiting fixes: a person must change the spec, the engine,
# the image or the cluster. Every other reason (the Model downloading, pods starting) is progress.
_STALLED = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.TEMPLATE_ERROR,
        Reason.ENGINE_NOT_FOUND,
        Reason.NO_MATCHING_ENGINE,
        Reason.INSUFFICIENT_GPU,
        Reason.NO_NODE_LARGE_ENOUGH,
        Reason.UNSCHEDULABLE,
        Reason.FAILED_CREATE,
        Reason.PROGRESS_DEADLINE_EXCEEDED,
        Reason.IMAGE_PULL_BACK_OFF,
        Reason.CRASH_LOOP_BACK_OFF,
        Reason.OOM_KILLED,
        Reason.HEALTH_CHECK_FAILING,
    }
)
# Zero replicas asked for and none running is a state reached, not one being worked towards.
_AT_REST = frozenset({Reason.SUSPENDED, Reason.SCALED_TO_ZERO})


@dataclass(frozen=True, kw_only=True)
class Observed:
    """What the controller read from the cluster for one InferenceService."""

    model: Body | None
    engines: list[Body]
    nodes: list[Body]
    deployment: Body | None = None
    network_policy: Body | None = None
    pods: list[Body] = field(default_factory=list)
    """The service's own pods."""
    all_pods: list[Body] | None = None
    """Every pod in the cluster; read only while a pod waits for a node, to count free GPUs."""


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The children to apply (none while waiting) and the findings the status is made of."""

    objects: list[Body]
    model_ready: Finding
    model_stalled: Finding | None
    """The Model's own Stalled condition: its download failed for good."""
    engine_resolved: Finding
    engine: Engine | None
    variant: EngineVariant | None
    gpus: int | None
    replicas: int
    suspended: bool
    selector: dict[str, str]
    probe: pod_health.Probe | None


def selector(service: InferenceService) -> dict[str, str]:
    """Labels that select the service's pods; immutable once the Deployment exists."""
    return {Keys.MANAGED_BY: "aima", Keys.INFERENCE_SERVICE: str(service.metadata.name)}


def selector_string(labels: dict[str, str]) -> str:
    """A label selector as the scale subresource reports it (`a=b,c=d`)."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def plan(body: Body, *, observed: Observed, ingress: network_policy.EngineIngress | None) -> Plan:
    """The children ``body`` needs now, or none with the reason why (pure): its Deployment and
    Service, and, unless ``ingress`` is None (policies turned off), the NetworkPolicy that admits
    only ``ingress``'s peers to its pods."""
    service = InferenceService.model_validate(body)
    model = Model.model_validate(observed.model) if observed.model else None
    engines = [Engine.model_validate(e) for e in observed.engines]
    nodes = [engine_choice.node_info(n) for n in observed.nodes]
    choice = engine_choice.choose(service, model=model, engines=engines, nodes=nodes)
    resolved = Finding(
        status=ConditionStatus.TRUE if choice.variant else ConditionStatus.FALSE,
        reason=choice.reason,
        message=choice.message,
    )
    model_ready = _model_ready(service, model=model)
    engine, variant = choice.engine, choice.variant
    replicas = 0 if service.spec.suspend else service.spec.replicas
    waiting = Plan(
        objects=[],
        model_ready=model_ready,
        model_stalled=_model_stalled(model),
        engine_resolved=resolved,
        engine=engine if variant else None,
        variant=variant,
        gpus=None,
        replicas=replicas,
        suspended=service.spec.suspend,
        selector=selector(service),
        probe=None,
    )
    if engine is None or variant is None:
        return waiting
    gpus = _gpus(service, engine=engine, variant=variant)
    probe = pod_health.Probe(
        path=engine.spec.health.path,
        port=engine.spec.port,
        startup_seconds=engine.spec.health.startup_timeout_seconds,
    )
    waiting = dataclasses.replace(waiting, gpus=gpus, probe=probe)
    if model is None or model_ready.status is not ConditionStatus.TRUE:
        return waiting
    try:
        deployment = desired_deployment(
            body, service=service, model=model, engine=engine, variant=variant, gpus=gpus, replicas=replicas
        )
    except engine_args.EngineTemplateError as error:
        reason = Reason.INVALID_SPEC if error.template == "engineArgs" else Reason.TEMPLATE_ERROR
        broken = Finding(status=ConditionStatus.FALSE, reason=reason, message=str(error))
        return dataclasses.replace(waiting, engine_resolved=broken)
    guard = [] if ingress is None else [desired_network_policy(body, service=service, ingress=ingress)]
    # The policy first, so that no engine pod runs before the policy that guards it exists.
    children = [*guard, deployment, desired_service(body, service=service, engine=engine)]
    return dataclasses.replace(waiting, objects=children)


def _model_ready(service: InferenceService, *, model: Model | None) -> Finding:
    name = service.spec.model_ref.name
    if model is None:
        return Finding(
            status=ConditionStatus.FALSE,
            reason=Reason.MODEL_NOT_FOUND,
            message=f"Model {name} does not exist in namespace {service.metadata.namespace}; create it",
        )
    status = model.status
    ready = conditions.find(status.conditions, ConditionType.READY) if status else None
    if status and status.claim_name and ready and ready.status is ConditionStatus.TRUE:
        return Finding(
            status=ConditionStatus.TRUE,
            reason=Reason.READY,
            message=f"Model {name} is ready in volume {status.claim_name}",
        )
    phase = (status.phase if status else None) or "Pending"
    said = f": {ready.message}" if ready and ready.message else ""
    return Finding(
        status=ConditionStatus.FALSE,
        reason=Reason.MODEL_NOT_READY,
        message=f"Waiting for Model {name} ({phase}){said}",
    )


def _model_stalled(model: Model | None) -> Finding | None:
    stalled = conditions.find(model.status.conditions, conditions.STALLED) if model and model.status else None
    if stalled is None or stalled.status is not ConditionStatus.TRUE:
        return None
    return Finding(
        status=ConditionStatus.TRUE,
        reason=stalled.reason,
        message=f"Model {model.metadata.name if model else ''} is stalled: {stalled.message}",
    )


def _gpus(service: InferenceService, *, engine: Engine, variant: EngineVariant) -> int:
    """GPUs per replica: none on CPU variants, else the service's count or the engine's default."""
    if variant.accelerator is Accelerator.CPU:
        return 0
    wanted = service.spec.resources.gpus
    return engine.spec.resources.gpus if wanted is None else wanted


def desired_deployment(
    body: Body,
    *,
    service: InferenceService,
    model: Model,
    engine: Engine,
    variant: EngineVariant,
    gpus: int,
    replicas: int,
) -> Body:
    """The engine's Deployment, complete (pure); raises EngineTemplateError for a broken template."""
    labels = _labels(service, model=model, engine=engine)
    pod_spec: Body = _compact(
        {
            "containers": [
                _container(service=service, model=model, engine=engine, variant=variant, gpus=gpus)
            ],
            "volumes": _volumes(service, model=model, engine=engine, gpus=gpus),
            "nodeSelector": _node_selector(service, variant=variant, gpus=gpus),
            "tolerations": _tolerations(service, gpus=gpus),
            "priorityClassName": service.spec.scheduling and service.spec.scheduling.priority_class_name,
            "runtimeClassName": service.spec.scheduling and service.spec.scheduling.runtime_class_name,
            "securityContext": _pod_security(engine),
            # An engine never talks to the API server: no credentials for anyone who breaks into it.
            "automountServiceAccountToken": False,
            # Service links would put VLLM_PORT=tcp://... into the environment of a service named
            # vllm, which vLLM reads as its own setting (vllm-project/vllm#10002).
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": engine.spec.health.drain_seconds + _SHUTDOWN_SECONDS,
        }
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(body, service=service, labels=labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(service)},
            # A Deployment reports ProgressDeadlineExceeded only after the engine had its startup budget.
            "progressDeadlineSeconds": engine.spec.health.startup_timeout_seconds
            + _PROGRESS_HEADROOM_SECONDS,
            "revisionHistoryLimit": 3,
            # A change (another Model, Engine or image) starts new replicas before it stops old ones,
            # which drain first: serving never pauses, if the nodes hold the extra replicas.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {"metadata": _pod_metadata(labels, engine=engine), "spec": pod_spec},
        },
    }


def desired_service(body: Body, *, service: InferenceService, engine: Engine) -> Body:
    """The ClusterIP Service in front of the replicas (pure); its DNS name is the endpoint."""
    port = {"name": "http", "port": engine.spec.port, "targetPort": "http", "protocol": "TCP"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(body, service=service, labels=selector(service) | {Keys.COMPONENT: COMPONENT}),
        "spec": {"selector": selector(service), "ports": [port]},
    }


def desired_network_policy(
    body: Body, *, service: InferenceService, ingress: network_policy.EngineIngress
) -> Body:
    """The NetworkPolicy over the replicas (pure): it selects them as the Deployment does."""
    labels = selector(service) | {Keys.COMPONENT: COMPONENT}
    return network_policy.desired(
        metadata=_metadata(body, service=service, labels=labels), pods=selector(service), ingress=ingress
    )


def endpoint(service: InferenceService, *, engine: Engine) -> str:
    """In-cluster base URL of the engine."""
    return f"http://{service.metadata.name}.{service.metadata.namespace}.svc:{engine.spec.port}"


def engine_model(service: InferenceService, *, engine: Engine) -> str:
    """The model name the engine answers to: the Engine's fixed one, else the served name."""
    return engine.spec.model_name or service.spec.served_name or str(service.metadata.name)


def _metadata(body: Body, *, service: InferenceService, labels: dict[str, str]) -> Body:
    return {
        "name": service.metadata.name,
        "namespace": service.metadata.namespace,
        "labels": labels,
        "ownerReferences": [objects.owner_reference(body)],
    }


def _pod_metadata(labels: dict[str, str], *, engine: Engine) -> Body:
    """The pod's labels, and where its metrics are: the chart's engine PodMonitor scrapes only pods
    that carry the annotation, at the path it names."""
    path = engine.spec.metrics_path
    return _compact({"labels": labels, "annotations": {Keys.METRICS_PATH: path} if path else None})


def _labels(service: InferenceService, *, model: Model, engine: Engine) -> dict[str, str]:
    extra = {Keys.MODEL: str(model.metadata.name), Keys.ENGINE: str(engine.metadata.name)}
    return objects.managed_labels(component=COMPONENT, extra=extra) | selector(service)


def _container(
    *, service: InferenceService, model: Model, engine: Engine, variant: EngineVariant, gpus: int
) -> Body:
    spec = engine.spec
    name = str(engine.metadata.name)
    context = engine_args.template_context(
        model=model,
        service=service,
        engine=engine,
        variant=variant,
        model_path=_model_path(model, engine=engine),
        gpus=gpus,
    )
    # Adapter support only while the service lists adapters: it costs engines memory and speed.
    adapters = spec.adapters if service.spec.adapters else None
    templates = [*spec.args, *variant.extra_args, *(adapters.args if adapters else [])]
    args = engine_args.render_args(templates, engine=name, context=context)
    args += engine_args.render_flags(service.spec.engine_args, style=spec.engine_args_style, engine=name)
    env_templates = spec.env | variant.env | (adapters.env if adapters else {})
    env = (
        _home(engine) | engine_args.render_env(env_templates, engine=name, context=context) | service.spec.env
    )
    probe = {
        "httpGet": {"path": spec.health.path, "port": "http"},
        "periodSeconds": spec.health.period_seconds,
    }
    return _compact(
        {
            "name": CONTAINER,
            "image": variant.image,
            "command": engine_args.render_args(spec.command, engine=name, context=context),
            "args": args,
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "envFrom": [
                e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in service.spec.env_from
            ],
            "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
            "resources": _resources(service, engine=engine, gpus=gpus),
            "volumeMounts": _mounts(engine, service=service, gpus=gpus),
            # The engine has its whole startup budget to load weights before liveness may restart it.
            "startupProbe": probe
            | {
                "failureThreshold": math.ceil(
                    spec.health.startup_timeout_seconds / spec.health.period_seconds
                )
            },
            "readinessProbe": probe | {"failureThreshold": 3},
            "livenessProbe": probe | {"failureThreshold": 3},
            # The kubelet copies the last log lines into the termination message; status shows them.
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "lifecycle": _drain(engine),
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": spec.security.read_only_root_filesystem,
            },
        }
    )


def _home(engine: Engine) -> dict[str, str]:
    """HOME in the first writable directory: the engine's user has no home in the image, and
    engines write their caches under HOME (~/.cache, ~/.config, ~/.triton)."""
    paths = engine.spec.security.writable_paths
    return {"HOME": paths[0]} if paths else {}


def _drain(engine: Engine) -> Body | None:
    """Sleep before SIGTERM, no shell needed: a stopping pod leaves the EndpointSlices (and so the
    gateway's routing) at once, and its engine finishes the streams it has meanwhile; most engines
    cut them on SIGTERM."""
    seconds = engine.spec.health.drain_seconds
    return {"preStop": {"sleep": {"seconds": seconds}}} if seconds else None


def _model_path(model: Model, *, engine: Engine) -> str:
    sub = (model.status.path if model.status else None) or ""
    return f"{engine.spec.model_mount_path.rstrip('/')}/{sub}".rstrip("/")


def _resources(service: InferenceService, *, engine: Engine, gpus: int) -> Body:
    """Engine defaults overridden by the service; a request the service sets drops the engine's limit
    for it, so a larger request never meets a smaller default limit."""
    wanted = service.spec.resources
    defaults = engine.spec.resources
    requests = {k: str(v) for k, v in (defaults.requests | wanted.requests).items()}
    limits = {k: str(v) for k, v in defaults.limits.items() if k not in wanted.requests}
    limits |= {k: str(v) for k, v in wanted.limits.items()}
    if gpus > 0:
        requests[GPU] = limits[GPU] = str(gpus)
    return _compact({"requests": requests, "limits": limits})


def _shared_memory(service: InferenceService, *, engine: Engine, gpus: int) -> Body | None:
    """A memory-backed /dev/shm when a size is set or several GPUs talk through NCCL."""
    size = service.spec.resources.shared_memory or engine.spec.resources.shared_memory
    if size is None and gpus < 2:
        return None
    return _compact({"medium": "Memory", "sizeLimit": size})


def _mounts(engine: Engine, *, service: InferenceService, gpus: int) -> list[Body]:
    mounts = [{"name": _MODEL_VOLUME, "mountPath": engine.spec.model_mount_path, "readOnly": True}]
    if _shared_memory(service, engine=engine, gpus=gpus) is not None:
        mounts.append({"name": _SHM_VOLUME, "mountPath": _SHM_PATH})
    for index, path in enumerate(engine.spec.security.writable_paths):
        mounts.append({"name": _WRITABLE_VOLUME.format(index=index), "mountPath": path})
    return mounts


def _volumes(service: InferenceService, *, model: Model, engine: Engine, gpus: int) -> list[Body]:
    claim = model.status.claim_name if model.status else None
    volumes: list[Body] = [
        {"name": _MODEL_VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
    ]
    if (shm := _shared_memory(service, engine=engine, gpus=gpus)) is not None:
        volumes.append({"name": _SHM_VOLUME, "emptyDir": shm})
    for index in range(len(engine.spec.security.writable_paths)):
        volumes.append({"name": _WRITABLE_VOLUME.format(index=index), "emptyDir": {}})
    return volumes


def _node_selector(service: InferenceService, *, variant: EngineVariant, gpus: int) -> dict[str, str]:
    chosen = {engine_choice.ARCH_LABEL: str(variant.architecture)} | variant.node_selector
    if gpus > 0 and service.spec.resources.gpu_product:
        chosen[GPU_PRODUCT_LABEL] = service.spec.resources.gpu_product
    return chosen | (service.spec.scheduling.node_selector if service.spec.scheduling else {})


def _tolerations(service: InferenceService, *, gpus: int) -> list[Body]:
    found = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}] if gpus > 0 else []
    scheduling = service.spec.scheduling
    for toleration in scheduling.tolerations if scheduling else []:
        found.append(toleration.model_dump(mode="json", by_alias=True, exclude_none=True))
    return found


def _pod_security(engine: Engine) -> Body:
    """RuntimeDefault seccomp, and the Engine's user: the kubelet refuses to start a non-root pod as
    root, and fsGroup lets that user read the model volume."""
    uid = engine.spec.security.run_as_user
    context: Body = {"seccompProfile": {"type": "RuntimeDefault"}, "runAsUser": uid, "runAsGroup": uid}
    if uid > 0:
        # OnRootMismatch: the kubelet walks a large model volume only when its top is not ours yet.
        context |= {"runAsNonRoot": True, "fsGroup": uid, "fsGroupChangePolicy": "OnRootMismatch"}
    return context


def _compact(values: Body) -> Body:
    """``values`` without None, empty maps and empty lists: the API server drops those, and a desired
    field it drops would never compare satisfied, so every pass would write again."""
    return {k: v for k, v in values.items() if v is not None and v != {} and v != []}


# ---- status ---------------------------------------------------------------------------------


def compute_status(
    body: Body,
    *,
    plan: Plan,
    observed: Observed,
    now: datetime,
    adapters: Sequence[AdapterStatus] = (),
    traffic: Finding | None = None,
) -> InferenceServiceStatus:
    """The whole status from the plan, the observations, this pass's ``adapters`` and what became
    of the traffic split's targets (pure)."""
    service = InferenceService.model_validate(body)
    previous = service.status or InferenceServiceStatus()
    scheduled = _scheduled(service, plan=plan, observed=observed)
    ready = _ready(service, plan=plan, observed=observed, scheduled=scheduled, now=now)
    generation = service.metadata.generation
    # AdaptersReady and TrafficReady are there only while the spec lists adapters, or a split.
    found = [
        c
        for c in previous.conditions
        if (adapters or c.type != ConditionType.ADAPTERS_READY)
        and (traffic or c.type != ConditionType.TRAFFIC_READY)
    ]
    findings = [
        (ConditionType.MODEL_READY, plan.model_ready),
        (ConditionType.ENGINE_RESOLVED, plan.engine_resolved),
        (ConditionType.SCHEDULED, scheduled),
        (ConditionType.READY, ready),
    ]
    if (loaded := adapter_planning.finding(adapters)) is not None:
        findings.append((ConditionType.ADAPTERS_READY, loaded))
    if traffic is not None:
        findings.append((ConditionType.TRAFFIC_READY, traffic))
    for type_, finding in findings:
        found = conditions.set_condition(
            found,
            type_=type_,
            status=finding.status,
            reason=finding.reason,
            message=finding.message,
            generation=generation,
            now=now,
        )
    progress, why = _progress(ready, plan=plan, observed=observed)
    found = conditions.set_progress(
        found, progress, reason=why.reason, message=why.message, generation=generation, now=now
    )
    deployment_status = (observed.deployment or {}).get("status", {})
    engine, variant = plan.engine, plan.variant
    return InferenceServiceStatus(
        observed_generation=generation,
        conditions=found,
        phase=_phase(ready, replicas=plan.replicas),
        replicas=deployment_status.get("replicas", 0),
        ready_replicas=deployment_status.get("readyReplicas", 0),
        selector=selector_string(plan.selector),
        endpoint=endpoint(service, engine=engine) if engine else None,
        engine=engine.metadata.name if engine else None,
        engine_variant=variant.name if variant else None,
        image=variant.image if variant else None,
        served_name=service.spec.served_name or service.metadata.name,
        engine_model=engine_model(service, engine=engine) if engine else None,
        gpus=plan.gpus,
        adapters=list(adapters) or None,
    )


def _progress(
    ready: Finding, *, plan: Plan, observed: Observed
) -> tuple[conditions.Progress | None, Finding]:
    """Stalled when a person must act, Reconciling while the service is on its way (or its
    Deployment still rolls out), neither when it is where the spec wants it."""
    if ready.reason in _STALLED:
        return conditions.STALLED, ready
    if ready.reason == Reason.MODEL_NOT_READY and plan.model_stalled is not None:
        return conditions.STALLED, plan.model_stalled
    if ready.status is not ConditionStatus.TRUE and ready.reason not in _AT_REST:
        return conditions.RECONCILING, ready
    if (rolling := _rolling_out(plan, observed=observed)) is not None:
        return conditions.RECONCILING, Finding(
            status=ConditionStatus.TRUE, reason=Reason.RECONCILING, message=rolling
        )
    return None, ready


def _rolling_out(plan: Plan, *, observed: Observed) -> str | None:
    """What the Deployment still has to do to match the plan, in words; None when it is done.
    The checks are `kubectl rollout status`'s."""
    desired = next((o for o in plan.objects if o["kind"] == "Deployment"), None)
    current = observed.deployment
    if desired is None:
        return None
    name = desired["metadata"]["name"]
    if current is None or not objects.is_satisfied(desired, current):
        return f"Applying Deployment {name}"
    status, wanted = current.get("status", {}), plan.replicas
    if wanted == 0:  # nothing to roll out, only replicas to see go
        running = status.get("replicas", 0)
        return f"Scaling Deployment {name} down: {running} replica(s) left" if running else None
    if status.get("observedGeneration", 0) < current["metadata"].get("generation", 0):
        return f"Waiting for Deployment {name} to take the new spec"
    updated, total = status.get("updatedReplicas", 0), status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < wanted:
        return f"Rolling out Deployment {name}: {updated} of {wanted} replicas updated"
    if total > updated:
        return f"Rolling out Deployment {name}: {total - updated} old replica(s) still terminating"
    if available < wanted:
        return f"Rolling out Deployment {name}: {available} of {wanted} updated replicas available"
    return None


def _scheduled(service: InferenceService, *, plan: Plan, observed: Observed) -> Finding:
    if not plan.objects:
        return Finding(
            status=ConditionStatus.UNKNOWN, reason=Reason.PENDING, message="No pods until the service can run"
        )
    if plan.replicas == 0:
        return Finding(
            status=ConditionStatus.FALSE, reason=_zero_reason(plan), message="No replicas to schedule"
        )
    # A pod that was never created (quota, admission) is not among the pods; the Deployment says why.
    if (refused := pod_health.creation_failure(observed.deployment)) is not None:
        return refused
    # Only nodes of the GPU product the pods select can take them, as the scheduler sees it.
    candidates = capacity.nodes_with_product(observed.nodes, service.spec.resources.gpu_product)
    nodes = capacity.node_gpus(candidates, observed.all_pods or [])
    free = capacity.free_by_node(nodes) if observed.all_pods is not None else None
    return pod_health.scheduling(observed.pods, gpus=plan.gpus or 0, free=free, nodes=nodes)


def _ready(
    service: InferenceService, *, plan: Plan, observed: Observed, scheduled: Finding, now: datetime
) -> Finding:
    if plan.model_ready.reason == Reason.MODEL_NOT_FOUND:
        return plan.model_ready  # the root cause; no engine can be chosen without the Model either
    if plan.engine_resolved.status is not ConditionStatus.TRUE:
        return plan.engine_resolved
    serving = (observed.deployment or {}).get("status", {}).get("readyReplicas", 0)
    if plan.model_ready.status is not ConditionStatus.TRUE:
        if serving and plan.replicas:  # the Deployment is left as it was until the new Model is there
            return Finding(
                status=ConditionStatus.TRUE,
                reason=Reason.READY,
                message=f"{serving} replicas serve as before until Model {service.spec.model_ref.name} "
                f"is ready: {plan.model_ready.message}",
            )
        return plan.model_ready
    if plan.replicas == 0:
        why = "spec.suspend is true" if service.spec.suspend else "spec.replicas is 0"
        return Finding(
            status=ConditionStatus.FALSE, reason=_zero_reason(plan), message=f"No replicas run: {why}"
        )
    if serving > 0 and plan.engine is not None:
        return Finding(
            status=ConditionStatus.TRUE,
            reason=Reason.READY,
            message=f"{serving} of {plan.replicas} replicas ready at {endpoint(service, engine=plan.engine)}",
        )
    assert plan.probe is not None  # set whenever an engine resolved
    trouble = pod_health.problem(observed.pods, probe=plan.probe, now=now)
    if trouble is not None and trouble.reason != Reason.STARTING:
        return trouble
    if scheduled.status is ConditionStatus.FALSE:
        return scheduled
    if (stuck := pod_health.stuck_rollout(observed.deployment)) is not None:
        return stuck
    return trouble or Finding(
        status=ConditionStatus.FALSE,
        reason=Reason.STARTING,
        message=f"Waiting for pods of Deployment {service.metadata.name}",
    )


def _zero_reason(plan: Plan) -> str:
    return Reason.SUSPENDED if plan.suspended else Reason.SCALED_TO_ZERO


def _phase(ready: Finding, *, replicas: int) -> InferenceServicePhase:
    if replicas == 0:
        return InferenceServicePhase.SUSPENDED
    if ready.status is ConditionStatus.TRUE:
        return InferenceServicePhase.RUNNING
    if ready.reason in _WAITING:
        return InferenceServicePhase.PENDING
    if ready.reason == Reason.STARTING:
        return InferenceServicePhase.STARTING
    return InferenceServicePhase.FAILED
