"""The routing table (pure): which ready replicas serve an OpenAI ``model`` id.

It is built from two watched resources, trimmed to what routing needs as events arrive:
InferenceServices (the model ids, desired replicas, suspension, scale-from-zero) and the
EndpointSlices of the Service the controller creates for each of them (ready pod addresses).

A model id is the InferenceService's name, and ``spec.servedName`` is an alias for it. The gateway
serves its own namespace (the home namespace) and may route to others too; a service of another
namespace is ``<namespace>/<name>`` (and ``<namespace>/<servedName>``), so that ids never collide
and never change meaning as services come and go.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aima.api.common import Keys

__all__ = [
    "LISTING_LAG_SECONDS",
    "SERVICE_NAME_LABEL",
    "Autoscaling",
    "Backend",
    "Guard",
    "Routes",
    "ServiceView",
    "SliceView",
    "StaticRoutes",
    "build_table",
    "distinct",
    "pick",
    "service_view",
    "slice_view",
]

Body = dict[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""Label the EndpointSlice controller puts on every slice: the Service it belongs to."""
LISTING_LAG_SECONDS = 5.0
"""How long the table may trail a replica's readiness: the endpoint controller lists a Ready pod in
its EndpointSlice within a second or two, longer on a busy control plane. A request waits this long
for a replica it knows is coming (one the service's status counts Ready, or a stopping replica's
successor) before it is refused."""


@dataclass(frozen=True, slots=True)
class Autoscaling:
    """An InferenceService's spec.autoscaling: the bounds the gateway's autoscaler keeps to."""

    min_replicas: int
    max_replicas: int
    target_active_requests: int
    scale_down_delay_seconds: float


@dataclass(frozen=True, slots=True)
class Guard:
    """An InferenceService's spec.rolloutGuard: the bounds its split's other targets are held to."""

    max_error_percent: float
    max_time_to_first_token_seconds: float | None
    window_requests: int


@dataclass(frozen=True, slots=True)
class ServiceView:
    """What routing needs from one InferenceService."""

    name: str
    namespace: str
    served_name: str | None
    replicas: int
    suspended: bool
    scale_from_zero: bool
    """The autoscaler owns spec.replicas (spec.autoscaling) and may take it to zero."""
    created: int = 0
    """Creation time, Unix seconds (the `created` of /v1/models)."""
    autoscaling: Autoscaling | None = None
    """Request-based autoscaling bounds; None leaves replicas as they are set."""
    answers_to: str | None = None
    """The one model name the engine answers to (status.engineModel), when the Engine fixes it."""
    adapters: tuple[tuple[str, frozenset[str]], ...] = ()
    """LoRA adapters (status.adapters): each one's name and the pods that hold it."""
    traffic: tuple[tuple[str, int], ...] = ()
    """A traffic split (spec.traffic): each target service's name and weight."""
    guard: Guard | None = None
    halted: str | None = None
    """The split target a rollout guard halted (the aima.dev/rollout-halted annotation): it gets nothing."""
    ready_replicas: int = 0
    """Pods the operator saw Ready (status.readyReplicas); their EndpointSlices may list them a moment
    after the service turns Ready."""

    @property
    def engine_model(self) -> str:
        """The model name the engine itself serves (its --served-model-name, or the one name it
        knows): vLLM answers 404 to any other, such as the gateway's ``<namespace>/<name>``."""
        return self.answers_to or self.served_name or self.name


@dataclass(frozen=True, slots=True)
class SliceView:
    """Ready endpoints of one EndpointSlice."""

    namespace: str
    service: str
    endpoints: tuple[str, ...]
    """Base URLs such as http://10.244.0.5:8000."""
    pods: tuple[str, ...] = ()
    """The pod behind each endpoint, in the same order ("" where the slice does not say)."""


@dataclass(frozen=True, slots=True)
class Backend:
    """One routable InferenceService and its ready replicas."""

    service: ServiceView
    endpoints: tuple[str, ...]
    model: str
    """The id clients see in /v1/models: the alias if there is one, else the name (qualified by the
    namespace outside the home namespace); ``<that>:<adapter>`` for a LoRA adapter."""
    adapter: str | None = None
    """The LoRA adapter this backend serves; its endpoints are the replicas that hold it."""
    split: tuple[tuple[int, Backend], ...] = ()
    """For a traffic split, each target with its weight."""

    @property
    def upstream_model(self) -> str:
        """The ``model`` the engine is sent: the adapter's name, else the service's engine model."""
        return self.adapter or self.service.engine_model


class Routes(Protocol):
    """Where the proxy looks models up; fed by watches (``aima.gateway.watching``) or statically."""

    def lookup(self, model: str) -> Backend | None:
        """The backend serving ``model``, or None when no InferenceService has that name or alias."""

    def backends(self) -> list[Backend]:
        """Every backend, once each."""

    async def wait_changed(self) -> None:
        """Return after the next change to the table."""


class StaticRoutes:
    """A fixed table: the seam the benchmark (and tests of the proxy path alone) feed directly."""

    def __init__(self, table: Mapping[str, Backend]) -> None:
        self._table = dict(table)

    def lookup(self, model: str) -> Backend | None:
        return self._table.get(model)

    def backends(self) -> list[Backend]:
        return distinct(self._table)

    async def wait_changed(self) -> None:
        await asyncio.Event().wait()  # never changes


def service_view(body: Body) -> ServiceView:
    """Trim an InferenceService to its routing facts."""
    meta, spec = body["metadata"], body.get("spec", {})
    autoscaling = spec.get("autoscaling") or {}
    return ServiceView(
        name=meta["name"],
        namespace=meta.get("namespace", ""),
        served_name=spec.get("servedName") or None,
        answers_to=(body.get("status") or {}).get("engineModel") or None,
        replicas=int(spec.get("replicas", 1)),
        ready_replicas=int((body.get("status") or {}).get("readyReplicas") or 0),
        suspended=bool(spec.get("suspend", False)),
        scale_from_zero=bool(autoscaling) and int(autoscaling.get("minReplicas", 1)) == 0,
        created=_unix(meta.get("creationTimestamp")),
        autoscaling=_autoscaling(autoscaling) if autoscaling else None,
        adapters=tuple(
            (str(a["name"]), frozenset(a.get("pods") or ()))
            for a in (body.get("status") or {}).get("adapters") or []
            if a.get("name")
        ),
        traffic=tuple((str(t["service"]), int(t.get("weight", 0))) for t in spec.get("traffic") or []),
        guard=_guard(spec["rolloutGuard"]) if spec.get("rolloutGuard") is not None else None,
        halted=halted.split(":", 1)[0]
        if (halted := meta.get("annotations", {}).get(Keys.ROLLOUT_HALTED))
        else None,
    )


def _guard(spec: Body) -> Guard:
    # Defaults as in aima.api.inference_service.RolloutGuard (the API server fills them in too).
    bound = spec.get("maxTimeToFirstTokenSeconds")
    return Guard(
        max_error_percent=float(spec.get("maxErrorPercent", 5)),
        max_time_to_first_token_seconds=float(bound) if bound is not None else None,
        window_requests=max(1, int(spec.get("windowRequests", 50))),
    )


def _autoscaling(spec: Body) -> Autoscaling:
    # Defaults as in aima.api.inference_service.Autoscaling (the API server fills them in too).
    return Autoscaling(
        min_replicas=int(spec.get("minReplicas", 1)),
        max_replicas=int(spec.get("maxReplicas", 1)),
        target_active_requests=max(1, int(spec.get("targetActiveRequests", 8))),
        scale_down_delay_seconds=float(spec.get("scaleDownDelaySeconds", 300)),
    )


def slice_view(body: Body) -> SliceView | None:
    """Trim an EndpointSlice to the base URLs of its ready endpoints; None when it has no Service."""
    meta = body["metadata"]
    service = meta.get("labels", {}).get(SERVICE_NAME_LABEL)
    if not service:
        return None
    namespace = meta.get("namespace", "")
    ports = body.get("ports") or []
    port = next((p for p in ports if p.get("name") == "http"), ports[0] if ports else None)
    if not port or not port.get("port"):
        return SliceView(namespace=namespace, service=service, endpoints=())
    ipv6 = body.get("addressType") == "IPv6"
    ready = [
        (address, (endpoint.get("targetRef") or {}).get("name") or "")
        for endpoint in body.get("endpoints") or []
        # An absent `ready` means ready (discovery.k8s.io/v1); terminating endpoints are not ready.
        if (endpoint.get("conditions") or {}).get("ready", True) is not False
        for address in endpoint.get("addresses", [])[:1]
    ]
    urls = tuple(
        f"http://[{address}]:{port['port']}" if ipv6 else f"http://{address}:{port['port']}"
        for address, _ in ready
    )
    return SliceView(
        namespace=namespace, service=service, endpoints=urls, pods=tuple(pod for _, pod in ready)
    )


def build_table(
    services: Iterable[ServiceView], slices: Iterable[SliceView], *, home: str
) -> dict[str, Backend]:
    """Model id (name and alias, qualified outside ``home``) to backend; a name always wins over
    another service's alias."""
    endpoints: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for view in slices:
        pods = view.pods or ("",) * len(view.endpoints)
        endpoints.setdefault((view.namespace, view.service), []).extend(
            zip(view.endpoints, pods, strict=True)
        )
    names: dict[str, Backend] = {}
    aliases: dict[str, Backend] = {}
    adapters: dict[str, Backend] = {}
    for service in services:
        prefix = "" if service.namespace == home else f"{service.namespace}/"
        found = endpoints.get((service.namespace, service.name), [])
        model = prefix + (service.served_name or service.name)
        backend = Backend(service=service, endpoints=tuple(sorted({url for url, _ in found})), model=model)
        names[prefix + service.name] = backend
        if service.served_name:
            aliases[model] = backend
        for adapter, holders in service.adapters:
            ready = tuple(sorted({url for url, pod in found if pod in holders}))
            served = f"{model}:{adapter}"
            adapters[served] = Backend(service=service, endpoints=ready, model=served, adapter=adapter)
    for service in services:
        if service.traffic:
            prefix = "" if service.namespace == home else f"{service.namespace}/"
            split = _split(names[prefix + service.name], service.traffic, names=names, prefix=prefix)
            names[prefix + service.name] = split
            if service.served_name:
                aliases[split.model] = split
    # A service's name or alias wins over an adapter id that happens to look the same.
    return adapters | aliases | names


def _split(
    own: Backend, traffic: Iterable[tuple[str, int]], *, names: Mapping[str, Backend], prefix: str
) -> Backend:
    """``own`` with its traffic split: each target that exists, with its weight (none for one a rollout
    guard halted). A target keeps its
    own model id (its autoscaling counts the requests it takes), and its own split does not count:
    splits do not chain."""
    targets = tuple(
        (0 if target == own.service.halted else weight, dataclasses.replace(names[prefix + target], split=()))
        for target, weight in traffic
        if prefix + target in names
    )
    return dataclasses.replace(own, split=targets)


def pick(backend: Backend, draw: float) -> Backend:
    """The backend one request goes to, ``draw`` uniform in [0, 1): ``backend`` itself, or one target
    of its split by weight. Targets without ready replicas are passed over while another has some:
    their share goes to the others."""
    if not backend.split:
        return backend
    weighted = [(w, b) for w, b in backend.split if w > 0]
    live = [(w, b) for w, b in weighted if b.endpoints] or weighted
    point = draw * sum(w for w, _ in live)
    for weight, target in live:
        if point < weight:
            return target
        point -= weight
    return live[-1][1] if live else backend


def distinct(table: Mapping[str, Backend]) -> list[Backend]:
    """Each backend of ``table`` once (a service with an alias is there twice)."""
    return list({id(b): b for b in table.values()}.values())


def _unix(timestamp: str | None) -> int:
    if not timestamp:
        return 0
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())
