"""The one typed configuration of the operator, built once at start-up from the environment."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from aima import __version__
from aima.api.network import LabelSelector, LabelSelectorOperator, LabelSelectorRequirement, NetworkPolicyPeer

_ENV_PREFIX = "AIMA_"
_LIST_FIELDS = frozenset({"namespaces", "gateway_route_namespaces", "gateway_trusted_service_accounts"})
"""Fields read from a comma-separated variable."""
_JSON_FIELDS = frozenset({"platform_pod_selector", "engine_ingress_from"})
"""Fields read from a variable holding JSON."""


def _release_platform_pods() -> LabelSelector:
    """The gateway and operator pods of the chart's release `aima`."""
    component = LabelSelectorRequirement(
        key="app.kubernetes.io/component", operator=LabelSelectorOperator.IN, values=["gateway", "operator"]
    )
    return LabelSelector(
        match_labels={"app.kubernetes.io/name": "aima", "app.kubernetes.io/instance": "aima"},
        match_expressions=[component],
    )


class Settings(BaseModel):
    """Every knob of the operator, with its default and unit. Nothing below `__main__` reads the
    environment: components receive this object or the values they need from it."""

    model_config = ConfigDict(frozen=True)

    namespaces: tuple[str, ...] = ()
    """Namespaces to serve; empty serves the whole cluster."""
    kubeconfig: Path | None = None
    """Kubeconfig to use; empty uses the in-cluster service account, then $KUBECONFIG."""
    image: str = f"ghcr.io/aima-dev/aima:{__version__}"
    """The operator's own image; loader Jobs run it with `aima loader`."""
    image_pull_policy: str = "IfNotPresent"
    """Pull policy of the loader Jobs."""
    resync_seconds: float = Field(default=300.0, gt=0)
    """How often every object is reconciled even without events (drift is corrected by then)."""
    retry_seconds: float = Field(default=5.0, gt=0)
    """How soon a failed reconcile is tried again (twice as late after each failure, up to 300 s)."""
    loader_backoff_limit: int = Field(default=3, ge=0)
    """Retries of a failed loader Job before the Model reports Failed."""
    loader_start_seconds: float = Field(default=60.0, gt=0)
    """How long a loader Job may go without a pod before its Model says that the loader does not
    start (a pod that exists but cannot be scheduled or run is reported at once)."""
    hf_endpoint: str = "https://huggingface.co"
    """Hugging Face Hub endpoint for hf:// sources; set a mirror here."""
    ollama_registry: str = "https://registry.ollama.ai"
    """Registry for ollama:// sources."""
    modelscope_endpoint: str = "https://www.modelscope.cn"
    """Endpoint for modelscope:// sources."""
    s3_endpoint: str = "https://s3.amazonaws.com"
    """Endpoint for s3:// sources, addressed path-style (`{endpoint}/{bucket}/{key}`): a regional AWS
    endpoint such as https://s3.eu-west-1.amazonaws.com, or an S3-compatible store such as MinIO."""
    s3_region: str = "us-east-1"
    """Region that s3:// requests are signed for; it must be the bucket's region."""
    catalog_dir: Path | None = None
    """Folder with the engine catalog (`engines/*.yaml`) the operator installs as Engine objects at
    start; the image ships it at /opt/aima/catalog. Empty installs nothing."""
    leader_election: bool = False
    """Run only while holding a Lease, so that of several replicas exactly one acts."""
    lease_namespace: str = "default"
    """Namespace of the leader Lease (the chart sets the operator's own)."""
    lease_name: str = "aima-operator"
    """Name of the leader Lease."""
    lease_duration_seconds: int = Field(default=15, ge=2)
    """How long a Lease holds without renewal; a crashed leader is replaced after at most this."""
    lease_renew_seconds: float = Field(default=5.0, gt=0)
    """How often the leader renews its Lease."""
    identity: str = Field(default_factory=socket.gethostname)
    """This replica's name in the Lease (the pod name in a cluster)."""
    operator_health_port: int = Field(default=0, ge=0, le=65535)
    """Port of the operator's /healthz and /metrics; 0 serves none (the chart sets 8081)."""
    operator_health_host: str = "0.0.0.0"  # noqa: S104 - the kubelet and Prometheus reach the pod's IP
    """Address of that server."""
    default_gpu_memory_mib: int = Field(default=81920, gt=0)
    """GPU memory assumed for estimates when no node advertises nvidia.com/gpu.memory."""

    # -- who may connect to engine pods (aima.domain.network_policy) ---------------------------------
    engine_network_policy: bool = True
    """Give every InferenceService a NetworkPolicy under which its engine pods accept connections
    only from the platform's pods (`platform_pod_selector` in `platform_namespace`) and from
    `engine_ingress_from`. It takes effect only where the CNI enforces NetworkPolicy (Calico,
    Cilium). Turned off, the policies the operator made are removed."""
    platform_namespace: str = Field(default="aima-system", min_length=1)
    """Namespace of the gateway and operator pods (the chart sets its release's)."""
    platform_pod_selector: LabelSelector = Field(default_factory=_release_platform_pods)
    """The gateway and operator pods in that namespace, as a JSON label selector (the chart sets
    its release's labels)."""
    engine_ingress_from: tuple[NetworkPolicyPeer, ...] = ()
    """More peers engine pods accept connections from, as a JSON list of NetworkPolicyPeer, e.g. a
    Prometheus that scrapes engine /metrics:
    `[{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]`."""

    # --- Devices and alerts (aima device-agent; the operator's AlertRule controller) ---
    device_node_name: str = ""
    """The node the device agent runs on (the chart sets it from spec.nodeName)."""
    device_sample_seconds: float = Field(default=10.0, gt=0)
    """How often the agent reads NVML (and its NodeDevices object, for requested power limits)."""
    device_publish_min_seconds: float = Field(default=5.0, ge=0)
    """Shortest gap between two status writes of one agent, even when GPU health changes."""
    device_publish_seconds: float = Field(default=30.0, ge=0)
    """Changed load figures (utilisation, temperature, power, memory) are written at most this often."""
    device_heartbeat_seconds: float = Field(default=300.0, gt=0)
    """An unchanged status is written again after this long, so silent agents can be told apart."""
    device_metrics_port: int = Field(default=9401, ge=0, le=65535)
    """Port of the agent's Prometheus /metrics (0: no metrics server)."""
    device_power_limits_allowed: bool = False
    """Whether the agent applies power limits asked for in its NodeDevices (NVML also needs root)."""
    device_stale_seconds: float = Field(default=900.0, gt=0)
    """An agent report older than this is called stale by device.* and resource.* units."""
    alert_interval_seconds: float = Field(default=30.0, gt=0)
    """How often the operator evaluates every AlertRule, besides on events."""
    alert_history_limit: int = Field(default=20, ge=1, le=50)
    """Transitions kept in an AlertRule's status.history; older ones live on as Events for a while."""
    alert_webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    """Timeout of one notification to a channel."""

    # -- the OpenAI gateway (`aima gateway serve`, aima.gateway) ------------------------------------
    gateway_namespace: str = "default"
    """The gateway's home namespace: its InferenceServices are models by their plain names, and its
    Secrets hold the API keys."""
    gateway_route_namespaces: tuple[str, ...] = ()
    """Other namespaces whose InferenceServices the gateway routes to, as `<namespace>/<name>`
    (AIMA_GATEWAY_ROUTE_NAMESPACES=team-a,team-b); `*` routes every namespace."""
    gateway_require_api_key: bool = True
    """Require an API key (a Secret labelled aima.dev/api-key=true) on /v1; with none, every request is
    refused. Set false only where another proxy authenticates first."""
    gateway_scale_wait_seconds: float = Field(default=120.0, ge=0)
    """How long a request for a service at zero replicas waits for its first ready replica."""
    gateway_retry_after_seconds: float = Field(default=10.0, gt=0)
    """Retry-After sent with 503 while a service starts."""
    gateway_prefix_affinity: bool = False
    """Send chat requests sharing a conversation prefix to the same replica (prefix caching) while it
    is not overloaded; otherwise least outstanding requests."""
    gateway_affinity_prefix_chars: int = Field(default=512, ge=1)
    """Characters of the system prompt and first user message that make up the prefix."""
    gateway_affinity_load_factor: float = Field(default=2.0, ge=1.0)
    """A replica above this multiple of the mean requests in flight hands affine requests to the next
    one. 2 rather than the 1.25 of the literature: on hack/bench/routing.py, 1.25 passed one request in
    eight on at 8 clients (84 % prefix-cache hits, 399 tokens/s) where 2 passed almost none (92 %, 508);
    3 did no better than 2."""
    gateway_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    """Time to connect to a replica before trying another."""
    gateway_max_body_bytes: int = Field(default=64 * 2**20, gt=0)
    """Largest request body (audio uploads included)."""
    gateway_upstream_connections: int = Field(default=4096, ge=1)
    """Connections to the replicas kept open at most, all replicas together: also the most streams in
    flight at once (past it requests wait for a connection; 2,000 streams at 1,024 waited 10 s)."""
    gateway_autoscale_interval_seconds: float = Field(default=2.0, ge=0)
    """How often the autoscaler sets the replicas of services with spec.autoscaling from the requests
    in flight; 0 turns it off (scale from zero on a request still works)."""
    gateway_engine_metrics_interval_seconds: float = Field(default=0.5, ge=0)
    """How often the gateway scrapes each ready replica's /metrics for the queue, running batch and
    KV-cache use its engine reports (vLLM, SGLang, llama.cpp); 0 turns scraping off."""
    gateway_engine_aware_balancing: bool = True
    """Balance on the engines' reported load (aima.gateway.engine_load) where they report it, while
    scraping is on; false balances on the gateway's own requests in flight and only exports it."""
    gateway_max_held_requests: int = Field(default=1000, ge=0)
    """Requests held at once, all models together, while services scale from zero; more are refused
    with 503 and Retry-After."""
    gateway_drain_seconds: float = Field(default=25.0, ge=0)
    """On SIGTERM (a rolling update, a node drain) the gateway stops taking connections at once and
    gives the requests in flight, streams included, this long to finish before it cuts them; keep it
    below the pod's terminationGracePeriodSeconds (the chart sets that to this plus 5)."""
    gateway_replicas: int = Field(default=1, ge=1)
    """Gateway replicas sharing the traffic; the autoscaler multiplies the load it sees by this."""
    gateway_trusted_service_accounts: tuple[str, ...] = ()
    """ServiceAccounts (`namespace/name`) whose tokens for `gateway_token_audience` the gateway accepts on
    /v1 like a key for every model, checked by a TokenReview: the operator's and the MCP server's, so
    in-cluster callers need no shared secret."""
    gateway_token_audience: str = "aima-gateway"  # noqa: S105 - an audience name, not a secret
    """The audience of those tokens; a token for the API server itself is refused."""
    gateway_quota_redis_url: SecretStr | None = None
    """Redis (`redis://[:password@]host:6379/0`, `rediss://` for TLS) holding the keys' request and
    token counters, shared by every gateway replica; none counts in each replica, which allows a key
    its limits once per replica. Never logged (it may hold a password)."""
    gateway_quota_reserve_tokens: int = Field(default=256, ge=0)
    """Tokens a request without max_tokens reserves against its key's token limits until its reply's
    usage replaces the estimate (aima.gateway.quotas)."""

    unit_settle_seconds: float = Field(default=5.0, ge=0)
    """How long a unit's change (service.create, scale, stop, start) waits for the operator to report
    on it, so that its result shows the state the change led to; 0 returns the object as written."""

    refuse_unfittable_services: bool = True
    """service.create/scale/start refuse (INSUFFICIENT_RESOURCES) a replica that needs more GPUs than
    any node has; turn off where a cluster autoscaler adds bigger GPU nodes on demand."""

    # -- pipelines and the inference.* units (aima.pipelines, aima.units.inference) --------------------
    gateway_url: str = "http://aima-gateway.aima-system.svc"
    """Base URL of the OpenAI-compatible gateway (without /v1) that inference.* units and pipeline
    steps call; point it at one engine to bypass the gateway."""
    gateway_api_key: SecretStr | None = None
    """API key sent to the gateway as a Bearer token; never logged."""
    gateway_token_file: Path | None = None
    """A projected ServiceAccount token (audience `gateway_token_audience`) sent to the gateway when
    no API key is set; read at each call, since the kubelet rotates it."""
    inference_timeout_seconds: float = Field(default=300.0, gt=0)
    """Longest one inference.* call may take (a step's own timeoutSeconds may cut it shorter)."""
    pipeline_parallelism: int = Field(default=4, ge=1, le=32)
    """Most steps of one run executing at once."""
    pipeline_require_services: bool = True
    """A run waits (Succeeded=Unknown, ServicesNotReady) until an InferenceService serves each step's
    model; turn off when the gateway also routes to models served outside the cluster. A service that
    exists and is not Ready is waited for either way."""
    pipeline_max_run_seconds: float = Field(default=3600.0, gt=0)
    """Longest a run without its own timeoutSeconds may take."""

    def gateway_credential(self) -> str | None:
        """The Bearer token for the gateway: the API key, else the projected token, else none."""
        if self.gateway_api_key is not None:
            return self.gateway_api_key.get_secret_value()
        if self.gateway_token_file is not None:
            try:
                return self.gateway_token_file.read_text().strip() or None
            except OSError:
                return None  # not mounted (yet): the gateway's 401 says what is missing
        return None

    @property
    def gateway_routed_namespaces(self) -> tuple[str | None, ...]:
        """The namespaces the gateway watches besides its home; None stands for every namespace."""
        if "*" in self.gateway_route_namespaces:
            return (None,)
        return self.gateway_route_namespaces

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read `AIMA_<FIELD>` variables, e.g. AIMA_NAMESPACES=a,b or AIMA_RESYNC_SECONDS=60; a selector
        or a list of peers is JSON (AIMA_ENGINE_INGRESS_FROM='[{"ipBlock": {"cidr": "10.0.0.0/8"}}]')."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = env.get(_ENV_PREFIX + name.upper())
            if raw is None:
                continue
            values[name] = _parsed(name, raw)
        if "kubeconfig" not in values and env.get("KUBECONFIG"):
            values["kubeconfig"] = env["KUBECONFIG"].split(os.pathsep)[0]
        return cls.model_validate(values)

    def to_env(self) -> dict[str, str]:
        """The AIMA_* variables `from_env` reads back as these settings (the fields set explicitly),
        for a process started with them."""
        dumped = self.model_dump(mode="json", include=self.model_fields_set)
        variables = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                text = value.get_secret_value()
            elif name in _LIST_FIELDS:
                text = ",".join(dumped[name])
            elif name in _JSON_FIELDS:
                text = json.dumps(dumped[name])
            else:
                text = str(dumped[name])
            variables[_ENV_PREFIX + name.upper()] = text
        return variables


def _parsed(name: str, raw: str) -> object:
    """The value of ``name``'s variable as the field takes it."""
    if name in _LIST_FIELDS:
        return tuple(p for p in raw.split(",") if p)
    if name in _JSON_FIELDS:
        try:
            return json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"{_ENV_PREFIX}{name.upper()} is not JSON: {error}") from error
    return raw
