"""API paths of the resources AIMA reads and writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from aima.api.common import GROUP, VERSION


@dataclass(frozen=True)
class Resource:
    """One REST resource: where its objects live in the API."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        """``apiVersion`` of its objects, e.g. ``apps/v1`` or ``v1``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, *, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The URL path of the collection, or of one object (and its subresource).

        The namespace and the name are one path segment each, quoted: a name such as `a/../b` or
        `?x`, which no object has, is looked up as itself and not found, never as another path."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base


MODELS: Final = Resource(GROUP, VERSION, "models", "Model")
ENGINES: Final = Resource(GROUP, VERSION, "engines", "Engine", namespaced=False)
INFERENCE_SERVICES: Final = Resource(GROUP, VERSION, "inferenceservices", "InferenceService")
PIPELINES: Final = Resource(GROUP, VERSION, "pipelines", "Pipeline")
PIPELINE_RUNS: Final = Resource(GROUP, VERSION, "pipelineruns", "PipelineRun")
DEPLOYMENTS: Final = Resource("apps", "v1", "deployments", "Deployment")
JOBS: Final = Resource("batch", "v1", "jobs", "Job")
SERVICES: Final = Resource("", "v1", "services", "Service")
PODS: Final = Resource("", "v1", "pods", "Pod")
NETWORK_POLICIES: Final = Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy")
PERSISTENT_VOLUME_CLAIMS: Final = Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
EVENTS: Final = Resource("", "v1", "events", "Event")
NODES: Final = Resource("", "v1", "nodes", "Node", namespaced=False)
NAMESPACES: Final = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
SECRETS: Final = Resource("", "v1", "secrets", "Secret")
LEASES: Final = Resource("coordination.k8s.io", "v1", "leases", "Lease")
SERVICE_ACCOUNTS: Final = Resource("", "v1", "serviceaccounts", "ServiceAccount")
ROLE_BINDINGS: Final = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
NODE_DEVICES: Final = Resource(GROUP, VERSION, "nodedevices", "NodeDevices", namespaced=False)
ALERT_RULES: Final = Resource(GROUP, VERSION, "alertrules", "AlertRule")
TOKEN_REVIEWS: Final = Resource(
    "authentication.k8s.io", "v1", "tokenreviews", "TokenReview", namespaced=False
)

BY_KIND: Final = {
    r.kind: r
    for r in (
        MODELS,
        ENGINES,
        INFERENCE_SERVICES,
        PIPELINES,
        PIPELINE_RUNS,
        DEPLOYMENTS,
        JOBS,
        SERVICES,
        PODS,
        NETWORK_POLICIES,
        PERSISTENT_VOLUME_CLAIMS,
        EVENTS,
        NODES,
        SECRETS,
        TOKEN_REVIEWS,
        LEASES,
        SERVICE_ACCOUNTS,
        ROLE_BINDINGS,
        NODE_DEVICES,
        ALERT_RULES,
    )
}
"""Resources by kind, for applying whole objects."""
